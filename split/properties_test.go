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
