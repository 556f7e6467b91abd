package fleet_test

import (
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
)

// The leader's window is full only when every replica's counts are
// current: a replica whose record stops moving (its tick stalled; its
// lease lives on) is summed until it is stale, but no longer makes a full
// window once it is late; and a replica whose Envoy was unreadable for
// longer than the window publishes a new window from its next reading,
// however long its run has been watched before.
func TestRolloutLateOrGappedCountsDoNotFillTheWindow(t *testing.T) {
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

	const window = time.Second
	ws := []rollout.Watch{{
		Service: "api", Window: window, Run: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Stable: signals.Target{Service: "api", Version: "v1", Cluster: "v1"},
		Canary: signals.Target{Service: "api", Version: "v2", Cluster: "v2"},
	}}
	now := time.Now()
	// step moves 100ms on: each node given serves and samples (b
	// publishes), then the leader samples and sums.
	step := func(nodes ...*rnode) (covered time.Duration, sources []string) {
		t.Helper()
		now = now.Add(100 * time.Millisecond)
		for _, n := range nodes {
			n.record(10, 2, 0)
			if n != a {
				if err := n.ro.Sample(t.Context(), now, ws); err != nil && !n.failing.Load() {
					t.Fatalf("%s: %v", n.name, err)
				}
			}
		}
		lctx, release, ok := a.ro.Lead(t.Context())
		defer release()
		if !ok {
			t.Fatal("a no longer leads")
		}
		a.record(10, 2, 0)
		if err := a.ro.Sample(lctx, now, ws); err != nil {
			t.Fatal(err)
		}
		_, _, covered = a.ro.Totals("api", now)
		return covered, a.ro.Sources("api")
	}

	var covered time.Duration
	var sources []string
	for range 15 {
		covered, sources = step(b)
	}
	if covered != window || !slices.Equal(sources, []string{"a", "b"}) {
		t.Fatalf("both publishing for 1.5s: covered %v by %v, want the full %v by a and b", covered, sources, window)
	}

	// b stalls: its record stops moving. Summed until stale (10
	// intervals: 500ms), but late after 4 (200ms): no full window.
	for range 3 {
		covered, sources = step()
	}
	if covered >= window || !slices.Equal(sources, []string{"a", "b"}) {
		t.Fatalf("b's counts 300ms old: covered %v by %v; want b still summed but the window not full", covered, sources)
	}
	for range 12 {
		covered, _ = step(b)
	}
	if covered != window {
		t.Fatalf("b publishing again: covered %v", covered)
	}

	// b's Envoy unreadable for 1.5s (longer than the window), then
	// readable: its next readings are a new baseline, so the leader's
	// window is not full until b has watched a whole window again.
	b.failing.Store(true)
	for range 15 {
		covered, sources = step(b)
	}
	if !slices.Equal(sources, []string{"a"}) {
		t.Fatalf("b's Envoy unreadable: summed %v, want a alone", sources)
	}
	b.failing.Store(false)
	for i := range 15 {
		covered, sources = step(b)
		if slices.Contains(sources, "b") && covered >= window && i < 9 {
			t.Fatalf("%dms after b's gap ended: covered %v with b's counts: want b's window to fill again first", (i+1)*100, covered)
		}
	}
	if covered != window || !slices.Equal(sources, []string{"a", "b"}) {
		t.Fatalf("1.5s after b's gap: covered %v by %v", covered, sources)
	}
}
