package router

import (
	"context"
	"fmt"
)

// MirrorRoute is a setMirrorRoute step: requests that match (any of the
// matches; within one, all of method, path and headers) are also sent to
// the canary, Percentage of them, and the answers discarded.
type MirrorRoute struct {
	Name       string
	Matches    []MirrorMatch
	Percentage *int32 // nil: 100
}

// MirrorMatch is one of setMirrorRoute's matches.
type MirrorMatch struct {
	Method, Path *StringMatch
	Headers      map[string]StringMatch
}

// mirrors is where setMirrorRoute steps go. splitter's runtime mirror
// (PUT /v1/services/{name}/mirror) copies a share of all of a service's
// requests and records no owner: it can neither select requests as
// Argo's matches do nor be told apart from an operator's or a shadow
// step's, so RemoveManagedRoutes could not remove only the Rollout's.
// When it takes an owner (as the weights do), an implementation that
// calls it replaces noMirrors in New (a match that selects every request,
// path prefix "/", maps to it), and SetMirrorRoute and
// RemoveManagedRoutes stay as they are.
type mirrors interface {
	put(ctx context.Context, a adminClient, service string, m MirrorRoute, owner string) error
	remove(ctx context.Context, a adminClient, service, name, owner string) error
	// removeAll removes every mirror owner made on service.
	removeAll(ctx context.Context, a adminClient, service, owner string) error
}

// noMirrors is mirrors until then: a mirror cannot be set, and there is
// never one of the Rollout's to remove.
type noMirrors struct{}

func (noMirrors) put(_ context.Context, _ adminClient, service string, m MirrorRoute, _ string) error {
	return fmt.Errorf("setMirrorRoute %q (service %q) is not implemented yet: splitter's runtime mirror copies a share of all "+
		"of a service's requests and records no owner, so it can neither select requests by match nor be removed by this Rollout alone "+
		"(docs/argo-rollouts.md); remove the setMirrorRoute step from the Rollout, or set the mirror with PUT /v1/services/%s/mirror", m.Name, service, service)
}

func (noMirrors) remove(context.Context, adminClient, string, string, string) error { return nil }

func (noMirrors) removeAll(context.Context, adminClient, string, string) error { return nil }
