package loadgen

import (
	"math/bits"
	"time"
)

// subBits is the number of mantissa bits kept per power of two: 64
// sub-buckets bound the relative error of a reported percentile to about
// 1.6 %, which is far below the run-to-run noise of these measurements.
const subBits = 6

const (
	subCount   = 1 << subBits
	maxExp     = 40 // 2^40 ns is about 18 minutes: nothing in a run is longer
	numBuckets = (maxExp - subBits + 1) * subCount
)

// Histogram is a fixed-size log-linear latency histogram. Recording does not
// allocate, so each worker keeps its own and they are merged at the end.
type Histogram struct {
	counts [numBuckets]uint64
	total  uint64
	max    time.Duration
}

func bucketOf(d time.Duration) int {
	v := uint64(d)
	if d <= 0 {
		return 0
	}
	if v < subCount {
		return int(v)
	}
	exp := bits.Len64(v) - 1 // v >= 2^subBits, so exp >= subBits
	if exp >= maxExp {
		return numBuckets - 1
	}
	mant := (v >> (exp - subBits)) & (subCount - 1)
	return (exp-subBits+1)*subCount + int(mant)
}

// lowerBound is the smallest duration that falls in bucket b.
func lowerBound(b int) time.Duration {
	if b < subCount {
		return time.Duration(b)
	}
	exp := b/subCount + subBits - 1
	mant := uint64(b % subCount)
	return time.Duration((subCount | mant) << (exp - subBits))
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.total++
	if d > h.max {
		h.max = d
	}
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	if o.max > h.max {
		h.max = o.max
	}
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.total }

// Max is the largest observation.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the duration below which a fraction q (0..1) of the
// observations fall, as the midpoint of the bucket that holds it (capped at
// the maximum seen). It is 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > h.total {
		rank = h.total
	}
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			lo := lowerBound(b)
			hi := lowerBound(b + 1)
			if b+1 >= numBuckets {
				hi = h.max
			}
			mid := lo + (hi-lo)/2
			if mid > h.max {
				mid = h.max
			}
			return mid
		}
	}
	return h.max
}
