package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/trafficsplit/splitter/internal/compat"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// RolloutOptions configure Rollouts.
type RolloutOptions struct {
	// TTL is the lease of this replica's rollout session: its candidacy
	// (and leadership) in the election and the counts it publishes. A
	// replica that dies is replaced as leader, and its counts dropped,
	// within it. Whole seconds; default 5s.
	TTL time.Duration
	// PublishInterval is how often the counts of an active rollout are
	// published (when they changed); default 1s.
	PublishInterval time.Duration
	// SignalsInterval is the Manager's tick (default 250ms): counts are
	// published on ticks, so staleness is judged against the slower of
	// the two.
	SignalsInterval time.Duration
	// Local reads this replica's own Envoy; nil: no signal source (the
	// replica publishes nothing; leading, it judges on the others' counts).
	Local   *rollout.Local
	Logger  *slog.Logger    // nil: discard
	Metrics *RolloutMetrics // nil: unregistered
}

// Rollouts runs the fleet side of the guarded rollouts (docs/rollouts.md,
// "Fleet mode"). It is the rollout Manager's
//
//   - StateStore: each state is the JSON document at rollouts/<service>,
//     written in a transaction that compares the key's mod revision with
//     the one the new state was derived from (and, for the decision
//     loop's writes, the leader's election key);
//   - Elector: every replica campaigns with concurrency.NewElection on
//     rollout-leader/ under its own session (a lease of TTL, kept alive);
//     the one elected leads until its session ends, and the moment it does
//     the leadership context is cancelled;
//   - Evidence: every replica samples its own Envoy (Local) and publishes
//     its window counts under rollout-counts/<service>/<node_id>, bound to
//     its session's lease; the leader sums the fresh counts of every
//     replica (its own included) for the verdict;
//   - StateMutator: the weights go through the Source's write path, on the
//     condition that the state they belong to is still the stored one.
//
// Run follows rollouts/ and rollout-leader/ through watches, so that every
// replica shows the same states and the same leader.
type Rollouts struct {
	src   *Source
	keys  Keys
	node  string
	ttl   time.Duration
	every time.Duration // publish interval
	// heartbeat: unchanged counts are written again this often; late: a
	// record that may be older than this no longer makes a full window
	// (it is still summed); stale: a record whose revision has not moved
	// for this long is left out.
	heartbeat, late, stale time.Duration
	local                  *rollout.Local
	log                    *slog.Logger
	m                      *RolloutMetrics

	observe atomic.Pointer[func(rollout.State)]

	mu     sync.Mutex
	sess   *concurrency.Session
	term   *term
	leader string // node id of the leader as last seen in etcd

	cmu      sync.Mutex
	pub      map[string]*published // per service: what this replica last wrote
	seen     map[string]seenRecord // leader: per counts key, when its revision last moved
	lastRead time.Time             // leader: the last read of the counts in this leadership
	agg      map[string]*aggregate // leader: per service, the counts summed at the last Sample
	localErr string                // the last local reading's error, "" when it worked
	excluded map[string]string     // leader: per counts key, why it was left out (logged on change)
}

// term is one leadership: it lasts until ctx is cancelled.
type term struct {
	ctx    context.Context
	cancel context.CancelFunc
	key    string // this replica's election key
	rev    int64  // its create revision: the fence
	once   sync.Once
	why    string
}

func (t *term) end(why string) {
	t.once.Do(func() { t.why = why })
	t.cancel()
}

type termKey struct{}

// NewRollouts returns the fleet's rollout parts over src; nothing talks
// to etcd before Run (Load and Save excepted).
func NewRollouts(src *Source, o RolloutOptions) *Rollouts {
	if o.TTL < time.Second {
		o.TTL = 5 * time.Second
	}
	if o.PublishInterval <= 0 {
		o.PublishInterval = time.Second
	}
	if o.SignalsInterval <= 0 {
		o.SignalsInterval = rollout.DefaultInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewRolloutMetrics(nil)
	}
	step := max(o.PublishInterval, o.SignalsInterval)
	r := &Rollouts{
		src: src, keys: src.keys, node: src.opts.NodeID, ttl: o.TTL, every: o.PublishInterval,
		heartbeat: 2 * step, late: 4 * step, stale: 10 * step,
		local: o.Local, log: o.Logger, m: o.Metrics,
		pub: map[string]*published{}, seen: map[string]seenRecord{}, agg: map[string]*aggregate{},
		excluded: map[string]string{},
	}
	src.rollouts.Store(r)
	return r
}

// Follow makes every state stored by another replica (or another
// process) reach observe: the Manager's Observe.
func (r *Rollouts) Follow(observe func(rollout.State)) { r.observe.Store(&observe) }

// Run campaigns for the leadership and follows the states and the leader
// until ctx ends; then it gives the leadership up and revokes the lease,
// so that another replica takes over at once and the counts vanish.
func (r *Rollouts) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { r.mirror(ctx, r.keys.Rollouts(), r.onStates) })
	wg.Go(func() { r.followLeader(ctx) })
	r.electionLoop(ctx)
	wg.Wait()
}

// --- Elector ---

// Lead implements rollout.Elector.
func (r *Rollouts) Lead(ctx context.Context) (context.Context, func(), bool) {
	r.mu.Lock()
	t := r.term
	r.mu.Unlock()
	if t == nil || t.ctx.Err() != nil {
		return ctx, func() {}, false
	}
	lctx, cancel := context.WithCancel(context.WithValue(ctx, termKey{}, t))
	stop := context.AfterFunc(t.ctx, cancel)
	return lctx, func() { stop(); cancel() }, true
}

// Leader implements rollout.Elector: the leader as last seen in etcd.
func (r *Rollouts) Leader() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leader
}

// Leading reports whether this replica leads now.
func (r *Rollouts) Leading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.term != nil && r.term.ctx.Err() == nil
}

// fence is what a write made on ctx's leadership is conditional on: the
// leader's election key still being the one it created.
func fence(ctx context.Context) []clientv3.Cmp {
	t, _ := ctx.Value(termKey{}).(*term)
	if t == nil {
		return nil
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev)}
}

// electionLoop keeps a session and campaigns under it, forever.
func (r *Rollouts) electionLoop(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		c := r.src.client.Load()
		if c == nil || !r.src.conn.Load().connected {
			backoff = sleep(ctx, backoff)
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, requestTimeout)
		lease, err := c.Grant(gctx, int64(r.ttl/time.Second))
		cancel()
		if err != nil {
			r.log.Debug("cannot create the rollout lease yet", "error", err)
			backoff = sleep(ctx, backoff)
			continue
		}
		sess, err := concurrency.NewSession(c, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
		if err != nil {
			r.log.Debug("cannot keep the rollout lease alive", "error", err)
			backoff = sleep(ctx, backoff)
			continue
		}
		backoff = minBackoff
		r.mu.Lock()
		r.sess = sess
		r.mu.Unlock()
		r.campaign(ctx, sess)
		r.mu.Lock()
		r.sess = nil
		r.mu.Unlock()
		if ctx.Err() != nil {
			// Revoke: the election key and the counts go at once, and
			// another replica leads without waiting for the TTL.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_, _ = c.Revoke(rctx, sess.Lease())
			cancel()
			sess.Orphan()
			return
		}
		r.log.Warn("rollout session lost (etcd did not renew its lease in time); campaigning again under a new one", "node_id", r.node)
		sleep(ctx, minBackoff)
	}
}

// campaign runs for the leadership under sess until the session ends or
// ctx does; a term that ends while the session lives (its key vanished)
// is followed by a new campaign.
func (r *Rollouts) campaign(ctx context.Context, sess *concurrency.Session) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	e := concurrency.NewElection(sess, r.keys.RolloutElection())
	backoff := minBackoff
	for cctx.Err() == nil {
		if err := e.Campaign(cctx, r.node); err != nil {
			if cctx.Err() == nil {
				r.log.Debug("rollout election: campaign failed", "error", err)
				backoff = sleep(cctx, backoff)
			}
			continue
		}
		backoff = minBackoff
		tctx, tcancel := context.WithCancel(cctx)
		t := &term{ctx: tctx, cancel: tcancel, key: e.Key(), rev: e.Rev()}
		r.mu.Lock()
		r.term, r.leader = t, r.node
		r.mu.Unlock()
		r.m.leader.Set(1)
		r.m.elected.Inc()
		r.log.Info("leading the fleet's rollouts: this replica judges and moves them", "node_id", r.node, "election_key", t.key, "revision", t.rev)
		<-tctx.Done()
		r.m.leader.Set(0)
		r.mu.Lock()
		r.term = nil
		if r.leader == r.node {
			r.leader = ""
		}
		r.mu.Unlock()
		why := t.why
		if why == "" {
			why = "the session ended (its lease was not renewed in time, or the process is stopping)"
		}
		if ctx.Err() == nil {
			r.log.Warn("no longer leading the fleet's rollouts: deciding nothing more", "node_id", r.node, "reason", why)
		}
	}
}

// endTerm ends this replica's leadership (its election key is gone); the
// campaign starts again if the session lives.
func (r *Rollouts) endTerm(why string) {
	r.mu.Lock()
	t := r.term
	r.mu.Unlock()
	if t != nil {
		t.end(why)
	}
}

// onLeader takes the election's first candidate (nil: none) as of rev:
// the leader. A leader that is not the first candidate at a revision past
// its creation has lost the election (its key was deleted: no key created
// later can come first).
func (r *Rollouts) onLeader(first *mvccpb.KeyValue, rev int64) {
	r.mu.Lock()
	t := r.term
	switch {
	case first != nil:
		r.leader = string(first.Value)
	case t == nil:
		r.leader = ""
	}
	r.mu.Unlock()
	if t != nil && rev >= t.rev && (first == nil || string(first.Key) != t.key) {
		t.end("its election key was deleted")
	}
}

// followLeader keeps the leader (and the end of this replica's term) in
// step with the election. It reads the first candidate (the lowest create
// revision) and watches that key alone until it is deleted, then reads
// again; with no candidate it watches the prefix for the first. Each
// replica so gets one event per change of leader, where watching the
// whole prefix would bring every replica every candidate's key: N² events
// when N replicas start or reconnect at once (a million for a fleet of a
// thousand).
func (r *Rollouts) followLeader(ctx context.Context) {
	prefix := r.keys.RolloutElection() + "/"
	backoff := minBackoff
	for ctx.Err() == nil {
		c := r.src.client.Load()
		if c == nil {
			backoff = sleep(ctx, backoff)
			continue
		}
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		resp, err := c.Get(rctx, prefix, clientv3.WithFirstCreate()...)
		cancel()
		if err != nil {
			r.log.Debug("etcd: cannot read the rollout election yet", "error", err)
			backoff = sleep(ctx, backoff)
			continue
		}
		var first *mvccpb.KeyValue
		key, opts := prefix, []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision + 1)}
		if len(resp.Kvs) > 0 {
			first = resp.Kvs[0]
			key, opts = string(first.Key), []clientv3.OpOption{clientv3.WithRev(resp.Header.Revision + 1)}
		}
		r.onLeader(first, resp.Header.Revision)
		moved := false
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range c.Watch(wctx, key, opts...) {
			if wr.Err() != nil || wr.Canceled || wr.CompactRevision != 0 {
				break
			}
			backoff = minBackoff
			for _, ev := range wr.Events {
				// The first candidate's key deleted, or a first candidate.
				moved = moved || (first == nil) == (ev.Type == mvccpb.PUT)
			}
			if moved {
				break
			}
		}
		wcancel()
		if ctx.Err() == nil && !moved {
			backoff = sleep(ctx, backoff)
		}
	}
}

// --- StateStore ---

// Load implements rollout.StateStore: every state under rollouts/. An
// error wraps store.ErrUnavailable when etcd does not answer; a key that
// cannot be read is left out and named in a *rollout.UnreadableError.
func (r *Rollouts) Load(ctx context.Context) (map[string]rollout.State, error) {
	c := r.src.client.Load()
	if c == nil {
		return nil, errUnavailable("not connected")
	}
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
	defer cancel()
	resp, err := c.Get(rctx, r.keys.Rollouts(), clientv3.WithPrefix())
	if err != nil {
		return nil, errUnavailable("read " + r.keys.Rollouts() + ": " + trimErr(err))
	}
	out := make(map[string]rollout.State, len(resp.Kvs))
	var bad map[string]error
	for _, kv := range resp.Kvs {
		st, err := r.decodeState(kv)
		if err != nil {
			// One unreadable key must not hide the others (nor stop a
			// replica from starting): skipped and named.
			if bad == nil {
				bad = map[string]error{}
			}
			bad[strings.TrimPrefix(string(kv.Key), r.keys.Rollouts())] = err
			continue
		}
		out[st.Service] = st
	}
	if bad != nil {
		return out, &rollout.UnreadableError{States: bad}
	}
	return out, nil
}

// maxStateBytes caps a stored rollout state (32 transitions with their
// verdicts are a few KB).
const maxStateBytes = 1 << 20

func (r *Rollouts) decodeState(kv *mvccpb.KeyValue) (rollout.State, error) {
	key := string(kv.Key)
	name := strings.TrimPrefix(key, r.keys.Rollouts())
	var st rollout.State
	if len(kv.Value) > maxStateBytes {
		return st, fmt.Errorf("etcd %s: larger than %d bytes", key, maxStateBytes)
	}
	if err := json.Unmarshal(kv.Value, &st); err != nil {
		return st, fmt.Errorf("etcd %s: %w", key, err)
	}
	if !slices.Contains(rollout.Phases(), st.Phase) {
		return st, fmt.Errorf("etcd %s: unknown phase %q", key, st.Phase)
	}
	r.src.notes.Note(r.log, "rollout state", key, compat.Unknown(kv.Value, &st))
	st.Service, st.Revision = name, kv.ModRevision
	return st, nil
}

// Save implements rollout.StateStore: a transaction that writes s only if
// rollouts/<service> is still at s.Revision (0: absent) and, when ctx is
// the decision loop's, this replica still holds its election key.
func (r *Rollouts) Save(ctx context.Context, s rollout.State) (rollout.State, error) {
	c := r.src.client.Load()
	if c == nil || !r.src.conn.Load().connected {
		return rollout.State{}, errUnavailable("not connected; the rollout state was not saved")
	}
	if f := stateFeature(s); f != "" {
		// An older replica cannot read (waiting) or would misread
		// (shadow) this state: it stays where it is until they are gone.
		if err := r.src.requireFeature(ctx, f); err != nil {
			return rollout.State{}, fmt.Errorf("rollout state of %q not saved: %w", s.Service, err)
		}
	}
	val, err := json.Marshal(s)
	if err != nil {
		return rollout.State{}, fmt.Errorf("rollout state of %q: %w", s.Service, err)
	}
	key := r.keys.Rollout(s.Service)
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", s.Revision)}, fence(ctx)...)
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
	defer cancel()
	resp, err := c.Txn(wctx).If(cmps...).Then(clientv3.OpPut(key, string(val))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return rollout.State{}, errUnavailable("write " + key + " (outcome unknown): " + trimErr(err))
	}
	if !resp.Succeeded {
		r.m.conflicts.Inc()
		cur := modRev(firstKV(resp.Responses[0].GetResponseRange().Kvs))
		if cur != s.Revision {
			return rollout.State{}, fmt.Errorf("etcd %s is at revision %d, not %d: %w", key, cur, s.Revision, rollout.ErrStale)
		}
		r.endTerm("a write found its election key gone")
		return rollout.State{}, fmt.Errorf("etcd %s: this replica no longer leads: %w", key, rollout.ErrStale)
	}
	s.Revision = resp.Header.Revision
	return s, nil
}

// onStates passes the changed states to the Manager.
func (r *Rollouts) onStates(kvs map[string]*mvccpb.KeyValue, _ int64, changed []string) {
	obs := r.observe.Load()
	if obs == nil {
		return
	}
	for _, key := range changed {
		name := strings.TrimPrefix(key, r.keys.Rollouts())
		if name == "" || strings.Contains(name, "/") {
			continue
		}
		kv := kvs[key]
		if kv == nil {
			(*obs)(rollout.State{Service: name, Phase: rollout.Idle})
			continue
		}
		st, err := r.decodeState(kv)
		if err != nil {
			r.log.Error("rollout state in etcd unreadable; ignoring it", "key", key, "error", err)
			continue
		}
		(*obs)(st)
	}
}

// --- Mutator ---

// SetWeights implements rollout.Mutator through the Source.
func (r *Rollouts) SetWeights(ctx context.Context, service string, w split.Weights, actor string) (store.Change, error) {
	return r.src.SetWeights(ctx, service, w, actor)
}

// SetStateWeights implements rollout.StateMutator: the Source's write,
// on the condition that rollouts/<service> is still at st.Revision (and
// the leadership of ctx holds).
func (r *Rollouts) SetStateWeights(ctx context.Context, st rollout.State, w split.Weights) (store.Change, error) {
	f := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(r.keys.Rollout(st.Service)), "=", st.Revision)}, fence(ctx)...)
	return r.src.mutate(ctx, st.Service, rollout.Actor, f, setWeights(st.Service, w))
}

// --- following a prefix ---

// mirror keeps a copy of the keys under prefix: a read, then a watch from
// the next revision; when the watch ends (an error, a compaction, a lost
// leader) everything is read again. on gets the copy, its revision and the
// keys that changed (deleted ones are absent from the copy).
func (r *Rollouts) mirror(ctx context.Context, prefix string, on func(kvs map[string]*mvccpb.KeyValue, rev int64, changed []string)) {
	kvs := map[string]*mvccpb.KeyValue{}
	backoff := minBackoff
	for ctx.Err() == nil {
		c := r.src.client.Load()
		if c == nil {
			backoff = sleep(ctx, backoff)
			continue
		}
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		resp, err := c.Get(rctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			r.log.Debug("etcd: cannot read yet", "prefix", prefix, "error", err)
			backoff = sleep(ctx, backoff)
			continue
		}
		next := make(map[string]*mvccpb.KeyValue, len(resp.Kvs))
		var changed []string
		for _, kv := range resp.Kvs {
			key := string(kv.Key)
			next[key] = kv
			if old := kvs[key]; old == nil || old.ModRevision != kv.ModRevision {
				changed = append(changed, key)
			}
		}
		for key := range kvs {
			if next[key] == nil {
				changed = append(changed, key)
			}
		}
		kvs = next
		on(kvs, resp.Header.Revision, changed)
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range c.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil || wr.Canceled || wr.CompactRevision != 0 {
				break
			}
			backoff = minBackoff
			if len(wr.Events) == 0 {
				continue
			}
			changed = changed[:0]
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				if ev.Type == mvccpb.DELETE {
					delete(kvs, key)
				} else {
					kvs[key] = ev.Kv
				}
				changed = append(changed, key)
			}
			on(kvs, wr.Events[len(wr.Events)-1].Kv.ModRevision, changed)
		}
		wcancel()
		if ctx.Err() == nil {
			backoff = sleep(ctx, backoff)
		}
	}
}
