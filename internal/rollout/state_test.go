package rollout_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/split"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }

// testRollout: steps 5, 25, 50, 100; hold 60s; window 10s.
func testRollout() *split.Rollout {
	r := split.DefaultRollout()
	r.Canary = "v2"
	return &r
}

func verdict(res rollout.Result) rollout.Verdict {
	return rollout.Verdict{Result: res, Reason: string(res)}
}

func TestActions(t *testing.T) {
	r := testRollout()
	idle := rollout.State{Service: "api", Phase: rollout.Idle}
	started, err := rollout.Act(idle, r, "v1", rollout.Start, t0, "token:ab")
	if err != nil {
		t.Fatal(err)
	}
	if started.Phase != rollout.Progressing || started.Step != 1 || started.Weight != 500 || !started.Since.Equal(t0) ||
		started.Canary != "v2" || started.Stable != "v1" {
		t.Fatalf("start: %+v", started)
	}
	tr := started.History[0]
	if tr.From != rollout.Idle || tr.To != rollout.Progressing || tr.Actor != "token:ab" {
		t.Fatalf("start transition: %+v", tr)
	}

	tests := []struct {
		name    string
		from    rollout.State
		action  rollout.Action
		want    rollout.Phase
		weight  split.Percent
		wantErr error
	}{
		{"start again while progressing", started, rollout.Start, "", 0, rollout.ErrConflict},
		{"resume while progressing", started, rollout.Resume, "", 0, rollout.ErrConflict},
		{"pause", started, rollout.Pause, rollout.Paused, 500, nil},
		{"abort: canary to 0", started, rollout.Abort, rollout.Aborted, 0, nil},
		{"promote by hand: canary to 100", started, rollout.Promote, rollout.Promoted, 10000, nil},
		{"pause an idle rollout", idle, rollout.Pause, "", 0, rollout.ErrConflict},
		{"abort an idle rollout", idle, rollout.Abort, "", 0, rollout.ErrConflict},
		{"promote an idle rollout", idle, rollout.Promote, "", 0, rollout.ErrConflict},
		{"unknown action", started, "restart", "", 0, rollout.ErrUnknownAction},
		{"start a rolled-back rollout again", rollout.State{Phase: rollout.RolledBack, Step: 2}, rollout.Start, rollout.Progressing, 500, nil},
		{"start a promoted rollout again", rollout.State{Phase: rollout.Promoted, Step: 4, Weight: 10000}, rollout.Start, rollout.Progressing, 500, nil},
		{"resume an aborted rollout", rollout.State{Phase: rollout.Aborted}, rollout.Resume, "", 0, rollout.ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rollout.Act(tc.from, r, "v1", tc.action, t0.Add(time.Minute), "op")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Phase != tc.want || got.Weight != tc.weight {
				t.Fatalf("%s -> %s at %s, want %s at %s", tc.from.Phase, got.Phase, split.FormatPercent(int(got.Weight)), tc.want, split.FormatPercent(int(tc.weight)))
			}
			if last := got.History[len(got.History)-1]; last.To != tc.want || last.Actor != "op" {
				t.Fatalf("transition %+v", last)
			}
		})
	}
}

// TestHoldIsHonest: the hold counts from the step's start, the time spent
// paused does not count, and nothing moves before the hold is over.
func TestHoldIsHonest(t *testing.T) {
	r := testRollout() // hold 60s
	st, _ := rollout.Act(rollout.State{Service: "api"}, r, "v1", rollout.Start, t0, "op")
	full := r.Guard.Window.D()

	if _, moved := rollout.Advance(st, r, verdict(rollout.Healthy), full, t0.Add(sec(59))); moved {
		t.Fatal("moved before the hold was over")
	}
	paused, _ := rollout.Act(st, r, "v1", rollout.Pause, t0.Add(sec(30)), "op")
	if h := paused.Held(t0.Add(time.Hour)); h != sec(30) {
		t.Fatalf("held while paused: %v, want 30s (the clock stops)", h)
	}
	if _, moved := rollout.Advance(paused, r, verdict(rollout.Healthy), full, t0.Add(time.Hour)); moved {
		t.Fatal("a paused rollout stepped")
	}
	resumed, _ := rollout.Act(paused, r, "v1", rollout.Resume, t0.Add(sec(100)), "op")
	if h := resumed.Held(t0.Add(sec(100))); h != sec(30) {
		t.Fatalf("held after resume: %v, want 30s", h)
	}
	if _, moved := rollout.Advance(resumed, r, verdict(rollout.Healthy), full, t0.Add(sec(129))); moved {
		t.Fatal("moved after 59s of holding (30 before the pause, 29 after)")
	}
	next, moved := rollout.Advance(resumed, r, verdict(rollout.Healthy), full, t0.Add(sec(130)))
	if !moved || next.Step != 2 || next.Weight != 2500 || !next.Since.Equal(t0.Add(sec(130))) {
		t.Fatalf("after 60s held: moved %v to %+v, want step 2 at 25 since now", moved, next)
	}
}

func TestAdvance(t *testing.T) {
	r := testRollout()
	at := func(step int) rollout.State {
		st, _ := rollout.Act(rollout.State{Service: "api"}, r, "v1", rollout.Start, t0, "op")
		st.Step, st.Weight = step, split.Percent(r.Steps[step-1])
		return st
	}
	paused, _ := rollout.Act(at(2), r, "v1", rollout.Pause, t0.Add(sec(1)), "op")
	late := t0.Add(time.Hour)
	full := r.Guard.Window.D()
	tests := []struct {
		name    string
		st      rollout.State
		v       rollout.Result
		covered time.Duration
		now     time.Time
		moved   bool
		phase   rollout.Phase
		step    int
		weight  split.Percent
	}{
		{"healthy after the hold: next step", at(1), rollout.Healthy, full, late, true, rollout.Progressing, 2, 2500},
		{"healthy at the step before 100: promoted", at(3), rollout.Healthy, full, late, true, rollout.Promoted, 4, 10000},
		{"inconclusive never steps", at(1), rollout.Inconclusive, full, late, false, rollout.Progressing, 1, 500},
		{"healthy but the window is not yet watched in full", at(1), rollout.Healthy, full - time.Millisecond, late, false, rollout.Progressing, 1, 500},
		{"failing rolls back at once, before the hold", at(2), rollout.Failing, time.Second, t0.Add(time.Second), true, rollout.RolledBack, 2, 0},
		{"failing rolls back a paused rollout", paused, rollout.Failing, full, late, true, rollout.RolledBack, 2, 0},
		{"healthy does not move a paused rollout", paused, rollout.Healthy, full, late, false, rollout.Paused, 2, 2500},
		{"a rolled-back rollout stays at 0", rollout.State{Phase: rollout.RolledBack, Step: 2}, rollout.Healthy, full, late, false, rollout.RolledBack, 2, 0},
		{"steps edited below the weight in force: promoted", rollout.State{Phase: rollout.Progressing, Step: 9, Weight: 10000, Since: t0}, rollout.Healthy, full, late, true, rollout.Promoted, 4, 10000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := verdict(tc.v)
			got, moved := rollout.Advance(tc.st, r, v, tc.covered, tc.now)
			if moved != tc.moved || got.Phase != tc.phase || got.Step != tc.step || got.Weight != tc.weight {
				t.Fatalf("moved %v to %s step %d at %s; want moved %v to %s step %d at %s",
					moved, got.Phase, got.Step, split.FormatPercent(int(got.Weight)), tc.moved, tc.phase, tc.step, split.FormatPercent(int(tc.weight)))
			}
			if moved {
				last := got.History[len(got.History)-1]
				if last.Actor != rollout.Actor || last.Verdict == nil || last.Verdict.Result != tc.v {
					t.Fatalf("transition %+v: want actor rollout with the verdict behind it", last)
				}
			}
		})
	}
}

func TestHistoryIsBounded(t *testing.T) {
	r := testRollout()
	st := rollout.State{Service: "api"}
	for i := range rollout.MaxHistory + 5 {
		var err error
		st, err = rollout.Act(st, r, "v1", []rollout.Action{rollout.Start, rollout.Abort}[i%2], t0.Add(time.Duration(i)*time.Second), "op")
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(st.History) != rollout.MaxHistory || !st.History[len(st.History)-1].At.Equal(t0.Add(sec(rollout.MaxHistory+4))) {
		t.Fatalf("history: %d entries, last at %v", len(st.History), st.History[len(st.History)-1].At)
	}
}

// TestWaitingForHooks: with hooks before the next step, a rollout due to
// step waits instead (the hold still counting), the guard still rolls it
// back, the operator's actions apply as to a progressing one, and Proceed
// takes the step once every hook answered, on a healthy verdict over a
// full window (the start's pre_step hooks need none).
func TestWaitingForHooks(t *testing.T) {
	r := testRollout()
	r.Webhooks = []split.Webhook{
		{Name: "approve", Type: split.HookConfirmStep},
		{Name: "release", Type: split.HookConfirmPromotion},
		{Name: "smoke", Type: split.HookPreStep},
	}
	if names := func(hs []split.Webhook) (out []string) {
		for _, h := range hs {
			out = append(out, h.Name)
		}
		return out
	}; fmt.Sprint(names(rollout.Gates(r, 1)), names(rollout.Gates(r, 2)), names(rollout.Gates(r, 4))) != "[smoke] [approve smoke] [approve release smoke]" {
		t.Fatalf("gates: %v %v %v", names(rollout.Gates(r, 1)), names(rollout.Gates(r, 2)), names(rollout.Gates(r, 4)))
	}
	full := r.Guard.Window.D()
	started, _ := rollout.Act(rollout.State{Service: "api"}, r, "v1", rollout.Start, t0, "op")
	if started.Phase != rollout.Waiting || started.Step != 0 || started.Weight != 0 || started.Wait == nil || started.Wait.Step != 1 || started.Wait.Weight != 500 {
		t.Fatalf("start with a pre_step hook: %+v", started)
	}
	first, moved := rollout.Proceed(started, r, rollout.Verdict{}, 0, t0.Add(sec(1)), "hooks smoke answered 2xx")
	if !moved || first.Phase != rollout.Progressing || first.Step != 1 || first.Weight != 500 || first.Wait != nil {
		t.Fatalf("the first step needs no evidence: %+v", first)
	}
	waiting, moved := rollout.Advance(first, r, verdict(rollout.Healthy), full, t0.Add(sec(61)))
	if !moved || waiting.Phase != rollout.Waiting || waiting.Step != 1 || waiting.Weight != 500 || waiting.Wait.Step != 2 ||
		waiting.Held(t0.Add(sec(70))) != sec(69) || !strings.Contains(waiting.History[len(waiting.History)-1].Reason, "waiting for approve (confirm_step), smoke (pre_step) before step 2 (25%)") {
		t.Fatalf("due for step 2: %+v (held %v)", waiting, waiting.Held(t0.Add(sec(70))))
	}
	if !waiting.Phase.Owns() {
		t.Error("a waiting rollout must own the weights")
	}
	for _, c := range []struct {
		name    string
		v       rollout.Result
		covered time.Duration
		moved   bool
		phase   rollout.Phase
	}{
		{"healthy over a full window: next step", rollout.Healthy, full, true, rollout.Progressing},
		{"inconclusive: still waiting", rollout.Inconclusive, full, false, rollout.Waiting},
		{"healthy, window not full: still waiting", rollout.Healthy, full - time.Millisecond, false, rollout.Waiting},
	} {
		got, moved := rollout.Proceed(waiting, r, verdict(c.v), c.covered, t0.Add(sec(80)), "hooks approve, smoke answered 2xx")
		if moved != c.moved || got.Phase != c.phase || (moved && (got.Step != 2 || got.Weight != 2500)) {
			t.Errorf("%s: moved %v to %s step %d", c.name, moved, got.Phase, got.Step)
		}
	}
	if rb, moved := rollout.Advance(waiting, r, verdict(rollout.Failing), full, t0.Add(sec(80))); !moved || rb.Phase != rollout.RolledBack || rb.Weight != 0 {
		t.Errorf("failing while waiting: %+v", rb)
	}
	if _, moved := rollout.Advance(waiting, r, verdict(rollout.Healthy), full, t0.Add(sec(80))); moved {
		t.Error("Advance moved a waiting rollout on a healthy verdict (Proceed's job)")
	}
	for _, a := range []rollout.Action{rollout.Pause, rollout.Abort, rollout.Promote} {
		if _, err := rollout.Act(waiting, r, "v1", a, t0.Add(sec(80)), "op"); err != nil {
			t.Errorf("%s while waiting: %v", a, err)
		}
	}
	for _, a := range []rollout.Action{rollout.Start, rollout.Resume} {
		if _, err := rollout.Act(waiting, r, "v1", a, t0.Add(sec(80)), "op"); !errors.Is(err, rollout.ErrConflict) {
			t.Errorf("%s while waiting: %v, want a conflict", a, err)
		}
	}
	paused, _ := rollout.Act(waiting, r, "v1", rollout.Pause, t0.Add(sec(80)), "op")
	resumed, _ := rollout.Act(paused, r, "v1", rollout.Resume, t0.Add(sec(90)), "op")
	if again, moved := rollout.Advance(resumed, r, verdict(rollout.Healthy), full, t0.Add(sec(90))); !moved || again.Phase != rollout.Waiting {
		t.Errorf("resumed after the hold: %s, want waiting again (the hooks are asked again)", again.Phase)
	}
	last := waiting
	last.Step, last.Weight = 3, 5000
	if p, _ := rollout.Proceed(last, r, verdict(rollout.Healthy), full, t0.Add(sec(80)), "hooks approve, release, smoke answered 2xx"); p.Phase != rollout.Promoted || p.Weight != 10000 {
		t.Errorf("the last step: %s at %v", p.Phase, p.Weight)
	}
}

// With a shadow step, the first step's pre_step hooks are asked when the
// shadow step is done: the rollout waits in shadow (its mirror stays),
// then leaves it for the first step.
func TestShadowThenPreStep(t *testing.T) {
	r := testRollout()
	sh := split.DefaultShadow()
	r.Shadow = &sh
	r.Webhooks = []split.Webhook{{Name: "smoke", Type: split.HookPreStep}}
	full := r.Guard.Window.D()
	st, _ := rollout.Act(rollout.State{Service: "api"}, r, "v1", rollout.Start, t0, "op")
	if st.Phase != rollout.Progressing || !st.Shadow || st.Step != 0 {
		t.Fatalf("start: %+v", st)
	}
	w, moved := rollout.Advance(st, r, verdict(rollout.Healthy), full, t0.Add(sh.Hold.D()))
	if !moved || w.Phase != rollout.Waiting || !w.Shadow || w.Wait == nil || w.Wait.Step != 1 {
		t.Fatalf("after the shadow hold: %+v", w)
	}
	first, moved := rollout.Proceed(w, r, verdict(rollout.Healthy), full, t0.Add(sh.Hold.D()+sec(1)), "hooks smoke answered 2xx")
	if !moved || first.Phase != rollout.Progressing || first.Shadow || first.Step != 1 || first.Weight != 500 {
		t.Fatalf("after the hook: %+v", first)
	}
	r.Guard.FailingFor = split.Duration(sec(3))
	v := verdict(rollout.Failing)
	v.FailingFor = split.Duration(sec(1))
	if _, moved := rollout.Advance(st, r, v, full, t0.Add(sec(5))); moved {
		t.Fatal("failing_for does not hold in shadow")
	}
}
