package fleet_test

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

func exact(s string) *string { return &s }

func liveRoute(name, header, version, owner string) store.Route {
	return store.Route{Name: name, When: []split.Condition{{Header: header, Exact: exact("1")}}, Version: version, Owner: owner}
}

// routed returns the version r's table gives a request to api carrying
// header: 1, and the rule that decided.
func (r *replica) routed(header string) (string, string) {
	ex := r.store.Table().Explain(&split.Request{Authority: "api.example.com", Method: "GET", Path: "/",
		Headers: []split.Header{{Name: header, Value: "1"}}})
	return ex.Version, ex.Rule
}

// A route written on one replica is in force on every replica (the writer
// when it answers), survives a document that still fits it, is kept in
// the cache file, and leaves every replica when deleted; its owner is
// honoured on every write.
func TestRoutesReachEveryReplica(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	cache := writeCacheDir(t)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	b := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b", cacheFile: cache})

	ch, err := a.src.PutRoute(t.Context(), "api", liveRoute("canary", "x-canary", "v2", "argo-rollouts:default/api"), "test")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Revision == 0 || ch.Old != nil || ch.New == nil {
		t.Fatalf("change %+v", ch)
	}
	if v, rule := a.routed("x-canary"); v != "v2" || rule != "canary" {
		t.Fatalf("writer right after the answer: %s by %q", v, rule)
	}
	waitFor(t, 5*time.Second, "b to apply the route", func() bool { v, _ := b.routed("x-canary"); return v == "v2" })
	if a.store.Load().Revision < ch.Revision {
		t.Fatalf("writer at revision %d, commit %d", a.store.Load().Revision, ch.Revision)
	}
	if fleet.StateSHA256(a.store.Load()) != fleet.StateSHA256(b.store.Load()) {
		t.Fatal("replicas with the same routes disagree on state_sha256")
	}

	var oe *store.OwnerError
	if _, err := b.src.PutRoute(t.Context(), "api", liveRoute("canary", "x-other", "v2", "someone-else"), "test"); !errors.As(err, &oe) {
		t.Fatalf("PUT by another owner: %v", err)
	}
	if _, err := b.src.DeleteRoute(t.Context(), "api", "canary", "someone-else", "test"); !errors.As(err, &oe) {
		t.Fatalf("DELETE by another owner: %v", err)
	}
	if _, err := b.src.PutRoute(t.Context(), "api", liveRoute("bad", "x-a", "v9", ""), "test"); err == nil || !strings.Contains(err.Error(), `unknown version "v9"`) {
		t.Fatalf("PUT of an invalid route: %v", err)
	}
	if _, err := b.src.PutRoute(t.Context(), "nope", liveRoute("r", "x-a", "v1", ""), "test"); !errors.Is(err, split.ErrUnknownService) {
		t.Fatalf("PUT on an unknown service: %v", err)
	}

	// A document that changes api's weights keeps the route (it still fits).
	push(t, c, prefix, strings.Replace(baseConfig, "{v1: 80, v2: 20}", "{v1: 90, v2: 10}", 1))
	waitFor(t, 5*time.Second, "the new document", func() bool { return a.weights("api") == "v1: 90, v2: 10" && b.weights("api") == "v1: 90, v2: 10" })
	if v, _ := b.routed("x-canary"); v != "v2" {
		t.Fatalf("the route did not survive a document that fits it: %s", v)
	}
	waitFor(t, 5*time.Second, "the cache file to hold the route", func() bool {
		data, err := readFile(cache)
		return err == nil && strings.Contains(data, "live-routes/api/canary")
	})

	// A document without v2 leaves the route out, in etcd; it applies
	// again when the document fits it.
	push(t, c, prefix, strings.Replace(baseConfig, "{v1: 80, v2: 20}", "{v1: 100}", 1))
	waitFor(t, 5*time.Second, "the route to leave", func() bool { return len(a.store.Load().Routes) == 0 && len(b.store.Load().Routes) == 0 })
	push(t, c, prefix, baseConfig)
	waitFor(t, 5*time.Second, "the route to come back", func() bool { v, _ := b.routed("x-canary"); return v == "v2" })

	ch, err = b.src.DeleteRoute(t.Context(), "api", "canary", "argo-rollouts:default/api", "test")
	if err != nil || ch.Old == nil {
		t.Fatalf("DELETE: %v %+v", err, ch)
	}
	if _, rule := b.routed("x-canary"); rule != "" {
		t.Fatalf("writer still routes by %q after the DELETE", rule)
	}
	waitFor(t, 5*time.Second, "a to drop the route", func() bool { _, rule := a.routed("x-canary"); return rule == "" })
	if ch, err := a.src.DeleteRoute(t.Context(), "api", "canary", "", "test"); err != nil || ch.Old != nil {
		t.Fatalf("DELETE of a route that is gone: %v %+v", err, ch)
	}
}

// Routes written at once on two replicas are serialised by etcd: none is
// lost.
func TestConcurrentRoutes(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	push(t, newClient(t, e.Endpoint), prefix, baseConfig)
	reps := []*replica{
		startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"}),
		startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b"}),
	}
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			r := liveRoute(fmt.Sprintf("r%02d", i), fmt.Sprintf("x-r%02d", i), "v2", "")
			if _, err := reps[i%2].src.PutRoute(t.Context(), "api", r, "test"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, r := range reps {
		waitFor(t, 5*time.Second, "every route on every replica", func() bool { return len(r.store.Load().Routes["api"]) == n })
	}
}

// Weights set with an owner carry it to every replica; another owner is
// refused, the same weights are not written again, and a progressing
// rollout in etcd keeps the weights (checked in the write's transaction).
func TestOwnedWeightsInEtcd(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	b := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b"})

	ch, err := a.src.SetCanaryOwned(t.Context(), "api", 3000, "argo-rollouts:default/api", "test")
	if err != nil || ch.New.String() != "v1: 70, v2: 30" {
		t.Fatalf("owned canary: %v %+v", err, ch)
	}
	waitFor(t, 5*time.Second, "b to see the owner", func() bool { return b.store.Load().Owners["api"] == "argo-rollouts:default/api" })
	again, err := b.src.SetCanaryOwned(t.Context(), "api", 3000, "argo-rollouts:default/api", "test")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(t.Context(), prefix+"overrides/api"); got.Kvs[0].ModRevision != ch.Revision || again.Revision < ch.Revision {
		t.Fatalf("the same weights were written again: mod revision %d, first commit %d", got.Kvs[0].ModRevision, ch.Revision)
	}
	var oe *store.OwnerError
	if _, err := b.src.SetCanaryOwned(t.Context(), "api", 1000, "other", "test"); !errors.As(err, &oe) || oe.Owner != "argo-rollouts:default/api" {
		t.Fatalf("another owner: %v", err)
	}
	if _, err := b.src.ClearOverride(t.Context(), "api", "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a to drop the owner", func() bool { return a.store.Load().Owners == nil })

	if _, err := c.Put(t.Context(), prefix+"rollouts/api", `{"service": "api", "phase": "paused", "step": 1, "weight": 5, "history": []}`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.src.SetCanaryOwned(t.Context(), "api", 3000, "argo-rollouts:default/api", "test"); !errors.Is(err, rollout.ErrDriven) {
		t.Fatalf("owned canary over a paused rollout: %v", err)
	}
	if _, err := c.Put(t.Context(), prefix+"rollouts/api", `{"service": "api", "phase": "aborted", "step": 1, "weight": 0, "history": []}`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.src.SetCanaryOwned(t.Context(), "api", 3000, "argo-rollouts:default/api", "test"); err != nil {
		t.Fatalf("owned canary after the abort: %v", err)
	}
}

// A route record written straight into etcd that does not compile is left
// out (and logged), without taking the document or the other routes with
// it. One with a field this build does not know (a newer build's)
// applies.
func TestBrokenRouteRecord(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	if _, err := a.src.PutRoute(t.Context(), "api", liveRoute("good", "x-good", "v2", ""), "test"); err != nil {
		t.Fatal(err)
	}
	for key, val := range map[string]string{
		"live-routes/api/regex":   `{"when": [{"header": "x-a", "regex": "("}], "version": "v2", "set_at": "2026-01-01T00:00:00Z"}`,
		"live-routes/api/garbage": `{"when":`,
		"live-routes/api/extra":   `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "set_at": "2026-01-01T00:00:00Z", "x": 1}`,
	} {
		if _, err := c.Put(t.Context(), prefix+key, val); err != nil {
			t.Fatal(err)
		}
	}
	rev := push(t, c, prefix, strings.Replace(baseConfig, "{v1: 80, v2: 20}", "{v1: 60, v2: 40}", 1))
	waitFor(t, 5*time.Second, "the document", func() bool { return a.store.Load().Revision >= rev })
	names := []string{}
	for _, r := range a.store.Load().Routes["api"] {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	if got := a.store.Load().Routes["api"]; !slices.Equal(names, []string{"extra", "good"}) || a.weights("api") != "v1: 60, v2: 40" {
		t.Fatalf("routes in force %v, weights %s", got, a.weights("api"))
	}
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// A runtime route and a runtime mirror in etcd apply together on every
// replica, and a reload that reads them again reports nothing changed.
func TestRoutesAndMirrorsInEtcd(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	push(t, newClient(t, e.Endpoint), prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	b := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b"})
	mirror := split.Mirror{Version: "v2", Percent: 1000}
	if _, err := a.src.SetMirror(t.Context(), "api", mirror, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.src.PutRoute(t.Context(), "api", liveRoute("canary", "x-canary", "v2", ""), "test"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*replica{a, b} {
		waitFor(t, 5*time.Second, "the mirror and the route", func() bool {
			snap := r.store.Load()
			v, _ := r.routed("x-canary")
			return snap.Mirrors["api"] == mirror && v == "v2"
		})
	}
	if got, err := a.src.Reload(t.Context()); err != nil || got != "unchanged" {
		t.Fatalf("reload: %q %v", got, err)
	}
	if snap := a.store.Load(); snap.Mirrors["api"] != mirror || len(snap.Routes["api"]) != 1 {
		t.Fatalf("after the reload: mirrors %v, routes %v", snap.Mirrors, snap.Routes)
	}
}
