package fleet

import (
	"fmt"
	"sync"
	"time"
)

// Following: what "connected" means. The watch is asked for a progress
// notification every progressEvery (the cadence below); etcd answers it only when the watch
// has delivered everything up to the member's current revision, with that
// revision. The probe learns the cluster's revision with a linearizable
// read every probeInterval, and a write learns the revision it committed.
// The replica follows while its watch answered within followBound and
// reached, within followBound, every revision learnt that way. A watch
// that stops answering, or falls behind, is stalled: it is started again
// (resumed from the applied revision) and its member checked. So a
// replica that says connected has applied everything committed more than
// probeInterval + followBound ago (3 s), and a member that hangs under a
// replica's watch costs it at most followBound + progressEvery (1.5 s)
// before the watch moves (docs/fleet.md, "Under faults"). Per replica that
// is two progress requests and half a linearizable read a second: at a
// thousand replicas, 2,500 requests a second on the cluster, about a core
// of etcd (BENCH.md).
// DefaultFollowInterval is progressEvery unless etcd_follow_interval says
// otherwise.
const DefaultFollowInterval = 500 * time.Millisecond

// cadence is the rhythm of a replica's liveness checks, all derived from
// one interval (etcd_follow_interval) so that raising it for a large
// fleet keeps their proportions: at the default, progress requests every
// 500 ms, followBound 1 s, the probe every 2 s. Each replica costs the
// cluster two progress requests and half a linearizable read per
// interval's worth of seconds; a fleet of thousands on a small cluster
// trades detection time for that load (docs/fleet.md, "Large fleets").
type cadence struct {
	progressEvery time.Duration
	followBound   time.Duration
	probeInterval time.Duration
	// slowBound is how long a watch may stay silent while its member is
	// heard from otherwise (a slow member, not a hung one) before it is
	// given up anyway.
	slowBound time.Duration
	// Stalls back off: after a watch is given up, the next one gets twice
	// the bound before it is (up to maxStallBound), until a watch has
	// followed for calmAfter. A member that hangs costs the first watch
	// followBound; a replica, or a cluster, starved of CPU does not start
	// watches again and again (each a new stream, and a new connection,
	// on a machine that has no time for them).
	maxStallBound time.Duration
	calmAfter     time.Duration
	// applyWait bounds how long a mutation waits for its own replica to
	// apply the revision it committed (read-your-writes). A watch that
	// stalls is replaced within followBound + progressEvery, so this is
	// only exceeded when this replica cannot follow etcd at all; the
	// answer then says so (store.Change.NotApplied) instead of claiming
	// the change is in force here.
	applyWait time.Duration
}

func newCadence(every time.Duration) cadence {
	if every <= 0 {
		every = DefaultFollowInterval
	}
	return cadence{
		progressEvery: every,
		followBound:   2 * every,
		probeInterval: 4 * every,
		slowBound:     10 * every,
		maxStallBound: 16 * every,
		calmAfter:     20 * every,
		applyWait:     6 * every,
	}
}

// maxWants bounds the revisions waiting to be reached; past it the newest
// is raised instead (the oldest keeps its time, so the bound still holds).
const maxWants = 64

type want struct {
	rev int64
	at  time.Time
}

// follow is the state of the current watch as the probe and the watch
// loop see it.
type follow struct {
	c     cadence // set once, before any watch
	mu    sync.Mutex
	since time.Time // the current watch started; zero: no watch
	heard time.Time // its last answer (created, progress, events); zero: none yet
	// proved is when a progress notification last proved that everything
	// up to rev was delivered (or a full read read it): a watch that was
	// just created, or that is catching up, answers without proving it.
	proved time.Time
	rev    int64 // it delivered everything up to this revision
	// advanced is when rev last grew: a watch that is behind but
	// delivering is slow, not stuck.
	advanced time.Time
	member   string // the member it runs on, as dialled ("" unknown)
	wants    []want // revisions learnt and not yet reached, oldest first
	// bound is how long the current watch may be silent, or behind,
	// before it is given up (followBound, doubled after each stall);
	// calm is when the replica last started following without a stall.
	bound time.Duration
	calm  time.Time
}

// started resets the state for a new watch on member.
func (f *follow) started(now time.Time, member string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since, f.heard, f.member = now, time.Time{}, member
	if f.bound == 0 {
		f.bound = f.c.followBound
	}
}

// gaveUp records that the current watch stalled: the next one gets twice
// the bound.
func (f *follow) gaveUp() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bound = min(2*max(f.bound, f.c.followBound), f.c.maxStallBound)
	f.calm = time.Time{}
}

// ended says that no watch runs.
func (f *follow) ended() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since, f.heard = time.Time{}, time.Time{}
}

// answered records an answer of the watch: alive; synced (a progress
// notification) proves it delivered everything up to rev; events carry
// rev, the last one delivered.
func (f *follow) answered(now time.Time, rev int64, synced bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.since.IsZero() {
		return
	}
	f.heard = now
	if rev > f.rev {
		f.advanced = now
	}
	if synced {
		f.proved = now
		if f.calm.IsZero() {
			f.calm = now
		} else if now.Sub(f.calm) >= f.c.calmAfter {
			f.bound = f.c.followBound
		}
	}
	if rev > f.rev {
		f.rev = rev
	}
	n := 0
	for n < len(f.wants) && f.wants[n].rev <= f.rev {
		n++
	}
	f.wants = f.wants[n:]
}

// reached records that everything up to rev is applied (a full read at
// rev), without proving that a watch runs.
func (f *follow) reached(now time.Time, rev int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.proved = now
	if rev > f.rev {
		f.rev, f.advanced = rev, now
	}
	n := 0
	for n < len(f.wants) && f.wants[n].rev <= f.rev {
		n++
	}
	f.wants = f.wants[n:]
}

// learnt records that the cluster had committed rev at (or before) at.
func (f *follow) learnt(rev int64, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rev <= f.rev {
		return
	}
	if n := len(f.wants); n > 0 && f.wants[n-1].rev >= rev {
		return
	}
	if len(f.wants) >= maxWants {
		f.wants[len(f.wants)-1].rev = rev
		return
	}
	f.wants = append(f.wants, want{rev: rev, at: at})
}

// following says whether the replica follows at now: a progress
// notification (or a full read) proved it up to date within followBound,
// and it is not behind a revision learnt more than followBound ago.
func (f *follow) following(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proved.IsZero() || now.Sub(f.proved) > f.c.followBound {
		return false
	}
	return len(f.wants) == 0 || now.Sub(f.wants[0].at) <= f.c.followBound
}

// stalled says why the current watch should be given up, "" if it should
// not: it has not answered for followBound, or has not reached within
// followBound a revision learnt (each watch gets followBound from its
// start to catch up).
func (f *follow) stalled(now time.Time) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.since.IsZero() {
		return ""
	}
	last := f.heard
	if last.IsZero() {
		last = f.since
	}
	bound := max(f.bound, f.c.followBound)
	if d := now.Sub(last); d > bound {
		return fmt.Sprintf("no answer from the watch for %v", d.Round(time.Millisecond))
	}
	if len(f.wants) > 0 && now.Sub(f.advanced) > bound {
		// Behind, and not delivering: a member cut off from its peers
		// keeps answering progress requests at a revision that no
		// longer moves. One behind but delivering is left to catch up
		// (following says it is not, meanwhile).
		w := f.wants[0]
		from := w.at
		if f.since.After(from) {
			from = f.since
		}
		if d := now.Sub(from); d > bound {
			return fmt.Sprintf("the watch is at revision %d; etcd had committed %d %v ago", f.rev, w.rev, now.Sub(w.at).Round(time.Millisecond))
		}
	}
	return ""
}

// silentFor is how long the current watch has not answered (since its
// start if it never did).
func (f *follow) silentFor(now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	last := f.heard
	if last.IsZero() {
		last = f.since
	}
	if last.IsZero() {
		return 0
	}
	return now.Sub(last)
}

// watching returns the member the watch runs on.
func (f *follow) watching() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.since.IsZero() {
		return ""
	}
	return f.member
}
