package fleet_test

import (
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// mirrorOf returns service's mirror in force on r ("none" when none).
func (r *replica) mirrorOf(service string) string {
	m := store.EffectiveMirror(r.store.Load(), service)
	if m == nil {
		return "none"
	}
	return m.Version + " " + split.FormatPercent(int(m.Percent))
}

// TestMirrorWritesReachEveryReplica: a runtime mirror set on one replica
// is committed to etcd, applied by the writer before it answers and by
// every other replica from its watch; it survives a cache-file start, a
// new document that changes the service's mirror retires it, and a clear
// removes it everywhere.
func TestMirrorWritesReachEveryReplica(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	cache := writeCacheDir(t)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a", cacheFile: cache})
	b := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b"})

	ch, err := a.src.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 1000}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Revision == 0 || ch.Old != nil || !ch.New.Equal(&split.Mirror{Version: "v2", Percent: 1000}) {
		t.Fatalf("change %+v", ch)
	}
	if got := a.mirrorOf("api"); got != "v2 10" {
		t.Fatalf("writer: mirror %q right after the answer", got)
	}
	waitFor(t, 5*time.Second, "b to apply the mirror", func() bool { return b.mirrorOf("api") == "v2 10" })
	if fa, fb := a.src.Record().StateSHA256, b.src.Record().StateSHA256; fa != fb {
		t.Errorf("replicas with the same mirror report different state hashes")
	}

	// Errors name the field; nothing is written.
	if _, err := b.src.SetMirror(t.Context(), "api", split.Mirror{Version: "v9", Percent: 1}, "test"); err == nil ||
		!strings.Contains(err.Error(), "mirror.version") {
		t.Errorf("unknown version: %v", err)
	}
	if _, err := b.src.SetMirror(t.Context(), "nope", split.Mirror{Version: "v2", Percent: 1}, "test"); err == nil ||
		!strings.Contains(err.Error(), "unknown service") {
		t.Errorf("unknown service: %v", err)
	}

	// A weights override beside it changes nothing of the mirror.
	if _, err := b.src.SetCanary(t.Context(), "api", 5000, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a to apply the canary", func() bool { return a.weights("api") == "v1: 50, v2: 50" })
	if a.mirrorOf("api") != "v2 10" {
		t.Fatalf("mirror after a canary change: %s", a.mirrorOf("api"))
	}

	// A replica started from the cache file alone (etcd unreachable) has it.
	waitFor(t, 5*time.Second, "the cache file", func() bool {
		r, err := tryReplica(t, "http://127.0.0.1:1", prefix, replicaOpts{node: "cached", cacheFile: cache, noRun: true})
		return err == nil && r.mirrorOf("api") == "v2 10"
	})

	// A document that gives api a mirror of its own wins over the runtime
	// one on every replica.
	push(t, c, prefix, strings.Replace(baseConfig, "    sticky: {header: x-user-id}\n",
		"    sticky: {header: x-user-id}\n    mirror: {version: v2, percent: 1}\n", 1))
	for _, r := range []*replica{a, b} {
		waitFor(t, 5*time.Second, "the document's mirror", func() bool { return r.mirrorOf("api") == "v2 1" })
	}
	// Set against the new document, then cleared: the document's again.
	if _, err := b.src.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 0}, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a to stop mirroring", func() bool { return a.mirrorOf("api") == "v2 0" })
	if _, err := a.src.ClearMirror(t.Context(), "api", "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b back to the document's mirror", func() bool { return b.mirrorOf("api") == "v2 1" })
}

// TestRolloutShadowStepOnEveryReplica: a rollout with a shadow step, led
// by one replica, puts the canary's mirror in force on every replica (in
// etcd, fenced by the rollout's state), steps on when healthy and removes
// the mirror everywhere; started again with a failing canary, it rolls
// back from the shadow step, the mirror gone too.
func TestRolloutShadowStepOnEveryReplica(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, strings.Replace(rolloutDoc, "      hold: 1s\n", "      hold: 1s\n      shadow: {percent: 20, hold: 1s}\n", 1))
	a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{})
	waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
	b := startNode(t, e.Endpoint, prefix, "b", nodeOpts{})
	tr := feed(t, a, b)

	if s := b.act(rollout.Start, "op"); !s.Shadow || s.Step != 0 {
		t.Fatalf("start: %+v", s)
	}
	for _, n := range []*rnode{a, b} {
		waitFor(t, 10*time.Second, n.name+": the shadow mirror", func() bool {
			m := store.EffectiveMirror(n.store.Load(), "api")
			return m != nil && m.Version == "v2" && m.Percent == 2000
		})
	}
	waitAll(t, "the first step", func(s rollout.Status) bool { return !s.Shadow && s.Step == 1 }, a, b)
	for _, n := range []*rnode{a, b} {
		waitFor(t, 10*time.Second, n.name+": the mirror removed", func() bool { return store.EffectiveMirror(n.store.Load(), "api") == nil })
	}

	b.act(rollout.Abort, "op")
	tr.errPct.Store(50)
	a.act(rollout.Start, "op")
	waitAll(t, "the rollback from the shadow step", func(s rollout.Status) bool { return s.State == rollout.RolledBack }, a, b)
	s := a.status()
	if last := s.History[len(s.History)-1]; last.Step != 0 || !strings.Contains(last.Reason, "in shadow") {
		t.Fatalf("rollback %+v", last)
	}
	for _, n := range []*rnode{a, b} {
		waitFor(t, 10*time.Second, n.name+": no mirror after the rollback", func() bool { return store.EffectiveMirror(n.store.Load(), "api") == nil })
		if w := weightOf(n, "v2"); w != 0 {
			t.Errorf("%s: canary at %d after the rollback", n.name, w)
		}
	}
}
