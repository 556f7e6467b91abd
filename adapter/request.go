package adapter

import (
	"crypto/rand"
	"strings"
	"sync"

	"github.com/trafficsplit/splitter/split"
)

// Scratch is one request's working space: the split.Request an adapter
// fills from its wire format and the Decision the table writes. It comes
// from a Pool, so a request allocates neither its header slice nor its
// Decision (which would escape to the heap once handed to a Recorder).
type Scratch struct {
	Req split.Request
	Dec split.Decision
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
	return &Scratch{Req: split.Request{Headers: make([]split.Header, 0, 32), NewKey: RandomKey}}
}

// RandomKey is the key generator every adapter gives the engine
// (split.Request.NewKey): 128 bits from crypto/rand, the operating
// system's generator. Keys name clients, so they must not be guessable
// from one another.
func RandomKey() (k [split.KeyBytes]byte) {
	// crypto/rand.Read never fails on the platforms Go supports (it
	// crashes the program rather than return predictable bytes).
	_, _ = rand.Read(k[:])
	return k
}

// SetCookieHeader is the response header an assigned key is set in.
const SetCookieHeader = "set-cookie"

// Put clears s and returns it to the pool.
func (p *Pool) Put(s *Scratch) {
	ResetRequest(&s.Req)
	if cap(s.Req.Headers) > maxPooledHeaders {
		s.Req.Headers = nil
	}
	s.Dec = split.Decision{}
	p.p.Put(s)
}

// ResetRequest clears req for reuse, dropping references into the previous
// request's buffers but keeping the Headers capacity.
func ResetRequest(req *split.Request) {
	clear(req.Headers)
	req.Headers = req.Headers[:0]
	req.Authority, req.Method, req.Path = "", "", ""
}

// AddHeader appends one header to req, lower-casing its name if needed,
// and picks out the pseudo-headers a decision needs. Repeated headers stay
// separate entries (never comma-joined), as Envoy keeps them; the first
// :authority, :path and :method win.
func AddHeader(req *split.Request, name, value string) {
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

// FinishRequest falls back to the host header for the authority when the
// list had no :authority (an HTTP/1 request seen by a non-Envoy client).
func FinishRequest(req *split.Request) {
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
