package rollout

import (
	"encoding/json"
	"time"
)

// The stored form of a State (etcd's rollouts/<service>, the state file,
// the module's handover) is read by the release before this one too,
// during a rolling upgrade and after a rollback (docs/upgrading.md). That
// release knows `since` and `paused_at` but not `held_before`: for it the
// hold is now - since (paused: paused_at - since), since being the step's
// start pushed later by the time spent paused. So `since` is stored in
// that form, Since - HeldBefore, which gives the same hold on the
// writer's clock, and read back as Since; this build's readers then find
// Since and HeldBefore as they were written. A state an older replica
// wrote has no held_before: since is then Since, as that release meant it.

// wireState is State without its JSON methods.
type wireState State

// MarshalJSON writes s with since folded: Since - HeldBefore.
func (s State) MarshalJSON() ([]byte, error) {
	w := wireState(s)
	w.Since = foldSince(s.Since, s.HeldBefore.D(), -1)
	return json.Marshal(w)
}

// UnmarshalJSON reads a state written by MarshalJSON, or by a release
// before held_before (which then reads 0).
func (s *State) UnmarshalJSON(data []byte) error {
	var w wireState
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*s = State(w)
	s.Since = foldSince(s.Since, s.HeldBefore.D(), 1)
	return nil
}

// foldSince moves since by sign * held (not a zero since).
func foldSince(since time.Time, held time.Duration, sign time.Duration) time.Time {
	if since.IsZero() || held == 0 {
		return since
	}
	return since.Add(sign * held)
}
