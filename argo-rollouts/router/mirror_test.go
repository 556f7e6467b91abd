package router

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestMirrorConditions(t *testing.T) {
	tests := []struct {
		name    string
		match   MirrorMatch
		want    string // the conditions as JSON
		wantErr string
	}{
		{"method, path and headers, in that order, headers by name",
			MirrorMatch{Method: &StringMatch{Exact: "POST"}, Path: &StringMatch{Prefix: "/api/"},
				Headers: map[string]StringMatch{"x-b": {Regex: "1|2"}, "x-a": {Exact: "true"}}},
			`[{"request":"method","exact":"POST"},{"request":"path","prefix":"/api/"},{"header":"x-a","exact":"true"},{"header":"x-b","regex":"1|2"}]`, ""},
		{"a path regex", MirrorMatch{Path: &StringMatch{Regex: "/users/[0-9]+"}}, `[{"request":"path","regex":"/users/[0-9]+"}]`, ""},
		{"no condition: every request", MirrorMatch{}, `[{"request":"path","prefix":"/"}]`, ""},
		{"an empty method match", MirrorMatch{Method: &StringMatch{}}, "", "setMirrorRoute.match[0].method: set one of exact, prefix, regex"},
		{"two operators", MirrorMatch{Path: &StringMatch{Exact: "/a", Prefix: "/"}}, "", "setMirrorRoute.match[0].path: set only one of exact, prefix, regex"},
		{"an empty header value", MirrorMatch{Headers: map[string]StringMatch{"x-a": {}}}, "", `setMirrorRoute.match[0].headers["x-a"]: set one of`},
		{"an empty header name", MirrorMatch{Headers: map[string]StringMatch{"": {Exact: "1"}}}, "", "setMirrorRoute.match[0].headers: a header name is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mirrorConditions(0, tc.match)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(got)
			if string(b) != tc.want {
				t.Fatalf("conditions %s, want %s", b, tc.want)
			}
		})
	}
}

func TestMirrorStepNames(t *testing.T) {
	for _, tc := range []struct {
		name, step string
		want       bool
	}{
		{"mirror", "mirror", true}, {"mirror.1", "mirror", true}, {"mirror.12", "mirror", true},
		{"mirror.01", "mirror", false}, {"mirror.", "mirror", false}, {"mirror.x", "mirror", false},
		{"mirrors", "mirror", false}, {"mirror.1.2", "mirror", false}, {"other", "mirror", false},
	} {
		if got := ofStep(tc.name, tc.step); got != tc.want {
			t.Errorf("ofStep(%q, %q) = %v", tc.name, tc.step, got)
		}
	}
	if mirrorRouteName("m", 0) != "m" || mirrorRouteName("m", 2) != "m.2" {
		t.Fatal("mirrorRouteName")
	}
	hundred, over := int32(100), int32(101)
	if p, err := mirrorPercent(nil); p != 100 || err != nil {
		t.Fatalf("nil percentage: %d %v", p, err)
	}
	if p, err := mirrorPercent(&hundred); p != 100 || err != nil {
		t.Fatalf("100: %d %v", p, err)
	}
	if _, err := mirrorPercent(&over); err == nil || !strings.Contains(err.Error(), "setMirrorRoute.percentage: must be between 0 and 100 (got 101)") {
		t.Fatalf("101: %v", err)
	}
}

// fakeAdmin is a splitter admin API that lists the given mirror routes
// and records every mutation, answering status for DELETEs of names in
// conflict.
type fakeAdmin struct {
	mu       sync.Mutex
	calls    []string
	conflict map[string]bool
}

func (f *fakeAdmin) server(t *testing.T, mirrorRoutes string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			io.WriteString(w, `{"name": "api", "stable": "stable", "weights": {"stable": 100, "canary": 0}, "runtime_routes": [], "mirror_routes": `+mirrorRoutes+`}`)
			return
		}
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		call := r.Method + " " + r.URL.RequestURI()
		if len(body) > 0 {
			call += " " + string(body)
		}
		f.calls = append(f.calls, call)
		f.mu.Unlock()
		name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		if r.Method == http.MethodDelete && f.conflict[name] {
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"error": "belongs to another owner"}`)
			return
		}
		io.WriteString(w, `{}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func rolloutFor(srv *httptest.Server) Rollout {
	return Rollout{Namespace: "shop", Name: "api", Config: []byte(`{"service": "api", "adminURL": "` + srv.URL + `"}`)}
}

// SetMirrorRoute puts one mirror route per match (the canary, the
// percentage, the Rollout's owner), removes the step's extra ones from a
// longer step before, and with no match removes the step's: only the
// Rollout's, and a 409 is not an error.
func TestSetMirrorRouteCalls(t *testing.T) {
	listed := `[{"name": "mirror", "owner": "argo-rollouts:shop/api"}, {"name": "mirror.1", "owner": "argo-rollouts:shop/api"},
		{"name": "mirror.2", "owner": "argo-rollouts:shop/api"}, {"name": "mirror.3", "owner": "someone-else"},
		{"name": "other", "owner": "argo-rollouts:shop/api"}, {"name": "ops", "owner": ""}]`
	pct := int32(50)
	tests := []struct {
		name  string
		route MirrorRoute
		want  []string
	}{
		{"two matches", MirrorRoute{Name: "mirror", Percentage: &pct, Matches: []MirrorMatch{
			{Headers: map[string]StringMatch{"x-canary": {Exact: "true"}}}, {Method: &StringMatch{Exact: "POST"}}}},
			[]string{
				`PUT /v1/services/api/mirror-routes/mirror {"owner":"argo-rollouts:shop/api","percent":50,"version":"canary","when":[{"header":"x-canary","exact":"true"}]}`,
				`PUT /v1/services/api/mirror-routes/mirror.1 {"owner":"argo-rollouts:shop/api","percent":50,"version":"canary","when":[{"request":"method","exact":"POST"}]}`,
				`DELETE /v1/services/api/mirror-routes/mirror.2?owner=argo-rollouts%3Ashop%2Fapi`,
			}},
		{"no percentage is 100", MirrorRoute{Name: "other", Matches: []MirrorMatch{{}}},
			[]string{`PUT /v1/services/api/mirror-routes/other {"owner":"argo-rollouts:shop/api","percent":100,"version":"canary","when":[{"request":"path","prefix":"/"}]}`}},
		{"no match removes the step's", MirrorRoute{Name: "mirror"},
			[]string{
				`DELETE /v1/services/api/mirror-routes/mirror?owner=argo-rollouts%3Ashop%2Fapi`,
				`DELETE /v1/services/api/mirror-routes/mirror.1?owner=argo-rollouts%3Ashop%2Fapi`,
				`DELETE /v1/services/api/mirror-routes/mirror.2?owner=argo-rollouts%3Ashop%2Fapi`,
			}},
		{"no match, nothing of the Rollout's", MirrorRoute{Name: "ops"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeAdmin{conflict: map[string]bool{"mirror.1": true}}
			srv := f.server(t, listed)
			r := New(Options{HTTP: srv.Client()})
			if err := r.SetMirrorRoute(t.Context(), rolloutFor(srv), tc.route); err != nil {
				t.Fatal(err)
			}
			if strings.Join(f.calls, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(f.calls, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	t.Run("refused before any call", func(t *testing.T) {
		over := int32(150)
		for _, mr := range []MirrorRoute{
			{Name: "", Matches: []MirrorMatch{{}}},
			{Name: "a b", Matches: []MirrorMatch{{}}},
			{Name: "m", Percentage: &over, Matches: []MirrorMatch{{}}},
			{Name: "m", Matches: []MirrorMatch{{}, {Path: &StringMatch{}}}},
		} {
			f := &fakeAdmin{}
			srv := f.server(t, "[]")
			if err := New(Options{HTTP: srv.Client()}).SetMirrorRoute(t.Context(), rolloutFor(srv), mr); err == nil || len(f.calls) != 0 {
				t.Fatalf("%+v: error %v, calls %v", mr, err, f.calls)
			}
		}
	})
}

// RemoveManagedRoutes removes every mirror route of the Rollout, and no
// other.
func TestRemoveManagedMirrorRoutes(t *testing.T) {
	f := &fakeAdmin{}
	srv := f.server(t, `[{"name": "a", "owner": "argo-rollouts:shop/api"}, {"name": "b", "owner": "argo-rollouts:shop/other"}, {"name": "c", "owner": ""}]`)
	if err := New(Options{HTTP: srv.Client()}).RemoveManagedRoutes(t.Context(), rolloutFor(srv)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.calls, "\n"); got != `DELETE /v1/services/api/mirror-routes/a?owner=argo-rollouts%3Ashop%2Fapi` {
		t.Fatalf("calls:\n%s", got)
	}
}
