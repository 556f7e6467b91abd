package module

import (
	"context"
	"log/slog"
	"sync"

	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/split"
)

// MaxPairs is how many (service, version) pairs a process can count
// responses for (module/abi's SP_MAX_PAIRS); pairs are never reused, so a
// process that has seen more since it started counts no more new ones.
const MaxPairs = 1024

// The response classes C counts per pair (module/abi/hooks.c): the status
// class (1xx..5xx) of the response headers, which include Envoy's own 503
// or 504 when the upstream fails before responding; ClassReset for a
// response Envoy cut off because the upstream failed after it started;
// ClassAborted for a stream the client ended before any response. The
// rollout guard counts 1xx..5xx and resets as requests, 5xx and resets as
// errors, and aborted streams as neither (docs/module.md).
const (
	ClassReset   = 0
	ClassAborted = 6
	NumClasses   = 7
)

// ClassOf returns the class of an HTTP status code (ClassReset for one
// outside 100..599).
func ClassOf(status int) int {
	if status >= 100 && status <= 599 {
		return status / 100
	}
	return ClassReset
}

func className(c int) string {
	switch c {
	case ClassReset:
		return "reset"
	case ClassAborted:
		return "aborted"
	}
	return string(rune('0'+c)) + "xx"
}

// pairs numbers every (service, version) the module has decided with, for
// the life of the process, and reads their counters: it is the rollout
// guard's signals.Source and the responses metric's reader.
type pairs struct {
	mu     sync.Mutex
	counts func(pair int32) [NumClasses]uint64
	// latency reads a pair's timed responses (nil: the host does not
	// time them).
	latency func(pair int32) [signals.LatencyBuckets]uint64
	ids     map[[2]string]int32
	names   [][2]string // by id
	warned  bool
}

// setSources makes counts and latency (nil: not timed) the readers of
// the C side's counters and histograms.
func (ps *pairs) setSources(counts func(pair int32) [NumClasses]uint64, latency func(pair int32) [signals.LatencyBuckets]uint64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.counts, ps.latency = counts, latency
}

// forTable returns t's pairs, [service][version], numbering new ones.
func (ps *pairs) forTable(t *split.Table, log *slog.Logger) [][]int32 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.ids == nil {
		ps.ids = map[[2]string]int32{}
	}
	cfg := t.Config()
	out := make([][]int32, len(cfg.Services))
	for i, s := range cfg.Services {
		out[i] = make([]int32, len(s.Weights))
		for j, w := range s.Weights {
			k := [2]string{s.Name, w.Version}
			id, ok := ps.ids[k]
			if !ok {
				if len(ps.names) >= MaxPairs {
					if !ps.warned {
						log.Warn("too many service versions since start: the responses of new ones are not counted (restart Envoy)", "max", MaxPairs)
						ps.warned = true
					}
					out[i][j] = -1
					continue
				}
				id = int32(len(ps.names))
				ps.ids[k] = id
				ps.names = append(ps.names, k)
			}
			out[i][j] = id
		}
	}
	return out
}

// Read implements signals.Source: requests are the version's responses and
// resets, errors its 5xx and resets (signals.IsError); streams the client
// aborted before any response are neither.
func (ps *pairs) Read(_ context.Context, targets []signals.Target, out []signals.Counts) error {
	if len(out) < len(targets) {
		return signals.ErrShortOut
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for i, t := range targets {
		out[i] = signals.Counts{}
		id, ok := ps.ids[[2]string{t.Service, t.Version}]
		if !ok || ps.counts == nil {
			continue
		}
		for c, n := range ps.counts(id) {
			if c == ClassAborted {
				continue
			}
			out[i].Requests += n
			if c == ClassReset || c == 5 {
				out[i].Errors += n
			}
		}
	}
	return nil
}

// ReadLatency implements signals.LatencySource: the counts, and each
// version's responses timed in C (every response; no stream that ended
// without one). Without a timing host it answers signals.ErrNotTimed
// with the counts: the guard then finds the latency half inconclusive
// rather than judging on nothing.
func (ps *pairs) ReadLatency(ctx context.Context, targets []signals.Target, out []signals.Counts, lat []signals.Histogram) error {
	if len(lat) < len(targets) {
		return signals.ErrShortOut
	}
	if err := ps.Read(ctx, targets, out); err != nil {
		return err
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.latency == nil {
		return signals.ErrNotTimed
	}
	for i, t := range targets {
		lat[i] = signals.Histogram{}
		if id, ok := ps.ids[[2]string{t.Service, t.Version}]; ok {
			lat[i] = ps.latency(id)
		}
	}
	return nil
}

// responses lists every pair's counts by class, for the metrics.
func (ps *pairs) responses() []metrics.ResponseCount {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []metrics.ResponseCount
	if ps.counts == nil {
		return nil
	}
	for id, k := range ps.names {
		for c, n := range ps.counts(int32(id)) {
			if n > 0 {
				out = append(out, metrics.ResponseCount{Service: k[0], Version: k[1], Class: className(c), N: n})
			}
		}
	}
	return out
}
