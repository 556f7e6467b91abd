package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// shadowConfig is a rollout that starts with a shadow step: 20 % of the
// requests mirrored to v2 for 2s, judged over a 1s window, then 50 %.
const shadowConfig = `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [50, 100]
      hold: 1h
      shadow: {percent: 20, hold: 2s}
      guard: {window: 1s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2}
`

// newShadowBed is newRolloutBed for a shadow step: the guard reads Envoy's
// cluster statistics every 100ms, which count the mirrored requests on
// v2's cluster. In module mode the module is given envoy_admin for that
// (its own counters never see the answers to mirrored requests).
func newShadowBed(t *testing.T, mode envoy.Mode) *bed {
	t.Helper()
	if mode != envoy.ModeModule {
		return newRolloutBed(t, mode, shadowConfig)
	}
	requireModule(t)
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b := startBackends(t, shadowConfig)
	p, err := testbed.LoopbackParams(envoy.ModeModule, "", b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	p.Admin.Port = port
	fc := map[string]any{"reload_debounce": "50ms", "config": b.cfgPath, "signals_interval": "100ms",
		"envoy_admin": fmt.Sprintf("127.0.0.1:%d", port)}
	b.envoy, b.module, err = b.StartEnvoyModule(t.Context(), found.envoyBin, found.moduleDir, p, fc, testbed.EnvoyOptions{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.admin = b.module.AdminClient
	b.client = b.envoy.Client()
	t.Cleanup(b.client.Close)
	return b
}

// TestShadowStep: a rollout that starts in shadow serves no user from v2
// while the guard judges v2 on the requests Envoy mirrors to it. A failing
// v2 is rolled back before any client got an answer from it; a healthy one
// steps on to 50 % after the shadow hold.
func TestShadowStep(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) {
			t.Run("a failing canary is rolled back before any user sees it", func(t *testing.T) {
				b := newShadowBed(t, mode)
				b.backends[1].Fail(50)
				t0 := time.Now()
				tr := startTraffic(t, b.client, 2)
				if s := b.act(t, rollout.Start); !s.Shadow || s.Step != 0 || s.Weight != 0 {
					t.Fatalf("start: %+v", s)
				}
				s := b.waitRollout(t, 30*time.Second, "the rollback", func(s rollout.Status) bool { return s.State != rollout.Progressing })
				time.Sleep(500 * time.Millisecond)
				tr.Halt()
				if s.State != rollout.RolledBack || s.Step != 0 || s.Shadow {
					t.Fatalf("state %s step %d shadow %v, want rolled_back from the shadow step", s.State, s.Step, s.Shadow)
				}
				rb := s.History[len(s.History)-1]
				if rb.Verdict == nil || rb.Verdict.Result != rollout.Failing || rb.Verdict.Canary.Errors == 0 {
					t.Fatalf("rollback %+v (verdict %+v)", rb, rb.Verdict)
				}
				counts, errs := testbed.Tally(tr.Since(t0))
				if counts["v2"] != 0 || len(errs) != 0 || counts["v1"] == 0 {
					t.Fatalf("clients got %v and errors %v; want every answer from v1", counts, errs)
				}
				all, shadow := b.backends[1].Requests()
				if all == 0 || all != shadow {
					t.Fatalf("v2 received %d requests, %d of them mirrored copies: want only copies", all, shadow)
				}
				var mirror map[string]any
				if err := b.admin.Admin(t.Context(), "GET", "/v1/services/api", nil, &mirror); err != nil || mirror["mirror"] != nil {
					t.Fatalf("mirror after the rollback: %v (%v)", mirror["mirror"], err)
				}
				t.Logf("rolled back from the shadow step on %d mirrored requests (%d failed), %d client answers all from v1",
					rb.Verdict.Canary.Requests, rb.Verdict.Canary.Errors, counts["v1"])
			})
			t.Run("a healthy canary steps on after the shadow hold", func(t *testing.T) {
				b := newShadowBed(t, mode)
				t0 := time.Now()
				tr := startTraffic(t, b.client, 2)
				b.act(t, rollout.Start)
				s := b.waitRollout(t, 30*time.Second, "the first step", func(s rollout.Status) bool { return !s.Shadow })
				stepped := time.Now()
				if s.State != rollout.Progressing || s.Step != 1 || s.Weight != 5000 {
					t.Fatalf("after the shadow step: %s step %d weight %v", s.State, s.Step, s.Weight)
				}
				tr.Halt()
				// Before the step no client was served by v2.
				before := tr.Since(t0)
				for _, o := range before {
					if o.Version == "v2" && o.End.Before(s.History[len(s.History)-1].At) {
						t.Fatalf("a client got an answer from v2 at %v, during the shadow step", o.End)
					}
				}
				v := s.History[len(s.History)-1].Verdict
				if v == nil || v.Result != rollout.Healthy || v.Canary.Requests < 10 {
					t.Fatalf("step verdict %+v: want healthy on the mirrored requests", v)
				}
				assertExactSplit(t, b, 200, 50, nil)
				t.Logf("stepped to 50 %% after the shadow hold on %d mirrored requests (%v after start)", v.Canary.Requests, stepped.Sub(t0).Round(time.Millisecond))
			})
		})
	}
}
