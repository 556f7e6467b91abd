package fleet_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// olderReplica writes a replica record as the release before features
// (8f6553d) writes it, under a lease of its own, and returns a func that
// revokes the lease (the replica leaves).
func olderReplica(t *testing.T, c *clientv3.Client, prefix, node string) func() {
	t.Helper()
	lease, err := c.Grant(t.Context(), 30)
	if err != nil {
		t.Fatal(err)
	}
	rec := `{"node_id":"` + node + `","revision":2,"sha256":"x","state_sha256":"y","version":"v1.3.0","applied_at":"2026-01-02T03:04:05Z"}`
	if _, err := c.Put(t.Context(), prefix+"replicas/"+node, rec, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := c.Revoke(t.Context(), lease.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// While a replica of the release before features holds a lease, every
// change it would ignore or refuse (a runtime mirror, route or mirror
// route, owned weights, a rollout entering the phase waiting or the
// shadow step) is refused with ErrOlderReplicas naming it; what it reads
// (plain weights, deletions) is not. Once it left, they are made. This
// replica's own record lists its features; GET /v1/fleet lists the older
// replica and the keys in force it does not apply.
func TestOlderReplicaGatesNewState(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	ctx := t.Context()
	// A route set before the older replica joined: GET /v1/fleet says
	// that replica does not apply it.
	if _, err := a.src.PutRoute(ctx, "api", liveRoute("early", "x-early", "v2", ""), "test"); err != nil {
		t.Fatal(err)
	}
	leave := olderReplica(t, c, prefix, "old-1")

	mirror := split.Mirror{Version: "v2", Percent: 1000}
	changes := map[string]func() error{
		"runtime mirror": func() error { _, err := a.src.SetMirror(ctx, "api", mirror, "test"); return err },
		"runtime route": func() error {
			_, err := a.src.PutRoute(ctx, "api", liveRoute("testers", "x-canary", "v2", ""), "test")
			return err
		},
		"mirror route": func() error {
			_, err := a.src.PutMirrorRoute(ctx, "api", liveMirrorRoute("copy", "x-canary", "v2", 5000, ""), "test")
			return err
		},
		"owned weights": func() error {
			_, err := a.src.SetCanaryOwned(ctx, "api", 3000, "argo-rollouts:default/api", "test")
			return err
		},
	}
	for what, change := range changes {
		err := change()
		var oe *store.OlderReplicasError
		if !errors.Is(err, store.ErrOlderReplicas) || !errors.As(err, &oe) || !strings.Contains(err.Error(), "old-1 (version v1.3.0)") {
			t.Fatalf("%s with an older replica holding a lease: %v, want ErrOlderReplicas naming old-1", what, err)
		}
	}
	ro := fleet.NewRollouts(a.src, fleet.RolloutOptions{})
	r := split.DefaultRollout()
	r.Canary = "v2"
	r.Webhooks = []split.Webhook{{Name: "check", Type: split.HookPreStep, URL: "http://127.0.0.1:1/"}}
	waiting, err := rollout.Act(rollout.State{Service: "api"}, &r, "v1", rollout.Start, time.Now(), "test")
	if err != nil || waiting.Phase != rollout.Waiting {
		t.Fatalf("a start with a pre_step hook: %+v %v, want waiting", waiting, err)
	}
	waiting.Applying = true
	if _, err := ro.Save(ctx, waiting); !errors.Is(err, store.ErrOlderReplicas) {
		t.Fatalf("saving a waiting state with an older replica: %v, want ErrOlderReplicas", err)
	}
	r.Webhooks = nil
	r.Shadow = &split.Shadow{Percent: 1000, Hold: split.Duration(time.Minute)}
	shadow, err := rollout.Act(rollout.State{Service: "web"}, &r, "a", rollout.Start, time.Now(), "test")
	if err != nil || !shadow.Shadow {
		t.Fatalf("a start in shadow: %+v %v", shadow, err)
	}
	shadow.Applying = true
	if _, err := ro.Save(ctx, shadow); !errors.Is(err, store.ErrOlderReplicas) {
		t.Fatalf("saving a shadow step with an older replica: %v, want ErrOlderReplicas", err)
	}

	// What the older replica reads goes through.
	if _, err := a.src.SetCanary(ctx, "api", 4000, "test"); err != nil {
		t.Fatalf("plain weights with an older replica: %v", err)
	}
	if _, err := a.src.DeleteRoute(ctx, "api", "nope", "", "test"); err != nil {
		t.Fatalf("deleting with an older replica: %v", err)
	}
	view, err := a.src.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(view.OlderReplicas) != 1 || view.OlderReplicas[0].NodeID != "old-1" || !slices.Equal(view.OlderReplicas[0].Lacks, fleet.Features()) ||
		!slices.Equal(view.NotAppliedByOlder, []string{"live-routes/api/early"}) {
		body, _ := json.Marshal(view)
		t.Fatalf("GET /v1/fleet: %s", body)
	}
	for _, rec := range view.Replicas {
		if rec.NodeID == "a" && !slices.Equal(rec.Features, fleet.Features()) {
			t.Fatalf("a's record lists %q, want %q", rec.Features, fleet.Features())
		}
	}

	leave()
	for what, change := range changes {
		if err := change(); err != nil {
			t.Fatalf("%s once the older replica left: %v", what, err)
		}
		if what == "owned weights" {
			if _, err := a.src.ClearOverride(ctx, "api", "test"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := ro.Save(ctx, waiting); err != nil {
		t.Fatalf("saving the waiting state once the older replica left: %v", err)
	}
}
