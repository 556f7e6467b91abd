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
	Decision    Decision    `json:"-"`
	Service     string      `json:"service,omitempty"`
	Version     string      `json:"version,omitempty"`
	Reason      string      `json:"reason"`
	Rule        string      `json:"rule,omitempty"`
	Bucket      *int        `json:"bucket,omitempty"`
	RulesTried  []RuleTrace `json:"rules_tried,omitempty"`
	Weights     Weights     `json:"weights,omitempty"`
	StickyKey   string      `json:"sticky_key,omitempty"`
	Experiments []Variant   `json:"experiments,omitempty"`
	Notes       []string    `json:"notes,omitempty"`
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
	e.Notes = append(e.Notes, fmt.Sprintf("host %q matched service %s (hosts %s)", host, s.name, strings.Join(cfg.Hosts, ", ")))

	query := queryOf(req.Path)
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
		e.Notes = append(e.Notes, fmt.Sprintf("smooth weighted round-robin: the next unkeyed request goes to %s (this explanation did not count as one)", d.Version))
	}
	for _, w := range cfg.Weights {
		if w.BasisPoints == 0 {
			e.Notes = append(e.Notes, fmt.Sprintf("version %s has weight 0 and gets traffic only through rules", w.Version))
		}
	}
	return e
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
	}
	return out
}
