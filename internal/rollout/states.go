package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// UnreadableError is what a StateStore's Load returns, beside the states
// it could read, when some stored states cannot be read (an unknown
// phase, as another build may write during an upgrade): one bad state
// must not hide the others. Each is skipped and reported.
type UnreadableError struct {
	// States maps a service to why its stored state cannot be read (the
	// error names the key).
	States map[string]error
}

func (e *UnreadableError) Error() string {
	msgs := make([]string, 0, len(e.States))
	for _, name := range slices.Sorted(maps.Keys(e.States)) {
		msgs = append(msgs, e.States[name].Error())
	}
	return "unreadable rollout states: " + strings.Join(msgs, "; ")
}

// StateStore keeps rollout states durably. FileStates keeps them in the
// state file (file mode). In etcd mode they live under rollouts/<service>,
// written with a compare-and-swap on the key's revision, and every replica
// follows them through a watch (Manager.Observe; docs/rollouts.md).
type StateStore interface {
	// Load reads every stored state. A state that cannot be read is left
	// out and named in an *UnreadableError, returned with the others.
	Load(ctx context.Context) (map[string]State, error)
	// Save makes s durable and returns it as stored. A store with
	// revisions sets State.Revision, and saves s only while the stored
	// state is still the one s was derived from (s.Revision; 0: none
	// yet); otherwise it saves nothing and returns an error wrapping
	// ErrStale.
	Save(ctx context.Context, s State) (State, error)
}

// ErrStale says that a write was refused because what it was computed from
// changed meanwhile: the rollout's state (another replica's action or
// step), or this process's leadership. Nothing was written.
var ErrStale = errors.New("the rollout state changed meanwhile")

// Elector says whether this process runs the decision loop. In file mode
// the only process always does (Always). In etcd mode the replica elected
// through etcd's concurrency.Election does, and another takes over when
// its session's lease expires.
type Elector interface {
	// Lead reports whether this process leads now. When it does, lctx is
	// ctx narrowed to this leadership: cancelled the moment it is lost,
	// so that a decision in progress stops at once, and carrying what the
	// StateStore and the Mutator need to refuse a write made on a lost
	// leadership. release frees lctx; it is never nil.
	Lead(ctx context.Context) (lctx context.Context, release func(), leading bool)
	// Leader names the process that leads now, "" when unknown (and in
	// file mode, where there is only one).
	Leader() string
}

// Always is the Elector of a process that decides alone.
type Always struct{}

// Lead implements Elector: always, with ctx as it is.
func (Always) Lead(ctx context.Context) (context.Context, func(), bool) { return ctx, func() {}, true }

// Leader implements Elector.
func (Always) Leader() string { return "" }

// StateMutator is a Mutator that can write a state's weights on the
// condition that the state is still the stored one (etcd mode: a compare
// on the revision of rollouts/<service>, and from the decision loop on the
// leadership too), so that the weights of a state another replica has
// superseded are never written. A refused write wraps ErrStale. It is
// called whenever the state's weights might not be in force, and writes
// nothing when the shared store already has them.
type StateMutator interface {
	SetStateWeights(ctx context.Context, st State, w split.Weights) (store.Change, error)
}

// Sourced is Evidence that can say whose counts a service's totals sum
// (etcd mode: the replicas whose published counts were fresh), for the
// verdict's numbers.
type Sourced interface {
	Sources(service string) []string
}

// FileStates is the StateStore of file mode: the store keeps the states
// in its state file, beside the overrides (in memory only without one).
type FileStates struct {
	Store *store.Store
}

// Load implements StateStore; a state that does not decode is an error
// naming its service.
func (f FileStates) Load(context.Context) (map[string]State, error) {
	raw := f.Store.Rollouts()
	out := make(map[string]State, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		var s State
		if err := json.Unmarshal(raw[name], &s); err != nil {
			return nil, fmt.Errorf("state file: rollouts.%s: %w", name, err)
		}
		if !slices.Contains(Phases(), s.Phase) {
			return nil, fmt.Errorf("state file: rollouts.%s: unknown phase %q", name, s.Phase)
		}
		s.Service = name
		out[name] = s
	}
	return out, nil
}

// Save implements StateStore; the state file has no revisions.
func (f FileStates) Save(_ context.Context, s State) (State, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return State{}, fmt.Errorf("rollout state of %q: %w", s.Service, err)
	}
	if err := f.Store.SaveRollout(s.Service, b); err != nil {
		return State{}, err
	}
	return s, nil
}
