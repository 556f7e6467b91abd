package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/trafficsplit/splitter/internal/store"
)

// StateStore keeps rollout states durably. Save must have made the state
// durable when it returns. FileStates keeps them in the state file (file
// mode). In etcd mode they live under rollouts/<service>, written by the
// leader with a compare-and-swap on the key's revision, and the other
// replicas follow them through their watch (docs/rollouts.md).
type StateStore interface {
	Load(ctx context.Context) (map[string]State, error)
	Save(ctx context.Context, s State) error
}

// Elector says whether this process runs the decision loop. In file mode
// the only process always does (Always). In etcd mode the replica elected
// through etcd's concurrency.Election does, and another takes over when
// its session's lease expires.
type Elector interface {
	Leading() bool
}

// Always is the Elector of a process that decides alone.
type Always struct{}

// Leading implements Elector.
func (Always) Leading() bool { return true }

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

// Save implements StateStore.
func (f FileStates) Save(_ context.Context, s State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("rollout state of %q: %w", s.Service, err)
	}
	return f.Store.SaveRollout(s.Service, b)
}
