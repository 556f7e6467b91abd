package rollout

import (
	"errors"
	"fmt"
	"time"

	"github.com/trafficsplit/splitter/split"
)

// Phase is where a rollout is (docs/rollouts.md, "States").
type Phase string

// The phases.
const (
	Idle        Phase = "idle"        // never started
	Progressing Phase = "progressing" // at a step, moving up while healthy
	Paused      Phase = "paused"      // at a step, not moving; the guard still rolls back
	Waiting     Phase = "waiting"     // due for the next step, until its hooks answer 2xx (State.Wait); the guard still rolls back
	Promoted    Phase = "promoted"    // the last step (100 %) was reached
	RolledBack  Phase = "rolled_back" // the guard failed the canary: it is at 0 until started again
	Aborted     Phase = "aborted"     // an operator (or a configuration change) stopped it: canary at 0
)

// Phases is the closed set of phases, in a fixed order.
func Phases() []Phase {
	return []Phase{Idle, Progressing, Paused, Waiting, Promoted, RolledBack, Aborted}
}

// Owns reports whether a rollout in phase p decides the service's weights,
// so that an admin weights or canary call must be refused. A paused
// rollout does not: pausing is how an operator takes the weights by hand
// (resume puts the step's weight back).
// A waiting rollout does: it is due to move on.
func (p Phase) Owns() bool { return p == Progressing || p == Waiting }

// active reports whether the guard watches a rollout in phase p.
func (p Phase) active() bool { return p == Progressing || p == Paused || p == Waiting }

// running reports whether a rollout in phase p holds its step with the
// hold clock running.
func (p Phase) running() bool { return p == Progressing || p == Waiting }

// Action is an operator's command.
type Action string

// The actions of POST /v1/services/{name}/rollout.
const (
	Start   Action = "start"
	Pause   Action = "pause"
	Resume  Action = "resume"
	Abort   Action = "abort"
	Promote Action = "promote"
)

// Actions is the closed set of actions.
func Actions() []Action { return []Action{Start, Pause, Resume, Abort, Promote} }

// Errors of Act; the admin API maps them to status codes.
var (
	// ErrNoRollout: the service has no rollout block.
	ErrNoRollout = errors.New("the service has no rollout configured")
	// ErrConflict: the action does not apply in the rollout's phase, or the
	// rollout cannot run (no signal source).
	ErrConflict = errors.New("conflict")
	// ErrUnknownAction: not one of Actions.
	ErrUnknownAction = errors.New("unknown action")
)

// MaxHistory bounds the transitions a state keeps (the oldest go first).
const MaxHistory = 32

// State is one service's rollout, as it is persisted. The hold is an
// instant and a duration, never a countdown, so that a restart resumes
// with honest hold time: Since is when the hold clock last started (the
// step's start, or the last resume; the pause while paused), on the clock
// of the replica named in Clock, and HeldBefore what had been held before
// it. Instants are read only on the clock that wrote them: another
// replica measures the time since Since from when it saw the state
// (Manager), never by comparing two clocks.
type State struct {
	Service string `json:"service"`
	Phase   Phase  `json:"phase"`
	// Canary and Stable are the versions the rollout moves between (as
	// configured when it started).
	Canary string `json:"canary,omitempty"`
	Stable string `json:"stable,omitempty"`
	// Step is the number of the step in force, 1..len(steps); 0 before the
	// first.
	Step int `json:"step"`
	// Weight is the canary's share the rollout set, in basis points.
	Weight split.Percent `json:"weight"`
	// Shadow: the rollout is at its dark step (step 0, weight 0): the
	// canary serves no user and a share of the requests is mirrored to it
	// (shadow.go).
	Shadow   bool      `json:"shadow,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	PausedAt time.Time `json:"paused_at,omitzero"`
	// HeldBefore is how long the step had been held before Since (pauses
	// excluded): 0 at a step's start, the hold so far at a pause or a
	// resume.
	HeldBefore split.Duration `json:"held_before,omitempty"`
	// Clock names the replica whose clock wrote Since and PausedAt (its
	// node id; "" in file mode, where there is one).
	Clock string `json:"clock,omitempty"`
	// StartedAt is when the run in force was started (see Started).
	StartedAt time.Time `json:"started_at,omitzero"`
	// ConfigRevision is the revision of the configuration the state was
	// computed under (fleet mode: etcd's revision of the document, see
	// store.Snapshot.ConfigRevision; 0 in file mode). A replica that has
	// not decided on that configuration yet neither judges nor acts on
	// the state: against an older configuration it could look like one
	// the configuration no longer allows.
	ConfigRevision int64 `json:"config_revision,omitempty"`
	// Applying is set while the weights of a transition are being applied:
	// a state read back with it set (a crash in between) has its weights
	// applied again.
	Applying bool `json:"applying,omitempty"`
	// Wait is where a waiting rollout goes once its hooks answer 2xx.
	Wait    *Wait        `json:"wait,omitempty"`
	History []Transition `json:"history"`
	// Revision is the stored state's revision where the StateStore has
	// them (etcd: the key's mod revision), 0 otherwise; not part of the
	// stored document.
	Revision int64 `json:"-"`
}

// Transition is one change of phase or step, with the numbers behind it.
type Transition struct {
	At     time.Time     `json:"at"`
	From   Phase         `json:"from"`
	To     Phase         `json:"to"`
	Step   int           `json:"step"`
	Weight split.Percent `json:"weight"`
	// Shadow: the transition leads to (or stays at) the shadow step.
	Shadow bool   `json:"shadow,omitempty"`
	Actor  string `json:"actor"` // "rollout" for the guard, else the admin caller
	// Node is the replica that made the transition (etcd mode: the leader
	// for the guard's moves, the replica that took the call for an
	// operator's); empty in file mode.
	Node    string   `json:"node,omitempty"`
	Reason  string   `json:"reason"`
	Verdict *Verdict `json:"verdict,omitempty"`
}

// Wait is the step a waiting rollout moves to once every hook before it
// (Gates) has answered 2xx.
type Wait struct {
	Step   int           `json:"step"`
	Weight split.Percent `json:"weight"`
}

// Held is how long the step in force has been held, pauses excluded, at
// now on the clock of s.Clock.
func (s State) Held(now time.Time) time.Duration {
	switch s.Phase {
	case Progressing, Waiting:
		return s.HeldBefore.D() + max(now.Sub(s.Since), 0)
	case Paused:
		return s.HeldBefore.D() + max(s.PausedAt.Sub(s.Since), 0)
	}
	return 0
}

// Started is when the run in force began: the instant of the last start
// from a state the guard does not watch (zero before any). Evidence is
// kept per run, so counts of an earlier run never judge a new one. It is
// in UTC without a monotonic reading, so that it compares equal however
// the state travelled (memory, a file, etcd).
func (s State) Started() time.Time {
	if !s.StartedAt.IsZero() {
		return s.StartedAt.UTC().Round(0)
	}
	for i := len(s.History) - 1; i >= 0; i-- {
		if tr := s.History[i]; tr.To == Progressing && !tr.From.active() {
			return tr.At.UTC().Round(0)
		}
	}
	return time.Time{}
}

// to returns s moved to phase at step with the canary at weight, the
// transition recorded. The result is not at the shadow step (toShadow is).
func (s State) to(phase Phase, step, weight int, now time.Time, actor, reason string, v *Verdict) State {
	next := s
	next.Phase, next.Step, next.Weight, next.Shadow = phase, step, split.Percent(weight), false
	next.Since, next.PausedAt, next.HeldBefore, next.Wait = now, time.Time{}, 0, nil
	tr := Transition{At: now, From: s.Phase, To: phase, Step: step, Weight: split.Percent(weight), Actor: actor, Reason: reason, Verdict: v}
	next.History = append(append(make([]Transition, 0, len(s.History)+1), s.History...), tr)
	if len(next.History) > MaxHistory {
		next.History = next.History[len(next.History)-MaxHistory:]
	}
	return next
}

// Act applies an operator's action to s under rollout r (the service's
// block, with its canary filled in) and the service's stable version.
func Act(s State, r *split.Rollout, stable string, a Action, now time.Time, actor string) (State, error) {
	if s.Phase == "" {
		s.Phase = Idle
	}
	conflict := func(what string) (State, error) {
		return s, fmt.Errorf("%w: cannot %s a rollout that is %s", ErrConflict, what, s.Phase)
	}
	switch a {
	case Start:
		if s.Phase.active() {
			return conflict("start")
		}
		s.Canary, s.Stable, s.StartedAt = r.Canary, stable, now
		if r.Shadow != nil {
			return startShadow(s, r, now, actor), nil
		}
		if hooks := Gates(r, 1); len(hooks) > 0 {
			// pre_step hooks come before the first step's weight too.
			next := s.to(Waiting, 0, 0, now, actor, fmt.Sprintf("started: waiting for %s before step 1 (%s%%)",
				hookNames(hooks), split.FormatPercent(r.Steps[0])), nil)
			next.Wait = &Wait{Step: 1, Weight: split.Percent(r.Steps[0])}
			return next, nil
		}
		return s.to(Progressing, 1, r.Steps[0], now, actor, "started", nil), nil
	case Pause:
		if !s.Phase.running() {
			return conflict("pause")
		}
		next := s.to(Paused, s.Step, int(s.Weight), now, actor, "paused", nil).keepShadow(s)
		// The hold clock stops: what was held is carried as a duration.
		next.HeldBefore, next.Since, next.PausedAt = split.Duration(s.Held(now)), now, now
		return next, nil
	case Resume:
		if s.Phase != Paused {
			return conflict("resume")
		}
		next := s.to(Progressing, s.Step, int(s.Weight), now, actor, "resumed", nil).keepShadow(s)
		// The paused time does not count: the hold goes on from what was
		// held, from now.
		next.HeldBefore = split.Duration(s.Held(now))
		return next, nil
	case Abort:
		if !s.Phase.active() {
			return conflict("abort")
		}
		return s.to(Aborted, s.Step, 0, now, actor, "aborted: canary to 0", nil), nil
	case Promote:
		if !s.Phase.active() {
			return conflict("promote")
		}
		return s.to(Promoted, len(r.Steps), split.Buckets, now, actor, "promoted by hand: canary to 100", nil), nil
	}
	return s, fmt.Errorf("%w %q (one of start, pause, resume, abort, promote)", ErrUnknownAction, a)
}

// Advance is the guard's move for an active rollout given the verdict v
// over a window of which covered has been watched: a failing verdict rolls
// the canary back (paused, waiting or not) once the verdicts have been
// failing for the guard's failing_for (v.FailingFor); a progressing
// rollout that has held its step for r.Hold, with a healthy verdict over a
// fully watched window, moves to the next step, and reaching the last one
// (100 %) promotes it; when the next step has hooks to ask first (Gates),
// it waits for them instead (Proceed moves it on). Inconclusive verdicts
// change nothing. It reports whether s changed.
func Advance(s State, r *split.Rollout, v Verdict, covered time.Duration, now time.Time) (State, bool) {
	if !s.Phase.active() {
		return s, false
	}
	if s.Shadow {
		return advanceShadow(s, r, v, covered, now)
	}
	if v.Result == Failing {
		if v.FailingFor < r.Guard.FailingFor {
			return s, false // failing, but not for long enough yet
		}
		vv := v
		reason := "guard failed the canary: " + v.Reason
		if r.Guard.FailingFor > 0 {
			reason = fmt.Sprintf("guard failed the canary for %s (failing_for %s): %s", v.FailingFor.D().Round(time.Millisecond), r.Guard.FailingFor.D(), v.Reason)
		}
		return s.to(RolledBack, s.Step, 0, now, "rollout", reason, &vv), true
	}
	if s.Phase != Progressing || v.Result != Healthy || covered < r.Guard.Window.D() || s.Held(now) < r.Hold.D() {
		return s, false
	}
	target, weight := nextTarget(r.Steps, int(s.Weight))
	vv := v
	if hooks := Gates(r, target); len(hooks) > 0 {
		next := s.to(Waiting, s.Step, int(s.Weight), now, "rollout", fmt.Sprintf("healthy for %s: waiting for %s before step %d (%s%%)",
			r.Hold.D(), hookNames(hooks), target, split.FormatPercent(weight)), &vv)
		next.Wait = &Wait{Step: target, Weight: split.Percent(weight)}
		// The step's hold goes on counting while it waits.
		next.HeldBefore = split.Duration(s.Held(now))
		return next, true
	}
	return moveTo(s, r, target, weight, now, fmt.Sprintf("healthy for %s", r.Hold.D()), &vv), true
}

// Proceed moves a waiting rollout on, once every hook before its next
// step has answered 2xx (why says so): to the next step when it is
// the first (the start's pre_step hooks: there is no evidence yet), else
// on a healthy verdict over a fully watched window. It reports whether s
// changed.
func Proceed(s State, r *split.Rollout, v Verdict, covered time.Duration, now time.Time, why string) (State, bool) {
	if s.Phase != Waiting {
		return s, false
	}
	target, weight := nextTarget(r.Steps, int(s.Weight))
	if target > 1 && (v.Result != Healthy || covered < r.Guard.Window.D()) {
		return s, false
	}
	var vv *Verdict
	if v.Result != "" {
		vc := v
		vv = &vc
	}
	return moveTo(s, r, target, weight, now, why, vv), true
}

// nextTarget is the step after the canary's share weight (1-based) and
// its share; past the last step (the steps were changed), the last.
func nextTarget(steps []int, weight int) (int, int) {
	next := nextStep(steps, weight)
	if next < 0 {
		return len(steps), split.Buckets
	}
	return next + 1, steps[next]
}

// moveTo puts s at step target (the last one promotes).
func moveTo(s State, r *split.Rollout, target, weight int, now time.Time, why string, v *Verdict) State {
	if target >= len(r.Steps) {
		return s.to(Promoted, len(r.Steps), weight, now, "rollout", why+": last step reached", v)
	}
	return s.to(Progressing, target, weight, now, "rollout", why+": next step", v)
}

// nextStep is the index of the first step above weight, -1 when none: the
// position is found by weight, so a reload that edits the steps continues
// from the canary's share in force.
func nextStep(steps []int, weight int) int {
	for i, bp := range steps {
		if bp > weight {
			return i
		}
	}
	return -1
}
