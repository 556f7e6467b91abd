package split_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

// randomKeys returns n keys from a fixed seed, so failures reproduce.
func randomKeys(n int) []string {
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%x-%d", r.Uint64(), i)
	}
	return keys
}

func stickyTable(t testing.TB, w split.Weights, stable string) *split.Table {
	return mustCompile(t, &split.Config{Services: []split.Service{{
		Name: "api", Weights: w, Stable: stable, Sticky: &split.Key{Header: "x-user-id"},
	}}})
}

func TestStickyDistribution(t *testing.T) {
	keys := randomKeys(100000)
	tests := []struct {
		w      split.Weights
		stable string
	}{
		{weights("v1", 8000, "v2", 2000), "v1"},
		{weights("v1", 9900, "v2", 100), "v1"},
		{weights("v1", 5000, "v2", 5000), "v2"},
		{weights("v1", 3334, "v2", 3333, "v3", 3333), "v1"},
		{weights("v1", 7000, "v2", 2000, "v3", 1000), "v3"},
	}
	for _, tt := range tests {
		t.Run(tt.w.String(), func(t *testing.T) {
			tb := stickyTable(t, tt.w, tt.stable)
			counts := map[string]int{}
			for _, k := range keys {
				d := decide(tb, split.Request{Headers: headers("x-user-id", k)})
				if d.Reason != split.ReasonStickyRouting {
					t.Fatalf("reason %v", d.Reason)
				}
				counts[d.Version]++
			}
			for _, x := range tt.w {
				got := float64(counts[x.Version]) / float64(len(keys)) * 100
				want := float64(x.BasisPoints) / 100
				if abs(got-want) > 1 {
					t.Errorf("%s got %.2f %% of keys, want %.2f %% ± 1", x.Version, got, want)
				}
			}
		})
	}
}

func TestExperimentDistributionAndIndependence(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: api
    weights: {v1: 100}
experiments:
  - {name: one, key: {header: u}, variants: {A: 50, B: 50}, header: x-one}
  - {name: two, key: {header: u}, variants: {A: 50, B: 50}, header: x-two}
  - {name: three, key: {header: u}, variants: {x: 10, y: 30, z: 60}, header: x-three}
`)
	keys := randomKeys(100000)
	joint := map[string]int{}
	three := map[string]int{}
	for _, k := range keys {
		d := decide(tb, split.Request{Headers: headers("u", k)})
		v := d.Variants()
		joint[v[0].Variant+v[1].Variant]++
		three[v[2].Variant]++
	}
	// Independent experiments: each of the four combinations ~25 %.
	for _, combo := range []string{"AA", "AB", "BA", "BB"} {
		if got := float64(joint[combo]) / float64(len(keys)) * 100; abs(got-25) > 1 {
			t.Errorf("combination %s: %.2f %% of keys, want 25 %% ± 1", combo, got)
		}
	}
	for v, want := range map[string]float64{"x": 10, "y": 30, "z": 60} {
		if got := float64(three[v]) / float64(len(keys)) * 100; abs(got-want) > 1 {
			t.Errorf("variant %s: %.2f %%, want %.0f %% ± 1", v, got, want)
		}
	}
}

// TestStickyMonotone raises a canary from 0 to 100 % in steps of 5 (and
// back) and checks that no user ever moves against the change.
func TestStickyMonotone(t *testing.T) {
	keys := randomKeys(20000)
	base := stickyTable(t, weights("v1", 10000, "v2", 0), "v1")
	versionAt := func(bp int) []string {
		w, err := base.CanaryWeights("api", bp)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := base.WithWeights("api", w)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(keys))
		for i, k := range keys {
			out[i] = decide(tb, split.Request{Headers: headers("x-user-id", k)}).Version
		}
		return out
	}
	prev := versionAt(0)
	for bp := 500; bp <= 10000; bp += 500 {
		cur := versionAt(bp)
		for i := range keys {
			if prev[i] == "v2" && cur[i] != "v2" {
				t.Fatalf("growing the canary to %s: key %q left it", split.FormatPercent(bp), keys[i])
			}
		}
		prev = cur
	}
	for bp := 9500; bp >= 0; bp -= 500 {
		cur := versionAt(bp)
		for i := range keys {
			if prev[i] == "v1" && cur[i] != "v1" {
				t.Fatalf("shrinking the canary to %s: key %q joined it", split.FormatPercent(bp), keys[i])
			}
		}
		prev = cur
	}
}

// TestStickyMonotoneManyVersions: with three versions, trading share
// between the last non-stable version and stable is monotone (see doc.go).
func TestStickyMonotoneManyVersions(t *testing.T) {
	keys := randomKeys(20000)
	var prev []string
	for bp := 0; bp <= 8000; bp += 500 {
		tb := stickyTable(t, weights("stable", 8000-bp, "a", 2000, "b", bp), "stable")
		cur := make([]string, len(keys))
		for i, k := range keys {
			cur[i] = decide(tb, split.Request{Headers: headers("x-user-id", k)}).Version
			if prev != nil && prev[i] != "stable" && cur[i] != prev[i] {
				t.Fatalf("b at %s: key %q moved from %s to %s", split.FormatPercent(bp), k, prev[i], cur[i])
			}
		}
		prev = cur
	}
}

// TestStickyCanaryGetsLowBuckets pins the layout: canary [0, share).
func TestStickyCanaryGetsLowBuckets(t *testing.T) {
	tb := stickyTable(t, weights("v1", 8000, "v2", 2000), "v1")
	for _, k := range randomKeys(2000) {
		d := decide(tb, split.Request{Headers: headers("x-user-id", k)})
		if want := map[bool]string{true: "v2", false: "v1"}[d.Bucket < 2000]; d.Version != want {
			t.Fatalf("bucket %d -> %s, want %s", d.Bucket, d.Version, want)
		}
	}
	// Stable declared second: the layout follows stable, not order.
	tb = stickyTable(t, weights("v2", 2000, "v1", 8000), "v1")
	for _, k := range randomKeys(2000) {
		d := decide(tb, split.Request{Headers: headers("x-user-id", k)})
		if want := map[bool]string{true: "v2", false: "v1"}[d.Bucket < 2000]; d.Version != want {
			t.Fatalf("bucket %d -> %s, want %s", d.Bucket, d.Version, want)
		}
	}
}

// TestOverridePermutationMovesNobody: the same shares listed in any order
// keep every sticky user where it was (the layout follows the declared
// order, not the override's), and a real change moves only the users the
// layout says: here b trades share with stable, so only b <-> stable moves.
func TestOverridePermutationMovesNobody(t *testing.T) {
	keys := randomKeys(5000)
	base := stickyTable(t, weights("v1", 7000, "v2", 2000, "v3", 1000), "v1")
	assign := func(tb *split.Table) []string {
		out := make([]string, len(keys))
		for i, k := range keys {
			out[i] = decide(tb, split.Request{Headers: headers("x-user-id", k)}).Version
		}
		return out
	}
	before := assign(base)
	for _, perm := range []split.Weights{
		weights("v3", 1000, "v2", 2000, "v1", 7000),
		weights("v2", 2000, "v1", 7000, "v3", 1000),
		weights("v1", 7000, "v3", 1000, "v2", 2000),
	} {
		tb, err := base.WithWeights("api", perm)
		if err != nil {
			t.Fatal(err)
		}
		if svc, _ := tb.Service("api"); !svc.Weights.Equal(weights("v1", 7000, "v2", 2000, "v3", 1000)) {
			t.Errorf("WithWeights(%v) kept the order %v, want the declared order", perm, svc.Weights)
		}
		for i, v := range assign(tb) {
			if v != before[i] {
				t.Fatalf("WithWeights(%v): key %q moved from %s to %s", perm, keys[i], before[i], v)
			}
		}
	}
	// v3 (the last non-stable) 10 -> 15, stable 70 -> 65, listed reversed.
	tb, err := base.WithWeights("api", weights("v3", 1500, "v2", 2000, "v1", 6500))
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for i, v := range assign(tb) {
		if v == before[i] {
			continue
		}
		moved++
		if before[i] != "v1" || v != "v3" {
			t.Fatalf("key %q moved from %s to %s; only v1 -> v3 is allowed", keys[i], before[i], v)
		}
	}
	// About 5 % of the keys ([3000, 3500) of 10,000 buckets).
	if moved < 150 || moved > 350 {
		t.Errorf("%d of %d keys moved, want about 250", moved, len(keys))
	}
}

func TestOutcome(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: api
    hosts: [api]
    weights: {v1: 50, v2: 50}
    sticky: {header: x-user-id}
    rules: [{name: pin, when: [{header: x-pin, present: true}], version: v2}]
  - name: web
    hosts: [web]
    weights: {v1: 50, v3: 50}
experiments:
  - {name: e1, key: {header: x-user-id}, variants: {A: 50, B: 50}, header: x-e1}
  - {name: e2, key: {header: x-other}, variants: {X: 30, Y: 30, Z: 40}, header: x-e2}
`)
	// versions v1 v2 v3 + none = 4, 5 reasons, no mirror (1), (2+1) * (3+1) variants
	if got, want := tb.Outcomes(), 4*5*1*3*4; got != want {
		t.Fatalf("Outcomes = %d, want %d", got, want)
	}
	type shape struct {
		version, reason string
		variants        string
	}
	seen := map[int]shape{}
	for i := 0; i < 3000; i++ {
		h := []string{"x-user-id", fmt.Sprint("u", i%37)}
		if i%3 == 0 {
			h = append(h, "x-other", fmt.Sprint("o", i%11))
		}
		if i%5 == 0 {
			h = append(h, "x-pin", "1")
		}
		if i%7 == 0 {
			h = h[2:] // no user id: weighted, no e1
		}
		host := []string{"api", "web", "nowhere"}[i%3]
		d := decide(tb, split.Request{Authority: host, Headers: headers(h...)})
		o := d.Outcome()
		if o < 0 || o >= tb.Outcomes() {
			t.Fatalf("Outcome = %d, out of [0, %d)", o, tb.Outcomes())
		}
		var vs string
		for _, v := range d.Variants() {
			vs += v.Header + "=" + v.Variant + ";"
		}
		s := shape{d.Version, d.Reason.String(), vs}
		if prev, ok := seen[o]; ok && prev != s {
			t.Fatalf("outcome %d is both %+v and %+v", o, prev, s)
		}
		seen[o] = s
	}
	byShape := map[shape]int{}
	for o, s := range seen {
		if prev, ok := byShape[s]; ok {
			t.Fatalf("%+v has two outcomes, %d and %d", s, prev, o)
		}
		byShape[s] = o
	}
	if len(seen) < 20 {
		t.Errorf("only %d distinct outcomes seen; the test does not exercise the numbering", len(seen))
	}
}

func TestOutcomesTooMany(t *testing.T) {
	cfg := &split.Config{Services: []split.Service{{Name: "api", Weights: weights("v1", 5000, "v2", 5000)}}}
	for i := range 10 { // 3 * 4 * 5^10 > MaxOutcomes
		cfg.Experiments = append(cfg.Experiments, split.Experiment{
			Name: fmt.Sprint("e", i), Key: split.Key{Header: fmt.Sprint("x-k", i)}, Header: fmt.Sprint("x-e", i),
			Variants: weights("a", 2500, "b", 2500, "c", 2500, "d", 2500),
		})
	}
	tb := mustCompile(t, cfg)
	if tb.Outcomes() != 0 {
		t.Fatalf("Outcomes = %d, want 0 (more than %d)", tb.Outcomes(), split.MaxOutcomes)
	}
	if d := decide(tb, split.Request{Headers: headers("x-k1", "u")}); d.Outcome() != -1 {
		o := d.Outcome()
		t.Errorf("Outcome = %d, want -1", o)
	}
}
