package rollout_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
)

// previousState is how the release before held_before (8f6553d) reads a
// stored state: the hold is now - since while progressing, paused_at -
// since while paused.
type previousState struct {
	Phase    rollout.Phase `json:"phase"`
	Step     int           `json:"step"`
	Since    time.Time     `json:"since"`
	PausedAt time.Time     `json:"paused_at"`
}

func (p previousState) held(now time.Time) time.Duration {
	switch p.Phase {
	case rollout.Progressing:
		return max(now.Sub(p.Since), 0)
	case rollout.Paused:
		return max(p.PausedAt.Sub(p.Since), 0)
	}
	return 0
}

// A state stored after pauses and resumes gives the previous release the
// hold this one measures (a rolling upgrade, or a rollback, in the middle
// of a step), and reads back exactly as it was.
func TestStoredStateHoldForThePreviousRelease(t *testing.T) {
	r := testRollout()
	st, err := rollout.Act(rollout.State{Service: "api"}, r, "v1", rollout.Start, t0, "op")
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	step := func(a rollout.Action, after time.Duration) {
		t.Helper()
		now = now.Add(after)
		if st, err = rollout.Act(st, r, "v1", a, now, "op"); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, held time.Duration) {
		t.Helper()
		if got := st.Held(now); got != held {
			t.Fatalf("%s: held %v, want %v", what, got, held)
		}
		data, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var back rollout.State
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if !back.Since.Equal(st.Since) || back.HeldBefore != st.HeldBefore || back.Held(now) != held {
			t.Fatalf("%s: read back since %v held_before %v, want %v %v", what, back.Since, back.HeldBefore, st.Since, st.HeldBefore)
		}
		var prev previousState
		if err := json.Unmarshal(data, &prev); err != nil {
			t.Fatal(err)
		}
		later := now.Add(7 * time.Second)
		if got, want := prev.held(later), st.Held(later); got != want {
			t.Fatalf("%s: the previous release reads a hold of %v, this one %v:\n%s", what, got, want, data)
		}
	}
	check("started", 0)
	step(rollout.Pause, 20*time.Second)
	check("paused after 20s", 20*time.Second)
	step(rollout.Resume, time.Hour)
	check("resumed an hour later", 20*time.Second)
	now = now.Add(10 * time.Second)
	check("10s after the resume", 30*time.Second)
	step(rollout.Pause, 5*time.Second)
	check("paused again", 35*time.Second)

	// What the previous release wrote (no held_before) reads as it meant
	// it.
	old := `{"service":"api","phase":"progressing","step":2,"weight":25,"since":"2026-01-02T03:04:05Z","history":[]}`
	var got rollout.State
	if err := json.Unmarshal([]byte(old), &got); err != nil {
		t.Fatal(err)
	}
	if !got.Since.Equal(t0) || got.HeldBefore != 0 || got.Held(t0.Add(time.Minute)) != time.Minute {
		t.Fatalf("a previous release's state: %+v", got)
	}
}
