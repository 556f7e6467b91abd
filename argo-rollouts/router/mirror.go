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

// mirrors is where setMirrorRoute steps go. splitter cannot mirror
// requests yet; when its admin API can (a mirror share per service and a
// route that selects the requests), an implementation that calls it
// replaces noMirrors in New, and SetMirrorRoute and RemoveManagedRoutes
// stay as they are.
type mirrors interface {
	put(ctx context.Context, a adminClient, service string, m MirrorRoute, owner string) error
	remove(ctx context.Context, a adminClient, service, name, owner string) error
	// removeAll removes every mirror owner made on service.
	removeAll(ctx context.Context, a adminClient, service, owner string) error
}

// noMirrors is mirrors until splitter has them: a mirror cannot be set,
// and there is never one to remove.
type noMirrors struct{}

func (noMirrors) put(_ context.Context, _ adminClient, service string, m MirrorRoute, _ string) error {
	return fmt.Errorf("setMirrorRoute %q (service %q) is not implemented yet: splitter cannot mirror requests yet "+
		"(traffic mirroring is planned, see docs/argo-rollouts.md); remove the setMirrorRoute step from the Rollout", m.Name, service)
}

func (noMirrors) remove(context.Context, adminClient, string, string, string) error { return nil }

func (noMirrors) removeAll(context.Context, adminClient, string, string) error { return nil }
