package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// mirrorRoute copies pct basis points of the requests whose header name
// equals value to version.
func mirrorRoute(name, header, value, version string, pct int, owner string) store.MirrorRoute {
	return store.MirrorRoute{Name: name, When: []split.Condition{{Header: header, Exact: str(value)}}, Version: version, Percent: split.Percent(pct), Owner: owner}
}

// copies decides n unkeyed requests for api carrying the headers and
// counts those copied per mirror version ("" for none).
func copies(t *testing.T, s *store.Store, n int, headers ...string) map[string]int {
	t.Helper()
	req := split.Request{Authority: "api.example.com", Method: "GET", Path: "/"}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Headers = append(req.Headers, split.Header{Name: headers[i], Value: headers[i+1]})
	}
	out := map[string]int{}
	tb := s.Load().Table
	for range n {
		var d split.Decision
		tb.Decide(&req, &d)
		out[d.Mirror()]++
	}
	return out
}

// withCanary is api with the canary serving nobody (so that every request
// can be copied to it), a rule and no mirror.
func withCanary() *split.Config { return withRule(weights("v1", 10000, "v2", 0)) }

// Mirror routes are in force in the order of their names, ahead of the
// service's mirror; their owner decides who replaces or removes them.
func TestMirrorRoutesInForce(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	mustApply(t, s, withCanary(), "a")
	if _, err := s.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 1000}, "operator"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []store.MirrorRoute{
		mirrorRoute("b-half", "x-canary", "true", "v2", 5000, "argo-rollouts:shop/api"),
		mirrorRoute("a-none", "x-quiet", "1", "v2", 0, ""),
	} {
		ch, err := s.PutMirrorRoute(t.Context(), "api", r, "test")
		if err != nil || ch.Old != nil || ch.New == nil || !ch.New.Equal(r) {
			t.Fatalf("PutMirrorRoute %s: %v %+v", r.Name, err, ch)
		}
	}
	if got := copies(t, s, 1000, "x-canary", "true"); got["v2"] != 500 {
		t.Fatalf("x-canary: %v, want exactly 500 copies", got)
	}
	if got := copies(t, s, 1000, "x-canary", "true", "x-quiet", "1"); got["v2"] != 0 {
		t.Fatalf("a-none first: %v, want no copy", got)
	}
	if got := copies(t, s, 1000); got["v2"] != 100 {
		t.Fatalf("no mirror route: %v, want the service's 100", got)
	}
	if names := mirrorRouteNames(s.Load(), "api"); names != "a-none,b-half" {
		t.Fatalf("mirror routes in force: %s", names)
	}

	gen := s.Load().Generation
	if ch, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("b-half", "x-canary", "true", "v2", 5000, "argo-rollouts:shop/api"), "test"); err != nil || s.Load().Generation != gen || ch.Old == nil {
		t.Fatalf("the same again: %v, generation %d -> %d", err, gen, s.Load().Generation)
	}
	var oe *store.OwnerError
	if _, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("b-half", "x-canary", "true", "v2", 100, "argo-rollouts:shop/other"), "test"); !errors.As(err, &oe) || oe.Owner != "argo-rollouts:shop/api" {
		t.Fatalf("another owner replaces: %v", err)
	}
	if _, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("b-half", "x-canary", "true", "v2", 100, ""), "test"); !errors.As(err, &oe) {
		t.Fatalf("an operator replaces an owned one: %v", err)
	}
	if _, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("a-none", "x-quiet", "1", "v2", 0, "argo-rollouts:shop/api"), "test"); !errors.As(err, &oe) || oe.Owner != "" {
		t.Fatalf("an owner takes an operator's: %v", err)
	}
	if _, err := s.DeleteMirrorRoute(t.Context(), "api", "a-none", "argo-rollouts:shop/api", "test"); !errors.As(err, &oe) {
		t.Fatalf("an owner removes an operator's: %v", err)
	}
	if _, err := s.DeleteMirrorRoute(t.Context(), "api", "b-half", "argo-rollouts:shop/other", "test"); !errors.As(err, &oe) {
		t.Fatalf("another owner removes: %v", err)
	}
	ch, err := s.DeleteMirrorRoute(t.Context(), "api", "b-half", "argo-rollouts:shop/api", "test")
	if err != nil || ch.Old == nil || ch.Old.Name != "b-half" {
		t.Fatalf("the owner removes: %v %+v", err, ch)
	}
	if got := copies(t, s, 1000, "x-canary", "true"); got["v2"] != 100 {
		t.Fatalf("after the removal: %v, want the service's mirror again (100)", got)
	}
	gen = s.Load().Generation
	if ch, err := s.DeleteMirrorRoute(t.Context(), "api", "b-half", "argo-rollouts:shop/api", "test"); err != nil || ch.Old != nil || s.Load().Generation != gen {
		t.Fatalf("removing it again: %v %+v", err, ch)
	}
	if _, err := s.DeleteMirrorRoute(t.Context(), "api", "a-none", "", "operator"); err != nil {
		t.Fatalf("an operator removes any: %v", err)
	}
	if _, err := s.DeleteMirrorRoute(t.Context(), "nope", "x", "", "operator"); !errors.Is(err, split.ErrUnknownService) {
		t.Fatalf("unknown service: %v", err)
	}
	if s.Load().MirrorRoutes != nil {
		t.Fatalf("mirror routes left: %v", s.Load().MirrorRoutes)
	}
}

func mirrorRouteNames(snap *store.Snapshot, service string) string {
	var names []string
	for _, r := range snap.MirrorRoutes[service] {
		names = append(names, r.Name)
	}
	return strings.Join(names, ",")
}

// Bad mirror routes are refused with errors that name the field, relative
// to the mirror route; nothing changes.
func TestMirrorRouteRefused(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	mustApply(t, s, withCanary(), "a")
	path := func(r store.MirrorRoute, p string) store.MirrorRoute {
		r.When[0].Header, r.When[0].Request = "", p
		return r
	}
	regex := func(r store.MirrorRoute, re string) store.MirrorRoute {
		r.When[0].Exact, r.When[0].Regex = nil, str(re)
		return r
	}
	tests := []struct {
		name    string
		service string
		r       store.MirrorRoute
		want    string
		is      error
	}{
		{"unknown version", "api", mirrorRoute("m", "x-a", "1", "v9", 100, ""), `version: unknown version "v9"`, nil},
		{"percent above 100", "api", mirrorRoute("m", "x-a", "1", "v2", 10001, ""), "percent: must be between 0 and 100", nil},
		{"no conditions", "api", store.MirrorRoute{Name: "m", Version: "v2", Percent: 100}, "when: no conditions", nil},
		{"bad regex", "api", regex(mirrorRoute("m", "x-a", "1", "v2", 100, ""), "("), "when[0].regex: invalid regular expression", nil},
		{"bad request target", "api", path(mirrorRoute("m", "x-a", "1", "v2", 100, ""), "host"), `when[0].request: must be method or path (got "host")`, nil},
		{"bad name", "api", mirrorRoute("a/b", "x-a", "1", "v2", 100, ""), `name: route name "a/b"`, nil},
		{"bad owner", "api", mirrorRoute("m", "x-a", "1", "v2", 100, "a b"), "owner:", nil},
		{"unknown service", "nope", mirrorRoute("m", "x-a", "1", "v2", 100, ""), "nope", split.ErrUnknownService},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gen := s.Load().Generation
			_, err := s.PutMirrorRoute(t.Context(), tc.service, tc.r, "test")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
			if tc.is == nil && len(split.FieldErrors(err)) == 0 {
				t.Fatalf("error %v carries no *split.FieldError", err)
			}
			if s.Load().Generation != gen {
				t.Fatal("a refused mirror route changed the state")
			}
		})
	}
	t.Run("too many", func(t *testing.T) {
		for i := range split.MaxMirrorRoutes {
			if _, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("m"+strings.Repeat("x", i), "x-a", "1", "v2", 100, ""), "test"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("one-more", "x-a", "1", "v2", 100, ""), "test"); !errors.Is(err, store.ErrMirrorRouteLimit) {
			t.Fatalf("route %d: %v", split.MaxMirrorRoutes+1, err)
		}
	})
}

// Mirror routes live beside everything else: weights, routes and the
// runtime mirror set meanwhile keep them, and they keep those.
func TestMirrorRoutesBesideTheRest(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	mustApply(t, s, withCanary(), "a")
	if _, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("m", "x-canary", "true", "v2", 10000, "o"), "test"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"SetCanaryOwned", func() error { _, err := s.SetCanaryOwned(t.Context(), "api", 0, "o", "test"); return err }},
		{"PutRoute", func() error {
			_, err := s.PutRoute(t.Context(), "api", route("r", "x-r", "1", "v1", "o"), "test")
			return err
		}},
		{"SetMirror", func() error {
			_, err := s.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 0}, "test")
			return err
		}},
		{"DeleteRoute", func() error { _, err := s.DeleteRoute(t.Context(), "api", "r", "", "test"); return err }},
		{"ClearMirror", func() error { _, err := s.ClearMirror(t.Context(), "api", "test"); return err }},
		{"ClearOverride", func() error { _, err := s.ClearOverride(t.Context(), "api", "test"); return err }},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := copies(t, s, 100, "x-canary", "true"); got["v2"] != 100 || mirrorRouteNames(s.Load(), "api") != "m" {
			t.Fatalf("after %s: %v, mirror routes %v", st.name, got, s.Load().MirrorRoutes)
		}
	}
	// And they keep the runtime route and mirror.
	if _, err := s.PutRoute(t.Context(), "api", route("r", "x-r", "1", "v2", ""), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 10000}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("n", "x-n", "1", "v2", 0, ""), "test"); err != nil {
		t.Fatal(err)
	}
	if v, rule := decide(t, s, "x-r", "1"); v != "v2" || rule != "r" {
		t.Fatalf("route after PutMirrorRoute: %s by %q", v, rule)
	}
	if got := copies(t, s, 100); got["v2"] != 100 {
		t.Fatalf("the runtime mirror after PutMirrorRoute: %v", got)
	}
	if got := copies(t, s, 100, "x-n", "1"); got["v2"] != 0 {
		t.Fatalf("the 0 %% mirror route: %v", got)
	}
}

// Mirror routes survive a reload while they fit the file; one whose
// version or service is gone is dropped, and says why.
func TestMirrorRoutesAcrossReloads(t *testing.T) {
	tests := []struct {
		name     string
		next     *split.Config
		wantKept bool
		wantLog  string
	}{
		{"file changes the weights and the mirror", func() *split.Config {
			c := withRule(weights("v1", 5000, "v2", 5000))
			c.Services[0].Mirror = &split.Mirror{Version: "v2", Percent: 100}
			return c
		}(), true, ""},
		{"file drops the version", &split.Config{Services: []split.Service{{Name: "api", Hosts: []string{"*"}, Weights: weights("v1", 8000, "v3", 2000)}}}, false, `version \"v2\" not declared`},
		{"file drops the service", &split.Config{Services: []split.Service{{Name: "web", Hosts: []string{"*"}, Weights: weights("a", 10000)}}}, false, "service not in the configuration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := newStore(t, store.Options{})
			mustApply(t, s, withCanary(), "a")
			if _, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("m", "x-canary", "1", "v2", 10000, "o"), "test"); err != nil {
				t.Fatal(err)
			}
			mustApply(t, s, tc.next, "b")
			kept := len(s.Load().MirrorRoutes["api"]) == 1
			if kept != tc.wantKept {
				t.Fatalf("kept = %v, want %v; logs:\n%s", kept, tc.wantKept, logs)
			}
			if kept {
				svc, _ := s.Load().Table.Service("api")
				if len(svc.MirrorRoutes) != 1 {
					t.Fatalf("kept but not in the table: %+v", svc.MirrorRoutes)
				}
			}
			if tc.wantLog != "" && (!strings.Contains(logs.String(), tc.wantLog) || !strings.Contains(logs.String(), "runtime mirror route cleared")) {
				t.Fatalf("logs lack %q:\n%s", tc.wantLog, logs)
			}
		})
	}
}

// Mirror routes are in the state file with their owners, and come back at
// the next start (while they fit the file then).
func TestMirrorRoutesPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, s, withCanary(), "a")
	if _, err := s.PutMirrorRoute(t.Context(), "api", mirrorRoute("m", "x-canary", "true", "v2", 5000, "argo-rollouts:shop/api"), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutRoute(t.Context(), "api", route("r", "x-r", "1", "v2", ""), "test"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"mirror_routes"`, `"percent": 50`, `"argo-rollouts:shop/api"`, `"routes"`} {
		if !strings.Contains(string(data), want) {
			t.Fatalf("state file lacks %s:\n%s", want, data)
		}
	}
	again, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, again, withCanary(), "a")
	got := again.Load().MirrorRoutes["api"]
	if len(got) != 1 || !got[0].Equal(mirrorRoute("m", "x-canary", "true", "v2", 5000, "argo-rollouts:shop/api")) {
		t.Fatalf("after a restart: %+v", got)
	}
	if c := copies(t, again, 1000, "x-canary", "true"); c["v2"] != 500 {
		t.Fatalf("restored mirror route copies %v", c)
	}
	// Removed: gone from the file too.
	if _, err := again.DeleteMirrorRoute(t.Context(), "api", "m", "", "test"); err != nil {
		t.Fatal(err)
	}
	third, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, third, withCanary(), "a")
	if third.Load().MirrorRoutes != nil || len(third.Load().Routes["api"]) != 1 {
		t.Fatalf("third start: mirror routes %v, routes %v", third.Load().MirrorRoutes, third.Load().Routes)
	}
}

func TestStateFileMirrorRoutesRefused(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"bad name", `{"file_sha256": "a", "overrides": {}, "mirror_routes": {"api": [{"name": "a/b", "when": [{"header": "x", "present": true}], "version": "v2", "percent": 1}]}}`, "mirror_routes.api[0]: name"},
		{"bad owner", `{"file_sha256": "a", "overrides": {}, "mirror_routes": {"api": [{"name": "m", "when": [{"header": "x", "present": true}], "version": "v2", "percent": 1, "owner": "a b"}]}}`, "mirror_routes.api[0]: owner"},
		{"percent out of range", `{"file_sha256": "a", "overrides": {}, "mirror_routes": {"api": [{"name": "m", "when": [{"header": "x", "present": true}], "version": "v2", "percent": 101}]}}`, "percentage 101: must be between 0 and 100"},
		{"no conditions", `{"file_sha256": "a", "overrides": {}, "mirror_routes": {"api": [{"name": "m", "when": [], "version": "v2", "percent": 1}]}}`, "mirror_routes.api[0]: needs when"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { stateFileRefused(t, tc.doc, tc.want) })
	}
}

// ApplySharedRuntime (fleet mode) puts the mirror routes that fit in
// force and reports the others; it never refuses the configuration for
// one.
func TestApplySharedMirrorRoutes(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	bad := mirrorRoute("broken", "x-b", "1", "v2", 100, "")
	bad.When[0].Exact, bad.When[0].Regex = nil, str("(")
	st := store.SharedState{
		Routes: map[string][]store.Route{"api": {route("r", "x-r", "1", "v2", "")}},
		MirrorRoutes: map[string][]store.MirrorRoute{
			"api":  {mirrorRoute("z", "x-z", "1", "v2", 100, ""), mirrorRoute("a", "x-a", "1", "v2", 100, "o")},
			"gone": {mirrorRoute("m", "x-m", "1", "v1", 100, "")},
		},
	}
	snap, drops, err := s.ApplySharedRuntime(withCanary(), "sha", "etcd", store.Revisions{State: 7}, st)
	if err != nil {
		t.Fatal(err)
	}
	if mirrorRouteNames(snap, "api") != "a,z" || len(snap.Routes["api"]) != 1 {
		t.Fatalf("in force: mirror routes %v, routes %v", snap.MirrorRoutes, snap.Routes)
	}
	if !strings.Contains(drops.MirrorRoutes["gone/m"], "service not in the configuration") || drops.Routes != nil {
		t.Fatalf("drops: %+v", drops)
	}
	st.MirrorRoutes["api"] = append(st.MirrorRoutes["api"], bad)
	snap, drops, err = s.ApplySharedRuntime(withCanary(), "sha", "etcd", store.Revisions{State: 8}, st)
	if err != nil || snap.Revision != 8 {
		t.Fatalf("apply with a broken mirror route: %v", err)
	}
	if !strings.Contains(drops.MirrorRoutes["api/broken"], "invalid regular expression") || mirrorRouteNames(snap, "api") != "a,z" || len(snap.Routes["api"]) != 1 {
		t.Fatalf("drops %+v, in force %v %v", drops, snap.MirrorRoutes, snap.Routes)
	}
}

// The decision path stays allocation-free with mirror routes in force.
func TestMirrorRoutesDoNotAllocate(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	mustApply(t, s, withCanary(), "a")
	r := mirrorRoute("m", "x-canary", "true", "v2", 5000, "")
	r.When = append(r.When, split.Condition{Request: "method", Exact: str("GET")}, split.Condition{Request: "path", Prefix: str("/")})
	if _, err := s.PutMirrorRoute(t.Context(), "api", r, "test"); err != nil {
		t.Fatal(err)
	}
	tb := s.Load().Table
	req := split.Request{Authority: "api.example.com", Method: "GET", Path: "/a?b", Headers: []split.Header{{Name: "x-canary", Value: "true"}}}
	var d split.Decision
	if n := testing.AllocsPerRun(200, func() { tb.Decide(&req, &d) }); n != 0 {
		t.Fatalf("Decide with a mirror route: %v allocs", n)
	}
}
