package router

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
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

// A setMirrorRoute step becomes splitter mirror routes (PUT
// /v1/services/{service}/mirror-routes/{route}), owned by the Rollout:
// one per match, since a mirror route's conditions must all hold and
// Argo's matches are alternatives. The first match is the mirror route
// named after the step, the others "<name>.1", "<name>.2", ...; each
// copies the step's percentage of the requests it matches to the canary.
// A match with no condition (every request) is path prefix "/".

// mirrorRouteName is the name of the mirror route of a step's i-th match.
func mirrorRouteName(step string, i int) string {
	if i == 0 {
		return step
	}
	return step + "." + strconv.Itoa(i)
}

// ofStep reports whether the mirror route named name is one of step's.
func ofStep(name, step string) bool {
	if name == step {
		return true
	}
	n, ok := strings.CutPrefix(name, step+".")
	if !ok || n == "" || n[0] == '0' {
		return false
	}
	_, err := strconv.ParseUint(n, 10, 31)
	return err == nil
}

// mirrorPercent is the step's percentage: nil is 100, as Argo's Istio
// router reads it.
func mirrorPercent(p *int32) (int32, error) {
	if p == nil {
		return 100, nil
	}
	if *p < 0 || *p > 100 {
		return 0, fmt.Errorf("setMirrorRoute.percentage: must be between 0 and 100 (got %d)", *p)
	}
	return *p, nil
}

// mirrorConditions turns one of setMirrorRoute's matches into splitter
// conditions (all must hold): the method, the path, then the headers in
// the order of their names.
func mirrorConditions(i int, m MirrorMatch) ([]condition, error) {
	at := fmt.Sprintf("setMirrorRoute.match[%d]", i)
	var out []condition
	for _, part := range []struct {
		name string
		v    *StringMatch
	}{{"method", m.Method}, {"path", m.Path}} {
		if part.v == nil {
			continue
		}
		c, err := matchCondition(at+"."+part.name, part.v)
		if err != nil {
			return nil, err
		}
		c.Request = part.name
		out = append(out, c)
	}
	names := make([]string, 0, len(m.Headers))
	for name := range m.Headers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if name == "" {
			return nil, fmt.Errorf("%s.headers: a header name is empty", at)
		}
		v := m.Headers[name]
		c, err := matchCondition(at+".headers["+strconv.Quote(name)+"]", &v)
		if err != nil {
			return nil, err
		}
		c.Header = name
		out = append(out, c)
	}
	if len(out) == 0 {
		// No condition: every request, as an Istio match without one.
		prefix := "/"
		out = append(out, condition{Request: "path", Prefix: &prefix})
	}
	return out, nil
}

// matchCondition is the operator of one of Argo's StringMatch.
func matchCondition(at string, m *StringMatch) (condition, error) {
	var c condition
	set := 0
	for _, op := range []struct {
		val string
		dst **string
	}{{m.Exact, &c.Exact}, {m.Prefix, &c.Prefix}, {m.Regex, &c.Regex}} {
		if op.val != "" {
			v := op.val
			*op.dst = &v
			set++
		}
	}
	switch set {
	case 0:
		return c, fmt.Errorf("%s: set one of exact, prefix, regex", at)
	case 1:
		return c, nil
	}
	return c, fmt.Errorf("%s: set only one of exact, prefix, regex", at)
}

// SetMirrorRoute makes the step's mirror routes copy its percentage of
// the requests that match it to the canary (owned by the Rollout, tried
// before the service's mirror); with no matches it removes them. A
// mirror route of the same name that another owner (or an operator) made
// is refused by splitter (409), and stays.
func (r *Router) SetMirrorRoute(ctx context.Context, ro Rollout, m MirrorRoute) error {
	if m.Name == "" {
		return fmt.Errorf("setMirrorRoute: name is required (and listed in trafficRouting.managedRoutes)")
	}
	if err := CheckRouteName(m.Name); err != nil {
		return err
	}
	var pct int32
	whens := make([][]condition, len(m.Matches))
	if len(m.Matches) > 0 {
		var err error
		if pct, err = mirrorPercent(m.Percentage); err != nil {
			return err
		}
		for i, match := range m.Matches {
			if whens[i], err = mirrorConditions(i, match); err != nil {
				return err
			}
		}
	}
	c, a, err := r.target(ro)
	if err != nil {
		return err
	}
	owner := ro.Owner()
	v, err := a.service(ctx, c.Service)
	if err != nil {
		return err
	}
	if len(m.Matches) == 0 {
		// Argo's Istio router removes the route when the step has no
		// match (an empty list reaches the plugin as none: gob does not
		// send empty lists), so that a step without one never mirrors
		// everything.
		return r.removeMirrorRoutes(ctx, a, c.Service, v, owner, func(name string) bool { return ofStep(name, m.Name) })
	}
	canary, err := v.canary()
	if err != nil {
		return err
	}
	for i, when := range whens {
		name := mirrorRouteName(m.Name, i)
		body := map[string]any{"when": when, "version": canary, "percent": pct, "owner": owner}
		if err := a.do(ctx, http.MethodPut, mirrorRoutePath(c.Service, name), nil, body, nil); err != nil {
			return err
		}
	}
	// A step with fewer matches than the last one leaves no copy of the
	// others behind.
	keep := len(whens)
	err = r.removeMirrorRoutes(ctx, a, c.Service, v, owner, func(name string) bool {
		if !ofStep(name, m.Name) || name == m.Name {
			return false
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(name, m.Name+"."))
		return n >= keep
	})
	if err != nil {
		return err
	}
	r.log.Debug("mirror route set", "rollout", owner, "service", c.Service, "mirror_route", m.Name, "matches", len(whens), "percent", pct, "version", canary)
	return nil
}

// removeMirrorRoutes deletes the Rollout's mirror routes of service
// (listed in v) whose names pick selects. One of another owner is not
// the plugin's, and stays.
func (r *Router) removeMirrorRoutes(ctx context.Context, a adminClient, service string, v serviceView, owner string, pick func(string) bool) error {
	for _, mr := range v.MirrorRoutes {
		if mr.Owner != owner || !pick(mr.Name) {
			continue
		}
		err := a.do(ctx, http.MethodDelete, mirrorRoutePath(service, mr.Name), url.Values{"owner": {owner}}, nil, nil)
		switch statusOf(err) {
		case http.StatusConflict:
			r.log.Info("mirror route left alone: not made by this Rollout", "rollout", owner, "service", service, "mirror_route", mr.Name, "error", err)
		case 0:
			if err != nil {
				return err
			}
		default:
			return err
		}
	}
	return nil
}

func mirrorRoutePath(service, name string) string {
	return "/v1/services/" + url.PathEscape(service) + "/mirror-routes/" + url.PathEscape(name)
}

// CheckRouteName accepts what splitter accepts as a route's name (HTTP
// token characters, at most 128), so that a step's name is refused here
// with the reason rather than by the admin API.
func CheckRouteName(name string) error {
	if len(name) > 128 {
		return fmt.Errorf("route name %q is longer than 128 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return fmt.Errorf("route name %q may only contain letters, digits and !#$%%&'*+-.^_`|~ (splitter's route names)", name)
		}
	}
	return nil
}
