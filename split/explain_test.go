package split_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

const explainYAML = `services:
  - name: api
    hosts: [api.example.com]
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id}
    rules:
      - name: beta-testers
        when: [{header: x-beta, exact: "true"}]
        version: v2
      - name: debug
        when: [{header: x-beta, absent: true}, {query: debug, prefix: "o", ignore_case: true}, {cookie: c, regex: "[0-9]+"}]
        version: v2
experiments:
  - {name: default, key: {header: x-user-id}, variants: {A: 50, B: 50}, header: x-variant}
`

func TestExplainRulesTried(t *testing.T) {
	tb := mustLoad(t, explainYAML)
	tests := []struct {
		name    string
		req     split.Request
		want    []split.RuleTrace
		reason  string
		version string
	}{
		{
			name: "absent header",
			req:  split.Request{Authority: "api.example.com", Headers: headers("cookie", "c=1")},
			want: []split.RuleTrace{
				{Rule: "beta-testers", Why: "when[0]: header x-beta is absent"},
				{Rule: "debug", Why: "when[1]: query debug is absent"},
			},
			reason: "weighted_routing", version: "v1",
		},
		{
			name: "wrong values",
			req:  split.Request{Authority: "api.example.com", Path: "/?debug=x", Headers: headers("x-beta", "false", "x-beta", "no")},
			want: []split.RuleTrace{
				{Rule: "beta-testers", Why: `when[0]: header x-beta is "false", "no"; no value equals "true"`},
				{Rule: "debug", Why: "when[0]: header x-beta is present"},
			},
			reason: "weighted_routing", version: "v1",
		},
		{
			name: "fold and regex",
			req:  split.Request{Authority: "api.example.com", Path: "/?debug=x", Headers: headers("cookie", "c=abc")},
			want: []split.RuleTrace{
				{Rule: "beta-testers", Why: "when[0]: header x-beta is absent"},
				{Rule: "debug", Why: `when[1]: query debug is "x"; no value starts with "o" (ignoring case)`},
			},
			reason: "weighted_routing", version: "v1",
		},
		{
			name: "regex fails",
			req:  split.Request{Authority: "api.example.com", Path: "/?debug=On", Headers: headers("cookie", "c=abc")},
			want: []split.RuleTrace{
				{Rule: "beta-testers", Why: "when[0]: header x-beta is absent"},
				{Rule: "debug", Why: `when[2]: cookie c is "abc"; no value matches regex "[0-9]+"`},
			},
			reason: "weighted_routing", version: "v1",
		},
		{
			name: "second rule matches",
			req:  split.Request{Authority: "api.example.com", Path: "/?debug=On", Headers: headers("cookie", "c=123")},
			want: []split.RuleTrace{
				{Rule: "beta-testers", Why: "when[0]: header x-beta is absent"},
				{Rule: "debug", Matched: true, Why: "all 3 conditions hold"},
			},
			reason: "header_match", version: "v2",
		},
		{
			name:   "first rule matches, later rules not tried",
			req:    split.Request{Authority: "api.example.com", Headers: headers("x-beta", "true")},
			want:   []split.RuleTrace{{Rule: "beta-testers", Matched: true, Why: "when[0] holds"}},
			reason: "header_match", version: "v2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tb.Explain(&tt.req)
			if diff := cmp.Diff(tt.want, e.RulesTried); diff != "" {
				t.Errorf("rules tried (-want +got):\n%s", diff)
			}
			if e.Reason != tt.reason || e.Version != tt.version || e.Service != "api" {
				t.Errorf("got %s %s %s, want api %s %s", e.Service, e.Version, e.Reason, tt.version, tt.reason)
			}
		})
	}
}

func TestExplainSticky(t *testing.T) {
	tb := mustLoad(t, explainYAML)
	e := tb.Explain(&split.Request{Authority: "api.example.com", Headers: headers("x-user-id", "user-123")})
	if e.Reason != "sticky_routing" || e.Bucket == nil || *e.Bucket != 1301 || e.Version != "v2" || e.StickyKey != "header x-user-id" {
		t.Errorf("got %+v", e)
	}
	if len(e.Experiments) != 1 || e.Experiments[0].Variant != "A" {
		t.Errorf("experiments = %+v", e.Experiments)
	}
	if !strings.Contains(strings.Join(e.Notes, "\n"), `FNV-1a-32("api:user-123") % 10000 = bucket 1301, which v2 owns ([0, 2000))`) {
		t.Errorf("notes = %q", e.Notes)
	}
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"bucket":1301`, `"weights":{"v1":80,"v2":20}`, `"reason":"sticky_routing"`, `"experiments":[{"experiment":"default","header":"x-variant","variant":"A","bucket":338}]`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("JSON %s lacks %s", out, want)
		}
	}
}

// TestExplainDoesNotCountTraffic: explaining shows what the next unkeyed
// request gets, and does not move the round-robin.
func TestExplainDoesNotCountTraffic(t *testing.T) {
	tb := mustLoad(t, explainYAML)
	req := split.Request{Authority: "api.example.com"}
	for i := range 12 {
		e := tb.Explain(&req)
		again := tb.Explain(&req)
		d := decide(tb, req)
		if e.Version != d.Version || again.Version != d.Version || e.Reason != "weighted_routing" {
			t.Fatalf("request %d: explained %s/%s, decided %s", i, e.Version, again.Version, d.Version)
		}
		if e.Bucket != nil {
			t.Errorf("weighted explanation has a bucket")
		}
	}
}

func TestExplainUnmatched(t *testing.T) {
	tb := mustLoad(t, explainYAML)
	e := tb.Explain(&split.Request{Authority: "other.example.com:80", Headers: headers("x-user-id", "u")})
	if e.Reason != "unmatched" || e.Service != "" || e.Version != "" || len(e.RulesTried) != 0 {
		t.Errorf("got %+v", e)
	}
	if len(e.Notes) != 1 || !strings.Contains(e.Notes[0], `no service matches host "other.example.com"`) {
		t.Errorf("notes = %q", e.Notes)
	}
	if len(e.Experiments) != 1 {
		t.Errorf("experiments still apply: %+v", e.Experiments)
	}
	out, _ := json.Marshal(e)
	if strings.Contains(string(out), "weights") || !strings.Contains(string(out), `"reason":"unmatched"`) {
		t.Errorf("JSON %s", out)
	}
}
