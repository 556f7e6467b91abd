package signals

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// latencyBoundsUs are the upper bounds of a Histogram's buckets, in
// microseconds, increasing; bucket i holds times t with
// latencyBoundsUs[i-1] <= t < latencyBoundsUs[i] (from 0 for the first),
// and the last bucket, past the table, times of 100 s or more. Steps are
// at most 12.5 % of the bound from 10 ms up (whole milliseconds below), so
// that a percentile is known within one step. Every bound at or above
// 10^k ms is a multiple of 10^(k-1) ms: the bins of Envoy's histograms
// (two significant digits) never straddle one (EnvoyBin). Read-only.
var latencyBoundsUs = [...]uint64{
	// Below a millisecond (only the in-process module times this finely;
	// Envoy records whole milliseconds).
	100, 200, 300, 400, 500, 600, 700, 800, 900,
	// 1 to 9 ms.
	1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 9_000,
	// 10 ms to 90 s: the same 26 steps in every decade.
	10_000, 11_000, 12_000, 13_000, 14_000, 15_000, 16_000, 18_000, 20_000, 22_000, 24_000, 26_000, 28_000,
	30_000, 33_000, 36_000, 40_000, 45_000, 50_000, 55_000, 60_000, 65_000, 70_000, 75_000, 80_000, 90_000,
	100_000, 110_000, 120_000, 130_000, 140_000, 150_000, 160_000, 180_000, 200_000, 220_000, 240_000, 260_000, 280_000,
	300_000, 330_000, 360_000, 400_000, 450_000, 500_000, 550_000, 600_000, 650_000, 700_000, 750_000, 800_000, 900_000,
	1_000_000, 1_100_000, 1_200_000, 1_300_000, 1_400_000, 1_500_000, 1_600_000, 1_800_000, 2_000_000, 2_200_000, 2_400_000, 2_600_000, 2_800_000,
	3_000_000, 3_300_000, 3_600_000, 4_000_000, 4_500_000, 5_000_000, 5_500_000, 6_000_000, 6_500_000, 7_000_000, 7_500_000, 8_000_000, 9_000_000,
	10_000_000, 11_000_000, 12_000_000, 13_000_000, 14_000_000, 15_000_000, 16_000_000, 18_000_000, 20_000_000, 22_000_000, 24_000_000, 26_000_000, 28_000_000,
	30_000_000, 33_000_000, 36_000_000, 40_000_000, 45_000_000, 50_000_000, 55_000_000, 60_000_000, 65_000_000, 70_000_000, 75_000_000, 80_000_000, 90_000_000,
	100_000_000,
}

// LatencyBuckets is the number of buckets of a Histogram: one per bound,
// and one for times at or above the last (100 s).
const LatencyBuckets = len(latencyBoundsUs) + 1

// LatencyBound returns the upper bound of bucket i (exclusive), and false
// for the last bucket, which has none.
func LatencyBound(i int) (time.Duration, bool) {
	if i < 0 || i >= len(latencyBoundsUs) {
		return 0, false
	}
	return time.Duration(latencyBoundsUs[i]) * time.Microsecond, true
}

// LatencyBucket returns the bucket of a request that took d.
func LatencyBucket(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	// The first bound above us: times equal to a bound belong above it.
	return sort.Search(len(latencyBoundsUs), func(i int) bool { return latencyBoundsUs[i] > us })
}

// LatencyBoundsNs returns every bound in nanoseconds, for a timer that
// buckets in another language (the module's C hooks).
func LatencyBoundsNs() []uint64 {
	out := make([]uint64, len(latencyBoundsUs))
	for i, b := range latencyBoundsUs {
		out[i] = b * 1000
	}
	return out
}

// Histogram counts requests by how long they took, in the buckets above:
// cumulative in a reading, summed over a span in a Window (it is a
// Cumulative). The zero value is empty.
type Histogram [LatencyBuckets]uint64

// Record counts one request that took d (not safe for concurrent use:
// readings of a live source are built from atomic counters instead).
func (h *Histogram) Record(d time.Duration) { h[LatencyBucket(d)]++ }

// Total is how many requests the histogram counts.
func (h *Histogram) Total() uint64 {
	var n uint64
	for _, c := range h {
		n += c
	}
	return n
}

// Since implements Cumulative: the buckets of one reading are counters of
// one histogram, so when any went backwards all restarted.
func (h Histogram) Since(prev Histogram) (Histogram, bool) {
	var out Histogram
	for i := range h {
		if h[i] < prev[i] {
			return h, true
		}
		out[i] = h[i] - prev[i]
	}
	return out, false
}

// Add implements Cumulative.
func (h Histogram) Add(o Histogram) Histogram {
	for i := range h {
		h[i] += o[i]
	}
	return h
}

// Quantile is where a percentile of a histogram's requests lies.
type Quantile struct {
	// Bucket is the bucket the percentile's request falls in.
	Bucket int
	// Requests is how many requests the histogram counts (0: no
	// percentile).
	Requests uint64
}

// Percentile finds the p-th percentile of h, p in hundredths of a percent
// (9900 is p99). With N requests, the percentile's request is the r-th
// fastest, r = ceil(N x p / 10000) (at least 1), but never the slowest of
// two or more (r <= N - 1): with fewer requests than the percentile needs
// to leave one beyond it (a p99 of under 100), the second-slowest request
// stands for it, so that one stalled request never decides a verdict
// alone. Its bucket is the first whose cumulative count reaches r. The reported value is that
// bucket's upper bound (Quantile.Upper): at least p % of the requests took
// less than it, and fewer than p % took less than the bucket's lower
// bound. Exact integers throughout.
func (h *Histogram) Percentile(p int) Quantile {
	n := h.Total()
	if n == 0 {
		return Quantile{}
	}
	// ceil(n*p/10000) without overflow for any realistic n (p <= 10000).
	r := max((n/10000)*uint64(p)+((n%10000)*uint64(p)+9999)/10000, 1)
	if n >= 2 {
		r = min(r, n-1)
	}
	var cum uint64
	for i, c := range h {
		cum += c
		if cum >= r {
			return Quantile{Bucket: i, Requests: n}
		}
	}
	return Quantile{Bucket: LatencyBuckets - 1, Requests: n}
}

// Upper is the quantile's value: its bucket's upper bound, and false when
// it is the last bucket (100 s or more) or there are no requests.
func (q Quantile) Upper() (time.Duration, bool) {
	if q.Requests == 0 {
		return 0, false
	}
	return LatencyBound(q.Bucket)
}

// Millis is the quantile's value in milliseconds for people and JSON
// (+Inf past the last bound, 0 without requests).
func (q Quantile) Millis() float64 {
	if q.Requests == 0 {
		return 0
	}
	d, ok := q.Upper()
	if !ok {
		return math.Inf(1)
	}
	return float64(d) / float64(time.Millisecond)
}

// String renders the value: "250 ms", "0.3 ms", "100000+ ms".
func (q Quantile) String() string {
	d, ok := q.Upper()
	if !ok {
		if q.Requests == 0 {
			return "no requests"
		}
		last, _ := LatencyBound(len(latencyBoundsUs) - 1)
		return strconv.FormatInt(last.Milliseconds(), 10) + "+ ms"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64) + " ms"
}

// EnvoyBin returns the bucket of one bin of an Envoy histogram of whole
// milliseconds (upstream_rq_time) as the admin interface details it: the
// bin [lower, lower+width) of recorded values. Envoy records a request's
// time truncated to whole milliseconds, so a recorded v took from v to
// just under v+1 ms: the bin's requests took less than lower+max(width, 1)
// ms, and the bin goes to the bucket whose upper bound is the first at or
// above that. The buckets' bounds fall on Envoy's bin edges, so the bin's
// requests also took at least the bucket's lower bound (except the bin of
// 0 ms, which goes to the bucket below 1 ms).
func EnvoyBin(lower, width float64) (int, error) {
	if math.IsNaN(lower) || math.IsNaN(width) || lower < 0 || width < 0 || math.IsInf(lower, 0) || math.IsInf(width, 0) {
		return 0, fmt.Errorf("histogram bin [%g, %g+%g) is not a time", lower, lower, width)
	}
	upperUs := math.Round((lower + max(width, 1)) * 1000)
	if upperUs > float64(latencyBoundsUs[len(latencyBoundsUs)-1]) {
		return LatencyBuckets - 1, nil
	}
	u := uint64(upperUs)
	return sort.Search(len(latencyBoundsUs), func(i int) bool { return latencyBoundsUs[i] >= u }), nil
}

// MarshalJSON writes the non-empty buckets as an object from each
// bucket's upper bound in microseconds ("+Inf" for the last) to its
// count: {"5000": 12, "6000": 3}. Fleet replicas publish their window's
// histograms this way.
func (h Histogram) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for i, c := range h {
		if c == 0 {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&b, "%q:%d", boundKey(i), c)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

// UnmarshalJSON reads what MarshalJSON writes; a bound this build does not
// have is an error (another build's histogram would be misread).
func (h *Histogram) UnmarshalJSON(data []byte) error {
	var m map[string]uint64
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("latency histogram: %w", err)
	}
	var out Histogram
	for _, k := range slices.Sorted(maps.Keys(m)) {
		i, err := bucketOfKey(k)
		if err != nil {
			return err
		}
		out[i] = m[k]
	}
	*h = out
	return nil
}

func boundKey(i int) string {
	if i >= len(latencyBoundsUs) {
		return "+Inf"
	}
	return strconv.FormatUint(latencyBoundsUs[i], 10)
}

var errUnknownBound = errors.New("latency histogram: unknown bucket bound")

func bucketOfKey(k string) (int, error) {
	if k == "+Inf" {
		return LatencyBuckets - 1, nil
	}
	us, err := strconv.ParseUint(k, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w %q", errUnknownBound, k)
	}
	i := sort.Search(len(latencyBoundsUs), func(i int) bool { return latencyBoundsUs[i] >= us })
	if i == len(latencyBoundsUs) || latencyBoundsUs[i] != us {
		return 0, fmt.Errorf("%w %q", errUnknownBound, k)
	}
	return i, nil
}
