package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/examples/backend/echo"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// The steps below run on the bed of TestEnvoyGateway (one Envoy Gateway
// per mode): sticky cookies for anonymous clients, mirroring, and guarded
// rollouts, through Envoy Gateway's Envoy with the recipe as shipped.

// Where Envoy counts each version behind Envoy Gateway: the statistics
// names the EnvoyProxy's clusterStatName ("%BACKEND_REFS%") gives the
// clusters of every rule of a backend, and gateway.yaml's EnvoyPatchPolicy
// gives the mirror clusters (examples/envoy-gateway/config.yaml names them).
const (
	gwStatV1 = "envoy-gateway-system/api-v1"
	gwStatV2 = "envoy-gateway-system/api-v2"
)

// useConfig writes cfg as the splitter's configuration and waits until it
// is the one in force (its sha256), without restarting anything.
func (b *gwBed) useConfig(t *testing.T, cfg string) {
	t.Helper()
	writeFile(t, b.cfgPath, cfg)
	sum := sha256.Sum256([]byte(cfg))
	want := hex.EncodeToString(sum[:])
	waitFor(t, 30*time.Second, "the new configuration in force", func() bool {
		var svc struct {
			Config struct {
				SHA256 string `json:"sha256"`
			} `json:"config"`
		}
		err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &svc)
		return err == nil && svc.Config.SHA256 == want
	})
}

// shippedConfig is examples/envoy-gateway/config.yaml, the splitter's
// configuration behind Envoy Gateway, with its rollout's times scaled down
// for a test (holds of seconds, a 2s window, 10 requests), and subs
// applied on top.
func shippedConfig(t *testing.T, subs ...substitution) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(found.root, "examples", "envoy-gateway", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	if !strings.Contains(s, "v1: "+gwStatV1) || !strings.Contains(s, "v2: "+gwStatV2) {
		t.Fatalf("examples/envoy-gateway/config.yaml's clusters are not %s and %s", gwStatV1, gwStatV2)
	}
	for _, sub := range append([]substitution{
		{"hold: 60s\n", "hold: 2s\n", 1},
		{"window: 10s", "window: 2s", 1},
		{"min_requests: 100", "min_requests: 10", 1},
		// Bounds a loaded machine's stalls stay under, and flap control
		// longer than the window: a few stalled requests do not roll a
		// healthy canary back; one that stays slow is rolled back.
		{"max_latency_ms: 500", "max_latency_ms: 150", 1},
		{"max_latency_ratio: 1.5\n", "max_latency_ratio: 10\n        failing_for: 2500ms\n", 1},
	}, subs...) {
		if got := strings.Count(s, sub.old); got != sub.n {
			t.Fatalf("examples/envoy-gateway/config.yaml: %q occurs %d times, the test substitutes %d (did the example change?)", sub.old, got, sub.n)
		}
		s = strings.ReplaceAll(s, sub.old, sub.new)
	}
	return s
}

// envoyCount is one of Envoy's counters (0 while Envoy has not created it:
// Envoy Gateway's bootstrap defers the creation of cluster statistics).
func (b *gwBed) envoyCount(t *testing.T, name string) uint64 {
	t.Helper()
	stats, err := b.envoy.Stats(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return stats[name]
}

// anonymousClients: 300 clients without a key are each given one in a
// cookie on their first answer (reason sticky_assigned), and the three
// requests they send with it are answered by the same version (reason
// sticky_routing, no new cookie); about a fifth of them are on v2 at 80/20.
// A backend's own Set-Cookie reaches the client beside ours. Over ext_proc
// the cookie needs the policy's allowModeOverride
// (TestEnvoyGatewayNegativeControls removes it).
func (b *gwBed) anonymousClients(t *testing.T) {
	b.useConfig(t, anonymousConfig)
	ctx := t.Context()
	const clients = 300
	keys := make([]string, clients)
	first := make([]string, clients)
	parallel(t, clients, func(i int) (err error) {
		keys[i], first[i], err = anonymousClient(ctx, b.client, 3)
		return err
	})
	v2 := onV2(t, keys, first)
	// 300 random keys at 20 %: 60 expected, a standard deviation of 7.
	if v2 < 30 || v2 > 90 {
		t.Fatalf("%d of %d clients on v2 at 80/20, want about 60", v2, clients)
	}
	a, err := sendTo(ctx, b.client, hdr(echo.SetCookieHeader, "cart=42; Path=/shop"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.setCookies) != 2 || ourKey(t, a.setCookies) == "" || !(a.setCookies[0] == "cart=42; Path=/shop" || a.setCookies[1] == "cart=42; Path=/shop") {
		t.Fatalf("Set-Cookie %q: want the backend's and ours, as two headers", a.setCookies)
	}
	a, err = sendTo(ctx, b.client, hdr(echo.SetCookieHeader, "cart=42; Path=/shop", "Cookie", "splitter-id="+keys[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.setCookies) != 1 || a.setCookies[0] != "cart=42; Path=/shop" {
		t.Fatalf("a client with its key: Set-Cookie %q, want only the backend's", a.setCookies)
	}
	t.Logf("%d anonymous clients, 4 requests each, none moved; %d on v2", clients, v2)
}

// mirrorCopiesAShare: at v1 100 with 10 % mirrored to v2, 1,000 unkeyed
// requests are all answered by v1, v2's backend receives exactly 100
// copies, and Envoy counts them under v2's statistics name (what a shadow
// step's guard reads: gateway.yaml's EnvoyPatchPolicy names the mirror
// cluster). Then, with no mirror, requests carrying x-mirror-version get no
// copy.
func (b *gwBed) mirrorCopiesAShare(t *testing.T) {
	b.useConfig(t, mirrorConfig)
	ctx := t.Context()
	v2 := b.backends[1]
	stat := "cluster." + gwStatV2 + ".upstream_rq_completed"
	before, _ := v2.Requests()
	statBefore := b.envoyCount(t, stat)
	counts, err := b.client.Count(ctx, 1000, 4, nil)
	if err != nil || counts["v1"] != 1000 {
		t.Fatalf("answers %v (%v): want v1=1000", counts, err)
	}
	// Copies go beside the requests, not waited for: wait for them, then
	// make sure no more arrive.
	waitFor(t, 30*time.Second, "100 copies at v2", func() bool { all, _ := v2.Requests(); return all-before >= 100 })
	time.Sleep(500 * time.Millisecond)
	if all, _ := v2.Requests(); all-before != 100 {
		t.Fatalf("v2 received %d copies of 1,000 requests mirrored at 10 %%, want exactly 100", all-before)
	}
	if got := b.envoyCount(t, stat) - statBefore; got != 100 {
		t.Fatalf("Envoy's %s grew by %d, want the 100 copies", stat, got)
	}
	t.Logf("1,000 requests all answered by v1; exactly 100 copies at v2, counted by Envoy as %s", gwStatV2)

	b.useConfig(t, strings.Replace(mirrorConfig, "    mirror: {version: v2, percent: 10}\n", "", 1))
	before, _ = v2.Requests()
	counts, err = b.client.Count(ctx, 200, 4, func(int) http.Header { return hdr("x-mirror-version", "v2", "x-route-version", "v1") })
	if err != nil || counts["v1"] != 200 {
		t.Fatalf("answers %v (%v): want v1=200", counts, err)
	}
	time.Sleep(500 * time.Millisecond)
	if all, _ := v2.Requests(); all != before {
		t.Fatalf("v2 received %d copies for clients that sent x-mirror-version", all-before)
	}
}

// runRollout starts api's rollout with traffic flowing from 4 workers
// and returns when it has ended (promoted, rolled back), with the traffic,
// which goes on for a second after the end was seen (at ended).
func (b *gwBed) runRollout(t *testing.T, cfg string, wantShadow bool) (s rollout.Status, tr *testbed.Traffic, ended time.Time) {
	t.Helper()
	b.useConfig(t, cfg)
	tr = startTraffic(t, b.client, 4)
	s = rolloutDo(t, b.admin, rollout.Start)
	if s.State != rollout.Progressing || s.Shadow != wantShadow {
		t.Fatalf("start: %+v", s)
	}
	startedAt := s.History[len(s.History)-1].At
	s = waitRolloutOf(t, b.admin, 90*time.Second, "the rollout's end", func(s rollout.Status) bool { return s.State != rollout.Progressing })
	ended = time.Now()
	time.Sleep(time.Second)
	tr.Halt()
	// This run's transitions only (the history keeps earlier runs').
	s.History = slices.DeleteFunc(s.History, func(h rollout.Transition) bool { return h.At.Before(startedAt) })
	return s, tr, ended
}

// rollbackOnErrors: v2 answers 500 to half its requests; the guard (over
// ext_proc reading Envoy Gateway's Envoy at its admin port, in the module
// its own counts) rolls the canary back to 0, and nothing reaches v2 after
// that.
func (b *gwBed) rollbackOnErrors(t *testing.T) {
	b.backends[1].Fail(50)
	defer b.backends[1].Fail(0)
	s, tr, ended := b.runRollout(t, shippedConfig(t), false)
	if s.State != rollout.RolledBack || s.Weight != 0 {
		t.Fatalf("a failing canary: %s at %v, want rolled_back at 0 (history %+v)", s.State, s.Weight, s.History)
	}
	rb := s.History[len(s.History)-1]
	v := rb.Verdict
	if v == nil || v.Result != rollout.Failing || v.Canary.Errors == 0 || v.Stable.Requests == 0 {
		t.Fatalf("rollback %+v (verdict %+v): want failing on the canary's counted 5xx, with stable's requests counted", rb, v)
	}
	// Requests sent once the rollback was seen (its weights are applied
	// by then, or a moment later: half a second of slack).
	after, errs := testbed.Tally(tr.Since(ended.Add(500 * time.Millisecond)))
	if after["v2"] != 0 || after["v1"] == 0 || len(errs) != 0 {
		t.Fatalf("requests after the rollback: %v, %d errors: want all on v1", after, len(errs))
	}
	t.Logf("rolled back at step %d: %s", rb.Step, rb.Reason)
}

// rollbackOnLatency: v2 answers every request 200ms late; the guard rolls
// it back on latency alone (over ext_proc from Envoy's upstream_rq_time
// histograms, current at every read thanks to the EnvoyProxy's
// stats_flush_on_admin; in the module from its own timings).
func (b *gwBed) rollbackOnLatency(t *testing.T) {
	b.backends[1].Slow(200 * time.Millisecond)
	defer b.backends[1].Slow(0)
	s, _, _ := b.runRollout(t, shippedConfig(t), false)
	if s.State != rollout.RolledBack || s.Weight != 0 {
		t.Fatalf("a slow canary: %s at %v, want rolled_back at 0 (history %+v)", s.State, s.Weight, s.History)
	}
	rb := s.History[len(s.History)-1]
	v := rb.Verdict
	if v == nil || v.Latency == nil || v.Latency.Result != rollout.Failing || v.Canary.Errors != 0 || v.Latency.Canary.Ms < 200 ||
		!strings.Contains(rb.Reason, "above max_latency_ms 150") {
		t.Fatalf("rollback %+v (verdict %+v): want failing on latency alone", rb, v)
	}
	t.Logf("rolled back at step %d: %s", rb.Step, rb.Reason)
}

// rollbackFromShadow (ext_proc): the rollout starts dark, v2 serving no
// user while 20 % of the requests are mirrored to it; v2 fails half of
// them, and the guard, reading Envoy's counts of the copies under v2's
// statistics name, rolls it back before any client got an answer from it.
func (b *gwBed) rollbackFromShadow(t *testing.T) {
	b.backends[1].Fail(50)
	defer b.backends[1].Fail(0)
	before, _ := b.backends[1].Requests()
	t0 := time.Now()
	s, tr, _ := b.runRollout(t, shippedConfig(t, substitution{"# shadow: {percent: 10, hold: 60s}", "shadow: {percent: 20, hold: 2s}", 1}), true)
	if s.State != rollout.RolledBack || s.Step != 0 || s.Shadow {
		t.Fatalf("state %s step %d shadow %v, want rolled_back from the shadow step (history %+v)", s.State, s.Step, s.Shadow, s.History)
	}
	rb := s.History[len(s.History)-1]
	if rb.Verdict == nil || rb.Verdict.Result != rollout.Failing || rb.Verdict.Canary.Errors == 0 {
		t.Fatalf("rollback %+v (verdict %+v): want failing on the copies", rb, rb.Verdict)
	}
	counts, errs := testbed.Tally(tr.Since(t0))
	copies, _ := b.backends[1].Requests()
	if counts["v2"] != 0 || len(errs) != 0 || counts["v1"] == 0 || copies == before {
		t.Fatalf("clients got %v and %d errors, v2 received %d copies: want every answer from v1, and copies at v2", counts, len(errs), copies-before)
	}
	t.Logf("rolled back from the shadow step on %d copies (%d failed); %d client answers, all from v1", rb.Verdict.Canary.Requests, rb.Verdict.Canary.Errors, counts["v1"])
}

// promoteHealthy: a healthy v2 is stepped through 5, 25, 50 % to 100 % on
// healthy verdicts of both versions' counts.
func (b *gwBed) promoteHealthy(t *testing.T) {
	s, _, _ := b.runRollout(t, shippedConfig(t), false)
	if s.State != rollout.Promoted {
		t.Fatalf("a healthy canary: %s (verdict %+v, history %+v), want promoted", s.State, s.Verdict, s.History)
	}
	var moves []string
	for _, h := range s.History {
		if h.Actor != rollout.Actor {
			continue
		}
		v := h.Verdict
		if v == nil || v.Result != rollout.Healthy || v.Canary.Requests < 10 || v.Stable.Requests == 0 {
			t.Errorf("move to step %d: verdict %+v, want healthy on both versions' counts", h.Step, v)
			continue
		}
		moves = append(moves, fmt.Sprintf("%v%% (canary %d, stable %d)", float64(h.Weight)/100, v.Canary.Requests, v.Stable.Requests))
	}
	if len(moves) != 3 {
		t.Fatalf("the guard made %d moves, want 3 (to 25, 50, 100): %+v", len(moves), s.History)
	}
	b.allOn(t, 20, "v2", nil)
	t.Logf("guard moves: %s", strings.Join(moves, ", "))
}

// noClusterNoVerdict (ext_proc): without the service's clusters the guard
// looks for Envoy clusters named v1 and v2, which Envoy Gateway's Envoy
// does not have: the rollout says so and neither steps nor rolls back.
func (b *gwBed) noClusterNoVerdict(t *testing.T) {
	cfg := shippedConfig(t, substitution{"    clusters:\n      v1: " + gwStatV1 + "\n      v2: " + gwStatV2 + "\n", "", 1})
	b.useConfig(t, cfg)
	tr := startTraffic(t, b.client, 2)
	defer tr.Halt()
	rolloutDo(t, b.admin, rollout.Start)
	s := waitRolloutOf(t, b.admin, 30*time.Second, "the signal error", func(s rollout.Status) bool { return s.SignalError != "" })
	if !strings.Contains(s.SignalError, `envoy has no cluster "v`) || s.State != rollout.Progressing || s.Step != 1 {
		t.Fatalf("without clusters: %s at step %d, signal error %q", s.State, s.Step, s.SignalError)
	}
	rolloutDo(t, b.admin, rollout.Abort)
	t.Logf("without clusters: %s", s.SignalError)
}

// plainSplit puts baseConfig back (80/20, no rollout) for the steps after.
func (b *gwBed) plainSplit(t *testing.T) {
	b.useConfig(t, baseConfig)
	waitFor(t, 20*time.Second, "80/20 served", func() bool {
		var svc struct {
			Weights map[string]float64 `json:"weights"`
		}
		err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &svc)
		return err == nil && svc.Weights["v2"] == 20
	})
}
