//go:build !race

// The race detector's instrumentation may allocate, so the allocation
// check runs only in ordinary builds.

package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/split"
)

func TestHotPathDoesNotAllocate(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	d := &split.Decision{Service: "api", Version: "v1", Reason: split.ReasonWeightedRouting}
	m.Decided("ext_proc", d) // first sight creates the series
	tb, err := split.Load([]byte("services:\n  - {name: api, weights: {v1: 100, v2: 0}, sticky: {assign: {}}, mirror: {version: v2, percent: 100}}\n"), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	assigned := &split.Decision{}
	tb.Decide(&split.Request{NewKey: func() (k [split.KeyBytes]byte) { return k }}, assigned)
	if !assigned.Assigned() || assigned.Mirror() != "v2" {
		t.Fatalf("decision %+v", assigned)
	}
	m.Decided("ext_proc", assigned)
	tests := []struct {
		name string
		fn   func()
	}{
		{"Decided", func() { m.Decided("ext_proc", d) }},
		{"Decided assigned and mirrored", func() { m.Decided("ext_proc", assigned) }},
		{"StreamStarted+Ended", func() { m.StreamStarted("ext_proc"); m.StreamEnded("ext_proc", "ok") }},
		{"PhaseUnexpected", func() { m.PhaseUnexpected("ext_proc", "request_body") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tc.fn); n != 0 {
				t.Fatalf("%v allocations per call, want 0", n)
			}
		})
	}
}
