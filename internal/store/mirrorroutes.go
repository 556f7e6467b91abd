package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"github.com/trafficsplit/splitter/split"
)

// A runtime mirror route (PUT /v1/services/{name}/mirror-routes/{route})
// copies a share of the requests that match its conditions to a version:
// a conditional mirror, owned like a runtime route. A service's mirror
// routes are tried in the order of their names before its mirror (the
// runtime one, a shadow step's, or the file's), and the first that
// matches decides the copy (split.MirrorRoute). They are compiled into
// the snapshot's table, kept across reloads while they fit the
// configuration (the service and the version still exist), persisted in
// the state file and, in fleet mode, written to etcd
// (live-mirror-routes/<service>/<route>).

// MirrorRoute is a named runtime mirror route.
type MirrorRoute struct {
	Name    string            `json:"name"`
	When    []split.Condition `json:"when"`
	Version string            `json:"version"`
	Percent split.Percent     `json:"percent"`
	// Owner names the controller that made it (the Argo Rollouts
	// plugin); "" for an operator's.
	Owner string `json:"owner,omitempty"`
}

// ErrMirrorRouteLimit: the service has split.MaxMirrorRoutes mirror
// routes already (the admin API answers 409).
var ErrMirrorRouteLimit = errors.New("too many runtime mirror routes")

// Clone returns a copy of r that shares nothing with it.
func (r MirrorRoute) Clone() MirrorRoute {
	r.When = Route{When: r.When}.Clone().When
	return r
}

// Equal reports whether r and o are the same mirror route.
func (r MirrorRoute) Equal(o MirrorRoute) bool {
	a, errA := json.Marshal(r)
	b, errB := json.Marshal(o)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// String describes r for logs and the audit:
// `header x-canary exact "true" -> v2 50% (owner ...)`.
func (r MirrorRoute) String() string {
	s := Route{When: r.When, Version: r.Version}.String()
	s += " " + split.FormatPercent(int(r.Percent)) + "%"
	if r.Owner != "" {
		s += " (owner " + r.Owner + ")"
	}
	return s
}

func (r MirrorRoute) engine() split.MirrorRoute {
	c := r.Clone()
	return split.MirrorRoute{Name: c.Name, When: c.When, Version: c.Version, Percent: c.Percent}
}

// CheckMirrorRoute validates r as one of service's mirror routes in cfg
// (the configuration it applies to), beside others (the service's other
// mirror routes). Errors wrap split.ErrUnknownService or
// ErrMirrorRouteLimit, or are *split.FieldError with paths relative to
// the mirror route ("when[0].regex", "version", "percent").
func CheckMirrorRoute(cfg *split.Config, service string, others []MirrorRoute, r MirrorRoute) error {
	return checkNamed(cfg, service, others, r)
}

// Base returns r's name, conditions, version and owner.
func (r MirrorRoute) Base() Route {
	return Route{Name: r.Name, When: r.When, Version: r.Version, Owner: r.Owner}
}

func (MirrorRoute) kind() routeKind[MirrorRoute] {
	return routeKind[MirrorRoute]{
		what: "mirror route", logKey: "mirror_route", stateKey: "mirror_routes", path: "mirror_routes",
		limit: split.MaxMirrorRoutes, errLimit: ErrMirrorRouteLimit,
		noWhen: func(service string) string {
			return "no conditions: a mirror route needs at least one (PUT /v1/services/" + service + "/mirror copies from every request)"
		},
		of:      func(s *Snapshot) map[string][]MirrorRoute { return s.MirrorRoutes },
		compose: composeMirrorRoutes,
		publish: (*Store).withMirrorRoutesLocked,
		misfit: func(_ *split.Service, kept int, _ string) string {
			if kept >= split.MaxMirrorRoutes {
				return "too many mirror routes with it"
			}
			return ""
		},
		stored: func(r MirrorRoute) error {
			if r.Version == "" || len(r.When) == 0 || r.Percent < 0 || r.Percent > split.Buckets {
				return errors.New("needs when, a version and a percent from 0 to 100")
			}
			return nil
		},
	}
}

// composeMirrorRoutes returns a copy of cfg in which each service's mirror
// routes are exactly routes' (none for a service not in routes).
func composeMirrorRoutes(cfg *split.Config, routes map[string][]MirrorRoute) *split.Config {
	out := cfg.Clone()
	for i := range out.Services {
		svc := &out.Services[i]
		svc.MirrorRoutes = nil
		for _, r := range routes[svc.Name] {
			svc.MirrorRoutes = append(svc.MirrorRoutes, r.engine())
		}
	}
	return out
}

// MirrorRouteChange is what a mirror route mutation did: the mirror route
// before and after (nil: absent) and the snapshot in force after it.
type MirrorRouteChange = NamedChange[MirrorRoute]

// PutMirrorRoute adds or replaces service's mirror route r.Name. One that
// exists with another owner (or with one, when r has none) is not
// replaced: *OwnerError. Putting the mirror route in force again changes
// nothing. Other errors: see CheckMirrorRoute, and ErrNoConfig.
func (s *Store) PutMirrorRoute(ctx context.Context, service string, r MirrorRoute, actor string) (MirrorRouteChange, error) {
	return putNamed(ctx, s, service, r, actor)
}

// DeleteMirrorRoute removes service's mirror route name. With owner set,
// only a mirror route of that owner is removed (*OwnerError otherwise);
// "" removes any. Removing one that does not exist changes nothing.
// Errors wrap split.ErrUnknownService for a service that neither exists
// nor has the mirror route, or ErrNoConfig.
func (s *Store) DeleteMirrorRoute(ctx context.Context, service, name, owner, actor string) (MirrorRouteChange, error) {
	return deleteNamed[MirrorRoute](ctx, s, service, name, owner, actor)
}

// withMirrorRoutesLocked compiles and publishes cur with routes in force
// (persisted first with a state file); s.mu is held.
func (s *Store) withMirrorRoutesLocked(ctx context.Context, cur *Snapshot, routes map[string][]MirrorRoute) (*Snapshot, error) {
	// The table's configuration holds everything in force (overrides,
	// mirrors, runtime routes): only its mirror routes change.
	rt := cur.runtime()
	rt.mirrorRoutes = routes
	return s.publishRuntimeLocked(ctx, cur, composeMirrorRoutes(cur.Table.Config(), routes), rt)
}
