package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

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
	if err := CheckRouteName(r.Name); err != nil {
		return err
	}
	if r.Owner != "" {
		if err := CheckOwner(r.Owner); err != nil {
			return err
		}
	}
	i := serviceIndex(cfg, service)
	if i < 0 {
		return fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
	}
	routes := withMirrorRoute(others, r)
	if len(routes) > split.MaxMirrorRoutes {
		return fmt.Errorf("service %q: %w (at most %d)", service, ErrMirrorRouteLimit, split.MaxMirrorRoutes)
	}
	if len(r.When) == 0 {
		return &split.FieldError{Path: "when", Reason: "no conditions: a mirror route needs at least one (PUT /v1/services/" + service + "/mirror copies from every request)"}
	}
	_, err := split.Compile(composeMirrorRoutes(cfg, map[string][]MirrorRoute{service: routes}))
	if err == nil {
		return nil
	}
	prefix := fmt.Sprintf("services[%d].mirror_routes[%d]", i, slices.IndexFunc(routes, func(x MirrorRoute) bool { return x.Name == r.Name }))
	errs := split.FieldErrors(err)
	if len(errs) == 0 {
		return err
	}
	out := make([]error, 0, len(errs))
	for _, fe := range errs {
		rel := *fe
		if p, ok := strings.CutPrefix(fe.Path, prefix); ok && (p == "" || p[0] == '.') {
			rel.Path = strings.TrimPrefix(p, ".")
		}
		out = append(out, &rel)
	}
	return errors.Join(out...)
}

// withMirrorRoute returns routes (sorted by name) with r in place of the
// one of its name, or added; routes is not modified.
func withMirrorRoute(routes []MirrorRoute, r MirrorRoute) []MirrorRoute {
	out := make([]MirrorRoute, 0, len(routes)+1)
	for _, x := range routes {
		if x.Name != r.Name {
			out = append(out, x)
		}
	}
	out = append(out, r)
	slices.SortFunc(out, func(a, b MirrorRoute) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func withoutMirrorRoute(routes []MirrorRoute, name string) []MirrorRoute {
	return slices.DeleteFunc(slices.Clone(routes), func(x MirrorRoute) bool { return x.Name == name })
}

func findMirrorRoute(routes []MirrorRoute, name string) (MirrorRoute, bool) {
	if i := slices.IndexFunc(routes, func(x MirrorRoute) bool { return x.Name == name }); i >= 0 {
		return routes[i], true
	}
	return MirrorRoute{}, false
}

// addMirrorRoute returns routes with r added to service's (sorted by
// name); one of the same name is replaced.
func addMirrorRoute(routes map[string][]MirrorRoute, service string, r MirrorRoute) map[string][]MirrorRoute {
	if routes == nil {
		routes = map[string][]MirrorRoute{}
	}
	routes[service] = withMirrorRoute(routes[service], r)
	return routes
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

// fitMirrorRoutes returns the mirror routes that still fit cfg, and why
// each other one does not ("service/name" -> reason).
func fitMirrorRoutes(cfg *split.Config, routes map[string][]MirrorRoute) (kept map[string][]MirrorRoute, dropped map[string]string) {
	kept, dropped = map[string][]MirrorRoute{}, map[string]string{}
	for _, service := range sortedKeys(routes) {
		i := serviceIndex(cfg, service)
		for _, r := range routes[service] {
			reason := ""
			switch {
			case i < 0:
				reason = "service not in the configuration"
			case !hasVersion(cfg.Services[i].Weights, r.Version):
				reason = fmt.Sprintf("version %q not declared by the configuration", r.Version)
			case len(kept[service]) >= split.MaxMirrorRoutes:
				reason = "too many mirror routes with it"
			}
			if reason != "" {
				dropped[service+"/"+r.Name] = reason
				continue
			}
			kept[service] = append(kept[service], r)
		}
	}
	return nilIfNoMirrorRoutes(kept), dropped
}

func nilIfNoMirrorRoutes(m map[string][]MirrorRoute) map[string][]MirrorRoute {
	for k, v := range m {
		if len(v) == 0 {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// MirrorRouteChange is what a mirror route mutation did: the mirror route
// before and after (nil: absent) and the snapshot in force after it.
type MirrorRouteChange struct {
	Service  string
	Old, New *MirrorRoute
	Snapshot *Snapshot
	// Revision is the etcd revision that committed the change (fleet
	// mode); 0 otherwise.
	Revision int64
}

// PutMirrorRoute adds or replaces service's mirror route r.Name. One that
// exists with another owner (or with one, when r has none) is not
// replaced: *OwnerError. Putting the mirror route in force again changes
// nothing. Other errors: see CheckMirrorRoute, and ErrNoConfig.
func (s *Store) PutMirrorRoute(ctx context.Context, service string, r MirrorRoute, actor string) (MirrorRouteChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return MirrorRouteChange{}, ErrNoConfig
	}
	r = r.Clone()
	old, had := findMirrorRoute(cur.MirrorRoutes[service], r.Name)
	if had && old.Owner != r.Owner {
		return MirrorRouteChange{}, &OwnerError{Service: service, What: fmt.Sprintf("mirror route %q", r.Name), Owner: old.Owner, Want: r.Owner}
	}
	if had && old.Equal(r) {
		return MirrorRouteChange{Service: service, Old: &old, New: &old, Snapshot: cur}, nil
	}
	if err := CheckMirrorRoute(cur.File, service, withoutMirrorRoute(cur.MirrorRoutes[service], r.Name), r); err != nil {
		return MirrorRouteChange{}, err
	}
	routes := maps.Clone(cur.MirrorRoutes)
	routes = addMirrorRoute(routes, service, r)
	snap, err := s.withMirrorRoutesLocked(ctx, cur, routes)
	if err != nil {
		return MirrorRouteChange{}, fmt.Errorf("service %q: mirror route %q: %w", service, r.Name, err)
	}
	ch := MirrorRouteChange{Service: service, New: &r, Snapshot: snap}
	if had {
		ch.Old = &old
	}
	s.log.Info("runtime mirror route set", "service", service, "mirror_route", r.Name, "actor", actor, "old", describeMirrorRoute(ch.Old), "new", r.String())
	return ch, nil
}

// DeleteMirrorRoute removes service's mirror route name. With owner set,
// only a mirror route of that owner is removed (*OwnerError otherwise);
// "" removes any. Removing one that does not exist changes nothing.
// Errors wrap split.ErrUnknownService for a service that neither exists
// nor has the mirror route, or ErrNoConfig.
func (s *Store) DeleteMirrorRoute(ctx context.Context, service, name, owner, actor string) (MirrorRouteChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return MirrorRouteChange{}, ErrNoConfig
	}
	old, had := findMirrorRoute(cur.MirrorRoutes[service], name)
	if !had {
		if _, ok := cur.FileService(service); !ok {
			return MirrorRouteChange{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
		}
		return MirrorRouteChange{Service: service, Snapshot: cur}, nil
	}
	if owner != "" && old.Owner != owner {
		return MirrorRouteChange{}, &OwnerError{Service: service, What: fmt.Sprintf("mirror route %q", name), Owner: old.Owner, Want: owner}
	}
	routes := maps.Clone(cur.MirrorRoutes)
	routes[service] = withoutMirrorRoute(cur.MirrorRoutes[service], name)
	snap, err := s.withMirrorRoutesLocked(ctx, cur, nilIfNoMirrorRoutes(routes))
	if err != nil {
		return MirrorRouteChange{}, fmt.Errorf("service %q: mirror route %q: %w", service, name, err)
	}
	s.log.Info("runtime mirror route removed", "service", service, "mirror_route", name, "actor", actor, "old", old.String())
	return MirrorRouteChange{Service: service, Old: &old, Snapshot: snap}, nil
}

// withMirrorRoutesLocked compiles and publishes cur with routes in force
// (persisted first with a state file); s.mu is held.
func (s *Store) withMirrorRoutesLocked(ctx context.Context, cur *Snapshot, routes map[string][]MirrorRoute) (*Snapshot, error) {
	// The table's configuration holds everything in force (overrides,
	// mirrors, runtime routes): only its mirror routes change.
	table, err := split.CompileNext(cur.Table, composeMirrorRoutes(cur.Table.Config(), routes))
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rt := cur.runtime()
	rt.mirrorRoutes = routes
	if s.stateFile != "" {
		if err := s.writeState(cur.Overrides, s.fileWeights, cur.SHA256, rt); err != nil {
			return nil, err
		}
	}
	snap := &Snapshot{
		Table: table, File: cur.File, Overrides: cur.Overrides, Owners: cur.Owners, Routes: cur.Routes, Mirrors: cur.Mirrors,
		MirrorRoutes: routes, SHA256: cur.SHA256, Source: cur.Source, LoadedAt: cur.LoadedAt, Revision: cur.Revision,
	}
	s.publish(cur, snap)
	return snap, nil
}

func describeMirrorRoute(r *MirrorRoute) string {
	if r == nil {
		return "none"
	}
	return r.String()
}

// decodeMirrorRoutes checks the state file's mirror routes.
func decodeMirrorRoutes(doc map[string][]MirrorRoute) (map[string][]MirrorRoute, error) {
	var out map[string][]MirrorRoute
	for _, name := range sortedKeys(doc) {
		for i, r := range doc[name] {
			at := "mirror_routes." + name + "[" + strconv.Itoa(i) + "]"
			if err := CheckRouteName(r.Name); err != nil {
				return nil, fmt.Errorf("%s: %w", at, err)
			}
			if r.Owner != "" {
				if err := CheckOwner(r.Owner); err != nil {
					return nil, fmt.Errorf("%s: %w", at, err)
				}
			}
			if r.Version == "" || len(r.When) == 0 || r.Percent < 0 || r.Percent > split.Buckets {
				return nil, fmt.Errorf("%s: needs when, a version and a percent from 0 to 100", at)
			}
			out = addMirrorRoute(out, name, r)
		}
	}
	return out, nil
}
