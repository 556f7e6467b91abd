package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/argoproj/argo-rollouts/rollout/trafficrouting/plugin/rpc"
	"github.com/argoproj/argo-rollouts/utils/plugin/types"

	"github.com/trafficsplit/splitter/argo-rollouts/router"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// Every method, through Argo's client and the real binary, against one
// splitter in file mode: the weights and their owner, the verification,
// the header route in force ahead of the file's rules and removed by the
// step without a match, the mirror routes of setMirrorRoute, and
// RemoveManagedRoutes taking only what the Rollout made.
func TestMethodsFileMode(t *testing.T) {
	b := testbed.ForTest(t)
	s, tok := startSplitter(t, b, exampleSplitterConfig(t, ""))
	ro := exampleRollout(t, "http://"+s.AdminAddr, tok, "")
	p := argo(t)

	if got := p.Type(); got != router.Name {
		t.Fatalf("Type() = %q", got)
	}
	noError(t, "UpdateHash", p.UpdateHash(ro, "canaryhash", "stablehash", nil))
	noError(t, "SetWeight(30)", p.SetWeight(ro, 30, nil))
	v := serviceOf(t, s.AdminClient, "api")
	if v.Weights["canary"] != 30 || v.Weights["stable"] != 70 || v.WeightsOwner != "argo-rollouts:shop/api" {
		t.Fatalf("after SetWeight(30): %+v", v)
	}
	verified, e := p.VerifyWeight(ro, 30, nil)
	noError(t, "VerifyWeight(30)", e)
	if verified != types.Verified {
		t.Fatalf("VerifyWeight(30) = %v, want Verified", verified)
	}
	verified, e = p.VerifyWeight(ro, 40, nil)
	noError(t, "VerifyWeight(40)", e)
	if verified != types.NotVerified {
		t.Fatalf("VerifyWeight(40) while at 30 = %v, want NotVerified", verified)
	}

	// An operator's route and another Rollout's: not the plugin's.
	put := func(name, owner string) {
		t.Helper()
		body := map[string]any{"when": []map[string]string{{"header": "x-" + name, "exact": "1"}}, "version": "stable", "owner": owner}
		if err := s.Admin(t.Context(), http.MethodPut, "/v1/services/api/routes/"+name, body, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("ops", "")
	put("other", "argo-rollouts:shop/other")

	noError(t, "SetHeaderRoute", p.SetHeaderRoute(ro, headerStep(t, ro)))
	if ver, rule := explain(t, s.AdminClient, map[string]string{"x-canary": "true"}); ver != "canary" || rule != "canary-testers" {
		t.Fatalf("x-canary: true went to %s by %q", ver, rule)
	}
	if got := serviceOf(t, s.AdminClient, "api").routes(); got != "canary-testers=argo-rollouts:shop/api,ops=,other=argo-rollouts:shop/other" {
		t.Fatalf("routes: %s", got)
	}
	noError(t, "SetHeaderRoute without a match", p.SetHeaderRoute(ro, removeStep(t, ro)))
	if got := serviceOf(t, s.AdminClient, "api").routes(); got != "ops=,other=argo-rollouts:shop/other" {
		t.Fatalf("routes after the removal step: %s", got)
	}
	noError(t, "SetHeaderRoute without a match, again", p.SetHeaderRoute(ro, removeStep(t, ro)))

	noError(t, "SetHeaderRoute", p.SetHeaderRoute(ro, headerStep(t, ro)))
	noError(t, "RemoveManagedRoutes", p.RemoveManagedRoutes(ro))
	v = serviceOf(t, s.AdminClient, "api")
	if v.routes() != "ops=,other=argo-rollouts:shop/other" || v.Weights["canary"] != 30 {
		t.Fatalf("after RemoveManagedRoutes: routes %s, weights %v", v.routes(), v.Weights)
	}
	if ver, _ := explain(t, s.AdminClient, map[string]string{"x-canary": "true"}); ver == "" {
		t.Fatal("explain: no version")
	}

	checkMirrorRoutes(t, s, p, ro)

	// Argo's end of an update: weight 0 and the routes gone.
	noError(t, "SetWeight(0)", p.SetWeight(ro, 0, nil))
	if verified, e := p.VerifyWeight(ro, 0, nil); e.HasError() || verified != types.Verified {
		t.Fatalf("VerifyWeight(0) = %v %q", verified, e.ErrorString)
	}
	// Experiment steps that weight extra destinations are refused.
	extra := []v1alpha1.WeightDestination{{ServiceName: "exp", Weight: 10}}
	wantError(t, "SetWeight with an additional destination", p.SetWeight(ro, 10, extra), "additional destinations", "not supported")
}

// checkMirrorRoutes runs rollout-mirror.yaml's setMirrorRoute steps
// (with ro's configuration) beside an operator's mirror and mirror route:
// the Rollout's mirror routes are in force and owned, a step with more
// matches makes more, the removal step and RemoveManagedRoutes take only
// the Rollout's.
func checkMirrorRoutes(t *testing.T, s *testbed.Splitter, p rpc.TrafficRouterPlugin, ro *v1alpha1.Rollout) {
	t.Helper()
	mro := exampleRolloutOf(t, "rollout-mirror.yaml", "", "", "")
	mro.Spec.Strategy.Canary.TrafficRouting.Plugins = ro.Spec.Strategy.Canary.TrafficRouting.Plugins
	step, removal := mirrorStep(t, mro), removeMirrorStep(t, mro)
	if err := s.Admin(t.Context(), http.MethodPut, "/v1/services/api/mirror", map[string]any{"version": "canary", "percent": 10}, nil); err != nil {
		t.Fatal(err)
	}
	ops := map[string]any{"when": []map[string]string{{"header": "x-ops", "exact": "1"}}, "version": "canary", "percent": 100}
	if err := s.Admin(t.Context(), http.MethodPut, "/v1/services/api/mirror-routes/ops", ops, nil); err != nil {
		t.Fatal(err)
	}

	noError(t, "SetMirrorRoute", p.SetMirrorRoute(mro, step))
	v := serviceOf(t, s.AdminClient, "api")
	if v.mirrorRoutes() != "canary-mirror=argo-rollouts:shop/api,ops=" || v.MirrorRoutes[0].Version != "canary" || v.MirrorRoutes[0].Percent != 50 {
		t.Fatalf("mirror routes after SetMirrorRoute: %+v", v.MirrorRoutes)
	}
	if route := explainMirrorRoute(t, s.AdminClient, "GET", map[string]string{"x-canary": "true"}); route != "canary-mirror" {
		t.Fatalf("a tester's GET: mirror route %q", route)
	}
	if route := explainMirrorRoute(t, s.AdminClient, "POST", map[string]string{"x-canary": "true"}); route != "" {
		t.Fatalf("a tester's POST: mirror route %q, want none (the step matches GET)", route)
	}
	noError(t, "SetMirrorRoute again (Argo's next reconcile)", p.SetMirrorRoute(mro, step))

	// Argo's matches are alternatives: one mirror route each; a step with
	// fewer leaves none of the others behind.
	two := step.DeepCopy()
	two.Match = append(two.Match, v1alpha1.RouteMatch{Path: &v1alpha1.StringMatch{Prefix: "/reports/"}})
	noError(t, "SetMirrorRoute with two matches", p.SetMirrorRoute(mro, two))
	if got := serviceOf(t, s.AdminClient, "api").mirrorRoutes(); got != "canary-mirror=argo-rollouts:shop/api,canary-mirror.1=argo-rollouts:shop/api,ops=" {
		t.Fatalf("mirror routes of two matches: %s", got)
	}
	noError(t, "SetMirrorRoute with one match again", p.SetMirrorRoute(mro, step))
	if got := serviceOf(t, s.AdminClient, "api").mirrorRoutes(); got != "canary-mirror=argo-rollouts:shop/api,ops=" {
		t.Fatalf("mirror routes after one match again: %s", got)
	}

	noError(t, "SetMirrorRoute without a match (the removal step)", p.SetMirrorRoute(mro, removal))
	noError(t, "the removal step again", p.SetMirrorRoute(mro, removal))
	v = serviceOf(t, s.AdminClient, "api")
	if v.mirrorRoutes() != "ops=" || v.Mirror == nil || v.Mirror.Percent != 10 || !v.MirrorOverride {
		t.Fatalf("after the removal step: mirror routes %s, mirror %+v", v.mirrorRoutes(), v.Mirror)
	}
	noError(t, "SetMirrorRoute", p.SetMirrorRoute(mro, step))
	noError(t, "RemoveManagedRoutes", p.RemoveManagedRoutes(mro))
	v = serviceOf(t, s.AdminClient, "api")
	if v.mirrorRoutes() != "ops=" || v.Mirror == nil || v.Mirror.Percent != 10 || !v.MirrorOverride {
		t.Fatalf("after RemoveManagedRoutes: mirror routes %s, mirror %+v", v.mirrorRoutes(), v.Mirror)
	}

	// Bad steps are refused with the place, before anything changes.
	over := int32(120)
	bad := step.DeepCopy()
	bad.Percentage = &over
	wantError(t, "SetMirrorRoute at 120 %", p.SetMirrorRoute(mro, bad), "setMirrorRoute.percentage: must be between 0 and 100 (got 120)")
	bad = step.DeepCopy()
	bad.Match[0].Method = &v1alpha1.StringMatch{Exact: "GET", Regex: "G.*"}
	wantError(t, "SetMirrorRoute with two operators", p.SetMirrorRoute(mro, bad), "setMirrorRoute.match[0].method: set only one of exact, prefix, regex")
	bad = step.DeepCopy()
	bad.Match[0].Path = &v1alpha1.StringMatch{Regex: "("}
	wantError(t, "SetMirrorRoute with a bad regex", p.SetMirrorRoute(mro, bad), "400", "when[1].regex", "invalid regular expression")
	// Another Rollout's mirror route of the same name is not replaced.
	noError(t, "SetMirrorRoute", p.SetMirrorRoute(mro, step))
	other := mro.DeepCopy()
	other.Name = "api-v2"
	wantError(t, "SetMirrorRoute by another Rollout", p.SetMirrorRoute(other, step), "409", `mirror route "canary-mirror" belong to "argo-rollouts:shop/api"`)
	noError(t, "the other Rollout's removal step", p.SetMirrorRoute(other, removal))
	noError(t, "the other Rollout's RemoveManagedRoutes", p.RemoveManagedRoutes(other))
	if got := serviceOf(t, s.AdminClient, "api").mirrorRoutes(); got != "canary-mirror=argo-rollouts:shop/api,ops=" {
		t.Fatalf("another Rollout removed: %s", got)
	}
	noError(t, "RemoveManagedRoutes", p.RemoveManagedRoutes(mro))
}

// explainMirrorRoute returns the mirror route that decides the copy of a
// request to api with method and headers ("" for none).
func explainMirrorRoute(t *testing.T, a *testbed.AdminClient, method string, headers map[string]string) string {
	t.Helper()
	var ex struct {
		MirrorRoute string `json:"mirror_route"`
	}
	req := map[string]any{"authority": "api.shop.svc", "method": method, "path": "/products", "headers": headers}
	if err := a.Admin(t.Context(), http.MethodPost, "/v1/explain", req, &ex); err != nil {
		t.Fatal(err)
	}
	return ex.MirrorRoute
}

// The splitter's rollout and the plugin never fight: the plugin gets the
// splitter's 409 while a splitter rollout drives the service, and once
// the plugin owns the weights the splitter refuses to start its rollout,
// naming the owner; another Rollout cannot take them either.
func TestOwnership(t *testing.T) {
	web := `  - name: web
    hosts: ["web.shop.svc"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout: {steps: [10, 50, 100], hold: 1h}
`
	port, err := testbed.FreePort() // nothing listens: no signals, no verdict
	if err != nil {
		t.Fatal(err)
	}
	b := testbed.ForTest(t)
	s, tok := startSplitter(t, b, exampleSplitterConfig(t, web), "--envoy-admin", fmt.Sprintf("127.0.0.1:%d", port))
	p := argo(t)
	roWeb := exampleRollout(t, "http://"+s.AdminAddr, tok, "web")
	act := func(action string) error {
		return s.Admin(t.Context(), http.MethodPost, "/v1/services/web/rollout", map[string]string{"action": action}, nil)
	}

	if err := act("start"); err != nil {
		t.Fatal(err)
	}
	wantError(t, "SetWeight on a progressing splitter rollout", p.SetWeight(roWeb, 10, nil), "409", "splitter rollout drives", "progressing", "abort it first")
	mirrorWeb := exampleRolloutOf(t, "rollout-mirror.yaml", "", "", "")
	mirrorWeb.Spec.Strategy.Canary.TrafficRouting.Plugins = roWeb.Spec.Strategy.Canary.TrafficRouting.Plugins
	step := mirrorStep(t, mirrorWeb).DeepCopy()
	wantError(t, "SetMirrorRoute on a progressing splitter rollout", p.SetMirrorRoute(mirrorWeb, step), "409", "splitter rollout drives", "progressing")
	if err := act("pause"); err != nil {
		t.Fatal(err)
	}
	wantError(t, "SetWeight on a paused splitter rollout", p.SetWeight(roWeb, 10, nil), "409", "(paused)")
	wantError(t, "SetMirrorRoute on a paused splitter rollout", p.SetMirrorRoute(mirrorWeb, step), "409", "(paused)")
	if err := act("abort"); err != nil {
		t.Fatal(err)
	}
	noError(t, "SetWeight after the abort", p.SetWeight(roWeb, 10, nil))
	err = act("start")
	if err == nil || !contains(err.Error(), "409", `owned by another controller: \"argo-rollouts:shop/api\"`) {
		t.Fatalf("splitter rollout start on the plugin's weights: %v", err)
	}

	other := exampleRollout(t, "http://"+s.AdminAddr, tok, "web")
	other.Name = "web-v2"
	wantError(t, "SetWeight by another Rollout", p.SetWeight(other, 50, nil), "409", `belong to "argo-rollouts:shop/api", not "argo-rollouts:shop/web-v2"`)
	// An operator's canary call is refused too, naming the owner.
	if err := s.SetCanary(t.Context(), "web", 50); err == nil || !contains(err.Error(), "409", "argo-rollouts:shop/api") {
		t.Fatalf("operator canary on owned weights: %v", err)
	}
	// DELETE override releases them; the splitter's rollout may start.
	if err := s.Admin(t.Context(), http.MethodDelete, "/v1/services/web/override", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := act("start"); err != nil {
		t.Fatalf("start after the release: %v", err)
	}
}

// Errors come back as Argo's RpcError with the reason: the splitter's
// message for an unknown service or a bad token, the connection's for an
// unreachable admin API, the field for a bad configuration.
func TestErrors(t *testing.T) {
	b := testbed.ForTest(t)
	s, tok := startSplitter(t, b, exampleSplitterConfig(t, ""))
	p := argo(t)
	base := "http://" + s.AdminAddr

	unknown := exampleRollout(t, base, tok, "nope")
	wantError(t, "SetWeight, unknown service", p.SetWeight(unknown, 10, nil), "404", `unknown service "nope"`)
	wantError(t, "SetHeaderRoute, unknown service", p.SetHeaderRoute(unknown, headerStep(t, unknown)), "404", "nope")
	if v, e := p.VerifyWeight(unknown, 10, nil); v != types.NotVerified || !e.HasError() || !contains(e.ErrorString, "404", "nope") {
		t.Fatalf("VerifyWeight, unknown service: %v %q", v, e.ErrorString)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + lis.Addr().String()
	lis.Close()
	down := exampleRollout(t, closed, tok, "")
	wantError(t, "SetWeight, unreachable", p.SetWeight(down, 10, nil), "splitter admin API at "+closed+" unreachable", "connection refused")
	wantError(t, "RemoveManagedRoutes, unreachable", p.RemoveManagedRoutes(down), "unreachable")
	if v, e := p.VerifyWeight(down, 10, nil); v != types.NotVerified || !contains(e.ErrorString, "unreachable") {
		t.Fatalf("VerifyWeight, unreachable: %v %q", v, e.ErrorString)
	}

	bad := exampleRollout(t, base, writeFile(t, "wrong-token", "not-the-token"), "")
	wantError(t, "SetWeight, wrong token", p.SetWeight(bad, 10, nil), "401", "invalid bearer token")
	noToken := exampleRollout(t, base, "", "")
	wantError(t, "SetWeight, no token", p.SetWeight(noToken, 10, nil), "401", "missing bearer token")
	missing := exampleRollout(t, base, "/nonexistent/token", "")
	wantError(t, "SetWeight, missing token file", p.SetWeight(missing, 10, nil), "tokenFile", "/nonexistent/token")

	noURL := exampleRollout(t, "", tok, "")
	wantError(t, "SetWeight, no admin URL", p.SetWeight(noURL, 10, nil), `plugins["trafficsplit/splitter"].adminURL: required`)
	noCanary := exampleRollout(t, base, tok, "")
	noCanary.Spec.Strategy.Canary.TrafficRouting.Plugins = nil
	wantError(t, "SetWeight, no plugin configuration", p.SetWeight(noCanary, 10, nil), "Rollout argo-rollouts:shop/api", "missing")

	// Nothing of these reached the service.
	if v := serviceOf(t, s.AdminClient, "api"); v.WeightsOwner != "" || v.Weights["canary"] != 0 {
		t.Fatalf("a failed call changed the service: %+v", v)
	}
}

func contains(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
