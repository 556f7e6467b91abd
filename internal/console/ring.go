package console

// ring keeps the growth of one cumulative counter in each of the last
// len(vals) buckets, in fixed memory. Buckets are numbered by the caller
// (time / width); a reading adds its difference from the previous one to
// the bucket it is taken in. It is not safe for concurrent use.
type ring struct {
	vals   []uint64
	slots  []int64 // the bucket number each slot holds; -1: none
	last   uint64  // the previous cumulative reading
	primed bool
}

func newRing(n int) *ring {
	r := &ring{vals: make([]uint64, n), slots: make([]int64, n)}
	for i := range r.slots {
		r.slots[i] = -1
	}
	return r
}

// observe records the cumulative value read in bucket. The first reading
// is only the baseline; a value below the previous one means the counter
// restarted (Envoy restarted), so all of it is growth.
func (r *ring) observe(bucket int64, cum uint64) {
	if !r.primed {
		r.primed, r.last = true, cum
		return
	}
	d := cum - r.last
	if cum < r.last {
		d = cum
	}
	r.last = cum
	if d == 0 || bucket < 0 {
		return
	}
	i := int(bucket % int64(len(r.vals)))
	if r.slots[i] != bucket {
		r.slots[i], r.vals[i] = bucket, 0
	}
	r.vals[i] += d
}

// series fills out (len(out) <= len(r.vals)) with the growth in the
// buckets end-len(out)+1 .. end, oldest first; a bucket nothing was
// recorded in is 0.
func (r *ring) series(end int64, out []uint64) {
	first := end - int64(len(out)) + 1
	for k := range out {
		out[k] = 0
		b := first + int64(k)
		if b < 0 {
			continue
		}
		if i := int(b % int64(len(r.vals))); r.slots[i] == b {
			out[k] = r.vals[i]
		}
	}
}

// sum is the growth in the buckets from .. end.
func (r *ring) sum(from, end int64) uint64 {
	var s uint64
	for i, b := range r.slots {
		if b >= from && b <= end && b > end-int64(len(r.vals)) {
			s += r.vals[i]
		}
	}
	return s
}
