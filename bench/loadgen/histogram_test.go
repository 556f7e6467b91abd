package loadgen

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name string
		obs  []time.Duration
		q    float64
		want time.Duration
	}{
		{name: "empty", q: 0.5, want: 0},
		{name: "single", obs: []time.Duration{100 * time.Microsecond}, q: 0.99, want: 100 * time.Microsecond},
		{name: "median of 1..1000us", obs: seq(1000, time.Microsecond), q: 0.5, want: 500 * time.Microsecond},
		{name: "p99 of 1..1000us", obs: seq(1000, time.Microsecond), q: 0.99, want: 990 * time.Microsecond},
		{name: "small exact values", obs: seq(50, 1), q: 0.5, want: 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, d := range tt.obs {
				h.Record(d)
			}
			got := h.Quantile(tt.q)
			// 64 sub-buckets per power of two: within 1.6 %.
			if diff := float64(got-tt.want) / float64(max(tt.want, 1)); diff > 0.016 || diff < -0.016 {
				t.Errorf("Quantile(%v) = %v, want %v within 1.6%%", tt.q, got, tt.want)
			}
		})
	}
}

func TestHistogramBucketsCoverRange(t *testing.T) {
	prev := -1
	for _, d := range []time.Duration{0, 1, 63, 64, 65, 127, 128, 1000, time.Millisecond, time.Second, time.Hour, 1 << 62} {
		b := bucketOf(d)
		if b < prev || b >= numBuckets {
			t.Fatalf("bucketOf(%v) = %d after %d (of %d)", d, b, prev, numBuckets)
		}
		if d < 1<<maxExp && lowerBound(b) > d {
			t.Errorf("lowerBound(bucketOf(%v)) = %v, above the value", d, lowerBound(b))
		}
		prev = b
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b Histogram
	a.Record(time.Millisecond)
	b.Record(3 * time.Millisecond)
	b.Record(2 * time.Millisecond)
	a.Merge(&b)
	if a.Count() != 3 || a.Max() != 3*time.Millisecond {
		t.Errorf("merged count %d max %v, want 3, 3ms", a.Count(), a.Max())
	}
}

func seq(n int, unit time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * unit
	}
	return out
}
