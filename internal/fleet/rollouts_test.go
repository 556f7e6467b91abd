package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// rolloutDoc: steps 5, 25, 50, 100, each held 1s, judged over a 1s window
// of at least 20 canary requests (1 % and 2 x stable).
const rolloutDoc = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 1s
      guard: {window: 1s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2}
`

const (
	testTick = 50 * time.Millisecond
	testTTL  = 2 * time.Second
)

// rnode is one replica as a splitter process runs it in fleet mode: a
// Source, the fleet's Rollouts and a rollout Manager, with in-process
// counters standing in for its Envoy's statistics.
type rnode struct {
	t        *testing.T
	name     string
	src      *fleet.Source
	store    *store.Store
	ro       *fleet.Rollouts
	m        *rollout.Manager
	reg      *prometheus.Registry
	counters *signals.Counters
	failing  atomic.Bool // its Envoy cannot be read
	logs     *syncBuilder
	stopOnce sync.Once
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	done     chan struct{}
	lagging  bool // the Source does not run (configLags) until runSource
}

type nodeOpts struct {
	// manual: the Source and the Rollouts run, the Manager does not tick
	// (the test calls Sample itself).
	manual bool
	// noRun: nothing runs yet (run starts it).
	noRun bool
	// noSignals: the node reads no Envoy (envoy_admin "").
	noSignals bool
	// states wraps the StateStore (race tests).
	states func(rollout.StateStore) rollout.StateStore
	// now is the Manager's clock (a replica with a skewed clock); nil:
	// time.Now.
	now func() time.Time
	// configLags: the Source applies the configuration at start only, and
	// follows etcd once runSource is called (a lagging config watch).
	configLags bool
}

// failable is the node's signal source: its counters, or an error while
// the node's Envoy is "unreadable".
type failable struct{ n *rnode }

func (f failable) Read(ctx context.Context, targets []signals.Target, out []signals.Counts) error {
	if f.n.failing.Load() {
		return errors.New("envoy admin: connection refused")
	}
	return f.n.counters.Read(ctx, targets, out)
}

func startNode(t *testing.T, endpoint, prefix, name string, o nodeOpts) *rnode {
	t.Helper()
	st, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &rnode{t: t, name: name, store: st, counters: &signals.Counters{}, logs: &syncBuilder{}, reg: prometheus.NewRegistry()}
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	n.src = fleet.New(fleet.Options{
		Client: fleet.ClientOptions{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second},
		Prefix: prefix, NodeID: name, Store: st, Logger: log, Metrics: fleet.NewMetrics(nil),
	})
	if err := n.src.Start(t.Context()); err != nil {
		n.src.Close()
		t.Fatal(err)
	}
	var local *rollout.Local
	if !o.noSignals {
		local = rollout.NewLocal(failable{n}, testTick)
	}
	n.ro = fleet.NewRollouts(n.src, fleet.RolloutOptions{
		TTL: testTTL, PublishInterval: testTick, SignalsInterval: testTick,
		Local: local, Logger: log, Metrics: fleet.NewRolloutMetrics(n.reg),
	})
	var states rollout.StateStore = n.ro
	if o.states != nil {
		states = o.states(n.ro)
	}
	n.m, err = rollout.New(t.Context(), rollout.Options{
		Store: st, Mutator: n.ro, States: states, Evidence: n.ro, Elector: n.ro,
		NodeID: name, Interval: testTick, Logger: log, Now: o.now,
	})
	if err != nil {
		n.src.Close()
		t.Fatal(err)
	}
	n.ro.Follow(n.m.Observe)
	n.lagging = o.configLags
	t.Cleanup(func() {
		n.stop()
		n.src.Close()
		if t.Failed() {
			t.Logf("---- %s log:\n%s", name, n.logs.String())
		}
	})
	if !o.noRun {
		n.run(o.manual)
	}
	return n
}

// run starts the node's loops.
func (n *rnode) run(manual bool) {
	ctx, cancel := context.WithCancel(context.Background())
	n.ctx, n.cancel, n.done = ctx, cancel, make(chan struct{})
	if !n.lagging {
		n.wg.Go(func() { _ = n.src.Run(ctx) })
	}
	n.wg.Go(func() { n.ro.Run(ctx) })
	if !manual {
		n.wg.Go(func() { _ = n.m.Run(ctx) })
	}
	go func() { n.wg.Wait(); close(n.done) }()
}

// runSource starts the Source of a node whose configuration lagged: it
// catches up with etcd.
func (n *rnode) runSource() {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); _ = n.src.Run(n.ctx) }()
}

// stop ends the node's loops (gracefully: its lease is revoked).
func (n *rnode) stop() {
	n.stopOnce.Do(func() {
		if n.cancel != nil {
			n.cancel()
			<-n.done
		}
	})
}

// crash stops the node as a killed process would: its connection to etcd
// goes first, so nothing is revoked and its lease expires on its own.
func (n *rnode) crash() {
	n.src.Close()
	n.stop()
}

func (n *rnode) status() rollout.Status {
	n.t.Helper()
	s, err := n.m.Status("api")
	if err != nil {
		n.t.Fatal(err)
	}
	return s
}

func (n *rnode) act(a rollout.Action, actor string) rollout.Status {
	n.t.Helper()
	s, err := n.m.Act(n.t.Context(), "api", a, actor)
	if err != nil {
		n.t.Fatalf("%s on %s: %v", a, n.name, err)
	}
	return s
}

// gauge reads one unlabelled metric of the node's registry.
func (n *rnode) gauge(name string) float64 {
	n.t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		n.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	n.t.Fatalf("%s: no metric %s", n.name, name)
	return 0
}

// record counts answers as the node's Envoy would: stable and canary
// requests, errs of the canary's failing.
func (n *rnode) record(stable, canary, canaryErrs int) {
	for range stable {
		n.counters.Record("api", "v1", 200, false)
	}
	for i := range canary {
		status := 200
		if i < canaryErrs {
			status = 500
		}
		n.counters.Record("api", "v2", status, false)
	}
}

// traffic feeds every node until the test ends: each 10ms, 5 stable and
// 2 canary answers, the canary failing errPct percent of them.
type traffic struct{ errPct atomic.Int64 }

func feed(t *testing.T, nodes ...*rnode) *traffic {
	tr := &traffic{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			errs := 0
			if p := tr.errPct.Load(); p > 0 && int64(i%100) < p {
				errs = 2
			}
			for _, n := range nodes {
				n.record(5, 2, errs)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return tr
}

// waitAll waits until cond holds for every node's status.
func waitAll(t *testing.T, what string, cond func(rollout.Status) bool, nodes ...*rnode) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, 20*time.Second, n.name+": "+what, func() bool { return cond(n.status()) })
	}
}

func leading(nodes ...*rnode) *rnode {
	for _, n := range nodes {
		if n.ro.Leading() {
			return n
		}
	}
	return nil
}

// steps lists the steps a history entered, in order.
func steps(h []rollout.Transition) []int {
	var out []int
	for _, tr := range h {
		if tr.To == rollout.Progressing && (tr.From == rollout.Progressing || tr.From == rollout.Idle) {
			out = append(out, tr.Step)
		}
	}
	return out
}

// The leader sums the counts every live replica publishes: its own, and
// the others' of the same run; a replica whose lease expired (its record
// is gone), whose record stopped moving (stale), that cannot read its
// Envoy, or that counts another run is left out.
func TestRolloutCountsSummedAcrossReplicas(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, rolloutDoc)
	a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{manual: true})
	waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
	b := startNode(t, e.Endpoint, prefix, "b", nodeOpts{manual: true})
	cc := startNode(t, e.Endpoint, prefix, "c", nodeOpts{manual: true})
	d := startNode(t, e.Endpoint, prefix, "d", nodeOpts{manual: true})
	// Each holds its session (its counts are published under its lease)
	// once it is a candidate.
	waitFor(t, 10*time.Second, "four candidates", func() bool {
		resp, err := c.Get(t.Context(), prefix+"rollout-leader/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 4
	})
	for _, n := range []*rnode{b, cc, d} {
		waitFor(t, 10*time.Second, n.name+" to see a lead", func() bool { return n.ro.Leader() == "a" })
	}
	if got := a.ro.Leader(); got != "a" || b.ro.Leading() {
		t.Fatalf("leader %q (b leading %v)", got, b.ro.Leading())
	}

	run0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	watch := func(run time.Time) []rollout.Watch {
		return []rollout.Watch{{
			Service: "api", Window: 10 * time.Second, Run: run,
			Stable: signals.Target{Service: "api", Version: "v1", Cluster: "v1"},
			Canary: signals.Target{Service: "api", Version: "v2", Cluster: "v2"},
		}}
	}
	ws := watch(run0)
	now := time.Now()
	lead := func() error {
		t.Helper()
		lctx, release, ok := a.ro.Lead(t.Context())
		defer release()
		if !ok {
			t.Fatal("a no longer leads")
		}
		return a.ro.Sample(lctx, now, ws)
	}
	sample := func(nodes ...*rnode) {
		t.Helper()
		for _, n := range nodes {
			if err := n.ro.Sample(t.Context(), now, ws); err != nil && !n.failing.Load() {
				t.Fatalf("%s: %v", n.name, err)
			}
		}
	}
	type want struct {
		sources                              []string
		stableReq, stableErr, canReq, canErr uint64
	}
	check := func(phase string, w want) {
		t.Helper()
		if err := lead(); err != nil {
			t.Fatalf("%s: leader's sample: %v", phase, err)
		}
		st, cn, _ := a.ro.Totals("api", now)
		got := want{a.ro.Sources("api"), st.Requests, st.Errors, cn.Requests, cn.Errors}
		if !slices.Equal(got.sources, w.sources) || got.stableReq != w.stableReq || got.stableErr != w.stableErr ||
			got.canReq != w.canReq || got.canErr != w.canErr {
			t.Fatalf("%s: leader's totals %+v, want %+v", phase, got, w)
		}
	}

	// Baselines, then one interval of traffic on each replica.
	sample(a, b, cc, d)
	a.record(100, 10, 0)
	b.record(200, 20, 5)
	cc.record(300, 30, 1)
	d.record(400, 40, 2)
	now = now.Add(100 * time.Millisecond)
	sample(b, cc, d)
	check("all four publish", want{[]string{"a", "b", "c", "d"}, 1000, 0, 100, 8})

	// d dies: its lease expires, its record with it.
	d.crash()
	waitFor(t, 10*time.Second, "d's counts to expire with its lease", func() bool {
		resp, err := c.Get(t.Context(), prefix+"rollout-counts/api/d")
		return err == nil && len(resp.Kvs) == 0
	})
	now = now.Add(100 * time.Millisecond)
	sample(b, cc)
	check("d's lease expired", want{[]string{"a", "b", "c"}, 600, 0, 60, 6})

	// c stops publishing while its lease lives: once its record has not
	// moved for the staleness bound (10 intervals), it is left out. b's
	// unchanged counts are written again on the heartbeat, so b stays.
	for range 8 {
		now = now.Add(100 * time.Millisecond)
		sample(b)
		if err := lead(); err != nil {
			t.Fatal(err)
		}
	}
	check("c stale", want{[]string{"a", "b"}, 300, 0, 30, 5})

	// b cannot read its Envoy: it says so, and is left out.
	b.failing.Store(true)
	now = now.Add(100 * time.Millisecond)
	sample(b)
	check("b's Envoy unreadable", want{[]string{"a"}, 100, 0, 10, 0})

	// The leader's own Envoy unreadable, and no other replica usable: no
	// verdict can be made.
	a.failing.Store(true)
	now = now.Add(100 * time.Millisecond)
	if err := lead(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("no usable counts: err = %v", err)
	}
	// b readable again: the leader judges on b's counts alone.
	b.failing.Store(false)
	now = now.Add(100 * time.Millisecond)
	sample(b)
	check("the leader's Envoy unreadable, b's counts", want{[]string{"b"}, 200, 0, 20, 5})
	a.failing.Store(false)

	// A new run: b's counts of the old one do not count.
	ws = watch(run0.Add(time.Minute))
	now = now.Add(100 * time.Millisecond)
	check("a new run", want{[]string{"a"}, 0, 0, 0, 0})
	if n := b.gauge("splitter_rollout_counts_published_total"); n < 3 {
		t.Fatalf("b published %v times", n)
	}
}

// A leader that reads no Envoy of its own judges on the counts the others
// publish (and a rollout can be started on it); with none published, no
// verdict can be made.
func TestRolloutLeaderWithoutSignals(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	push(t, newClient(t, e.Endpoint), prefix, rolloutDoc)
	x := startNode(t, e.Endpoint, prefix, "x", nodeOpts{noSignals: true})
	waitFor(t, 10*time.Second, "x to lead", x.ro.Leading)
	if s := x.act(rollout.Start, "op"); s.State != rollout.Progressing {
		t.Fatalf("start on a replica without signals: %+v", s)
	}
	waitFor(t, 5*time.Second, "no verdict without counts", func() bool {
		s := x.status()
		return s.Verdict == nil && strings.Contains(s.SignalError, "no signal source")
	})
	b := startNode(t, e.Endpoint, prefix, "b", nodeOpts{})
	tr := feed(t, b)
	waitFor(t, 20*time.Second, "a verdict on b's counts", func() bool {
		v := x.status().Verdict
		return v != nil && v.Result == rollout.Healthy && slices.Equal(v.Replicas, []string{"b"})
	})
	tr.errPct.Store(100)
	waitAll(t, "the rollback", func(s rollout.Status) bool { return s.State == rollout.RolledBack }, x, b)
	if last := x.status().History; last[len(last)-1].Node != "x" {
		t.Fatalf("rolled back by %q, want x", last[len(last)-1].Node)
	}
}

// Three replicas: a healthy rollout started on a follower steps on every
// one; the leader dies (its lease expires) and another takes over from the
// stored state: no step restarted, the step it was in ends after its
// hold, moved by the new leader. A replica restarted from the stored
// state is at the same step, since the same instant, with the same hold
// time; an operator's action on it takes effect fleet-wide.
func TestRolloutElectionHandoverAndRestart(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	push(t, newClient(t, e.Endpoint), prefix, rolloutDoc)
	a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{})
	waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
	b := startNode(t, e.Endpoint, prefix, "b", nodeOpts{})
	c := startNode(t, e.Endpoint, prefix, "c", nodeOpts{})
	feed(t, a, b, c)
	if a.gauge("splitter_rollout_leader") != 1 || b.gauge("splitter_rollout_leader") != 0 {
		t.Fatal("splitter_rollout_leader: want 1 on a, 0 on b")
	}

	if s := b.act(rollout.Start, "op"); s.State != rollout.Progressing || s.Step != 1 || s.History[0].Node != "b" {
		t.Fatalf("start on b: %+v", s)
	}
	waitAll(t, "step 2", func(s rollout.Status) bool { return s.Step == 2 }, a, b, c)
	since2 := b.status().Since
	for _, n := range []*rnode{a, b, c} {
		waitFor(t, 5*time.Second, n.name+" to apply 25%", func() bool { return n.store.Table() != nil && weightOf(n, "v2") == 2500 })
	}

	a.crash()
	waitFor(t, 15*time.Second, "b or c to take over", func() bool { return leading(b, c) != nil })
	nl := leading(b, c)
	waitAll(t, "step 3", func(s rollout.Status) bool { return s.Step == 3 }, b, c)
	s := c.status()
	if got := steps(s.History); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("steps entered %v, want [1 2 3] (none restarted): %+v", got, s.History)
	}
	step2, step3 := s.History[1], s.History[2]
	if !step2.At.Equal(since2) || step2.Node != "a" || step3.Node != nl.name || step3.Actor != rollout.Actor {
		t.Fatalf("step 2 %+v (since %v), step 3 %+v: want a's step 2 kept, step 3 by %s", step2, since2, step3, nl.name)
	}
	if step3.At.Sub(step2.At) < time.Second {
		t.Fatalf("step 3 %v after step 2: the 1s hold was not honoured", step3.At.Sub(step2.At))
	}
	if v := step3.Verdict; v == nil || v.Result != rollout.Healthy || !slices.Contains(v.Replicas, nl.name) || slices.Contains(v.Replicas, "a") {
		t.Fatalf("step 3 verdict %+v: want healthy on the live replicas' counts", v)
	}

	c.act(rollout.Pause, "op")
	waitAll(t, "paused", func(s rollout.Status) bool { return s.State == rollout.Paused }, b, c)
	want := c.status()

	// a restarts: it loads the stored state before anything runs.
	a2 := startNode(t, e.Endpoint, prefix, "a", nodeOpts{noRun: true})
	got := a2.status()
	if got.State != rollout.Paused || got.Step != 3 || !got.Since.Equal(want.Since) || got.Held != want.Held || got.Revision != want.Revision {
		t.Fatalf("restarted a: %s step %d since %v held %v rev %d; want %s step %d since %v held %v rev %d",
			got.State, got.Step, got.Since, got.Held, got.Revision, want.State, want.Step, want.Since, want.Held, want.Revision)
	}
	if !got.OwnsWeights && got.State == rollout.Progressing {
		t.Fatal("ownership not restored")
	}
	a2.run(false)
	feed(t, a2)
	a2.act(rollout.Resume, "op")
	waitAll(t, "promotion", func(s rollout.Status) bool { return s.State == rollout.Promoted }, a2, b, c)
	final := a2.status()
	last := final.History[len(final.History)-1]
	if last.Node != nl.name || a2.ro.Leading() || final.Leader != nl.name {
		t.Fatalf("promotion by %q, a leading %v, leader %q: want %s to go on leading", last.Node, a2.ro.Leading(), final.Leader, nl.name)
	}
	if got := steps(final.History); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("steps %v", got)
	}
}

func weightOf(n *rnode, version string) int {
	svc, _ := n.store.Table().Service("api")
	bp, _ := svc.Weights.Get(version)
	return bp
}

// hookStates runs before once, just before the first Save that match
// accepts: a competing write lands between the read and the write.
type hookStates struct {
	rollout.StateStore
	match  func(rollout.State) bool
	before func()
	once   sync.Once
	fired  atomic.Bool
}

func (h *hookStates) Save(ctx context.Context, s rollout.State) (rollout.State, error) {
	if h.match(s) {
		h.once.Do(func() { h.before(); h.fired.Store(true) })
	}
	return h.StateStore.Save(ctx, s)
}

// Writes to rollouts/<service> are compare-and-swaps: a state derived from
// a revision that is no longer stored is refused (nothing written); an
// operator's action racing another one is computed again on the stored
// state (neither is lost); the leader's step racing an operator's pause
// loses, and the rollout stays paused at its step with its weights.
func TestRolloutCompareAndSwap(t *testing.T) {
	e := sharedEtcd(t)
	c := newClient(t, e.Endpoint)

	t.Run("stale revision refused", func(t *testing.T) {
		prefix := newPrefix(t)
		push(t, c, prefix, rolloutDoc)
		a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{manual: true})
		first, err := a.ro.Save(t.Context(), rollout.State{Service: "api", Phase: rollout.Aborted, History: []rollout.Transition{}})
		if err != nil || first.Revision == 0 {
			t.Fatalf("first save: %+v, %v", first, err)
		}
		for _, tc := range []struct {
			name string
			rev  int64
		}{{"absent expected", 0}, {"older revision", first.Revision - 1}, {"newer revision", first.Revision + 100}} {
			_, err := a.ro.Save(t.Context(), rollout.State{Service: "api", Phase: rollout.Promoted, Revision: tc.rev, History: []rollout.Transition{}})
			if !errors.Is(err, rollout.ErrStale) {
				t.Fatalf("%s: err = %v, want ErrStale", tc.name, err)
			}
		}
		resp, err := c.Get(t.Context(), prefix+"rollouts/api")
		if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision != first.Revision || !strings.Contains(string(resp.Kvs[0].Value), `"aborted"`) {
			t.Fatalf("stored: %v %v", resp, err)
		}
		if n := a.gauge("splitter_rollout_state_conflicts_total"); n != 3 {
			t.Fatalf("conflicts counted %v, want 3", n)
		}
	})

	t.Run("operator actions race", func(t *testing.T) {
		prefix := newPrefix(t)
		push(t, c, prefix, rolloutDoc)
		a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{})
		waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
		var b *rnode
		hook := &hookStates{
			match:  func(s rollout.State) bool { return s.Phase == rollout.Aborted },
			before: func() { a.act(rollout.Pause, "op-a") },
		}
		b = startNode(t, e.Endpoint, prefix, "b", nodeOpts{states: func(s rollout.StateStore) rollout.StateStore { hook.StateStore = s; return hook }})
		feed(t, a, b)
		a.act(rollout.Start, "op-a")
		waitAll(t, "progressing", func(s rollout.Status) bool { return s.State == rollout.Progressing }, b)
		// b's abort is computed on "progressing"; a's pause lands before
		// b writes: b's write is refused, b computes the abort again on
		// "paused", and both are in the history.
		s := b.act(rollout.Abort, "op-b")
		if !hook.fired.Load() || s.State != rollout.Aborted {
			t.Fatalf("abort: %s (race fired %v)", s.State, hook.fired.Load())
		}
		h := s.History
		if len(h) < 3 || h[len(h)-2].To != rollout.Paused || h[len(h)-2].Actor != "op-a" || h[len(h)-1].From != rollout.Paused || h[len(h)-1].Actor != "op-b" {
			t.Fatalf("history %+v: want a's pause, then b's abort from paused", h)
		}
		waitAll(t, "aborted", func(s rollout.Status) bool { return s.State == rollout.Aborted }, a)
		waitFor(t, 5*time.Second, "canary at 0 on a", func() bool { return weightOf(a, "v2") == 0 })
	})

	t.Run("leader's step loses to a pause", func(t *testing.T) {
		prefix := newPrefix(t)
		push(t, c, prefix, rolloutDoc)
		var b *rnode
		hook := &hookStates{
			match:  func(s rollout.State) bool { return s.Step == 2 && s.History[len(s.History)-1].Actor == rollout.Actor },
			before: func() { b.act(rollout.Pause, "op") },
		}
		a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{states: func(s rollout.StateStore) rollout.StateStore { hook.StateStore = s; return hook }})
		waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
		b = startNode(t, e.Endpoint, prefix, "b", nodeOpts{})
		feed(t, a, b)
		b.act(rollout.Start, "op")
		waitFor(t, 20*time.Second, "the leader's step to race the pause", hook.fired.Load)
		waitAll(t, "paused", func(s rollout.Status) bool { return s.State == rollout.Paused }, a, b)
		time.Sleep(1500 * time.Millisecond) // more than the hold: a paused rollout does not step
		for _, n := range []*rnode{a, b} {
			s := n.status()
			if s.State != rollout.Paused || s.Step != 1 || !slices.Equal(steps(s.History), []int{1}) || weightOf(n, "v2") != 500 {
				t.Fatalf("%s: %s step %d, steps %v, canary %d bp: want paused at step 1 (5%%)", n.name, s.State, s.Step, steps(s.History), weightOf(n, "v2"))
			}
		}
		if a.gauge("splitter_rollout_state_conflicts_total") < 1 {
			t.Fatal("the leader's lost write is not counted")
		}
	})
}

// A leader that loses etcd stops deciding: its session ends when its
// lease is not renewed, it leaves the leadership at once (metric 0, no
// verdicts), another replica takes over and rolls a failing canary back,
// and the old leader follows once it is back. A write made on a
// leadership whose election key is gone is refused by etcd itself, even
// before the old leader hears of it.
func TestRolloutLeaderLosesEtcd(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	push(t, c, prefix, rolloutDoc)
	proxy, err := testbed.ForTest(t).StartProxy(strings.TrimPrefix(e.Endpoint, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	a := startNode(t, "http://"+proxy.Addr, prefix, "a", nodeOpts{})
	waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
	b := startNode(t, e.Endpoint, prefix, "b", nodeOpts{})
	tr := feed(t, a, b)
	b.act(rollout.Start, "op")
	waitAll(t, "a verdict on the leader", func(s rollout.Status) bool { return s.Verdict != nil }, a)

	proxy.Cut()
	tr.errPct.Store(50)
	waitFor(t, 15*time.Second, "a to leave the leadership", func() bool { return !a.ro.Leading() })
	// The gauge follows at a's next tick.
	waitFor(t, 5*time.Second, "splitter_rollout_leader 0 on a", func() bool { return a.gauge("splitter_rollout_leader") == 0 })
	stopped := a.status().Verdict
	waitAll(t, "the rollback by b", func(s rollout.Status) bool { return s.State == rollout.RolledBack }, b)
	if v := a.status().Verdict; v == nil || !v.At.Equal(stopped.At) {
		t.Fatalf("a judged after losing the leadership: %+v, then %+v", stopped, v)
	}
	if s := a.status(); s.State != rollout.Progressing {
		t.Fatalf("a, cut off, moved the rollout: %s", s.State)
	}
	rb := b.status().History
	if last := rb[len(rb)-1]; last.Node != "b" || last.Verdict == nil || last.Verdict.Result != rollout.Failing {
		t.Fatalf("rollback %+v", last)
	}

	proxy.Restore()
	waitAll(t, "a to follow the rollback", func(s rollout.Status) bool { return s.State == rollout.RolledBack && s.Leader == "b" }, a)
	waitFor(t, 10*time.Second, "canary at 0 on a", func() bool { return weightOf(a, "v2") == 0 })
	if a.ro.Leading() || !b.ro.Leading() {
		t.Fatalf("leading: a %v, b %v; want b", a.ro.Leading(), b.ro.Leading())
	}

	t.Log("b's election key deleted under it: its writes are fenced")
	waitFor(t, 15*time.Second, "a to campaign again", func() bool {
		resp, err := c.Get(t.Context(), prefix+"rollout-leader/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})
	lctx, release, ok := b.ro.Lead(t.Context())
	defer release()
	if !ok {
		t.Fatal("b does not lead")
	}
	kv := electionKey(t, c, prefix)
	// The fence b's writes carry, as it was before the deletion (b may
	// hear of the deletion at any moment; the fence must hold anyway).
	stale := fleet.WithTerm(t.Context(), string(kv.Key), kv.CreateRevision)
	if _, err := c.Delete(t.Context(), string(kv.Key)); err != nil {
		t.Fatal(err)
	}
	before, err := c.Get(t.Context(), prefix+"rollouts/api")
	if err != nil {
		t.Fatal(err)
	}
	st := b.status()
	if _, err := b.ro.Save(stale, rollout.State{Service: "api", Phase: rollout.Aborted, Revision: st.Revision, History: []rollout.Transition{}}); !errors.Is(err, rollout.ErrStale) {
		t.Fatalf("a state write on a lost leadership: %v, want ErrStale", err)
	}
	if _, err := b.ro.SetStateWeights(stale, rollout.State{Service: "api", Revision: st.Revision}, mustWeights(t, `{"v1": 50, "v2": 50}`)); !errors.Is(err, rollout.ErrStale) {
		t.Fatalf("a weights write on a lost leadership: %v, want ErrStale", err)
	}
	after, err := c.Get(t.Context(), prefix+"rollouts/api")
	if err != nil || after.Kvs[0].ModRevision != before.Kvs[0].ModRevision || weightOf(b, "v2") != 0 {
		t.Fatalf("written on a lost leadership (%v)", err)
	}
	select {
	case <-lctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the lost leadership's context was not cancelled")
	}
	waitFor(t, 10*time.Second, "a to take over", a.ro.Leading)
	if b.ro.Leading() {
		t.Fatal("b still leads")
	}
}

// electionKey returns the rollout leader's election key.
func electionKey(t *testing.T, c *clientv3.Client, prefix string) *mvccpb.KeyValue {
	t.Helper()
	resp, err := c.Get(t.Context(), prefix+"rollout-leader/", append(clientv3.WithFirstCreate(), clientv3.WithPrefix())...)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("election key: %v %v", resp, err)
	}
	return resp.Kvs[0]
}

// One unreadable rollouts/<service> key (an unknown phase, as a newer or
// older build may write during an upgrade) does not stop a replica from
// starting: it is skipped and reported, like a running replica does, and
// an action on that service says why it cannot act until the key is fixed
// or deleted. The other services' rollouts are loaded as usual.
func TestRolloutUnreadableStateAtStart(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	doc := rolloutDoc + strings.ReplaceAll(strings.TrimPrefix(rolloutDoc, "services:\n"), `name: api
    hosts: ["*"]`, `name: web
    hosts: ["web.example.com"]`)
	push(t, c, prefix, doc)
	if _, err := c.Put(t.Context(), prefix+"rollouts/api", `{"service":"api","phase":"aborted","canary":"v2","stable":"v1","step":2,"weight":0,"history":[]}`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(t.Context(), prefix+"rollouts/web", `{"service":"web","phase":"exploded","step":1,"history":[]}`); err != nil {
		t.Fatal(err)
	}
	a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{})
	if s := a.status(); s.State != rollout.Aborted || s.Step != 2 {
		t.Fatalf("api after the start: %s step %d, want its stored state", s.State, s.Step)
	}
	if !strings.Contains(a.logs.String(), "rollouts/web") || !strings.Contains(a.logs.String(), `unknown phase \"exploded\"`) {
		t.Fatalf("the unreadable key is not reported:\n%s", a.logs.String())
	}
	_, err := a.m.Act(t.Context(), "web", rollout.Start, "op")
	if !errors.Is(err, rollout.ErrConflict) || !strings.Contains(err.Error(), "rollouts/web") {
		t.Fatalf("start on web while its stored state is unreadable: %v; want a conflict naming the key", err)
	}
	if _, err := c.Delete(t.Context(), prefix+"rollouts/web"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "web startable once the key is deleted", func() bool {
		s, err := a.m.Act(t.Context(), "web", rollout.Start, "op")
		return err == nil && s.State == rollout.Progressing
	})
}

// The leader's configuration watch lags behind its rollouts/ watch: a
// rollout started (on another replica) under a configuration the leader
// has not applied yet is not judged against the older one, so it is not
// aborted ("the configuration no longer has a rollout"); the leader waits,
// and judges it once it has applied that configuration.
func TestRolloutLeaderWaitsForTheStatesConfiguration(t *testing.T) {
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	c := newClient(t, e.Endpoint)
	noRollout := rolloutDoc[:strings.Index(rolloutDoc, "    rollout:")]
	push(t, c, prefix, noRollout)
	a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{configLags: true})
	waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
	b := startNode(t, e.Endpoint, prefix, "b", nodeOpts{})
	feed(t, a, b)
	push(t, c, prefix, rolloutDoc)
	waitFor(t, 10*time.Second, "b to apply the rollout block", func() bool { _, err := b.m.Status("api"); return err == nil })
	if _, err := a.m.Status("api"); !errors.Is(err, rollout.ErrNoRollout) {
		t.Fatalf("a's configuration must still be the old one: %v", err)
	}
	b.act(rollout.Start, "op")
	waitFor(t, 10*time.Second, "a to see the started rollout", func() bool { p, _ := a.m.Owns("api"); return p == rollout.Progressing })
	time.Sleep(40 * testTick) // forty of the leader's ticks
	if s := b.status(); s.State != rollout.Progressing || len(s.History) != 1 {
		t.Fatalf("while the leader's configuration lags: %s, history %+v; want the rollout left alone", s.State, s.History)
	}
	if !a.ro.Leading() {
		t.Fatal("a no longer leads")
	}
	a.runSource()
	waitFor(t, 10*time.Second, "a to apply the rollout block", func() bool { _, err := a.m.Status("api"); return err == nil })
	waitAll(t, "step 2, judged by a once it applied the configuration", func(s rollout.Status) bool { return s.Step == 2 }, a, b)
	h := b.status().History
	if h[1].To != rollout.Progressing || h[1].Node != "a" || slices.ContainsFunc(h, func(tr rollout.Transition) bool { return tr.To == rollout.Aborted }) {
		t.Fatalf("history %+v: want step 2 by a, no abort", h)
	}
}

// skewed is a clock off the real one by d.
func skewed(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }

// The hold is measured on one clock: the leader's clock is an hour ahead
// of the replica that starts the rollout, and an hour and a half ahead of
// the one that resumes it, yet each step is held for the hold as the
// test's clock measures it, not cut short by the hour between the clocks.
func TestRolloutHoldAcrossSkewedClocks(t *testing.T) {
	const hold = 3 * time.Second
	e := sharedEtcd(t)
	prefix := newPrefix(t)
	push(t, newClient(t, e.Endpoint), prefix, strings.Replace(rolloutDoc, "hold: 1s", fmt.Sprintf("hold: %s", hold), 1))
	a := startNode(t, e.Endpoint, prefix, "a", nodeOpts{now: skewed(time.Hour)})
	waitFor(t, 10*time.Second, "a to lead", a.ro.Leading)
	b := startNode(t, e.Endpoint, prefix, "b", nodeOpts{})
	cc := startNode(t, e.Endpoint, prefix, "c", nodeOpts{now: skewed(-30 * time.Minute)})
	feed(t, a, b, cc)

	started := time.Now()
	b.act(rollout.Start, "op")
	waitAll(t, "step 2", func(s rollout.Status) bool { return s.Step == 2 }, b)
	if took := time.Since(started); took < hold {
		t.Fatalf("step 2 %v after the start: the %v hold was cut short", took, hold)
	}
	b.act(rollout.Pause, "op")
	paused := time.Now()
	resumed := time.Now()
	cc.act(rollout.Resume, "op")
	waitAll(t, "step 3", func(s rollout.Status) bool { return s.Step == 3 }, b)
	// At most paused-started-hold of the step was held before the pause
	// (step 2 began no sooner than hold after the start).
	if took, atLeast := time.Since(resumed), hold-(paused.Sub(started)-hold); took < atLeast {
		t.Fatalf("step 3 %v after the resume: want at least %v, the rest of the hold", took, atLeast)
	}
	moves := 0
	for _, tr := range b.status().History {
		if tr.Actor == rollout.Actor {
			moves++
			if tr.Node != "a" {
				t.Fatalf("move %+v by %q, want a", tr, tr.Node)
			}
		}
	}
	if moves != 2 {
		t.Fatalf("%d guard moves, want 2", moves)
	}
}
