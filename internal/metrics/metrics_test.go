package metrics_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// series gathers one metric family as "label=value,..." -> value.
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(labels, ",")] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

func newMetrics(t *testing.T) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return metrics.New(reg), reg
}

// nonZero drops series at 0 (pre-created closed-set children).
func nonZero(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func TestNewRegistersOnInjectedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	// A second set on another registry must not collide: nothing global.
	metrics.New(prometheus.NewRegistry())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	for _, want := range []string{
		"splitter_config_reloads_total", "splitter_streams_total", "splitter_streams_active",
		"splitter_stream_results_total", "splitter_unexpected_phases_total", "splitter_panics_total",
		"splitter_admin_mutations_total", "splitter_config_last_reload_error",
		"splitter_config_generation", "splitter_config_last_reload_success_timestamp_seconds",
		"splitter_gc_percent",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("%s not registered (have %v)", want, names)
		}
	}
}

func TestDecided(t *testing.T) {
	m, reg := newMetrics(t)
	decisions := []struct {
		api string
		d   split.Decision
	}{
		{"ext_proc", split.Decision{Service: "api", Version: "v1", Reason: split.ReasonWeightedRouting}},
		{"ext_proc", split.Decision{Service: "api", Version: "v1", Reason: split.ReasonWeightedRouting}},
		{"ext_proc", split.Decision{Service: "api", Version: "v2", Reason: split.ReasonHeaderMatch}},
		{"ext_authz", split.Decision{Service: "api", Version: "v2", Reason: split.ReasonStickyRouting}},
		{"ext_proc", split.Decision{Reason: split.ReasonUnmatched}},
		{"grpc-web", split.Decision{Service: "api", Version: "v1", Reason: split.ReasonWeightedRouting}},
		{"ext_proc", split.Decision{Service: "api", Version: "v1", Reason: split.Reason(200)}},
	}
	for _, d := range decisions {
		m.Decided(d.api, &d.d)
	}
	m.Decided("ext_proc", nil)
	want := map[string]float64{
		"api=ext_proc,reason=weighted_routing,service=api,version=v1": 2,
		"api=ext_proc,reason=header_match,service=api,version=v2":     1,
		"api=ext_authz,reason=sticky_routing,service=api,version=v2":  1,
		"api=ext_proc,reason=unmatched,service=,version=":             1,
		"api=other,reason=weighted_routing,service=api,version=v1":    1,
		"api=ext_proc,reason=other,service=api,version=v1":            1,
	}
	if diff := cmp.Diff(want, series(t, reg, "splitter_decisions_total")); diff != "" {
		t.Fatalf("decisions (-want +got):\n%s", diff)
	}
}

func applied(t *testing.T, cfg *split.Config, sha string, m *metrics.Metrics) *store.Store {
	t.Helper()
	s, err := store.New(store.Options{OnSwap: m.ObserveSnapshot, Now: func() time.Time { return time.Unix(1700000000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyFile(cfg, sha, "/etc/splitter/config.yaml"); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRandomRequestsCreateNoSeries drives real decisions with random
// header values, hosts and paths: the series must stay within what the
// configuration declares.
func TestRandomRequestsCreateNoSeries(t *testing.T) {
	m, reg := newMetrics(t)
	cfg := split.Default()
	cfg.Services[0].Hosts = []string{"api.example.com", "*.api.example.com"}
	s := applied(t, cfg, "sha", m)
	table := s.Table()

	rng := rand.New(rand.NewPCG(1, 2))
	randomString := func() string {
		b := make([]byte, 1+rng.IntN(24))
		for i := range b {
			b[i] = byte(' ' + rng.IntN(95))
		}
		return string(b)
	}
	hosts := []string{"api.example.com", "x.api.example.com", "evil.example.org"}
	var d split.Decision
	for i := range 5000 {
		req := &split.Request{
			Authority: hosts[i%len(hosts)],
			Method:    "GET",
			Path:      "/" + randomString(),
			Headers: []split.Header{
				{Name: "x-user-id", Value: randomString()},
				{Name: "x-beta", Value: []string{"true", randomString()}[i%2]},
				{Name: "x-route-version", Value: randomString()},
				{Name: "cookie", Value: "session=" + randomString()},
			},
		}
		if i%3 == 0 {
			req.Headers = req.Headers[1:] // unkeyed: weighted round robin
		}
		table.Decide(req, &d)
		m.Decided("ext_proc", &d)
	}
	allowed := map[string]bool{"": true, "api": true, "v1": true, "v2": true}
	got := series(t, reg, "splitter_decisions_total")
	if len(got) == 0 || len(got) > 2*3+1 {
		t.Fatalf("%d decision series, want 1..7: %v", len(got), got)
	}
	for labels := range got {
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if (k == "service" || k == "version") && !allowed[v] {
				t.Errorf("label %s=%q does not come from the configuration", k, v)
			}
		}
	}
	for _, reason := range []string{"unmatched", "header_match", "sticky_routing", "weighted_routing"} {
		if !strings.Contains(fmt.Sprint(got), "reason="+reason) {
			t.Errorf("no decision with reason %s: the test did not exercise it (%v)", reason, got)
		}
	}

	// A decision naming something no configuration declares (only a bug
	// could produce it) is folded into "other".
	m.Decided("ext_proc", &split.Decision{Service: "api", Version: randomString(), Reason: split.ReasonWeightedRouting})
	if _, ok := series(t, reg, "splitter_decisions_total")["api=ext_proc,reason=weighted_routing,service=other,version=other"]; !ok {
		t.Fatal("an undeclared version became its own series")
	}
}

func TestStreams(t *testing.T) {
	m, reg := newMetrics(t)
	m.StreamStarted("ext_proc")
	m.StreamStarted("ext_proc")
	m.StreamStarted("ext_authz")
	m.StreamEnded("ext_proc", "ok")
	m.StreamEnded("ext_authz", "canceled")
	m.StreamStarted("bogus")
	m.StreamEnded("bogus", "weird")
	m.PhaseUnexpected("ext_proc", "response_headers")
	m.PhaseUnexpected("ext_proc", "attack-"+fmt.Sprint(rand.Int()))
	m.Panic("ext_proc")
	m.Panic("module")

	tests := []struct {
		name   string
		metric string
		want   map[string]float64
	}{
		{"streams_total", "splitter_streams_total", map[string]float64{"api=ext_proc": 2, "api=ext_authz": 1, "api=other": 1}},
		{"streams_active", "splitter_streams_active", map[string]float64{"api=ext_proc": 1}},
		{"stream_results_total", "splitter_stream_results_total", map[string]float64{
			"api=ext_proc,result=ok": 1, "api=ext_authz,result=canceled": 1, "api=other,result=other": 1,
		}},
		{"unexpected_phases_total", "splitter_unexpected_phases_total", map[string]float64{
			"api=ext_proc,phase=response_headers": 1, "api=ext_proc,phase=other": 1,
		}},
		{"panics_total", "splitter_panics_total", map[string]float64{"": 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, nonZero(series(t, reg, tc.metric))); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
	// Closed sets are pre-created, so cardinality is fixed from the start.
	if n := len(series(t, reg, "splitter_stream_results_total")); n != 4*6 {
		t.Fatalf("stream_results_total has %d series, want 24 (4 apis x 6 results)", n)
	}
}

func TestReloadResults(t *testing.T) {
	tests := []struct {
		name      string
		results   []string
		wantCount map[string]float64
		wantError float64
	}{
		{"success", []string{"success"}, map[string]float64{"result=success": 1}, 0},
		{"error after success", []string{"success", "error"}, map[string]float64{"result=success": 1, "result=error": 1}, 1},
		{"error then unchanged", []string{"error", "unchanged"}, map[string]float64{"result=error": 1, "result=unchanged": 1}, 0},
		{"error then success", []string{"error", "success"}, map[string]float64{"result=error": 1, "result=success": 1}, 0},
		{"unknown result", []string{"bogus"}, map[string]float64{"result=other": 1}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, reg := newMetrics(t)
			for _, r := range tc.results {
				m.ReloadResult(r)
			}
			if diff := cmp.Diff(tc.wantCount, nonZero(series(t, reg, "splitter_config_reloads_total"))); diff != "" {
				t.Fatalf("reloads (-want +got):\n%s", diff)
			}
			if got := series(t, reg, "splitter_config_last_reload_error")[""]; got != tc.wantError {
				t.Fatalf("last_reload_error = %v, want %v", got, tc.wantError)
			}
		})
	}
}

func TestObserveSnapshot(t *testing.T) {
	m, reg := newMetrics(t)
	s := applied(t, split.Default(), "sha-1", m)

	check := func(t *testing.T, metric string, want map[string]float64) {
		t.Helper()
		if diff := cmp.Diff(want, series(t, reg, metric)); diff != "" {
			t.Fatalf("%s (-want +got):\n%s", metric, diff)
		}
	}
	check(t, "splitter_config_info", map[string]float64{"sha256=sha-1,source=/etc/splitter/config.yaml": 1})
	check(t, "splitter_config_generation", map[string]float64{"": 1})
	check(t, "splitter_config_last_reload_success_timestamp_seconds", map[string]float64{"": 1700000000})
	check(t, "splitter_weight_percent", map[string]float64{"service=api,version=v1": 80, "service=api,version=v2": 20})
	check(t, "splitter_override_active", map[string]float64{"service=api": 0})

	if _, err := s.SetCanary(t.Context(), "api", 5, "t"); err != nil {
		t.Fatal(err)
	}
	check(t, "splitter_weight_percent", map[string]float64{"service=api,version=v1": 99.95, "service=api,version=v2": 0.05})
	check(t, "splitter_override_active", map[string]float64{"service=api": 1})
	check(t, "splitter_config_generation", map[string]float64{"": 2})

	// A new file renames the service's versions: old series disappear and
	// config_info keeps exactly one series.
	cfg := &split.Config{Services: []split.Service{{
		Name: "web", Hosts: []string{"*"},
		Weights: split.Weights{{Version: "blue", BasisPoints: 10000}, {Version: "green", BasisPoints: 0}},
	}}}
	if _, err := s.ApplyFile(cfg, "sha-2", "/etc/splitter/config.yaml"); err != nil {
		t.Fatal(err)
	}
	check(t, "splitter_config_info", map[string]float64{"sha256=sha-2,source=/etc/splitter/config.yaml": 1})
	check(t, "splitter_weight_percent", map[string]float64{"service=web,version=blue": 100, "service=web,version=green": 0})
	check(t, "splitter_override_active", map[string]float64{"service=web": 0})
	check(t, "splitter_config_generation", map[string]float64{"": 3})

	m.ObserveSnapshot(nil) // ignored, no panic
}

func TestAdminMetrics(t *testing.T) {
	m, reg := newMetrics(t)
	m.AdminRequest("GET /v1/services", 200)
	m.AdminRequest("GET /v1/services", 200)
	m.AdminRequest("PUT /v1/services/{name}/canary", 401)
	m.AdminMutation("unauthorized")
	m.AdminMutation("success")
	m.AdminMutation("forbidden")
	m.AdminMutation("made-up")
	if diff := cmp.Diff(map[string]float64{
		"code=200,endpoint=GET /v1/services":               2,
		"code=401,endpoint=PUT /v1/services/{name}/canary": 1,
	}, series(t, reg, "splitter_admin_requests_total")); diff != "" {
		t.Fatalf("admin_requests_total (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{
		"result=unauthorized": 1, "result=success": 1, "result=forbidden": 1, "result=other": 1,
	}, nonZero(series(t, reg, "splitter_admin_mutations_total"))); diff != "" {
		t.Fatalf("admin_mutations_total (-want +got):\n%s", diff)
	}
}

func BenchmarkDecided(b *testing.B) {
	m := metrics.New(prometheus.NewRegistry())
	ds := []split.Decision{
		{Service: "api", Version: "v1", Reason: split.ReasonWeightedRouting},
		{Service: "api", Version: "v2", Reason: split.ReasonStickyRouting},
		{Service: "api", Version: "v2", Reason: split.ReasonHeaderMatch},
		{Reason: split.ReasonUnmatched},
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Decided("ext_proc", &ds[i%len(ds)])
			i++
		}
	})
}

func TestGCPercent(t *testing.T) {
	tests := []struct {
		name    string
		percent int
		want    float64
	}{
		{name: "default", percent: 400, want: 400},
		{name: "off", percent: -1, want: -1},
		{name: "GOGC 100", percent: 100, want: 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, reg := newMetrics(t)
			m.GCPercent(tc.percent)
			got := series(t, reg, "splitter_gc_percent")
			if diff := cmp.Diff(map[string]float64{"": tc.want}, got); diff != "" {
				t.Errorf("splitter_gc_percent (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCacheCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	var hits, misses uint64 = 41, 3
	reg.MustRegister(metrics.NewCacheCollector("ext_proc", func() (uint64, uint64) { return hits, misses }))
	want := map[string]float64{"api=ext_proc,result=hit": 41, "api=ext_proc,result=miss": 3}
	if diff := cmp.Diff(want, series(t, reg, "splitter_response_cache_total")); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func TestStreamsEnded(t *testing.T) {
	m, reg := newMetrics(t)
	m.StreamsEnded("module", "ok", 40)
	m.StreamsEnded("module", "panic", 2)
	m.StreamsEnded("module", "no_config", 0)
	m.StreamsEnded("module", "weird", 1)
	want := map[string]float64{"api=module,result=ok": 40, "api=module,result=panic": 2, "api=module,result=other": 1}
	if diff := cmp.Diff(want, nonZero(series(t, reg, "splitter_stream_results_total"))); diff != "" {
		t.Fatalf("stream_results_total (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"api=module": 43}, nonZero(series(t, reg, "splitter_streams_total"))); diff != "" {
		t.Fatalf("streams_total (-want +got):\n%s", diff)
	}
	if got := nonZero(series(t, reg, "splitter_streams_active")); len(got) != 0 {
		t.Fatalf("streams_active = %v, want none active", got)
	}
}

func TestResponsesCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewResponsesCollector("module", func() []metrics.ResponseCount {
		return []metrics.ResponseCount{
			{Service: "api", Version: "v1", Class: "2xx", N: 90},
			{Service: "api", Version: "v2", Class: "5xx", N: 7},
			{Service: "api", Version: "v2", Class: "reset", N: 1},
			{Service: "api", Version: "v2", Class: "aborted", N: 3},
			{Service: "api", Version: "v2", Class: "9xx", N: 2},
		}
	}))
	want := map[string]float64{
		"api=module,class=2xx,service=api,version=v1":     90,
		"api=module,class=5xx,service=api,version=v2":     7,
		"api=module,class=reset,service=api,version=v2":   1,
		"api=module,class=aborted,service=api,version=v2": 3,
		"api=module,class=other,service=api,version=v2":   2,
	}
	if diff := cmp.Diff(want, series(t, reg, "splitter_responses_total")); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

// TestAssignedAndMirrored: keys given out and requests marked for a copy
// are counted beside the decisions, with labels from the configuration.
func TestAssignedAndMirrored(t *testing.T) {
	m, reg := newMetrics(t)
	tb, err := split.Load([]byte(`services:
  - name: api
    weights: {v1: 100, v2: 0}
    sticky: {assign: {}}
    mirror: {version: v2, percent: 100}
`), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys := func() (k [split.KeyBytes]byte) { return k }
	for range 3 {
		var d split.Decision
		tb.Decide(&split.Request{NewKey: keys}, &d)
		m.Decided("module", &d)
	}
	var d split.Decision
	tb.Decide(&split.Request{Headers: []split.Header{{Name: "cookie", Value: "splitter-id=AAAAAAAAAAAAAAAAAAAAAA"}}}, &d)
	m.Decided("ext_proc", &d)
	if diff := cmp.Diff(map[string]float64{"api=module,service=api": 3}, series(t, reg, "splitter_sticky_keys_assigned_total")); diff != "" {
		t.Errorf("assigned (-want +got):\n%s", diff)
	}
	m.CookieLost("ext_proc")
	m.CookieLost("ext_proc")
	m.CookieLost("nope")
	if diff := cmp.Diff(map[string]float64{"api=ext_proc": 2, "api=other": 1}, series(t, reg, "splitter_sticky_cookies_lost_total")); diff != "" {
		t.Errorf("cookies lost (-want +got):\n%s", diff)
	}
	want := map[string]float64{"api=module,service=api,version=v2": 3, "api=ext_proc,service=api,version=v2": 1}
	if diff := cmp.Diff(want, series(t, reg, "splitter_mirrored_requests_total")); diff != "" {
		t.Errorf("mirrored (-want +got):\n%s", diff)
	}
}
