package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// orderBed is an Envoy + splitter pair where each side may be of either
// release: the splitter binary, and the bootstrap Envoy runs (rendered by
// that release's envoy package).
func orderBed(t *testing.T, splitterBin string, render func(envoy.Params) ([]byte, error), config string) *bed {
	t.Helper()
	requireEnvoy(t)
	b := startBackends(t, config)
	adminPort, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b.splitter, err = b.StartSplitter(t.Context(), splitterBin, b.cfgPath, "--envoy-admin", fmt.Sprintf("127.0.0.1:%d", adminPort), "--signals-interval", "100ms")
	if err != nil {
		t.Fatal(err)
	}
	b.admin = b.splitter.AdminClient
	p, err := testbed.LoopbackParams(envoy.ModeExtProc, b.splitter.GRPCAddr, b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	p.Admin.Port = adminPort
	if b.envoy, err = b.StartEnvoy(t.Context(), found.envoyBin, p, testbed.EnvoyOptions{Concurrency: 1, Render: render}); err != nil {
		t.Fatal(err)
	}
	b.client = b.envoy.Client()
	t.Cleanup(b.client.Close)
	return b
}

// keyCookie reports whether cs holds the key cookie of newFeaturesConfig.
func keyCookie(cs []string) bool {
	for _, c := range cs {
		if strings.HasPrefix(c, "sid=") {
			return true
		}
	}
	return false
}

// warnings is the services view's config.warnings.
func warnings(t *testing.T, b *bed) string {
	t.Helper()
	var v struct {
		Config struct {
			Warnings []string `json:"warnings"`
		} `json:"config"`
	}
	if err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services", nil, &v); err != nil {
		t.Fatal(err)
	}
	return strings.Join(v.Config.Warnings, "\n")
}

// newFeaturesConfig uses what this release adds: keys given to anonymous
// clients, a mirror, a guard on latency.
const newFeaturesConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 50, v2: 50}
    sticky: {header: x-user-id, assign: {cookie: sid, max_age: 1h}}
    mirror: {version: v2, percent: 100}
    rollout:
      steps: [50, 100]
      hold: 1h
      guard: {window: 1s, min_requests: 1000, max_error_rate: 1, max_error_ratio: 2, max_latency_ms: 5000}
`

// Envoy and the sidecar upgraded in either order.
//
// This splitter behind an Envoy still on the previous release's bootstrap
// (no allow_mode_override, no mirror routes, no stats_flush_on_admin):
// requests are split, but an anonymous client's key cookie is never set
// (each of its requests gets a new key), no copy is mirrored, and the
// latency histograms lag; the first and the last are reported in the
// services view's warnings (and the first in a metric), the mirror is
// not (nothing tells the splitter): docs/upgrading.md says to upgrade
// Envoy's bootstrap first. The previous splitter behind this release's
// bootstrap splits as before.
func TestUpgradeEnvoyAndSidecarOrder(t *testing.T) {
	rel := previousRelease(t)
	t.Run("new splitter, previous bootstrap", func(t *testing.T) {
		b := orderBed(t, found.splitterBin, rel.RenderBootstrap, newFeaturesConfig)
		for range 40 {
			a, err := send(t.Context(), b, nil)
			if err != nil {
				t.Fatal(err)
			}
			if keyCookie(a.setCookies) {
				t.Fatalf("a key cookie was set through an Envoy without allow_mode_override: %q", a.setCookies)
			}
			if r := a.seen["x-route-reason"]; r != "sticky_assigned" {
				t.Fatalf("a request without a key decided by %q, want sticky_assigned (a new key each time)", r)
			}
		}
		w := warnings(t, b)
		if !strings.Contains(w, "allow_mode_override: true") {
			t.Fatalf("no warning about the cookies: %q", w)
		}
		if n := metric(t, b.splitter, `splitter_sticky_cookies_lost_total{api="ext_proc"}`); n < 16 {
			t.Fatalf("splitter_sticky_cookies_lost_total %v, want at least 16", n)
		}
		if _, copies := b.backends[1].Requests(); copies != 0 {
			t.Fatalf("%d copies mirrored through the previous bootstrap (it has no mirror routes)", copies)
		}
		// A guard on latency reads histograms Envoy does not flush at
		// admin reads: said in the views.
		b.actOn(t, "api", rollout.Start)
		waitFor(t, 30*time.Second, "the latency warning", func() bool {
			_, _ = send(t.Context(), b, nil)
			return strings.Contains(warnings(t, b), "stats_flush_on_admin is not set")
		})
	})
	t.Run("new splitter, new bootstrap", func(t *testing.T) {
		b := orderBed(t, found.splitterBin, nil, newFeaturesConfig)
		for range 20 {
			a, err := send(t.Context(), b, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !keyCookie(a.setCookies) {
				t.Fatalf("no key cookie with this release's bootstrap: %q", a.setCookies)
			}
		}
		b.actOn(t, "api", rollout.Start)
		for range 20 {
			_, _ = send(t.Context(), b, nil)
		}
		waitFor(t, 30*time.Second, "a verdict (the guard read Envoy)", func() bool {
			_, _ = send(t.Context(), b, nil)
			return b.rolloutOf(t, "api").Verdict != nil
		})
		if w := warnings(t, b); w != "" {
			t.Fatalf("warnings with this release's bootstrap: %q", w)
		}
	})
	t.Run("previous splitter, new bootstrap", func(t *testing.T) {
		b := orderBed(t, rel.Splitter, nil, baseConfig)
		assertExactSplit(t, b, 100, 80, nil)
	})
}
