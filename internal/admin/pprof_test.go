package admin_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/store"
)

func TestPprof(t *testing.T) {
	const token = "pprof-token"
	tests := []struct {
		name       string
		enabled    bool
		token      string
		method     string
		path       string
		auth       string
		host       string
		header     map[string]string
		wantStatus int
		wantBody   string // substring
	}{
		{name: "disabled by default", path: "/debug/pprof/", wantStatus: 404},
		{name: "disabled profile", path: "/debug/pprof/heap", wantStatus: 404},
		{name: "index on loopback without token", enabled: true, path: "/debug/pprof/", wantStatus: 200, wantBody: "goroutine"},
		{name: "named profile", enabled: true, path: "/debug/pprof/goroutine?debug=1", wantStatus: 200, wantBody: "goroutine profile"},
		{name: "heap", enabled: true, path: "/debug/pprof/heap?debug=1", wantStatus: 200, wantBody: "heap profile"},
		{name: "cmdline", enabled: true, path: "/debug/pprof/cmdline", wantStatus: 200},
		{name: "symbol", enabled: true, path: "/debug/pprof/symbol", wantStatus: 200, wantBody: "num_symbols"},
		{name: "unknown profile", enabled: true, path: "/debug/pprof/nope", wantStatus: 404},
		{name: "no token, remote Host", enabled: true, path: "/debug/pprof/", host: "10.0.0.7:9002", wantStatus: 403},
		{name: "token missing", enabled: true, token: token, path: "/debug/pprof/", wantStatus: 401},
		{name: "token wrong", enabled: true, token: token, path: "/debug/pprof/heap", auth: "Bearer nope", wantStatus: 401},
		{name: "token guards cmdline", enabled: true, token: token, path: "/debug/pprof/cmdline", wantStatus: 401},
		{name: "token right", enabled: true, token: token, path: "/debug/pprof/heap?debug=1", auth: "Bearer " + token, host: "10.0.0.7:9002", wantStatus: 200, wantBody: "heap profile"},
		{name: "wrong method", enabled: true, method: "DELETE", path: "/debug/pprof/cmdline", wantStatus: 405},
		// A page elsewhere cannot start a profile; the browser says where
		// the request comes from, and a page cannot forge that.
		{name: "cross-site", enabled: true, path: "/debug/pprof/profile?seconds=20", header: map[string]string{"Sec-Fetch-Site": "cross-site"}, wantStatus: 403, wantBody: "cross-site"},
		{name: "same-site (another port)", enabled: true, path: "/debug/pprof/trace?seconds=20", header: map[string]string{"Sec-Fetch-Site": "same-site"}, wantStatus: 403, wantBody: "cross-site"},
		{name: "foreign Origin (old browser)", enabled: true, path: "/debug/pprof/profile?seconds=20", header: map[string]string{"Origin": "http://evil.example"}, wantStatus: 403, wantBody: "cross-site"},
		{name: "cross-site with the token", enabled: true, token: token, path: "/debug/pprof/heap", auth: "Bearer " + token, header: map[string]string{"Sec-Fetch-Site": "cross-site"}, wantStatus: 403},
		{name: "typed in the address bar", enabled: true, path: "/debug/pprof/heap?debug=1", header: map[string]string{"Sec-Fetch-Site": "none"}, wantStatus: 200, wantBody: "heap profile"},
		{name: "same-origin", enabled: true, path: "/debug/pprof/heap?debug=1", header: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:9002"}, wantStatus: 200, wantBody: "heap profile"},
		{name: "own Origin (old browser)", enabled: true, path: "/debug/pprof/heap?debug=1", header: map[string]string{"Origin": "http://127.0.0.1:9002"}, wantStatus: 200, wantBody: "heap profile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.New(store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			h := admin.New(admin.Options{Store: s, Token: func() string { return tc.token }, Pprof: tc.enabled})
			method := tc.method
			if method == "" {
				method = "GET"
			}
			r := httptest.NewRequestWithContext(t.Context(), method, tc.path, nil)
			r.Host = "127.0.0.1:9002"
			if tc.host != "" {
				r.Host = tc.host
			}
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			if !strings.Contains(w.Body.String(), tc.wantBody) {
				t.Fatalf("body does not contain %q: %.300s", tc.wantBody, w.Body)
			}
			if w.Code == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without WWW-Authenticate")
			}
			if tc.token != "" && strings.Contains(w.Body.String(), tc.token) {
				t.Fatal("the token leaked into the answer")
			}
		})
	}
}
