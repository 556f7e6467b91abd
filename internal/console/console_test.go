package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/console"
	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// twoServices: api has two versions and a rollout; web has three, one of
// them served by a cluster named differently.
const twoServices = `
services:
  - name: api
    hosts: ["api.example.com"]
    stable: v1
    weights: {v1: 80, v2: 20}
    rollout: {steps: [10, 100], hold: 30s, guard: {window: 10s, min_requests: 5}}
  - name: web
    hosts: ["*"]
    stable: blue
    weights: {blue: 50, green: 30, gray: 20}
    clusters: {blue: web-blue}
`

func newStore(t *testing.T, yaml string) *store.Store {
	t.Helper()
	st, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if yaml == "" {
		return st
	}
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApplyFile(cfg, "sha-test", "test.yaml"); err != nil {
		t.Fatal(err)
	}
	return st
}

// clock is a settable time for the sampler.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 5, 6, 7, 8, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// getState reads GET /v1/console/state through the console's handlers.
func getState(t *testing.T, c *console.Console) console.State {
	t.Helper()
	rec := httptest.NewRecorder()
	c.Handlers()["GET /v1/console/state"].ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/console/state", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("state: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("state Content-Type %q", ct)
	}
	var st console.State
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func service(t *testing.T, st console.State, name string) console.ServiceState {
	t.Helper()
	for _, s := range st.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no service %q in the state: %+v", name, st.Services)
	return console.ServiceState{}
}

func version(t *testing.T, tr *console.Traffic, v string) console.VersionTraffic {
	t.Helper()
	if tr == nil {
		t.Fatal("no traffic")
	}
	for _, x := range tr.Versions {
		if x.Version == v {
			return x
		}
	}
	t.Fatalf("no version %q in the traffic: %+v", v, tr.Versions)
	return console.VersionTraffic{}
}

func last(xs []uint64, n int) []uint64 { return xs[len(xs)-n:] }

// TestSampledTraffic: counts recorded between samples land in the right
// buckets, the last-minute rates follow, and the decision-reason mix is
// read from the metrics registry's splitter_decisions_total.
func TestSampledTraffic(t *testing.T) {
	st := newStore(t, twoServices)
	counters := &signals.Counters{}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	clk := newClock()
	c := console.New(console.Options{
		Store: st, Signals: counters, SignalsName: "test counters", Gatherer: reg, Interval: time.Second, Now: clk.now,
	})
	ctx := t.Context()
	c.Sample(ctx) // the baseline

	record := func(service, version string, n int, status int) {
		for range n {
			counters.Record(service, version, status, false)
		}
	}
	record("api", "v1", 7, 200)
	record("api", "v1", 1, 503)
	record("api", "v2", 2, 500)
	decide := func(n int, version string, reason split.Reason) {
		for range n {
			m.Decided("ext_proc", &split.Decision{Service: "api", Version: version, Reason: reason})
		}
	}
	decide(3, "v1", split.ReasonWeightedRouting)
	decide(1, "v2", split.ReasonHeaderMatch)
	clk.advance(time.Second)
	c.Sample(ctx)
	record("api", "v1", 4, 200)
	decide(2, "v2", split.ReasonStickyRouting)
	clk.advance(time.Second)
	c.Sample(ctx)

	state := getState(t, c)
	if state.Signals.Source != "test counters" || state.Signals.Error != "" || state.Signals.Buckets != console.Buckets {
		t.Errorf("signals %+v", state.Signals)
	}
	api := service(t, state, "api")
	if api.Traffic == nil || api.Traffic.Error != "" || api.Traffic.BucketSeconds != 1 || api.Traffic.CoveredSeconds != 2 {
		t.Fatalf("api traffic %+v", api.Traffic)
	}
	v1, v2 := version(t, api.Traffic, "v1"), version(t, api.Traffic, "v2")
	if len(v1.Requests) != console.Buckets || len(v1.Errors) != console.Buckets {
		t.Fatalf("series of %d and %d buckets, want %d", len(v1.Requests), len(v1.Errors), console.Buckets)
	}
	for _, tc := range []struct {
		name      string
		got, want []uint64
	}{
		{"v1 requests", last(v1.Requests, 3), []uint64{0, 8, 4}},
		{"v1 errors", last(v1.Errors, 3), []uint64{0, 1, 0}},
		{"v2 requests", last(v2.Requests, 3), []uint64{0, 2, 0}},
		{"v2 errors", last(v2.Errors, 3), []uint64{0, 2, 0}},
	} {
		if diff := cmp.Diff(tc.want, tc.got); diff != "" {
			t.Errorf("%s, last 3 buckets (-want +got):\n%s", tc.name, diff)
		}
	}
	// 12 requests over the 2 s sampled, 1 of them an error.
	if v1.RatePerSecond != 6 || v1.ErrorPercent != 8.33 || v2.RatePerSecond != 1 || v2.ErrorPercent != 100 {
		t.Errorf("rates: v1 %v/s %v %%, v2 %v/s %v %%; want 6/s 8.33 %%, 1/s 100 %%", v1.RatePerSecond, v1.ErrorPercent, v2.RatePerSecond, v2.ErrorPercent)
	}
	wantReasons := []console.Reason{
		{Reason: "header_match", Recent: 1, Total: 1},
		{Reason: "sticky_routing", Recent: 2, Total: 2},
		{Reason: "weighted_routing", Recent: 3, Total: 3},
		{Reason: "sticky_assigned"},
	}
	if diff := cmp.Diff(wantReasons, api.Reasons); diff != "" {
		t.Errorf("api reasons (-want +got):\n%s", diff)
	}
	web := service(t, state, "web")
	if web.Traffic == nil || web.Traffic.Error != "" || len(web.Traffic.Versions) != 3 || web.Traffic.Versions[0].Cluster != "web-blue" {
		t.Errorf("web traffic %+v", web.Traffic)
	}

	// Five minutes later the old buckets have left the ring.
	clk.advance(time.Duration(console.Buckets) * time.Second)
	c.Sample(ctx)
	api = service(t, getState(t, c), "api")
	if v1 := version(t, api.Traffic, "v1"); v1.RatePerSecond != 0 || sum(v1.Requests) != 0 {
		t.Errorf("after a full span without traffic: v1 %v/s, %d requests in the series", v1.RatePerSecond, sum(v1.Requests))
	}
}

func sum(xs []uint64) uint64 {
	var s uint64
	for _, x := range xs {
		s += x
	}
	return s
}

// statsServer is an Envoy admin /stats stand-in whose counters grow by 10
// requests (1 error) per cluster at every read; clusters it does not know
// are missing from its answer, as in Envoy.
func statsServer(t *testing.T, clusters ...string) *httptest.Server {
	t.Helper()
	var reads atomic.Uint64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := reads.Add(1)
		for _, c := range clusters {
			fmt.Fprintf(w, "cluster.%s.upstream_rq_completed: %d\ncluster.%s.upstream_rq_5xx: %d\n", c, 10*n, c, n)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestTrafficErrorsInWords: without a source, with Envoy unreachable, and
// with a cluster Envoy does not have, the state says why in words, and a
// bad service does not blind the others.
func TestTrafficErrorsInWords(t *testing.T) {
	tests := []struct {
		name string
		src  func(t *testing.T) signals.Source
		// wantSignals is in the state's signals error ("" for none);
		// wantAPI and wantWeb in each service's traffic error.
		wantSignals, wantAPI, wantWeb string
		apiCounted                    bool
	}{
		{
			name:        "no source",
			src:         func(*testing.T) signals.Source { return nil },
			wantSignals: "envoy_admin is not set", wantAPI: "envoy_admin is not set", wantWeb: "envoy_admin is not set",
		},
		{
			name: "envoy unreachable",
			src: func(t *testing.T) signals.Source {
				return signals.NewEnvoyAdmin(closedAddr(t), time.Second)
			},
			wantSignals: "connection refused", wantAPI: "connection refused", wantWeb: "connection refused",
		},
		{
			name: "envoy lacks one service's cluster",
			src: func(t *testing.T) signals.Source {
				return signals.NewEnvoyAdmin(strings.TrimPrefix(statsServer(t, "v1", "v2", "green", "gray").URL, "http://"), time.Second)
			},
			wantWeb: `envoy has no cluster "web-blue"`, apiCounted: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			c := console.New(console.Options{
				Store: newStore(t, twoServices), Signals: tc.src(t), SignalsName: "the source", Interval: time.Second, Now: clk.now,
			})
			c.Sample(t.Context())
			clk.advance(time.Second)
			c.Sample(t.Context())
			st := getState(t, c)
			check := func(what, got, want string) {
				t.Helper()
				if want == "" && got != "" || !strings.Contains(got, want) {
					t.Errorf("%s error %q, want %q in it", what, got, want)
				}
			}
			check("signals", st.Signals.Error, tc.wantSignals)
			api, web := service(t, st, "api"), service(t, st, "web")
			check("api traffic", api.Traffic.Error, tc.wantAPI)
			check("web traffic", web.Traffic.Error, tc.wantWeb)
			if tc.apiCounted {
				if v1 := version(t, api.Traffic, "v1"); sum(v1.Requests) == 0 || sum(v1.Errors) == 0 {
					t.Errorf("api v1 was not counted although its clusters are readable: %+v", v1)
				}
			}
			if strings.Contains(st.Signals.Error, "stats?filter") {
				t.Errorf("the error repeats the request URL: %q", st.Signals.Error)
			}
		})
	}
}

// TestStateDocument: weights (in force, file, override), the canary
// version, the rollout and its applicable actions, configuration,
// audit events and the refusals apart, fleet and token requirement, and
// the state before any configuration.
func TestStateDocument(t *testing.T) {
	st := newStore(t, twoServices)
	if _, err := st.SetCanary(t.Context(), "api", 5000, "test"); err != nil {
		t.Fatal(err)
	}
	mgr, err := rollout.New(t.Context(), rollout.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ring := admin.NewAuditRing(10, nil)
	audit := slog.New(ring.Tee(slog.DiscardHandler)).With("log", "audit")
	audit.Info("admin mutation", "service", "api", "result", "success")
	audit.Info("admin mutation", "service", "api", "result", "unauthorized")
	c := console.New(console.Options{
		Store: st, Rollouts: mgr, Audit: ring, TokenRequired: func() bool { return true },
		Fleet: func(context.Context) (any, error) {
			return map[string]any{"replicas": []map[string]any{{"node_id": "a", "revision": 7}}}, nil
		},
		FleetStatus: func() any { return map[string]any{"node_id": "a", "connected": true} },
	})
	got := getState(t, c)
	if !got.Loaded || got.Config == nil || got.Config.SHA256 != "sha-test" || got.Config.Source != "test.yaml" || got.Config.Generation != 2 {
		t.Errorf("config %+v (loaded %v), want sha-test from test.yaml at generation 2", got.Config, got.Loaded)
	}
	if !got.Auth.TokenRequired {
		t.Error("token_required is false")
	}
	api := service(t, got, "api")
	fifty := 50.0
	wantVersions := []console.VersionWeight{{Version: "v1", Weight: 50, File: 80, Override: &fifty}, {Version: "v2", Weight: 50, File: 20, Override: &fifty}}
	if diff := cmp.Diff(wantVersions, api.Versions); diff != "" || !api.Override || api.Canary != "v2" || api.Stable != "v1" {
		t.Errorf("api: override %v, canary %q, stable %q, versions (-want +got):\n%s", api.Override, api.Canary, api.Stable, diff)
	}
	if r := api.Rollout; r == nil || r.State != rollout.Idle || r.HoldSeconds != 30 || !cmp.Equal(r.Actions, []rollout.Action{rollout.Start}) {
		t.Errorf("api rollout %+v", api.Rollout)
	}
	web := service(t, got, "web")
	if web.Canary != "" || web.Override || web.Rollout != nil || len(web.Versions) != 3 {
		t.Errorf("web: canary %q (want none: three versions), override %v, rollout %+v", web.Canary, web.Override, web.Rollout)
	}
	if len(got.Audit) != 1 || got.Audit[0].Message != "admin mutation" ||
		!cmp.Equal(got.Audit[0].Attrs, []admin.AuditAttr{{Key: "service", Value: "api"}, {Key: "result", Value: "success"}}) {
		t.Errorf("audit %+v", got.Audit)
	}
	if r := got.Refusals; r.Count != 1 || len(r.Recent) != 1 ||
		!cmp.Equal(r.Recent[0].Attrs, []admin.AuditAttr{{Key: "service", Value: "api"}, {Key: "result", Value: "unauthorized"}}) {
		t.Errorf("refusals %+v, want the unauthorized attempt apart", got.Refusals)
	}
	if got.Fleet == nil || got.Fleet.Error != "" || !strings.Contains(fmt.Sprint(got.Fleet.View), "node_id:a") || got.Fleet.Status == nil {
		t.Errorf("fleet %+v", got.Fleet)
	}

	if api.Mirror != nil || api.AssignCookie != "" {
		t.Errorf("api without mirror or assign: mirror %+v, assign %q", api.Mirror, api.AssignCookie)
	}
	t.Run("mirror share and key assignment", func(t *testing.T) {
		if _, err := st.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 1250}, "test"); err != nil {
			t.Fatal(err)
		}
		got := service(t, getState(t, c), "api")
		if got.Mirror == nil || *got.Mirror != (console.MirrorView{Version: "v2", Percent: 12.5, Runtime: true}) {
			t.Errorf("mirror %+v", got.Mirror)
		}
		mr := store.MirrorRoute{Name: "canary-mirror", Version: "v2", Percent: 5000, Owner: "argo-rollouts:shop/api",
			When: []split.Condition{{Header: "x-canary", Exact: ptr("true")}, {Request: "path", Prefix: ptr("/api/")}}}
		if _, err := st.PutMirrorRoute(t.Context(), "api", mr, "test"); err != nil {
			t.Fatal(err)
		}
		got = service(t, getState(t, c), "api")
		want := []console.MirrorRouteView{{Name: "canary-mirror", Version: "v2", Percent: 50, Owner: "argo-rollouts:shop/api",
			When: `header x-canary exact "true" and request path prefix "/api/"`}}
		if diff := cmp.Diff(want, got.MirrorRoutes); diff != "" {
			t.Errorf("mirror routes (-want +got):\n%s", diff)
		}
		anon := newStore(t, "services:\n  - {name: api, weights: {v1: 90, v2: 10}, sticky: {assign: {cookie: sid}}, mirror: {version: v2, percent: 5}}\n")
		got = service(t, getState(t, console.New(console.Options{Store: anon})), "api")
		if got.AssignCookie != "sid" || got.Mirror == nil || *got.Mirror != (console.MirrorView{Version: "v2", Percent: 5}) {
			t.Errorf("assign %q, mirror %+v", got.AssignCookie, got.Mirror)
		}
	})

	t.Run("fleet unreachable", func(t *testing.T) {
		c := console.New(console.Options{Store: st, Fleet: func(context.Context) (any, error) {
			return nil, errors.New("etcd unreachable: read /splitter/replicas/: context deadline exceeded")
		}})
		if f := getState(t, c).Fleet; f == nil || !strings.Contains(f.Error, "etcd unreachable") {
			t.Errorf("fleet %+v", f)
		}
	})
	t.Run("no configuration yet", func(t *testing.T) {
		empty := newStore(t, "")
		empty.RecordReloadError(errors.New("config.yaml: services[0].weights: sum is 90, not 100"))
		got := getState(t, console.New(console.Options{Store: empty}))
		if got.Loaded || len(got.Services) != 0 || got.Config == nil || !strings.Contains(got.Config.LastReloadError, "sum is 90") {
			t.Errorf("state before a configuration: loaded %v, services %v, config %+v", got.Loaded, got.Services, got.Config)
		}
	})
}

// event is one server-sent event.
type event struct{ name, data string }

// stream reads the server-sent events of GET /v1/console/events at base
// into a channel, closed when the stream ends.
func stream(t *testing.T, base string) (<-chan event, func()) {
	t.Helper()
	ch, cancel, err := openStream(t, base)
	if err != nil {
		t.Fatal(err)
	}
	return ch, cancel
}

// openStream is stream returning an error instead of failing the test.
func openStream(t *testing.T, base string) (<-chan event, func(), error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/console/events", nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, nil, fmt.Errorf("events: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	ch := make(chan event, 64)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		var ev event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ch <- ev
				}
				ev = event{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return ch, cancel, nil
}

// next waits (bounded) for the next event of one of names, skipping others.
func next(t *testing.T, ch <-chan event, timeout time.Duration, names ...string) event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("the stream ended while waiting for %v", names)
			}
			for _, n := range names {
				if ev.name == n {
					return ev
				}
			}
		case <-deadline:
			t.Fatalf("no %v event within %v", names, timeout)
		}
	}
}

// ended waits (bounded) for the stream to end, ignoring events.
func ended(t *testing.T, ch <-chan event, timeout time.Duration) []string {
	t.Helper()
	var names []string
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return names
			}
			names = append(names, ev.name)
		case <-deadline:
			t.Fatalf("the stream did not end within %v (events: %v)", timeout, names)
		}
	}
}

// serve runs the console (Run) and its handlers on a loopback server until
// the test ends; cancel stops Run.
func serve(t *testing.T, c *console.Console, tune func(*http.Server)) (base string, cancel context.CancelFunc) {
	t.Helper()
	mux := http.NewServeMux()
	for p, h := range c.Handlers() {
		mux.Handle(p, h)
	}
	srv := httptest.NewUnstartedServer(mux)
	if tune != nil {
		tune(srv.Config)
	}
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL, cancel
}

func decodeState(t *testing.T, ev event) console.State {
	t.Helper()
	var st console.State
	if err := json.Unmarshal([]byte(ev.data), &st); err != nil {
		t.Fatalf("state event %q: %v", ev.data, err)
	}
	return st
}

// TestEventsPushChanges: the stream starts with the state, pushes a
// change (a snapshot swap, signalled on Changes) at once even though the
// periodic push is far away, and pings when nothing else is sent.
func TestEventsPushChanges(t *testing.T) {
	st := newStore(t, twoServices)
	changes := make(chan struct{}, 1)
	c := console.New(console.Options{Store: st, Changes: changes, Push: time.Hour, Heartbeat: 300 * time.Millisecond})
	base, _ := serve(t, c, nil)
	ch, _ := stream(t, base)
	first := decodeState(t, next(t, ch, 2*time.Second, "state"))
	if w := service(t, first, "api").Versions[1].Weight; w != 20 {
		t.Fatalf("first state: v2 at %v, want 20", w)
	}
	if _, err := st.SetCanary(t.Context(), "api", 3500, "test"); err != nil {
		t.Fatal(err)
	}
	changes <- struct{}{}
	pushed := decodeState(t, next(t, ch, 2*time.Second, "state"))
	if w := service(t, pushed, "api").Versions[1].Weight; w != 35 {
		t.Fatalf("pushed state: v2 at %v, want 35", w)
	}
	next(t, ch, 2*time.Second, "ping")
}

// TestEventsLimits: beyond MaxClients a stream is refused with 503 and
// words; a closed stream frees its place; Drain ends every stream (with a
// "bye" event) and refuses new ones, while the state is still served.
func TestEventsLimits(t *testing.T) {
	c := console.New(console.Options{Store: newStore(t, twoServices), MaxClients: 2})
	base, _ := serve(t, c, nil)
	a, _ := stream(t, base)
	b, closeB := stream(t, base)
	next(t, a, 2*time.Second, "state")
	next(t, b, 2*time.Second, "state")

	refused := func(wantMsg string) {
		t.Helper()
		resp, err := http.Get(base + "/v1/console/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), wantMsg) {
			t.Fatalf("a stream beyond the limit: %d (Retry-After %q) %s; want 503 saying %q", resp.StatusCode, resp.Header.Get("Retry-After"), body, wantMsg)
		}
	}
	refused("too many console event streams")

	closeB()
	var c3 <-chan event
	deadline := time.Now().Add(2 * time.Second)
	for {
		ch, _, err := openStream(t, base)
		if err == nil {
			c3 = ch
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream's place was not freed within 2s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	next(t, c3, 2*time.Second, "state")

	c.Drain()
	for i, ch := range []<-chan event{a, c3} {
		if names := ended(t, ch, 2*time.Second); len(names) == 0 || names[len(names)-1] != "bye" {
			t.Errorf("stream %d ended with events %v, want a last bye", i, names)
		}
	}
	refused("shutting down")
	if resp, err := http.Get(base + "/v1/console/state"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("state while draining: %v %v", resp, err)
	}
}

// TestEventsOutliveServerTimeouts: the admin server's read and write
// timeouts would cut a stream; the stream clears the read deadline and
// bounds each write instead, so it goes on past both.
func TestEventsOutliveServerTimeouts(t *testing.T) {
	c := console.New(console.Options{Store: newStore(t, twoServices), Push: time.Hour, Heartbeat: 100 * time.Millisecond})
	base, _ := serve(t, c, func(s *http.Server) { s.ReadTimeout, s.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond })
	ch, _ := stream(t, base)
	start := time.Now()
	next(t, ch, 2*time.Second, "state")
	for time.Since(start) < 1200*time.Millisecond {
		next(t, ch, 2*time.Second, "ping")
	}
}

// TestRunEndClosesStreams: when Run's context ends (the process stops)
// every stream ends, so the admin server's shutdown is not held up.
func TestRunEndClosesStreams(t *testing.T) {
	c := console.New(console.Options{Store: newStore(t, twoServices)})
	base, stop := serve(t, c, nil)
	ch, _ := stream(t, base)
	next(t, ch, 2*time.Second, "state")
	stop()
	ended(t, ch, 2*time.Second)
}

// TestAssets: the page and its files are embedded and served with a
// strict Content-Security-Policy, nosniff and no framing; they reference
// nothing outside this origin.
func TestAssets(t *testing.T) {
	c := console.New(console.Options{Store: newStore(t, twoServices)})
	mux := http.NewServeMux()
	for p, h := range c.Handlers() {
		mux.Handle(p, h)
	}
	tests := []struct {
		name, path string
		status     int
		ctype      string
		body       string
	}{
		{name: "the page", path: "/ui/", status: 200, ctype: "text/html; charset=utf-8", body: `<script src="app.js" defer></script>`},
		{name: "script", path: "/ui/app.js", status: 200, ctype: "text/javascript; charset=utf-8", body: "new EventSource('/v1/console/events')"},
		{name: "styles", path: "/ui/app.css", status: 200, ctype: "text/css; charset=utf-8", body: ":focus-visible"},
		{name: "icon", path: "/ui/favicon.svg", status: 200, ctype: "image/svg+xml", body: "<svg"},
		{name: "unknown file", path: "/ui/nope.js", status: 404, ctype: "application/json", body: "no such console file"},
		{name: "without the slash", path: "/ui", status: 301},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if rec.Code != tc.status {
				t.Fatalf("%s: %d, want %d", tc.path, rec.Code, tc.status)
			}
			if tc.status == 301 {
				if loc := rec.Header().Get("Location"); loc != "/ui/" {
					t.Errorf("Location %q", loc)
				}
				return
			}
			h := rec.Header()
			if h.Get("Content-Type") != tc.ctype || h.Get("X-Content-Type-Options") != "nosniff" ||
				h.Get("Content-Security-Policy") != console.ContentSecurityPolicy || h.Get("X-Frame-Options") != "DENY" {
				t.Errorf("headers %v", h)
			}
			body := rec.Body.String()
			if !strings.Contains(body, tc.body) {
				t.Errorf("body lacks %q", tc.body)
			}
			// Nothing is loaded from elsewhere (the SVG namespace is a
			// name, not a request).
			if rest := strings.ReplaceAll(body, "http://www.w3.org/2000/svg", ""); strings.Contains(rest, "http://") || strings.Contains(rest, "https://") || strings.Contains(rest, "//cdn") {
				t.Errorf("%s names an outside URL", tc.path)
			}
			if tc.status == 200 {
				again := httptest.NewRequest(http.MethodGet, tc.path, nil)
				again.Header.Set("If-None-Match", h.Get("ETag"))
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, again)
				if rec.Code != http.StatusNotModified {
					t.Errorf("revalidation with the ETag: %d, want 304", rec.Code)
				}
			}
		})
	}
	for _, directive := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(console.ContentSecurityPolicy, directive) {
			t.Errorf("CSP lacks %s", directive)
		}
	}
	if strings.Contains(console.ContentSecurityPolicy, "unsafe-") {
		t.Error("CSP allows unsafe-inline or unsafe-eval")
	}
}

func ptr(s string) *string { return &s }
