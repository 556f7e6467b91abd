package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// baseConfig is the seed setup plus a cookie rule: 80/20, beta testers by
// header, an internal ring by cookie, sticky users, one A/B experiment.
const baseConfig = `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id}
    rules:
      - name: beta-testers
        when: [{header: x-beta, exact: "true"}]
        version: v2
      - name: internal-ring
        when: [{cookie: ring, exact: internal}]
        version: v2
experiments:
  - name: default
    key: {header: x-user-id}
    variants: {A: 50, B: 50}
    header: x-variant
`

// splitConfig is baseConfig's service with other weights.
func splitConfig(v1, v2 int) string {
	return strings.Replace(baseConfig, "{v1: 80, v2: 20}", fmt.Sprintf("{v1: %d, v2: %d}", v1, v2), 1)
}

// assertExactSplit sends n unkeyed requests and requires every one to be
// answered, decided by the weights (not failed open), and the counts to be
// within one request of v1:v2 = p1:100-p1.
func assertExactSplit(t *testing.T, b *bed, n, p1 int, h http.Header) {
	t.Helper()
	counts, err := b.client.Count(t.Context(), n, 4, func(int) http.Header { return h })
	if err != nil {
		t.Fatalf("after %v: %v", counts, err)
	}
	want1 := n * p1 / 100
	if counts.Total() != n || abs(counts["v1"]-want1) > 1 || abs(counts["v2"]-(n-want1)) > 1 {
		t.Fatalf("split over %d requests = %v, want v1=%d v2=%d (±1)", n, counts, want1, n-want1)
	}
	failedOpen, err := b.envoy.Stats(t.Context(), "failure_mode_allowed")
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range failedOpen {
		if v != 0 {
			t.Errorf("%s = %d, want 0 (requests failed open)", name, v)
		}
	}
	t.Logf("split over %d requests: %v", n, counts)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func TestWeightedSplitIsExact(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) {
			b := newBed(t, mode, baseConfig)
			assertExactSplit(t, b, 1000, 80, nil)
		})
	}
}

func TestRulesStickyAndExperiments(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) {
			b := newBed(t, mode, baseConfig)
			pinned := []struct {
				name       string
				h          http.Header
				version    string
				reason     string
				wantHeader map[string]string
			}{
				{name: "beta header", h: hdr("x-beta", "true"), version: "v2", reason: "header_match"},
				{name: "internal cookie", h: hdr("Cookie", "theme=dark; ring=internal"), version: "v2", reason: "header_match"},
				{name: "beta header beats sticky user", h: hdr("x-beta", "true", "x-user-id", "user-123"), version: "v2", reason: "header_match",
					wantHeader: map[string]string{"x-variant": "A"}},
				{name: "spoofed route header with beta", h: hdr("x-beta", "true", "x-route-version", "v1"), version: "v2", reason: "header_match"},
			}
			for _, tc := range pinned {
				t.Run(tc.name, func(t *testing.T) {
					for range 10 {
						v, got := b.get(t, tc.h)
						if v != tc.version || got["x-route-reason"] != tc.reason || got["x-route-version"] != v {
							t.Fatalf("version %s, backend saw x-route-version=%q x-route-reason=%q; want %s/%s",
								v, got["x-route-version"], got["x-route-reason"], tc.version, tc.reason)
						}
						for k, want := range tc.wantHeader {
							if got[k] != want {
								t.Fatalf("backend saw %s=%q, want %q", k, got[k], want)
							}
						}
					}
				})
			}

			t.Run("sticky users and variants", func(t *testing.T) {
				seen := testbed.Counts{}
				variants := testbed.Counts{}
				for u := range 50 {
					user := fmt.Sprintf("user-%d", u)
					first, firstHeaders := b.get(t, hdr("x-user-id", user))
					for range 4 {
						v, got := b.get(t, hdr("x-user-id", user))
						if v != first || got["x-variant"] != firstHeaders["x-variant"] {
							t.Fatalf("%s moved: %s/%s then %s/%s", user, first, firstHeaders["x-variant"], v, got["x-variant"])
						}
						if got["x-route-reason"] != "sticky_routing" {
							t.Fatalf("%s: reason %q, want sticky_routing", user, got["x-route-reason"])
						}
					}
					seen[first]++
					variants[firstHeaders["x-variant"]]++
				}
				// Deterministic hashes: 50 users cannot all land on one side
				// of an 80/20 split or a 50/50 experiment unless hashing is broken.
				if seen["v1"] == 0 || seen["v2"] == 0 || variants["A"] == 0 || variants["B"] == 0 || variants.Total() != 50 {
					t.Fatalf("50 users: versions %v, variants %v", seen, variants)
				}
				t.Logf("50 sticky users: versions %v, variants %v", seen, variants)
			})

			t.Run("unkeyed requests carry the weighted reason and no variant", func(t *testing.T) {
				_, got := b.get(t, hdr("x-variant", "B"))
				if got["x-route-reason"] != "weighted_routing" {
					t.Fatalf("reason %q, want weighted_routing", got["x-route-reason"])
				}
				if v, ok := got["x-variant"]; ok {
					t.Fatalf("client-sent x-variant reached the backend as %q; Envoy must strip it", v)
				}
			})
		})
	}
}

// TestSpoofedRouteHeaderIgnored: a client cannot pick its version by
// sending the route header; the split stays exact.
func TestSpoofedRouteHeaderIgnored(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) {
			b := newBed(t, mode, baseConfig)
			assertExactSplit(t, b, 100, 80, hdr("x-route-version", "v2", "x-route-reason", "header_match"))
		})
	}
}

// TestThreeVersions runs examples/config/three-versions.yaml behind a
// bootstrap with a third backend: the dark-launch header reaches v3, and
// the weights (75.5/24.5/0) never send unkeyed traffic there.
func TestThreeVersions(t *testing.T) {
	cfg, err := os.ReadFile(filepath.Join(found.root, "examples", "config", "three-versions.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b := newBed(t, envoy.ModeExtProc, string(cfg), "v1", "v2", "v3")
	allOn(t, b, 10, "v3", hdr("x-try", "v3"))
	allOn(t, b, 10, "v2", hdr("x-beta", "true"))
	counts, err := b.client.Count(t.Context(), 200, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if counts["v3"] != 0 || abs(counts["v1"]-151) > 2 || abs(counts["v2"]-49) > 2 {
		t.Fatalf("200 unkeyed requests: %v, want v1=151 v2=49 (±2) v3=0", counts)
	}
}
