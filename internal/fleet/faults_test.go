package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// ownCluster starts a 3-member etcd cluster for one test.
func ownCluster(t *testing.T) *testbed.EtcdCluster {
	t.Helper()
	bin := testbed.RequireEtcd(t)
	c, err := testbed.ForTest(t).StartEtcdCluster(t.Context(), bin, 3, testbed.EtcdOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// clusterReplica is a replica given every member of the cluster.
func clusterReplica(t *testing.T, cl *testbed.EtcdCluster, prefix, node string) *replica {
	t.Helper()
	return startReplica(t, strings.Join(cl.Endpoints(), ","), prefix, replicaOpts{node: node})
}

// A member that hangs (SIGSTOP: its sockets stay open, nothing answers)
// while the other two keep a majority. Each member in turn, so that one of
// them is the member the replica's watch runs on: the replica keeps
// following (a write made elsewhere is applied while the member is still
// stopped), and its own admin writes are committed and applied, not
// refused, while the member is stopped. Before the fix, the watch sat on
// the stopped member until gRPC's keepalive dropped the connection (13 s),
// and writes were refused whenever the once-a-second probe hit it.
func TestMemberStoppedUnderTheWatch(t *testing.T) {
	cl := ownCluster(t)
	prefix := newPrefix(t)
	push(t, newClient(t, cl.Members[0].Endpoint), prefix, baseConfig)
	r := clusterReplica(t, cl, prefix, "r")
	waitFor(t, 10*time.Second, "r to follow", func() bool { st := r.src.Status(); return st.Connected && st.Watching != "" })

	for i, m := range cl.Members {
		var others []string
		for j, o := range cl.Members {
			if j != i {
				others = append(others, o.Endpoint)
			}
		}
		watching := r.src.Status().Watching
		if err := m.Pause(); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		w, err := fleet.NewClient(fleet.ClientOptions{Endpoints: others, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		pct := 10 + i
		rec := fmt.Sprintf(`{"weights":{"v1":%d,"v2":%d},"against":{"v1":80,"v2":20},"set_at":"%s","node":"test"}`,
			100-pct, pct, time.Now().UTC().Format(time.RFC3339Nano))
		// The stopped member may have led: the others elect a leader first.
		var put *clientv3.PutResponse
		waitFor(t, 15*time.Second, "a write through the other members", func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			put, err = w.Put(ctx, prefix+"overrides/api", rec)
			return err == nil
		})
		w.Close()
		// Generous: a stopped member must not hold the replica back; the
		// member stays stopped for all of it.
		deadline := time.Now().Add(6 * time.Second)
		for r.src.AppliedRevision() < put.Header.Revision {
			if time.Now().After(deadline) {
				t.Fatalf("member %s (watch was on %q) stopped: r still at revision %d, the write is at %d, %v after the stop",
					m.Name, watching, r.src.AppliedRevision(), put.Header.Revision, time.Since(stopped).Round(time.Millisecond))
			}
			time.Sleep(10 * time.Millisecond)
		}
		applied := time.Now()
		var took []time.Duration
		for k := range 3 {
			w0 := time.Now()
			ch, err := r.src.SetCanary(t.Context(), "api", 2000+100*(3*i+k), "t")
			took = append(took, time.Since(w0).Round(time.Millisecond))
			if err != nil {
				t.Fatalf("member %s stopped: admin write %d on r: %v", m.Name, k, err)
			}
			if ch.NotApplied || r.src.AppliedRevision() < ch.Revision {
				t.Fatalf("member %s stopped: admin write %d answered before r applied it: %+v", m.Name, k, ch)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("member %s stopped: the writes took until %v after the stop", m.Name, time.Since(stopped).Round(time.Millisecond))
		}
		t.Logf("member %s stopped (watch was on %q): the write through the others applied %v after the stop; then 3 writes on r took %v",
			m.Name, watching, applied.Sub(stopped).Round(time.Millisecond), took)
		if err := m.Resume(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "r to follow again", func() bool { return r.src.Status().Connected })
	}
}

// The event log lists every applied revision in order, with the state's
// hash, and the connection's changes; a reader follows it with after and
// wait.
func TestEventLog(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, baseConfig)
	r := startReplica(t, e.Endpoint, prefix, replicaOpts{node: "r"})
	waitFor(t, 10*time.Second, "r to follow", func() bool { return r.src.Status().Connected })
	var revs []int64
	for _, bp := range []int{1000, 2000, 3000} {
		ch, err := r.src.SetCanary(t.Context(), "api", bp, "t")
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, ch.Revision)
	}
	srv := httptest.NewServer(r.src.LogHandler())
	t.Cleanup(srv.Close)
	get := func(query string) fleet.EventLog {
		t.Helper()
		resp, err := http.Get(srv.URL + "/v1/fleet/log?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var l fleet.EventLog
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", query, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := get("")
	var applied []int64
	connected := false
	for _, ev := range l.Events {
		switch ev.Kind {
		case "applied":
			if n := len(applied); n > 0 && ev.Revision <= applied[n-1] {
				t.Fatalf("applied revisions not increasing: %v then %d", applied, ev.Revision)
			}
			if ev.StateSHA256 == "" || ev.SHA256 == "" {
				t.Fatalf("applied entry without hashes: %+v", ev)
			}
			applied = append(applied, ev.Revision)
		case "connected":
			connected = true
		}
	}
	for i, rev := range revs {
		if !slices.Contains(applied, rev) {
			t.Fatalf("log lacks applied revision %d (write %d): %v", rev, i, applied)
		}
	}
	if !connected || l.NodeID != "r" || l.FirstSeq != 1 || l.NextSeq != l.Events[len(l.Events)-1].Seq+1 {
		t.Fatalf("log %+v", l)
	}
	last := l.Events[len(l.Events)-1]
	if ov := last.Overrides["api"]; ov != "" && ov != "v1: 70, v2: 30" {
		t.Fatalf("last entry's override %q", ov)
	}

	// A long poll returns as soon as there is an entry.
	done := make(chan fleet.EventLog, 1)
	go func() { done <- get(fmt.Sprintf("after=%d&wait=20s", l.NextSeq-1)) }()
	time.Sleep(100 * time.Millisecond)
	ch, err := r.src.SetCanary(t.Context(), "api", 4000, "t")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case nl := <-done:
		if len(nl.Events) == 0 || nl.Events[0].Seq != l.NextSeq {
			t.Fatalf("long poll: %+v", nl)
		}
		found := false
		for _, ev := range nl.Events {
			found = found || ev.Kind == "applied" && ev.Revision == ch.Revision
		}
		if !found {
			waitFor(t, 5*time.Second, "the applied entry", func() bool {
				for _, ev := range get(fmt.Sprintf("after=%d", l.NextSeq-1)).Events {
					if ev.Kind == "applied" && ev.Revision == ch.Revision {
						return true
					}
				}
				return false
			})
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the long poll did not return on a new entry")
	}

	for _, q := range []string{"after=x", "wait=1m", "wait=-1s"} {
		resp, err := http.Get(srv.URL + "/v1/fleet/log?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: %d, want 400", q, resp.StatusCode)
		}
	}
}
