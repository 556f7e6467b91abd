package split_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

func TestRequestHeaders(t *testing.T) {
	for _, c := range []struct {
		name, config string
		want         []string
	}{
		{
			name:   "weights only: the authority",
			config: "services:\n  - name: api\n    weights: {v1: 50, v2: 50}\n",
			want:   []string{":authority"},
		},
		{
			name: "rules, sticky and experiments, each name once, cookie and path when used",
			config: `services:
  - name: api
    hosts: [api]
    weights: {v1: 50, v2: 50}
    sticky: {header: X-User-Id}
    rules:
      - {name: a, when: [{header: X-Beta, exact: "true"}, {cookie: ring, exact: internal}], version: v2}
      - {name: b, when: [{query: debug, present: true}, {header: x-beta, present: true}], version: v2}
  - name: web
    hosts: [web]
    weights: {v1: 50, v2: 50}
    sticky: {cookie: sid}
experiments:
  - {name: e, key: {header: x-user-id}, variants: {A: 50, B: 50}, header: x-variant}
  - {name: f, key: {header: x-device}, variants: {A: 50, B: 50}, header: x-f}
`,
			want: []string{":authority", "x-beta", "cookie", ":path", "x-user-id", "x-device"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			tb := mustLoad(t, c.config)
			got := tb.RequestHeaders()
			if d := cmp.Diff(c.want, got); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
			got[0] = "changed"
			if tb.RequestHeaders()[0] != ":authority" {
				t.Fatal("RequestHeaders hands out the table's own slice")
			}
		})
	}
}

// TestOnlyRequestHeadersMatter: a decision made from the headers
// RequestHeaders lists equals the decision made from every header, for
// generated requests carrying many other headers.
func TestOnlyRequestHeadersMatter(t *testing.T) {
	cfg := `services:
  - name: api
    hosts: ["*.example.com"]
    weights: {v1: 60, v2: 30, v3: 10}
    sticky: {cookie: sid}
    rules:
      - {name: q, when: [{query: v, exact: "3"}], version: v3}
      - {name: h, when: [{header: x-beta, exact: "true"}, {header: x-os, prefix: and}], version: v2}
  - name: web
    weights: {a: 50, b: 50}
    sticky: {header: x-user-id}
experiments:
  - {name: e, key: {header: x-user-id}, variants: {A: 50, B: 50}, header: x-variant}
`
	full, reduced := mustLoad(t, cfg), mustLoad(t, cfg)
	reads := full.RequestHeaders()
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	for i := range 5000 {
		req := split.Request{Authority: pick("a.example.com", "web", "x.example.com:8080"), Path: pick("/", "/p?v=3", "/p?x=1&v=2")}
		req.Headers = append(req.Headers, split.Header{Name: ":authority", Value: req.Authority}, split.Header{Name: ":path", Value: req.Path})
		for range r.IntN(8) {
			name := pick("x-beta", "x-os", "cookie", "x-user-id", "x-other", "accept", "x-route-version", "user-agent")
			req.Headers = append(req.Headers, split.Header{Name: name, Value: pick("true", "android", "sid=s1; a=b", fmt.Sprint("u", r.IntN(50)), "v2")})
		}
		only := req
		only.Headers = slices.DeleteFunc(slices.Clone(req.Headers), func(h split.Header) bool { return !slices.Contains(reads, h.Name) })
		var a, b split.Decision
		full.Decide(&req, &a)
		reduced.Decide(&only, &b)
		if a.Service != b.Service || a.Version != b.Version || a.Reason != b.Reason || a.Rule != b.Rule ||
			!slices.Equal(a.Variants(), b.Variants()) || a.Outcome() != b.Outcome() {
			t.Fatalf("request %d %+v: all headers decide %+v, the read ones %+v", i, req, a, b)
		}
	}
}

func TestDecisionTarget(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: api
    hosts: [api]
    weights: {v1: 0, v2: 100}
  - name: web
    hosts: [web]
    weights: {a: 100, b: 0}
`)
	for _, c := range []struct {
		authority        string
		service, version int
	}{{"api", 0, 1}, {"web", 1, 0}, {"nowhere", -1, -1}} {
		var d split.Decision
		tb.Decide(&split.Request{Authority: c.authority}, &d)
		if s, v := d.Target(); s != c.service || v != c.version {
			t.Errorf("%s: Target() = %d, %d; want %d, %d", c.authority, s, v, c.service, c.version)
		}
		if c.service >= 0 {
			cfg := tb.Config()
			if got := cfg.Services[c.service].Weights[c.version].Version; got != d.Version {
				t.Errorf("%s: Target names %s, the decision %s", c.authority, got, d.Version)
			}
		}
	}
}
