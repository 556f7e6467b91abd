package rollout

import (
	"errors"
	"fmt"

	"github.com/trafficsplit/splitter/internal/store"
)

// ErrOwned: another controller (the Argo Rollouts plugin) owns the
// service's weights, so a rollout cannot start. It wraps ErrConflict.
var ErrOwned = fmt.Errorf("%w: the service's weights are owned by another controller", ErrConflict)

// ErrDriven: a rollout of the service is progressing or paused, so
// another controller may not take its weights.
var ErrDriven = errors.New("a splitter rollout drives the service's weights")

// Drives reports whether a rollout in phase p drives the service's
// weights as far as another controller is concerned: progressing, or
// paused (it may resume, and the guard still rolls back).
func (p Phase) Drives() bool { return p.active() }

// checkOwner refuses to start a rollout of a service whose weights a
// controller owns (snap.Owners), naming the owner and how to release it.
func checkOwner(snap *store.Snapshot, service string) error {
	owner := snap.Owners[service]
	if owner == "" {
		return nil
	}
	return fmt.Errorf("service %q: %w: %q set them (its override carries that owner); a splitter rollout would fight it. "+
		"Stop that controller from routing this service, then release the weights with DELETE /v1/services/%s/override",
		service, ErrOwned, owner, service)
}
