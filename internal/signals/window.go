package signals

import "time"

// Cumulative is a reading of counters that only grow, except that all of
// them start again from zero when their owner (Envoy) restarts. Counts is
// one; a histogram's buckets would be another. A Window sums the growth
// of any Cumulative.
type Cumulative[V any] interface {
	// Since returns the growth from prev to the receiver. restarted says
	// that the counters started again in between (one of them went
	// backwards): then every counter of the reading restarted, and the
	// growth is the receiver itself, all of it counted since the restart.
	Since(prev V) (growth V, restarted bool)
	// Add returns the sum of the receiver and o.
	Add(o V) V
}

// Since implements Cumulative: requests and errors are one reading of one
// cluster, so when either went backwards, both restarted.
func (c Counts) Since(prev Counts) (Counts, bool) {
	if c.Requests < prev.Requests || c.Errors < prev.Errors {
		return c, true
	}
	return Counts{Requests: c.Requests - prev.Requests, Errors: c.Errors - prev.Errors}, false
}

// Window sums the growth of cumulative counters over the last span of
// time, in fixed memory: a ring of buckets of one width each. A reading
// adds its growth since the previous reading to the bucket of the moment
// it was taken.
//
// Growth read after a gap (readings that failed, a tick that stalled) is
// known only in sum, not when within the gap it happened. So:
//
//   - a reading more than span (plus one bucket, so that a late tick
//     changes nothing even when a bucket is the whole span) after the
//     previous one is a new baseline: nothing before it is summed, and the
//     window fills again from it;
//   - growth read across a shorter gap is summed only while the whole gap
//     lies inside the window (with a tolerance of two buckets, so that a
//     late tick changes nothing); once the gap begins before the window,
//     that growth and everything older is left out, and the window covers
//     only what followed it.
//
// It is not safe for concurrent use.
type Window[V Cumulative[V]] struct {
	span, width time.Duration
	slots       []slot[V]
	last        V         // the previous cumulative reading
	lastAt      time.Time // when it was taken
	first       time.Time // the baseline's reading
	primed      bool
}

// slot is one bucket of the ring.
type slot[V any] struct {
	n      int64 // the bucket number (time / width); -1: empty
	growth V
	// from and to bound the time the growth happened in: after the
	// reading before the bucket's first one, up to its last one (unix
	// nanoseconds).
	from, to int64
}

// NewWindow returns a window over span with buckets of width (both
// positive; width is raised to span/1024 at least, so memory stays small).
func NewWindow[V Cumulative[V]](span, width time.Duration) *Window[V] {
	if width <= 0 {
		width = time.Second
	}
	if span < width {
		span = width
	}
	if min := span / 1024; width < min {
		width = min
	}
	n := int((span + width - 1) / width)
	w := &Window[V]{span: span, width: width, slots: make([]slot[V], n)}
	w.clear()
	return w
}

// Span is the window's length.
func (w *Window[V]) Span() time.Duration { return w.span }

// Observe records the cumulative reading c taken at now. The first
// reading, and one taken more than span plus a bucket after the previous
// one (or before it), only sets a new baseline.
func (w *Window[V]) Observe(now time.Time, c V) {
	if !w.primed || now.Before(w.lastAt) || now.Sub(w.lastAt) > w.span+w.width {
		w.clear()
		w.primed, w.first, w.last, w.lastAt = true, now, c, now
		return
	}
	growth, _ := c.Since(w.last)
	n := w.bucket(now)
	s := &w.slots[int(n%int64(len(w.slots)))]
	from := w.lastAt.UnixNano()
	if s.n != n {
		var zero V
		*s = slot[V]{n: n, growth: zero, from: from}
	}
	s.growth, s.from, s.to = s.growth.Add(growth), min(s.from, from), now.UnixNano()
	w.last, w.lastAt = c, now
}

func (w *Window[V]) bucket(t time.Time) int64 { return t.UnixNano() / int64(w.width) }

// Sum returns the growth over the window ending at now (the buckets of the
// last span, the current one included, less any growth read across a gap
// that began before the window) and how much of the span that growth
// covers: from the baseline, or from the end of the last gap left out, at
// most span. Before two readings it is zero and nothing is covered.
func (w *Window[V]) Sum(now time.Time) (V, time.Duration) {
	var sum V
	if !w.primed {
		return sum, 0
	}
	cur := w.bucket(now)
	oldest := cur - int64(len(w.slots)) + 1
	// Growth that may date from before this is not in the window.
	edge := now.Add(-w.span - 2*w.width).UnixNano()
	cut, horizon := oldest-1, w.first
	for _, s := range w.slots {
		if s.n >= oldest && s.n <= cur && s.from < edge && s.n > cut {
			cut, horizon = s.n, time.Unix(0, s.to)
		}
	}
	for _, s := range w.slots {
		if s.n > cut && s.n <= cur {
			sum = sum.Add(s.growth)
		}
	}
	return sum, min(max(now.Sub(horizon), 0), w.span)
}

// Reset forgets every reading: the next Observe is a new baseline.
func (w *Window[V]) Reset() {
	w.clear()
	var zero V
	w.primed, w.last, w.first, w.lastAt = false, zero, time.Time{}, time.Time{}
}

func (w *Window[V]) clear() {
	var zero V
	for i := range w.slots {
		w.slots[i] = slot[V]{n: -1, growth: zero}
	}
}
