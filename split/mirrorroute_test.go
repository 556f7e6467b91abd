package split_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

// mirrorRoutesYAML is a service whose canary serves nobody, with a file
// mirror of 10 %; the tests add mirror routes to it (they are runtime
// state, not part of a file).
const mirrorRoutesYAML = `services:
  - name: api
    hosts: ["*"]
    weights: {v1: 100, v2: 0, v3: 0}
    sticky: {header: x-user-id}
    mirror: {version: v2, percent: 10}
    rules: [{name: pin, when: [{header: x-pin, present: true}], version: v1}]
`

func withMirrorRoutes(t testing.TB, yaml string, routes ...split.MirrorRoute) *split.Table {
	t.Helper()
	cfg, err := split.Parse([]byte(yaml), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Services[0].MirrorRoutes = routes
	return mustCompile(t, cfg)
}

func mirrorRoute(name string, version string, pct int, when ...split.Condition) split.MirrorRoute {
	return split.MirrorRoute{Name: name, When: when, Version: version, Percent: split.Percent(pct)}
}

func TestMirrorRouteValidation(t *testing.T) {
	ok := split.Condition{Header: "x-a", Exact: ptr("1")}
	tests := []struct {
		name   string
		routes []split.MirrorRoute
		want   []string // "path: reason" substrings
	}{
		{"unknown version", []split.MirrorRoute{mirrorRoute("m", "v9", 5000, ok)},
			[]string{`services[0].mirror_routes[0].version: unknown version "v9" (declared: v1, v2, v3)`}},
		{"no version", []split.MirrorRoute{mirrorRoute("m", "", 5000, ok)},
			[]string{"services[0].mirror_routes[0].version: missing"}},
		{"percent above 100", []split.MirrorRoute{mirrorRoute("m", "v2", 10001, ok)},
			[]string{"services[0].mirror_routes[0].percent: must be between 0 and 100 (got 100.01)"}},
		{"negative percent", []split.MirrorRoute{mirrorRoute("m", "v2", -5, ok)},
			[]string{"services[0].mirror_routes[0].percent: must be between 0 and 100"}},
		{"no conditions", []split.MirrorRoute{mirrorRoute("m", "v2", 5000)},
			[]string{"services[0].mirror_routes[0].when: no conditions"}},
		{"bad condition", []split.MirrorRoute{mirrorRoute("m", "v2", 5000, ok, split.Condition{Request: "path", Regex: ptr("(")})},
			[]string{"services[0].mirror_routes[0].when[1].regex: invalid regular expression"}},
		{"request target other than method or path", []split.MirrorRoute{mirrorRoute("m", "v2", 5000, split.Condition{Request: "scheme", Exact: ptr("https")})},
			[]string{`services[0].mirror_routes[0].when[0].request: must be method or path (got "scheme")`}},
		{"empty name", []split.MirrorRoute{mirrorRoute("", "v2", 5000, ok)},
			[]string{"services[0].mirror_routes[0].name: mirror route name is empty"}},
		{"name with a slash", []split.MirrorRoute{mirrorRoute("a/b", "v2", 5000, ok)},
			[]string{`services[0].mirror_routes[0].name: mirror route name "a/b" may only contain`}},
		{"duplicate name", []split.MirrorRoute{mirrorRoute("m", "v2", 5000, ok), mirrorRoute("m", "v3", 5000, ok)},
			[]string{`services[0].mirror_routes[1].name: duplicate mirror route name "m" (also services[0].mirror_routes[0])`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := split.Parse([]byte(mirrorRoutesYAML), split.ParseOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Services[0].MirrorRoutes = tt.routes
			_, err = split.Compile(cfg)
			if err == nil {
				t.Fatalf("compiled; want %q", tt.want)
			}
			if len(split.FieldErrors(err)) == 0 {
				t.Fatalf("error without *FieldError: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\nwant it to contain %q", err, w)
				}
			}
		})
	}
	t.Run("too many", func(t *testing.T) {
		cfg, _ := split.Parse([]byte(mirrorRoutesYAML), split.ParseOptions{})
		for i := range split.MaxMirrorRoutes + 1 {
			cfg.Services[0].MirrorRoutes = append(cfg.Services[0].MirrorRoutes, mirrorRoute(fmt.Sprint("m", i), "v2", 100, ok))
		}
		if _, err := split.Compile(cfg); err == nil || !strings.Contains(err.Error(), "services[0].mirror_routes: too many mirror routes (101, at most 100)") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("not in a file", func(t *testing.T) {
		_, err := split.Parse([]byte(mirrorRoutesYAML+"    mirror_routes: []\n"), split.ParseOptions{})
		if err == nil || !strings.Contains(err.Error(), "mirror_routes: unknown key") {
			t.Fatalf("a file's mirror_routes: %v", err)
		}
	})
}

// count decides n requests made by req(i) and counts them per mirror
// version ("" for none) and per serving version.
func count(tb *split.Table, n int, req func(i int) split.Request) (mirrors, served map[string]int) {
	mirrors, served = map[string]int{}, map[string]int{}
	for i := range n {
		d := decide(tb, req(i))
		mirrors[d.Mirror()]++
		served[d.Version]++
	}
	return mirrors, served
}

func TestMirrorRoutesFirstMatchWins(t *testing.T) {
	tb := withMirrorRoutes(t, mirrorRoutesYAML,
		mirrorRoute("a-header", "v2", 5000, split.Condition{Header: "x-canary", Exact: ptr("true")}),
		mirrorRoute("b-writes", "v3", 10000, split.Condition{Request: "method", Exact: ptr("POST")}, split.Condition{Request: "path", Prefix: ptr("/api/")}),
		mirrorRoute("c-off", "v2", 0, split.Condition{Request: "path", Prefix: ptr("/quiet")}),
	)
	req := func(method, path string, kv ...string) func(int) split.Request {
		return func(int) split.Request { return split.Request{Method: method, Path: path, Headers: headers(kv...)} }
	}
	tests := []struct {
		name string
		req  func(int) split.Request
		want map[string]int
	}{
		{"the first route: exactly half of its unkeyed requests", req("GET", "/", "x-canary", "true"), map[string]int{"v2": 500, "": 500}},
		{"the first route wins over the second", req("POST", "/api/orders", "x-canary", "true"), map[string]int{"v2": 500, "": 500}},
		{"the second route: every one", req("POST", "/api/orders?id=1"), map[string]int{"v3": 1000}},
		{"the second route needs all its conditions", req("GET", "/api/orders"), map[string]int{"v2": 100, "": 900}},
		{"a route at 0 % copies nothing, and hides the service's mirror", req("GET", "/quiet/x"), map[string]int{"": 1000}},
		{"no route: the service's mirror", req("GET", "/"), map[string]int{"v2": 100, "": 900}},
		{"rule-matched requests too", req("GET", "/", "x-canary", "true", "x-pin", "1"), map[string]int{"v2": 500, "": 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mirrors, served := count(tb, 1000, tt.req)
			if d := cmp.Diff(tt.want, mirrors); d != "" || served["v1"] != 1000 {
				t.Fatalf("copies (-want +got):\n%s (served %v)", d, served)
			}
		})
	}
}

func TestMirrorRoutesKeyed(t *testing.T) {
	tb := withMirrorRoutes(t, mirrorRoutesYAML, mirrorRoute("m", "v2", 5000, split.Condition{Header: "x-canary", Present: true}))
	keys := randomKeys(20000)
	copied := 0
	for _, k := range keys {
		req := split.Request{Headers: headers("x-user-id", k, "x-canary", "1")}
		d, again := decide(tb, req), decide(tb, req)
		if d.Mirror() != again.Mirror() {
			t.Fatalf("key %q copied to %q then %q", k, d.Mirror(), again.Mirror())
		}
		// The same mirror bucket as the service's mirror: the share grows
		// by adding users.
		if want := split.MirrorBucket("api", k) < 5000; (d.Mirror() == "v2") != want {
			t.Fatalf("key %q: copied to %q, mirror bucket %d", k, d.Mirror(), split.MirrorBucket("api", k))
		}
		if d.Mirror() != "" {
			copied++
		}
		if plain := decide(tb, split.Request{Headers: headers("x-user-id", k)}); (plain.Mirror() != "") != (split.MirrorBucket("api", k) < 1000) {
			t.Fatalf("key %q without the header: %q", k, plain.Mirror())
		}
	}
	if got := float64(copied) / float64(len(keys)) * 100; abs(got-50) > 1.5 {
		t.Errorf("%.2f %% of keys copied, want 50 ± 1.5", got)
	}
}

// A request that the route's version serves itself is not copied to it.
func TestMirrorRouteNotToItself(t *testing.T) {
	tb := withMirrorRoutes(t, strings.Replace(mirrorRoutesYAML, "{v1: 100, v2: 0, v3: 0}", "{v1: 50, v2: 50, v3: 0}", 1),
		mirrorRoute("m", "v2", 10000, split.Condition{Request: "method", Exact: ptr("GET")}))
	mirrors, served := count(tb, 1000, func(int) split.Request { return split.Request{Method: "GET"} })
	if served["v1"] != 500 || mirrors["v2"] != 500 || mirrors[""] != 500 {
		t.Fatalf("served %v, copies %v: want v1's 500 copied and v2's not", served, mirrors)
	}
	for i := range 200 {
		d := decide(tb, split.Request{Method: "GET", Headers: headers("x-user-id", fmt.Sprint("u", i))})
		if (d.Version == "v1") != (d.Mirror() == "v2") {
			t.Fatalf("user %d served by %s copied to %q", i, d.Version, d.Mirror())
		}
	}
}

func TestMirrorRouteOutcomes(t *testing.T) {
	tb := withMirrorRoutes(t, mirrorRoutesYAML, mirrorRoute("m", "v3", 5000, split.Condition{Header: "x-m", Present: true}))
	// Versions v1 v2 v3 + none, 5 reasons, mirror versions v2 and v3 + none.
	if got, want := tb.Outcomes(), 4*5*3; got != want {
		t.Fatalf("Outcomes = %d, want %d", got, want)
	}
	seen := map[int]string{}
	for i := range 400 {
		var kv []string
		if i%2 == 0 {
			kv = append(kv, "x-m", "1")
		}
		if i%3 == 0 {
			kv = append(kv, "x-user-id", fmt.Sprint("u", i))
		}
		d := decide(tb, split.Request{Headers: headers(kv...)})
		shape := fmt.Sprintf("%s/%v/%s", d.Version, d.Reason, d.Mirror())
		if prev, ok := seen[d.Outcome()]; ok && prev != shape {
			t.Fatalf("outcome %d is both %s and %s", d.Outcome(), prev, shape)
		}
		seen[d.Outcome()] = shape
	}
	shapes := map[string]bool{}
	for _, s := range seen {
		shapes[s] = true
	}
	for _, want := range []string{"v1/weighted_routing/v3", "v1/weighted_routing/v2", "v1/weighted_routing/"} {
		if !shapes[want] {
			t.Errorf("outcome %s never seen (seen %v)", want, shapes)
		}
	}
}

func TestMirrorRouteRequestHeaders(t *testing.T) {
	tb := withMirrorRoutes(t, mirrorRoutesYAML,
		mirrorRoute("m", "v2", 5000, split.Condition{Request: "method", Exact: ptr("POST")}, split.Condition{Request: "path", Prefix: ptr("/a")}, split.Condition{Header: "x-m", Present: true}))
	want := []string{":authority", "x-pin", ":method", ":path", "x-m", "x-user-id"}
	if d := cmp.Diff(want, tb.RequestHeaders()); d != "" {
		t.Fatalf("RequestHeaders (-want +got):\n%s", d)
	}
	// Without mirror routes nothing is read for them.
	if got := mustLoad(t, mirrorRoutesYAML).RequestHeaders(); slices.Contains(got, ":method") || slices.Contains(got, ":path") {
		t.Fatalf("RequestHeaders without mirror routes: %v", got)
	}
}

// A recompiled table keeps an unchanged mirror route's round-robin
// position, so a reload or another change does not reset its cycle.
func TestMirrorRouteKeepsItsCycle(t *testing.T) {
	route := mirrorRoute("m", "v2", 5000, split.Condition{Header: "x-m", Present: true})
	tb := withMirrorRoutes(t, mirrorRoutesYAML, route)
	req := split.Request{Headers: headers("x-m", "1")}
	first := decide(tb, req) // copied: index 0 of the cycle
	if first.Mirror() != "v2" {
		t.Fatalf("first request: %q", first.Mirror())
	}
	next, err := tb.WithWeights("api", split.Weights{{Version: "v1", BasisPoints: 9000}, {Version: "v2", BasisPoints: 0}, {Version: "v3", BasisPoints: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	mirrors, _ := count(next, 1, func(int) split.Request { return split.Request{Headers: headers("x-m", "1", "x-user-id", "")} })
	if mirrors[""] != 1 {
		t.Fatalf("the second request after WithWeights was copied (%v): the route's cycle started over", mirrors)
	}
	// Another share starts its own cycle.
	cfg := tb.Config()
	cfg.Services[0].MirrorRoutes[0].Percent = 2500
	other, err := split.CompileNext(tb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 4 {
		d := decide(other, req)
		got = append(got, d.Mirror())
	}
	if want := []string{"", "v2", "", ""}; !slices.Equal(got, want) {
		t.Fatalf("at a new share the copies go %q, want a fresh cycle %q", got, want)
	}
}

func TestExplainMirrorRoutes(t *testing.T) {
	tb := withMirrorRoutes(t, mirrorRoutesYAML,
		mirrorRoute("a", "v3", 10000, split.Condition{Request: "method", Exact: ptr("POST")}),
		mirrorRoute("b", "v2", 5000, split.Condition{Header: "x-canary", Exact: ptr("true")}))
	e := tb.Explain(&split.Request{Method: "GET", Path: "/x", Headers: headers("x-canary", "true", "x-user-id", "u1")})
	want := []split.RuleTrace{
		{Rule: "a", Why: `when[0]: the request's method is "GET"; no value equals "POST"`},
		{Rule: "b", Matched: true, Why: "when[0] holds"},
	}
	if d := cmp.Diff(want, e.MirrorRoutesTried); d != "" {
		t.Fatalf("mirror routes tried (-want +got):\n%s", d)
	}
	if e.MirrorRoute != "b" || e.MirrorPercent == nil || *e.MirrorPercent != 5000 {
		t.Fatalf("mirror route %q at %v", e.MirrorRoute, e.MirrorPercent)
	}
	copied := split.MirrorBucket("api", "u1") < 5000
	if (e.Mirror == "v2") != copied {
		t.Fatalf("explained mirror %q, mirror bucket %d", e.Mirror, split.MirrorBucket("api", "u1"))
	}
	if !slices.ContainsFunc(e.Notes, func(n string) bool { return strings.HasPrefix(n, "mirror route b matched (it decides the copy") }) {
		t.Fatalf("notes %q", e.Notes)
	}
	// No route matches: the service's mirror, and every route tried.
	e = tb.Explain(&split.Request{Method: "GET", Path: "/x"})
	if e.MirrorRoute != "" || len(e.MirrorRoutesTried) != 2 || *e.MirrorPercent != 1000 {
		t.Fatalf("unmatched: route %q, tried %v, percent %v", e.MirrorRoute, e.MirrorRoutesTried, e.MirrorPercent)
	}
	// Explaining does not advance the route's round-robin.
	before := tb.Explain(&split.Request{Method: "POST"})
	if d := decide(tb, split.Request{Method: "POST"}); before.Mirror != "v3" || d.Mirror() != "v3" {
		t.Fatalf("explained %q, decided %q", before.Mirror, d.Mirror())
	}
}

// Decide stays allocation-free with mirror routes in the table, whether a
// route matches or not.
func TestDecideMirrorRoutesDoNotAllocate(t *testing.T) {
	tb := benchMirrorRoutes(t)
	for _, c := range mirrorAllocCases {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			var d split.Decision
			tb.Decide(&req, &d)
			if d.Service != "api" {
				t.Fatalf("decision %+v", d)
			}
			if allocs := testing.AllocsPerRun(200, func() { tb.Decide(&req, &d) }); allocs != 0 {
				t.Errorf("Decide allocates %.1f times per request", allocs)
			}
		})
	}
}

var mirrorAllocCases = []struct {
	name string
	req  split.Request
}{
	{"keyed, route matches", benchRequest(true, "/api/orders?page=2")},
	{"unkeyed, route matches", benchRequest(false, "/api/orders?page=2")},
	{"unkeyed, no route matches", benchRequest(false, "/products?page=2")},
}

// benchMirrorRoutes is the benchmark table with two mirror routes on api
// (the second matches /api/ paths).
func benchMirrorRoutes(t testing.TB) *split.Table {
	t.Helper()
	cfg, err := split.Parse([]byte(benchYAML), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Services[0].MirrorRoutes = []split.MirrorRoute{
		mirrorRoute("writes", "v2", 5000, split.Condition{Request: "method", Regex: ptr("POST|PUT")}),
		mirrorRoute("api", "v2", 5000, split.Condition{Request: "path", Prefix: ptr("/api/")}, split.Condition{Header: "accept", Contains: ptr("html")}),
	}
	return mustCompile(t, cfg)
}

func BenchmarkDecideMirrorRouteMatch(b *testing.B) {
	tb := benchMirrorRoutes(b)
	req := mirrorAllocCases[1].req
	var d split.Decision
	b.ReportAllocs()
	for b.Loop() {
		tb.Decide(&req, &d)
	}
}
