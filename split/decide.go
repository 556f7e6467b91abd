package split

import (
	"fmt"
	"strings"
)

// Header is one request header; Name is lower-case. Pseudo-headers
// (":authority", ":path", ":method") may be present.
type Header struct {
	Name, Value string
}

// Request is what a decision looks at. The adapter fills it without
// copying header values; Decide normalises the authority itself.
type Request struct {
	Authority string // ":authority" or "host"; port and case are ignored
	Method    string
	Path      string // with query string
	Headers   []Header
	// NewKey gives a fresh random key to a request that carries none, for
	// a service whose sticky key assigns them (sticky.assign). The engine
	// does no I/O: randomness comes from the adapter. nil: such requests
	// follow the round-robin, as without assign.
	NewKey KeyGen
}

// KeyBytes is the number of random bytes in an assigned key (128 bits);
// the key is their unpadded base64url text, KeyLen characters.
const (
	KeyBytes = 16
	KeyLen   = 22
)

// KeyGen returns KeyBytes fresh random bytes (crypto/rand in the adapters).
type KeyGen func() [KeyBytes]byte

// Reason says why a version was chosen.
type Reason uint8

// The reasons, a closed set (see Reasons).
const (
	ReasonUnmatched Reason = iota
	ReasonHeaderMatch
	ReasonStickyRouting
	ReasonWeightedRouting
	// ReasonStickyAssigned: the request carried no sticky key and was
	// given a fresh one (sticky.assign), which decided it like a key.
	ReasonStickyAssigned
)

var reasonNames = [...]string{"unmatched", "header_match", "sticky_routing", "weighted_routing", "sticky_assigned"}

// String returns the wire name: unmatched, header_match, sticky_routing,
// weighted_routing, sticky_assigned.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", r)
}

// MarshalText writes the wire name, so a Reason is a JSON string.
func (r Reason) MarshalText() ([]byte, error) {
	if int(r) >= len(reasonNames) {
		return nil, fmt.Errorf("invalid reason %d", r)
	}
	return []byte(reasonNames[r]), nil
}

// UnmarshalText reads a wire name.
func (r *Reason) UnmarshalText(b []byte) error {
	v, err := ParseReason(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// ParseReason returns the Reason whose wire name is s.
func ParseReason(s string) (Reason, error) {
	for i, n := range reasonNames {
		if n == s {
			return Reason(i), nil
		}
	}
	return 0, fmt.Errorf("unknown reason %q", s)
}

// Reasons returns every Reason, in order (for pre-creating metric series).
func Reasons() []Reason {
	return []Reason{ReasonUnmatched, ReasonHeaderMatch, ReasonStickyRouting, ReasonWeightedRouting, ReasonStickyAssigned}
}

// Variant is one experiment's assignment for a request.
type Variant struct {
	Experiment string `json:"experiment"`
	Header     string `json:"header"`
	Variant    string `json:"variant"`
	Bucket     int    `json:"bucket"`
}

// Decision is the outcome for one request. Service and Version are empty
// when no service matched (Reason ReasonUnmatched).
type Decision struct {
	Service  string
	Version  string
	Reason   Reason
	Rule     string // name of the matching rule, if any
	Bucket   int    // sticky bucket, -1 when none
	variants [MaxExperiments]Variant
	nv       int
	vid      int // version name id in the table, 0 for none
	outcome  int // Outcome()+1; 0 when not numbered
	svc, ver int // Target()+1 each; 0 when no service matched
	mirror   string
	mid      int // table-wide id of mirror among mirror versions, 0 for none
	assign   *assignSpec
	key      [KeyLen]byte // the assigned key, when Reason is ReasonStickyAssigned
}

// Mirror returns the version the request is also copied to (the mirror
// header's value), "" for none.
func (d *Decision) Mirror() string { return d.mirror }

// Assigned reports whether the request was given a fresh key, whose cookie
// its response must set (SetCookie).
func (d *Decision) Assigned() bool { return d.Reason == ReasonStickyAssigned && d.assign != nil }

// AssignedKey returns the fresh key of an assigned request, "" otherwise.
// It allocates; adapters use AppendSetCookie.
func (d *Decision) AssignedKey() string {
	if !d.Assigned() {
		return ""
	}
	return string(d.key[:])
}

// AppendSetCookie appends the Set-Cookie value of an assigned request to
// dst: "<cookie>=<key>; Path=/; Max-Age=<seconds>; HttpOnly; SameSite=Lax"
// and "; Secure" when configured. For any other decision it returns dst.
func (d *Decision) AppendSetCookie(dst []byte) []byte {
	if !d.Assigned() {
		return dst
	}
	dst = append(dst, d.assign.prefix...)
	dst = append(dst, d.key[:]...)
	return append(dst, d.assign.suffix...)
}

// Variants returns the experiments that applied, in declared order.
func (d *Decision) Variants() []Variant { return d.variants[:d.nv] }

// Outcome numbers what the decision writes into a request: its version
// (by name), reason and the variant of every experiment (or none). Two
// decisions of one table with the same Outcome set the same headers, so
// adapters can keep one prebuilt answer per outcome. It is in [0,
// Table.Outcomes()) of the table that made d, or -1 when that table has
// too many outcomes to number.
func (d *Decision) Outcome() int { return d.outcome - 1 }

// Target returns where the decision's service and version sit in the
// configuration of the table that made it: service indexes
// Table.Config().Services and version that service's Weights. Both are -1
// when no service matched. Adapters use it to count per version without
// comparing names.
func (d *Decision) Target() (service, version int) { return d.svc - 1, d.ver - 1 }

// Decide routes one request. It does not allocate and reads only the
// immutable table (plus an atomic round-robin counter).
func (t *Table) Decide(req *Request, d *Decision) {
	t.decide(req, d, false)
}

// decide is Decide; with peek it reports the round-robin choice without
// advancing the counter (for Explain).
func (t *Table) decide(req *Request, d *Decision, peek bool) {
	*d = Decision{Bucket: -1}
	if si := t.lookup(hostOf(authority(req))); si >= 0 {
		s := t.services[si]
		d.Service, d.svc = s.name, si+1
		t.route(s, req, d, peek)
	}
	outcome := d.vid*len(reasonNames) + int(d.Reason)
	outcome *= t.mirrors
	outcome += d.mid
	for i := range t.exps {
		e := &t.exps[i]
		outcome *= len(e.variants) + 1
		key := keyValue(req, e.key)
		if key == "" {
			continue
		}
		b := Bucket(e.name, key)
		v := pick(e.upper, b)
		outcome += v + 1
		d.variants[d.nv] = Variant{Experiment: e.name, Header: e.header, Variant: e.variants[v], Bucket: b}
		d.nv++
	}
	if t.outcomes > 0 {
		d.outcome = outcome + 1
	}
}

func (t *Table) route(s *service, req *Request, d *Decision, peek bool) {
	query := queryOf(req.Path)
	for i := range s.rules {
		r := &s.rules[i]
		if r.matches(req, query) {
			s.set(d, r.version, ReasonHeaderMatch)
			d.Rule = r.name
			if m := s.mirrorFor(req, query); m != nil {
				if key := s.stickyKey(req); key != "" {
					mirrorKeyed(m, d, key)
				} else {
					m.unkeyed(d, peek)
				}
			}
			return
		}
	}
	if key := s.stickyKey(req); key != "" {
		d.Bucket = Bucket(s.name, key)
		s.set(d, s.order[pick(s.upper, d.Bucket)], ReasonStickyRouting)
		mirrorKeyed(s.mirrorFor(req, query), d, key)
		return
	}
	if s.assign != nil && req.NewKey != nil && !peek {
		raw := req.NewKey()
		encodeKey(&d.key, &raw)
		d.assign = s.assign
		d.Bucket = bucketOf(s.name, ":", d.key[:])
		s.set(d, s.order[pick(s.upper, d.Bucket)], ReasonStickyAssigned)
		mirrorKeyed(s.mirrorFor(req, query), d, d.key[:])
		return
	}
	v := 0
	if peek {
		v = s.rr.peek()
	} else {
		v = s.rr.take()
	}
	s.set(d, v, ReasonWeightedRouting)
	s.mirrorFor(req, query).unkeyed(d, peek)
}

// stickyKey returns the request's sticky key: the configured header or
// cookie, else a well-formed assign cookie (a malformed or oversized one
// is no key: the request is given a new one).
func (s *service) stickyKey(req *Request) string {
	if key := keyValue(req, s.sticky); key != "" {
		return key
	}
	if s.assign != nil {
		if key := keyValue(req, keySource{cookie: s.assign.cookie}); ValidKey(key) {
			return key
		}
	}
	return ""
}

// Assigned keys that a request may bring back: base64url text of 16 to
// MaxKeyLen characters (the keys splitter makes are KeyLen long).
const (
	MinKeyLen = 16
	MaxKeyLen = 64
)

// ValidKey reports whether s is a well-formed assigned key: MinKeyLen to
// MaxKeyLen characters of the URL-safe base64 alphabet.
func ValidKey[T text](s T) bool {
	if len(s) < MinKeyLen || len(s) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

const base64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// encodeKey writes raw as unpadded base64url (RFC 4648 §5) into dst.
func encodeKey(dst *[KeyLen]byte, raw *[KeyBytes]byte) {
	j := 0
	for i := 0; i+3 <= KeyBytes; i += 3 {
		v := uint(raw[i])<<16 | uint(raw[i+1])<<8 | uint(raw[i+2])
		dst[j], dst[j+1], dst[j+2], dst[j+3] = base64URL[v>>18&63], base64URL[v>>12&63], base64URL[v>>6&63], base64URL[v&63]
		j += 4
	}
	// 16 bytes: one byte left, two characters.
	v := uint(raw[KeyBytes-1]) << 16
	dst[j], dst[j+1] = base64URL[v>>18&63], base64URL[v>>12&63]
}

// mirrorKeyed marks d as mirrored when its key falls in m's share (m nil:
// no mirror).
func mirrorKeyed[T text](m *mirrorSpec, d *Decision, key T) {
	if m != nil && m.bp > 0 && d.ver-1 != m.version && bucketOf(m.salt, "", key) < m.bp {
		d.mirror, d.mid = m.name, m.mid
	}
}

// unkeyed marks d as mirrored by m's own round-robin, so that exactly its
// share of the unkeyed requests is copied (m nil: no mirror).
func (m *mirrorSpec) unkeyed(d *Decision, peek bool) {
	if m == nil || m.rr == nil || d.ver-1 == m.version {
		return
	}
	v := 0
	if peek {
		v = m.rr.peek()
	} else {
		v = m.rr.take()
	}
	if v == 0 {
		d.mirror, d.mid = m.name, m.mid
	}
}

func (s *service) set(d *Decision, version int, reason Reason) {
	d.Version, d.vid, d.ver, d.Reason = s.versions[version], s.vids[version], version+1, reason
}

// pick returns the first range whose upper bound exceeds b. Empty ranges
// (weight 0) are never picked.
func pick(upper []int, b int) int {
	for i, u := range upper {
		if b < u {
			return i
		}
	}
	return len(upper) - 1 // unreachable: the last bound is Buckets
}

func (r *rule) matches(req *Request, query string) bool {
	for i := range r.conds {
		if !r.conds[i].holds(req, query) {
			return false
		}
	}
	return true
}

func authority(req *Request) string {
	if req.Authority != "" {
		return req.Authority
	}
	for _, name := range [...]string{":authority", "host"} {
		for i := range req.Headers {
			if equalFoldASCII(req.Headers[i].Name, name) {
				return req.Headers[i].Value
			}
		}
	}
	return ""
}

// hostOf strips the port: "api.example.com:8443" -> "api.example.com",
// "[::1]:80" -> "[::1]".
func hostOf(a string) string {
	if strings.HasPrefix(a, "[") {
		if i := strings.IndexByte(a, ']'); i >= 0 {
			return a[:i+1]
		}
		return a
	}
	if i := strings.LastIndexByte(a, ':'); i >= 0 && allDigits(a[i+1:]) {
		return a[:i]
	}
	return a
}

// maxHostLen is the longest authority looked up through the lower-casing
// stack buffer; longer ones (not valid DNS names) are compared one by one.
const maxHostLen = 255

// lookup finds the service for host in Envoy's virtual-host order: exact,
// then the longest "*.suffix", then "*".
func (t *Table) lookup(host string) int {
	if len(host) <= maxHostLen {
		var buf [maxHostLen]byte
		b := buf[:len(host)]
		for i := 0; i < len(host); i++ {
			c := host[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b[i] = c
		}
		// The compiler does not allocate for a map index by string(bytes).
		if si, ok := t.exact[string(b)]; ok {
			return si
		}
	} else {
		for _, e := range t.exactList {
			if equalFoldASCII(host, e.host) {
				return e.svc
			}
		}
	}
	for _, e := range t.suffixes {
		// "*.example.com" needs at least one character before ".example.com".
		if len(host) > len(e.host) && equalFoldASCII(host[len(host)-len(e.host):], e.host) {
			return e.svc
		}
	}
	if t.wildcard < len(t.services) { // a zero Table has no services
		return t.wildcard
	}
	return -1
}

func queryOf(path string) string {
	_, q, ok := strings.Cut(path, "?")
	if !ok {
		return ""
	}
	q, _, _ = strings.Cut(q, "#")
	return q
}

// keyValue returns the first non-empty value of a sticky or experiment key.
func keyValue(req *Request, k keySource) string {
	switch {
	case k.header != "":
		for i := range req.Headers {
			if req.Headers[i].Value != "" && equalFoldASCII(req.Headers[i].Name, k.header) {
				return req.Headers[i].Value
			}
		}
	case k.cookie != "":
		for i := range req.Headers {
			if !equalFoldASCII(req.Headers[i].Name, "cookie") {
				continue
			}
			for rest := req.Headers[i].Value; rest != ""; {
				var name, value string
				name, value, rest = nextCookie(rest)
				if name == k.cookie && value != "" {
					return value
				}
			}
		}
	}
	return ""
}

// nextCookie splits the first "name=value" pair off a Cookie header value.
// Pairs without "=" yield an empty name, which no condition asks for.
func nextCookie(s string) (name, value, rest string) {
	pair, rest, _ := strings.Cut(s, ";")
	name, value, ok := strings.Cut(pair, "=")
	if !ok {
		return "", "", rest
	}
	name = trimOWS(name)
	value = trimOWS(value)
	if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
		value = value[1 : len(value)-1]
	}
	return name, value, rest
}

func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// holds evaluates one condition. A value operator holds if ANY value of the
// source matches (a header sent twice, a query parameter repeated, the same
// cookie in two Cookie headers); present holds if the source appears at
// all, even with an empty value; absent if it does not.
func (c *condition) holds(req *Request, query string) bool {
	found := false
	switch c.src {
	case srcHeader:
		for i := range req.Headers {
			if !equalFoldASCII(req.Headers[i].Name, c.name) {
				continue
			}
			found = true
			if c.op < opPresent && c.matchString(req.Headers[i].Value) {
				return true
			}
		}
	case srcCookie:
		for i := range req.Headers {
			if !equalFoldASCII(req.Headers[i].Name, "cookie") {
				continue
			}
			for rest := req.Headers[i].Value; rest != ""; {
				var name, value string
				name, value, rest = nextCookie(rest)
				if name != c.name {
					continue
				}
				found = true
				if c.op < opPresent && c.matchString(value) {
					return true
				}
			}
		}
	case srcQuery:
		for rest := query; rest != ""; {
			var pair string
			pair, rest, _ = strings.Cut(rest, "&")
			if pair == "" {
				continue
			}
			name, value, _ := strings.Cut(pair, "=")
			if !queryNameIs(name, c.name) {
				continue
			}
			found = true
			if c.op < opPresent && c.matchQuery(value) {
				return true
			}
		}
	case srcMethod:
		// Compile allows value operators only: every request has one.
		return c.op < opPresent && c.matchString(req.Method)
	case srcPath:
		return c.op < opPresent && c.matchString(pathOf(req.Path))
	}
	switch c.op {
	case opPresent:
		return found
	case opAbsent:
		return !found
	}
	return false
}

// Query names and values are percent-decoded ("+" is a space) into fixed
// stack buffers before comparison. Anything longer than the buffer, or not
// validly encoded, is compared as sent.
const (
	maxQueryName  = 256
	maxQueryValue = 2048
)

func queryNameIs(raw, want string) bool {
	if !needsDecoding(raw) {
		return raw == want
	}
	var buf [maxQueryName]byte
	if n, ok := percentDecode(buf[:], raw); ok {
		return string(buf[:n]) == want
	}
	return raw == want
}

func (c *condition) matchQuery(raw string) bool {
	if !needsDecoding(raw) {
		return c.matchString(raw)
	}
	var buf [maxQueryValue]byte
	n, ok := percentDecode(buf[:], raw)
	if !ok {
		return c.matchString(raw)
	}
	if c.op == opRegex {
		// The regexp package keeps its input in pooled state, which would
		// move buf to the heap on every call; copying only here keeps the
		// common paths allocation-free.
		return c.re.MatchString(string(buf[:n]))
	}
	return matchText(c, buf[:n])
}

func needsDecoding(s string) bool {
	return strings.IndexByte(s, '%') >= 0 || strings.IndexByte(s, '+') >= 0
}

// percentDecode decodes s into dst as a query component; ok is false when s
// does not fit or has a bad escape.
func percentDecode(dst []byte, s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if n == len(dst) {
			return 0, false
		}
		switch c := s[i]; c {
		case '+':
			dst[n] = ' '
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return 0, false
			}
			dst[n] = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		default:
			dst[n] = c
		}
		n++
	}
	return n, true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func (c *condition) matchString(v string) bool {
	if c.fold {
		return matchText(c, v)
	}
	switch c.op {
	case opExact:
		return v == c.value
	case opPrefix:
		return strings.HasPrefix(v, c.value)
	case opSuffix:
		return strings.HasSuffix(v, c.value)
	case opContains:
		return strings.Contains(v, c.value)
	case opRegex:
		return c.re.MatchString(v)
	}
	return false
}

type text interface{ ~string | ~[]byte }

// matchText is the value match for folded comparisons and decoded bytes
// (never regex). c.value is already lower-case when c.fold.
func matchText[T text](c *condition, v T) bool {
	n := len(c.value)
	switch c.op {
	case opExact:
		return len(v) == n && equalText(v, c.value, c.fold)
	case opPrefix:
		return len(v) >= n && equalText(v[:n], c.value, c.fold)
	case opSuffix:
		return len(v) >= n && equalText(v[len(v)-n:], c.value, c.fold)
	case opContains:
		for i := 0; i+n <= len(v); i++ {
			if equalText(v[i:i+n], c.value, c.fold) {
				return true
			}
		}
	}
	return false
}

// equalText compares v with want (same length), folding ASCII letters of v
// when fold.
func equalText[T text](v T, want string, fold bool) bool {
	for i := 0; i < len(want); i++ {
		b := v[i]
		if fold && 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != want[i] {
			return false
		}
	}
	return true
}

// equalFoldASCII is strings.EqualFold for ASCII, which is all header names
// are; it checks the length first, so mismatches are cheap.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
