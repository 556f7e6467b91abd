package e2e

import (
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// TestDrainDelayKeepsDeciding: after SIGTERM the splitter keeps deciding
// new requests for its drain delay (health NOT_SERVING meanwhile), so the
// tail of traffic is routed by the split, not failed open to stable. The
// negative control, without a delay, fails requests open at once.
func TestDrainDelayKeepsDeciding(t *testing.T) {
	const window = 1500 * time.Millisecond
	for _, tc := range []struct {
		name     string
		delay    string
		wantOpen bool // requests fail open within the window
	}{
		{name: "drain delay 3s", delay: "3s", wantOpen: false},
		{name: "no drain delay (control)", delay: "0s", wantOpen: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBedArgs(t, envoy.ModeExtProc, baseConfig, []string{"--drain-delay", tc.delay})
			tr := startTraffic(t, b.client, 2)
			t0 := time.Now()
			waitFor(t, 10*time.Second, "traffic on both versions", func() bool {
				c, _ := testbed.Tally(tr.Since(t0))
				return c["v1"] >= 20 && c["v2"] >= 5
			})
			openBefore := failedOpen(t, b)

			term := time.Now()
			if err := b.splitter.Terminate(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(window)
			openDuring := failedOpen(t, b) - openBefore
			c, errs := testbed.Tally(tr.Between(term, term.Add(window)))
			if len(errs) > 0 {
				t.Fatalf("%d client errors during the drain: %v", len(errs), errs[0])
			}
			t.Logf("delay %s: within %v of SIGTERM %v, %d requests failed open", tc.delay, window, c, openDuring)
			if tc.wantOpen {
				if openDuring == 0 {
					t.Fatal("no request failed open without a drain delay; the control shows nothing")
				}
				return
			}
			if openDuring != 0 || c["v2"] == 0 || c.Total() < 20 {
				t.Fatalf("during the drain delay: %v, %d failed open; want every request decided (some on v2)", c, openDuring)
			}
			select {
			case <-b.splitter.Exited():
				t.Fatal("the splitter exited during its drain delay")
			default:
			}
			select {
			case <-b.splitter.Exited():
				if err := b.splitter.ExitErr(); err != nil {
					t.Fatalf("exit after the drain: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the splitter did not exit after its drain delay")
			}
		})
	}
}

// failedOpen returns Envoy's count of ext_proc requests that went on
// without the splitter.
func failedOpen(t *testing.T, b *bed) uint64 {
	t.Helper()
	stats, err := b.envoy.Stats(t.Context(), "failure_mode_allowed")
	if err != nil {
		t.Fatal(err)
	}
	return stats["http.ingress_http.ext_proc.failure_mode_allowed"]
}
