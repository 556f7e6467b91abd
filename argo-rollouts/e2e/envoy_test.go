package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/argoproj/argo-rollouts/utils/plugin/types"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
	"github.com/trafficsplit/splitter/split"
)

// Through a real Envoy (ext_proc) in front of the two Services' backends:
// after SetWeight(30) exactly 300 of 1,000 unkeyed requests reach the
// canary; after the header route step every request with the header does;
// after RemoveManagedRoutes those requests are split like the rest.
func TestThroughEnvoy(t *testing.T) {
	require(t, found.envoyErr)
	b := testbed.ForTest(t)
	backends, err := b.StartBackends("stable", "canary")
	if err != nil {
		t.Fatal(err)
	}
	s, tok := startSplitter(t, b, exampleSplitterConfig(t, ""))
	params, err := testbed.LoopbackParams(envoy.ModeExtProc, s.GRPCAddr, backends...)
	if err != nil {
		t.Fatal(err)
	}
	e, err := b.StartEnvoy(t.Context(), found.envoyBin, params, testbed.EnvoyOptions{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := e.Client()
	defer c.Close()
	send := func(n int, h http.Header) testbed.Counts {
		t.Helper()
		counts := testbed.Counts{}
		for range n {
			rep, err := c.Get(t.Context(), "/", h)
			if err != nil {
				t.Fatal(err)
			}
			counts[rep.Version]++
		}
		return counts
	}
	canaryHeader := http.Header{"X-Canary": {"true"}}

	ro := exampleRollout(t, "http://"+s.AdminAddr, tok, "")
	p := argo(t)
	if got := send(100, canaryHeader); got["stable"] != 100 {
		t.Fatalf("before the Rollout: %v, want every request on stable", got)
	}
	noError(t, "SetWeight(30)", p.SetWeight(ro, 30, nil))
	if v, e := p.VerifyWeight(ro, 30, nil); v != types.Verified || e.HasError() {
		t.Fatalf("VerifyWeight(30) = %v %q", v, e.ErrorString)
	}
	if got := send(1000, nil); got["canary"] != 300 || got["stable"] != 700 {
		t.Fatalf("1,000 unkeyed requests at 30: %v, want exactly 300 on canary", got)
	}

	noError(t, "SetHeaderRoute", p.SetHeaderRoute(ro, headerStep(t, ro)))
	if got := send(200, canaryHeader); got["canary"] != 200 {
		t.Fatalf("with x-canary: true after the header route: %v, want all on canary", got)
	}
	if got := send(1000, nil); got["canary"] != 300 {
		t.Fatalf("without the header, beside the route: %v, want exactly 300 on canary", got)
	}

	noError(t, "RemoveManagedRoutes", p.RemoveManagedRoutes(ro))
	if got := send(1000, canaryHeader); got["canary"] != 300 || got["stable"] != 700 {
		t.Fatalf("with x-canary: true after RemoveManagedRoutes: %v, want split like the rest (exactly 300 on canary)", got)
	}
}

// Through a real Envoy (ext_proc, the rendered bootstrap's mirror
// policies) in front of the two Services' backends: rollout-mirror.yaml's
// setMirrorRoute step (GET with x-canary: "true", 50 %) copies exactly
// half of the unkeyed matching requests to the canary and, keyed, exactly
// the users whose mirror bucket is in the share, and none of the other
// requests; every answer comes from stable. RemoveManagedRoutes stops it
// and leaves an operator's mirror in place, which then copies its own
// share.
func TestMirrorRouteThroughEnvoy(t *testing.T) {
	require(t, found.envoyErr)
	b := testbed.ForTest(t)
	backends, err := b.StartBackends("stable", "canary")
	if err != nil {
		t.Fatal(err)
	}
	canary := backends[1]
	s, tok := startSplitter(t, b, exampleSplitterConfig(t, ""))
	params, err := testbed.LoopbackParams(envoy.ModeExtProc, s.GRPCAddr, backends...)
	if err != nil {
		t.Fatal(err)
	}
	e, err := b.StartEnvoy(t.Context(), found.envoyBin, params, testbed.EnvoyOptions{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := e.Client()
	defer c.Close()
	// send makes n requests (method, headers of request i) and fails
	// unless stable answers every one.
	send := func(n int, method string, h func(i int) http.Header) {
		t.Helper()
		for i := range n {
			req, err := http.NewRequestWithContext(t.Context(), method, c.BaseURL+"/products", nil)
			if err != nil {
				t.Fatal(err)
			}
			if h != nil {
				req.Header = h(i)
			}
			resp, err := c.HTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var rep struct {
				Version string `json:"version"`
			}
			err = json.NewDecoder(resp.Body).Decode(&rep)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || rep.Version != "stable" {
				t.Fatalf("%s request %d: %d from %q (%v), want 200 from stable", method, i, resp.StatusCode, rep.Version, err)
			}
		}
	}
	// copies waits until the canary has received want more copies than
	// before, then a while longer, and fails unless it received exactly
	// want (every one a copy).
	copies := func(what string, before int64, want int64) int64 {
		t.Helper()
		waitFor(t, 30*time.Second, fmt.Sprintf("%d copies at the canary (%s)", want, what), func() bool {
			all, _ := canary.Requests()
			return all-before >= want
		})
		time.Sleep(500 * time.Millisecond)
		all, shadow := canary.Requests()
		if all-before != want || all != shadow {
			t.Fatalf("%s: the canary received %d requests (%d of all %d are copies), want exactly %d copies", what, all-before, shadow, all, want)
		}
		return all
	}
	tester := func(int) http.Header { return http.Header{"X-Canary": {"true"}} }

	ro := exampleRolloutOf(t, "rollout-mirror.yaml", "http://"+s.AdminAddr, tok, "")
	p := argo(t)
	noError(t, "SetWeight(0)", p.SetWeight(ro, 0, nil))
	noError(t, "SetMirrorRoute", p.SetMirrorRoute(ro, mirrorStep(t, ro)))

	seen := copies("before any request", 0, 0)
	send(1000, http.MethodGet, tester)
	seen = copies("1,000 unkeyed testers' GETs", seen, 500)

	keyed := func(i int) http.Header {
		return http.Header{"X-Canary": {"true"}, "X-User-Id": {fmt.Sprintf("user-%d", i)}}
	}
	want := int64(0)
	for i := range 1000 {
		if split.MirrorBucket("api", fmt.Sprintf("user-%d", i)) < 5000 {
			want++
		}
	}
	send(1000, http.MethodGet, keyed)
	seen = copies("1,000 keyed testers' GETs", seen, want)
	if want < 400 || want > 600 {
		t.Fatalf("%d of 1,000 users in the 50 %% mirror share: the test's keys do not exercise the share", want)
	}

	send(500, http.MethodGet, nil)
	send(300, http.MethodPost, tester)
	send(300, http.MethodGet, func(int) http.Header { return http.Header{"X-Canary": {"false"}} })
	seen = copies("GETs without the header, testers' POSTs", seen, 0)

	// An operator's runtime mirror of 10 %: the mirror route still
	// decides the testers' GETs, the operator's mirror the others.
	if err := s.Admin(t.Context(), http.MethodPut, "/v1/services/api/mirror", map[string]any{"version": "canary", "percent": 10}, nil); err != nil {
		t.Fatal(err)
	}
	send(1000, http.MethodGet, tester)
	seen = copies("testers' GETs beside the operator's mirror", seen, 500)
	send(1000, http.MethodGet, nil)
	seen = copies("other GETs under the operator's mirror", seen, 100)

	noError(t, "RemoveManagedRoutes", p.RemoveManagedRoutes(ro))
	v := serviceOf(t, s.AdminClient, "api")
	if v.mirrorRoutes() != "" || v.Mirror == nil || v.Mirror.Version != "canary" || v.Mirror.Percent != 10 || !v.MirrorOverride {
		t.Fatalf("after RemoveManagedRoutes: mirror routes %q, mirror %+v (override %v)", v.mirrorRoutes(), v.Mirror, v.MirrorOverride)
	}
	send(1000, http.MethodGet, tester)
	copies("testers' GETs after RemoveManagedRoutes: the operator's 10 %", seen, 100)
}
