package split

import (
	"fmt"
	"strconv"
	"strings"
)

// Explanation is a decision plus why: rules tried, bucket, weights. It is
// for humans and the admin API; it allocates and does not advance the
// round-robin counter.
type Explanation struct {
	Decision   Decision    `json:"-"`
	Service    string      `json:"service,omitempty"`
	Version    string      `json:"version,omitempty"`
	Reason     string      `json:"reason"`
	Rule       string      `json:"rule,omitempty"`
	Bucket     *int        `json:"bucket,omitempty"`
	RulesTried []RuleTrace `json:"rules_tried,omitempty"`
	Weights    Weights     `json:"weights,omitempty"`
	StickyKey  string      `json:"sticky_key,omitempty"`
	// Assign describes the service's key assignment (sticky.assign);
	// Assign.Assigned says this request would be given a fresh key.
	Assign *AssignTrace `json:"assign,omitempty"`
	// Mirror is the version this request would also be copied to ("":
	// none); MirrorPercent the share of the mirror that applies to it (the
	// mirror route that matched it, else the service's mirror), when
	// there is one; MirrorRoute names that mirror route, and
	// MirrorRoutesTried traces the service's mirror routes up to it.
	Mirror            string      `json:"mirror,omitempty"`
	MirrorPercent     *Percent    `json:"mirror_percent,omitempty"`
	MirrorRoute       string      `json:"mirror_route,omitempty"`
	MirrorRoutesTried []RuleTrace `json:"mirror_routes_tried,omitempty"`
	Experiments       []Variant   `json:"experiments,omitempty"`
	Notes             []string    `json:"notes,omitempty"`
}

// AssignTrace is a service's key assignment in an Explanation.
type AssignTrace struct {
	Cookie string   `json:"cookie"`
	MaxAge Duration `json:"max_age"`
	Secure bool     `json:"secure"`
	// Assigned: the request carries no key and would be given one; the
	// version is then its bucket's (unknown until the key is drawn).
	Assigned bool `json:"assigned"`
	// SetCookie is the response header's value, with <key> for the key.
	SetCookie string `json:"set_cookie,omitempty"`
}

// RuleTrace is one rule's evaluation in an Explanation.
type RuleTrace struct {
	Rule    string `json:"rule"`
	Matched bool   `json:"matched"`
	Why     string `json:"why"` // e.g. `when[0]: header x-beta is absent`
}

// Explain decides like Decide would and says why, without counting the
// request as traffic: for a request that falls through to the weights, it
// reports the version the next such request will get.
func (t *Table) Explain(req *Request) Explanation {
	var e Explanation
	d := &e.Decision
	t.decide(req, d, true)
	e.Service, e.Version, e.Reason, e.Rule = d.Service, d.Version, d.Reason.String(), d.Rule
	if d.Bucket >= 0 {
		b := d.Bucket
		e.Bucket = &b
	}
	e.Experiments = append([]Variant(nil), d.Variants()...)

	host := hostOf(authority(req))
	si := t.lookup(host)
	if si < 0 {
		e.Notes = append(e.Notes, fmt.Sprintf("no service matches host %q and no service is on \"*\": Envoy's default route applies", host))
		return e
	}
	s := t.services[si]
	cfg := &t.cfg.Services[si]
	e.Weights = cfg.Weights.Clone()
	e.StickyKey = s.sticky.String()
	if s.assign != nil {
		a := cfg.Sticky.Assign
		e.Assign = &AssignTrace{Cookie: a.Cookie, MaxAge: a.MaxAge, Secure: a.Secure}
		if e.StickyKey == "" {
			e.StickyKey = "cookie " + a.Cookie
		}
	}
	query := queryOf(req.Path)
	m := s.mirror
	if i := e.explainMirrorRoutes(s, req, query); i >= 0 {
		m, e.MirrorRoute = &s.mirrorRoutes[i].mirror, s.mirrorRoutes[i].name
	}
	if m != nil {
		p := Percent(m.bp)
		e.MirrorPercent = &p
	}
	e.Mirror = d.mirror
	e.Notes = append(e.Notes, fmt.Sprintf("host %q matched service %s (hosts %s)", host, s.name, strings.Join(cfg.Hosts, ", ")))

	for i := range s.rules {
		r := &s.rules[i]
		ok, why := r.explain(req, query)
		e.RulesTried = append(e.RulesTried, RuleTrace{Rule: r.name, Matched: ok, Why: why})
		if ok {
			break
		}
	}
	switch d.Reason {
	case ReasonHeaderMatch:
		e.Notes = append(e.Notes, fmt.Sprintf("rule %s routes to %s; rules win over the weights", d.Rule, d.Version))
	case ReasonStickyRouting:
		key := keyValue(req, s.sticky)
		e.Notes = append(e.Notes, fmt.Sprintf("sticky key %s = %q: FNV-1a-32(%q) %% %d = bucket %d, which %s owns (%s)",
			s.sticky, key, s.name+":"+key, Buckets, d.Bucket, d.Version, s.rangeOf(d.Version)))
	case ReasonWeightedRouting:
		if s.sticky != (keySource{}) {
			e.Notes = append(e.Notes, fmt.Sprintf("no sticky key (%s) in the request", s.sticky))
		}
		if s.assign != nil {
			if v := keyValue(req, keySource{cookie: s.assign.cookie}); v != "" {
				e.Notes = append(e.Notes, fmt.Sprintf("cookie %s is malformed or oversized (a key is %d to %d characters of A-Z a-z 0-9 - _): it is no key", s.assign.cookie, MinKeyLen, MaxKeyLen))
			}
			e.explainAssigned(s, m)
			break
		}
		e.Notes = append(e.Notes, fmt.Sprintf("smooth weighted round-robin: the next unkeyed request goes to %s (this explanation did not count as one)", d.Version))
	}
	if m != nil && (e.Assign == nil || !e.Assign.Assigned) {
		e.explainMirror(s, m, e.MirrorRoute, d, req)
	}
	for _, w := range cfg.Weights {
		if w.BasisPoints == 0 {
			e.Notes = append(e.Notes, fmt.Sprintf("version %s has weight 0 and gets traffic only through rules", w.Version))
		}
	}
	return e
}

// explainAssigned rewrites the explanation of an unkeyed request of a
// service that assigns keys: it would get a fresh key, and the key's
// bucket (not the round-robin) would pick its version.
func (e *Explanation) explainAssigned(s *service, m *mirrorSpec) {
	e.Assign.Assigned = true
	e.Assign.SetCookie = s.assign.prefix + "<key>" + s.assign.suffix
	e.Reason, e.Version, e.Bucket = ReasonStickyAssigned.String(), "", nil
	var ranges []string
	lo := 0
	for i, vi := range s.order {
		if s.upper[i] > lo {
			ranges = append(ranges, fmt.Sprintf("%s [%d, %d)", s.versions[vi], lo, s.upper[i]))
		}
		lo = s.upper[i]
	}
	e.Notes = append(e.Notes, fmt.Sprintf("a fresh random key would be assigned and set in cookie %s on the response; its bucket picks the version: %s",
		s.assign.cookie, strings.Join(ranges, ", ")))
	if m != nil && m.bp > 0 {
		e.Notes = append(e.Notes, fmt.Sprintf("%s of keys are also copied to %s (by the key's mirror bucket)", FormatPercent(m.bp)+" %", m.name))
	}
}

// explainMirror says whether and why the request would be copied by m,
// the service's mirror (route "") or the mirror route named route.
func (e *Explanation) explainMirror(s *service, m *mirrorSpec, route string, d *Decision, req *Request) {
	share := FormatPercent(m.bp) + " %"
	by := ""
	if route != "" {
		by = fmt.Sprintf("mirror route %s matched (it decides the copy, not the service's mirror): ", route)
	}
	switch key := s.stickyKey(req); {
	case d.ver-1 == m.version:
		e.Notes = append(e.Notes, fmt.Sprintf("%snot mirrored: %s serves the request itself", by, m.name))
	case m.bp == 0:
		e.Notes = append(e.Notes, fmt.Sprintf("%smirror to %s at 0 %%: nothing is copied", by, m.name))
	case key != "":
		b := MirrorBucket(s.name, key)
		verb := "not mirrored"
		if d.mirror != "" {
			verb = "mirrored"
		}
		e.Notes = append(e.Notes, fmt.Sprintf("%s%s to %s: FNV-1a-32(%q) %% %d = mirror bucket %d, the share is [0, %d) (%s)",
			by, verb, m.name, s.name+":mirror:"+key, Buckets, b, m.bp, share))
	case d.mirror != "":
		e.Notes = append(e.Notes, fmt.Sprintf("%smirrored to %s: %s round-robin copies exactly %s of unkeyed requests, and the next one is copied", by, m.name, possessive(route), share))
	default:
		e.Notes = append(e.Notes, fmt.Sprintf("%snot mirrored: %s round-robin copies exactly %s of unkeyed requests to %s, and not the next one", by, possessive(route), share, m.name))
	}
}

// possessive names the round-robin of the mirror that applies.
func possessive(route string) string {
	if route == "" {
		return "the mirror's"
	}
	return "the mirror route's"
}

// rangeOf describes the sticky buckets version owns, e.g. "[0, 2000)".
func (s *service) rangeOf(version string) string {
	lo := 0
	for i, vi := range s.order {
		if s.versions[vi] == version {
			return "[" + strconv.Itoa(lo) + ", " + strconv.Itoa(s.upper[i]) + ")"
		}
		lo = s.upper[i]
	}
	return "none"
}

// explain evaluates r like matches does and says why it failed (the first
// condition that does not hold) or that it matched.
func (r *rule) explain(req *Request, query string) (bool, string) {
	for i := range r.conds {
		c := &r.conds[i]
		if !c.holds(req, query) {
			return false, fmt.Sprintf("when[%d]: %s", i, c.whyNot(req, query))
		}
	}
	if len(r.conds) == 1 {
		return true, "when[0] holds"
	}
	return true, fmt.Sprintf("all %d conditions hold", len(r.conds))
}

// whyNot describes a condition that does not hold.
func (c *condition) whyNot(req *Request, query string) string {
	what := c.src.String() + " " + c.name
	if c.src == srcMethod || c.src == srcPath {
		what = "the request's " + c.name
	}
	values := c.values(req, query)
	switch {
	case c.op == opAbsent:
		return what + " is present"
	case len(values) == 0:
		return what + " is absent"
	case c.op == opPresent: // cannot fail when values exist; kept total
		return what + " is absent"
	}
	quoted := make([]string, 0, len(values))
	for _, v := range values {
		if len(v) > 64 {
			v = v[:64] + "..."
		}
		quoted = append(quoted, strconv.Quote(v))
	}
	verb := map[operator]string{opExact: "equals", opPrefix: "starts with", opSuffix: "ends with", opContains: "contains", opRegex: "matches regex"}[c.op]
	fold := ""
	if c.fold || c.op == opRegex && strings.HasPrefix(c.re.String(), "(?i)") {
		fold = " (ignoring case)"
	}
	return fmt.Sprintf("%s is %s; no value %s %q%s", what, strings.Join(quoted, ", "), verb, c.value, fold)
}

// values lists the source's values as sent (for explanations only).
func (c *condition) values(req *Request, query string) []string {
	var out []string
	switch c.src {
	case srcHeader:
		for _, h := range req.Headers {
			if equalFoldASCII(h.Name, c.name) {
				out = append(out, h.Value)
			}
		}
	case srcCookie:
		for _, h := range req.Headers {
			if !equalFoldASCII(h.Name, "cookie") {
				continue
			}
			for rest := h.Value; rest != ""; {
				var name, value string
				name, value, rest = nextCookie(rest)
				if name == c.name {
					out = append(out, value)
				}
			}
		}
	case srcQuery:
		for rest := query; rest != ""; {
			var pair string
			pair, rest, _ = strings.Cut(rest, "&")
			name, value, _ := strings.Cut(pair, "=")
			if pair != "" && queryNameIs(name, c.name) {
				out = append(out, value)
			}
		}
	case srcMethod:
		out = append(out, req.Method)
	case srcPath:
		out = append(out, pathOf(req.Path))
	}
	return out
}
