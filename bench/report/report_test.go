package report

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/bench/compare"
	"github.com/trafficsplit/splitter/bench/viaenvoy"
)

const benchOut = `goos: linux
goarch: amd64
pkg: github.com/trafficsplit/splitter/split
cpu: AMD EPYC
BenchmarkDecide/weighted-2         	10225684	       117.2 ns/op	       0 B/op	       0 allocs/op
BenchmarkCompile-2   	   30000	     40123 ns/op	   21456 B/op	     312 allocs/op
PASS
ok  	github.com/trafficsplit/splitter/split	3.1s
pkg: github.com/trafficsplit/splitter/extproc
BenchmarkHeaders-2   	 5000000	       250.5 ns/op
`

func TestParseMicro(t *testing.T) {
	got := ParseMicro(strings.NewReader(benchOut))
	want := []Micro{
		{Package: "github.com/trafficsplit/splitter/split", Name: "BenchmarkDecide/weighted-2", NsPerOp: 117.2},
		{Package: "github.com/trafficsplit/splitter/split", Name: "BenchmarkCompile-2", NsPerOp: 40123, BytesPerOp: 21456, AllocsPerOp: 312},
		{Package: "github.com/trafficsplit/splitter/extproc", Name: "BenchmarkHeaders-2", NsPerOp: 250.5},
	}
	if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Line" }, cmp.Ignore())); diff != "" {
		t.Errorf("ParseMicro (-want +got):\n%s", diff)
	}
}

func sample() *Results {
	return &Results{
		Machine: &Machine{Model: "Test CPU", Cores: 2, Go: "go1.26", Kernel: "6.1", Date: "today", Load: "0.1 0.2 0.3", Env: "GOGC=100"},
		ExtProc: &compare.Result{
			Baseline: "noop", Candidate: "splitter", Rounds: 3, Duration: "3s", Warmup: "500ms", BetaShare: 0.1, Users: 1000,
			Levels: []compare.Level{{
				Concurrency: 16, Conns: 2,
				Baseline:  compare.Stats{RPS: 20000, P50us: 300, ServerCPUus: 20, ServerAllocs: 96, Requests: 60000},
				Candidate: compare.Stats{RPS: 18000, P50us: 320, ServerCPUus: 22, ServerAllocs: 80, Requests: 54000},
				Ratios:    map[string]compare.Ratio{"rps": {Median: 0.9, Min: 0.8, Max: 1.05}},
				Versions:  map[string]int64{"v1": 38880, "v2": 15120},
				Pinned:    5400,
			}},
		},
		Micro: []Micro{{Package: "github.com/trafficsplit/splitter/split", Name: "BenchmarkDecide-2", NsPerOp: 117.2}},
		Envoy: &viaenvoy.Result{Rounds: 1, Modes: []viaenvoy.Mode{{Mode: "weighted", RPS: 5000}}},
	}
}

func TestSaveLoadRender(t *testing.T) {
	dir := t.TempDir()
	in := sample()
	if err := Save(dir, in); err != nil {
		t.Fatal(err)
	}
	// A later partial save keeps the parts it does not carry.
	if err := Save(dir, &Results{Micro: []Micro{{Package: "p/extproc", Name: "BenchmarkX-2", NsPerOp: 1}}}); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ExtProc == nil || got.Envoy == nil || got.Machine == nil || len(got.Micro) != 1 || got.Micro[0].Name != "BenchmarkX-2" {
		t.Fatalf("loaded %+v", got)
	}
	var b strings.Builder
	if err := Render(&b, got); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Test CPU, 2 cores", "GOGC=100",
		"| 16 | 2 | 0.90 (0.80..1.05) | n/a |",
		"| 16 | splitter | 18000 |",
		"v1 38880 (72.0 %), v2 15120 (28.0 %)",
		"| extproc | BenchmarkX-2 | 1.0 |",
		"## Through Envoy",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("BENCH.md lacks %q:\n%s", want, b.String())
		}
	}
}

func TestLoadEmptyDir(t *testing.T) {
	got, err := Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got.Machine != nil || got.ExtProc != nil || got.Micro != nil || got.Envoy != nil {
		t.Errorf("empty directory loaded as %+v", got)
	}
}
