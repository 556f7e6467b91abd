package fleet_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/internal/testbed"
	"github.com/trafficsplit/splitter/split"
)

func liveMirrorRoute(name, header, version string, pct int, owner string) store.MirrorRoute {
	return store.MirrorRoute{Name: name, When: []split.Condition{{Header: header, Exact: exact("1")}}, Version: version, Percent: split.Percent(pct), Owner: owner}
}

// copies decides n unkeyed requests to api carrying header: 1 on r and
// counts those copied to version.
func (r *replica) copies(n int, header, version string) int {
	tb := r.store.Table()
	req := split.Request{Authority: "api.example.com", Method: "GET", Path: "/", Headers: []split.Header{{Name: header, Value: "1"}}}
	got := 0
	for range n {
		var d split.Decision
		tb.Decide(&req, &d)
		if d.Mirror() == version {
			got++
		}
	}
	return got
}

// mirrorRouted reports whether r has service api's mirror route name in
// force.
func (r *replica) mirrorRouted(name string) bool {
	for _, m := range r.store.Load().MirrorRoutes["api"] {
		if m.Name == name {
			return true
		}
	}
	return false
}

// A mirror route written on one replica is in force on every replica
// (the writer when it answers), is owned on every write, is checked
// against a rollout of the service in the write's transaction, survives
// documents that fit it, is kept in the cache file (a start from it puts
// it back), and leaves every replica when deleted.
func TestMirrorRoutesReachEveryReplica(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	cache := writeCacheDir(t)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	b := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b", cacheFile: cache})
	const owner = "argo-rollouts:shop/api"

	// v2 serves 20 %: of 1,000 unkeyed matching requests the 800 on v1
	// are candidates, and the mirror route copies exactly half of them.
	ch, err := a.src.PutMirrorRoute(t.Context(), "api", liveMirrorRoute("mirror", "x-canary", "v2", 5000, owner), "test")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Revision == 0 || ch.Old != nil || ch.New == nil || a.store.Load().Revision < ch.Revision {
		t.Fatalf("change %+v, writer at %d", ch, a.store.Load().Revision)
	}
	if got := a.copies(1000, "x-canary", "v2"); got != 400 {
		t.Fatalf("writer right after the answer: %d copies of 1,000, want 400 (half of v1's 800)", got)
	}
	waitFor(t, 10*time.Second, "b to apply the mirror route", func() bool { return b.mirrorRouted("mirror") })
	if fleet.StateSHA256(a.store.Load()) != fleet.StateSHA256(b.store.Load()) {
		t.Fatal("replicas with the same mirror routes disagree on state_sha256")
	}
	got, err := c.Get(t.Context(), prefix+"live-mirror-routes/api/mirror")
	if err != nil || len(got.Kvs) != 1 || !strings.Contains(string(got.Kvs[0].Value), `"owner":"`+owner+`"`) || !strings.Contains(string(got.Kvs[0].Value), `"percent":50`) {
		t.Fatalf("the record in etcd: %v %v", got, err)
	}
	again, err := b.src.PutMirrorRoute(t.Context(), "api", liveMirrorRoute("mirror", "x-canary", "v2", 5000, owner), "test")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(t.Context(), prefix+"live-mirror-routes/api/mirror"); got.Kvs[0].ModRevision != ch.Revision || again.Old == nil {
		t.Fatalf("the same mirror route was written again: mod revision %d, first commit %d", got.Kvs[0].ModRevision, ch.Revision)
	}

	var oe *store.OwnerError
	if _, err := b.src.PutMirrorRoute(t.Context(), "api", liveMirrorRoute("mirror", "x-canary", "v2", 100, "someone-else"), "test"); !errors.As(err, &oe) || oe.Owner != owner {
		t.Fatalf("PUT by another owner: %v", err)
	}
	if _, err := b.src.PutMirrorRoute(t.Context(), "api", liveMirrorRoute("mirror", "x-canary", "v2", 100, ""), "test"); !errors.As(err, &oe) {
		t.Fatalf("PUT without the owner: %v", err)
	}
	if _, err := b.src.DeleteMirrorRoute(t.Context(), "api", "mirror", "someone-else", "test"); !errors.As(err, &oe) {
		t.Fatalf("DELETE by another owner: %v", err)
	}
	if _, err := b.src.PutMirrorRoute(t.Context(), "api", liveMirrorRoute("bad", "x-a", "v9", 100, ""), "test"); err == nil || !strings.Contains(err.Error(), `unknown version "v9"`) || len(split.FieldErrors(err)) == 0 {
		t.Fatalf("PUT of an invalid mirror route: %v", err)
	}
	if _, err := b.src.PutMirrorRoute(t.Context(), "nope", liveMirrorRoute("m", "x-a", "v1", 100, ""), "test"); !errors.Is(err, split.ErrUnknownService) {
		t.Fatalf("PUT on an unknown service: %v", err)
	}

	// A splitter rollout driving the service keeps a controller's mirror
	// routes out (checked in the transaction), not an operator's.
	if _, err := c.Put(t.Context(), prefix+"rollouts/api", `{"service": "api", "phase": "paused", "step": 1, "weight": 5, "history": []}`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.src.PutMirrorRoute(t.Context(), "api", liveMirrorRoute("mirror", "x-canary", "v2", 2500, owner), "test"); !errors.Is(err, rollout.ErrDriven) {
		t.Fatalf("owned PUT over a paused rollout: %v", err)
	}
	if _, err := a.src.PutMirrorRoute(t.Context(), "api", liveMirrorRoute("ops", "x-ops", "v2", 10000, ""), "test"); err != nil {
		t.Fatalf("operator's PUT over a paused rollout: %v", err)
	}
	if _, err := c.Put(t.Context(), prefix+"rollouts/api", `{"service": "api", "phase": "aborted", "step": 1, "weight": 0, "history": []}`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.src.PutMirrorRoute(t.Context(), "api", liveMirrorRoute("mirror", "x-canary", "v2", 2500, owner), "test"); err != nil {
		t.Fatalf("owned PUT after the abort: %v", err)
	}

	// A document that changes api's weights keeps them (they still fit);
	// one without v2 leaves them out, in etcd, until it fits again.
	push(t, c, prefix, strings.Replace(baseConfig, "{v1: 80, v2: 20}", "{v1: 90, v2: 10}", 1))
	waitFor(t, 10*time.Second, "the new document", func() bool { return a.weights("api") == "v1: 90, v2: 10" && b.weights("api") == "v1: 90, v2: 10" })
	if !b.mirrorRouted("mirror") || !b.mirrorRouted("ops") {
		t.Fatalf("the mirror routes did not survive a document that fits them: %v", b.store.Load().MirrorRoutes)
	}
	waitFor(t, 10*time.Second, "the cache file to hold the mirror routes", func() bool {
		data, err := readFile(cache)
		return err == nil && strings.Contains(data, "live-mirror-routes/api/mirror") && strings.Contains(data, "live-mirror-routes/api/ops")
	})
	push(t, c, prefix, strings.Replace(baseConfig, "{v1: 80, v2: 20}", "{v1: 100}", 1))
	waitFor(t, 10*time.Second, "the mirror routes to leave", func() bool {
		return a.store.Load().MirrorRoutes == nil && b.store.Load().MirrorRoutes == nil
	})
	push(t, c, prefix, baseConfig)
	waitFor(t, 10*time.Second, "the mirror routes to come back", func() bool { return b.mirrorRouted("mirror") && a.mirrorRouted("ops") })

	// A replica that starts while etcd cannot be reached serves them from
	// the cache file.
	// b's reporter writes the cache after it applies: wait for the file
	// at the state b serves now (the document with v2 again).
	latest := b.store.Load().Revision
	waitFor(t, 10*time.Second, "the cache file at the latest state", func() bool {
		data, err := readFile(cache)
		var doc struct {
			Revision int64 `json:"revision"`
		}
		return err == nil && json.Unmarshal([]byte(data), &doc) == nil && doc.Revision >= latest &&
			strings.Contains(data, "live-mirror-routes/api/mirror")
	})
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cached, err := tryReplica(t, fmt.Sprintf("127.0.0.1:%d", port), prefix, replicaOpts{node: "c", cacheFile: cache, noRun: true})
	if err != nil {
		t.Fatalf("start from the cache: %v", err)
	}
	if !cached.mirrorRouted("mirror") || !cached.mirrorRouted("ops") || cached.copies(1000, "x-canary", "v2") != 200 {
		t.Fatalf("from the cache: %v", cached.store.Load().MirrorRoutes)
	}

	ch, err = b.src.DeleteMirrorRoute(t.Context(), "api", "mirror", owner, "test")
	if err != nil || ch.Old == nil {
		t.Fatalf("DELETE: %v %+v", err, ch)
	}
	if b.mirrorRouted("mirror") || b.copies(100, "x-canary", "v2") != 0 {
		t.Fatal("the writer still copies after the DELETE")
	}
	waitFor(t, 10*time.Second, "a to drop the mirror route", func() bool { return !a.mirrorRouted("mirror") && a.mirrorRouted("ops") })
	if ch, err := a.src.DeleteMirrorRoute(t.Context(), "api", "mirror", "", "test"); err != nil || ch.Old != nil {
		t.Fatalf("DELETE of a mirror route that is gone: %v %+v", err, ch)
	}
	if _, err := a.src.DeleteMirrorRoute(t.Context(), "api", "ops", "", "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "no mirror route anywhere", func() bool { return a.store.Load().MirrorRoutes == nil && b.store.Load().MirrorRoutes == nil })
}

// Mirror route records written straight into etcd that cannot be read or
// do not compile are left out (and logged), without taking the document,
// the runtime routes or the other mirror routes with them. One with a
// field this build does not know (a newer build's) applies.
func TestBrokenMirrorRouteRecord(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	if _, err := a.src.PutMirrorRoute(t.Context(), "api", liveMirrorRoute("good", "x-good", "v2", 10000, ""), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.src.PutRoute(t.Context(), "api", liveRoute("route", "x-r", "v2", ""), "test"); err != nil {
		t.Fatal(err)
	}
	for key, val := range map[string]string{
		"live-mirror-routes/api/regex":   `{"when": [{"request": "path", "regex": "("}], "version": "v2", "percent": 5, "set_at": "2026-01-01T00:00:00Z"}`,
		"live-mirror-routes/api/garbage": `{"when":`,
		"live-mirror-routes/api/extra":   `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "percent": 5, "set_at": "2026-01-01T00:00:00Z", "x": 1}`,
		"live-mirror-routes/api/range":   `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "percent": 101, "set_at": "2026-01-01T00:00:00Z"}`,
		"live-mirror-routes/api/a/b":     `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "percent": 5, "set_at": "2026-01-01T00:00:00Z"}`,
	} {
		if _, err := c.Put(t.Context(), prefix+key, val); err != nil {
			t.Fatal(err)
		}
	}
	rev := push(t, c, prefix, strings.Replace(baseConfig, "{v1: 80, v2: 20}", "{v1: 60, v2: 40}", 1))
	waitFor(t, 10*time.Second, "the document", func() bool { return a.store.Load().Revision >= rev })
	snap := a.store.Load()
	names := []string{}
	for _, r := range snap.MirrorRoutes["api"] {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	if got := snap.MirrorRoutes["api"]; !slices.Equal(names, []string{"extra", "good"}) || a.weights("api") != "v1: 60, v2: 40" || len(snap.Routes["api"]) != 1 {
		t.Fatalf("mirror routes in force %v, routes %v, weights %s", got, snap.Routes, a.weights("api"))
	}
	if got := a.copies(1000, "x-good", "v2"); got != 600 {
		t.Fatalf("the good mirror route copies %d of 1,000, want v1's 600", got)
	}
}
