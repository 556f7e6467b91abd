package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// revStates is a StateStore with revisions, as etcd keeps them: a save
// succeeds only on the revision it was derived from. before, when set,
// runs once before the first save it matches (a competing write).
type revStates struct {
	mu     sync.Mutex
	rev    int64
	states map[string]rollout.State
	before func(rollout.State) bool
	saves  int
}

func newRevStates() *revStates { return &revStates{states: map[string]rollout.State{}} }

func (r *revStates) Load(context.Context) (map[string]rollout.State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.states), nil
}

func (r *revStates) Save(_ context.Context, s rollout.State) (rollout.State, error) {
	if r.before != nil && r.before(s) {
		r.before = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.saves++
	if cur := r.states[s.Service]; cur.Revision != s.Revision {
		return rollout.State{}, fmt.Errorf("at %d, not %d: %w", cur.Revision, s.Revision, rollout.ErrStale)
	}
	r.rev++
	s.Revision = r.rev
	s.History = slices.Clone(s.History)
	r.states[s.Service] = s
	return s, nil
}

// put stores s as another replica would, and returns it as stored.
func (r *revStates) put(s rollout.State) rollout.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rev++
	s.Revision = r.rev
	r.states[s.Service] = s
	return s
}

// switchElector leads while lead is set.
type switchElector struct{ lead atomic.Bool }

func (e *switchElector) Lead(ctx context.Context) (context.Context, func(), bool) {
	return ctx, func() {}, e.lead.Load()
}
func (e *switchElector) Leader() string { return "elsewhere" }

func sharedBed(t *testing.T, states *revStates, el rollout.Elector) *bed {
	return newBedWith(t, "", nil, func(o *rollout.Options) {
		o.States, o.Elector, o.NodeID = states, el, "node-1"
	})
}

// A replica that does not lead samples its own signals every tick, but
// never judges nor moves; the moment it leads, it judges on the window it
// has been watching all along.
func TestFollowerSamplesButDoesNotDecide(t *testing.T) {
	states, el := newRevStates(), &switchElector{}
	el.lead.Store(true)
	b := sharedBed(t, states, el)
	b.act(rollout.Start)
	el.lead.Store(false)
	failing := traffic{stable: 30, canary: 10, canaryErrs: 5}
	b.run(5*time.Second, failing, nil)
	s := b.status()
	if s.State != rollout.Progressing || s.Verdict != nil || s.Leader != "elsewhere" || s.Node != "node-1" {
		t.Fatalf("a follower: %s, verdict %+v, leader %q, node %q: want it untouched", s.State, s.Verdict, s.Leader, s.Node)
	}
	el.lead.Store(true)
	b.run(tick, failing, nil)
	s = b.status()
	last := s.History[len(s.History)-1]
	if s.State != rollout.RolledBack || last.Node != "node-1" || last.Verdict.Canary.Requests < 80 {
		t.Fatalf("leading: %s by %q on %+v: want rolled back at once on the window sampled as a follower", s.State, last.Node, last.Verdict)
	}
}

// Observe takes the newest state only: an older revision (a watch event
// behind this replica's own write) is ignored; a newer one, another
// replica's action, is followed and its transition counted; a deleted
// state leaves the service idle, its weights no longer owned.
func TestObserveKeepsTheNewest(t *testing.T) {
	states, el := newRevStates(), &switchElector{}
	el.lead.Store(true)
	b := sharedBed(t, states, el)
	b.act(rollout.Start)
	paused := b.act(rollout.Pause)
	stored := mustLoad(t, states)["api"]

	older := stored
	older.Revision, older.Phase = stored.Revision-1, rollout.Progressing
	b.m.Observe(older)
	if s := b.status(); s.State != rollout.Paused || s.Revision != paused.Revision {
		t.Fatalf("after an older revision: %s rev %d, want paused rev %d", s.State, s.Revision, paused.Revision)
	}

	next, err := rollout.Act(stored, paused.Config, "v1", rollout.Resume, b.clock.Now().Add(time.Second), "op-2")
	if err != nil {
		t.Fatal(err)
	}
	next.History[len(next.History)-1].Node = "node-2"
	next = states.put(next)
	b.m.Observe(next)
	s := b.status()
	if last := s.History[len(s.History)-1]; s.State != rollout.Progressing || s.Revision != next.Revision || !s.OwnsWeights || last.Node != "node-2" {
		t.Fatalf("after another replica's resume: %+v", s)
	}
	if got := transitionsTo(t, b.m, "progressing"); got != 2 {
		t.Fatalf("transitions to progressing counted %v, want 2 (the start, the followed resume)", got)
	}

	b.m.Observe(rollout.State{Service: "api", Phase: rollout.Idle})
	if s := b.status(); s.State != rollout.Idle {
		t.Fatalf("after the state was deleted: %s", s.State)
	}
	if _, owns := b.m.Owns("api"); owns {
		t.Fatal("a deleted rollout still owns the weights")
	}
}

// An operator's action computed on a state another replica has since
// replaced is refused by the store and computed again on the stored
// state: a pause racing the leader's step pauses the new step.
func TestActComputedAgainOnTheStoredState(t *testing.T) {
	states, el := newRevStates(), &switchElector{}
	el.lead.Store(true)
	b := sharedBed(t, states, el)
	started := b.act(rollout.Start)
	el.lead.Store(false)
	states.before = func(s rollout.State) bool {
		if s.Phase != rollout.Paused {
			return false
		}
		cur := mustLoad(t, states)["api"]
		next, changed := rollout.Advance(cur, started.Config, rollout.Verdict{Result: rollout.Healthy}, 2*time.Second, cur.Since.Add(11*time.Second))
		if !changed || next.Step != 2 {
			t.Fatalf("the competing step: %+v", next)
		}
		states.put(next)
		return true
	}
	s := b.act(rollout.Pause)
	if s.State != rollout.Paused || s.Step != 2 || b.canaryShare() != "25" {
		t.Fatalf("pause racing a step: %s step %d at %s%%, want paused at step 2 (25%%)", s.State, s.Step, b.canaryShare())
	}
	if states.saves < 3 { // the refused pause, the pause, its applying mark cleared
		t.Fatalf("%d saves: the race did not happen", states.saves)
	}
}

// leadershipLost leads with a context already cancelled: the leadership
// ended while the tick ran.
type leadershipLost struct{}

func (leadershipLost) Lead(ctx context.Context) (context.Context, func(), bool) {
	lctx, cancel := context.WithCancel(ctx)
	cancel()
	return lctx, func() {}, true
}
func (leadershipLost) Leader() string { return "" }

// A tick whose leadership is lost decides nothing, however failing the
// canary: the loop stops at once.
func TestLostLeadershipDecidesNothing(t *testing.T) {
	states := newRevStates()
	el := &switchElector{}
	el.lead.Store(true)
	b := sharedBed(t, states, el)
	b.act(rollout.Start)
	lost := newBedWith(t, "", b.clock, func(o *rollout.Options) { o.States, o.Elector = states, leadershipLost{} })
	lost.run(5*time.Second, traffic{stable: 30, canary: 10, canaryErrs: 10}, nil)
	if s := lost.status(); s.State != rollout.Progressing || s.Verdict != nil {
		t.Fatalf("on a lost leadership: %s, verdict %+v; want nothing decided", s.State, s.Verdict)
	}
}

func mustLoad(t *testing.T, s rollout.StateStore) map[string]rollout.State {
	t.Helper()
	m, err := s.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// transitionsTo reads splitter_rollout_transitions_total{service="api",to}.
func transitionsTo(t *testing.T, m *rollout.Manager, to string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "splitter_rollout_transitions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "to" && l.GetValue() == to {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no transitions_total{to=%q}", to)
	return 0
}

// recordingMutator is a StateMutator over the bed's store that records the
// weights it was asked to write.
type recordingMutator struct {
	b     *bed
	mu    sync.Mutex
	asked []string
}

func (r *recordingMutator) SetWeights(ctx context.Context, service string, w split.Weights, actor string) (store.Change, error) {
	return r.b.store.SetWeights(ctx, service, w, actor)
}

func (r *recordingMutator) SetStateWeights(ctx context.Context, st rollout.State, w split.Weights) (store.Change, error) {
	r.mu.Lock()
	r.asked = append(r.asked, fmt.Sprintf("%s %s", st.Phase, w))
	r.mu.Unlock()
	return r.b.store.SetWeights(ctx, st.Service, w, rollout.Actor)
}

// With a shared store, this replica's snapshot may lag behind another
// replica's weights: the store, not the snapshot, judges whether a state's
// weights are in force. Here the snapshot already shows the abort's
// weights (canary 0) while the store may still hold the step's: the abort
// asks the store anyway.
func TestSharedStoreJudgesWhatIsInForce(t *testing.T) {
	states, el := newRevStates(), &switchElector{}
	el.lead.Store(true)
	rec := &recordingMutator{}
	b := newBedWith(t, "", nil, func(o *rollout.Options) { o.States, o.Elector, o.Mutator = states, el, rec })
	rec.b = b
	b.act(rollout.Start)
	if _, err := b.store.SetWeights(t.Context(), "api", mustWeightsOf(t, `{"v1": 100, "v2": 0}`), "lagging"); err != nil {
		t.Fatal(err)
	}
	b.act(rollout.Abort)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.asked) != 2 || rec.asked[1] != "aborted v1: 100, v2: 0" {
		t.Fatalf("asked the store for %q: want the start's and the abort's weights", rec.asked)
	}
}

func mustWeightsOf(t *testing.T, s string) split.Weights {
	t.Helper()
	w, err := split.ParseWeightsJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// staleMutator refuses every state's weights: the state moved on after it
// was saved (another replica applied it and cleared its mark).
type staleMutator struct{ recordingMutator }

func (s *staleMutator) SetStateWeights(context.Context, rollout.State, split.Weights) (store.Change, error) {
	return store.Change{}, fmt.Errorf("weights not written: %w", rollout.ErrStale)
}

// An action whose state was saved happened, even when its weights are
// then refused because the state moved on: it is answered, not computed
// again on the newer state (which would refuse it: "cannot abort a
// rollout that is aborted").
func TestActSavedThenOvertakenIsDone(t *testing.T) {
	states, el := newRevStates(), &switchElector{}
	el.lead.Store(true)
	mut := &staleMutator{}
	b := newBedWith(t, "", nil, func(o *rollout.Options) { o.States, o.Elector, o.Mutator = states, el, mut })
	mut.b = b
	if s := b.act(rollout.Start); s.State != rollout.Progressing {
		t.Fatalf("start: %s", s.State)
	}
	if s := b.act(rollout.Abort); s.State != rollout.Aborted {
		t.Fatalf("abort: %s", s.State)
	}
}

// A state written under a configuration revision this replica has not
// applied yet (its rollout moves v3, which the configuration in force
// here does not have) is neither judged nor aborted, and an action on it
// answers "unavailable" rather than being computed on the older
// configuration.
func TestStateOfANewerConfigurationWaits(t *testing.T) {
	states, el := newRevStates(), &switchElector{}
	el.lead.Store(true)
	b := sharedBed(t, states, el)
	newer := states.put(rollout.State{
		Service: "api", Phase: rollout.Progressing, Canary: "v3", Stable: "v1", Step: 1, Weight: 500,
		Since: b.clock.Now(), StartedAt: b.clock.Now(), ConfigRevision: 9, History: []rollout.Transition{},
	})
	b.m.Observe(newer)
	b.run(5*time.Second, traffic{stable: 30, canary: 10, canaryErrs: 10}, nil)
	s := b.status()
	if s.State != rollout.Progressing || s.Revision != newer.Revision || s.Verdict != nil {
		t.Fatalf("a state of a newer configuration: %s rev %d, verdict %+v; want it left alone", s.State, s.Revision, s.Verdict)
	}
	if _, err := b.m.Act(t.Context(), "api", rollout.Pause, "op"); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "revision 9") {
		t.Fatalf("pause: %v; want unavailable until this replica has applied configuration revision 9", err)
	}
	if !strings.Contains(b.logs.String(), "state_config_revision=9") {
		t.Errorf("the wait is not logged:\n%s", b.logs.String())
	}
}

// The hold is measured on one clock: a rollout started on a replica whose
// clock is an hour behind this one is held here for the hold from when
// this replica saw it start, not judged an hour old. A pause made there
// later is counted as a transition although its time, on that clock,
// is before the step this replica made.
func TestHoldMeasuredOnOneClock(t *testing.T) {
	states, el := newRevStates(), &switchElector{}
	el.lead.Store(true)
	b := sharedBed(t, states, el)
	cfg, err := b.m.Status("api")
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := func() time.Time { return b.clock.Now().Add(-time.Hour) }
	actThere := func(st rollout.State, a rollout.Action) rollout.State {
		t.Helper()
		next, err := rollout.Act(st, cfg.Config, "v1", a, elsewhere(), "op")
		if err != nil {
			t.Fatal(err)
		}
		next.Clock, next.History[len(next.History)-1].Node = "node-2", "node-2"
		next = states.put(next)
		b.m.Observe(next)
		return next
	}
	actThere(rollout.State{Service: "api", Phase: rollout.Idle}, rollout.Start)
	took := b.run(time.Minute, healthy, func(s rollout.Status) bool { return s.Step == 2 })
	if took < 10*time.Second {
		t.Fatalf("step 2 %v after a start on a clock an hour behind: the 10s hold was cut short", took)
	}
	actThere(mustLoad(t, states)["api"], rollout.Pause)
	if s := b.status(); s.State != rollout.Paused || transitionsTo(t, b.m, "paused") != 1 {
		t.Fatalf("after node-2's pause: %s, %v pauses counted; want it followed and counted", s.State, transitionsTo(t, b.m, "paused"))
	}
}
