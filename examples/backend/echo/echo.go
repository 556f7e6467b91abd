// Package echo is the example backend: an HTTP handler that answers every
// request with its version and the request headers it received, so a test
// or a person can see which version Envoy picked and what the splitter
// added (x-route-reason, x-variant).
package echo

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Reply is the JSON body of every answer except /healthz.
type Reply struct {
	Version string            `json:"version"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
}

// SetCookieHeader, sent in a request, is answered with that value as a
// Set-Cookie header: a backend that sets a cookie of its own, for checking
// that the splitter's cookie is added beside it.
const SetCookieHeader = "X-Echo-Set-Cookie"

// Handler answers /healthz with "ok" and everything else with a Reply.
// Header names are lower-cased; repeated headers are joined with ", ".
func Handler(version string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		rep := Reply{Version: version, Path: r.URL.RequestURI(), Headers: make(map[string]string, len(r.Header)+1)}
		for name, values := range r.Header {
			rep.Headers[strings.ToLower(name)] = strings.Join(values, ", ")
		}
		rep.Headers["host"] = r.Host
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend-Version", version)
		if c := r.Header.Get(SetCookieHeader); c != "" {
			w.Header().Add("Set-Cookie", c)
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
	return mux
}
