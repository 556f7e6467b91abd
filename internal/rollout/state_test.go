package rollout_test

import (
	"errors"
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
