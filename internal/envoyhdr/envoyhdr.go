// Package envoyhdr holds what the ext_proc and ext_authz adapters share:
// turning Envoy header lists into a split.Request without copying values,
// checking that values are safe to hand back to Envoy, a pool of per-request
// scratch space, and a bounded cache of prebuilt responses keyed by decision.
package envoyhdr

import (
	"encoding/binary"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/trafficsplit/splitter/split"
)

// DefaultRouteHeader is the request header the decided version is written to.
const DefaultRouteHeader = "x-route-version"

// HeaderNames normalises the configured route and reason header names: an
// invalid route header falls back to the default and an invalid reason
// header (or one equal to the route header) is disabled, both logged.
// Callers are expected to have validated them; this keeps a bad name from
// ever reaching Envoy, which would fail every request.
func HeaderNames(log *slog.Logger, route, reason string) (string, string) {
	if route == "" {
		route = DefaultRouteHeader
	}
	if !ValidName(route) {
		log.Error("invalid route header name, using the default", "route_header", route, "default", DefaultRouteHeader)
		route = DefaultRouteHeader
	}
	if reason != "" && (!ValidName(reason) || reason == route) {
		log.Error("invalid reason header name, reason header disabled", "reason_header", reason)
		reason = ""
	}
	return route, reason
}

// Value returns a header's value: raw_value (what Envoy 1.27+ sends), else
// value (older Envoy, ext_authz). The result aliases the message's bytes, so
// it must not outlive the message; the message must not be modified while
// the result is in use.
func Value(h *corev3.HeaderValue) string {
	if b := h.GetRawValue(); len(b) > 0 {
		// Zero-copy: the bytes belong to a freshly unmarshalled message that
		// nobody writes to, and the string is dropped with the request
		// (Decide copies nothing out of the request into the Decision).
		return unsafe.String(unsafe.SliceData(b), len(b))
	}
	return h.GetValue()
}

// Reset clears req for reuse, dropping references into the previous
// request's buffers but keeping the Headers capacity.
func Reset(req *split.Request) {
	clear(req.Headers)
	req.Headers = req.Headers[:0]
	req.Authority, req.Method, req.Path = "", "", ""
}

// FromHeaderMap fills req from an Envoy header list (ext_proc, and ext_authz
// with encode_raw_headers). Names are lower-cased if needed; the authority
// is :authority, else host. A nil map gives an empty request.
func FromHeaderMap(req *split.Request, hm *corev3.HeaderMap) {
	Reset(req)
	for _, h := range hm.GetHeaders() {
		Add(req, h.GetKey(), Value(h))
	}
	Finish(req)
}

// Add appends one header to req and picks out the pseudo-headers the
// decision needs. The first :authority, host, :path and :method win.
func Add(req *split.Request, name, value string) {
	if hasUpper(name) {
		// Envoy sends lower-case names; a different client may not.
		name = strings.ToLower(name)
	}
	req.Headers = append(req.Headers, split.Header{Name: name, Value: value})
	switch name {
	case ":authority":
		if req.Authority == "" {
			req.Authority = value
		}
	case ":path":
		if req.Path == "" {
			req.Path = value
		}
	case ":method":
		if req.Method == "" {
			req.Method = value
		}
	}
}

// Finish falls back to the host header for the authority when the list had
// no :authority (an HTTP/1 request seen by a non-Envoy client).
func Finish(req *split.Request) {
	if req.Authority != "" {
		return
	}
	for _, h := range req.Headers {
		if h.Name == "host" {
			req.Authority = h.Value
			return
		}
	}
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// ValidValue reports whether s may be written as a header value: Envoy
// rejects a whole mutation (a local 500, even with failure_mode_allow) for
// CR, LF or NUL, and an empty route value would never match a route.
func ValidValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}

// ValidName reports whether s is a lower-case HTTP header field name that a
// mutation may set (RFC 9110 token characters, not a pseudo-header).
func ValidName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Scratch is the per-request working space of an adapter. It comes from a
// Pool so that a request allocates neither its header slice nor its
// Decision (which would escape to the heap once handed to a Recorder).
type Scratch struct {
	Req split.Request
	Dec split.Decision
	Key []byte
}

// maxPooledHeaders bounds the header capacity kept in the pool, so that one
// huge request does not pin a large slice forever.
const maxPooledHeaders = 512

// Pool is a sync.Pool of Scratch. The zero value is ready to use.
type Pool struct{ p sync.Pool }

// Get returns a cleared Scratch.
func (p *Pool) Get() *Scratch {
	if s, ok := p.p.Get().(*Scratch); ok {
		return s
	}
	return &Scratch{Req: split.Request{Headers: make([]split.Header, 0, 32)}, Key: make([]byte, 0, 64)}
}

// Put clears s and returns it to the pool.
func (p *Pool) Put(s *Scratch) {
	Reset(&s.Req)
	if cap(s.Req.Headers) > maxPooledHeaders {
		s.Req.Headers = nil
	}
	s.Dec = split.Decision{}
	s.Key = s.Key[:0]
	p.p.Put(s)
}

// AppendKey appends a key identifying everything a response depends on:
// version, reason and every (header, variant) pair. Fields are length
// prefixed, so distinct decisions never share a key.
func AppendKey(b []byte, d *split.Decision) []byte {
	b = appendField(b, d.Version)
	b = append(b, byte(d.Reason))
	for _, v := range d.Variants() {
		b = appendField(b, v.Header)
		b = appendField(b, v.Variant)
	}
	return b
}

func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Cache maps decision keys to prebuilt, immutable responses. Reads are a
// lock-free map lookup; writes copy the map (they happen only the first
// time a combination is seen). When full it starts over, which also drops
// names left behind by older configurations.
type Cache[T any] struct {
	mu  sync.Mutex
	m   atomic.Pointer[map[string]T]
	Max int // entries kept; 0 means 256
}

// Get returns the response cached under key.
func (c *Cache[T]) Get(key []byte) (T, bool) {
	if m := c.m.Load(); m != nil {
		v, ok := (*m)[string(key)]
		return v, ok
	}
	var zero T
	return zero, false
}

// Put stores v under key.
func (c *Cache[T]) Put(key []byte, v T) {
	max := c.Max
	if max <= 0 {
		max = 256
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var n map[string]T
	if old := c.m.Load(); old != nil && len(*old) < max {
		n = make(map[string]T, len(*old)+1)
		for k, ov := range *old {
			n[k] = ov
		}
	} else {
		n = make(map[string]T, 1)
	}
	n[string(key)] = v
	c.m.Store(&n)
}

// Len returns the number of cached entries.
func (c *Cache[T]) Len() int {
	if m := c.m.Load(); m != nil {
		return len(*m)
	}
	return 0
}
