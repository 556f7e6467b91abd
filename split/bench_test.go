package split_test

import (
	crand "crypto/rand"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

// benchYAML is a realistic hot-path table: a five-rule service (every
// operator kind and source) with sticky routing, a second service, and two
// experiments.
const benchYAML = `services:
  - name: api
    hosts: [api.example.com]
    weights: {v1: 90, v2: 10}
    sticky: {header: x-user-id}
    rules:
      - name: beta
        when: [{header: x-beta, exact: "true"}]
        version: v2
      - name: mobile
        when: [{header: user-agent, contains: "mobile", ignore_case: true}]
        version: v2
      - name: internal
        when: [{header: x-forwarded-for, regex: "10\\.[0-9.]+"}]
        version: v2
      - name: cookie
        when: [{cookie: canary, exact: always}, {header: x-debug, absent: true}]
        version: v2
      - name: query
        when: [{query: force, prefix: "v2"}]
        version: v2
  - name: other
    hosts: ["*.example.com"]
    weights: {v1: 100}
experiments:
  - {name: default, key: {header: x-user-id}, variants: {A: 50, B: 50}, header: x-variant}
  - {name: color, key: {cookie: session}, variants: {red: 50, blue: 50}, header: x-color}
`

// benchRequest has a dozen headers, like a browser request behind Envoy.
func benchRequest(keyed bool, path string) split.Request {
	hs := headers(
		":authority", "api.example.com",
		":path", path,
		":method", "GET",
		":scheme", "https",
		"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
		"accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
		"accept-encoding", "gzip, deflate, br",
		"accept-language", "en-GB,en;q=0.9",
		"cookie", "theme=dark; session=s-8f14e45fceea167a; canary=never",
		"x-forwarded-for", "192.168.1.20",
		"x-request-id", "0b3c4d5e-6f70-4182-93a4-b5c6d7e8f901",
		"x-envoy-expected-rq-timeout-ms", "15000",
	)
	if keyed {
		hs = append(hs, split.Header{Name: "x-user-id", Value: "user-123"})
	}
	return split.Request{Authority: "api.example.com:443", Method: "GET", Path: path, Headers: hs}
}

var allocCases = []struct {
	name       string
	req        split.Request
	wantReason split.Reason
	variants   int
}{
	{"keyed", benchRequest(true, "/products?page=2&sort=asc"), split.ReasonStickyRouting, 2},
	{"unkeyed", benchRequest(false, "/products?page=2&sort=asc"), split.ReasonWeightedRouting, 1},
	{"rule match", benchRequest(true, "/products?page=2&force=v2%2Dnow"), split.ReasonHeaderMatch, 2},
}

// TestDecideDoesNotAllocate asserts the hot path's allocation count (a
// count, not a timing).
func TestDecideDoesNotAllocate(t *testing.T) {
	tb := mustLoad(t, benchYAML)
	for _, c := range allocCases {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			var d split.Decision
			tb.Decide(&req, &d)
			if d.Reason != c.wantReason || d.Service != "api" || len(d.Variants()) != c.variants {
				t.Fatalf("decision %+v (variants %v), want reason %v", d, d.Variants(), c.wantReason)
			}
			if allocs := testing.AllocsPerRun(200, func() { tb.Decide(&req, &d) }); allocs != 0 {
				t.Errorf("Decide allocates %.1f times per request", allocs)
			}
		})
	}
}

func benchDecide(b *testing.B, req split.Request) {
	tb := mustLoad(b, benchYAML)
	var d split.Decision
	b.ReportAllocs()
	for b.Loop() {
		tb.Decide(&req, &d)
	}
}

func BenchmarkDecideKeyed(b *testing.B) { benchDecide(b, allocCases[0].req) }

func BenchmarkDecideUnkeyed(b *testing.B) { benchDecide(b, allocCases[1].req) }

func BenchmarkDecideRuleMatch(b *testing.B) { benchDecide(b, allocCases[2].req) }

// BenchmarkDecideUnkeyedParallel measures the shared atomic counter under
// contention.
func BenchmarkDecideUnkeyedParallel(b *testing.B) {
	tb := mustLoad(b, benchYAML)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := allocCases[1].req
		var d split.Decision
		for pb.Next() {
			tb.Decide(&req, &d)
		}
	})
}

func BenchmarkCompile(b *testing.B) {
	cfg, err := split.Parse([]byte(benchYAML), split.ParseOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := split.Compile(cfg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoad(b *testing.B) {
	data := []byte(benchYAML)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := split.Load(data, split.ParseOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchAssignYAML is benchYAML with key assignment and a mirror on api.
var benchAssignYAML = strings.Replace(benchYAML, "    sticky: {header: x-user-id}\n",
	"    sticky: {header: x-user-id, assign: {cookie: sid}}\n    mirror: {version: v2, percent: 10}\n", 1)

// cryptoKey is what the adapters pass as Request.NewKey.
func cryptoKey() (k [split.KeyBytes]byte) {
	_, _ = crand.Read(k[:])
	return k
}

// TestDecideAssignDoesNotAllocate: with assign and mirror configured, keyed
// and unkeyed decisions stay allocation-free, including the fresh key's
// encoding (the key generator is the adapter's cost, measured apart).
func TestDecideAssignDoesNotAllocate(t *testing.T) {
	tb := mustLoad(t, benchAssignYAML)
	var raw [split.KeyBytes]byte
	gen := func() [split.KeyBytes]byte { raw[0]++; return raw }
	cookie := benchRequest(false, "/products?page=2")
	cookie.Headers = append(cookie.Headers, split.Header{Name: "cookie", Value: "sid=AAAAAAAAAAAAAAAAAAAAAA"})
	for _, c := range []struct {
		name string
		req  split.Request
		want split.Reason
	}{
		{"keyed", allocCases[0].req, split.ReasonStickyRouting},
		{"assign cookie", cookie, split.ReasonStickyRouting},
		{"assigned", allocCases[1].req, split.ReasonStickyAssigned},
		{"rule match", allocCases[2].req, split.ReasonHeaderMatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			req.NewKey = gen
			var d split.Decision
			tb.Decide(&req, &d)
			if d.Reason != c.want {
				t.Fatalf("reason %v, want %v", d.Reason, c.want)
			}
			if allocs := testing.AllocsPerRun(200, func() { tb.Decide(&req, &d) }); allocs != 0 {
				t.Errorf("Decide allocates %.1f times per request", allocs)
			}
		})
	}
	var d split.Decision
	req := allocCases[1].req
	req.NewKey = gen
	tb.Decide(&req, &d)
	buf := make([]byte, 0, 256)
	if allocs := testing.AllocsPerRun(200, func() { buf = d.AppendSetCookie(buf[:0]) }); allocs != 0 {
		t.Errorf("AppendSetCookie allocates %.1f times", allocs)
	}
}

func benchAssign(b *testing.B, req split.Request) {
	tb := mustLoad(b, benchAssignYAML)
	req.NewKey = cryptoKey
	var d split.Decision
	b.ReportAllocs()
	for b.Loop() {
		tb.Decide(&req, &d)
	}
}

// BenchmarkDecideAssignKeyed: a keyed request of a service that assigns keys.
func BenchmarkDecideAssignKeyed(b *testing.B) { benchAssign(b, allocCases[0].req) }

// BenchmarkDecideAssigned: an unkeyed request given a fresh key from
// crypto/rand (16 bytes), decided by it, mirrored by its key.
func BenchmarkDecideAssigned(b *testing.B) { benchAssign(b, allocCases[1].req) }
