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
	tests := []struct {
		name string
		fn   func()
	}{
		{"Decided", func() { m.Decided("ext_proc", d) }},
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
