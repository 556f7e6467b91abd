package e2e

import (
	"net/http"
	"testing"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/argoproj/argo-rollouts/utils/plugin/types"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
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

// mirrorStep is a setMirrorRoute step with a match.
func mirrorStep() *v1alpha1.SetMirrorRoute {
	pct := int32(10)
	return &v1alpha1.SetMirrorRoute{Name: "mirror", Percentage: &pct, Match: []v1alpha1.RouteMatch{{Path: &v1alpha1.StringMatch{Prefix: "/"}}}}
}
