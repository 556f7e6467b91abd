package fleet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
)

// ReadLatency makes the node's signal source time requests too
// (signals.LatencySource), as Envoy's admin statistics and the module do.
func (f failable) ReadLatency(ctx context.Context, targets []signals.Target, out []signals.Counts, lat []signals.Histogram) error {
	if f.n.failing.Load() {
		return errors.New("envoy admin: connection refused")
	}
	return f.n.counters.ReadLatency(ctx, targets, out, lat)
}

// The leader judges latency on every replica's requests: each publishes
// its window's histograms with its counts, and the leader sums them.
func TestRolloutLatencySummedAcrossReplicas(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, rolloutDoc)
	a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{manual: true})
	waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
	b := startNode(t, e.Endpoint, prefix, "b", nodeOpts{manual: true})
	waitFor(t, 10*time.Second, "b's candidacy", func() bool {
		resp, err := c.Get(t.Context(), prefix+"rollout-leader/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})
	ws := []rollout.Watch{{
		Service: "api", Window: time.Second, Run: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Latency: true,
		Stable: signals.Target{Service: "api", Version: "v1", Cluster: "v1"},
		Canary: signals.Target{Service: "api", Version: "v2", Cluster: "v2"},
	}}
	now := time.Now()
	for range 15 {
		now = now.Add(100 * time.Millisecond)
		// a's canary is fast, b's slow: only the sum shows both.
		for range 4 {
			a.counters.RecordTimed("api", "v2", 200, false, 3*time.Millisecond)
			b.counters.RecordTimed("api", "v2", 200, false, 300*time.Millisecond)
			a.counters.RecordTimed("api", "v1", 200, false, 3*time.Millisecond)
		}
		if err := b.ro.Sample(t.Context(), now, ws); err != nil {
			t.Fatal(err)
		}
		lctx, release, ok := a.ro.Lead(t.Context())
		if !ok {
			t.Fatal("a no longer leads")
		}
		if err := a.ro.Sample(lctx, now, ws); err != nil {
			t.Fatal(err)
		}
		release()
	}
	stable, canary, ok := a.ro.LatencyTotals("api", now)
	if !ok || canary.Total() < 60 || stable.Total() < 30 {
		t.Fatalf("summed histograms: ok %v, canary %d, stable %d timed", ok, canary.Total(), stable.Total())
	}
	if p50, p99 := canary.Percentile(2500), canary.Percentile(9900); p50.String() != "4 ms" || p99.String() != "330 ms" {
		t.Fatalf("canary p25 %s p99 %s: want both replicas' requests (a's at 3ms, b's at 300ms)", p50, p99)
	}
	// The record b publishes carries its histograms.
	resp, err := c.Get(t.Context(), prefix+"rollout-counts/api/b")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("b's record: %v", err)
	}
	var rec struct {
		CanaryLatency map[string]uint64 `json:"canary_latency"`
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil || rec.CanaryLatency["330000"] == 0 {
		t.Fatalf("b's record %s: %v", resp.Kvs[0].Value, err)
	}
}

// hookDoc is rolloutDoc with a confirm_step gate and an event hook.
func hookDoc(gate, events string) string {
	return rolloutDoc + fmt.Sprintf(`      webhooks:
        - {name: approve, type: confirm_step, url: %q, poll: 100ms, timeout: 1s}
        - {name: chat, type: event, url: %q, timeout: 1s}
`, gate, events)
}

// callers counts webhook calls by the node in their payload.
type callers struct {
	status atomic.Int32
	mu     sync.Mutex
	nodes  map[string]int
	header map[string]int
}

func newCallers(status int) (*callers, *httptest.Server) {
	c := &callers{nodes: map[string]int{}, header: map[string]int{}}
	c.status.Store(int32(status))
	return c, httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p rollout.Payload
		_ = json.Unmarshal(body, &p)
		c.mu.Lock()
		c.nodes[p.Node]++
		c.header[r.Header.Get("X-Splitter-Node")]++
		c.mu.Unlock()
		w.WriteHeader(int(c.status.Load()))
	}))
}

func (c *callers) count() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.nodes {
		out[k] = v
	}
	return out
}

// TestRolloutOnlyTheLeaderCallsHooks: two replicas, one hook receiver
// counting callers. Only the rollout leader asks the gate and tells the
// events, whichever replica took the operator's call; when it stops, the
// other leads and asks from then on.
func TestRolloutOnlyTheLeaderCallsHooks(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	gate, gsrv := newCallers(http.StatusForbidden)
	defer gsrv.Close()
	events, esrv := newCallers(http.StatusOK)
	defer esrv.Close()
	push(t, newClient(t, e.Endpoint), prefix, hookDoc(gsrv.URL, esrv.URL))
	a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{})
	waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
	b := startNode(t, e.Endpoint, prefix, "b", nodeOpts{})
	feed(t, a, b)
	b.act(rollout.Start, "op") // on the replica that does not lead
	waitAll(t, "waiting on the gate", func(s rollout.Status) bool { return s.State == rollout.Waiting }, a, b)
	waitFor(t, 10*time.Second, "a few asks", func() bool { return gate.count()["a"] >= 3 })
	waitFor(t, 10*time.Second, "the events", func() bool { return events.count()["a"] >= 2 })
	if g, ev := gate.count(), events.count(); g["b"] != 0 || ev["b"] != 0 || len(g) != 1 || len(ev) != 1 {
		t.Fatalf("calls by node: gate %v, events %v; want only the leader a", g, ev)
	}
	if s := a.status(); s.Waiting == nil || s.Waiting.Hook != "approve" || s.Waiting.LastAnswer == "" {
		t.Fatalf("the leader's status: %+v", s.Waiting)
	}

	a.stop()
	waitFor(t, 20*time.Second, "b to lead", b.ro.Leading)
	before := gate.count()["a"]
	waitFor(t, 10*time.Second, "b asking", func() bool { return gate.count()["b"] >= 2 })
	if n := gate.count()["a"]; n > before+1 {
		t.Errorf("a stopped but asked %d more times", n-before)
	}
	gate.status.Store(http.StatusOK)
	waitAll(t, "promotion", func(s rollout.Status) bool { return s.State == rollout.Promoted }, b)
	gate.mu.Lock()
	defer gate.mu.Unlock()
	for node, n := range gate.header {
		if gate.nodes[node] != n {
			t.Errorf("X-Splitter-Node %q on %d calls, payload node on %d", node, n, gate.nodes[node])
		}
	}
}
