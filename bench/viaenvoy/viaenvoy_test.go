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
	m := Summarize("ext_proc", slow, base)
	if got := m.Ratios["rps"]; got.Min != 0.5 || got.Max != 0.75 || got.Median != 0.625 {
		t.Errorf("rps ratio %+v, want 0.5..0.75 median 0.625", got)
	}
	if m.Versions["v2"] != 58 || m.Stats["ext_proc.failure_mode_allowed"] != 2 {
		t.Errorf("versions %v stats %v", m.Versions, m.Stats)
	}
	silent := Summarize("module", []Run{{RPS: 90, Versions: map[string]uint64{"v1": 100}}, {RPS: 180, Versions: map[string]uint64{"v1": 100}}}, base)
	r := &Result{Rounds: 2, Modes: []Mode{Summarize("weighted", base, base), m, silent}}
	r.Notes = notes(r)
	var b strings.Builder
	Render(&b, r)
	for _, want := range []string{"| ext_proc |", "0.62 (0.50..0.75)", "29.0 % v2", "ext_proc.failure_mode_allowed",
		"module: no request reached v2"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParseCoreTimes(t *testing.T) {
	const stat = `cpu  300 0 100 1000 50 0 10 0 0 0
cpu0 100 0 50 500 25 0 5 0 0 0
cpu1 200 0 50 500 25 0 5 0 0 0
intr 12345
ctxt 999
`
	tests := []struct {
		name    string
		in      string
		want    map[int]coreTime
		wantErr bool
	}{
		{
			name: "two cores, idle and iowait not busy",
			in:   stat,
			want: map[int]coreTime{0: {busy: 155, total: 680}, 1: {busy: 255, total: 780}},
		},
		{name: "no per-CPU lines", in: "cpu  1 2 3 4\nintr 5\n", wantErr: true},
		{name: "garbage number", in: "cpu0 1 x 3 4 5\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCoreTimes(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(coreTime{})); diff != "" {
				t.Errorf("parseCoreTimes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBusy(t *testing.T) {
	before := map[int]coreTime{0: {busy: 100, total: 1000}}
	after := map[int]coreTime{0: {busy: 175, total: 1100}}
	tests := []struct {
		name string
		cpu  int
		want float64
	}{
		{"pinned core", 0, 0.75},
		{"unpinned", -1, 0},
		{"unknown core", 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := busy(before, after, tt.cpu); got != tt.want {
				t.Errorf("busy(cpu %d) = %v, want %v", tt.cpu, got, tt.want)
			}
		})
	}
}

func TestStatDeltas(t *testing.T) {
	before := map[string]uint64{
		"cluster.v1.upstream_rq_total":                      10,
		"cluster.v2.upstream_rq_total":                      5,
		"http.ingress_http.ext_proc.streams_started":        100,
		"http.ingress_http.ext_proc.message_timeouts":       3,
		"cluster.splitter.upstream_cx_total":                1,
		"cluster.splitter.upstream_rq_total":                100,
		"cluster.splitter.upstream_cx_active":               1,
		"cluster.splitter.http2.tx_reset":                   100,
		"cluster.splitter.http2.streams_active":             0,
		"cluster.splitter.upstream_cx_connect_ms.p50":       0,
		"cluster.backend_unrelated.upstream_rq_total":       7,
		"listener.127.0.0.1_10000.downstream_cx_total":      1,
		"http.ingress_http.ext_authz.ok":                    0,
		"cluster.splitter.http2.outbound_control_flood":     0,
		"cluster.splitter.upstream_rq_pending_overflow":     0,
		"cluster.splitter.circuit_breakers.default.cx_open": 0,
	}
	after := map[string]uint64{
		"cluster.v1.upstream_rq_total":                      40,
		"cluster.v2.upstream_rq_total":                      15,
		"http.ingress_http.ext_proc.streams_started":        140,
		"http.ingress_http.ext_proc.message_timeouts":       3,
		"cluster.splitter.upstream_cx_total":                3,
		"cluster.splitter.upstream_rq_total":                140,
		"cluster.splitter.upstream_cx_active":               2,
		"cluster.splitter.http2.tx_reset":                   140,
		"cluster.splitter.http2.streams_active":             4,
		"cluster.splitter.upstream_cx_connect_ms.p50":       0,
		"cluster.backend_unrelated.upstream_rq_total":       9,
		"listener.127.0.0.1_10000.downstream_cx_total":      2,
		"http.ingress_http.ext_authz.ok":                    0,
		"cluster.splitter.http2.outbound_control_flood":     0,
		"cluster.splitter.upstream_rq_pending_overflow":     0,
		"cluster.splitter.circuit_breakers.default.cx_open": 0,
	}
	versions, stats := statDeltas(before, after)
	wantVersions := map[string]uint64{"v1": 30, "v2": 10}
	wantStats := map[string]uint64{
		"ext_proc.streams_started":      40,
		"splitter.upstream_cx_total":    2,
		"splitter.upstream_rq_total":    40,
		"splitter.upstream_cx_active":   2,
		"splitter.http2.tx_reset":       40,
		"splitter.http2.streams_active": 4,
	}
	if diff := cmp.Diff(wantVersions, versions); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantStats, stats); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestRenderCPU(t *testing.T) {
	base := []Run{
		{RPS: 100, P50us: 10, P99us: 100, Requests: 1000, CPU: CPU{Envoy: 30, Wrk: 10, Backends: 20, ProxyBusy: 0.9, LoadBusy: 0.8}},
		{RPS: 100, P50us: 10, P99us: 100, Requests: 1000, CPU: CPU{Envoy: 40, Wrk: 10, Backends: 20, ProxyBusy: 1, LoadBusy: 0.8}},
	}
	proc := []Run{
		{RPS: 60, Requests: 600, CPU: CPU{Envoy: 45, Splitter: 15, ProxyBusy: 1, LoadBusy: 0.5},
			Stats: map[string]uint64{"splitter.upstream_rq_total": 600, "splitter.upstream_cx_active": 1}},
		{RPS: 70, Requests: 700, CPU: CPU{Envoy: 50, Splitter: 30, ProxyBusy: 1, LoadBusy: 0.5},
			Stats: map[string]uint64{"splitter.upstream_rq_total": 700, "splitter.upstream_cx_active": 2}},
	}
	m := Summarize("ext_proc", proc, base)
	if got := m.Ratios["proxy_cpu"]; got.Min != 2 || got.Max != 2 || got.Median != 2 {
		t.Errorf("proxy_cpu ratio %+v, want 2 in both rounds", got)
	}
	if m.Stats["splitter.upstream_cx_active"] != 2 || m.Stats["splitter.upstream_rq_total"] != 1300 {
		t.Errorf("gauge must be the maximum, counter the sum: %v", m.Stats)
	}
	if m.CPU.Envoy != 47.5 || m.CPU.Splitter != 22.5 {
		t.Errorf("CPU medians %+v", m.CPU)
	}
	r := &Result{Rounds: 2, ProxyCPU: 0, SplitterCPU: 0, SplitterProcs: "1", LoadCPU: 1, Modes: []Mode{Summarize("weighted", base, base), m}}
	var b strings.Builder
	Render(&b, r)
	for _, want := range []string{
		"| weighted | 35.0 | - | 1.00 (1.00..1.00) | 10.0 | 20.0 | 95 % | 80 % | - | - |",
		"| ext_proc | 47.5 | 22.5 | 2.00 (2.00..2.00) |",
		"| 2 | 1.00 |",
		"the splitter to CPU 0 (GOMAXPROCS=1)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestConfigDefaultsNameSetups(t *testing.T) {
	tests := []struct {
		name   string
		setups []Setup
		want   []string
	}{
		{name: "standard comparison", want: []string{"weighted", "module", "c_module", "ext_proc", "ext_authz"}},
		{
			name:   "named variant kept, unnamed one named after its mode",
			setups: []Setup{{Mode: "weighted"}, {Name: "ext_proc 2 workers", Mode: "ext_proc", Workers: 2}},
			want:   []string{"weighted", "ext_proc 2 workers"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Setups: tt.setups}
			c.defaults()
			var got []string
			for _, s := range c.Setups {
				got = append(got, s.Name)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("setup names (-want +got):\n%s", diff)
			}
			if len(tt.setups) > 0 && tt.setups[0].Name != "" {
				t.Errorf("defaults wrote into the caller's slice: %+v", tt.setups)
			}
		})
	}
}
