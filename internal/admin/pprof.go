package admin

import (
	"net/http"
	"net/http/pprof"
)

// registerPprof serves the runtime profiles under /debug/pprof/ on the
// admin mux. The handlers are wired one by one because importing
// net/http/pprof only for its init would put them on DefaultServeMux,
// which nothing here serves and which other code could expose by mistake.
//
// Profiles reveal the command line and code paths, and a CPU profile or
// trace costs CPU while it runs, so they are guarded like mutations: the
// bearer token when one is configured, else a loopback Host. The admin
// server's WriteTimeout (30 s) bounds ?seconds= for profile and trace.
func (a *api) registerPprof() {
	for _, h := range []struct {
		pattern string
		fn      http.HandlerFunc
	}{
		{"GET /debug/pprof/", pprof.Index},
		{"GET /debug/pprof/cmdline", pprof.Cmdline},
		{"GET /debug/pprof/profile", pprof.Profile},
		{"GET /debug/pprof/symbol", pprof.Symbol},
		{"POST /debug/pprof/symbol", pprof.Symbol},
		{"GET /debug/pprof/trace", pprof.Trace},
	} {
		a.mux.Handle(h.pattern, a.guardDebug(h.pattern, h.fn))
	}
}

// guardDebug checks authorisation before fn runs and counts the request
// under pattern.
func (a *api) guardDebug(pattern string, fn http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, aerr := a.authorize(r); aerr != nil {
			if aerr.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="splitter admin"`)
			}
			writeJSON(w, aerr.status, errorBody{Error: aerr.msg})
			a.count(pattern, aerr.status)
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		fn(sw, r)
		a.count(pattern, sw.status)
	})
}
