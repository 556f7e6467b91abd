package rollout_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// shadowYAML is rolloutYAML with a shadow step: 20 % mirrored for 5s.
var shadowYAML = strings.Replace(rolloutYAML, "      hold: 10s\n", "      hold: 10s\n      shadow: {percent: 20, hold: 5s}\n", 1)

func newShadowBed(t *testing.T, opts func(*rollout.Options)) *bed {
	t.Helper()
	b := newBedWith(t, "", nil, opts)
	b.applyFile(shadowYAML)
	return b
}

// mirror is the api's mirror in force ("none").
func (b *bed) mirror() string {
	m := store.EffectiveMirror(b.store.Load(), "api")
	if m == nil {
		return "none"
	}
	return m.Version + " " + split.FormatPercent(int(m.Percent))
}

// mirrored is the shadow's traffic: users on stable only, the copies on
// the canary.
var mirrored = traffic{stable: 50, canary: 10}

func TestShadowStepThenFirstStep(t *testing.T) {
	b := newShadowBed(t, nil)
	s := b.act(rollout.Start)
	if s.State != rollout.Progressing || s.Step != 0 || !s.Shadow || s.ShadowPercent == nil || *s.ShadowPercent != 2000 ||
		b.canaryShare() != "0" || b.mirror() != "v2 20" {
		t.Fatalf("after start: %s step %d shadow %v, canary %s%%, mirror %s", s.State, s.Step, s.Shadow, b.canaryShare(), b.mirror())
	}
	if tr := s.History[len(s.History)-1]; !tr.Shadow || !strings.Contains(tr.Reason, "started in shadow: 20 % of the requests mirrored to v2") {
		t.Errorf("start transition %+v", tr)
	}
	took := b.run(time.Minute, mirrored, func(s rollout.Status) bool { return !s.Shadow })
	s = b.status()
	if s.State != rollout.Progressing || s.Step != 1 || s.Shadow || b.canaryShare() != "5" || b.mirror() != "none" {
		t.Fatalf("after the shadow step: %s step %d shadow %v, canary %s%%, mirror %s", s.State, s.Step, s.Shadow, b.canaryShare(), b.mirror())
	}
	if took < 5*time.Second || took > 5*time.Second+tick {
		t.Errorf("left the shadow step after %v, want its 5s hold", took)
	}
	tr := s.History[len(s.History)-1]
	if tr.Shadow || tr.Verdict == nil || tr.Verdict.Result != rollout.Healthy || !strings.Contains(tr.Reason, "healthy in shadow for 5s: first step") {
		t.Errorf("transition %+v", tr)
	}
	// The steps then go on as without a shadow step.
	b.run(time.Minute, healthy, func(s rollout.Status) bool { return s.Step == 2 })
	if b.canaryShare() != "25" {
		t.Fatalf("second step at %s%%", b.canaryShare())
	}
}

func TestShadowFailingRollsBackBeforeAnyUser(t *testing.T) {
	b := newShadowBed(t, nil)
	b.act(rollout.Start)
	b.run(time.Second, mirrored, nil)
	took := b.run(10*time.Second, traffic{stable: 50, canary: 10, canaryErrs: 6}, func(s rollout.Status) bool { return s.State != rollout.Progressing })
	s := b.status()
	if s.State != rollout.RolledBack || s.Shadow || s.Step != 0 || b.canaryShare() != "0" || b.mirror() != "none" {
		t.Fatalf("got %s step %d shadow %v, canary %s%%, mirror %s; want rolled_back at step 0, nothing mirrored",
			s.State, s.Step, s.Shadow, b.canaryShare(), b.mirror())
	}
	if took != tick {
		t.Errorf("rolled back after %v, want the first tick that saw the errors", took)
	}
	tr := s.History[len(s.History)-1]
	if !strings.Contains(tr.Reason, "in shadow, before any user was served by it") || tr.Verdict == nil || tr.Verdict.Canary.Errors != 6 {
		t.Errorf("rollback %+v (verdict %+v)", tr, tr.Verdict)
	}
	for _, h := range s.History {
		if h.Weight != 0 {
			t.Fatalf("the canary had a user share before the rollback: %+v", h)
		}
	}
}

func TestShadowPauseResumeAbortKeepOrDropTheMirror(t *testing.T) {
	b := newShadowBed(t, nil)
	b.act(rollout.Start)
	b.run(2*time.Second, mirrored, nil)
	if s := b.act(rollout.Pause); s.State != rollout.Paused || !s.Shadow || b.mirror() != "v2 20" {
		t.Fatalf("paused: %s shadow %v mirror %s", s.State, s.Shadow, b.mirror())
	}
	b.run(30*time.Second, mirrored, nil)
	if s := b.act(rollout.Resume); s.State != rollout.Progressing || !s.Shadow || s.Held < split.Duration(2*time.Second-tick) {
		t.Fatalf("resumed: %s shadow %v held %v", s.State, s.Shadow, s.Held)
	}
	// An operator's weights call is refused while it owns the service; so
	// is a mirror call at the admin API (same rule).
	if s := b.act(rollout.Abort); s.State != rollout.Aborted || s.Shadow || b.mirror() != "none" || b.canaryShare() != "0" {
		t.Fatalf("aborted: %s shadow %v mirror %s canary %s", s.State, s.Shadow, b.mirror(), b.canaryShare())
	}
	// A mirror set by hand afterwards is the operator's, and stays.
	if _, err := b.store.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 500}, "op"); err != nil {
		t.Fatal(err)
	}
	b.run(time.Second, mirrored, nil)
	if b.mirror() != "v2 5" {
		t.Fatalf("the operator's mirror is %s", b.mirror())
	}
}

// TestShadowMirrorPutBack: a reload that drops the runtime mirror (the
// file changed the service's mirror) gets it back at the next tick.
func TestShadowMirrorPutBack(t *testing.T) {
	b := newShadowBed(t, nil)
	b.act(rollout.Start)
	b.applyFile(strings.Replace(shadowYAML, "    weights: {v1: 100, v2: 0}\n    rollout:", "    weights: {v1: 100, v2: 0}\n    mirror: {version: v2, percent: 1}\n    rollout:", 1))
	if b.mirror() != "v2 1" {
		t.Fatalf("the reload left the mirror at %s", b.mirror())
	}
	b.run(tick, mirrored, nil)
	if b.mirror() != "v2 20" {
		t.Fatalf("after a tick the mirror is %s, want the shadow step's", b.mirror())
	}
}

func TestShadowNeedsSignalsThatSeeMirrors(t *testing.T) {
	b := newShadowBed(t, func(o *rollout.Options) { o.NoShadow = "cannot see mirrored requests" })
	_, err := b.m.Act(t.Context(), "api", rollout.Start, "op")
	if !errors.Is(err, rollout.ErrConflict) || !strings.Contains(err.Error(), "shadow step, which cannot see mirrored requests") {
		t.Fatalf("start: %v", err)
	}
}

func TestShadowPersistsAcrossRestart(t *testing.T) {
	c := &clock{now: t0}
	b := newShadowBed(t, nil)
	b.clock = c
	b.act(rollout.Start)
	again := newBedWith(t, b.statePath, b.clock, nil)
	again.applyFile(shadowYAML)
	if s := again.status(); !s.Shadow || s.Step != 0 || s.State != rollout.Progressing {
		t.Fatalf("after a restart: %+v", s)
	}
}
