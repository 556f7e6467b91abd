package split_test

import (
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

func ptr(s string) *string { return &s }

func mustLoad(t testing.TB, yaml string) *split.Table {
	t.Helper()
	tb, err := split.Load([]byte(yaml), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func mustCompile(t testing.TB, cfg *split.Config) *split.Table {
	t.Helper()
	tb, err := split.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func decide(tb *split.Table, req split.Request) split.Decision {
	var d split.Decision
	tb.Decide(&req, &d)
	return d
}

func headers(kv ...string) []split.Header {
	var hs []split.Header
	for i := 0; i+1 < len(kv); i += 2 {
		hs = append(hs, split.Header{Name: kv[i], Value: kv[i+1]})
	}
	return hs
}

// TestConditions runs one rule with one condition against requests: the
// rule routes to "hit", anything else goes to "miss" (weight 100).
func TestConditions(t *testing.T) {
	tests := []struct {
		name    string
		cond    split.Condition
		path    string
		method  string
		headers []split.Header
		want    bool
	}{
		// header
		{name: "header exact", cond: split.Condition{Header: "x-beta", Exact: ptr("true")}, headers: headers("x-beta", "true"), want: true},
		{name: "header exact other value", cond: split.Condition{Header: "x-beta", Exact: ptr("true")}, headers: headers("x-beta", "false")},
		{name: "header exact is case-sensitive", cond: split.Condition{Header: "x-beta", Exact: ptr("true")}, headers: headers("x-beta", "TRUE")},
		{name: "header exact ignore_case", cond: split.Condition{Header: "x-beta", Exact: ptr("True"), IgnoreCase: true}, headers: headers("x-beta", "tRUE"), want: true},
		{name: "header exact is not prefix", cond: split.Condition{Header: "x-beta", Exact: ptr("true")}, headers: headers("x-beta", "true1")},
		{name: "header exact empty value", cond: split.Condition{Header: "x-beta", Exact: ptr("")}, headers: headers("x-beta", ""), want: true},
		{name: "header absent fails value match", cond: split.Condition{Header: "x-beta", Exact: ptr("true")}},
		{name: "header name in config is case-insensitive", cond: split.Condition{Header: "X-Beta", Exact: ptr("true")}, headers: headers("x-beta", "true"), want: true},
		{name: "header name in request is case-insensitive", cond: split.Condition{Header: "x-beta", Exact: ptr("true")}, headers: headers("X-BETA", "true"), want: true},
		{name: "header prefix", cond: split.Condition{Header: "user-agent", Prefix: ptr("Mozilla/")}, headers: headers("user-agent", "Mozilla/5.0"), want: true},
		{name: "header prefix miss", cond: split.Condition{Header: "user-agent", Prefix: ptr("Mozilla/")}, headers: headers("user-agent", "curl/8")},
		{name: "header prefix ignore_case", cond: split.Condition{Header: "user-agent", Prefix: ptr("MOZILLA"), IgnoreCase: true}, headers: headers("user-agent", "mozilla/5.0"), want: true},
		{name: "header prefix longer than value", cond: split.Condition{Header: "user-agent", Prefix: ptr("Mozilla/")}, headers: headers("user-agent", "Moz")},
		{name: "header suffix", cond: split.Condition{Header: "x-region", Suffix: ptr("-eu")}, headers: headers("x-region", "west-eu"), want: true},
		{name: "header suffix miss", cond: split.Condition{Header: "x-region", Suffix: ptr("-eu")}, headers: headers("x-region", "west-us")},
		{name: "header suffix ignore_case", cond: split.Condition{Header: "x-region", Suffix: ptr("-EU"), IgnoreCase: true}, headers: headers("x-region", "west-eu"), want: true},
		{name: "header contains", cond: split.Condition{Header: "user-agent", Contains: ptr("Mobile")}, headers: headers("user-agent", "Foo Mobile Safari"), want: true},
		{name: "header contains miss", cond: split.Condition{Header: "user-agent", Contains: ptr("Mobile")}, headers: headers("user-agent", "Foo mobile Safari")},
		{name: "header contains ignore_case", cond: split.Condition{Header: "user-agent", Contains: ptr("MOBILE"), IgnoreCase: true}, headers: headers("user-agent", "Foo mobile Safari"), want: true},
		{name: "header regex whole value", cond: split.Condition{Header: "x-user", Regex: ptr("user-[0-9]+")}, headers: headers("x-user", "user-42"), want: true},
		{name: "header regex is anchored", cond: split.Condition{Header: "x-user", Regex: ptr("user-[0-9]+")}, headers: headers("x-user", "a-user-42")},
		{name: "header regex is anchored at the end", cond: split.Condition{Header: "x-user", Regex: ptr("user-[0-9]+")}, headers: headers("x-user", "user-42x")},
		{name: "header regex alternation is anchored as a whole", cond: split.Condition{Header: "x", Regex: ptr("a|b")}, headers: headers("x", "ab")},
		{name: "header regex ignore_case", cond: split.Condition{Header: "x-user", Regex: ptr("USER-[0-9]+"), IgnoreCase: true}, headers: headers("x-user", "user-42"), want: true},
		{name: "header present", cond: split.Condition{Header: "x-debug", Present: true}, headers: headers("x-debug", "1"), want: true},
		{name: "header present with empty value", cond: split.Condition{Header: "x-debug", Present: true}, headers: headers("x-debug", ""), want: true},
		{name: "header present missing", cond: split.Condition{Header: "x-debug", Present: true}, headers: headers("x-other", "1")},
		{name: "header absent", cond: split.Condition{Header: "authorization", Absent: true}, headers: headers("x-other", "1"), want: true},
		{name: "header absent but present", cond: split.Condition{Header: "authorization", Absent: true}, headers: headers("authorization", "Bearer x")},
		{name: "multi-valued header: second value matches", cond: split.Condition{Header: "x-group", Exact: ptr("beta")}, headers: headers("x-group", "alpha", "x-group", "beta"), want: true},
		{name: "multi-valued header: no value matches", cond: split.Condition{Header: "x-group", Exact: ptr("beta")}, headers: headers("x-group", "alpha", "x-group", "gamma")},
		{name: "comma-joined values are one value", cond: split.Condition{Header: "x-group", Exact: ptr("beta")}, headers: headers("x-group", "alpha, beta")},
		{name: "pseudo-header", cond: split.Condition{Header: ":method", Exact: ptr("POST")}, headers: headers(":method", "POST"), want: true},

		// cookie
		{name: "cookie exact", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("cookie", "a=1; beta=yes; c=3"), want: true},
		{name: "cookie exact first", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("cookie", "beta=yes"), want: true},
		{name: "cookie exact miss", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("cookie", "beta=no")},
		{name: "cookie name is case-sensitive", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("cookie", "Beta=yes")},
		{name: "cookie name must match whole", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("cookie", "xbeta=yes; betax=yes")},
		{name: "cookie quoted value", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("cookie", `beta="yes"`), want: true},
		{name: "cookie in second cookie header", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("cookie", "a=1", "cookie", "beta=yes"), want: true},
		{name: "cookie header name case-insensitive", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("Cookie", "beta=yes"), want: true},
		{name: "cookie without spaces", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("cookie", "a=1;beta=yes"), want: true},
		{name: "cookie prefix", cond: split.Condition{Cookie: "session", Prefix: ptr("adm-")}, headers: headers("cookie", "session=adm-42"), want: true},
		{name: "cookie suffix", cond: split.Condition{Cookie: "session", Suffix: ptr("-42")}, headers: headers("cookie", "session=adm-42"), want: true},
		{name: "cookie contains", cond: split.Condition{Cookie: "session", Contains: ptr("m-4")}, headers: headers("cookie", "session=adm-42"), want: true},
		{name: "cookie regex", cond: split.Condition{Cookie: "session", Regex: ptr("[a-z]+-[0-9]+")}, headers: headers("cookie", "session=adm-42"), want: true},
		{name: "cookie regex miss", cond: split.Condition{Cookie: "session", Regex: ptr("[a-z]+")}, headers: headers("cookie", "session=adm-42")},
		{name: "cookie ignore_case", cond: split.Condition{Cookie: "beta", Exact: ptr("YES"), IgnoreCase: true}, headers: headers("cookie", "beta=yes"), want: true},
		{name: "cookie present", cond: split.Condition{Cookie: "beta", Present: true}, headers: headers("cookie", "beta="), want: true},
		{name: "cookie present missing", cond: split.Condition{Cookie: "beta", Present: true}, headers: headers("cookie", "alpha=1")},
		{name: "cookie absent", cond: split.Condition{Cookie: "beta", Absent: true}, headers: headers("cookie", "alpha=1"), want: true},
		{name: "cookie absent without cookie header", cond: split.Condition{Cookie: "beta", Absent: true}, want: true},
		{name: "cookie absent but present", cond: split.Condition{Cookie: "beta", Absent: true}, headers: headers("cookie", "beta=1")},
		{name: "cookie repeated: any value", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("cookie", "beta=no; beta=yes"), want: true},
		{name: "cookie is not a header", cond: split.Condition{Cookie: "beta", Exact: ptr("yes")}, headers: headers("beta", "yes")},

		// query
		{name: "query exact", cond: split.Condition{Query: "debug", Exact: ptr("on")}, path: "/x?a=1&debug=on", want: true},
		{name: "query exact miss", cond: split.Condition{Query: "debug", Exact: ptr("on")}, path: "/x?debug=off"},
		{name: "query without query string", cond: split.Condition{Query: "debug", Exact: ptr("on")}, path: "/x"},
		{name: "query fragment is not part of it", cond: split.Condition{Query: "debug", Exact: ptr("on")}, path: "/x?debug=on#frag", want: true},
		{name: "query percent-decoded value", cond: split.Condition{Query: "q", Exact: ptr("a b/c")}, path: "/?q=a%20b%2Fc", want: true},
		{name: "query plus is a space", cond: split.Condition{Query: "q", Exact: ptr("a b")}, path: "/?q=a+b", want: true},
		{name: "query percent-decoded name", cond: split.Condition{Query: "my key", Exact: ptr("1")}, path: "/?my%20key=1", want: true},
		{name: "query bad escape compares raw", cond: split.Condition{Query: "q", Exact: ptr("%zz")}, path: "/?q=%zz", want: true},
		{name: "query too long to decode compares raw", cond: split.Condition{Query: "q", Prefix: ptr("%41")}, path: "/?q=%41" + strings.Repeat("x", 3000), want: true},
		{name: "query prefix", cond: split.Condition{Query: "lang", Prefix: ptr("en")}, path: "/?lang=en-GB", want: true},
		{name: "query prefix decoded", cond: split.Condition{Query: "lang", Prefix: ptr("en GB")}, path: "/?lang=en%20GB%20x", want: true},
		{name: "query suffix", cond: split.Condition{Query: "lang", Suffix: ptr("-GB")}, path: "/?lang=en-GB", want: true},
		{name: "query contains", cond: split.Condition{Query: "lang", Contains: ptr("n-G")}, path: "/?lang=en-GB", want: true},
		{name: "query contains decoded ignore_case", cond: split.Condition{Query: "lang", Contains: ptr("N G"), IgnoreCase: true}, path: "/?lang=en+gb", want: true},
		{name: "query regex", cond: split.Condition{Query: "id", Regex: ptr("[0-9]{3}")}, path: "/?id=123", want: true},
		{name: "query regex decoded", cond: split.Condition{Query: "id", Regex: ptr("[0-9] [0-9]")}, path: "/?id=1%202", want: true},
		{name: "query regex miss", cond: split.Condition{Query: "id", Regex: ptr("[0-9]{3}")}, path: "/?id=1234"},
		{name: "query ignore_case", cond: split.Condition{Query: "debug", Exact: ptr("ON"), IgnoreCase: true}, path: "/?debug=on", want: true},
		{name: "query name is case-sensitive", cond: split.Condition{Query: "debug", Exact: ptr("on")}, path: "/?Debug=on"},
		{name: "query present", cond: split.Condition{Query: "debug", Present: true}, path: "/?debug", want: true},
		{name: "query present empty value", cond: split.Condition{Query: "debug", Present: true}, path: "/?debug=", want: true},
		{name: "query present missing", cond: split.Condition{Query: "debug", Present: true}, path: "/?debugger=1"},
		{name: "query absent", cond: split.Condition{Query: "debug", Absent: true}, path: "/?x=1", want: true},
		{name: "query absent but present", cond: split.Condition{Query: "debug", Absent: true}, path: "/?x=1&&debug"},
		{name: "query repeated: any value", cond: split.Condition{Query: "tag", Exact: ptr("b")}, path: "/?tag=a&tag=b", want: true},
		{name: "query is not a header", cond: split.Condition{Query: "debug", Exact: ptr("on")}, headers: headers("debug", "on")},

		// request: method and path
		{name: "method exact", cond: split.Condition{Request: "method", Exact: ptr("POST")}, method: "POST", want: true},
		{name: "method exact miss", cond: split.Condition{Request: "method", Exact: ptr("POST")}, method: "GET"},
		{name: "method exact is case-sensitive", cond: split.Condition{Request: "method", Exact: ptr("post")}, method: "POST"},
		{name: "method ignore_case", cond: split.Condition{Request: "method", Exact: ptr("post"), IgnoreCase: true}, method: "POST", want: true},
		{name: "method prefix", cond: split.Condition{Request: "method", Prefix: ptr("P")}, method: "PUT", want: true},
		{name: "method regex", cond: split.Condition{Request: "method", Regex: ptr("PUT|POST|PATCH")}, method: "PATCH", want: true},
		{name: "method regex is anchored", cond: split.Condition{Request: "method", Regex: ptr("PU")}, method: "PUT"},
		{name: "method is not a header", cond: split.Condition{Request: "method", Exact: ptr("POST")}, headers: headers("method", "POST")},
		{name: "method of a request without one", cond: split.Condition{Request: "method", Exact: ptr("GET")}},
		{name: "path exact", cond: split.Condition{Request: "path", Exact: ptr("/api/orders")}, path: "/api/orders", want: true},
		{name: "path exact ignores the query string", cond: split.Condition{Request: "path", Exact: ptr("/api/orders")}, path: "/api/orders?id=1", want: true},
		{name: "path exact ignores the fragment", cond: split.Condition{Request: "path", Exact: ptr("/a")}, path: "/a#top", want: true},
		{name: "path exact miss", cond: split.Condition{Request: "path", Exact: ptr("/api/orders")}, path: "/api/orders/1"},
		{name: "path prefix", cond: split.Condition{Request: "path", Prefix: ptr("/api/")}, path: "/api/orders?x=1", want: true},
		{name: "path prefix does not reach into the query", cond: split.Condition{Request: "path", Prefix: ptr("/a?x")}, path: "/a?x=1"},
		{name: "path prefix miss", cond: split.Condition{Request: "path", Prefix: ptr("/api/")}, path: "/apix"},
		{name: "path prefix slash matches every path", cond: split.Condition{Request: "path", Prefix: ptr("/")}, path: "/", want: true},
		{name: "path regex", cond: split.Condition{Request: "path", Regex: ptr("/users/[0-9]+")}, path: "/users/42?tab=1", want: true},
		{name: "path regex is anchored", cond: split.Condition{Request: "path", Regex: ptr("/users/[0-9]+")}, path: "/users/42/edit"},
		{name: "path is not percent-decoded", cond: split.Condition{Request: "path", Exact: ptr("/a b")}, path: "/a%20b"},
		{name: "path suffix ignore_case", cond: split.Condition{Request: "path", Suffix: ptr(".JSON"), IgnoreCase: true}, path: "/x.json?y", want: true},
		{name: "path contains", cond: split.Condition{Request: "path", Contains: ptr("/v2/")}, path: "/api/v2/x", want: true},
		{name: "path is not the :path header", cond: split.Condition{Request: "path", Exact: ptr("/h")}, headers: headers(":path", "/h")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := mustCompile(t, &split.Config{Services: []split.Service{{
				Name:    "svc",
				Weights: split.Weights{{Version: "miss", BasisPoints: 10000}, {Version: "hit", BasisPoints: 0}},
				Rules:   []split.Rule{{Name: "r", When: []split.Condition{tt.cond}, Version: "hit"}},
			}}})
			d := decide(tb, split.Request{Authority: "example.com", Method: tt.method, Path: tt.path, Headers: tt.headers})
			if got := d.Version == "hit"; got != tt.want {
				t.Errorf("matched = %v, want %v (decision %+v)", got, tt.want, d)
			}
			wantReason := split.ReasonWeightedRouting
			if tt.want {
				wantReason = split.ReasonHeaderMatch
			}
			if d.Reason != wantReason {
				t.Errorf("reason = %v, want %v", d.Reason, wantReason)
			}
		})
	}
}

func TestRules(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: api
    weights: {v1: 100, v2: 0, v3: 0}
    sticky: {header: x-user-id}
    rules:
      - name: both
        when: [{header: x-a, present: true}, {header: x-b, present: true}]
        version: v3
      - name: only-a
        when: [{header: x-a, present: true}]
        version: v2
      - name: a-again
        when: [{header: x-a, present: true}]
        version: v3
`)
	tests := []struct {
		name       string
		headers    []split.Header
		wantRule   string
		wantReason split.Reason
		wantV      string
	}{
		{name: "all conditions must hold", headers: headers("x-b", "1"), wantReason: split.ReasonWeightedRouting, wantV: "v1"},
		{name: "two conditions hold", headers: headers("x-a", "1", "x-b", "1"), wantRule: "both", wantReason: split.ReasonHeaderMatch, wantV: "v3"},
		{name: "first match wins", headers: headers("x-a", "1"), wantRule: "only-a", wantReason: split.ReasonHeaderMatch, wantV: "v2"},
		{name: "rules beat sticky", headers: headers("x-a", "1", "x-user-id", "u1"), wantRule: "only-a", wantReason: split.ReasonHeaderMatch, wantV: "v2"},
		{name: "sticky when no rule", headers: headers("x-user-id", "u1"), wantReason: split.ReasonStickyRouting, wantV: "v1"},
		{name: "empty sticky key is no key", headers: headers("x-user-id", ""), wantReason: split.ReasonWeightedRouting, wantV: "v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(tb, split.Request{Authority: "x", Headers: tt.headers})
			if d.Rule != tt.wantRule || d.Reason != tt.wantReason || d.Version != tt.wantV {
				t.Errorf("got rule %q reason %v version %q, want %q %v %q", d.Rule, d.Reason, d.Version, tt.wantRule, tt.wantReason, tt.wantV)
			}
			if (d.Reason == split.ReasonStickyRouting) != (d.Bucket >= 0) {
				t.Errorf("bucket %d with reason %v", d.Bucket, d.Reason)
			}
		})
	}
	// A rule may route to a weight-0 version; default rule names.
	tb = mustLoad(t, "services:\n  - name: api\n    weights: {v1: 100, v2: 0}\n    rules: [{when: [{header: x, present: true}], version: v2}]\n")
	if d := decide(tb, split.Request{Headers: headers("x", "")}); d.Rule != "rules[0]" || d.Version != "v2" {
		t.Errorf("got %+v, want rule rules[0] -> v2", d)
	}
}

func TestHostMatching(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: exact
    hosts: [api.example.com, "[::1]", 10.0.0.1]
    weights: {v1: 100}
  - name: short-suffix
    hosts: ["*.example.com"]
    weights: {v1: 100}
  - name: long-suffix
    hosts: ["*.eu.example.com"]
    weights: {v1: 100}
  - name: exact-under-wildcard
    hosts: [www.eu.example.com]
    weights: {v1: 100}
  - name: any
    hosts: ["*"]
    weights: {v1: 100}
`)
	tests := []struct {
		authority, want string
	}{
		{"api.example.com", "exact"},
		{"API.Example.COM", "exact"},
		{"api.example.com:8443", "exact"},
		{"api.example.com:", "exact"},
		{"[::1]:9000", "exact"},
		{"[::1]", "exact"},
		{"10.0.0.1:80", "exact"},
		{"www.example.com", "short-suffix"},
		{"a.b.example.com", "short-suffix"},
		{"WWW.EXAMPLE.COM:80", "short-suffix"},
		{"shop.eu.example.com", "long-suffix"},
		{"www.eu.example.com", "exact-under-wildcard"},
		{"eu.example.com", "short-suffix"},
		{"example.com", "any"},
		{".example.com", "any"},
		{"other.org", "any"},
		{"", "any"},
		{strings.Repeat("a", 300) + ".example.com", "short-suffix"},
	}
	for _, tt := range tests {
		t.Run(tt.authority, func(t *testing.T) {
			if d := decide(tb, split.Request{Authority: tt.authority}); d.Service != tt.want {
				t.Errorf("authority %q -> %q, want %q", tt.authority, d.Service, tt.want)
			}
		})
	}

	t.Run("authority from headers", func(t *testing.T) {
		if d := decide(tb, split.Request{Headers: headers(":authority", "api.example.com:1")}); d.Service != "exact" {
			t.Errorf(":authority header -> %q", d.Service)
		}
		if d := decide(tb, split.Request{Headers: headers("host", "x.example.com")}); d.Service != "short-suffix" {
			t.Errorf("host header -> %q", d.Service)
		}
	})
}

func TestUnmatched(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: api
    hosts: [api.example.com]
    weights: {v1: 100}
experiments:
  - {name: e, key: {header: x-user-id}, variants: {A: 100}, header: x-variant}
`)
	d := decide(tb, split.Request{Authority: "other.example.com", Headers: headers("x-user-id", "u")})
	if d.Service != "" || d.Version != "" || d.Reason != split.ReasonUnmatched || d.Bucket != -1 {
		t.Errorf("got %+v, want an unmatched decision", d)
	}
	// Experiments apply whatever decided the version.
	if v := d.Variants(); len(v) != 1 || v[0].Variant != "A" || v[0].Header != "x-variant" {
		t.Errorf("variants = %+v", v)
	}
}

func TestExperiments(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: api
    weights: {v1: 100}
experiments:
  - {name: by-header, key: {header: x-user-id}, variants: {A: 50, B: 50}, header: X-Variant}
  - {name: by-cookie, key: {cookie: uid}, variants: {red: 0, blue: 100}, header: x-color}
  - {name: default, key: {header: x-user-id}, variants: {A: 50, B: 50}, header: x-default}
`)
	t.Run("keyed by header and cookie", func(t *testing.T) {
		d := decide(tb, split.Request{Headers: headers("x-user-id", "user-123", "cookie", "uid=u1")})
		v := d.Variants()
		if len(v) != 3 {
			t.Fatalf("variants = %+v", v)
		}
		if v[0].Experiment != "by-header" || v[0].Header != "x-variant" || v[0].Bucket != split.Bucket("by-header", "user-123") {
			t.Errorf("v[0] = %+v", v[0])
		}
		if v[1].Variant != "blue" {
			t.Errorf("weight-0 variant assigned: %+v", v[1])
		}
		if v[2] != (split.Variant{Experiment: "default", Header: "x-default", Variant: "A", Bucket: 338}) {
			t.Errorf("default experiment for user-123 = %+v, want A with bucket 338", v[2])
		}
	})
	t.Run("only experiments whose key is present", func(t *testing.T) {
		d := decide(tb, split.Request{Headers: headers("cookie", "other=1; uid=u2")})
		if v := d.Variants(); len(v) != 1 || v[0].Experiment != "by-cookie" {
			t.Errorf("variants = %+v", v)
		}
	})
	t.Run("no key", func(t *testing.T) {
		d := decide(tb, split.Request{Headers: headers("x-user-id", "")})
		if v := d.Variants(); len(v) != 0 {
			t.Errorf("variants = %+v", v)
		}
	})
	t.Run("first non-empty value", func(t *testing.T) {
		da := decide(tb, split.Request{Headers: headers("x-user-id", "", "x-user-id", "u7", "x-user-id", "u8")})
		db := decide(tb, split.Request{Headers: headers("x-user-id", "u7")})
		a, b := da.Variants(), db.Variants()
		if len(a) != 2 || a[0] != b[0] {
			t.Errorf("got %+v, want %+v", a, b)
		}
	})
}

func TestStickyKeySources(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: api
    hosts: [api]
    weights: {v1: 50, v2: 50}
    sticky: {cookie: session}
  - name: web
    hosts: [web]
    weights: {v1: 50, v2: 50}
    sticky: {header: X-User-Id}
`)
	d := decide(tb, split.Request{Authority: "api", Headers: headers("cookie", "a=b; session=s-1")})
	if d.Reason != split.ReasonStickyRouting || d.Bucket != split.Bucket("api", "s-1") {
		t.Errorf("cookie sticky: %+v", d)
	}
	d = decide(tb, split.Request{Authority: "web", Headers: headers("x-user-id", "u-1")})
	if d.Reason != split.ReasonStickyRouting || d.Bucket != split.Bucket("web", "u-1") {
		t.Errorf("header sticky: %+v", d)
	}
	d = decide(tb, split.Request{Authority: "web", Headers: headers("cookie", "x-user-id=u-1")})
	if d.Reason != split.ReasonWeightedRouting || d.Bucket != -1 {
		t.Errorf("no key: %+v", d)
	}
}

func TestReasons(t *testing.T) {
	want := []string{"unmatched", "header_match", "sticky_routing", "weighted_routing", "sticky_assigned"}
	rs := split.Reasons()
	if len(rs) != len(want) {
		t.Fatalf("Reasons() = %v", rs)
	}
	for i, r := range rs {
		if r.String() != want[i] {
			t.Errorf("%d.String() = %q, want %q", r, r.String(), want[i])
		}
		back, err := split.ParseReason(want[i])
		if err != nil || back != r {
			t.Errorf("ParseReason(%q) = %v, %v", want[i], back, err)
		}
		text, err := r.MarshalText()
		if err != nil || string(text) != want[i] {
			t.Errorf("MarshalText = %q, %v", text, err)
		}
	}
	if _, err := split.ParseReason("nope"); err == nil {
		t.Error("ParseReason(nope) succeeded")
	}
	if s := split.Reason(9).String(); s != "Reason(9)" {
		t.Errorf("Reason(9).String() = %q", s)
	}
}

// TestZeroTable: a Table that was never compiled decides nothing and does
// not panic.
func TestZeroTable(t *testing.T) {
	var tb split.Table
	d := decide(&tb, split.Request{Authority: "x", Headers: headers("x-user-id", "u")})
	if d.Reason != split.ReasonUnmatched || d.Service != "" || len(d.Variants()) != 0 {
		t.Errorf("got %+v", d)
	}
	if _, err := tb.Assign("", "u"); err == nil {
		t.Error("Assign on a zero table succeeded")
	}
	if _, ok := tb.Service("api"); ok {
		t.Error("Service on a zero table found one")
	}
}
