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

// MaxRoutes bounds the runtime routes of one service.
const MaxRoutes = 100

// MaxOwnerLen bounds an owner's name: room for "argo-rollouts:" and a
// Kubernetes namespace and object name.
const MaxOwnerLen = 512

// Route is a named rule added at runtime (PUT
// /v1/services/{name}/routes/{route}): requests for which every condition
// holds go to Version. A service's routes are evaluated before the rules
// of its configuration, in the order of their names, and are compiled into
// the snapshot's table like the file's own rules.
type Route struct {
	Name    string            `json:"name"`
	When    []split.Condition `json:"when"`
	Version string            `json:"version"`
	// Owner names the controller that made the route (the Argo Rollouts
	// plugin); "" for an operator's.
	Owner string `json:"owner,omitempty"`
}

// Clone returns a copy of r that shares nothing with it.
func (r Route) Clone() Route {
	svc := split.Service{Rules: []split.Rule{{When: r.When}}}.Clone()
	r.When = svc.Rules[0].When
	return r
}

// Equal reports whether r and o are the same route (name, conditions,
// version and owner).
func (r Route) Equal(o Route) bool {
	a, errA := json.Marshal(r)
	b, errB := json.Marshal(o)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// String describes r for logs and the audit: `x-canary exact "1" -> v2`.
func (r Route) String() string {
	s := DescribeWhen(r.When) + " -> " + r.Version
	if r.Owner != "" {
		s += " (owner " + r.Owner + ")"
	}
	return s
}

// DescribeWhen describes conditions for people (logs, the audit, the
// console): `header x-canary exact "1" and request path prefix "/a"`.
func DescribeWhen(when []split.Condition) string {
	var b strings.Builder
	for i, c := range when {
		if i > 0 {
			b.WriteString(" and ")
		}
		switch {
		case c.Header != "":
			b.WriteString("header " + c.Header)
		case c.Cookie != "":
			b.WriteString("cookie " + c.Cookie)
		case c.Query != "":
			b.WriteString("query " + c.Query)
		case c.Request != "":
			b.WriteString("request " + c.Request)
		}
		for _, op := range []struct {
			name string
			val  *string
		}{{"exact", c.Exact}, {"prefix", c.Prefix}, {"suffix", c.Suffix}, {"contains", c.Contains}, {"regex", c.Regex}} {
			if op.val != nil {
				b.WriteString(" " + op.name + " " + strconv.Quote(*op.val))
			}
		}
		if c.Present {
			b.WriteString(" present")
		}
		if c.Absent {
			b.WriteString(" absent")
		}
		if c.IgnoreCase {
			b.WriteString(" ignoring case")
		}
	}
	return b.String()
}

// OwnerError says that a service's weights, or one of its routes, belong
// to another owner than the call named.
type OwnerError struct {
	Service string
	What    string // "weights", or `route "name"`
	Owner   string // who holds it; "" for an operator
	Want    string // the owner the call named; "" for none
}

func (e *OwnerError) Error() string {
	holder := "an operator (no owner)"
	if e.Owner != "" {
		holder = strconv.Quote(e.Owner)
	}
	if e.Want == "" {
		return fmt.Sprintf("service %q: the %s belong to %s", e.Service, e.What, holder)
	}
	return fmt.Sprintf("service %q: the %s belong to %s, not %q", e.Service, e.What, holder, e.Want)
}

// Errors of the route mutations; the admin API answers 409 for them.
var (
	// ErrRuleName: the route's name is a rule of the configuration.
	ErrRuleName = errors.New("a rule of the configuration has this name")
	// ErrRouteLimit: the service has MaxRoutes routes already.
	ErrRouteLimit = errors.New("too many runtime routes")
)

// CheckOwner accepts an owner name: 1 to MaxOwnerLen printable ASCII
// characters without spaces, such as "argo-rollouts:default/api".
func CheckOwner(owner string) error {
	switch {
	case owner == "":
		return &split.FieldError{Path: "owner", Reason: "is empty"}
	case len(owner) > MaxOwnerLen:
		return &split.FieldError{Path: "owner", Reason: fmt.Sprintf("is longer than %d characters", MaxOwnerLen)}
	}
	for i := 0; i < len(owner); i++ {
		if c := owner[i]; c <= ' ' || c >= 0x7f {
			return &split.FieldError{Path: "owner", Reason: fmt.Sprintf("%q may only contain printable ASCII characters without spaces", owner)}
		}
	}
	return nil
}

// CheckRouteName accepts a route's name: what a service or version name
// may be (HTTP token characters, at most split.MaxNameLen), since it is a
// path segment of the admin API and of an etcd key.
func CheckRouteName(name string) error {
	switch {
	case name == "":
		return &split.FieldError{Path: "name", Reason: "route name is empty"}
	case len(name) > split.MaxNameLen:
		return &split.FieldError{Path: "name", Reason: fmt.Sprintf("route name is longer than %d characters", split.MaxNameLen)}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return &split.FieldError{Path: "name", Reason: fmt.Sprintf("route name %q may only contain letters, digits and !#$%%&'*+-.^_`|~", name)}
		}
	}
	return nil
}

// CheckRoute validates r as one of service's routes in cfg (the
// configuration the routes apply to), beside others (the service's other
// routes). Errors wrap split.ErrUnknownService, ErrRuleName or
// ErrRouteLimit, or are *split.FieldError with paths relative to the
// route ("when[0].regex", "version").
func CheckRoute(cfg *split.Config, service string, others []Route, r Route) error {
	return checkNamed(cfg, service, others, r)
}

// Base returns r.
func (r Route) Base() Route { return r }

func (Route) kind() routeKind[Route] {
	return routeKind[Route]{
		what: "route", logKey: "route", stateKey: "routes", path: "rules",
		limit: MaxRoutes, errLimit: ErrRouteLimit,
		noWhen:  func(string) string { return "no conditions: a route needs at least one" },
		of:      func(s *Snapshot) map[string][]Route { return s.Routes },
		compose: composeRoutes,
		publish: (*Store).withRoutesLocked,
		clash: func(cfg *split.Config, i int, service, name string) error {
			if at := ruleIndex(cfg.Services[i].Rules, name); at >= 0 {
				return fmt.Errorf("service %q: route %q: %w (services[%d].rules[%d]); choose another name", service, name, ErrRuleName, i, at)
			}
			return nil
		},
		misfit: func(svc *split.Service, kept int, name string) string {
			switch {
			case ruleIndex(svc.Rules, name) >= 0:
				return "a rule of the configuration has the same name"
			case kept >= MaxRoutes || kept+len(svc.Rules) >= split.MaxRules:
				return "too many rules with it"
			}
			return ""
		},
	}
}

// ruleIndex is the index of the rule named name, or -1.
func ruleIndex(rules []split.Rule, name string) int {
	return slices.IndexFunc(rules, func(x split.Rule) bool { return x.Name == name })
}

// composeRoutes returns a copy of cfg with each service's routes ahead of
// its own rules. The configuration's unnamed rules are named after their
// place in it ("rules[1]"), as Compile would, so that routes ahead of
// them do not renumber them.
func composeRoutes(cfg *split.Config, routes map[string][]Route) *split.Config {
	out := cfg.Clone()
	for i := range out.Services {
		svc := &out.Services[i]
		rs := routes[svc.Name]
		if len(rs) == 0 {
			continue
		}
		rules := make([]split.Rule, 0, len(rs)+len(svc.Rules))
		for _, r := range rs {
			r = r.Clone()
			rules = append(rules, split.Rule{Name: r.Name, When: r.When, Version: r.Version})
		}
		for j, r := range svc.Rules {
			if r.Name == "" {
				r.Name = "rules[" + strconv.Itoa(j) + "]"
			}
			rules = append(rules, r)
		}
		svc.Rules = rules
	}
	return out
}

func hasVersion(w split.Weights, version string) bool {
	_, ok := w.Get(version)
	return ok
}

// stripRoutes takes the runtime routes (which lead each service's rules)
// out of cfg, a table's configuration, in place.
func stripRoutes(cfg *split.Config, routes map[string][]Route) (*split.Config, error) {
	for i := range cfg.Services {
		svc := &cfg.Services[i]
		rs := routes[svc.Name]
		if len(rs) > len(svc.Rules) {
			return nil, fmt.Errorf("service %q: %d runtime routes but %d rules in force", svc.Name, len(rs), len(svc.Rules))
		}
		for j, r := range rs {
			if svc.Rules[j].Name != r.Name {
				return nil, fmt.Errorf("service %q: rule %d in force is %q, not the route %q", svc.Name, j, svc.Rules[j].Name, r.Name)
			}
		}
		svc.Rules = svc.Rules[len(rs):]
	}
	return cfg, nil
}

// compileWithRoutes compiles cfg with the runtime routes that fit it ahead
// of its rules, and the runtime mirror routes that fit it. It never fails
// because of one: when the whole does not compile but cfg alone does, the
// ones an error names are left out (and, if it still fails, all of
// them), with the error as the reason. An error is cfg's own, with cfg's
// paths. Dropped routes and mirror routes are keyed "service/name".
func compileWithRoutes(prev *split.Table, cfg *split.Config, in runtimeRoutes) (*split.Table, runtimeRoutes, runtimeDrops, error) {
	var kept runtimeRoutes
	var drops runtimeDrops
	kept.routes, drops.routes = fitNamed(cfg, in.routes)
	kept.mirrorRoutes, drops.mirrorRoutes = fitNamed(cfg, in.mirrorRoutes)
	if kept.empty() {
		t, err := split.CompileNext(prev, cfg)
		return t, runtimeRoutes{}, drops, err
	}
	t, err := split.CompileNext(prev, kept.compose(cfg))
	if err == nil {
		return t, kept, drops, nil
	}
	if _, plainErr := split.Compile(cfg); plainErr != nil {
		return nil, runtimeRoutes{}, runtimeDrops{}, plainErr
	}
	// The runtime state is at fault (only a record written around the
	// admin API can be): leave out what an error names, and try once more.
	errs := split.FieldErrors(err)
	culprits, mirrorCulprits := culpritsOf(cfg, kept.routes, errs), culpritsOf(cfg, kept.mirrorRoutes, errs)
	if len(culprits)+len(mirrorCulprits) > 0 {
		kept = runtimeRoutes{
			routes:       withoutCulprits(kept.routes, culprits, drops.routes),
			mirrorRoutes: withoutCulprits(kept.mirrorRoutes, mirrorCulprits, drops.mirrorRoutes),
		}
		if t, err = split.CompileNext(prev, kept.compose(cfg)); err == nil {
			return t, kept, drops, nil
		}
	}
	dropAll(kept.routes, drops.routes, "does not compile with the configuration: "+err.Error())
	dropAll(kept.mirrorRoutes, drops.mirrorRoutes, "does not compile with the configuration: "+err.Error())
	t, err = split.CompileNext(prev, cfg)
	return t, runtimeRoutes{}, drops, err
}

// runtimeRoutes are the runtime routes and mirror routes, per service,
// each list sorted by name.
type runtimeRoutes struct {
	routes       map[string][]Route
	mirrorRoutes map[string][]MirrorRoute
}

func (r runtimeRoutes) empty() bool { return len(r.routes) == 0 && len(r.mirrorRoutes) == 0 }

// compose returns a copy of cfg with r in force.
func (r runtimeRoutes) compose(cfg *split.Config) *split.Config {
	return composeMirrorRoutes(composeRoutes(cfg, r.routes), r.mirrorRoutes)
}

// runtimeDrops say which runtime routes and mirror routes do not apply,
// and why ("service/name" -> reason).
type runtimeDrops struct {
	routes, mirrorRoutes map[string]string
}

// RouteChange is what a route mutation did: the route before and after
// (nil: absent) and the snapshot in force after it.
type RouteChange = NamedChange[Route]

// PutRoute adds or replaces service's route r.Name. A route that exists
// with another owner (or with one, when r has none) is not replaced:
// *OwnerError. Putting the route in force again changes nothing. Other
// errors: see CheckRoute, and ErrNoConfig.
func (s *Store) PutRoute(ctx context.Context, service string, r Route, actor string) (RouteChange, error) {
	return putNamed(ctx, s, service, r, actor)
}

// DeleteRoute removes service's route name. With owner set, only a route
// of that owner is removed (*OwnerError otherwise), so a controller never
// removes what it did not make; "" removes any. Removing a route that does
// not exist changes nothing. Errors wrap split.ErrUnknownService for a
// service that neither exists nor has the route, or ErrNoConfig.
func (s *Store) DeleteRoute(ctx context.Context, service, name, owner, actor string) (RouteChange, error) {
	return deleteNamed[Route](ctx, s, service, name, owner, actor)
}

// withRoutesLocked compiles and publishes cur with routes in force
// (persisted first with a state file); s.mu is held.
func (s *Store) withRoutesLocked(ctx context.Context, cur *Snapshot, routes map[string][]Route) (*Snapshot, error) {
	// The table's own configuration holds everything in force (overrides,
	// mirrors, the routes): take the routes out and put the new ones in.
	base, err := stripRoutes(cur.Table.Config(), cur.Routes)
	if err != nil {
		return nil, err
	}
	rt := cur.runtime()
	rt.routes = routes
	return s.publishRuntimeLocked(ctx, cur, composeRoutes(base, routes), rt)
}

// SetCanaryOwned is SetCanary on behalf of owner (a controller such as
// the Argo Rollouts plugin): the override records the owner, and while it
// holds, only that owner sets the weights this way (*OwnerError for
// another). Weights without an owner (an operator's override, or none) are
// taken over. Setting the weights and owner in force again changes
// nothing.
func (s *Store) SetCanaryOwned(ctx context.Context, service string, basisPoints int, owner, actor string) (Change, error) {
	if err := CheckOwner(owner); err != nil {
		return Change{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return Change{}, ErrNoConfig
	}
	if held := cur.Owners[service]; held != "" && held != owner {
		return Change{}, &OwnerError{Service: service, What: "weights", Owner: held, Want: owner}
	}
	w, err := cur.Table.CanaryWeights(service, basisPoints)
	if err != nil {
		return Change{}, fmt.Errorf("service %q: %w", service, err)
	}
	if ow, ok := cur.Overrides[service]; ok && cur.Owners[service] == owner && sameWeights(ow, w) {
		return Change{Service: service, Old: ow, New: ow, Snapshot: cur}, nil
	}
	return s.setLocked(ctx, service, w, actor, owner)
}

// runtimeState is what a state file keeps besides the overrides: who owns
// them, the runtime routes and the runtime mirror routes.
type runtimeState struct {
	owners       map[string]string
	routes       map[string][]Route
	mirrorRoutes map[string][]MirrorRoute
}

// runtime returns what a state file keeps of snap besides its overrides.
func (s *Snapshot) runtime() runtimeState {
	return runtimeState{owners: s.Owners, routes: s.Routes, mirrorRoutes: s.MirrorRoutes}
}

// withOwner returns owners with service's owner set to owner ("" removes
// it); owners is not modified.
func withOwner(owners map[string]string, service, owner string) map[string]string {
	out := maps.Clone(owners)
	if out == nil {
		out = map[string]string{}
	}
	if owner == "" {
		delete(out, service)
	} else {
		out[service] = owner
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
