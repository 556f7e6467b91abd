package extproc

import (
	"fmt"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

// largeConfig has more distinct answers than the old shared cache held
// (256): 3 services with 3 versions each, rules, sticky keys, and four
// experiments of three variants on different keys.
const largeConfig = `services:
  - name: api
    hosts: [api.example.com]
    weights: {v1: 60, v2: 30, v3: 10}
    sticky: {header: x-user-id}
    rules: [{name: beta, when: [{header: x-beta, exact: "true"}], version: v2}]
  - name: web
    hosts: [web.example.com]
    weights: {blue: 50, green: 40, canary: 10}
    sticky: {cookie: session}
  - name: other
    hosts: ["*"]
    weights: {stable: 90, next: 5, dark: 5}
experiments:
  - {name: default, key: {header: x-user-id}, variants: {A: 34, B: 33, C: 33}, header: x-variant}
  - {name: layout, key: {header: x-user-id}, variants: {grid: 34, list: 33, cards: 33}, header: x-layout}
  - {name: price, key: {cookie: session}, variants: {low: 34, mid: 33, high: 33}, header: x-price}
  - {name: search, key: {header: x-device}, variants: {old: 34, new: 33, ai: 33}, header: x-search}
`

// largeRequests are n request_headers messages across every host, rule,
// sticky key and experiment of largeConfig.
func largeRequests(n int) []step {
	hosts := []string{"api.example.com", "web.example.com", "shop.example.com"}
	steps := make([]step, n)
	for i := range steps {
		kv := []string{":authority", hosts[i%3], ":path", "/", ":method", "GET"}
		if i%2 == 0 {
			kv = append(kv, "x-user-id", fmt.Sprint("user-", i%997))
		}
		if i%3 == 0 {
			kv = append(kv, "cookie", fmt.Sprint("session=s", i%491))
		}
		if i%5 == 0 {
			kv = append(kv, "x-device", fmt.Sprint("d", i%89))
		}
		if i%7 == 0 {
			kv = append(kv, "x-beta", "true")
		}
		steps[i] = step{req: reqHeaders(raw(kv...))}
	}
	return steps
}

func largeTable(t testing.TB) *split.Table {
	t.Helper()
	tab, err := split.Load([]byte(largeConfig), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestResponseCacheLargeConfig: once every answer of a large configuration
// has been built, requests find it: no misses in steady state, and each
// answer was built once.
func TestResponseCacheLargeConfig(t *testing.T) {
	tab := largeTable(t)
	s := newTestServer(fixedSource{tab}, nil)
	reqs := largeRequests(6000)
	run := func() {
		for i := range reqs {
			st := newFakeStream(t.Context(), reqs[i])
			st.keep = false
			if err := s.Process(st); err != nil || st.nsent != 1 {
				t.Fatalf("request %d: %v, %d answers", i, err, st.nsent)
			}
		}
	}
	// Unkeyed requests meet other round-robin positions on each pass, so
	// the first passes may still find answers not built yet; then none.
	var warm uint64
	steady := false
	for pass := 0; pass < 10 && !steady; pass++ {
		_, before := s.CacheStats()
		run()
		_, warm = s.CacheStats()
		steady = warm == before && pass > 0
	}
	if !steady {
		t.Fatalf("still missing after 10 passes (%d answers built)", warm)
	}
	run()
	hits, misses := s.CacheStats()
	if misses != warm {
		t.Fatalf("%d misses in steady state (after %d while warming up)", misses-warm, warm)
	}
	if warm <= 256 || warm > uint64(tab.Outcomes()) {
		t.Fatalf("%d answers built for %d outcomes; each must be built once, and the test needs more than 256", warm, tab.Outcomes())
	}
	t.Logf("%d answers built for %d possible outcomes, then %d hits", warm, tab.Outcomes(), hits)
}

// BenchmarkProcessLargeConfig decides a mix of requests against
// largeConfig and reports the response cache's misses per request after a
// warm-up pass (0 in steady state).
func BenchmarkProcessLargeConfig(b *testing.B) {
	s := newTestServer(fixedSource{largeTable(b)}, nil)
	reqs := largeRequests(6000)
	streams := make([]*fakeStream, len(reqs))
	for i := range reqs {
		streams[i] = newFakeStream(b.Context(), reqs[i])
		streams[i].keep = false
	}
	for range 5 { // warm up: every answer the mix can need
		for _, st := range streams {
			st.next = 0
			if err := s.Process(st); err != nil {
				b.Fatal(err)
			}
		}
	}
	_, warm := s.CacheStats()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		st := streams[i%len(streams)]
		st.next = 0
		if err := s.Process(st); err != nil {
			b.Fatal(err)
		}
		i++
	}
	_, misses := s.CacheStats()
	b.ReportMetric(float64(misses-warm)/float64(b.N), "misses/op")
	b.ReportMetric(float64(warm), "answers")
}
