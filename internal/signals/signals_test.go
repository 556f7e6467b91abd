package signals_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/signals"
)

var t0 = time.Unix(1_700_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestWindow(t *testing.T) {
	type reading struct {
		at time.Duration
		c  signals.Counts
	}
	tests := []struct {
		name        string
		span, width time.Duration
		readings    []reading
		sumAt       time.Duration
		want        signals.Counts
		covered     time.Duration
	}{
		{
			name: "no reading", span: 10 * time.Second, width: time.Second,
			sumAt: 0, want: signals.Counts{}, covered: 0,
		},
		{
			name: "first reading is only the baseline", span: 10 * time.Second, width: time.Second,
			readings: []reading{{0, signals.Counts{Requests: 500, Errors: 7}}},
			sumAt:    time.Second, want: signals.Counts{}, covered: time.Second,
		},
		{
			name: "growth inside the span is summed", span: 10 * time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{Requests: 100}},
				{time.Second, signals.Counts{Requests: 150, Errors: 1}},
				{2 * time.Second, signals.Counts{Requests: 210, Errors: 4}},
			},
			sumAt: 2 * time.Second, want: signals.Counts{Requests: 110, Errors: 4}, covered: 2 * time.Second,
		},
		{
			name: "growth older than the span falls out", span: 3 * time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{}},
				{time.Second, signals.Counts{Requests: 10, Errors: 10}}, // old burst
				{2 * time.Second, signals.Counts{Requests: 15, Errors: 10}},
				{3 * time.Second, signals.Counts{Requests: 20, Errors: 10}},
				{4 * time.Second, signals.Counts{Requests: 25, Errors: 10}},
				{5 * time.Second, signals.Counts{Requests: 30, Errors: 10}},
			},
			sumAt: 5 * time.Second, want: signals.Counts{Requests: 15}, covered: 3 * time.Second,
		},
		{
			name: "a ring slot reused for a later bucket starts from zero", span: 2 * time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{}},
				{time.Second, signals.Counts{Requests: 5}},      // slot 1
				{3 * time.Second, signals.Counts{Requests: 12}}, // slot 1 again
			},
			sumAt: 3 * time.Second, want: signals.Counts{Requests: 7}, covered: 2 * time.Second,
		},
		{
			name: "a counter that went backwards restarted: its value is the growth", span: 10 * time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{Requests: 1000, Errors: 10}},
				{time.Second, signals.Counts{Requests: 40, Errors: 2}}, // Envoy restarted
				{2 * time.Second, signals.Counts{Requests: 50, Errors: 2}},
			},
			sumAt: 2 * time.Second, want: signals.Counts{Requests: 50, Errors: 2}, covered: 2 * time.Second,
		},
		{
			// Requests went backwards, errors did not (they were few before
			// the restart and grew past their old value since): both restarted.
			name: "one counter went backwards: both restarted", span: 10 * time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{Requests: 1000, Errors: 10}},
				{time.Second, signals.Counts{Requests: 40, Errors: 12}},
			},
			sumAt: time.Second, want: signals.Counts{Requests: 40, Errors: 12}, covered: time.Second,
		},
		{
			name: "errors went backwards, requests did not: both restarted", span: 10 * time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{Requests: 100, Errors: 50}},
				{time.Second, signals.Counts{Requests: 150, Errors: 3}},
			},
			sumAt: time.Second, want: signals.Counts{Requests: 150, Errors: 3}, covered: time.Second,
		},
		{
			// Two minutes without a reading, then one: its growth cannot
			// be placed in the window, so it is a new baseline.
			name: "a gap longer than the span starts a new baseline", span: 2 * time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{}},
				{time.Second, signals.Counts{Requests: 10}},
				{121 * time.Second, signals.Counts{Requests: 4810, Errors: 25}},
			},
			sumAt: 121 * time.Second, want: signals.Counts{}, covered: 0,
		},
		{
			name: "after a gap the window fills again from the new baseline", span: 2 * time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{}},
				{time.Second, signals.Counts{Requests: 10}},
				{121 * time.Second, signals.Counts{Requests: 4810, Errors: 25}},
				{122 * time.Second, signals.Counts{Requests: 4850, Errors: 45}},
			},
			sumAt: 122 * time.Second, want: signals.Counts{Requests: 40, Errors: 20}, covered: time.Second,
		},
		{
			// A 3s gap inside a 4s window: its growth (30 requests, 30
			// errors) is summed while the whole gap lies in the window
			// (give or take two buckets), then left out; covered is
			// measured from the reading that ended the gap.
			name: "growth read across a gap is summed while the gap is in the window", span: 4 * time.Second, width: 500 * time.Millisecond,
			readings: []reading{
				{0, signals.Counts{}},
				{500 * time.Millisecond, signals.Counts{Requests: 5}},
				{time.Second, signals.Counts{Requests: 10}},
				{4 * time.Second, signals.Counts{Requests: 40, Errors: 30}},
				{4500 * time.Millisecond, signals.Counts{Requests: 45, Errors: 30}},
			},
			sumAt: 4500 * time.Millisecond, want: signals.Counts{Requests: 40, Errors: 30}, covered: 4 * time.Second,
		},
		{
			name: "growth read across a gap that began before the window is left out", span: 4 * time.Second, width: 500 * time.Millisecond,
			readings: []reading{
				{0, signals.Counts{}},
				{500 * time.Millisecond, signals.Counts{Requests: 5}},
				{time.Second, signals.Counts{Requests: 10}},
				{4 * time.Second, signals.Counts{Requests: 40, Errors: 30}},
				{4500 * time.Millisecond, signals.Counts{Requests: 45, Errors: 30}},
				{5 * time.Second, signals.Counts{Requests: 50, Errors: 30}},
				{5500 * time.Millisecond, signals.Counts{Requests: 55, Errors: 30}},
				{6 * time.Second, signals.Counts{Requests: 60, Errors: 30}},
				{6500 * time.Millisecond, signals.Counts{Requests: 65, Errors: 30}},
			},
			sumAt: 6500 * time.Millisecond, want: signals.Counts{Requests: 25}, covered: 2500 * time.Millisecond,
		},
		{
			name: "a late tick changes nothing", span: 4 * time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{}},
				{time.Second, signals.Counts{Requests: 10}},
				{2 * time.Second, signals.Counts{Requests: 20}},
				{3 * time.Second, signals.Counts{Requests: 30}},
				{5 * time.Second, signals.Counts{Requests: 50}},
				{6 * time.Second, signals.Counts{Requests: 60}},
				{7 * time.Second, signals.Counts{Requests: 70}},
			},
			sumAt: 7500 * time.Millisecond, want: signals.Counts{Requests: 40}, covered: 4 * time.Second,
		},
		{
			// Readings as far apart as the span (a signals interval as
			// long as the guard's window), each a little late.
			name: "late readings a whole span apart are not gaps", span: time.Second, width: time.Second,
			readings: []reading{
				{0, signals.Counts{}},
				{1010 * time.Millisecond, signals.Counts{Requests: 10}},
				{2020 * time.Millisecond, signals.Counts{Requests: 20, Errors: 1}},
			},
			sumAt: 2020 * time.Millisecond, want: signals.Counts{Requests: 10, Errors: 1}, covered: time.Second,
		},
		{
			name: "a reading before the previous one is a new baseline", span: 10 * time.Second, width: time.Second,
			readings: []reading{
				{5 * time.Second, signals.Counts{Requests: 10}},
				{6 * time.Second, signals.Counts{Requests: 20}},
				{2 * time.Second, signals.Counts{Requests: 30}},
			},
			sumAt: 3 * time.Second, want: signals.Counts{}, covered: time.Second,
		},
		{
			name: "sub-second buckets", span: time.Second, width: 250 * time.Millisecond,
			readings: []reading{
				{0, signals.Counts{}},
				{250 * time.Millisecond, signals.Counts{Requests: 1}},
				{500 * time.Millisecond, signals.Counts{Requests: 3}},
				{1500 * time.Millisecond, signals.Counts{Requests: 7, Errors: 1}},
			},
			sumAt: 1500 * time.Millisecond, want: signals.Counts{Requests: 4, Errors: 1}, covered: time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := signals.NewWindow[signals.Counts](tc.span, tc.width)
			for _, r := range tc.readings {
				w.Observe(at(r.at), r.c)
			}
			got, covered := w.Sum(at(tc.sumAt))
			if got != tc.want || covered != tc.covered {
				t.Errorf("Sum = %+v covering %v, want %+v covering %v", got, covered, tc.want, tc.covered)
			}
		})
	}
}

func TestWindowReset(t *testing.T) {
	w := signals.NewWindow[signals.Counts](time.Second, 100*time.Millisecond)
	w.Observe(at(0), signals.Counts{})
	w.Observe(at(100*time.Millisecond), signals.Counts{Requests: 9, Errors: 9})
	w.Reset()
	w.Observe(at(200*time.Millisecond), signals.Counts{Requests: 20, Errors: 9})
	if got, covered := w.Sum(at(200 * time.Millisecond)); got != (signals.Counts{}) || covered != 0 {
		t.Fatalf("after Reset: %+v covering %v, want nothing: the first reading is a new baseline", got, covered)
	}
}

func TestCounters(t *testing.T) {
	var c signals.Counters
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range 1000 {
				c.Record("api", "v2", []int{200, 503, 404, 0}[i%4], i%4 == 3)
			}
		})
	}
	wg.Wait()
	c.Record("api", "v1", 500, false)
	targets := []signals.Target{{Service: "api", Version: "v2"}, {Service: "api", Version: "v1"}, {Service: "web", Version: "v2"}}
	out := make([]signals.Counts, 3)
	if err := c.Read(t.Context(), targets, out); err != nil {
		t.Fatal(err)
	}
	want := []signals.Counts{{Requests: 4000, Errors: 2000}, {Requests: 1, Errors: 1}, {}}
	for i := range want {
		if out[i] != want[i] {
			t.Errorf("%+v: %+v, want %+v", targets[i], out[i], want[i])
		}
	}
	if err := c.Read(t.Context(), targets, out[:1]); err == nil {
		t.Error("a short out must be an error")
	}
}

func TestCountersRecordDoesNotAllocate(t *testing.T) {
	var c signals.Counters
	c.Record("api", "v2", 200, false)
	if n := testing.AllocsPerRun(1000, func() { c.Record("api", "v2", 503, false) }); n != 0 {
		t.Errorf("Record allocates %.1f times per call once the pair is known", n)
	}
}

// envoyStats is a /stats answer as Envoy 1.40 writes it (text format).
const envoyStats = `cluster.v1.upstream_rq_5xx: 3
cluster.v1.upstream_rq_completed: 1200
cluster.v2.upstream_rq_completed: 300
cluster.v2.upstream_rq_time: P0(nan,1) P25(nan,1.025)
`

func TestParseStats(t *testing.T) {
	got, err := signals.ParseStats(strings.NewReader(envoyStats))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["cluster.v1.upstream_rq_5xx"] != 3 || got["cluster.v2.upstream_rq_completed"] != 300 {
		t.Errorf("ParseStats = %v", got)
	}
	if _, err := signals.ParseStats(strings.NewReader("cluster.v1.upstream_rq_5xx 3\n")); err == nil ||
		!strings.Contains(err.Error(), "line 1") {
		t.Errorf("a line without \": \" must be an error naming it, got %v", err)
	}
}

func FuzzParseStats(f *testing.F) {
	f.Add([]byte(envoyStats))
	f.Add([]byte("a: b: 1\n\n: 3\nx: -1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		stats, err := signals.ParseStats(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		for name := range stats {
			if !strings.Contains(string(data), name+": ") {
				t.Fatalf("name %q is not in the input", name)
			}
		}
	})
}

func TestEnvoyAdmin(t *testing.T) {
	var gotFilter string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stats" {
			http.NotFound(w, r)
			return
		}
		gotFilter = r.URL.Query().Get("filter")
		_, _ = w.Write([]byte(envoyStats + "cluster.api.v3.upstream_rq_completed: 9\n" +
			"cluster.envoy-gateway-system/api-v4.upstream_rq_completed: 7\n" +
			"cluster.outbound|80|v5|api.default.svc.cluster.local.upstream_rq_completed: 5\n"))
	}))
	defer srv.Close()
	src := signals.NewEnvoyAdmin(strings.TrimPrefix(srv.URL, "http://"), time.Second)

	targets := []signals.Target{
		{Service: "api", Version: "v1", Cluster: "v1"},
		{Service: "api", Version: "v2", Cluster: "v2"},
		{Service: "api", Version: "v3", Cluster: "api.v3"},
		// Envoy Gateway's and Istio's cluster names.
		{Service: "api", Version: "v4", Cluster: "envoy-gateway-system/api-v4"},
		{Service: "api", Version: "v5", Cluster: "outbound|80|v5|api.default.svc.cluster.local"},
	}
	out := make([]signals.Counts, len(targets))
	if err := src.Read(t.Context(), targets, out); err != nil {
		t.Fatal(err)
	}
	want := []signals.Counts{{Requests: 1200, Errors: 3}, {Requests: 300}, {Requests: 9}, {Requests: 7}, {Requests: 5}}
	for i := range want {
		if out[i] != want[i] {
			t.Errorf("%s: %+v, want %+v", targets[i].Cluster, out[i], want[i])
		}
	}
	const wantFilter = `^cluster\.(v1|v2|api\.v3|envoy-gateway-system/api-v4|outbound\|80\|v5\|api\.default\.svc\.cluster\.local)\.(upstream_rq_completed|upstream_rq_5xx)$`
	if gotFilter != wantFilter {
		t.Errorf("filter %q, want %q", gotFilter, wantFilter)
	}

	err := src.Read(t.Context(), []signals.Target{{Service: "api", Version: "v9", Cluster: "nope"}}, out)
	if err == nil || !strings.Contains(err.Error(), `envoy has no cluster "nope"`) {
		t.Errorf("unknown cluster: %v", err)
	}
}

func TestEnvoyAdminErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "admin says no", http.StatusServiceUnavailable)
	}))
	addr := strings.TrimPrefix(srv.URL, "http://")
	targets := []signals.Target{{Service: "api", Version: "v1", Cluster: "v1"}}
	out := make([]signals.Counts, 1)
	err := signals.NewEnvoyAdmin(addr, time.Second).Read(t.Context(), targets, out)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "admin says no") {
		t.Errorf("error status: %v", err)
	}
	srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := signals.NewEnvoyAdmin(addr, time.Second).Read(ctx, targets, out); err == nil {
		t.Error("a closed admin port must be an error")
	}
}
