package split_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

func weights(kv ...any) split.Weights {
	var w split.Weights
	for i := 0; i+1 < len(kv); i += 2 {
		w = append(w, split.Weight{Version: kv[i].(string), BasisPoints: kv[i+1].(int)})
	}
	return w
}

func oneService(w split.Weights) *split.Config {
	return &split.Config{Services: []split.Service{{Name: "svc", Weights: w}}}
}

// unkeyed routes n unkeyed requests and returns the version indexes.
func unkeyed(tb *split.Table, w split.Weights, n int) []int {
	index := map[string]int{}
	for i, x := range w {
		index[x.Version] = i
	}
	seq := make([]int, n)
	var d split.Decision
	req := split.Request{Authority: "x"}
	for i := range seq {
		tb.Decide(&req, &d)
		seq[i] = index[d.Version]
	}
	return seq
}

// maxWindowError returns, over every window of length win of the cyclic
// sequence seq (one full period), the largest |count - exact share|, in
// requests.
func maxWindowError(seq []int, w split.Weights, win int) float64 {
	period := len(seq)
	worst := 0.0
	counts := make([]int, len(w))
	for i := 0; i < win; i++ {
		counts[seq[i%period]]++
	}
	for start := 0; start < period; start++ {
		for v := range w {
			exact := float64(win) * float64(w[v].BasisPoints) / split.Buckets
			if e := abs(float64(counts[v]) - exact); e > worst {
				worst = e
			}
		}
		counts[seq[start]]--
		counts[seq[(start+win)%period]]++
	}
	return worst
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func period(w split.Weights) int {
	g := 0
	for _, x := range w {
		a, b := g, x.BasisPoints
		for b != 0 {
			a, b = b, a%b
		}
		g = a
	}
	return split.Buckets / g
}

// TestRoundRobinWindows checks the SWRR promise over every window of
// consecutive unkeyed requests (cyclically, so also across the period's
// boundary): within one request of the exact share for two versions with
// whole-percent weights, within two otherwise.
func TestRoundRobinWindows(t *testing.T) {
	type tc struct {
		w   split.Weights
		tol float64
	}
	var cases []tc
	for p := 0; p <= 100; p++ {
		cases = append(cases, tc{weights("stable", (100-p)*100, "canary", p*100), 1})
	}
	cases = append(cases,
		tc{weights("v1", 9995, "v2", 5), 2},
		tc{weights("v1", 1250, "v2", 8750), 2},
		tc{weights("v1", 3333, "v2", 6667), 2},
		tc{weights("v1", 1, "v2", 9999), 2},
		tc{weights("v1", 3334, "v2", 3333, "v3", 3333), 2},
		tc{weights("v1", 7000, "v2", 2000, "v3", 1000), 2},
		tc{weights("v1", 1000, "v2", 2000, "v3", 3000, "v4", 4000), 2},
		tc{weights("a", 5000, "b", 2500, "c", 1250, "d", 1250), 2},
		tc{weights("a", 9000, "b", 500, "c", 300, "d", 200), 2},
		tc{weights("a", 100, "b", 100, "c", 100, "d", 100, "e", 9600), 2},
		tc{weights("a", 2000, "b", 2000, "c", 2000, "d", 2000, "e", 2000), 2},
		tc{weights("a", 4950, "b", 4950, "c", 100), 2},
		tc{weights("a", 0, "b", 6000, "c", 0, "d", 4000), 2},
		tc{weights("a", 3300, "b", 3300, "c", 3300, "d", 100), 2},
	)
	for _, c := range cases {
		t.Run(c.w.String(), func(t *testing.T) {
			tb := mustCompile(t, oneService(c.w))
			p := period(c.w)
			seq := unkeyed(tb, c.w, 2*p)
			for i := 0; i < p; i++ {
				if seq[i] != seq[i+p] {
					t.Fatalf("sequence is not periodic with period %d at %d", p, i)
				}
			}
			seq = seq[:p]
			windows := []int{100}
			for win := 1; win <= min(p, 250); win++ {
				windows = append(windows, win)
			}
			for _, win := range windows {
				if e := maxWindowError(seq, c.w, win); e > c.tol {
					t.Fatalf("window of %d requests: a version is %.2f requests off its share (tolerance %v)", win, e, c.tol)
				}
			}
		})
	}
}

func TestRoundRobinFirstRequestGoesToLargest(t *testing.T) {
	tests := []struct {
		w    split.Weights
		want string
	}{
		{weights("v1", 8000, "v2", 2000), "v1"},
		{weights("v1", 2000, "v2", 8000), "v2"},
		{weights("v1", 5000, "v2", 5000), "v1"},
		{weights("v1", 2500, "v2", 3750, "v3", 3750), "v2"},
		{weights("v1", 0, "v2", 10000), "v2"},
		{weights("v1", 9995, "v2", 5), "v1"},
	}
	for _, tt := range tests {
		t.Run(tt.w.String(), func(t *testing.T) {
			tb := mustCompile(t, oneService(tt.w))
			if d := decide(tb, split.Request{}); d.Version != tt.want || d.Reason != split.ReasonWeightedRouting {
				t.Errorf("first request -> %s (%v), want %s", d.Version, d.Reason, tt.want)
			}
		})
	}
}

// TestRoundRobinSeedSequence pins the seed's 80/20 sequence.
func TestRoundRobinSeedSequence(t *testing.T) {
	w := weights("v1", 8000, "v2", 2000)
	tb := mustCompile(t, oneService(w))
	var b strings.Builder
	for _, v := range unkeyed(tb, w, 10) {
		fmt.Fprint(&b, w[v].Version, " ")
	}
	if got, want := b.String(), "v1 v1 v2 v1 v1 v1 v1 v2 v1 v1 "; got != want {
		t.Errorf("sequence %q, want %q", got, want)
	}
}

func TestWeightZeroNeverRouted(t *testing.T) {
	w := weights("a", 0, "b", 7000, "c", 0, "d", 3000, "e", 0)
	tb := mustCompile(t, &split.Config{Services: []split.Service{{Name: "svc", Weights: w, Stable: "c", Sticky: &split.Key{Header: "k"}}}})
	for _, v := range unkeyed(tb, w, 2*period(w)) {
		if w[v].BasisPoints == 0 {
			t.Fatalf("weighted request went to %s (weight 0)", w[v].Version)
		}
	}
	for i := 0; i < 20000; i++ {
		d := decide(tb, split.Request{Headers: headers("k", fmt.Sprint("key-", i))})
		if bp, _ := w.Get(d.Version); bp == 0 {
			t.Fatalf("sticky key %d went to %s (weight 0)", i, d.Version)
		}
	}
}

// TestRoundRobinConcurrentIsExact: concurrent unkeyed requests share one
// atomic position, so together they follow the exact sequence.
func TestRoundRobinConcurrentIsExact(t *testing.T) {
	w := weights("v1", 7000, "v2", 2900, "v3", 100)
	tb := mustCompile(t, oneService(w))
	const goroutines, perG = 8, 2500 // 20000 requests = 200 periods of 100
	counts := make([]map[string]int, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		counts[g] = map[string]int{}
		wg.Go(func() {
			var d split.Decision
			req := split.Request{Authority: "x"}
			for range perG {
				tb.Decide(&req, &d)
				counts[g][d.Version]++
			}
		})
	}
	wg.Wait()
	total := map[string]int{}
	for _, c := range counts {
		for v, n := range c {
			total[v] += n
		}
	}
	for _, x := range w {
		if want := goroutines * perG * x.BasisPoints / split.Buckets; total[x.Version] != want {
			t.Errorf("%s got %d requests, want exactly %d", x.Version, total[x.Version], want)
		}
	}
}
