package module

import (
	"errors"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/split"
)

// timingHost is fakeHost timing responses, as module/abi does in C.
type timingHost struct {
	fakeHost
	bounds []uint64
	lat    map[int32]signals.Histogram
}

func (h *timingHost) SetLatencyBounds(ns []uint64) { h.bounds = ns }

func (h *timingHost) Latency(pair int32) [signals.LatencyBuckets]uint64 { return h.lat[pair] }

// The pairs read each version's timed responses with its counts; a host
// that does not time them answers signals.ErrNotTimed with the counts.
func TestPairsReadLatency(t *testing.T) {
	tb, err := split.Load([]byte("services:\n  - name: api\n    weights: {v1: 90, v2: 10}\n"), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var slow signals.Histogram
	slow.Record(250 * time.Millisecond)
	h := &timingHost{lat: map[int32]signals.Histogram{1: slow}}
	h.counts = map[int32][NumClasses]uint64{1: {2: 1}}
	ps := &pairs{counts: h.Counts, latency: h.Latency}
	ps.forTable(tb, nil)
	targets := []signals.Target{{Service: "api", Version: "v1"}, {Service: "api", Version: "v2"}, {Service: "api", Version: "v9"}}
	out := make([]signals.Counts, 3)
	lat := make([]signals.Histogram, 3)
	if err := ps.ReadLatency(t.Context(), targets, out, lat); err != nil {
		t.Fatal(err)
	}
	if lat[0].Total() != 0 || lat[1] != slow || lat[2].Total() != 0 || out[1].Requests != 1 {
		t.Fatalf("read %v, latency totals %d %d %d", out, lat[0].Total(), lat[1].Total(), lat[2].Total())
	}
	untimed := &pairs{counts: h.Counts}
	untimed.forTable(tb, nil)
	if err := untimed.ReadLatency(t.Context(), targets, out, lat); !errors.Is(err, signals.ErrNotTimed) || out[1].Requests != 1 {
		t.Fatalf("without timing: %v, counts %v", err, out)
	}
	if n := len(signals.LatencyBoundsNs()); n != signals.LatencyBuckets-1 {
		t.Fatalf("%d bounds", n)
	}
}
