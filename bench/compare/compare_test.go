package compare

import (
	"os"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/bench/noop"
)

// TestMain lets the test binary double as both servers under test.
func TestMain(m *testing.M) {
	if os.Getenv("COMPARE_TEST_SERVE") == "1" {
		os.Exit(noop.ChildMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestExecute(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	target := func(name string) Target {
		return Target{Name: name, Argv: []string{exe}, Env: []string{"COMPARE_TEST_SERVE=1"}}
	}
	res, err := Execute(t.Context(), Config{
		Baseline: target("noop"), Candidate: target("noop-again"),
		Levels: []int{1, 4}, Rounds: 2, Duration: 150 * time.Millisecond,
		BetaShare: 0.5, Users: 3, ServerCPU: -1, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(res.Runs); got != 2*2*2 {
		t.Errorf("%d runs, want rounds x levels x targets = 8", got)
	}
	if len(res.Levels) != 2 {
		t.Fatalf("%d levels, want 2", len(res.Levels))
	}
	for _, lv := range res.Levels {
		for name, s := range map[string]Stats{"baseline": lv.Baseline, "candidate": lv.Candidate} {
			if s.Requests == 0 || s.Errors != 0 || s.Invalid != 0 {
				t.Errorf("%d streams, %s: requests %d errors %d invalid %d (%v)", lv.Concurrency, name, s.Requests, s.Errors, s.Invalid, lv.FirstErrors)
			}
		}
		var sum int64
		for _, n := range lv.Versions {
			sum += n
		}
		if sum != lv.Candidate.Requests {
			t.Errorf("%d streams: versions %v sum to %d, want %d", lv.Concurrency, lv.Versions, sum, lv.Candidate.Requests)
		}
		for _, k := range RatioKeys() {
			r, ok := lv.Ratios[k]
			if k == "server_cpu" {
				// A short run may not last one 10 ms CPU tick: only the
				// summary's order is certain.
				if ok && (r.Min > r.Median || r.Median > r.Max) {
					t.Errorf("%d streams: ratio %s = %+v", lv.Concurrency, k, r)
				}
				continue
			}
			if !ok || r.Min > r.Median || r.Median > r.Max || r.Min <= 0 {
				t.Errorf("%d streams: ratio %s = %+v (present %v)", lv.Concurrency, k, r, ok)
			}
		}
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		xs   []float64
		want float64
	}{
		{name: "empty", want: 0},
		{name: "odd", xs: []float64{3, 1, 2}, want: 2},
		{name: "even", xs: []float64{4, 1, 3, 2}, want: 2.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Median(tt.xs); got != tt.want {
				t.Errorf("Median(%v) = %v, want %v", tt.xs, got, tt.want)
			}
		})
	}
}
