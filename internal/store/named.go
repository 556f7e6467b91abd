package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/trafficsplit/splitter/split"
)

// The runtime routes and the runtime mirror routes are both named,
// owned, per-service lists kept sorted by name and mutated the same way;
// what differs between the two kinds is in a routeKind, and the logic
// lives once here.

// RuntimeRoute is a runtime route or a runtime mirror route.
type RuntimeRoute[R any] interface {
	Route | MirrorRoute
	Clone() R
	Equal(R) bool
	String() string
	// Base is the part every kind has: name, conditions, version, owner.
	Base() Route
	kind() routeKind[R]
}

// routeKind is what sets one kind of runtime route apart.
type routeKind[R any] struct {
	what     string // in errors and the audit: "route", "mirror route"
	logKey   string // the log attribute naming one: "route", "mirror_route"
	stateKey string // the state file's field: "routes", "mirror_routes"
	path     string // the engine's field of a service: "rules", "mirror_routes"
	limit    int    // per service
	errLimit error
	noWhen   func(service string) string // why one without conditions is refused
	of       func(*Snapshot) map[string][]R
	compose  func(cfg *split.Config, routes map[string][]R) *split.Config
	publish  func(s *Store, ctx context.Context, cur *Snapshot, routes map[string][]R) (*Snapshot, error)
	// clash refuses a name the configuration uses (nil: none can clash).
	clash func(cfg *split.Config, i int, service, name string) error
	// misfit says why a route (name) does not fit svc beside kept
	// others, beyond its service and version: "" when it fits.
	misfit func(svc *split.Service, kept int, name string) string
	// stored checks one read from the state file (nil: nothing more).
	stored func(r R) error
}

// NamedChange is what a runtime route or mirror route mutation did: the
// route before and after (nil: absent) and the snapshot in force after it.
type NamedChange[R any] struct {
	Service  string
	Old, New *R
	Snapshot *Snapshot
	// Revision is the etcd revision that committed the change (fleet
	// mode); 0 otherwise.
	Revision int64
}

// checkNamed validates r as one of service's routes of its kind in cfg,
// beside others (the service's other ones of that kind).
func checkNamed[R RuntimeRoute[R]](cfg *split.Config, service string, others []R, r R) error {
	k, b := r.kind(), r.Base()
	if err := CheckRouteName(b.Name); err != nil {
		return err
	}
	if b.Owner != "" {
		if err := CheckOwner(b.Owner); err != nil {
			return err
		}
	}
	i := serviceIndex(cfg, service)
	if i < 0 {
		return fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
	}
	if k.clash != nil {
		if err := k.clash(cfg, i, service, b.Name); err != nil {
			return err
		}
	}
	routes := withNamed(others, r)
	if len(routes) > k.limit {
		return fmt.Errorf("service %q: %w (at most %d)", service, k.errLimit, k.limit)
	}
	if len(b.When) == 0 {
		return &split.FieldError{Path: "when", Reason: k.noWhen(service)}
	}
	_, err := split.Compile(k.compose(cfg, map[string][]R{service: routes}))
	if err == nil {
		return nil
	}
	prefix := fmt.Sprintf("services[%d].%s[%d]", i, k.path, slices.IndexFunc(routes, func(x R) bool { return x.Base().Name == b.Name }))
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

// withNamed returns routes (sorted by name) with r in place of the one of
// its name, or added, still sorted; routes is not modified.
func withNamed[R RuntimeRoute[R]](routes []R, r R) []R {
	out := make([]R, 0, len(routes)+1)
	for _, x := range routes {
		if x.Base().Name != r.Base().Name {
			out = append(out, x)
		}
	}
	out = append(out, r)
	slices.SortFunc(out, func(a, b R) int { return strings.Compare(a.Base().Name, b.Base().Name) })
	return out
}

// withoutNamed returns routes without the one named name.
func withoutNamed[R RuntimeRoute[R]](routes []R, name string) []R {
	return slices.DeleteFunc(slices.Clone(routes), func(x R) bool { return x.Base().Name == name })
}

func findNamed[R RuntimeRoute[R]](routes []R, name string) (R, bool) {
	if i := slices.IndexFunc(routes, func(x R) bool { return x.Base().Name == name }); i >= 0 {
		return routes[i], true
	}
	var zero R
	return zero, false
}

// addNamed returns routes with r added to service's (sorted by name); one
// of the same name is replaced.
func addNamed[R RuntimeRoute[R]](routes map[string][]R, service string, r R) map[string][]R {
	if routes == nil {
		routes = map[string][]R{}
	}
	routes[service] = withNamed(routes[service], r)
	return routes
}

// nilIfNone drops the services without routes, and returns nil for none.
func nilIfNone[R any](m map[string][]R) map[string][]R {
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

func describeNamed[R RuntimeRoute[R]](r *R) string {
	if r == nil {
		return "none"
	}
	return (*r).String()
}

// fitNamed returns the routes that still fit cfg, and why each other one
// does not ("service/name" -> reason): its service is gone, its version is
// not declared, or what the kind's misfit says.
func fitNamed[R RuntimeRoute[R]](cfg *split.Config, routes map[string][]R) (kept map[string][]R, dropped map[string]string) {
	var zero R
	k := zero.kind()
	kept, dropped = map[string][]R{}, map[string]string{}
	for _, service := range sortedKeys(routes) {
		i := serviceIndex(cfg, service)
		for _, r := range routes[service] {
			b, reason := r.Base(), ""
			switch {
			case i < 0:
				reason = "service not in the configuration"
			case !hasVersion(cfg.Services[i].Weights, b.Version):
				reason = fmt.Sprintf("version %q not declared by the configuration", b.Version)
			default:
				reason = k.misfit(&cfg.Services[i], len(kept[service]), b.Name)
			}
			if reason != "" {
				dropped[service+"/"+b.Name] = reason
				continue
			}
			kept[service] = append(kept[service], r)
		}
	}
	return nilIfNone(kept), dropped
}

// culpritsOf names the routes of kept (service -> its routes of one kind)
// that engine errors name at services[i].<the kind's path>[k], each with
// the errors ("service/name" -> reason).
func culpritsOf[R RuntimeRoute[R]](cfg *split.Config, kept map[string][]R, errs []*split.FieldError) map[string]string {
	var zero R
	at := "services[%d]." + zero.kind().path + "[%d]"
	culprits := map[string]string{}
	for _, fe := range errs {
		var i, k int
		if n, _ := fmt.Sscanf(fe.Path, at, &i, &k); n == 2 && i < len(cfg.Services) {
			if rs := kept[cfg.Services[i].Name]; k < len(rs) {
				key := cfg.Services[i].Name + "/" + rs[k].Base().Name
				culprits[key] = strings.TrimSpace(culprits[key] + " " + fe.Error())
			}
		}
	}
	return culprits
}

// withoutCulprits returns kept without the culprits, each recorded in
// drops with its reason.
func withoutCulprits[R RuntimeRoute[R]](kept map[string][]R, culprits, drops map[string]string) map[string][]R {
	var rest map[string][]R
	for service, rs := range kept {
		for _, r := range rs {
			key := service + "/" + r.Base().Name
			if reason, bad := culprits[key]; bad {
				drops[key] = "does not compile: " + reason
				continue
			}
			rest = addNamed(rest, service, r)
		}
	}
	return rest
}

// dropAll records every route of kept in drops with reason.
func dropAll[R RuntimeRoute[R]](kept map[string][]R, drops map[string]string, reason string) {
	for service, rs := range kept {
		for _, r := range rs {
			drops[service+"/"+r.Base().Name] = reason
		}
	}
}

// decodeNamed checks the state file's routes of one kind.
func decodeNamed[R RuntimeRoute[R]](doc map[string][]R) (map[string][]R, error) {
	var out map[string][]R
	for _, name := range sortedKeys(doc) {
		for i, r := range doc[name] {
			k, b := r.kind(), r.Base()
			at := k.stateKey + "." + name + "[" + strconv.Itoa(i) + "]"
			if err := CheckRouteName(b.Name); err != nil {
				return nil, fmt.Errorf("%s: %w", at, err)
			}
			if b.Owner != "" {
				if err := CheckOwner(b.Owner); err != nil {
					return nil, fmt.Errorf("%s: %w", at, err)
				}
			}
			if k.stored != nil {
				if err := k.stored(r); err != nil {
					return nil, fmt.Errorf("%s: %w", at, err)
				}
			}
			out = addNamed(out, name, r)
		}
	}
	return out, nil
}

// putNamed adds or replaces service's route r of its kind: see PutRoute.
func putNamed[R RuntimeRoute[R]](ctx context.Context, s *Store, service string, r R, actor string) (NamedChange[R], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return NamedChange[R]{}, ErrNoConfig
	}
	r = r.Clone()
	k, b := r.kind(), r.Base()
	all := k.of(cur)
	old, had := findNamed(all[service], b.Name)
	if had && old.Base().Owner != b.Owner {
		return NamedChange[R]{}, &OwnerError{Service: service, What: fmt.Sprintf("%s %q", k.what, b.Name), Owner: old.Base().Owner, Want: b.Owner}
	}
	if had && old.Equal(r) {
		return NamedChange[R]{Service: service, Old: &old, New: &old, Snapshot: cur}, nil
	}
	if err := checkNamed(cur.File, service, withoutNamed(all[service], b.Name), r); err != nil {
		return NamedChange[R]{}, err
	}
	snap, err := k.publish(s, ctx, cur, addNamed(maps.Clone(all), service, r))
	if err != nil {
		return NamedChange[R]{}, fmt.Errorf("service %q: %s %q: %w", service, k.what, b.Name, err)
	}
	ch := NamedChange[R]{Service: service, New: &r, Snapshot: snap}
	if had {
		ch.Old = &old
	}
	s.log.Info("runtime "+k.what+" set", "service", service, k.logKey, b.Name, "actor", actor, "old", describeNamed(ch.Old), "new", r.String())
	return ch, nil
}

// deleteNamed removes service's route name of R's kind: see DeleteRoute.
func deleteNamed[R RuntimeRoute[R]](ctx context.Context, s *Store, service, name, owner, actor string) (NamedChange[R], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return NamedChange[R]{}, ErrNoConfig
	}
	var zero R
	k := zero.kind()
	all := k.of(cur)
	old, had := findNamed(all[service], name)
	if !had {
		if _, ok := cur.FileService(service); !ok {
			return NamedChange[R]{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
		}
		return NamedChange[R]{Service: service, Snapshot: cur}, nil
	}
	if owner != "" && old.Base().Owner != owner {
		return NamedChange[R]{}, &OwnerError{Service: service, What: fmt.Sprintf("%s %q", k.what, name), Owner: old.Base().Owner, Want: owner}
	}
	routes := maps.Clone(all)
	routes[service] = withoutNamed(all[service], name)
	snap, err := k.publish(s, ctx, cur, nilIfNone(routes))
	if err != nil {
		return NamedChange[R]{}, fmt.Errorf("service %q: %s %q: %w", service, k.what, name, err)
	}
	s.log.Info("runtime "+k.what+" removed", "service", service, k.logKey, name, "actor", actor, "old", old.String())
	return NamedChange[R]{Service: service, Old: &old, Snapshot: snap}, nil
}

// publishRuntimeLocked compiles cfg (cur's table's configuration with
// rt's routes and mirror routes in force) and publishes it with rt
// (persisted first with a state file); s.mu is held.
func (s *Store) publishRuntimeLocked(ctx context.Context, cur *Snapshot, cfg *split.Config, rt runtimeState) (*Snapshot, error) {
	table, err := split.CompileNext(cur.Table, cfg)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.stateFile != "" {
		if err := s.writeState(cur.Overrides, s.fileWeights, cur.SHA256, rt); err != nil {
			return nil, err
		}
	}
	snap := &Snapshot{
		Table: table, File: cur.File, Overrides: cur.Overrides, Owners: cur.Owners, Routes: rt.routes, Mirrors: cur.Mirrors,
		MirrorRoutes: rt.mirrorRoutes, SHA256: cur.SHA256, Source: cur.Source, LoadedAt: cur.LoadedAt, Revision: cur.Revision,
	}
	s.publish(cur, snap)
	return snap, nil
}
