package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/compat"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/split"
)

// countsRecord is the value of rollout-counts/<service>/<node_id>: one
// replica's window counts of a rollout's run, bound to its session lease.
//
//	{"node": "pod-a", "run": "…", "stable": {"requests": 812, "errors": 1},
//	 "canary": {"requests": 41, "errors": 0}, "covered": "10s", "at": "…"}
//
// error is set (and the counts empty) while the replica cannot read its
// Envoy: the leader leaves it out.
type countsRecord struct {
	Node    string         `json:"node"`
	Run     time.Time      `json:"run"`
	Stable  signals.Counts `json:"stable"`
	Canary  signals.Counts `json:"canary"`
	Covered split.Duration `json:"covered"`
	At      time.Time      `json:"at"`
	Error   string         `json:"error,omitempty"`
	// The window's latency histograms, when the guard judges latency
	// (only the non-empty buckets are written).
	StableLatency *signals.Histogram `json:"stable_latency,omitempty"`
	CanaryLatency *signals.Histogram `json:"canary_latency,omitempty"`
}

// sameCounts says whether two records carry the same evidence.
func (c countsRecord) sameCounts(o countsRecord) bool {
	return c.Run.Equal(o.Run) && c.Stable == o.Stable && c.Canary == o.Canary && c.Covered == o.Covered && c.Error == o.Error &&
		sameHist(c.StableLatency, o.StableLatency) && sameHist(c.CanaryLatency, o.CanaryLatency)
}

func sameHist(a, b *signals.Histogram) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// published is what this replica last wrote for one service.
type published struct {
	last    countsRecord
	lease   clientv3.LeaseID
	written time.Time // when last written
	tried   time.Time // when last considered
}

// seenRecord is when the leader saw a counts key's revision move, on its
// own clock (never the record's at, which is the writer's).
type seenRecord struct {
	rev int64
	// seen is the read that first saw rev: the record is at least
	// now-seen old (staleness).
	seen time.Time
	// after is the read before that one: rev was written after it, so
	// the record is at most now-after old (lateness); zero when unknown
	// (the first read of a leadership).
	after time.Time
}

// countsEntry is the fresh records of one service's other replicas as
// the leader read them.
type countsEntry struct {
	records []countsRecord
	// current[i]: records[i] is known to be at most the lateness bound
	// old, so its covered counts toward a full window.
	current []bool
}

// aggregate is a service's evidence at the last Sample on the leader.
type aggregate struct {
	stable, canary signals.Counts
	covered        time.Duration
	nodes          []string
	// The summed latency histograms of the replicas that timed requests.
	lstable, lcanary signals.Histogram
	timed            bool
}

// --- Evidence ---

// Sample implements rollout.Evidence: it reads this replica's Envoy,
// publishes the window counts when due, and on the leader (ctx from Lead)
// reads every replica's published counts and sums the fresh ones of the
// same run. A replica whose Envoy cannot be read, whose record is older
// than the staleness bound, or whose lease expired (its record is gone)
// is left out; the leader's own counts are one replica's among the
// others. It fails only when no replica's counts can be used.
func (r *Rollouts) Sample(ctx context.Context, now time.Time, watches []rollout.Watch) error {
	var localErr error
	if r.local == nil {
		if len(watches) > 0 {
			localErr = errNoLocal
		}
	} else {
		localErr = r.local.Sample(ctx, now, watches)
		r.publish(ctx, now, watches, localErr)
	}
	r.cmu.Lock()
	prev := r.localErr
	r.localErr = ""
	if localErr != nil {
		r.localErr = localErr.Error()
	}
	r.cmu.Unlock()
	if fence(ctx) == nil {
		r.cmu.Lock()
		// A later leadership starts over: it knows nothing of how old
		// the records it finds then are.
		clear(r.agg)
		clear(r.seen)
		r.lastRead = time.Time{}
		r.cmu.Unlock()
		return localErr
	}
	others, err := r.readCounts(ctx, now, watches)
	if err != nil {
		return err
	}
	agg := make(map[string]*aggregate, len(watches))
	usable := false
	for _, w := range watches {
		a := &aggregate{covered: -1}
		if localErr == nil {
			s, c, cov := r.local.Totals(w.Service, now)
			a.stable, a.canary, a.covered = a.stable.Add(s), a.canary.Add(c), cov
			a.nodes = append(a.nodes, r.node)
			if ls, lc, ok := r.local.LatencyTotals(w.Service, now); ok {
				a.lstable, a.lcanary, a.timed = ls, lc, true
			}
		}
		e := others[w.Service]
		for i, rec := range e.records {
			a.stable, a.canary = a.stable.Add(rec.Stable), a.canary.Add(rec.Canary)
			if rec.StableLatency != nil && rec.CanaryLatency != nil {
				a.lstable, a.lcanary, a.timed = a.lstable.Add(*rec.StableLatency), a.lcanary.Add(*rec.CanaryLatency), true
			}
			covered := rec.Covered.D()
			if !e.current[i] {
				// Summed (its counts may show a failure), but a window
				// that ended an unknown or too long time ago is not a
				// window watched up to now.
				covered = 0
			}
			if a.covered < 0 || covered < a.covered {
				a.covered = covered
			}
			a.nodes = append(a.nodes, rec.Node)
		}
		if a.covered < 0 {
			a.covered = 0
		}
		slices.Sort(a.nodes)
		if len(a.nodes) > 0 {
			usable = true
		}
		agg[w.Service] = a
	}
	r.cmu.Lock()
	r.agg = agg
	r.cmu.Unlock()
	if localErr != nil {
		if !usable {
			return localErr
		}
		if prev != localErr.Error() && r.local != nil {
			r.log.Warn("this replica cannot read its own Envoy: judging on the other replicas' counts", "error", localErr)
		}
	}
	return nil
}

// Totals implements rollout.Evidence: on the leader, the sum of the
// replicas' counts at the last Sample (covered is the least any of them
// watched); elsewhere this replica's own.
func (r *Rollouts) Totals(service string, now time.Time) (stable, canary signals.Counts, covered time.Duration) {
	r.cmu.Lock()
	a := r.agg[service]
	r.cmu.Unlock()
	if a == nil {
		if r.local == nil {
			return signals.Counts{}, signals.Counts{}, 0
		}
		return r.local.Totals(service, now)
	}
	return a.stable, a.canary, a.covered
}

// LatencyTotals implements rollout.LatencyEvidence: on the leader, the
// sum of the latency histograms of the replicas summed at the last Sample
// that timed requests; elsewhere this replica's own.
func (r *Rollouts) LatencyTotals(service string, now time.Time) (stable, canary signals.Histogram, ok bool) {
	r.cmu.Lock()
	a := r.agg[service]
	r.cmu.Unlock()
	if a == nil {
		if r.local == nil {
			return stable, canary, false
		}
		return r.local.LatencyTotals(service, now)
	}
	return a.lstable, a.lcanary, a.timed
}

// Sources implements rollout.Sourced: the replicas summed at the last
// Sample on the leader.
func (r *Rollouts) Sources(service string) []string {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	if a := r.agg[service]; a != nil {
		return slices.Clone(a.nodes)
	}
	return nil
}

// Forget implements rollout.Evidence.
func (r *Rollouts) Forget(service string) {
	if r.local != nil {
		r.local.Forget(service)
	}
	r.cmu.Lock()
	defer r.cmu.Unlock()
	delete(r.agg, service)
	if p := r.pub[service]; p != nil {
		p.tried = time.Time{} // publish the fresh counts at the next tick
	}
}

// errNoLocal: this replica reads no Envoy; it still follows, and leads
// on the counts the others publish.
var errNoLocal = errors.New("this replica has no signal source (envoy_admin is empty); it publishes no counts")

// --- publishing ---

// publish writes this replica's counts of every watched rollout that is
// due (PublishInterval since the last one) and changed, or unchanged for
// the heartbeat; and deletes those of rollouts no longer watched. All in
// one transaction, under the session's lease; best effort (the next tick
// tries again).
func (r *Rollouts) publish(ctx context.Context, now time.Time, watches []rollout.Watch, localErr error) {
	r.mu.Lock()
	sess := r.sess
	r.mu.Unlock()
	c := r.src.client.Load()
	if sess == nil || c == nil || !r.src.conn.Load().connected {
		return
	}
	lease := sess.Lease()
	type write struct {
		service string
		rec     countsRecord
	}
	var writes []write
	var ops []clientv3.Op
	r.cmu.Lock()
	keep := make(map[string]bool, len(watches))
	for _, w := range watches {
		keep[w.Service] = true
		p := r.pub[w.Service]
		if p == nil {
			p = &published{}
			r.pub[w.Service] = p
		}
		if p.lease == lease && now.Sub(p.tried) < r.every {
			continue
		}
		p.tried = now
		rec := countsRecord{Node: r.node, Run: w.Run, At: now.UTC()}
		if localErr != nil {
			rec.Error = localErr.Error()
		} else {
			s, cn, cov := r.local.Totals(w.Service, now)
			rec.Stable, rec.Canary, rec.Covered = s, cn, split.Duration(cov)
			if ls, lc, ok := r.local.LatencyTotals(w.Service, now); ok {
				rec.StableLatency, rec.CanaryLatency = &ls, &lc
			}
		}
		if p.lease == lease && rec.sameCounts(p.last) && now.Sub(p.written) < r.heartbeat {
			continue
		}
		val, err := json.Marshal(rec)
		if err != nil {
			continue
		}
		writes = append(writes, write{w.Service, rec})
		ops = append(ops, clientv3.OpPut(r.keys.RolloutCount(w.Service, r.node), string(val), clientv3.WithLease(lease)))
	}
	for svc := range r.pub {
		if !keep[svc] {
			ops = append(ops, clientv3.OpDelete(r.keys.RolloutCount(svc, r.node)))
			delete(r.pub, svc)
		}
	}
	r.cmu.Unlock()
	if len(ops) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, requestTimeout)
	_, err := c.Txn(wctx).Then(ops...).Commit()
	cancel()
	if err != nil {
		r.log.Debug("cannot publish the rollout counts yet", "error", err)
		return
	}
	r.m.published.Add(float64(len(writes)))
	r.cmu.Lock()
	for _, w := range writes {
		if p := r.pub[w.service]; p != nil {
			p.last, p.lease, p.written = w.rec, lease, now
		}
	}
	r.cmu.Unlock()
}

// readCounts reads every published record (one range read) and keeps, per
// watched service, the other replicas' fresh records of the same run.
func (r *Rollouts) readCounts(ctx context.Context, now time.Time, watches []rollout.Watch) (map[string]countsEntry, error) {
	out := map[string]countsEntry{}
	if len(watches) == 0 {
		r.cmu.Lock()
		r.lastRead = time.Time{} // reads that are not made bound nothing
		r.cmu.Unlock()
		return out, nil
	}
	c := r.src.client.Load()
	if c == nil {
		return nil, errUnavailable("not connected")
	}
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
	resp, err := c.Get(rctx, r.keys.RolloutCounts(), clientv3.WithPrefix())
	cancel()
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, ctx.Err()
		}
		return nil, errUnavailable("read " + r.keys.RolloutCounts() + ": " + trimErr(err))
	}
	runs := make(map[string]time.Time, len(watches))
	for _, w := range watches {
		runs[w.Service] = w.Run
	}
	r.cmu.Lock()
	defer r.cmu.Unlock()
	prevRead := r.lastRead
	r.lastRead = now
	present := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		present[key] = true
		rest := strings.TrimPrefix(key, r.keys.RolloutCounts())
		i := strings.LastIndexByte(rest, '/')
		if i <= 0 {
			continue
		}
		service, node := rest[:i], rest[i+1:]
		run, watched := runs[service]
		if !watched || node == r.node {
			continue
		}
		sn, ok := r.seen[key]
		if !ok || sn.rev != kv.ModRevision {
			sn = seenRecord{rev: kv.ModRevision, seen: now, after: prevRead}
			r.seen[key] = sn
		}
		var rec countsRecord
		why := ""
		switch err := json.Unmarshal(kv.Value, &rec); {
		case err != nil:
			why = "unreadable record: " + err.Error()
		case rec.Error != "":
			why = "the replica cannot read its Envoy: " + rec.Error
		case !rec.Run.Equal(run):
			why = "counts of another run"
		case now.Sub(sn.seen) > r.stale:
			why = fmt.Sprintf("stale: not renewed for %s", now.Sub(sn.seen).Round(time.Millisecond))
		}
		r.noteExcluded(key, why)
		if why != "" {
			continue
		}
		r.src.notes.Note(r.log, "published rollout counts", key, compat.Unknown(kv.Value, &rec))
		rec.Node = node
		e := out[service]
		e.records = append(e.records, rec)
		e.current = append(e.current, !sn.after.IsZero() && now.Sub(sn.after) <= r.late)
		out[service] = e
	}
	for key := range r.seen {
		if !present[key] {
			delete(r.seen, key)
			delete(r.excluded, key)
		}
	}
	return out, nil
}

// noteExcluded logs a record's exclusion when its reason changes; r.cmu
// is held.
func (r *Rollouts) noteExcluded(key, why string) {
	if r.excluded[key] == why {
		return
	}
	if why == "" {
		r.log.Info("published rollout counts used again", "key", key)
		delete(r.excluded, key)
		return
	}
	r.excluded[key] = why
	if why != "counts of another run" {
		r.log.Warn("published rollout counts left out of the verdict", "key", key, "reason", why)
	}
}
