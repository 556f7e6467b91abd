package adapter

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/trafficsplit/splitter/split"
)

// Responses keeps one prebuilt wire answer (an *E) per header outcome of
// the table in force, so that an adapter builds each distinct answer once
// and then only looks it up. The cache belongs to one table: when the table
// in force changes, the next request starts a new cache sized from the new
// table (Table.Outcomes), and the old one goes with the old table, so
// nothing from an older configuration lingers and nothing is evicted while
// a table serves.
//
// Lookups are lock-free array reads for every table whose outcomes are
// numbered (split.MaxOutcomes of them). A table with more outcomes than
// that falls back to a map under a read lock, capped at MaxOutcomes
// entries; past the cap answers are built per request and counted as
// misses. A request that still holds an older table (it started before a
// swap) gets its answer built for it, uncached.
type Responses[E any] struct {
	src   TableSource
	h     Headers
	build func(*Plan) *E

	cur          atomic.Pointer[responseSet[E]]
	hits, misses atomic.Uint64
}

type responseSet[E any] struct {
	table *split.Table
	dense []atomic.Pointer[E] // indexed by Decision.Outcome; nil when not numbered

	mu     sync.RWMutex
	sparse map[string]*E // keyed by appendKey, when dense is nil
}

// NewResponses returns a cache of build's answers for the tables src
// serves; build gets the plan of the first decision of each outcome and
// must return an answer that is never modified afterwards.
func NewResponses[E any](src TableSource, h Headers, build func(*Plan) *E) *Responses[E] {
	return &Responses[E]{src: src, h: h, build: build}
}

// Get returns the answer for d, decided by t.
func (r *Responses[E]) Get(t *split.Table, d *split.Decision) *E {
	set := r.cur.Load()
	if set == nil || set.table != t {
		if set = r.install(t); set == nil {
			r.misses.Add(1)
			return r.make(d)
		}
	}
	if set.dense != nil {
		o := d.Outcome()
		if o < 0 || o >= len(set.dense) {
			r.misses.Add(1)
			return r.make(d)
		}
		if e := set.dense[o].Load(); e != nil {
			r.hits.Add(1)
			return e
		}
		r.misses.Add(1)
		e := r.make(d)
		set.dense[o].Store(e)
		return e
	}
	var buf [256]byte
	key := appendKey(buf[:0], d)
	set.mu.RLock()
	e, ok := set.sparse[string(key)]
	set.mu.RUnlock()
	if ok {
		r.hits.Add(1)
		return e
	}
	r.misses.Add(1)
	e = r.make(d)
	set.mu.Lock()
	if len(set.sparse) < split.MaxOutcomes {
		set.sparse[string(key)] = e
	}
	set.mu.Unlock()
	return e
}

// Stats returns how many Get calls found a prebuilt answer and how many
// built one.
func (r *Responses[E]) Stats() (hits, misses uint64) { return r.hits.Load(), r.misses.Load() }

func (r *Responses[E]) make(d *split.Decision) *E {
	var p Plan
	r.h.PlanFor(d, &p)
	return r.build(&p)
}

// install makes a cache for t the current one, if t is the table in force;
// for an older table it returns nil.
func (r *Responses[E]) install(t *split.Table) *responseSet[E] {
	if t == nil || r.src == nil || r.src.Table() != t {
		return nil
	}
	set := &responseSet[E]{table: t}
	if n := t.Outcomes(); n > 0 {
		set.dense = make([]atomic.Pointer[E], n)
	} else {
		set.sparse = map[string]*E{}
	}
	for {
		old := r.cur.Load()
		if old != nil && old.table == t {
			return old // another request installed it first
		}
		if r.src.Table() != t {
			return nil // swapped meanwhile: never put an older table back
		}
		if r.cur.CompareAndSwap(old, set) {
			return set
		}
	}
}

// appendKey identifies everything a decision's headers depend on: version,
// reason, mirror and every (header, variant) pair, length-prefixed so that distinct
// decisions never share a key.
func appendKey(b []byte, d *split.Decision) []byte {
	b = appendField(b, d.Version)
	b = append(b, byte(d.Reason))
	b = appendField(b, d.Mirror())
	for _, v := range d.Variants() {
		b = appendField(b, v.Header)
		b = appendField(b, v.Variant)
	}
	return b
}

func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
