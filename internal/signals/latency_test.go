package signals_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/signals"
)

// The bounds increase, steps are at most 12.5 % from 10 ms up, and every
// bound at or above 10^k ms is a multiple of 10^(k-1) ms, so that no bin
// of Envoy's histograms (two significant digits) straddles one.
func TestLatencyBounds(t *testing.T) {
	prev := time.Duration(0)
	for i := 0; i < signals.LatencyBuckets-1; i++ {
		b, ok := signals.LatencyBound(i)
		if !ok || b <= prev {
			t.Fatalf("bound %d: %v after %v", i, b, prev)
		}
		if prev >= 10*time.Millisecond && (b-prev)*8 > prev {
			t.Errorf("bound %d: %v is more than 12.5 %% above %v", i, b, prev)
		}
		if b >= 10*time.Millisecond {
			step := time.Millisecond
			for d := 10 * time.Millisecond; d*10 <= b; d *= 10 {
				step *= 10
			}
			if b%step != 0 {
				t.Errorf("bound %d: %v is not a multiple of %v", i, b, step)
			}
		}
		prev = b
	}
	if _, ok := signals.LatencyBound(signals.LatencyBuckets - 1); ok || prev != 100*time.Second {
		t.Errorf("the last bucket must be unbounded, above 100s (last bound %v)", prev)
	}
	if n := len(signals.LatencyBoundsNs()); n != signals.LatencyBuckets-1 {
		t.Errorf("%d bounds in ns", n)
	}
}

// A time equal to a bound belongs to the bucket above it: bucket i holds
// [bound i-1, bound i).
func TestLatencyBucket(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string // the bucket's upper bound
	}{
		{0, "0.1 ms"},
		{99 * time.Microsecond, "0.1 ms"},
		{100 * time.Microsecond, "0.2 ms"},
		{999 * time.Microsecond, "1 ms"},
		{time.Millisecond, "2 ms"},
		{9*time.Millisecond + 999*time.Microsecond, "10 ms"},
		{10 * time.Millisecond, "11 ms"},
		{250 * time.Millisecond, "260 ms"},
		{742 * time.Millisecond, "750 ms"},
		{99 * time.Second, "100000 ms"},
		{100 * time.Second, "100000+ ms"},
		{time.Hour, "100000+ ms"},
		{-time.Second, "0.1 ms"},
	} {
		var h signals.Histogram
		h.Record(c.d)
		if got := h.Percentile(5000).String(); got != c.want {
			t.Errorf("%v: bucket up to %s, want %s", c.d, got, c.want)
		}
	}
}

// The percentile's request is the r-th fastest, r = ceil(N x p), and the
// value reported is the upper bound of its bucket.
func TestPercentile(t *testing.T) {
	ms := time.Millisecond
	type group struct {
		n int
		d time.Duration
	}
	for _, c := range []struct {
		name   string
		groups []group
		p      int
		want   string
	}{
		{"empty", nil, 9900, "no requests"},
		{"one request", []group{{1, 5 * ms}}, 9900, "6 ms"},
		{"one request, p50", []group{{1, 5 * ms}}, 5000, "6 ms"},
		{"exactly 99 % below: p99 is the lower bucket", []group{{99, ms}, {1, 300 * ms}}, 9900, "2 ms"},
		{"p99.9 of 100 would be the slowest: the second-slowest stands for it", []group{{99, ms}, {1, 300 * ms}}, 9990, "2 ms"},
		{"p99.9 of 100, two slow", []group{{98, ms}, {2, 300 * ms}}, 9990, "330 ms"},
		{"p99 of 40, one stalled: not decided by it", []group{{39, 5 * ms}, {1, 2 * time.Second}}, 9900, "6 ms"},
		{"p99 of 40, all slow", []group{{40, 200 * ms}}, 9900, "220 ms"},
		{"one more slow request than 1 %", []group{{98, ms}, {2, 300 * ms}}, 9900, "330 ms"},
		{"312 requests, 4 slow: r = 309", []group{{308, 48 * ms}, {4, 742 * ms}}, 9900, "750 ms"},
		{"312 requests, 3 slow: r = 309 is fast", []group{{309, 48 * ms}, {3, 742 * ms}}, 9900, "50 ms"},
		{"p50 of two", []group{{1, ms}, {1, 20 * ms}}, 5000, "2 ms"},
		{"p50 of three", []group{{2, ms}, {1, 20 * ms}}, 5000, "2 ms"},
		{"p50 rounds the rank up", []group{{1, ms}, {2, 20 * ms}}, 5000, "22 ms"},
		{"past the last bound", []group{{1, ms}, {2, 2 * time.Minute}}, 9900, "100000+ ms"},
		{"p99.9 of 10000", []group{{9990, ms}, {10, 60 * ms}}, 9990, "2 ms"},
		{"p99.9 of 10001", []group{{9990, ms}, {11, 60 * ms}}, 9990, "65 ms"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var h signals.Histogram
			for _, g := range c.groups {
				for range g.n {
					h.Record(g.d)
				}
			}
			q := h.Percentile(c.p)
			if q.String() != c.want {
				t.Errorf("p%v = %s, want %s", float64(c.p)/100, q, c.want)
			}
			if q.Requests != h.Total() {
				t.Errorf("requests %d, want %d", q.Requests, h.Total())
			}
		})
	}
	var big signals.Histogram
	big[0] = 1 << 60
	if q := big.Percentile(9990); q.Bucket != 0 {
		t.Errorf("2^60 requests: %+v", q)
	}
}

// Envoy's bins of whole milliseconds go to the bucket of their largest
// possible time (a recorded v took less than v+1 ms).
func TestEnvoyBin(t *testing.T) {
	for _, c := range []struct {
		lower, width float64
		want         string
	}{
		{0, 0, "1 ms"},
		{1, 0.1, "2 ms"},
		{9, 0.1, "10 ms"},
		{13, 1, "14 ms"},
		{99, 1, "100 ms"},
		{250, 10, "260 ms"},
		{170, 10, "180 ms"},
		{740, 10, "750 ms"},
		{1200, 100, "1300 ms"},
		{90000, 1000, "100000 ms"},
		{99000, 1000, "100000 ms"},
		{100000, 10000, "100000+ ms"},
	} {
		i, err := signals.EnvoyBin(c.lower, c.width)
		if err != nil {
			t.Fatal(err)
		}
		var h signals.Histogram
		h[i] = 1
		if got := h.Percentile(5000).String(); got != c.want {
			t.Errorf("bin [%g, +%g): %s, want %s", c.lower, c.width, got, c.want)
		}
	}
	if _, err := signals.EnvoyBin(-1, 1); err == nil {
		t.Error("a negative bin must be refused")
	}
}

func TestHistogramCumulative(t *testing.T) {
	var a, b signals.Histogram
	a.Record(time.Millisecond)
	b = a
	b.Record(time.Millisecond)
	b.Record(time.Second)
	g, restarted := b.Since(a)
	if restarted || g.Total() != 2 || g.Add(a) != b {
		t.Errorf("growth %v restarted %v", g.Total(), restarted)
	}
	var fresh signals.Histogram
	fresh.Record(time.Second)
	if g, restarted := fresh.Since(a); !restarted || g != fresh {
		t.Errorf("a bucket going backwards is a restart: %v %v", g.Total(), restarted)
	}
	data, err := json.Marshal(b)
	if err != nil || string(data) != `{"2000":2,"1100000":1}` {
		t.Fatalf("JSON %s, %v", data, err)
	}
	var back signals.Histogram
	if err := json.Unmarshal(data, &back); err != nil || back != b {
		t.Fatalf("round trip: %v", err)
	}
	if err := json.Unmarshal([]byte(`{"2500":1}`), &back); err == nil || !strings.Contains(err.Error(), "unknown bucket bound") {
		t.Errorf("another build's bound: %v", err)
	}
	if err := json.Unmarshal([]byte(`{"+Inf":3}`), &back); err != nil || back[signals.LatencyBuckets-1] != 3 {
		t.Errorf("+Inf: %v", err)
	}
	w := signals.NewWindow[signals.Histogram](time.Second, 100*time.Millisecond)
	t0 := time.Unix(1000, 0)
	w.Observe(t0, a)
	w.Observe(t0.Add(100*time.Millisecond), b)
	if sum, covered := w.Sum(t0.Add(100 * time.Millisecond)); sum.Total() != 2 || covered != 100*time.Millisecond {
		t.Errorf("window: %d requests over %v", sum.Total(), covered)
	}
}

// An answer of Envoy 1.40 (format=json, histogram_buckets=detailed),
// recorded: the counters by name, the histogram's bins in buckets.
const envoyJSON = `{"stats":[{"name":"cluster.v1.upstream_rq_completed","value":39},{"name":"cluster.v1.upstream_rq_5xx","value":2},
{"histograms":{"supported_percentiles":[0,25,50,75,90,95,99,99.5,99.9,100],"details":[{"name":"cluster.v1.upstream_rq_time",
"totals":[{"lower_bound":0,"width":0,"count":17},{"lower_bound":1,"width":0.1,"count":9},{"lower_bound":13,"width":1,"count":1},
{"lower_bound":250,"width":10,"count":2},{"lower_bound":1200,"width":100,"count":1}],"intervals":[],
"percentiles":[{"cumulative":0,"interval":null}]}]}},
{"name":"cluster.v2.upstream_rq_completed","value":0}]}`

func TestReadLatencyFromEnvoy(t *testing.T) {
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		_, _ = w.Write([]byte(envoyJSON))
	}))
	defer srv.Close()
	src := signals.NewEnvoyAdmin(strings.TrimPrefix(srv.URL, "http://"), time.Second)
	targets := []signals.Target{{Service: "api", Version: "v1", Cluster: "v1"}, {Service: "api", Version: "v2", Cluster: "v2"}}
	out := make([]signals.Counts, 2)
	lat := make([]signals.Histogram, 2)
	if err := src.ReadLatency(t.Context(), targets, out, lat); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"format=json", "histogram_buckets=detailed", "upstream_rq_time"} {
		if !strings.Contains(query, want) {
			t.Errorf("query %q lacks %q", query, want)
		}
	}
	if out[0] != (signals.Counts{Requests: 39, Errors: 2}) || out[1] != (signals.Counts{}) {
		t.Errorf("counts %+v", out)
	}
	if lat[0].Total() != 30 || lat[1].Total() != 0 {
		t.Errorf("timed %d and %d, want 30 and 0 (v2 has no histogram yet)", lat[0].Total(), lat[1].Total())
	}
	// 30 requests: the p99 is the second-slowest (Percentile).
	if q := lat[0].Percentile(9900); q.String() != "260 ms" {
		t.Errorf("p99 %s", q)
	}
	if q := lat[0].Percentile(5000); q.String() != "1 ms" {
		t.Errorf("p50 %s", q)
	}
	if err := src.ReadLatency(t.Context(), []signals.Target{{Cluster: "v3", Version: "v3", Service: "api"}}, out, lat); err == nil || !strings.Contains(err.Error(), `no cluster "v3"`) {
		t.Errorf("an unknown cluster: %v", err)
	}
	if _, _, err := signals.ParseStatsJSON(strings.NewReader("cluster.v1.upstream_rq_completed: 3")); err == nil {
		t.Error("text statistics must be refused")
	}
}
