package viaenvoy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const wrkOK = `Running 1s test @ http://127.0.0.1:18080/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.21ms    1.74ms  16.85ms   87.77%
    Req/Sec     0.97k   312.96     1.41k    60.00%
  Latency Distribution
     50%  812.00us
     75%    2.62ms
     90%    4.09ms
     99%    1.20s
  965 requests in 1.00s, 3.83MB read
  Socket errors: connect 0, read 2, write 1, timeout 4
  Non-2xx or 3xx responses: 13
Requests/sec:    962.37
Transfer/sec:      3.82MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    Run
		wantErr bool
	}{
		{
			name: "full summary",
			out:  wrkOK,
			want: Run{RPS: 962.37, P50us: 812, P90us: 4090, P99us: 1.2e6, Requests: 965, Non2xx: 13, SockErrs: 7},
		},
		{name: "no latency distribution", out: "Requests/sec: 10\n", wantErr: true},
		{name: "bad unit", out: "  Latency Distribution\n     50%  3.0h\nRequests/sec: 1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWrk(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseWrk (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseWrkDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"812.00us", 812 * time.Microsecond},
		{"1.50ms", 1500 * time.Microsecond},
		{"2.00s", 2 * time.Second},
		{"1.00m", time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseWrkDuration(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestSummarizeAndRender(t *testing.T) {
	base := []Run{{RPS: 100, P50us: 10, P99us: 100}, {RPS: 200, P50us: 20, P99us: 200}}
	slow := []Run{
		{RPS: 50, P50us: 20, P99us: 300, Versions: map[string]uint64{"v1": 70, "v2": 30}},
		{RPS: 150, P50us: 30, P99us: 200, Versions: map[string]uint64{"v1": 72, "v2": 28}, Stats: map[string]uint64{"ext_proc.failure_mode_allowed": 2}},
	}
	m := summarize("ext_proc", slow, base)
	if got := m.Ratios["rps"]; got.Min != 0.5 || got.Max != 0.75 || got.Median != 0.625 {
		t.Errorf("rps ratio %+v, want 0.5..0.75 median 0.625", got)
	}
	if m.Versions["v2"] != 58 || m.Stats["ext_proc.failure_mode_allowed"] != 2 {
		t.Errorf("versions %v stats %v", m.Versions, m.Stats)
	}
	r := &Result{Rounds: 2, Modes: []Mode{summarize("weighted", base, base), m}}
	r.Notes = notes(r)
	var b strings.Builder
	Render(&b, r)
	for _, want := range []string{"| ext_proc |", "0.62 (0.50..0.75)", "29.0 % v2", "ext_proc.failure_mode_allowed"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
