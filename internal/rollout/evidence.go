package rollout

import (
	"context"
	"sync"
	"time"

	"github.com/trafficsplit/splitter/internal/signals"
)

// Watch is one active rollout's signals: its stable and canary versions
// (and the Envoy clusters serving them) over the guard's window.
type Watch struct {
	Service        string
	Stable, Canary signals.Target
	Window         time.Duration
	// Run is when the watched run started (State.Started): a new run
	// starts on fresh evidence, on every replica.
	Run time.Time
	// Latency: the guard judges latency, so each version's requests are
	// timed too (LatencyEvidence).
	Latency bool
}

// Evidence is what verdicts are computed from. Sample takes a reading for
// the rollouts being watched (and forgets the others); Totals sums a
// service's readings over its window. Local is this process's own
// readings, which is all there is in file mode. In etcd mode every replica
// samples its own Envoy and publishes its totals, and the leader's
// Evidence sums those of every live replica (docs/rollouts.md).
type Evidence interface {
	Sample(ctx context.Context, now time.Time, watches []Watch) error
	Totals(service string, now time.Time) (stable, canary signals.Counts, covered time.Duration)
	// Forget drops a service's readings: a started rollout is judged on
	// fresh evidence only.
	Forget(service string)
}

// Local is Evidence from one Source: a pair of fixed-memory windows per
// watched service. It is safe for concurrent use; the Source is read
// without holding its lock.
type Local struct {
	src   signals.Source
	width time.Duration

	mu     sync.Mutex
	series map[string]*series
}

type series struct {
	watch          Watch
	stable, canary *signals.Window[signals.Counts]
	// The latency histograms, when the watch times requests and the
	// source can (nil otherwise): read with the counts, in windows of
	// their own that see the same readings from the second on (timed).
	stableLat, canaryLat *signals.Window[signals.Histogram]
	timedReads           int
}

// NewLocal reads src, keeping windows of buckets of width (the sampling
// interval).
func NewLocal(src signals.Source, width time.Duration) *Local {
	return &Local{src: src, width: width, series: map[string]*series{}}
}

// Sample implements Evidence.
func (l *Local) Sample(ctx context.Context, now time.Time, watches []Watch) error {
	l.mu.Lock()
	keep := make(map[string]bool, len(watches))
	targets := make([]signals.Target, 0, 2*len(watches))
	sampled := make([]*series, 0, len(watches))
	timed := false
	for _, w := range watches {
		timed = timed || w.Latency
		keep[w.Service] = true
		s := l.series[w.Service]
		if s == nil || s.watch != w {
			// New, or its versions, clusters or window changed: start over.
			s = &series{watch: w, stable: signals.NewWindow[signals.Counts](w.Window, l.width), canary: signals.NewWindow[signals.Counts](w.Window, l.width)}
			l.series[w.Service] = s
		}
		targets = append(targets, w.Stable, w.Canary)
		sampled = append(sampled, s)
	}
	for name := range l.series {
		if !keep[name] {
			delete(l.series, name)
		}
	}
	l.mu.Unlock()
	if len(targets) == 0 {
		return nil
	}
	out := make([]signals.Counts, len(targets))
	var lat []signals.Histogram
	var err error
	if timed {
		lat = make([]signals.Histogram, len(targets))
		timed, err = readLatency(ctx, l.src, targets, out, lat)
	} else {
		err = l.src.Read(ctx, targets, out)
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range sampled {
		if l.series[s.watch.Service] != s {
			continue // forgotten or replaced while reading
		}
		s.stable.Observe(now, out[2*i])
		s.canary.Observe(now, out[2*i+1])
		if s.watch.Latency && timed {
			// Envoy's histograms are merged at the flush each admin read
			// makes, so a reading shows them as the read before left them:
			// the first reading of a run would put requests timed before
			// the run began into its first interval. The windows start at
			// the second reading (the module's, which do not lag, lose one
			// interval).
			if s.timedReads++; s.timedReads < 2 {
				continue
			}
			if s.stableLat == nil {
				s.stableLat = signals.NewWindow[signals.Histogram](s.watch.Window, l.width)
				s.canaryLat = signals.NewWindow[signals.Histogram](s.watch.Window, l.width)
			}
			s.stableLat.Observe(now, lat[2*i])
			s.canaryLat.Observe(now, lat[2*i+1])
		}
	}
	return nil
}

// LatencyTotals implements LatencyEvidence: false until the service's
// requests have been timed (a source that does not time them never).
func (l *Local) LatencyTotals(service string, now time.Time) (stable, canary signals.Histogram, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.series[service]
	if s == nil || s.stableLat == nil {
		return stable, canary, false
	}
	stable, _ = s.stableLat.Sum(now)
	canary, _ = s.canaryLat.Sum(now)
	return stable, canary, true
}

// Totals implements Evidence: covered is the lesser of the two windows'.
func (l *Local) Totals(service string, now time.Time) (stable, canary signals.Counts, covered time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.series[service]
	if s == nil {
		return signals.Counts{}, signals.Counts{}, 0
	}
	stable, c1 := s.stable.Sum(now)
	canary, c2 := s.canary.Sum(now)
	return stable, canary, min(c1, c2)
}

// Forget implements Evidence.
func (l *Local) Forget(service string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.series, service)
}
