package extproc

import (
	"fmt"
	"sync/atomic"
)

// A request given a fresh sticky key (sticky.assign) gets the key's
// cookie on its response, which ext_proc can only add if Envoy sends the
// response headers: the reply asks for them (mode_override), and Envoy
// honours that only when its ext_proc filter has allow_mode_override:
// true. An Envoy still running a bootstrap rendered before this release
// (docs/upgrading.md: upgrade the bootstrap first) never sends them: the
// cookie is never set, and each request of an anonymous client gets a new
// random key, so it is split afresh every time. Nothing fails, so it is
// watched: an assigned stream that ends without its response phase is
// counted (adapter.CookieRecorder), and a run of cookieLostRun of them
// with none set in between is reported (a log line when it starts, the
// admin view's warnings while it lasts). One that ends early for another
// reason (a client gone, a reset) only breaks such a run for a while.

// cookieLostRun is how many assigned streams in a row must end without
// their response phase before it is reported.
const cookieLostRun = 16

// cookieWatch follows the last assigned streams' outcomes.
type cookieWatch struct {
	lost  atomic.Int64 // assigned streams in a row that ended without it
	total atomic.Uint64
	set   atomic.Uint64
	shown atomic.Bool // the run is reported
}

// cookieSet records an assigned stream whose cookie was added.
func (s *Server) cookieSet() {
	s.cookies.set.Add(1)
	s.cookies.lost.Store(0)
	if s.cookies.shown.CompareAndSwap(true, false) {
		s.log.Info("Envoy sends the response headers of requests given a sticky key again: their cookies are set")
	}
}

// cookieLost records an assigned stream that ended without its response
// phase.
func (s *Server) cookieLost() {
	s.cookies.total.Add(1)
	if s.cookieRec != nil {
		s.cookieRec.CookieLost(API)
	}
	if s.cookies.lost.Add(1) >= cookieLostRun && s.cookies.shown.CompareAndSwap(false, true) {
		s.log.Warn(s.CookieWarning())
	}
}

// CookieWarning says, while a run of assigned requests ended without
// their response phase, that their sticky-key cookies are not being set
// and why; "" otherwise.
func (s *Server) CookieWarning() string {
	if !s.cookies.shown.Load() {
		return ""
	}
	return fmt.Sprintf("ext_proc: the last %d requests given a sticky key (sticky.assign) ended without Envoy sending their response headers, "+
		"so their key cookie was never set and each of those clients gets a new key at every request: Envoy's ext_proc filter needs "+
		"allow_mode_override: true (and set-cookie allowed by its mutation_rules), as the bootstraps this release renders have; "+
		"upgrade Envoy's bootstrap before the splitter (docs/upgrading.md). %d such requests so far, %d cookies set",
		s.cookies.lost.Load(), s.cookies.total.Load(), s.cookies.set.Load())
}
