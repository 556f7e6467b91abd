package split

import "strings"

// MaxMirrorRoutes bounds the mirror routes of one service.
const MaxMirrorRoutes = 100

// A mirror route is a conditional mirror (docs/anonymous-and-mirror.md,
// "Mirror routes"): a service's mirror routes are tried in order, and the
// first whose conditions all hold decides the request's copy, with its own
// version and share; a request that none matches falls back to the
// service's mirror. They select users with the same mirror bucket as the
// service's mirror (a key's bucket is a property of the user, so a growing
// share only adds users), and unkeyed requests with a round-robin of their
// own, so that exactly their share of the requests they match is copied.

// mirrorRoute is a compiled MirrorRoute: its conditions (rule.version is
// unused) and its mirror.
type mirrorRoute struct {
	rule
	mirror mirrorSpec
}

// mirrorRoutes checks and compiles a service's mirror routes; path is the
// service's.
func (c *checker) mirrorRoutes(path string, s *Service, versions map[string]int) []mirrorRoute {
	if len(s.MirrorRoutes) == 0 {
		return nil
	}
	if len(s.MirrorRoutes) > MaxMirrorRoutes {
		c.add(path+".mirror_routes", "too many mirror routes (%d, at most %d)", len(s.MirrorRoutes), MaxMirrorRoutes)
		return nil
	}
	out := make([]mirrorRoute, 0, len(s.MirrorRoutes))
	names := map[string]string{}
	for i := range s.MirrorRoutes {
		rp := index(path+".mirror_routes", i)
		r := &s.MirrorRoutes[i]
		c.name(rp+".name", r.Name, "mirror route name")
		if first, dup := names[r.Name]; dup && r.Name != "" {
			c.add(rp+".name", "duplicate mirror route name %q (also %s)", r.Name, first)
		}
		names[r.Name] = rp
		mr := mirrorRoute{rule: rule{name: r.Name, version: -1}}
		if m := c.mirrorTo(rp, s, versions, r.Version, r.Percent); m != nil {
			mr.mirror = *m
		}
		switch {
		case len(r.When) == 0:
			c.add(rp+".when", "no conditions: a mirror route needs at least one (the service's mirror copies from every request)")
		case len(r.When) > MaxConditions:
			c.add(rp+".when", "too many conditions (%d, at most %d)", len(r.When), MaxConditions)
		default:
			for j := range r.When {
				mr.conds = append(mr.conds, c.condition(index(rp+".when", j), &r.When[j]))
			}
		}
		out = append(out, mr)
	}
	return out
}

// mirrorFor returns the mirror that decides req's copy: the first mirror
// route that matches it, else the service's mirror (nil: none).
func (s *service) mirrorFor(req *Request, query string) *mirrorSpec {
	for i := range s.mirrorRoutes {
		if s.mirrorRoutes[i].matches(req, query) {
			return &s.mirrorRoutes[i].mirror
		}
	}
	return s.mirror
}

// keepMirrorRoutes gives each mirror route of s whose name and share are
// unchanged from prev's the round-robin position it had there.
func (s *service) keepMirrorRoutes(prev *service) {
	for i := range s.mirrorRoutes {
		m := &s.mirrorRoutes[i].mirror
		if m.rr == nil {
			continue
		}
		for j := range prev.mirrorRoutes {
			pm := &prev.mirrorRoutes[j]
			if pm.name == s.mirrorRoutes[i].name && pm.mirror.rr != nil && pm.mirror.rr.weights.Equal(m.rr.weights) {
				m.rr = pm.mirror.rr
				break
			}
		}
	}
}

// explainMirrorRoutes traces the service's mirror routes for req, up to
// the one that matched, and returns its index (-1: none matched).
func (e *Explanation) explainMirrorRoutes(s *service, req *Request, query string) int {
	for i := range s.mirrorRoutes {
		r := &s.mirrorRoutes[i]
		ok, why := r.explain(req, query)
		e.MirrorRoutesTried = append(e.MirrorRoutesTried, RuleTrace{Rule: r.name, Matched: ok, Why: why})
		if ok {
			return i
		}
	}
	return -1
}

// pathOf returns the path of a request target without its query string
// (and fragment): what a path condition compares.
func pathOf(target string) string {
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		return target[:i]
	}
	return target
}
