package rollout_test

import (
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
)

// A state the previous release wrote (fleet mode, during a rolling
// upgrade or after a rollback) has no clock and no held_before: its since
// is the step's start pushed later by the time spent paused. After a
// resume there, since is 7s before the resume on that replica's clock (an
// hour behind this one): this replica, leading, carries those 7s (read on
// that one clock, as the resume's time minus since) and adds the time
// since it saw the state, so the 10s hold ends 3s later, not 10s.
func TestHoldOfAStateThePreviousReleaseWrote(t *testing.T) {
	states, el := newRevStates(), &switchElector{}
	el.lead.Store(true)
	b := sharedBed(t, states, el)
	there := b.clock.Now().Add(-time.Hour)
	st := rollout.State{
		Service: "api", Phase: rollout.Progressing, Canary: "v2", Stable: "v1", Step: 1, Weight: 500,
		Since: there.Add(-7 * time.Second), StartedAt: there.Add(-30 * time.Second),
		History: []rollout.Transition{
			{At: there.Add(-30 * time.Second), From: rollout.Idle, To: rollout.Progressing, Step: 1, Weight: 500, Actor: "op", Node: "old-a", Reason: "started"},
			{At: there.Add(-23 * time.Second), From: rollout.Progressing, To: rollout.Paused, Step: 1, Weight: 500, Actor: "op", Node: "old-a", Reason: "paused"},
			{At: there, From: rollout.Paused, To: rollout.Progressing, Step: 1, Weight: 500, Actor: "op", Node: "old-a", Reason: "resumed"},
		},
	}
	b.m.Observe(states.put(st))
	if s := b.status(); s.Held.D() != 7*time.Second {
		t.Fatalf("held %v when seen, want the 7s held before the pause: %+v", s.Held.D(), s)
	}
	took := b.run(time.Minute, healthy, func(s rollout.Status) bool { return s.Step == 2 })
	if took >= 10*time.Second || took < 3*time.Second {
		t.Fatalf("step 2 %v after the state was seen, want the 3s left of the 10s hold (and the window)", took)
	}
}
