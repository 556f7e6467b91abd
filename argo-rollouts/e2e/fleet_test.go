package e2e

import (
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/argoproj/argo-rollouts/utils/plugin/types"

	"github.com/trafficsplit/splitter/internal/testbed"
)

// Every method against a fleet of three splitters on a real etcd, the
// plugin talking to one replica: the weights, the route and the mirror
// route reach every replica, and VerifyWeight says Verified only once
// every replica in GET /v1/fleet has applied the change: NotVerified while one is stopped
// (SIGSTOP: it holds its lease and its sockets but applies nothing), and
// Verified once it is resumed and has caught up.
func TestFleet(t *testing.T) {
	require(t, found.etcdErr)
	b := testbed.ForTest(t)
	etcd, err := b.StartEtcd(t.Context(), found.etcdBin, testbed.EtcdOptions{})
	if err != nil {
		t.Fatal(err)
	}
	doc := writeFile(t, "routing.yaml", exampleSplitterConfig(t, ""))
	push := exec.CommandContext(t.Context(), found.splitterBin, "config", "push", doc, "--etcd-endpoints", etcd.Endpoint)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("splitter config push: %v\n%s", err, out)
	}
	tok := writeFile(t, "admin-token", token)
	var reps []*testbed.Splitter
	for i := range 3 {
		s, err := b.StartSplitter(t.Context(), found.splitterBin, "", "--etcd-endpoints", etcd.Endpoint,
			"--node-id", fmt.Sprintf("replica-%c", 'a'+i), "--admin-token-file", tok)
		if err != nil {
			t.Fatal(err)
		}
		s.Token = token
		reps = append(reps, s)
	}
	waitFor(t, 30*time.Second, "three replicas in GET /v1/fleet", func() bool {
		var f struct{ Replicas []any }
		return reps[0].Admin(t.Context(), "GET", "/v1/fleet", nil, &f) == nil && len(f.Replicas) == 3
	})
	ro := exampleRollout(t, "http://"+reps[0].AdminAddr, tok, "")
	p := argo(t)
	verified := func(w int32) bool {
		t.Helper()
		v, e := p.VerifyWeight(ro, w, nil)
		noError(t, fmt.Sprintf("VerifyWeight(%d)", w), e)
		return v == types.Verified
	}
	everywhere := func(what string, cond func(view) bool) {
		t.Helper()
		for _, s := range reps {
			waitFor(t, 30*time.Second, what+" on "+s.AdminAddr, func() bool { return cond(serviceOf(t, s.AdminClient, "api")) })
		}
	}

	noError(t, "UpdateHash", p.UpdateHash(ro, "c", "s", nil))
	noError(t, "SetWeight(30)", p.SetWeight(ro, 30, nil))
	waitFor(t, 30*time.Second, "VerifyWeight(30) Verified", func() bool { return verified(30) })
	everywhere("canary at 30, owned", func(v view) bool { return v.Weights["canary"] == 30 && v.WeightsOwner == "argo-rollouts:shop/api" })

	noError(t, "SetHeaderRoute", p.SetHeaderRoute(ro, headerStep(t, ro)))
	everywhere("the header route", func(v view) bool { return v.routes() == "canary-testers=argo-rollouts:shop/api" })
	for _, s := range reps {
		if ver, rule := explain(t, s.AdminClient, map[string]string{"x-canary": "true"}); ver != "canary" || rule != "canary-testers" {
			t.Fatalf("%s: x-canary: true went to %s by %q", s.AdminAddr, ver, rule)
		}
	}

	// Replica c stops applying anything; the change commits without it.
	stopped := reps[2]
	if err := stopped.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = stopped.Resume()
		}
	}()
	noError(t, "SetWeight(50) with a replica stopped", p.SetWeight(ro, 50, nil))
	for _, s := range reps[:2] {
		if v := serviceOf(t, s.AdminClient, "api"); v.Weights["canary"] != 50 {
			waitFor(t, 30*time.Second, "canary at 50 on "+s.AdminAddr, func() bool { return serviceOf(t, s.AdminClient, "api").Weights["canary"] == 50 })
		}
	}
	// The two running replicas report the change in GET /v1/fleet; the
	// stopped one is still listed (well inside its 10 s lease) at its old
	// revision, and it alone keeps the weight unverified.
	want := serviceOf(t, reps[0].AdminClient, "api").Config.Revision
	applied := func() (listed map[string]bool) {
		t.Helper()
		var f struct {
			Replicas []struct {
				NodeID   string `json:"node_id"`
				Revision int64  `json:"revision"`
			} `json:"replicas"`
		}
		if err := reps[0].Admin(t.Context(), "GET", "/v1/fleet", nil, &f); err != nil {
			t.Fatal(err)
		}
		listed = map[string]bool{}
		for _, r := range f.Replicas {
			listed[r.NodeID] = r.Revision >= want
		}
		return listed
	}
	waitFor(t, 30*time.Second, "replicas a and b to report the change", func() bool {
		got := applied()
		return got["replica-a"] && got["replica-b"]
	})
	checked := 0
	for range 5 {
		listed, ok := applied()["replica-c"]
		if !ok {
			// Its lease ran out (10 s after its last renewal): it left the
			// fleet, and says nothing any more.
			break
		}
		if listed {
			t.Fatalf("the stopped replica reports revision %d or later", want)
		}
		if verified(50) {
			t.Fatalf("check %d: VerifyWeight(50) Verified while replica c is stopped and has not applied it", checked)
		}
		checked++
		time.Sleep(100 * time.Millisecond)
	}
	if checked == 0 {
		t.Fatal("the stopped replica left GET /v1/fleet (its lease expired) before a single check: the machine is too slow for this test")
	}
	if err := stopped.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	waitFor(t, 30*time.Second, "VerifyWeight(50) Verified after replica c resumed", func() bool { return verified(50) })
	if v := serviceOf(t, stopped.AdminClient, "api"); v.Weights["canary"] != 50 {
		t.Fatalf("Verified, but replica c serves %v", v.Weights)
	}

	noError(t, "SetHeaderRoute without a match", p.SetHeaderRoute(ro, removeStep(t, ro)))
	everywhere("the route removed", func(v view) bool { return v.routes() == "" })
	noError(t, "SetHeaderRoute", p.SetHeaderRoute(ro, headerStep(t, ro)))
	noError(t, "RemoveManagedRoutes", p.RemoveManagedRoutes(ro))
	everywhere("the route removed by RemoveManagedRoutes", func(v view) bool { return v.routes() == "" && v.Weights["canary"] == 50 })

	// The mirror route of setMirrorRoute, written through one replica, is
	// on every replica, and so is its removal; an operator's mirror
	// route stays.
	mro := exampleRolloutOf(t, "rollout-mirror.yaml", "", "", "")
	mro.Spec.Strategy.Canary.TrafficRouting.Plugins = ro.Spec.Strategy.Canary.TrafficRouting.Plugins
	ops := map[string]any{"when": []map[string]string{{"request": "method", "exact": "DELETE"}}, "version": "canary", "percent": 100}
	if err := reps[2].Admin(t.Context(), "PUT", "/v1/services/api/mirror-routes/ops", ops, nil); err != nil {
		t.Fatal(err)
	}
	noError(t, "SetMirrorRoute", p.SetMirrorRoute(mro, mirrorStep(t, mro)))
	everywhere("the mirror route", func(v view) bool { return v.mirrorRoutes() == "canary-mirror=argo-rollouts:shop/api,ops=" })
	noError(t, "RemoveManagedRoutes", p.RemoveManagedRoutes(mro))
	everywhere("the mirror route removed by RemoveManagedRoutes", func(v view) bool { return v.mirrorRoutes() == "ops=" })

	unknown := exampleRollout(t, "http://"+reps[1].AdminAddr, tok, "nope")
	wantError(t, "SetWeight, unknown service, fleet", p.SetWeight(unknown, 10, nil), "404", `service "nope": unknown service`)
}
