package split

import "sync/atomic"

// roundRobin is one service's smooth weighted round-robin state. The nginx
// algorithm is deterministic and periodic, so its whole cycle is computed
// once at compile time and requests just index it with an atomic counter:
// concurrent Decide calls are lock-free and together walk the exact
// sequence. A table derived from another (WithWeights, CompileNext) shares
// the roundRobin of every service whose weights did not change, so those
// services carry on where they were.
type roundRobin struct {
	weights Weights
	cycle   []uint8 // version index per step; len is the period
	next    atomic.Uint64
}

// newRoundRobin precomputes the SWRR cycle of w (shares in basis points,
// summing to Buckets, at most MaxVersions entries). Dividing by the gcd
// keeps the period at most Buckets and does not change the sequence, since
// nginx's choice is invariant under scaling all weights.
func newRoundRobin(w Weights) *roundRobin {
	g := 0
	for _, x := range w {
		g = gcd(g, x.BasisPoints)
	}
	if g == 0 { // cannot happen for valid weights; keep it total anyway
		return &roundRobin{weights: w.Clone(), cycle: []uint8{0}}
	}
	weight := make([]int, len(w))
	total := 0
	for i, x := range w {
		weight[i] = x.BasisPoints / g
		total += weight[i]
	}
	current := make([]int, len(w))
	cycle := make([]uint8, total)
	for step := range cycle {
		best := -1
		for i := range current {
			current[i] += weight[i]
			// Strictly greater: ties go to the first declared version.
			if best < 0 || current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		cycle[step] = uint8(best)
	}
	return &roundRobin{weights: w.Clone(), cycle: cycle}
}

// take returns the version index of the next request and advances.
func (r *roundRobin) take() int {
	n := r.next.Add(1) - 1
	return int(r.cycle[n%uint64(len(r.cycle))])
}

// peek returns the version index the next request would get.
func (r *roundRobin) peek() int {
	return int(r.cycle[r.next.Load()%uint64(len(r.cycle))])
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
