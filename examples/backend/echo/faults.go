package echo

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Faults makes a backend fail on command: a share of its requests (every
// path but /healthz) answered 500, or reset without an answer. The share
// is spread evenly and deterministically (at 50 % every other request
// fails), so a test knows what to expect. It can also slow every request
// down (SetDelay). It is safe for concurrent use.
type Faults struct {
	mu       sync.Mutex
	permille int  // share of failing requests, per mille
	reset    bool // fail by closing the connection instead of answering 500
	seen     int  // requests since the last Set
	failed   int
	first    time.Time // the first failure since the last Set

	delay     time.Duration // added before every answer
	firstSlow time.Time     // when the first slowed request arrived since the last SetDelay
}

// SetDelay makes every request from now on wait d before it is answered
// (0: none).
func (f *Faults) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay, f.firstSlow = max(d, 0), time.Time{}
}

// FirstSlow is when the first request slowed by the last SetDelay arrived
// (zero before it): the slowdown's start as clients see it.
func (f *Faults) FirstSlow() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.firstSlow
}

// slow returns the delay for a request arriving now.
func (f *Faults) slow() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.delay > 0 && f.firstSlow.IsZero() {
		f.firstSlow = time.Now()
	}
	return f.delay
}

// Set makes percent (0..100) of the requests from now on fail: with a 500
// answer, or with a reset when reset is true. 0 heals the backend.
func (f *Faults) Set(percent float64, reset bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.permille = min(max(int(percent*10+0.5), 0), 1000)
	f.reset = reset
	f.seen, f.failed, f.first = 0, 0, time.Time{}
}

// FirstFailure is when the first failure since the last Set was answered
// (zero before it), and how many requests have failed since.
func (f *Faults) FirstFailure() (time.Time, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first, f.failed
}

// fail decides the fate of the next request.
func (f *Faults) fail() (fail, reset bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.permille == 0 {
		return false, false
	}
	// Bresenham: the request fails when it carries the failed count over a
	// whole number, so failures are spread evenly at any share.
	f.seen++
	if f.seen*f.permille/1000 == (f.seen-1)*f.permille/1000 {
		return false, false
	}
	f.failed++
	if f.first.IsZero() {
		f.first = time.Now()
	}
	return true, f.reset
}

// Wrap returns h failing as f says.
func (f *Faults) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			h.ServeHTTP(w, r)
			return
		}
		if d := f.slow(); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		fail, reset := f.fail()
		switch {
		case !fail:
			h.ServeHTTP(w, r)
		case reset:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					if tcp, ok := conn.(*net.TCPConn); ok {
						_ = tcp.SetLinger(0) // RST, not FIN
					}
					_ = conn.Close()
					return
				}
			}
			http.Error(w, "injected fault", http.StatusInternalServerError)
		default:
			http.Error(w, "injected fault", http.StatusInternalServerError)
		}
	})
}
