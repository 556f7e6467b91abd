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

func str(s string) *string { return &s }

// route pins header name = value to version.
func route(name, header, value, version, owner string) store.Route {
	return store.Route{Name: name, When: []split.Condition{{Header: header, Exact: str(value)}}, Version: version, Owner: owner}
}

// decide returns the version and rule the table in force gives a request
// for api.example.com carrying the headers (name, value pairs).
func decide(t *testing.T, s *store.Store, headers ...string) (version, rule string) {
	t.Helper()
	req := &split.Request{Authority: "api.example.com", Method: "GET", Path: "/"}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Headers = append(req.Headers, split.Header{Name: headers[i], Value: headers[i+1]})
	}
	ex := s.Load().Table.Explain(req)
	return ex.Version, ex.Rule
}

// withRule is api (v1 80 / v2 20) with an unnamed rule x-beta: true -> v2.
func withRule(api split.Weights) *split.Config {
	cfg := twoServices(api, nil)
	cfg.Services[0].Rules = []split.Rule{{When: []split.Condition{{Header: "x-beta", Exact: str("true")}}, Version: "v2"}}
	return cfg
}

// Runtime routes are evaluated ahead of the file's rules, in the order of
// their names, without renumbering the file's unnamed rules; the decision
// path does not allocate with them.
func TestRoutesInForce(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	mustApply(t, s, withRule(nil), "a")
	for _, r := range []store.Route{
		route("b-stable", "x-beta", "true", "v1", ""),
		route("a-canary", "x-team", "qa", "v2", "argo-rollouts:default/api"),
	} {
		if _, err := s.PutRoute(t.Context(), "api", r, "test"); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		headers           []string
		wantVer, wantRule string
	}{
		{[]string{"x-beta", "true"}, "v1", "b-stable"},
		{[]string{"x-team", "qa", "x-beta", "true"}, "v2", "a-canary"},
		{[]string{"x-team", "dev"}, "v1", ""},
	}
	for _, tc := range tests {
		if v, rule := decide(t, s, tc.headers...); v != tc.wantVer || rule != tc.wantRule {
			t.Errorf("%v: %s by %q, want %s by %q", tc.headers, v, rule, tc.wantVer, tc.wantRule)
		}
	}
	svc, _ := s.Load().Table.Service("api")
	var names []string
	for _, r := range svc.Rules {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "a-canary,b-stable,rules[0]" {
		t.Fatalf("rules in force: %s", got)
	}
	if got := s.Load().Table.RequestHeaders(); !strings.Contains(strings.Join(got, ","), "x-team") {
		t.Fatalf("RequestHeaders %v: the route's header is not read", got)
	}
	tb := s.Load().Table
	req := split.Request{Authority: "api.example.com", Method: "GET", Path: "/", Headers: []split.Header{{Name: "x-team", Value: "qa"}}}
	var d split.Decision
	if n := testing.AllocsPerRun(200, func() { tb.Decide(&req, &d) }); n != 0 || d.Version != "v2" {
		t.Fatalf("Decide with runtime routes: %v allocs, version %q", n, d.Version)
	}

	// Weights set meanwhile keep the routes, and the routes keep them.
	if _, err := s.SetCanary(t.Context(), "api", 5000, "test"); err != nil {
		t.Fatal(err)
	}
	if v, _ := decide(t, s, "x-team", "qa"); v != "v2" || len(s.Load().Routes["api"]) != 2 {
		t.Fatalf("after SetCanary: %s, routes %v", v, s.Load().Routes)
	}
	if _, err := s.DeleteRoute(t.Context(), "api", "a-canary", "", "test"); err != nil {
		t.Fatal(err)
	}
	if effective(t, s.Load(), "api").String() != "v1: 50, v2: 50" {
		t.Fatalf("DeleteRoute changed the weights: %s", effective(t, s.Load(), "api"))
	}
}

// Routes survive a reload while they fit the file; one whose version is
// gone or whose name a file rule took is dropped, and says why.
func TestRoutesAcrossReloads(t *testing.T) {
	rename := withRule(nil)
	rename.Services[0].Rules[0].Name = "canary"
	tests := []struct {
		name     string
		next     *split.Config
		wantKept bool
		wantLog  string
	}{
		{"file changes the weights", withRule(weights("v1", 5000, "v2", 5000)), true, ""},
		{"file drops the version", &split.Config{Services: []split.Service{{Name: "api", Hosts: []string{"*"}, Weights: weights("v1", 8000, "v3", 2000)}}}, false, `version \"v2\" not declared`},
		{"file drops the service", &split.Config{Services: []split.Service{{Name: "web", Hosts: []string{"*"}, Weights: weights("a", 10000)}}}, false, "service not in the configuration"},
		{"file takes the name", rename, false, "a rule of the configuration has the same name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := newStore(t, store.Options{})
			mustApply(t, s, withRule(nil), "a")
			if _, err := s.PutRoute(t.Context(), "api", route("canary", "x-canary", "1", "v2", "o"), "test"); err != nil {
				t.Fatal(err)
			}
			mustApply(t, s, tc.next, "b")
			kept := len(s.Load().Routes["api"]) == 1
			if kept != tc.wantKept {
				t.Fatalf("kept = %v, want %v; logs:\n%s", kept, tc.wantKept, logs)
			}
			if kept {
				if v, _ := decide(t, s, "x-canary", "1"); v != "v2" {
					t.Fatalf("kept route decides %s", v)
				}
			}
			if tc.wantLog != "" && !strings.Contains(logs.String(), tc.wantLog) {
				t.Fatalf("logs lack %q:\n%s", tc.wantLog, logs)
			}
		})
	}
}

// Routes and the owner of an override are in the state file, and come
// back at the next start; an owner goes with its override.
func TestRoutesAndOwnersPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, s, withRule(nil), "a")
	if _, err := s.PutRoute(t.Context(), "api", route("canary", "x-canary", "1", "v2", "argo-rollouts:default/api"), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCanaryOwned(t.Context(), "api", 3000, "argo-rollouts:default/api", "test"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"owners"`, `"argo-rollouts:default/api"`, `"routes"`, `"x-canary"`} {
		if !strings.Contains(string(data), want) {
			t.Fatalf("state file lacks %s:\n%s", want, data)
		}
	}

	again, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, again, withRule(nil), "a")
	snap := again.Load()
	if snap.Owners["api"] != "argo-rollouts:default/api" || len(snap.Routes["api"]) != 1 || effective(t, snap, "api").String() != "v1: 70, v2: 30" {
		t.Fatalf("after a restart: owners %v, routes %v, weights %s", snap.Owners, snap.Routes, effective(t, snap, "api"))
	}
	if v, rule := decide(t, again, "x-canary", "1"); v != "v2" || rule != "canary" {
		t.Fatalf("restored route decides %s by %q", v, rule)
	}

	// The file changes api's weights: the override and its owner go, the
	// route stays.
	mustApply(t, again, withRule(weights("v1", 9000, "v2", 1000)), "b")
	snap = again.Load()
	if snap.Owners != nil || snap.Overrides != nil || len(snap.Routes["api"]) != 1 {
		t.Fatalf("after the file changed the weights: owners %v, overrides %v, routes %v", snap.Owners, snap.Overrides, snap.Routes)
	}
	third, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, third, withRule(weights("v1", 9000, "v2", 1000)), "b")
	if snap := third.Load(); snap.Owners != nil || len(snap.Routes["api"]) != 1 {
		t.Fatalf("third start: owners %v, routes %v", snap.Owners, snap.Routes)
	}
}

// A state file whose owners or routes are not valid is refused at start,
// naming the place.
func TestStateFileRoutesRefused(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"owner without override", `{"file_sha256": "a", "overrides": {}, "owners": {"api": "x"}}`, "owners.api: the service has no override"},
		{"bad owner", `{"file_sha256": "a", "overrides": {"api": {"v1": 50, "v2": 50}}, "owners": {"api": "a b"}}`, "owners.api: owner"},
		{"bad route name", `{"file_sha256": "a", "overrides": {}, "routes": {"api": [{"name": "a/b", "when": [], "version": "v2"}]}}`, "routes.api[0]: name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { stateFileRefused(t, tc.doc, tc.want) })
	}
}

// SetCanaryOwned records the owner, refuses another one, takes over an
// operator's override, and writes nothing when nothing changes.
func TestSetCanaryOwned(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	mustApply(t, s, twoServices(nil, nil), "a")
	if _, err := s.SetCanary(t.Context(), "api", 5000, "operator"); err != nil {
		t.Fatal(err)
	}
	ch, err := s.SetCanaryOwned(t.Context(), "api", 3000, "ctl-a", "test")
	if err != nil || ch.New.String() != "v1: 70, v2: 30" || s.Load().Owners["api"] != "ctl-a" {
		t.Fatalf("take over: %v %+v owners %v", err, ch, s.Load().Owners)
	}
	gen := s.Load().Generation
	if _, err := s.SetCanaryOwned(t.Context(), "api", 3000, "ctl-a", "test"); err != nil || s.Load().Generation != gen {
		t.Fatalf("same again: %v, generation %d -> %d", err, gen, s.Load().Generation)
	}
	var oe *store.OwnerError
	if _, err := s.SetCanaryOwned(t.Context(), "api", 1000, "ctl-b", "test"); !errors.As(err, &oe) || oe.Owner != "ctl-a" {
		t.Fatalf("another owner: %v", err)
	}
	if _, err := s.SetCanaryOwned(t.Context(), "web", 1000, "ctl-a", "test"); err != nil {
		t.Fatalf("a second service: %v", err)
	}
	if _, err := s.SetCanaryOwned(t.Context(), "nope", 1000, "ctl-a", "test"); !errors.Is(err, split.ErrUnknownService) {
		t.Fatalf("unknown service: %v", err)
	}
	// A plain SetWeights (what the admin API refuses on owned weights)
	// drops the owner with the override it replaces.
	if _, err := s.SetWeights(t.Context(), "api", weights("v1", 10000, "v2", 0), "operator"); err != nil || s.Load().Owners["api"] != "" {
		t.Fatalf("SetWeights: %v, owners %v", err, s.Load().Owners)
	}
}

// ApplySharedState (fleet mode) puts the routes that fit in force and
// reports the others; it never refuses the configuration for one.
func TestApplySharedStateRoutes(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	bad := route("broken", "x-a", "1", "v2", "")
	bad.When[0].Exact, bad.When[0].Regex = nil, str("(")
	routes := map[string][]store.Route{
		"api":  {route("z", "x-z", "1", "v2", ""), route("a", "x-a", "1", "v1", "")},
		"gone": {route("r", "x-r", "1", "v1", "")},
	}
	snap, _, _, dropped, err := s.ApplySharedState(withRule(nil), "sha", "etcd", store.Revisions{State: 7}, nil, nil, routes)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.Routes["api"]; len(got) != 2 || got[0].Name != "a" || got[1].Name != "z" {
		t.Fatalf("routes in force: %v", got)
	}
	if !strings.Contains(dropped["gone/r"], "service not in the configuration") {
		t.Fatalf("dropped: %v", dropped)
	}
	// A route that does not compile (written around the admin API) is
	// left out alone, and the configuration still applies.
	routes["api"] = append(routes["api"], bad)
	snap, _, _, dropped, err = s.ApplySharedState(withRule(nil), "sha", "etcd", store.Revisions{State: 8}, nil, nil, routes)
	if err != nil || snap.Revision != 8 {
		t.Fatalf("apply with a broken route: %v", err)
	}
	if !strings.Contains(dropped["api/broken"], "invalid regular expression") || len(snap.Routes["api"]) != 2 {
		t.Fatalf("dropped: %v, in force %v", dropped, snap.Routes)
	}
}

// Runtime routes and a runtime mirror live side by side: setting either
// keeps the other in force, in the table and across a restart.
func TestRoutesAndMirrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, s, withRule(nil), "a")
	mirror := split.Mirror{Version: "v2", Percent: 1000}
	if _, err := s.SetMirror(t.Context(), "api", mirror, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutRoute(t.Context(), "api", route("canary", "x-canary", "1", "v2", ""), "test"); err != nil {
		t.Fatal(err)
	}
	check := func(what string, s *store.Store) {
		t.Helper()
		snap := s.Load()
		if m := store.EffectiveMirror(snap, "api"); m == nil || *m != mirror || snap.Mirrors["api"] != mirror {
			t.Fatalf("%s: mirror in force %v, runtime mirrors %v", what, m, snap.Mirrors)
		}
		if v, rule := decide(t, s, "x-canary", "1"); v != "v2" || rule != "canary" || len(snap.Routes["api"]) != 1 {
			t.Fatalf("%s: x-canary went to %s by %q, routes %v", what, v, rule, snap.Routes)
		}
	}
	check("after the route", s)
	if _, err := s.SetMirror(t.Context(), "api", mirror, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCanaryOwned(t.Context(), "api", 3000, "ctl", "test"); err != nil {
		t.Fatal(err)
	}
	check("after the mirror and the weights again", s)
	again, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, again, withRule(nil), "a")
	check("after a restart", again)
	if again.Load().Owners["api"] != "ctl" {
		t.Fatalf("owner after a restart: %v", again.Load().Owners)
	}
}
