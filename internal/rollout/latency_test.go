package rollout_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/split"
)

// hist is n requests of d each, plus more (n, d) pairs.
func hist(pairs ...any) signals.Histogram {
	var h signals.Histogram
	for i := 0; i+1 < len(pairs); i += 2 {
		for range pairs[i].(int) {
			h.Record(pairs[i+1].(time.Duration))
		}
	}
	return h
}

const ms = time.Millisecond

// TestJudgeLatencyBoundaries pins the latency rule at its edges:
// min_requests on the timed requests, the absolute bound (at a bucket
// bound, one bucket above), the ratio (at, above), a bound alone, and a
// stable version without timed requests. The value compared is the upper
// bound of the percentile's bucket.
func TestJudgeLatencyBoundaries(t *testing.T) {
	both := split.Guard{MinRequests: 100, MaxLatencyMs: 500, MaxLatencyRatio: 150, LatencyPercentile: 9900}
	abs := split.Guard{MinRequests: 100, MaxLatencyMs: 500, LatencyPercentile: 9900}
	rel := split.Guard{MinRequests: 100, MaxLatencyRatio: 150, LatencyPercentile: 9900}
	p50 := split.Guard{MinRequests: 10, MaxLatencyMs: 20, LatencyPercentile: 5000}
	tests := []struct {
		name           string
		g              split.Guard
		canary, stable signals.Histogram
		want           rollout.Result
		reason         string
	}{
		{"the contract's example", both, hist(308, 40*ms, 4, 742*ms), hist(1000, 44*ms), rollout.Failing,
			"canary p99 750 ms over 312 requests is above max_latency_ms 500 and above 1.5 x stable's 45 ms"},
		{"below min_requests, every request slow", both, hist(99, 2*time.Second), hist(1000, ms), rollout.Inconclusive,
			"99 canary requests timed in the window, fewer than min_requests 100"},
		{"at min_requests and slow", both, hist(100, 2*time.Second), hist(1000, ms), rollout.Failing, "above max_latency_ms 500"},
		{"just under the bound: bucket [450, 500) reports 500, not above", both, hist(100, 499*ms), hist(1000, ms), rollout.Healthy,
			"canary p99 500 ms over 100 requests is not above max_latency_ms 500"},
		{"at the bound: bucket [500, 550) reports 550, above", both, hist(100, 500*ms), hist(1000, ms), rollout.Failing, "canary p99 550 ms"},
		{"slow but not 1.5 x stable", both, hist(100, 600*ms), hist(1000, 450*ms), rollout.Healthy,
			"canary p99 650 ms over 100 requests is above max_latency_ms 500 but not above 1.5 x stable's 500 ms"},
		{"ratio at exactly 1.5 x: 600 vs 400", rel, hist(100, 590*ms), hist(100, 390*ms), rollout.Healthy, "not above 1.5 x stable's 400 ms"},
		{"ratio just above 1.5 x: 650 vs 400", rel, hist(100, 600*ms), hist(100, 390*ms), rollout.Failing,
			"canary p99 650 ms over 100 requests is above 1.5 x stable's 400 ms"},
		{"absolute bound alone", abs, hist(100, 600*ms), hist(100, 600*ms), rollout.Failing, "is above max_latency_ms 500"},
		{"ratio alone without stable requests", rel, hist(100, 600*ms), hist(), rollout.Inconclusive, "no stable request timed"},
		{"both without stable requests: only the bound", both, hist(100, 600*ms), hist(), rollout.Failing,
			"above max_latency_ms 500 and no stable request timed to compare with (only max_latency_ms applies)"},
		{"past the histogram's range", both, hist(100, 2*time.Minute), hist(100, ms), rollout.Failing, "canary p99 100000+ ms"},
		{"both past the range: not above stable", rel, hist(100, 2*time.Minute), hist(100, 3*time.Minute), rollout.Healthy, "not above"},
		{"the 99th request decides: 1 slow of 100 is within p99", both, hist(99, 10*ms, 1, 2*time.Second), hist(100, 5*ms), rollout.Healthy,
			"canary p99 11 ms"},
		{"2 slow of 100 is p99", both, hist(98, 10*ms, 2, 2*time.Second), hist(100, 5*ms), rollout.Failing, "canary p99 2200 ms"},
		{"p99 of 99 requests, one slow: the second-slowest stands for it", split.Guard{MinRequests: 10, MaxLatencyMs: 500, LatencyPercentile: 9900},
			hist(98, 10*ms, 1, 2*time.Second), hist(1000, 5*ms), rollout.Healthy, "canary p99 11 ms over 99 requests"},
		{"p99 of 40 requests, two slow: failing", split.Guard{MinRequests: 10, MaxLatencyMs: 500, LatencyPercentile: 9900},
			hist(38, 10*ms, 2, 2*time.Second), hist(1000, 5*ms), rollout.Failing, "canary p99 2200 ms over 40 requests"},
		{"p99 of 37 requests, all slow: failing", split.Guard{MinRequests: 10, MaxLatencyMs: 150, LatencyPercentile: 9900},
			hist(37, 200*ms), hist(1000, 5*ms), rollout.Failing, "canary p99 220 ms over 37 requests"},
		{"p50", p50, hist(5, ms, 6, 30*ms), hist(10, ms), rollout.Failing, "canary p50 33 ms over 11 requests is above max_latency_ms 20"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := rollout.JudgeLatency(tc.g, tc.canary, tc.stable)
			if v.Result != tc.want || !strings.Contains(v.Reason, tc.reason) {
				t.Fatalf("got %s (%s), want %s containing %q", v.Result, v.Reason, tc.want, tc.reason)
			}
			if v.Canary.Requests != tc.canary.Total() || v.Stable.Requests != tc.stable.Total() {
				t.Errorf("figures %+v %+v", v.Canary, v.Stable)
			}
		})
	}
	// The figures marshal without infinities.
	v := rollout.JudgeLatency(both, hist(100, 2*time.Minute), hist(100, ms))
	b, err := json.Marshal(v)
	if err != nil || !strings.Contains(string(b), `"canary":{"ms":100000,"over":true,"requests":100}`) {
		t.Fatalf("JSON %s, %v", b, err)
	}
}

const latencyYAML = `services:
  - name: api
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 2s
      guard: {window: 1s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2, max_latency_ms: 100, max_latency_ratio: 3}
`

// serveTimed is serve with every request timed: stable's at 5ms, the
// canary's at d.
func (b *bed) serveTimed(tr traffic, d time.Duration) {
	for range tr.stable {
		b.counters.RecordTimed("api", "v1", 200, false, 5*ms)
	}
	for range tr.canary {
		b.counters.RecordTimed("api", "v2", 200, false, d)
	}
}

// TestLatencyGuard: the guard judges each version's requests timed in
// process over its window: a canary that turns slow (200ms, above 100ms
// and 3 x stable's 6ms) at the second step is rolled back with the
// numbers in the verdict; one 10ms slower than stable (inside both
// bounds) is promoted.
func TestLatencyGuard(t *testing.T) {
	for _, c := range []struct {
		name string
		slow time.Duration
		want rollout.Phase
	}{{"200ms at step 2", 200 * ms, rollout.RolledBack}, {"10ms slower", 15 * ms, rollout.Promoted}} {
		t.Run(c.name, func(t *testing.T) {
			b := newBed(t, "", nil)
			b.applyFile(latencyYAML)
			b.act(rollout.Start)
			canary := 5 * ms
			for range 400 {
				if b.status().Step >= 2 {
					canary = c.slow
				}
				b.clock.Add(tick)
				b.serveTimed(healthy, canary)
				b.m.Tick(t.Context())
				if s := b.status(); s.State != rollout.Progressing {
					break
				}
			}
			s := b.status()
			if s.State != c.want {
				t.Fatalf("%s at step %d: %+v", s.State, s.Step, s.Verdict)
			}
			last := s.History[len(s.History)-1]
			lv := last.Verdict.Latency
			if lv == nil || lv.Percentile != 9900 || lv.Stable.Ms != 6 || lv.Canary.Requests < 20 {
				t.Fatalf("latency verdict %+v", lv)
			}
			if c.want == rollout.RolledBack {
				if last.Step != 2 || lv.Result != rollout.Failing || lv.Canary.Ms != 220 ||
					!strings.Contains(last.Reason, "canary p99 220 ms over ") || !strings.Contains(last.Reason, "is above max_latency_ms 100 and above 3 x stable's 6 ms") {
					t.Fatalf("rollback at step %d: %s (%+v)", last.Step, last.Reason, lv)
				}
				if last.Verdict.Canary.Errors != 0 {
					t.Fatalf("rolled back on errors: %+v", last.Verdict)
				}
			} else if lv.Canary.Ms != 16 || lv.Result != rollout.Healthy {
				t.Fatalf("promoted on %+v", lv)
			}
		})
	}
}

// lagging is a LatencySource whose histograms lag one read, as Envoy's do
// when every admin read is a flush: a reading shows them as the read
// before left them.
type lagging struct {
	*signals.Counters
	prev []signals.Histogram
}

func (l *lagging) ReadLatency(ctx context.Context, targets []signals.Target, out []signals.Counts, lat []signals.Histogram) error {
	now := make([]signals.Histogram, len(targets))
	if err := l.Counters.ReadLatency(ctx, targets, out, now); err != nil {
		return err
	}
	if l.prev == nil {
		l.prev = make([]signals.Histogram, len(targets))
	}
	copy(lat, l.prev)
	l.prev = now
	return nil
}

// Requests timed before a run began are not judged in it, though Envoy
// shows them one read late: the latency windows start at the run's second
// reading.
func TestLatencyWindowSkipsTheLaggingRead(t *testing.T) {
	src := &lagging{Counters: &signals.Counters{}}
	l := rollout.NewLocal(src, tick)
	w := rollout.Watch{Service: "api", Window: 2 * time.Second, Latency: true,
		Stable: signals.Target{Service: "api", Version: "v1"}, Canary: signals.Target{Service: "api", Version: "v2"}}
	now := t0
	read := func() {
		t.Helper()
		now = now.Add(tick)
		if err := l.Sample(t.Context(), now, []rollout.Watch{w}); err != nil {
			t.Fatal(err)
		}
	}
	read() // the last read of the previous run
	for range 50 {
		src.RecordTimed("api", "v2", 200, false, 300*ms)
	}
	l.Forget("api") // a new run starts
	read()
	for range 4 {
		for range 50 {
			src.RecordTimed("api", "v1", 200, false, 2*ms)
			src.RecordTimed("api", "v2", 200, false, 3*ms)
		}
		read()
	}
	stable, canary, ok := l.LatencyTotals("api", now)
	if !ok {
		t.Fatal("no latency")
	}
	g := split.Guard{MinRequests: 20, MaxLatencyMs: 100, LatencyPercentile: 9900}
	if v := rollout.JudgeLatency(g, canary, stable); v.Result != rollout.Healthy || v.Canary.Ms != 4 {
		t.Fatalf("the run's first window: %s (%s): the requests timed before it leaked in", v.Result, v.Reason)
	}
}
