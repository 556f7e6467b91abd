// Package signals reads how each version of a service is doing: how many
// requests its upstream answered and how many of them were errors (5xx,
// or a reset or timeout Envoy answered for it), as cumulative counters,
// and turns readings into sums over a sliding window in fixed memory.
//
// A Source gives cumulative counts. EnvoyAdmin reads them from Envoy's own
// per-cluster statistics on its admin port (ext_proc and ext_authz modes:
// the splitter does no per-request work for them); Counters counts them
// in process, for a front that sees every response itself (the Envoy
// dynamic module). A Window turns successive readings into per-interval
// deltas and sums the last span of them; the rollout guard judges a canary
// on it, and the operator console can show per-version rates from it.
package signals

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// Counts are a version's requests and errors: cumulative in a reading,
// summed over a span in a Window.
type Counts struct {
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
}

// Add returns c + o.
func (c Counts) Add(o Counts) Counts {
	return Counts{Requests: c.Requests + o.Requests, Errors: c.Errors + o.Errors}
}

// Target names one version of one service and the Envoy cluster that
// serves it. EnvoyAdmin reads by Cluster; Counters by Service and Version.
type Target struct {
	Service, Version, Cluster string
}

// Source reads cumulative counts. Read fills out[i] with the counts of
// targets[i] (len(out) == len(targets)); counters only grow, except that
// they restart from zero when their owner restarts (Window handles that).
// An error means no reading at all this time.
type Source interface {
	Read(ctx context.Context, targets []Target, out []Counts) error
}

// ErrShortOut is returned when out is shorter than targets.
var ErrShortOut = errors.New("signals: out is shorter than targets")

// Counters is a Source that counts responses in process, for a front that
// sees every response (the in-process module). Record takes no lock and
// does not allocate once a (service, version) pair has been seen.
type Counters struct {
	pairs atomic.Pointer[map[pairKey]*pairCounts]
	mu    sync.Mutex // serialises adding a pair (copy on write)
}

type pairKey struct{ service, version string }

type pairCounts struct {
	requests, errors atomic.Uint64
	latency          [LatencyBuckets]atomic.Uint64
}

// IsError says whether an answer counts as an error for the guard: a 5xx
// status, or a reset (no status; the client saw a failure).
func IsError(status int, reset bool) bool { return reset || status >= 500 && status <= 599 }

// Record counts one answered request of version of service.
func (c *Counters) Record(service, version string, status int, reset bool) {
	p := c.pair(pairKey{service, version})
	p.requests.Add(1)
	if IsError(status, reset) {
		p.errors.Add(1)
	}
}

// RecordTimed is Record for a request that took d: it is also counted in
// the version's latency histogram (ReadLatency).
func (c *Counters) RecordTimed(service, version string, status int, reset bool, d time.Duration) {
	p := c.pair(pairKey{service, version})
	p.latency[LatencyBucket(d)].Add(1)
	p.requests.Add(1)
	if IsError(status, reset) {
		p.errors.Add(1)
	}
}

func (c *Counters) pair(k pairKey) *pairCounts {
	if m := c.pairs.Load(); m != nil {
		if p, ok := (*m)[k]; ok {
			return p
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := map[pairKey]*pairCounts{}
	if m := c.pairs.Load(); m != nil {
		if p, ok := (*m)[k]; ok {
			return p
		}
		cur = *m
	}
	next := maps.Clone(cur)
	p := &pairCounts{}
	next[k] = p
	c.pairs.Store(&next)
	return p
}

// Read implements Source: a pair never recorded reads as zero.
func (c *Counters) Read(_ context.Context, targets []Target, out []Counts) error {
	if len(out) < len(targets) {
		return ErrShortOut
	}
	m := c.pairs.Load()
	for i, t := range targets {
		out[i] = Counts{}
		if m == nil {
			continue
		}
		if p, ok := (*m)[pairKey{t.Service, t.Version}]; ok {
			out[i] = Counts{Requests: p.requests.Load(), Errors: p.errors.Load()}
		}
	}
	return nil
}

// ReadLatency implements LatencySource: the histograms of the requests
// counted with RecordTimed.
func (c *Counters) ReadLatency(ctx context.Context, targets []Target, out []Counts, lat []Histogram) error {
	if len(lat) < len(targets) {
		return ErrShortOut
	}
	if err := c.Read(ctx, targets, out); err != nil {
		return err
	}
	m := c.pairs.Load()
	for i, t := range targets {
		lat[i] = Histogram{}
		if m == nil {
			continue
		}
		if p, ok := (*m)[pairKey{t.Service, t.Version}]; ok {
			for b := range lat[i] {
				lat[i][b] = p.latency[b].Load()
			}
		}
	}
	return nil
}

// String renders counts for logs: "3/120".
func (c Counts) String() string { return fmt.Sprintf("%d/%d", c.Errors, c.Requests) }
