package split_test

import (
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

// FuzzParseCompile: arbitrary bytes never panic, and whatever Parse
// accepts either compiles or fails with field errors. Time stays bounded
// because nothing is expanded (aliases are rejected) and sizes are capped.
func FuzzParseCompile(f *testing.F) {
	f.Add([]byte(split.DefaultYAML))
	f.Add([]byte(benchYAML))
	f.Add([]byte("services: [{name: a, weights: {v1: 99.99, v2: 0.01}}]"))
	f.Add([]byte("a: &a [1]\nb: [*a, *a]\n"))
	f.Add([]byte("services:\n- name: x\n  weights: {v1: 1e3}\n"))
	f.Add([]byte("services:\n- name: x\n  weights: {v1: 100, v2: 0}\n  clusters: {v2: c2}\n" +
		"  rollout: {steps: [5, 100], hold: 1s, guard: {window: 2s, min_requests: 3, max_error_rate: 0.5, max_error_ratio: 1.5}}\n"))
	f.Add([]byte(assignYAML))
	f.Add([]byte(mirrorYAML))
	f.Add([]byte("services:\n- name: x\n  weights: {v1: 100, v2: 0}\n  sticky: {assign: {cookie: k, max_age: 1h, secure: true}}\n" +
		"  mirror: {version: v2, percent: 0.01}\n  rollout: {shadow: {percent: 5, hold: 2s}}\n"))
	f.Add([]byte("services:\n- name: x\n  weights: {v1: 50, v2: 50}\n  rules:\n  - when: [{request: method, regex: \"P.*\"}, {request: path, prefix: /a, ignore_case: true}]\n    version: v2\n"))
	f.Add([]byte("services:\n- name: x\n  weights: {v1: 50, v2: 50}\n  rules: [{when: [{request: path, absent: true}], version: v2}, {when: [{request: host, exact: a}], version: v2}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := split.Parse(data, processKeys)
		if err != nil {
			if len(split.FieldErrors(err)) == 0 {
				t.Fatalf("Parse error without *FieldError: %v", err)
			}
			return
		}
		tb, err := split.Compile(cfg)
		if err != nil {
			if len(split.FieldErrors(err)) == 0 {
				t.Fatalf("Compile error without *FieldError: %v", err)
			}
			return
		}
		// A compiled table decides for an empty request without panicking.
		var d split.Decision
		tb.Decide(&split.Request{}, &d)
		tb.Explain(&split.Request{})
	})
}

// FuzzDecide: an arbitrary request against a few tables always gets a
// version of the service it matched (or no service), and keyed decisions
// are deterministic.
func FuzzDecide(f *testing.F) {
	tables := []*split.Table{
		mustCompile(f, split.Default()),
		mustLoad(f, benchYAML),
		mustLoad(f, explainYAML),
		mustLoad(f, `services:
  - name: a
    hosts: ["*.example.com", a.example.org]
    weights: {v1: 0.05, v2: 99.9, v3: 0.05}
    sticky: {cookie: s}
    rules: [{when: [{query: "q q", regex: "(?s).*x.*", ignore_case: true}], version: v3}]
`),
		mustLoad(f, `services:
  - name: m
    weights: {v1: 70, v2: 30}
    sticky: {header: x-user-id, assign: {cookie: sid}}
    mirror: {version: v2, percent: 25}
    rules: [{when: [{header: x-beta, present: true}], version: v2}]
`),
		// Mirror routes (runtime state, added as the store does) and
		// method and path conditions.
		withMirrorRoutes(f, strings.Replace(mirrorRoutesYAML, "version: v1}]", `version: v1}, {name: w, when: [{request: method, exact: POST}, {request: path, regex: "/a.*"}], version: v3}]`, 1),
			mirrorRoute("m1", "v3", 3333, split.Condition{Request: "path", Prefix: ptr("/")}, split.Condition{Header: "x-user-id", Present: true}),
			mirrorRoute("m2", "v2", 10000, split.Condition{Request: "method", Regex: ptr("(?i)get|head")})),
	}
	keys := seqKeys(5)
	f.Add("api.example.com:443", "/?force=v2", "x-user-id", "user-123", "session=1; canary=always")
	f.Add("A.EXAMPLE.COM", "/?q+q=%58", "x-beta", "true", "s=abc")
	f.Add("", "", "", "", "")
	f.Add("[::1]:80", "?%zz=%&&=", ":authority", "x.example.com", `s="q"; ;=;`)
	f.Fuzz(func(t *testing.T, authority, path, name, value, cookie string) {
		req := split.Request{
			Authority: authority,
			Method:    name,
			Path:      path,
			Headers:   []split.Header{{Name: name, Value: value}, {Name: "cookie", Value: cookie}, {Name: "x-user-id", Value: value}},
			NewKey:    keys,
		}
		for i, tb := range tables {
			var d split.Decision
			tb.Decide(&req, &d)
			if d.Service == "" {
				if d.Version != "" || d.Reason != split.ReasonUnmatched {
					t.Fatalf("table %d: unmatched decision %+v", i, d)
				}
				continue
			}
			s, ok := tb.Service(d.Service)
			if !ok {
				t.Fatalf("table %d: unknown service %q", i, d.Service)
			}
			if _, ok := s.Weights.Get(d.Version); !ok {
				t.Fatalf("table %d: version %q is not one of %v", i, d.Version, s.Weights)
			}
			if d.Reason == split.ReasonWeightedRouting {
				continue
			}
			if d.Reason == split.ReasonStickyAssigned {
				// The key it was given keys the next request alike.
				key := d.AssignedKey()
				if !split.ValidKey(key) {
					t.Fatalf("table %d: assigned key %q", i, key)
				}
				back := req
				back.Headers = append([]split.Header{{Name: "cookie", Value: "sid=" + key}}, req.Headers...)
				var again split.Decision
				tb.Decide(&back, &again)
				if again.Reason != split.ReasonStickyRouting || again.Version != d.Version || again.Bucket != d.Bucket || again.Mirror() != d.Mirror() {
					t.Fatalf("table %d: assigned %+v, then with its cookie %+v", i, d, again)
				}
				continue
			}
			var again split.Decision
			tb.Decide(&req, &again)
			if again.Version != d.Version || again.Reason != d.Reason || again.Bucket != d.Bucket || again.Rule != d.Rule ||
				(d.Reason == split.ReasonStickyRouting && again.Mirror() != d.Mirror()) {
				t.Fatalf("table %d: %+v then %+v", i, d, again)
			}
			if e := tb.Explain(&req); e.Version != d.Version || e.Reason != d.Reason.String() {
				t.Fatalf("table %d: explained %s/%s, decided %s/%v", i, e.Version, e.Reason, d.Version, d.Reason)
			}
		}
	})
}
