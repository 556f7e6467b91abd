package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// rolloutConfig has a rollout through 5, 25, 50 and 100 % with the hold
// and min_requests given, judged over a 1s window (1 % and 2 x stable).
func rolloutConfig(hold string, minRequests int) string {
	return fmt.Sprintf(`
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: %s
      guard: {window: 1s, min_requests: %d, max_error_rate: 1, max_error_ratio: 2}
`, hold, minRequests)
}

// newRolloutBed starts a bed whose splitter reads Envoy's statistics every
// 100ms.
func newRolloutBed(t *testing.T, mode envoy.Mode, config string, args ...string) *bed {
	t.Helper()
	return startBed(t, mode, config, append([]string{"--signals-interval", "100ms"}, args...), true, nil)
}

func (b *bed) rollout(t *testing.T) rollout.Status { t.Helper(); return adminRollout(t, b.admin) }

func (b *bed) act(t *testing.T, a rollout.Action) rollout.Status {
	t.Helper()
	return rolloutDo(t, b.admin, a)
}

// waitRollout polls the rollout's status until cond holds.
func (b *bed) waitRollout(t *testing.T, timeout time.Duration, what string, cond func(rollout.Status) bool) rollout.Status {
	t.Helper()
	return waitRolloutOf(t, b.admin, timeout, what, cond)
}

// adminRollout is service api's rollout status from the admin API at admin.
func adminRollout(t *testing.T, admin *testbed.AdminClient) rollout.Status {
	t.Helper()
	var s rollout.Status
	if err := admin.Admin(t.Context(), http.MethodGet, "/v1/services/api/rollout", nil, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// rolloutDo asks the admin API at admin for action a on api's rollout.
func rolloutDo(t *testing.T, admin *testbed.AdminClient, a rollout.Action) rollout.Status {
	t.Helper()
	var s rollout.Status
	if err := admin.Admin(t.Context(), http.MethodPost, "/v1/services/api/rollout", map[string]rollout.Action{"action": a}, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitRolloutOf polls api's rollout status until cond holds.
func waitRolloutOf(t *testing.T, admin *testbed.AdminClient, timeout time.Duration, what string, cond func(rollout.Status) bool) rollout.Status {
	t.Helper()
	var s rollout.Status
	waitFor(t, timeout, what, func() bool {
		s = adminRollout(t, admin)
		return cond(s)
	})
	return s
}

// TestRolloutHealthyCanaryStepsToPromotion: with traffic flowing and the
// hold scaled down to 2s, the rollout steps through 5, 25 and 50 % to 100 %
// on verdicts made of Envoy's own counters. At each step it is paused,
// the traffic stopped, and the split measured at the backends: exact.
func TestRolloutHealthyCanaryStepsToPromotion(t *testing.T) {
	b := newRolloutBed(t, envoy.ModeExtProc, rolloutConfig("2s", 10))
	tr := startTraffic(t, b.client, 2)
	if s := b.act(t, rollout.Start); s.State != rollout.Progressing || s.Step != 1 {
		t.Fatalf("start: %+v", s)
	}
	for i, pct := range []int{5, 25, 50} {
		b.waitRollout(t, 30*time.Second, fmt.Sprintf("step %d (%d%%)", i+1, pct), func(s rollout.Status) bool {
			return s.State == rollout.Progressing && s.Step == i+1
		})
		b.act(t, rollout.Pause)
		tr.Halt()
		assertExactSplit(t, b, 200, 100-pct, nil)
		b.act(t, rollout.Resume)
		tr = startTraffic(t, b.client, 2)
	}
	s := b.waitRollout(t, 30*time.Second, "promotion", func(s rollout.Status) bool { return s.State == rollout.Promoted })
	tr.Halt()
	allOn(t, b, 50, "v2", nil)

	var steps []string
	for _, h := range s.History {
		if h.Actor != rollout.Actor {
			continue
		}
		v := h.Verdict
		if v == nil || v.Result != rollout.Healthy || v.Canary.Requests < 10 || v.Stable.Requests == 0 {
			t.Errorf("transition to step %d: verdict %+v, want healthy on Envoy's counts of both versions", h.Step, v)
			continue
		}
		steps = append(steps, fmt.Sprintf("%s%% (canary %d requests, stable %d)", fmt.Sprint(float64(h.Weight)/100), v.Canary.Requests, v.Stable.Requests))
	}
	if len(steps) != 3 {
		t.Fatalf("the guard made %d moves, want 3 (to 25, 50, 100): %+v", len(steps), s.History)
	}
	t.Logf("guard moves: %s", strings.Join(steps, ", "))
}

// TestRolloutBadCanaryRollsBack: at the 25 % step v2 starts answering 500
// to half its requests; the guard takes the canary back to 0 and nothing
// reaches v2 after that. The time from v2's first bad answer to the
// rollback and the errors clients saw meanwhile are logged (the benchmark
// measures their distribution).
//
// In module mode the guard's signals are the module's own response counters
// (counted in C per version, read by the control plane inside Envoy).
func TestRolloutBadCanaryRollsBack(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) {
			b := newRolloutBed(t, mode, rolloutConfig("3s", 10))
			tr := startTraffic(t, b.client, 2)
			b.act(t, rollout.Start)
			b.waitRollout(t, 30*time.Second, "the 25% step", func(s rollout.Status) bool { return s.Step == 2 })
			b.backends[1].Fail(50)
			s := b.waitRollout(t, 30*time.Second, "the rollback", func(s rollout.Status) bool { return s.State != rollout.Progressing })
			if s.State != rollout.RolledBack || s.Weight != 0 {
				t.Fatalf("after v2 started failing: %s at %v, want rolled_back at 0", s.State, s.Weight)
			}
			rb := s.History[len(s.History)-1]
			if rb.Step != 2 || rb.Verdict == nil || rb.Verdict.Result != rollout.Failing || rb.Verdict.Canary.Errors == 0 {
				t.Fatalf("rollback transition %+v (verdict %+v): want step 2, failing on the counted 5xx", rb, rb.Verdict)
			}
			// Traffic goes on for a second after the rollback.
			time.Sleep(time.Second)
			tr.Halt()

			first, _ := b.backends[1].Faults.FirstFailure()
			settled := rb.At.Add(100 * time.Millisecond) // requests decided before the rollback may still be in flight
			after, afterErrs := testbed.Tally(tr.Since(settled))
			if len(afterErrs) > 0 || after["v2"] > 0 || after["v1"] == 0 {
				t.Errorf("requests started after the rollback: %v and %d errors (first %v), want all on v1", after, len(afterErrs), afterErrs)
			}
			_, errs := testbed.Tally(tr.Between(first.Add(-time.Second), settled))
			t.Logf("%s: first bad answer -> canary at 0: %v; %d client-visible errors meanwhile; verdict: %s",
				mode, rb.At.Sub(first).Round(time.Millisecond), len(errs), rb.Verdict.Reason)
		})
	}
}

// TestRolloutQuietServiceIsInconclusive: every canary answer fails, but
// the service is too quiet for min_requests: the rollout neither rolls
// back nor steps, and says inconclusive with the errors it saw.
func TestRolloutQuietServiceIsInconclusive(t *testing.T) {
	b := newRolloutBed(t, envoy.ModeExtProc, rolloutConfig("1s", 1000))
	b.backends[1].Fail(100)
	b.act(t, rollout.Start)
	// About 100 requests a second for 4s: 5 canary requests a second, all
	// failing, far below 1000 in the 1s window; the hold (1s) passes many
	// times over.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		_, _ = b.client.Get(t.Context(), "/", nil)
		time.Sleep(10 * time.Millisecond)
	}
	_, failed := b.backends[1].Faults.FirstFailure()
	s := b.rollout(t)
	if s.State != rollout.Progressing || s.Step != 1 || len(s.History) != 1 {
		t.Fatalf("a quiet failing canary: %s step %d, %d transitions; want it left at step 1", s.State, s.Step, len(s.History))
	}
	v := s.Verdict
	if failed == 0 || v == nil || v.Result != rollout.Inconclusive || !strings.Contains(v.Reason, "fewer than min_requests 1000") {
		t.Fatalf("verdict %+v (v2 failed %d requests): want inconclusive", v, failed)
	}
	// The errors were seen; they were just too few to judge.
	var all struct {
		Weights map[string]float64 `json:"weights"`
	}
	if err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &all); err != nil || all.Weights["v2"] != 5 {
		t.Fatalf("weights %v, %v: want the canary still at 5", all.Weights, err)
	}
	t.Logf("verdict: %s", v.Reason)
}

// TestRolloutRestartResumes: the splitter is killed at the 25 % step and
// restarted on the same state file; it is at the same step, since the same
// instant, with its weights in force, and goes on to the next step.
func TestRolloutRestartResumes(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	b := newRolloutBed(t, envoy.ModeExtProc, rolloutConfig("3s", 10), "--state-file", state)
	tr := startTraffic(t, b.client, 2)
	b.act(t, rollout.Start)
	before := b.waitRollout(t, 30*time.Second, "the 25% step", func(s rollout.Status) bool { return s.Step == 2 })
	if err := b.splitter.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := b.splitter.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := b.rollout(t)
	if s.State != rollout.Progressing || s.Step != 2 || !s.Since.Equal(before.Since) || s.Weight != 2500 {
		t.Fatalf("after the restart: %s step %d since %v at %v; want progressing step 2 since %v at 25", s.State, s.Step, s.Since, s.Weight, before.Since)
	}
	if held := time.Since(s.Since); s.Held.D() > held || s.Held.D() < held-2*time.Second {
		t.Errorf("held %v after the restart, want the time since the step began (%v)", s.Held.D(), held)
	}
	var svc struct {
		Weights  map[string]float64 `json:"weights"`
		Override bool               `json:"override"`
	}
	if err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &svc); err != nil || svc.Weights["v2"] != 25 || !svc.Override {
		t.Fatalf("weights after the restart: %+v, %v", svc, err)
	}
	b.waitRollout(t, 30*time.Second, "the next step after the restart", func(s rollout.Status) bool { return s.Step == 3 })
	tr.Halt()
}

// newRolloutBedViaProxy is newRolloutBed (ext_proc) with the splitter
// reading Envoy's admin port through a proxy the test can cut.
func newRolloutBedViaProxy(t *testing.T, config string) (*bed, *testbed.Proxy) {
	t.Helper()
	requireEnvoy(t)
	b := startBackends(t, config)
	adminPort, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := b.StartProxy(fmt.Sprintf("127.0.0.1:%d", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	b.splitter, err = b.StartSplitter(t.Context(), found.splitterBin, b.cfgPath, "--envoy-admin", proxy.Addr, "--signals-interval", "100ms")
	if err != nil {
		t.Fatal(err)
	}
	b.admin = b.splitter.AdminClient
	p, err := testbed.LoopbackParams(envoy.ModeExtProc, b.splitter.GRPCAddr, b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	p.Admin.Port = adminPort
	if b.envoy, err = b.StartEnvoy(t.Context(), found.envoyBin, p, testbed.EnvoyOptions{Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	b.client = b.envoy.Client()
	t.Cleanup(b.client.Close)
	return b, proxy
}

// TestRolloutReadingGapStartsANewWindow: Envoy's admin port is unreadable
// for 8s (four windows, longer than the hold) while traffic flows, and the
// canary starts failing a fifth of its requests just before the port is
// readable again. Read across the gap, 8s of healthy traffic would bury
// the failure in one bucket and step the canary up; instead the first
// reading after the gap is a new baseline: no step until the window is
// full again, and the failure rolls the canary back from its first step.
func TestRolloutReadingGapStartsANewWindow(t *testing.T) {
	b, proxy := newRolloutBedViaProxy(t, `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [20, 50, 100]
      hold: 5s
      guard: {window: 2s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2}
`)
	tr := startTraffic(t, b.client, 2)
	defer tr.Halt()
	b.act(t, rollout.Start)
	b.waitRollout(t, 30*time.Second, "a first reading", func(s rollout.Status) bool { return s.Verdict != nil })
	proxy.Cut()
	cut := time.Now()
	if s := b.waitRollout(t, 30*time.Second, "the signal error", func(s rollout.Status) bool { return s.SignalError != "" }); s.Step != 1 {
		t.Fatalf("the rollout moved before the admin port was cut: %+v", s)
	}
	time.Sleep(8*time.Second - time.Since(cut))
	b.backends[1].Fail(20)
	proxy.Restore()
	restored := time.Now()
	s := b.waitRollout(t, 30*time.Second, "a move after the gap", func(s rollout.Status) bool { return s.State != rollout.Progressing || s.Step != 1 })
	if s.State != rollout.RolledBack || s.Step != 1 {
		t.Fatalf("after the gap: %s at step %d (history %+v): want rolled back from step 1, never stepped on readings across the gap", s.State, s.Step, s.History)
	}
	rb := s.History[len(s.History)-1]
	t.Logf("rolled back %v after the admin port was readable again: %s (window covered %v)",
		rb.At.Sub(restored).Round(time.Millisecond), rb.Verdict.Reason, rb.Verdict.Covered.D())
}

// TestStatsListener: the compose bootstrap's stats listener (rendered on
// loopback) lets a splitter in another container read Envoy's counters
// with GET /stats?filter=..., and nothing else of the admin interface.
func TestStatsListener(t *testing.T) {
	requireEnvoy(t)
	b := testbed.ForTest(t)
	backends, err := b.StartBackends("v1", "v2")
	if err != nil {
		t.Fatal(err)
	}
	p, err := testbed.LoopbackParams(envoy.ModeWeighted, "", backends...)
	if err != nil {
		t.Fatal(err)
	}
	adminPort, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	statsPort, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p.Admin.Port, p.Stats = adminPort, envoy.Addr{Host: "127.0.0.1", Port: statsPort}
	e, err := b.StartEnvoy(t.Context(), found.envoyBin, p, testbed.EnvoyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := e.Client()
	defer c.Close()
	if _, err := c.Count(t.Context(), 10, 1, nil); err != nil {
		t.Fatal(err)
	}
	statsAddr := fmt.Sprintf("127.0.0.1:%d", statsPort)
	src := signals.NewEnvoyAdmin(statsAddr, time.Second)
	out := make([]signals.Counts, 2)
	targets := []signals.Target{{Service: "api", Version: "v1", Cluster: "v1"}, {Service: "api", Version: "v2", Cluster: "v2"}}
	if err := src.Read(t.Context(), targets, out); err != nil {
		t.Fatal(err)
	}
	if out[0].Requests+out[1].Requests != 10 {
		t.Fatalf("counters through the stats listener: %+v, want 10 requests in all", out)
	}
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, "/quitquitquit"}, {http.MethodGet, "/config_dump"}, {http.MethodPost, "/stats"}, {http.MethodGet, "/stats/prometheus"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), r.method, "http://"+statsAddr+r.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s through the stats listener: %d, want 404", r.method, r.path, resp.StatusCode)
		}
	}
	if !e.Running() {
		t.Fatal("Envoy stopped")
	}
}
