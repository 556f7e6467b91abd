package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// A replica starts from what etcd holds, and every later write (a pushed
// document, an override from another replica, a clear) is in force on
// every replica, the writer included when it answers.
func TestWritesReachEveryReplica(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	b := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b"})
	for _, r := range []*replica{a, b} {
		if got := r.weights("api"); got != "v1: 80, v2: 20" {
			t.Fatalf("start: api weights %q", got)
		}
	}

	ch, err := a.src.SetCanary(t.Context(), "api", 3000, "test")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Revision == 0 || ch.Old.String() != "v1: 80, v2: 20" || ch.New.String() != "v1: 70, v2: 30" {
		t.Fatalf("change = %+v", ch)
	}
	// Read-your-writes: the writer answered after applying its commit.
	if got := a.weights("api"); got != "v1: 70, v2: 30" {
		t.Fatalf("writer: api weights %q right after the answer", got)
	}
	if snap := a.store.Load(); snap.Revision < ch.Revision || snap.Overrides["api"] == nil {
		t.Fatalf("writer snapshot revision %d (commit %d), overrides %v", snap.Revision, ch.Revision, snap.Overrides)
	}
	waitFor(t, 5*time.Second, "b to apply the canary", func() bool { return b.weights("api") == "v1: 70, v2: 30" })

	// Weights in another order are laid out in the declared one.
	if _, err := b.src.SetWeights(t.Context(), "web", mustWeights(t, `{"c": 10, "a": 60, "b": 30}`), "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a to apply web's weights", func() bool { return a.weights("web") == "a: 60, b: 30, c: 10" })

	if _, err := a.src.ClearOverride(t.Context(), "api", "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b to drop the override", func() bool { return b.weights("api") == "v1: 80, v2: 20" })

	// A new document from `config push` reaches both; web's override was
	// set against web's old weights, which the document changes: the push
	// deletes it in the same transaction.
	doc := strings.Replace(baseConfig, "{a: 50, b: 30, c: 20}", "{a: 40, b: 40, c: 20}", 1)
	res, err := fleet.PushConfig(t.Context(), c, fleet.Keys{Prefix: prefix}, []byte(doc), -1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Cleared, []string{"web"}) {
		t.Fatalf("push cleared %v, want [web]", res.Cleared)
	}
	for _, r := range []*replica{a, b} {
		waitFor(t, 5*time.Second, "the new document", func() bool {
			return r.weights("web") == "a: 40, b: 40, c: 20" && r.store.Load().Overrides == nil
		})
	}
}

// Errors from the write-through path are the store's: unknown service,
// not two versions, invalid weights; nothing is written.
func TestMutationErrors(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{})
	for _, tc := range []struct {
		name string
		do   func() error
		want error
		msg  string
	}{
		{"unknown service", func() error { _, err := a.src.SetCanary(t.Context(), "nope", 10, "t"); return err }, split.ErrUnknownService, ""},
		{"three versions", func() error { _, err := a.src.SetCanary(t.Context(), "web", 10, "t"); return err }, split.ErrNotTwoVersions, ""},
		{"sum not 100", func() error {
			_, err := a.src.SetWeights(t.Context(), "api", mustWeights(t, `{"v1": 50, "v2": 40}`), "t")
			return err
		}, nil, "not 100"},
		{"unknown version", func() error {
			_, err := a.src.SetWeights(t.Context(), "api", mustWeights(t, `{"v1": 50, "v3": 50}`), "t")
			return err
		}, nil, "v3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v / %q", err, tc.want, tc.msg)
			}
		})
	}
	resp, err := c.Get(t.Context(), prefix+"overrides/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("overrides written: %v %v", resp, err)
	}
}

// Two replicas changing the same service at once: every change is
// serialised by revision (each one's Old is the New of the change
// committed just before it: no update is lost), and both replicas end on
// the last committed one.
func TestConcurrentWritersSerialise(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	reps := []*replica{
		startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"}),
		startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b"}),
	}
	const perWriter = 15
	var mu sync.Mutex
	var changes []store.Change
	var wg sync.WaitGroup
	for i, r := range reps {
		wg.Go(func() {
			for j := range perWriter {
				bp := 100 + i*5000 + j*100 // distinct per write
				ch, err := r.src.SetCanary(t.Context(), "api", bp, "t")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				changes = append(changes, ch)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.SortFunc(changes, func(a, b store.Change) int { return int(a.Revision - b.Revision) })
	for i := 1; i < len(changes); i++ {
		if changes[i].Revision == changes[i-1].Revision {
			t.Fatalf("two changes committed at revision %d", changes[i].Revision)
		}
		if !changes[i].Old.Equal(changes[i-1].New) {
			t.Fatalf("lost update: change at %d replaced %v, but the change before it (at %d) set %v",
				changes[i].Revision, changes[i].Old, changes[i-1].Revision, changes[i-1].New)
		}
	}
	last := changes[len(changes)-1].New.String()
	for _, r := range reps {
		waitFor(t, 5*time.Second, "convergence on the last commit", func() bool { return r.weights("api") == last })
	}
}

// The last-good rule through etcd: a document written straight into etcd
// that does not validate never takes effect; the replica reports it
// (store error, metric, record) and keeps serving the last good one, with
// later overrides applied on top of it; a fixed document clears the error.
func TestInvalidDocumentRejected(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{})
	good := a.store.Load().SHA256

	for _, tc := range []struct{ name, doc, want string }{
		{"weights sum", strings.Replace(baseConfig, "v2: 20", "v2: 30", 1), "sum to 110"},
		{"not yaml", "services: [", "YAML"},
		{"unknown key", baseConfig + "typo: 1\n", "typo"},
		{"empty", "", "no services"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Put(t.Context(), prefix+"config", tc.doc); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "the rejection", func() bool {
				msg, _ := a.store.LastReloadError()
				return strings.Contains(msg, tc.want) && a.src.Record().Error != ""
			})
			if got := a.store.Load().SHA256; got != good {
				t.Fatalf("serving sha %s, want the last good %s", got, good)
			}
			st := a.src.Status()
			if st.RejectedError == nil || !strings.Contains(*st.RejectedError, prefix+"config") {
				t.Fatalf("status = %+v, want the rejected key named", st)
			}
		})
	}
	// An override written while the document is rejected applies on the
	// last good one.
	if _, err := a.src.SetCanary(t.Context(), "api", 5000, "t"); err != nil {
		t.Fatal(err)
	}
	if got := a.weights("api"); got != "v1: 50, v2: 50" {
		t.Fatalf("override on the last good document: %q", got)
	}
	if msg, _ := a.store.LastReloadError(); msg == "" {
		t.Fatal("the rejection is no longer reported after an override applied")
	}
	push(t, c, prefix, baseConfig)
	waitFor(t, 5*time.Second, "the error to clear", func() bool {
		msg, _ := a.store.LastReloadError()
		return msg == "" && a.src.Record().Error == "" && a.src.Status().RejectedError == nil
	})
	if got := a.weights("api"); got != "v1: 50, v2: 50" {
		t.Fatalf("override after the fix: %q", got)
	}
}

// A replica that was away while etcd compacted past its revision reads
// everything again and converges.
func TestCompactionPastReplicaRevision(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	b := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b"})
	b.stop() // b's watch is gone: it stays at its revision
	from := b.src.AppliedRevision()
	var last store.Change
	for _, bp := range []int{1000, 2000, 4000} {
		ch, err := a.src.SetCanary(t.Context(), "api", bp, "t")
		if err != nil {
			t.Fatal(err)
		}
		last = ch
	}
	if _, err := c.Compact(t.Context(), last.Revision); err != nil {
		t.Fatal(err)
	}
	if from >= last.Revision {
		t.Fatalf("b at %d, not behind %d", from, last.Revision)
	}
	b.run(t)
	waitFor(t, 10*time.Second, "b to recover", func() bool { return b.weights("api") == "v1: 60, v2: 40" })
	if b.src.AppliedRevision() < last.Revision {
		t.Fatalf("b at revision %d, want >= %d", b.src.AppliedRevision(), last.Revision)
	}
}

// etcd down: the replica keeps its state, says since when it is
// disconnected, refuses writes (it cannot make them), and catches up with
// a change made after etcd is back; a replica restarted during the outage
// starts from its cache file.
func TestEtcdDownAndBack(t *testing.T) {
	e := ownEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	cache := writeCacheDir(t)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a", cacheFile: cache})
	if _, err := a.src.SetCanary(t.Context(), "api", 3300, "t"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the cache file", func() bool {
		data, err := os.ReadFile(cache)
		return err == nil && strings.Contains(string(data), `\"v2\":33`)
	})

	if err := e.Kill(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	waitFor(t, 10*time.Second, "disconnected", func() bool { return !a.src.Status().Connected })
	st := a.src.Status()
	if st.DisconnectedSince == nil || st.DisconnectedSince.Before(down.Add(-time.Second)) {
		t.Fatalf("status = %+v", st)
	}
	if got := a.weights("api"); got != "v1: 67, v2: 33" {
		t.Fatalf("while down: %q", got)
	}
	if _, err := a.src.SetCanary(t.Context(), "api", 5000, "t"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("write while down: %v, want ErrUnavailable", err)
	}

	// Restarted while etcd is down: from the cache file.
	b, err := tryReplica(t, e.Endpoint, prefix, replicaOpts{node: "b", cacheFile: cache})
	if err != nil {
		t.Fatalf("start while etcd is down, with a cache file: %v", err)
	}
	if got := b.weights("api"); got != "v1: 67, v2: 33" || b.src.Status().StartedFrom != "cache" {
		t.Fatalf("from cache: %q, %+v", got, b.src.Status())
	}
	// Without a cache there is nothing to serve.
	if _, err := tryReplica(t, e.Endpoint, prefix, replicaOpts{node: "c", noRun: true}); err == nil {
		t.Fatal("start with etcd down and no cache succeeded")
	}

	if err := e.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "reconnection", func() bool { return a.src.Status().Connected && b.src.Status().Connected })
	if _, err := a.src.SetCanary(t.Context(), "api", 4200, "t"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*replica{a, b} {
		waitFor(t, 5*time.Second, "the change made after etcd returned", func() bool { return r.weights("api") == "v1: 58, v2: 42" })
	}
}

// Replicas register under a lease: Fleet lists every live one with its
// revision and state hash, and a stopped one leaves (its lease revoked).
func TestFleetView(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	b := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b"})
	ch, err := a.src.SetCanary(t.Context(), "api", 1500, "t")
	if err != nil {
		t.Fatal(err)
	}
	var v fleet.FleetView
	waitFor(t, 5*time.Second, "both records at the commit", func() bool {
		v, err = b.src.Fleet(t.Context())
		if err != nil || len(v.Replicas) != 2 {
			return false
		}
		for _, r := range v.Replicas {
			if r.Revision < ch.Revision || r.StateSHA256 != v.Replicas[0].StateSHA256 || r.Error != "" {
				return false
			}
		}
		return true
	})
	if v.Replicas[0].NodeID != "a" || v.Replicas[1].NodeID != "b" || v.Revision < ch.Revision || v.Self.NodeID != "b" {
		t.Fatalf("fleet = %+v", v)
	}
	b.stop()
	waitFor(t, 5*time.Second, "b to leave", func() bool {
		v, err = a.src.Fleet(t.Context())
		return err == nil && len(v.Replicas) == 1 && v.Replicas[0].NodeID == "a"
	})
}

// config push --expect-revision is a compare-and-swap.
func TestPushExpectRevision(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	keys := fleet.Keys{Prefix: prefix}
	if _, err := fleet.PushConfig(t.Context(), c, keys, []byte(baseConfig), 5); !errors.Is(err, fleet.ErrRevisionMismatch) {
		t.Fatalf("expect 5 on no document: %v", err)
	}
	res, err := fleet.PushConfig(t.Context(), c, keys, []byte(baseConfig), 0)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := fleet.GetConfig(t.Context(), c, keys)
	if err != nil || doc.Revision != res.Revision || string(doc.Data) != baseConfig {
		t.Fatalf("get = %+v, %v (push at %d)", doc, err, res.Revision)
	}
	if _, err := fleet.PushConfig(t.Context(), c, keys, []byte(baseConfig), res.Revision-1); !errors.Is(err, fleet.ErrRevisionMismatch) {
		t.Fatalf("stale expect: %v", err)
	}
	if _, err := fleet.PushConfig(t.Context(), c, keys, []byte(baseConfig), res.Revision); err != nil {
		t.Fatalf("matching expect: %v", err)
	}
	if _, err := fleet.PushConfig(t.Context(), c, keys, []byte("services: ["), -1); err == nil {
		t.Fatal("invalid document pushed")
	}
}

// A document deleted from etcd is a rejection too: the last good serves.
func TestDocumentDeleted(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{})
	if _, err := c.Delete(t.Context(), prefix+"config"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the rejection", func() bool {
		msg, _ := a.store.LastReloadError()
		return strings.Contains(msg, "no configuration")
	})
	if a.weights("api") != "v1: 80, v2: 20" {
		t.Fatal("last good not serving")
	}
}

// With etcd's own authentication on, a replica with the right user and
// password works and a wrong password is refused at start.
func TestAuth(t *testing.T) {
	e := ownEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	ctx := t.Context()
	for _, step := range []func() error{
		func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.UserAdd(ctx, "splitter", "s3cret"); return err },
		func() error { _, err := c.RoleAdd(ctx, "fleet"); return err },
		func() error {
			_, err := c.RoleGrantPermission(ctx, "fleet", prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := c.UserGrantRole(ctx, "splitter", "fleet"); return err },
		func() error { push(t, c, prefix, baseConfig); return nil },
		func() error { _, err := c.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	start := func(user, pw string) (*fleet.Source, error) {
		st, _ := store.New(store.Options{})
		src := fleet.New(fleet.Options{
			Client: fleet.ClientOptions{Endpoints: []string{e.Endpoint}, Username: user, Password: pw, DialTimeout: 3 * time.Second},
			Prefix: prefix, NodeID: "auth", Store: st,
		})
		t.Cleanup(func() { src.Close() })
		return src, src.Start(ctx)
	}
	if _, err := start("splitter", "wrong"); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
	src, err := start("splitter", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = src.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, 5*time.Second, "connected", func() bool { return src.Status().Connected })
	ch, err := src.SetCanary(ctx, "api", 2500, "t")
	if err != nil || ch.New.String() != "v1: 75, v2: 25" {
		t.Fatalf("write with auth: %+v %v", ch, err)
	}
}

// Every replica gives every sticky key the same version: the engine is the
// same, and so is the state once they agree.
func TestSameStickyAnswers(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	a := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})
	b := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "b"})
	if _, err := a.src.SetCanary(t.Context(), "api", 3700, "t"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b", func() bool { return b.weights("api") == "v1: 63, v2: 37" })
	ta, tb := a.store.Table(), b.store.Table()
	v2 := 0
	for i := range 10000 {
		req := &split.Request{Authority: "api.example.com", Method: "GET", Path: "/",
			Headers: []split.Header{{Name: "x-user-id", Value: fmt.Sprintf("user-%d", i)}}}
		da, db := ta.Explain(req), tb.Explain(req)
		if da.Decision.Version != db.Decision.Version {
			t.Fatalf("user-%d: %s on a, %s on b", i, da.Decision.Version, db.Decision.Version)
		}
		if da.Decision.Version == "v2" {
			v2++
		}
	}
	if v2 < 3400 || v2 > 4000 {
		t.Fatalf("%d of 10000 users on v2 at 37%%", v2)
	}
}

// A reload (POST /v1/reload, SIGHUP) whose read is overtaken by the watch
// never puts the older read in force: here the reload's read is served at
// revision R, then a weights change is committed at R+1 and applied from
// the watch before the reload applies. The replica keeps R+1's weights (the
// watch will not send them again), and its applied revision never goes
// back, whatever the reload answers.
func TestReloadNeverAppliesAnOlderRead(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	r := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "a"})

	var history []int64 // applied revisions, in the order seen
	var hmu sync.Mutex
	stopRec := make(chan struct{})
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		for {
			rev := r.src.AppliedRevision()
			hmu.Lock()
			if n := len(history); n == 0 || history[n-1] != rev {
				history = append(history, rev)
			}
			hmu.Unlock()
			select {
			case <-stopRec:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	changed := strings.Replace(baseConfig, "{v1: 80, v2: 20}", "{v1: 50, v2: 50}", 1)
	var committed int64
	fleet.AfterRead(r.src, func(reason string) {
		if reason != "reload" || committed != 0 {
			return
		}
		committed = push(t, c, prefix, changed)
		waitFor(t, 10*time.Second, "the watch to apply the change", func() bool { return r.weights("api") == "v1: 50, v2: 50" })
	})
	if _, err := r.src.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if committed == 0 {
		t.Fatal("the reload's read was not overtaken")
	}
	if got := r.weights("api"); got != "v1: 50, v2: 50" || r.src.AppliedRevision() < committed {
		t.Fatalf("after the reload: api %q at revision %d; want revision %d's weights (v1: 50, v2: 50)", got, r.src.AppliedRevision(), committed)
	}
	// Nothing will bring them back if they were lost: the watch has sent
	// them. A second later they are still in force.
	time.Sleep(time.Second)
	if got := r.weights("api"); got != "v1: 50, v2: 50" {
		t.Fatalf("a second after the reload: api %q", got)
	}
	// A reload that is not overtaken still re-reads (and changes nothing).
	if res, err := r.src.Reload(t.Context()); err != nil || res != "unchanged" {
		t.Fatalf("second reload: %q, %v", res, err)
	}
	close(stopRec)
	<-recDone
	hmu.Lock()
	defer hmu.Unlock()
	for i := 1; i < len(history); i++ {
		if history[i] < history[i-1] {
			t.Fatalf("applied revision went back: %v", history)
		}
	}
}

// A full read proves the replica up to date only once it is in force:
// between etcd's answer and its apply, the replica does not say
// connected (the chaos checker found a "connected" naming the revision
// before a resync's read, a moment before the read was applied).
func TestFullReadConnectedOnlyOnceApplied(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	st, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src := fleet.New(fleet.Options{
		Client: fleet.ClientOptions{Endpoints: []string{e.Endpoint}, DialTimeout: 2 * time.Second},
		Prefix: prefix, NodeID: "reader", Store: st,
	})
	t.Cleanup(func() { src.Close() })
	var between *fleet.Status
	fleet.AfterRead(src, func(string) {
		s := src.Status()
		between = &s
	})
	if err := src.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if between == nil {
		t.Fatal("the start did not read etcd")
	}
	if between.Connected {
		t.Fatalf("connected between the read and its apply, at applied revision %d", between.AppliedRevision)
	}
	if after := src.Status(); !after.Connected || after.AppliedRevision == 0 {
		t.Fatalf("after the start: connected %v at applied revision %d; want connected at the read's revision", after.Connected, after.AppliedRevision)
	}
}
