package signals

import "time"

// Window sums the growth of one cumulative counter pair over the last span
// of time, in fixed memory: a ring of buckets of one width each. A reading
// adds its difference from the previous reading to the bucket of the
// moment it was taken. It is not safe for concurrent use.
type Window struct {
	span, width time.Duration
	buckets     []Counts
	slots       []int64 // the bucket number (time / width) each slot holds
	last        Counts  // the previous cumulative reading
	first       time.Time
	primed      bool
}

// NewWindow returns a window over span with buckets of width (both
// positive; width is raised to span/1024 at least, so memory stays small).
func NewWindow(span, width time.Duration) *Window {
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
	w := &Window{span: span, width: width, buckets: make([]Counts, n), slots: make([]int64, n)}
	for i := range w.slots {
		w.slots[i] = -1
	}
	return w
}

// Span is the window's length.
func (w *Window) Span() time.Duration { return w.span }

// Observe records the cumulative counts read at now. The first reading
// only sets the baseline. A counter that went backwards has restarted (its
// owner, Envoy, restarted): its new value is all growth since then.
func (w *Window) Observe(now time.Time, c Counts) {
	if !w.primed {
		w.primed, w.first, w.last = true, now, c
		return
	}
	d := Counts{Requests: grown(w.last.Requests, c.Requests), Errors: grown(w.last.Errors, c.Errors)}
	w.last = c
	if d == (Counts{}) {
		return
	}
	n := w.bucket(now)
	i := int(n % int64(len(w.buckets)))
	if w.slots[i] != n {
		w.slots[i], w.buckets[i] = n, Counts{}
	}
	w.buckets[i] = w.buckets[i].Add(d)
}

func grown(prev, cur uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

func (w *Window) bucket(t time.Time) int64 { return t.UnixNano() / int64(w.width) }

// Sum returns the growth over the window ending at now (the buckets of the
// last span, the current one included) and how much of the span has been
// watched: from the first reading, at most span. Before two readings it
// is zero and nothing is covered.
func (w *Window) Sum(now time.Time) (Counts, time.Duration) {
	if !w.primed {
		return Counts{}, 0
	}
	cur := w.bucket(now)
	oldest := cur - int64(len(w.buckets)) + 1
	var sum Counts
	for i, n := range w.slots {
		if n >= oldest && n <= cur {
			sum = sum.Add(w.buckets[i])
		}
	}
	covered := now.Sub(w.first)
	if covered > w.span {
		covered = w.span
	}
	if covered < 0 {
		covered = 0
	}
	return sum, covered
}

// Reset forgets every reading: the next Observe is a new baseline.
func (w *Window) Reset() {
	for i := range w.slots {
		w.slots[i], w.buckets[i] = -1, Counts{}
	}
	w.primed, w.last, w.first = false, Counts{}, time.Time{}
}
