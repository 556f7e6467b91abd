package proc

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/bench/loadgen"
	"github.com/trafficsplit/splitter/bench/noop"
)

// TestMain lets the test binary double as the server under test: with
// PROC_TEST_SERVE=1 it runs the no-op baseline on the flags Start appends.
func TestMain(m *testing.M) {
	if os.Getenv("PROC_TEST_SERVE") == "1" {
		os.Exit(noop.ChildMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestStartMeasureStop(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cpu  int
	}{
		{name: "unpinned", cpu: -1},
		{name: "pinned to cpu 0", cpu: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Start(t.Context(), Spec{Name: "noop", Argv: []string{exe}, Env: []string{"PROC_TEST_SERVE=1"}, CPU: tt.cpu, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Stop()
			if tt.cpu >= 0 {
				data, err := os.ReadFile("/proc/" + itoa(s.PID) + "/status")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(data), "Cpus_allowed_list:\t0\n") {
					t.Errorf("server is not pinned to cpu 0:\n%s", grep(string(data), "Cpus_allowed"))
				}
			}
			res, err := loadgen.Run(t.Context(), loadgen.Config{Addr: s.GRPCAddr, Concurrency: 4, Requests: 300, Server: s})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != 300 || res.Errors != 0 || res.Invalid != 0 {
				t.Fatalf("requests %d errors %d invalid %d: %v", res.Requests, res.Errors, res.Invalid, res.FirstErrors)
			}
			if res.ServerAllocsPerReq <= 0 {
				t.Errorf("server allocs per request %v, want a positive count read from /metrics", res.ServerAllocsPerReq)
			}
			s.Stop()
			select {
			case <-s.done:
			case <-time.After(time.Second):
				t.Error("server still running after Stop")
			}
		})
	}
}

func TestAttach(t *testing.T) {
	s := Attach("self", os.Getpid(), "")
	smp, err := s.Sample(t.Context())
	if err != nil || smp.HasMallocs {
		t.Fatalf("Sample = %+v, %v; want CPU only", smp, err)
	}
	s.Stop() // must not signal a process it does not own
}

func TestStartFailure(t *testing.T) {
	_, err := Start(t.Context(), Spec{Name: "false", Argv: []string{"/bin/false"}, CPU: -1, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("err = %v, want an early-exit error", err)
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{name: "plain", stat: "42 (noop) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0 1 0 0", want: 3 * time.Second},
		{name: "name with spaces and parens", stat: "7 (a b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0", want: 30 * time.Millisecond},
		{name: "truncated", stat: "7 (x) R 1 2", wantErr: true},
		{name: "no name", stat: "garbage", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat(tt.stat)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStat = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCPUTimeOfSelf(t *testing.T) {
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the tick counter moves; it must, or the reader is broken.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		x := 0
		for i := range 1_000_000 {
			x += i
		}
		runtime.KeepAlive(x)
		if now, _ := CPUTime(os.Getpid()); now > before {
			return
		}
	}
	t.Fatal("CPU time of a busy process did not grow")
}

func TestParseCounter(t *testing.T) {
	text := "# HELP go_memstats_mallocs_total x\n# TYPE go_memstats_mallocs_total counter\n" +
		"go_memstats_mallocs_total_extra 5\ngo_memstats_mallocs_total 1.234567e+06\n"
	tests := []struct {
		name   string
		metric string
		want   uint64
		wantOK bool
	}{
		{name: "scientific notation", metric: "go_memstats_mallocs_total", want: 1234567, wantOK: true},
		{name: "absent", metric: "go_memstats_frees_total"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := ParseCounter(strings.NewReader(text), tt.metric)
			if err != nil || ok != tt.wantOK || got != tt.want {
				t.Errorf("ParseCounter = %d, %v, %v; want %d, %v, nil", got, ok, err, tt.want, tt.wantOK)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
