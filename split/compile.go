package split

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Table is a compiled, immutable configuration (plus lock-free round-robin
// counters). It is safe for concurrent use.
type Table struct {
	cfg        *Config // normalised (defaults filled in); only handed out as clones
	services   []*service
	byName     map[string]int
	exact      map[string]int // lower-case host -> service
	exactList  []hostEntry    // the same, for authorities too long for the lookup buffer
	suffixes   []hostEntry    // ".example.com" -> service, longest first
	wildcard   int            // service on "*", or -1
	exps       []experiment
	expByName  map[string]int
	defaultExp int // -1 when there are no experiments
	// outcomes is the number of distinct header outcomes (see
	// Decision.Outcome), 0 when more than MaxOutcomes.
	outcomes int
	// reads are the request headers decisions look at (RequestHeaders).
	reads []string
	// mirrors is the number of distinct mirror versions plus one (none).
	mirrors int
}

type hostEntry struct {
	host string
	svc  int
}

// service is the compiled form of one Service.
type service struct {
	name     string
	versions []string
	vids     []int // table-wide id of each version's name (1-based)
	stable   int
	// Sticky layout: order[i] owns buckets [upper[i-1], upper[i]). Non-stable
	// versions come first in declared order and stable last, so for two
	// versions the canary owns [0, share) and growing it only moves users
	// from stable to canary.
	order  []int
	upper  []int
	sticky keySource
	rules  []rule
	rr     *roundRobin
	assign *assignSpec // nil: unkeyed requests are not given a key
	mirror *mirrorSpec // nil: no mirroring
	// mirrorRoutes are tried in order before mirror; the first that
	// matches decides the request's copy (mirrorroute.go).
	mirrorRoutes []mirrorRoute
}

// assignSpec is a compiled Assign: the cookie read as a key, and the
// Set-Cookie value around a fresh key, prebuilt.
type assignSpec struct {
	cookie string
	prefix string // "name="
	suffix string // "; Path=/; Max-Age=N; HttpOnly; SameSite=Lax[; Secure]"
}

// mirrorSpec is a compiled Mirror.
type mirrorSpec struct {
	version int    // index in the service's versions
	name    string // the version's name, the mirror header's value
	mid     int    // table-wide id of name among mirror versions (1-based)
	bp      int    // share in basis points
	// salt is "<service>:mirror:": keyed requests are mirrored when
	// FNV-1a-32(salt + key) % Buckets < bp.
	salt string
	rr   *roundRobin // unkeyed requests: index 0 is mirrored; nil when bp is 0
}

type keySource struct {
	header string // lower-case
	cookie string
}

func (k keySource) String() string {
	if k.header != "" {
		return "header " + k.header
	}
	if k.cookie != "" {
		return "cookie " + k.cookie
	}
	return ""
}

type rule struct {
	name    string
	conds   []condition
	version int
}

type source uint8

const (
	srcHeader source = iota
	srcCookie
	srcQuery
	srcMethod // the request's method
	srcPath   // the request's path without its query string
)

func (s source) String() string {
	return [...]string{"header", "cookie", "query", "request", "request"}[s]
}

type operator uint8

const (
	opExact operator = iota
	opPrefix
	opSuffix
	opContains
	opRegex
	opPresent
	opAbsent
)

func (o operator) String() string {
	return [...]string{"exact", "prefix", "suffix", "contains", "regex", "present", "absent"}[o]
}

type condition struct {
	src   source
	name  string // header names lower-case; cookie and query names as written
	op    operator
	value string // lower-case (ASCII) when fold
	fold  bool
	re    *regexp.Regexp
}

type experiment struct {
	name     string
	key      keySource
	header   string
	variants []string
	upper    []int // variants[i] owns [upper[i-1], upper[i])
}

// Compile validates cfg and builds an immutable Table. Errors name their
// place, e.g. "services[1].rules[0].when[0].regex: ...", and all problems
// are reported (errors.Join of *FieldError).
func Compile(cfg *Config) (*Table, error) {
	return CompileNext(nil, cfg)
}

// CompileNext is Compile for a reload: every service of the new table whose
// name and weights are unchanged from prev (which may be nil) keeps its
// round-robin position, so a reload that does not touch a service does not
// disturb its proportions.
func CompileNext(prev *Table, cfg *Config) (*Table, error) {
	t, errs := compile(cfg, prev)
	if len(errs) > 0 {
		return nil, joinFieldErrors(errs)
	}
	return t, nil
}

const maxCompileErrors = 100

type checker struct {
	errs []*FieldError
}

func (c *checker) add(path, format string, args ...any) {
	switch {
	case len(c.errs) < maxCompileErrors:
		c.errs = append(c.errs, &FieldError{Path: path, Reason: fmt.Sprintf(format, args...)})
	case len(c.errs) == maxCompileErrors:
		c.errs = append(c.errs, &FieldError{Reason: "too many errors, the rest are not shown"})
	}
}

func compile(in *Config, prev *Table) (*Table, []*FieldError) {
	c := &checker{}
	if in == nil {
		in = &Config{}
	}
	cfg := in.Clone()
	if len(cfg.Services) == 0 {
		c.add("services", "no services: at least one is required")
		return nil, c.errs
	}
	if len(cfg.Services) > MaxServices {
		c.add("services", "too many services (%d, at most %d)", len(cfg.Services), MaxServices)
		return nil, c.errs
	}
	t := &Table{
		cfg:        cfg,
		byName:     make(map[string]int, len(cfg.Services)),
		exact:      map[string]int{},
		wildcard:   -1,
		expByName:  map[string]int{},
		defaultExp: -1,
	}
	type firstUse struct{ path, name string }
	names := map[string]firstUse{}   // lower-case service name -> first use
	hostOwner := map[string]string{} // host -> path of its first use
	for i := range cfg.Services {
		path := index("services", i)
		s := &cfg.Services[i]
		cs := c.service(path, s)
		if s.Name != "" {
			lower := strings.ToLower(s.Name)
			switch first, dup := names[lower]; {
			case !dup:
				names[lower] = firstUse{path, s.Name}
				t.byName[s.Name] = i
			case first.name == s.Name:
				c.add(path+".name", "duplicate service name %q (also %s)", s.Name, first.path)
			default:
				c.add(path+".name", "service name %q differs only in case from %q at %s", s.Name, first.name, first.path)
			}
		}
		for j, h := range s.Hosts {
			hp := index(path+".hosts", j)
			if first, dup := hostOwner[h]; dup {
				if strings.HasPrefix(first, path+".") {
					continue // reported by c.service as a duplicate within the service
				}
				if h == "*" {
					c.add(hp, "a second service on \"*\" (the first is %s): only one service may match every host", first)
				} else {
					c.add(hp, "host %q is already used by %s", h, first)
				}
				continue
			}
			hostOwner[h] = hp
			switch {
			case h == "*":
				t.wildcard = i
			case strings.HasPrefix(h, "*."):
				t.suffixes = append(t.suffixes, hostEntry{host: h[1:], svc: i})
			default:
				t.exact[h] = i
				t.exactList = append(t.exactList, hostEntry{host: h, svc: i})
			}
		}
		t.services = append(t.services, cs)
	}
	// Longest suffix first; the stable sort keeps declared order for equal
	// lengths, which cannot both match anyway.
	slices.SortStableFunc(t.suffixes, func(a, b hostEntry) int { return len(b.host) - len(a.host) })

	c.experiments(t, cfg)
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	t.numberOutcomes()
	t.reads = t.requestHeaders()
	for i, s := range t.services {
		s.rr = newRoundRobin(cfg.Services[i].Weights)
		if prev != nil {
			if j, ok := prev.byName[s.name]; ok && prev.services[j].rr.weights.Equal(cfg.Services[i].Weights) {
				s.rr = prev.services[j].rr
			}
			// An unchanged mirror keeps its place in its cycle too.
			if j, ok := prev.byName[s.name]; ok && s.mirror != nil && s.mirror.rr != nil {
				if pm := prev.services[j].mirror; pm != nil && pm.rr != nil && pm.rr.weights.Equal(s.mirror.rr.weights) {
					s.mirror.rr = pm.rr
				}
			}
			if j, ok := prev.byName[s.name]; ok {
				s.keepMirrorRoutes(prev.services[j])
			}
		}
	}
	return t, nil
}

// service validates and normalises s in place and compiles it. The result is
// only used when no error was reported.
func (c *checker) service(path string, s *Service) *service {
	cs := &service{name: s.Name, stable: -1}
	c.name(path+".name", s.Name, "service name")

	versions := c.weights(path+".weights", s.Weights, "version")
	for _, w := range s.Weights {
		cs.versions = append(cs.versions, w.Version)
	}
	if s.Stable == "" && len(s.Weights) > 0 {
		s.Stable = s.Weights[0].Version
	}
	if s.Stable != "" {
		if i, ok := versions[s.Stable]; ok {
			cs.stable = i
		} else if len(s.Weights) > 0 {
			c.add(path+".stable", "unknown version %q (declared: %s)", s.Stable, strings.Join(cs.versions, ", "))
		}
	}
	if cs.stable >= 0 {
		bound := 0
		for i, w := range s.Weights {
			if i != cs.stable {
				bound += w.BasisPoints
				cs.order = append(cs.order, i)
				cs.upper = append(cs.upper, bound)
			}
		}
		cs.order = append(cs.order, cs.stable)
		cs.upper = append(cs.upper, Buckets)
	}

	if len(s.Hosts) == 0 {
		s.Hosts = []string{"*"}
	}
	if len(s.Hosts) > MaxHosts {
		c.add(path+".hosts", "too many hosts (%d, at most %d)", len(s.Hosts), MaxHosts)
	}
	seen := map[string]bool{}
	for i := range s.Hosts {
		hp := index(path+".hosts", i)
		s.Hosts[i] = strings.ToLower(s.Hosts[i])
		if reason := checkHost(s.Hosts[i]); reason != "" {
			c.add(hp, "%s", reason)
			continue
		}
		if seen[s.Hosts[i]] {
			c.add(hp, "duplicate host %q", s.Hosts[i])
		}
		seen[s.Hosts[i]] = true
	}

	if s.Sticky != nil {
		cs.sticky, cs.assign = c.stickyKey(path+".sticky", s.Sticky)
	}
	cs.mirror = c.mirror(path+".mirror", s, versions)
	cs.mirrorRoutes = c.mirrorRoutes(path, s, versions)
	c.clusters(path, s, versions)
	c.rollout(path, s, versions)

	if len(s.Rules) > MaxRules {
		c.add(path+".rules", "too many rules (%d, at most %d)", len(s.Rules), MaxRules)
		return cs
	}
	ruleNames := map[string]string{}
	for i := range s.Rules {
		rp := index(path+".rules", i)
		r := &s.Rules[i]
		if r.Name == "" {
			r.Name = index("rules", i)
		} else {
			c.label(rp+".name", r.Name, "rule name")
		}
		if first, dup := ruleNames[r.Name]; dup {
			c.add(rp+".name", "duplicate rule name %q (also %s)", r.Name, first)
		}
		ruleNames[r.Name] = rp
		cr := rule{name: r.Name, version: -1}
		switch v, ok := versions[r.Version]; {
		case r.Version == "":
			c.add(rp+".version", "missing: a rule must name the version it routes to")
		case !ok:
			c.add(rp+".version", "unknown version %q (declared: %s)", r.Version, strings.Join(cs.versions, ", "))
		default:
			cr.version = v
		}
		switch {
		case len(r.When) == 0:
			c.add(rp+".when", "no conditions: a rule needs at least one (a rule that always matches would hide the weights)")
		case len(r.When) > MaxConditions:
			c.add(rp+".when", "too many conditions (%d, at most %d)", len(r.When), MaxConditions)
		}
		for j := range r.When {
			if len(r.When) > MaxConditions {
				break
			}
			cr.conds = append(cr.conds, c.condition(index(rp+".when", j), &r.When[j]))
		}
		cs.rules = append(cs.rules, cr)
	}
	return cs
}

// weights checks a list of shares and returns its names' indexes.
func (c *checker) weights(path string, w Weights, what string) map[string]int {
	idx := make(map[string]int, len(w))
	if len(w) == 0 {
		c.add(path, "no %ss: at least one is required", what)
		return idx
	}
	if len(w) > MaxVersions {
		c.add(path, "too many %ss (%d, at most %d)", what, len(w), MaxVersions)
		return idx
	}
	lower := map[string]string{}
	valid := true
	for i, x := range w {
		p := join(path, x.Version)
		if x.Version == "" {
			p = index(path, i)
		}
		if !c.name(p, x.Version, what+" name") {
			valid = false
			if x.Version == "" {
				continue
			}
		}
		if x.BasisPoints < 0 || x.BasisPoints > Buckets {
			c.add(p, "must be between 0 and 100 (got %s)", FormatPercent(x.BasisPoints))
			valid = false
		}
		if first, dup := lower[strings.ToLower(x.Version)]; dup {
			if first == x.Version {
				c.add(p, "duplicate %s", what)
			} else {
				c.add(p, "%s name differs only in case from %q", what, first)
			}
			valid = false
			continue
		}
		lower[strings.ToLower(x.Version)] = x.Version
		idx[x.Version] = i
	}
	if valid {
		if sum := w.Sum(); sum != Buckets {
			c.add(path, "the %ss' shares sum to %s, not 100", what, FormatPercent(sum))
		}
	}
	return idx
}

// name checks an identifier-like name: it is sent as a header value or used
// in admin URLs and metric labels, so it is limited to HTTP token
// characters.
func (c *checker) name(path, name, what string) bool {
	switch {
	case name == "":
		c.add(path, "%s is empty", what)
		return false
	case len(name) > MaxNameLen:
		c.add(path, "%s is longer than %d characters", what, MaxNameLen)
		return false
	case !isToken(name):
		c.add(path, "%s %q may only contain letters, digits and !#$%%&'*+-.^_`|~", what, name)
		return false
	}
	return true
}

// label checks a free-text name such as a rule's: printable, bounded.
func (c *checker) label(path, name, what string) {
	if len(name) > MaxNameLen {
		c.add(path, "%s is longer than %d characters", what, MaxNameLen)
		return
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			c.add(path, "%s %q contains control or invalid characters", what, name)
			return
		}
	}
}

func (c *checker) key(path string, k *Key) keySource {
	switch {
	case k.Header == "" && k.Cookie == "":
		c.add(path, "must name a header or a cookie")
	case k.Header != "" && k.Cookie != "":
		c.add(path, "names both a header and a cookie; use one")
	case k.Header != "":
		k.Header = strings.ToLower(k.Header)
		c.headerName(path+".header", k.Header)
	default:
		c.cookieName(path+".cookie", k.Cookie)
	}
	return keySource{header: k.Header, cookie: k.Cookie}
}

// stickyKey checks a service's sticky key, which may assign keys (and then
// need neither a header nor a cookie of its own).
func (c *checker) stickyKey(path string, k *Key) (keySource, *assignSpec) {
	if k.Assign == nil {
		return c.key(path, k), nil
	}
	var ks keySource
	switch {
	case k.Header != "" && k.Cookie != "":
		c.add(path, "names both a header and a cookie; use one")
	case k.Header != "":
		k.Header = strings.ToLower(k.Header)
		c.headerName(path+".header", k.Header)
	case k.Cookie != "":
		c.cookieName(path+".cookie", k.Cookie)
	}
	ks = keySource{header: k.Header, cookie: k.Cookie}
	return ks, c.assign(path+".assign", k.Assign)
}

// assign checks an assign block and prebuilds its Set-Cookie value.
func (c *checker) assign(path string, a *Assign) *assignSpec {
	ok := true
	if a.Cookie == "" {
		c.add(path+".cookie", "cookie name is empty")
		ok = false
	} else if len(a.Cookie) > MaxHeaderNameLen || !isToken(a.Cookie) {
		c.cookieName(path+".cookie", a.Cookie)
		ok = false
	}
	switch d := a.MaxAge.D(); {
	case d < time.Second || d > MaxAssignMaxAge:
		c.add(path+".max_age", "must be between 1s and %s (browsers cap cookies at 400 days), got %s", MaxAssignMaxAge, d)
		ok = false
	case d%time.Second != 0:
		c.add(path+".max_age", "must be whole seconds (Max-Age is in seconds), got %s", d)
		ok = false
	}
	if !ok {
		return nil
	}
	suffix := "; Path=/; Max-Age=" + strconv.FormatInt(int64(a.MaxAge.D()/time.Second), 10) + "; HttpOnly; SameSite=Lax"
	if a.Secure {
		suffix += "; Secure"
	}
	return &assignSpec{cookie: a.Cookie, prefix: a.Cookie + "=", suffix: suffix}
}

// MaxAssignMaxAge bounds an assign cookie's max_age: 400 days, the most
// browsers keep a cookie (RFC 6265bis).
const MaxAssignMaxAge = 400 * 24 * time.Hour

// mirror checks a service's mirror block against its versions.
func (c *checker) mirror(path string, s *Service, versions map[string]int) *mirrorSpec {
	m := s.Mirror
	if m == nil {
		return nil
	}
	return c.mirrorTo(path, s, versions, m.Version, m.Percent)
}

// mirrorTo checks a mirror's version and share (the service's mirror, or
// a mirror route's) and compiles it.
func (c *checker) mirrorTo(path string, s *Service, versions map[string]int, version string, percent Percent) *mirrorSpec {
	m := &Mirror{Version: version, Percent: percent}
	ms := &mirrorSpec{version: -1, name: m.Version, bp: int(m.Percent), salt: s.Name + ":mirror:"}
	ok := true
	switch v, known := versions[m.Version]; {
	case m.Version == "":
		c.add(path+".version", "missing: the version requests are copied to")
		ok = false
	case !known:
		c.add(path+".version", "unknown version %q (declared: %s)", m.Version, versionNames(s.Weights))
		ok = false
	default:
		ms.version = v
	}
	switch {
	case m.Percent < 0 && m.Percent != -1:
		c.add(path+".percent", "must be between 0 and 100 (got %s)", FormatPercent(int(m.Percent)))
		ok = false
	case m.Percent == -1:
		c.add(path+".percent", "missing: the share of requests copied, 0 to 100")
		ok = false
	case m.Percent > Buckets:
		c.add(path+".percent", "must be between 0 and 100 (got %s)", FormatPercent(int(m.Percent)))
		ok = false
	}
	if !ok {
		return nil
	}
	if ms.bp > 0 {
		ms.rr = newRoundRobin(Weights{{Version: m.Version, BasisPoints: ms.bp}, {BasisPoints: Buckets - ms.bp}})
	}
	return ms
}

func (c *checker) headerName(path, h string) {
	name := strings.TrimPrefix(h, ":") // pseudo-headers such as :path
	switch {
	case name == "":
		c.add(path, "header name is empty")
	case len(h) > MaxHeaderNameLen:
		c.add(path, "header name is longer than %d characters", MaxHeaderNameLen)
	case !isToken(name):
		c.add(path, "header name %q has characters not allowed in HTTP header names", h)
	}
}

func (c *checker) cookieName(path, name string) {
	switch {
	case name == "":
		c.add(path, "cookie name is empty")
	case len(name) > MaxHeaderNameLen:
		c.add(path, "cookie name is longer than %d characters", MaxHeaderNameLen)
	case !isToken(name):
		c.add(path, "cookie name %q has characters not allowed in cookie names", name)
	}
}

func (c *checker) condition(path string, w *Condition) condition {
	var cond condition
	var sources []string
	if w.Header != "" {
		sources = append(sources, "header")
		w.Header = strings.ToLower(w.Header)
		c.headerName(path+".header", w.Header)
		cond.src, cond.name = srcHeader, w.Header
	}
	if w.Cookie != "" {
		sources = append(sources, "cookie")
		c.cookieName(path+".cookie", w.Cookie)
		cond.src, cond.name = srcCookie, w.Cookie
	}
	if w.Query != "" {
		sources = append(sources, "query")
		if len(w.Query) > MaxHeaderNameLen || strings.ContainsFunc(w.Query, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			c.add(path+".query", "query parameter name is too long or has control characters")
		}
		cond.src, cond.name = srcQuery, w.Query
	}
	if w.Request != "" {
		sources = append(sources, "request")
		switch w.Request {
		case "method":
			cond.src = srcMethod
		case "path":
			cond.src = srcPath
		default:
			c.add(path+".request", "must be method or path (got %.64q)", w.Request)
		}
		cond.name = w.Request
	}
	switch len(sources) {
	case 0:
		c.add(path, "needs one of header, cookie, query or request")
	case 1:
	default:
		c.add(path, "has both %s and %s; a condition looks at one source (use two conditions)", sources[0], sources[1])
	}

	var ops []string
	for _, o := range []struct {
		op  operator
		val *string
	}{{opExact, w.Exact}, {opPrefix, w.Prefix}, {opSuffix, w.Suffix}, {opContains, w.Contains}, {opRegex, w.Regex}} {
		if o.val != nil {
			ops = append(ops, o.op.String())
			cond.op, cond.value = o.op, *o.val
		}
	}
	if w.Present {
		ops = append(ops, "present")
		cond.op = opPresent
	}
	if w.Absent {
		ops = append(ops, "absent")
		cond.op = opAbsent
	}
	switch len(ops) {
	case 0:
		c.add(path, "needs one of exact, prefix, suffix, contains, regex, present or absent")
		return cond
	case 1:
	default:
		c.add(path, "has both %s and %s; a condition has one operator", ops[0], ops[1])
		return cond
	}
	op := ops[0]
	switch cond.op {
	case opPresent, opAbsent:
		if cond.src == srcMethod || cond.src == srcPath {
			c.add(path+"."+op, "every request has a %s: compare its value (exact, prefix, suffix, contains or regex)", cond.name)
			return cond
		}
		if w.IgnoreCase {
			c.add(path+".ignore_case", "applies only to value matches, not to %s", op)
		}
		return cond
	}
	if len(cond.value) > MaxValueLen {
		c.add(path+"."+op, "longer than %d characters", MaxValueLen)
		return cond
	}
	switch cond.op {
	case opPrefix, opSuffix, opContains:
		if cond.value == "" {
			c.add(path+"."+op, "is empty, which matches every value; use present: true")
		}
	case opRegex:
		expr := "^(?:" + cond.value + ")$"
		if w.IgnoreCase {
			expr = "(?i)" + expr
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			c.add(path+".regex", "invalid regular expression (RE2 syntax): %s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			return cond
		}
		cond.re = re
		return cond
	}
	if w.IgnoreCase {
		cond.fold = true
		cond.value = lowerASCII(cond.value)
	}
	return cond
}

func (c *checker) experiments(t *Table, cfg *Config) {
	if len(cfg.Experiments) > MaxExperiments {
		c.add("experiments", "too many experiments (%d, at most %d)", len(cfg.Experiments), MaxExperiments)
		return
	}
	names := map[string]string{}
	headers := map[string]string{}
	for i := range cfg.Experiments {
		path := index("experiments", i)
		x := &cfg.Experiments[i]
		ce := experiment{name: x.Name}
		if c.name(path+".name", x.Name, "experiment name") {
			if first, dup := names[strings.ToLower(x.Name)]; dup {
				c.add(path+".name", "experiment name %q repeats (or differs only in case from) the one at %s", x.Name, first)
			} else {
				names[strings.ToLower(x.Name)] = path
				t.expByName[x.Name] = i
			}
		}
		ce.key = c.key(path+".key", &x.Key)
		if x.Key.Assign != nil {
			c.add(path+".key.assign", "only a service's sticky key can assign keys")
		}
		c.weights(path+".variants", x.Variants, "variant")
		bound := 0
		for _, v := range x.Variants {
			bound += v.BasisPoints
			ce.variants = append(ce.variants, v.Version)
			ce.upper = append(ce.upper, bound)
		}
		x.Header = strings.ToLower(x.Header)
		if x.Header == "" {
			c.add(path+".header", "missing: the request header the variant is written to")
		} else {
			c.headerName(path+".header", x.Header)
			if strings.HasPrefix(x.Header, ":") {
				c.add(path+".header", "cannot be a pseudo-header (%s)", x.Header)
			}
			if first, dup := headers[x.Header]; dup {
				c.add(path+".header", "header %q is already written by %s", x.Header, first)
			}
			headers[x.Header] = path
		}
		ce.header = x.Header
		t.exps = append(t.exps, ce)
	}
	if i, ok := t.expByName["default"]; ok {
		t.defaultExp = i
	} else if len(t.exps) > 0 {
		t.defaultExp = 0
	}
}

// checkHost accepts "host.example.com", "*.example.com" and "*". Hosts are
// compared without the port, so a port here would never match.
func checkHost(h string) string {
	if h == "*" {
		return ""
	}
	name := h
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		name = rest
		if name == "" {
			return fmt.Sprintf("host %q: a wildcard needs a domain after \"*.\"", h)
		}
	}
	if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") && name == h {
		for _, r := range name[1 : len(name)-1] {
			if !(r == ':' || r == '.' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'f')) {
				return fmt.Sprintf("host %q is not a valid IPv6 literal", h)
			}
		}
		return ""
	}
	if name == "" || len(name) > 253 {
		return fmt.Sprintf("host %q must be a host name of 1 to 253 characters", h)
	}
	if strings.Contains(name, "*") {
		return fmt.Sprintf("host %q: only a leading \"*.\" wildcard or \"*\" alone is supported", h)
	}
	if strings.Contains(name, ":") {
		return fmt.Sprintf("host %q must not include a port (ports are ignored when matching)", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" {
			return fmt.Sprintf("host %q has an empty label", h)
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '_') {
				return fmt.Sprintf("host %q may only contain letters, digits, '-', '_' and '.'", h)
			}
		}
	}
	return ""
}

// isToken reports whether s is a non-empty RFC 7230 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenByte(s[i]) {
			return false
		}
	}
	return true
}

func isTokenByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// MaxOutcomes bounds Table.Outcomes: a table with more distinct header
// outcomes does not number them (Decision.Outcome is -1).
const MaxOutcomes = 1 << 16

// numberOutcomes gives every version name an id and counts the outcomes:
// (version names + none) x reasons x (mirror versions, of the services'
// mirrors and mirror routes, + none) x every
// experiment's (variants + none).
func (t *Table) numberOutcomes() {
	ids := map[string]int{}
	for _, s := range t.services {
		s.vids = make([]int, len(s.versions))
		for i, v := range s.versions {
			id, ok := ids[v]
			if !ok {
				id = len(ids) + 1
				ids[v] = id
			}
			s.vids[i] = id
		}
	}
	mids := map[string]int{}
	number := func(m *mirrorSpec) {
		id, ok := mids[m.name]
		if !ok {
			id = len(mids) + 1
			mids[m.name] = id
		}
		m.mid = id
	}
	for _, s := range t.services {
		if s.mirror != nil {
			number(s.mirror)
		}
		for i := range s.mirrorRoutes {
			number(&s.mirrorRoutes[i].mirror)
		}
	}
	t.mirrors = len(mids) + 1
	n := (len(ids) + 1) * len(reasonNames) * t.mirrors
	for _, e := range t.exps {
		n *= len(e.variants) + 1
		if n > MaxOutcomes {
			t.outcomes = 0
			return
		}
	}
	if n > MaxOutcomes {
		n = 0
	}
	t.outcomes = n
}
