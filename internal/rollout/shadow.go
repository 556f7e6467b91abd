package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// The shadow step (docs/rollouts.md, "Shadow step"): a rollout whose block
// has `shadow: {percent, hold}` starts at step 0 with the canary at 0 %
// and a runtime mirror copying percent of the service's requests to the
// canary. Envoy discards the canary's answers, so no user sees them, and
// counts them on the canary's cluster, where the guard reads them. A
// failing verdict rolls the rollout back before any user was served by
// the canary; a healthy one over a fully watched window, once the step
// has been held for shadow.hold, moves to the first weighted step. The
// rollout's mirror is removed when it leaves the shadow step, whichever
// way.

// MirrorMutator sets and clears runtime mirrors: admin.MirrorMutator (the
// store in file mode, the fleet's write-through store in etcd mode)
// satisfies it.
type MirrorMutator interface {
	SetMirror(ctx context.Context, service string, m split.Mirror, actor string) (store.MirrorChange, error)
	ClearMirror(ctx context.Context, service string, actor string) (store.MirrorChange, error)
}

// StateMirrorMutator is a shared store's mirror write on the condition
// that the rollout's stored state is still st (and, in etcd mode, that
// the leadership of ctx holds); m nil clears. It wraps ErrStale
// otherwise.
type StateMirrorMutator interface {
	SetStateMirror(ctx context.Context, st State, m *split.Mirror) (store.MirrorChange, error)
}

// keepShadow returns s with the shadow step of prev (pause and resume do
// not leave it).
func (s State) keepShadow(prev State) State {
	s.Shadow = prev.Shadow
	if n := len(s.History); n > 0 {
		s.History[n-1].Shadow = prev.Shadow
	}
	return s
}

// startShadow starts s at the shadow step of r.
func startShadow(s State, r *split.Rollout, now time.Time, actor string) State {
	next := s.to(Progressing, 0, 0, now, actor,
		fmt.Sprintf("started in shadow: %s of the requests mirrored to %s, which serves no user", pct(int(r.Shadow.Percent)), r.Canary), nil)
	return next.keepShadow(State{Shadow: true})
}

// advanceShadow is Advance at the shadow step.
func advanceShadow(s State, r *split.Rollout, v Verdict, covered time.Duration, now time.Time) (State, bool) {
	vv := v
	if v.Result == Failing {
		if v.FailingFor < r.Guard.FailingFor {
			return s, false // failing, but not for long enough yet (failing_for)
		}
		return s.to(RolledBack, 0, 0, now, Actor, "guard failed the canary in shadow, before any user was served by it: "+v.Reason, &vv), true
	}
	if r.Shadow == nil {
		// The configuration dropped the shadow step: go on to the first.
		return s.to(Progressing, 1, r.Steps[0], now, Actor, "the shadow step was removed from the configuration: first step", nil), true
	}
	if s.Phase != Progressing || v.Result != Healthy || covered < r.Guard.Window.D() || s.Held(now) < r.Shadow.Hold.D() {
		return s, false
	}
	if hooks := Gates(r, 1); len(hooks) > 0 {
		// The first step's pre_step hooks: the rollout waits in shadow
		// (the mirror stays) until they answer.
		next := s.to(Waiting, 0, 0, now, Actor, fmt.Sprintf("healthy in shadow for %s: waiting for %s before step 1 (%s%%)",
			r.Shadow.Hold.D(), hookNames(hooks), split.FormatPercent(r.Steps[0])), &vv).keepShadow(s)
		next.Wait = &Wait{Step: 1, Weight: split.Percent(r.Steps[0])}
		next.HeldBefore = split.Duration(s.Held(now))
		return next, true
	}
	return s.to(Progressing, 1, r.Steps[0], now, Actor,
		fmt.Sprintf("healthy in shadow for %s: first step", r.Shadow.Hold.D()), &vv), true
}

func pct(bp int) string { return split.FormatPercent(bp) + " %" }

// shadowMirror is the mirror st wants in force for service svc: the
// canary at the shadow step's share while st is at it, none otherwise.
func shadowMirror(svc split.Service, st State) *split.Mirror {
	if !st.Shadow || !st.Phase.active() || svc.Rollout == nil || svc.Rollout.Shadow == nil {
		return nil
	}
	return &split.Mirror{Version: st.Canary, Percent: svc.Rollout.Shadow.Percent}
}

// applyMirror puts st's mirror in force: the shadow step's while st is at
// it; once it left it, the rollout's mirror (one equal to the shadow
// step's) is removed. m.mu is held.
func (m *Manager) applyMirror(ctx context.Context, snap *store.Snapshot, st State) error {
	if m.mirrors == nil {
		return nil
	}
	svc, ok := snap.Table.Service(st.Service)
	if !ok {
		return nil
	}
	want := shadowMirror(svc, st)
	_, runtime := snap.Mirrors[st.Service]
	inForce := store.EffectiveMirror(snap, st.Service)
	var err error
	sm, shared := m.mirrors.(StateMirrorMutator)
	switch {
	case want != nil && (shared || !runtime || !want.Equal(inForce)):
		if shared {
			_, err = sm.SetStateMirror(ctx, st, want)
		} else {
			_, err = m.mirrors.SetMirror(ctx, st.Service, *want, Actor)
		}
	case want == nil && runtime && ownMirror(svc, st, inForce):
		if shared {
			_, err = sm.SetStateMirror(ctx, st, nil)
		} else {
			_, err = m.mirrors.ClearMirror(ctx, st.Service, Actor)
		}
	}
	if errors.Is(err, ErrStale) {
		m.log.Info("the rollout state moved on; its mirror was not written here", "service", st.Service, "error", err)
		return nil
	}
	if err != nil {
		m.log.Error("cannot apply the rollout's mirror; retrying at the next tick", "service", st.Service, "error", err)
		return fmt.Errorf("applying the rollout's mirror: %w", err)
	}
	return nil
}

// ownMirror reports whether the runtime mirror in force is the one a
// shadow step of st's rollout set (the canary at the shadow share), which
// leaving the step removes; a mirror an operator set otherwise stays.
func ownMirror(svc split.Service, st State, inForce *split.Mirror) bool {
	if inForce == nil || inForce.Version != st.Canary || svc.Rollout == nil || svc.Rollout.Shadow == nil {
		return false
	}
	for _, tr := range st.History {
		if tr.Shadow {
			return inForce.Percent == svc.Rollout.Shadow.Percent
		}
	}
	return false
}

// shadowMirrorInForce reports whether the mirror st wants at the shadow
// step is in force (always true elsewhere: leaving it is apply's work).
func shadowMirrorInForce(snap *store.Snapshot, svc split.Service, st State) bool {
	want := shadowMirror(svc, st)
	if want == nil {
		return true
	}
	return want.Equal(store.EffectiveMirror(snap, st.Service))
}
