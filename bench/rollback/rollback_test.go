package rollback

import (
	"strings"
	"testing"
	"time"
)

func TestDist(t *testing.T) {
	var v []float64
	for i := 20; i >= 1; i-- {
		v = append(v, float64(i))
	}
	if d := dist(v); d != (Dist{Min: 1, P50: 10, P90: 18, Max: 20}) {
		t.Errorf("dist(1..20) = %+v", d)
	}
	if d := dist([]float64{7}); d != (Dist{7, 7, 7, 7}) {
		t.Errorf("dist(7) = %+v", d)
	}
}

func TestConfigAndRender(t *testing.T) {
	if c := config(25, 20, time.Second, CaseErrors); !strings.Contains(c, "steps: [25, 100]") || !strings.Contains(c, "window: 1s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2}") {
		t.Errorf("config:\n%s", c)
	}
	if c := config(25, 20, time.Second, CaseLatency); !strings.Contains(c, "max_error_ratio: 2, max_latency_ms: 100, max_latency_ratio: 5}") {
		t.Errorf("latency config:\n%s", c)
	}
	var b strings.Builder
	Render(&b, &Result{Machine: "test box", Envoy: "1.40.0", FailPercent: 50, DelayMs: 200, Canary: 25, MinRequests: 20, Workers: 2,
		Series: []Series{
			{Window: "1s", Interval: "250ms", Runs: make([]Run, 20), Detect: Dist{40, 120, 230, 250}, Errors: Dist{1, 10, 30, 48}, RPS: 1200},
			{Mode: "module", Case: CaseLatency, Window: "1s", Interval: "250ms", Runs: make([]Run, 20), Detect: Dist{300, 350, 400, 450}, Slowed: Dist{2, 3, 4, 5}, RPS: 300},
		}})
	for _, want := range []string{
		"Machine: test box.",
		"| errors | ext_proc | 1s | 250ms | 20 | 40 / 120 / 230 / 250 | 1 / 10 / 30 / 48 | 1200 |",
		"| latency | module | 1s | 250ms | 20 | 300 / 350 / 400 / 450 | 2 / 3 / 4 / 5 | 300 |",
		"200 ms late", "Flagger", "Argo Rollouts",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
