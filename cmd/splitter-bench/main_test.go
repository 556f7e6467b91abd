package main

import (
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/bench/compare"
	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/split"
)

// The benchmark's configuration must stay one the splitter accepts, or the
// comparison measures a server that refused to start.
func TestSeedConfigCompiles(t *testing.T) {
	cfg, err := config.Parse([]byte(compare.SeedConfig))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := split.Compile(cfg); err != nil {
		t.Fatal(err)
	}
}

func TestCheckLevels(t *testing.T) {
	ok := compare.Stats{Requests: 10}
	tests := []struct {
		name    string
		base    compare.Stats
		cand    compare.Stats
		wantErr string
	}{
		{name: "all answered", base: ok, cand: ok},
		{name: "bad answers", base: ok, cand: compare.Stats{Requests: 10, Invalid: 3}, wantErr: "splitter: 0 errors, 3 bad answers"},
		{name: "errors", base: compare.Stats{Errors: 1}, cand: ok, wantErr: "noop: 1 errors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkLevels(&compare.Result{Baseline: "noop", Candidate: "splitter",
				Levels: []compare.Level{{Concurrency: 16, Baseline: tt.base, Candidate: tt.cand}}})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
