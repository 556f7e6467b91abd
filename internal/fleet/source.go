package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/trafficsplit/splitter/internal/compat"
	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/fsutil"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// Timing of the background loops.
const (
	// requestTimeout bounds the attempts of one operation on etcd (read,
	// write); each attempt gets attemptTimeout (attempt.go).
	requestTimeout = 3 * time.Second
	// replicaTTL is the lease of a replica record: a replica that dies
	// leaves /v1/fleet within it.
	replicaTTL = 10
	// A replica's record is written at most every recordEvery, a random
	// part of recordSpread after the change (GET /v1/fleet lags by as
	// much): a thousand replicas do not write a thousand records at the
	// moment of each change.
	recordEvery  = time.Second
	recordSpread = 500 * time.Millisecond
	// minBackoff and maxBackoff bound the retry delay of the watch loop.
	minBackoff = 100 * time.Millisecond
	maxBackoff = time.Second
)

// Options configure a Source.
type Options struct {
	Client    ClientOptions
	Prefix    string
	NodeID    string
	CacheFile string // "": no cache
	Store     *store.Store
	Logger    *slog.Logger // nil: discard
	// Metrics receives the fleet metrics; nil: none.
	Metrics *Metrics
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
	// FollowInterval sets the cadence of the liveness checks
	// (etcd_follow_interval, follow.go); 0: DefaultFollowInterval.
	FollowInterval time.Duration
}

// Source keeps a store in step with etcd. Build it with New, Start it,
// then Run it; its mutation methods implement admin.Mutator.
type Source struct {
	opts    Options
	keys    Keys
	store   *store.Store
	log     *slog.Logger
	m       *Metrics
	now     func() time.Time
	version string

	client atomic.Pointer[clientv3.Client]
	// members drops the connections of a member that hangs (members.go).
	members *members
	// watchers are the watch's own clients, one per member, made when the
	// watch first goes there and kept (a watch that stalls moves to the
	// next member, whatever round robin would pick, without a new client
	// each time); watchEndpoint is the member in use, an index into the
	// endpoints. Only the watch loop uses them.
	watchers      map[int]*clientv3.Client
	watchEndpoint int
	// pinned is the watch's client for the other loops: a request's first
	// attempt goes to the member this replica's watch follows, which has
	// just proved it answers (tryOn).
	pinned atomic.Pointer[clientv3.Client]
	// follow is what the watch has proved (follow.go); events is this
	// replica's log of what it applied and of its connection.
	follow follow
	events *eventLog

	// mu guards the mirror and the apply state: the watch loop and Reload
	// both apply.
	mu        sync.Mutex
	kvs       map[string]*mvccpb.KeyValue // config and overrides/, as of rev
	rev       int64                       // revision of the state in force
	clusterID uint64
	good      *goodConfig // last configuration that compiled
	rejected  *rejection  // the document in etcd, when it is not in force
	dropped   map[string]int64
	cleanup   map[string]cleanupOp
	// live: rev was read from etcd (cluster clusterID) by this process,
	// not taken from the cache file, so a read at a lower revision of the
	// same cluster is older than the state in force.
	live bool
	// mirrorDrops are the runtime mirror records that do not apply, by
	// service, as of their mod revision (logged once each).
	mirrorDrops map[string]int64
	// routesDropped: the runtime routes not in force, and the revision of
	// their record when that was logged (routes.go).
	routesDropped map[string]int64
	// mirrorRoutesDropped: the same for the runtime mirror routes
	// (mirrorroutes.go).
	mirrorRoutesDropped map[string]int64

	// applied is closed and replaced after every apply; appliedRev is the
	// revision then in force. Waiters read both under amu.
	amu        sync.Mutex
	applied    chan struct{}
	appliedRev int64
	appliedAt  time.Time

	conn atomic.Pointer[connState]
	// report wakes the reporter (replica record, cache file, cleanup).
	report chan struct{}
	// startedFrom says where the first state came from: etcd or cache.
	startedFrom atomic.Value
	// rollouts, when set, names the rollout leader in GET /v1/fleet.
	rollouts atomic.Pointer[Rollouts]
	// notes: the records with fields this build does not know, logged
	// once each (compat.go).
	notes compat.Notes
	// afterRead, when set (tests), runs between a full read's answer and
	// its apply: the window in which a watch event can overtake it.
	afterRead atomic.Pointer[func(reason string)]
}

type goodConfig struct {
	cfg *split.Config
	raw []byte
	sha string
}

type rejection struct {
	sha string
	err error
	at  time.Time
}

// cleanupOp deletes an override that the configuration made stale, if
// neither the override nor the configuration changed since.
type cleanupOp struct {
	overrideRev, configRev int64
}

type connState struct {
	connected bool
	since     time.Time
}

// New returns a Source; nothing talks to etcd before Start.
func New(o Options) *Source {
	s := &Source{
		opts:    o,
		keys:    Keys{Prefix: o.Prefix},
		store:   o.Store,
		log:     o.Logger,
		m:       o.Metrics,
		now:     o.Now,
		version: buildVersion(),
		kvs:     map[string]*mvccpb.KeyValue{},
		dropped: map[string]int64{},
		cleanup: map[string]cleanupOp{},
		applied: make(chan struct{}),
		report:  make(chan struct{}, 1),
		events:  newEventLog(),
		// Replicas spread their watches over the members.
		watchEndpoint: rand.N(max(len(o.Client.Endpoints), 1)),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.m == nil {
		s.m = NewMetrics(nil)
	}
	s.follow.c = newCadence(o.FollowInterval)
	s.members = newMembers(o.Client, s.log, s.m, s.follow.c.followBound)
	start := &connState{since: s.now()}
	s.conn.Store(start)
	s.m.setConnected(false, start.since) // until the first answer from etcd
	s.startedFrom.Store("")
	return s
}

// Start loads the first state: from etcd (one attempt, bounded by the
// dial timeout), else from the cache file. It returns an error when
// neither gives a valid configuration; the Source can still Run, and
// applies one as soon as etcd has it.
func (s *Source) Start(ctx context.Context) error {
	timeout := s.opts.Client.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	cached, cacheErr := s.readCache()
	if cacheErr != nil {
		s.log.Warn("etcd_cache_file unusable; ignoring it", "path", s.opts.CacheFile, "error", cacheErr)
	}
	if cached != nil {
		// The cached document is the last good one, whatever etcd holds
		// now: if etcd's is invalid, it is what keeps serving.
		if err := s.adoptGood([]byte(cached.Config)); err != nil {
			s.log.Warn("etcd_cache_file holds an invalid document; ignoring it", "path", s.opts.CacheFile, "error", err)
			cached = nil
		}
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	err := s.connect(sctx)
	for err == nil {
		// Each read gets requestTimeout; a busy etcd may need several
		// within the dial timeout.
		if err = s.fullRead(sctx, "start"); err == nil || sctx.Err() != nil {
			break
		}
		sleep(sctx, minBackoff)
	}
	cancel()
	if err == nil {
		s.startedFrom.Store("etcd")
		if s.store.Load() == nil {
			return s.noConfigError()
		}
		return nil
	}
	s.setConnected(false, err.Error())
	if cached == nil {
		return fmt.Errorf("etcd_endpoints: cannot read the fleet state from %s (%w), and no etcd_cache_file to start from",
			strings.Join(s.opts.Client.Endpoints, ","), err)
	}
	s.mu.Lock()
	s.kvs[s.keys.Config()] = &mvccpb.KeyValue{Key: []byte(s.keys.Config()), Value: []byte(cached.Config)}
	for key, raw := range cached.Overrides {
		s.kvs[key] = &mvccpb.KeyValue{Key: []byte(key), Value: []byte(raw)}
	}
	for key, raw := range cached.Routes {
		s.kvs[key] = &mvccpb.KeyValue{Key: []byte(key), Value: []byte(raw)}
	}
	s.clusterID = cached.ClusterID
	applyErr := s.applyLocked(cached.Revision, nil)
	s.mu.Unlock()
	if applyErr != nil {
		return fmt.Errorf("etcd_cache_file %s: %w", s.opts.CacheFile, applyErr)
	}
	s.startedFrom.Store("cache")
	s.log.Warn("etcd unreachable at start: serving the cached fleet state until it is back",
		"cache_file", s.opts.CacheFile, "revision", cached.Revision, "written_at", cached.WrittenAt, "error", err)
	return nil
}

func (s *Source) noConfigError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rejected != nil {
		return s.rejected.err
	}
	return fmt.Errorf("etcd %s: no configuration (push one with `splitter config push FILE`)", s.keys.Config())
}

// connect creates the client if there is none. With auth this talks to
// etcd, so it may fail; the run loop retries.
func (s *Source) connect(ctx context.Context) error {
	if s.client.Load() != nil {
		return nil
	}
	c, err := newClient(s.opts.Client, s.members.dialOptions()...)
	if err != nil {
		return err
	}
	if !s.client.CompareAndSwap(nil, c) {
		c.Close()
	}
	return ctx.Err()
}

// Close releases the client.
func (s *Source) Close() error {
	var err error
	if c := s.client.Swap(nil); c != nil {
		err = c.Close()
	}
	s.members.close()
	return err
}

// watchClient returns the watch's client, on the next member when move is
// set (or when there is none yet).
func (s *Source) watchClient(move bool) (*clientv3.Client, string, error) {
	eps := s.opts.Client.Endpoints
	if move {
		s.watchEndpoint = (s.watchEndpoint + 1) % len(eps)
	}
	c := s.watchers[s.watchEndpoint]
	if c == nil {
		o := s.opts.Client
		o.Endpoints = []string{eps[s.watchEndpoint]}
		var err error
		if c, err = newClient(o, s.members.dialOptions()...); err != nil {
			s.pinned.Store(nil)
			return nil, "", err
		}
		if s.watchers == nil {
			s.watchers = map[int]*clientv3.Client{}
		}
		s.watchers[s.watchEndpoint] = c
	}
	s.pinned.Store(c)
	return c, hostPort(eps[s.watchEndpoint]), nil
}

// hostPort is an endpoint as gRPC dials it (host:port; unix: paths as
// they are).
func hostPort(ep string) string {
	if strings.HasPrefix(ep, "unix") {
		return ep
	}
	if _, rest, ok := strings.Cut(ep, "://"); ok {
		host, _, _ := strings.Cut(rest, "/")
		return host
	}
	return ep
}

// fullRead reads config and overrides/ at one revision and applies them.
func (s *Source) fullRead(ctx context.Context, reason string) error {
	c := s.client.Load()
	if c == nil {
		return errUnavailable("not connected")
	}
	start, end := s.keys.stateRange()
	var resp *clientv3.GetResponse
	err := s.try(ctx, func(actx context.Context, c *clientv3.Client) error {
		r, err := c.Get(clientv3.WithRequireLeader(actx), start, clientv3.WithRange(end))
		resp = r
		return err
	}, nil)
	if err != nil {
		return fmt.Errorf("etcd: read %s: %w", start, err)
	}
	s.m.resync(reason)
	if hook := s.afterRead.Load(); hook != nil {
		(*hook)(reason)
	}
	// The read proves this replica up to date only once it is in force
	// (or found not newer than what is): connected never names a
	// revision the store has not applied yet. Deferred first, so it runs
	// after the unlock below.
	defer func() {
		s.follow.reached(s.now(), resp.Header.Revision)
		s.refreshConnected()
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	rev := resp.Header.Revision
	if s.live && resp.Header.ClusterId == s.clusterID && rev <= s.rev {
		// The watch applied a newer revision while this read was on its
		// way (a reload racing a change): applying the read would put
		// older keys in force for good, as the watch does not send those
		// events again. The state in force is as new as the read, or
		// newer: the read is done.
		s.log.Info("fleet state read from etcd is not newer than the state in force; keeping that",
			"reason", reason, "read_revision", rev, "applied_revision", s.rev)
		return nil
	}
	s.kvs = make(map[string]*mvccpb.KeyValue, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		s.kvs[string(kv.Key)] = kv
	}
	s.clusterID = resp.Header.ClusterId
	s.log.Info("fleet state read from etcd", "reason", reason, "revision", rev, "keys", len(resp.Kvs))
	if err := s.applyLocked(rev, nil); err != nil {
		return err
	}
	s.live = true
	return nil
}

// Reload re-reads everything from etcd (SIGHUP, POST /v1/reload).
func (s *Source) Reload(ctx context.Context) (string, error) {
	before := s.store.Load()
	if err := s.connect(ctx); err != nil {
		return "error", err
	}
	if err := s.fullRead(ctx, "reload"); err != nil {
		return "error", err
	}
	s.mu.Lock()
	rej := s.rejected
	s.mu.Unlock()
	if rej != nil {
		return "error", rej.err
	}
	after := s.store.Load()
	if before != nil && after != nil && StateSHA256(before) == StateSHA256(after) {
		return "unchanged", nil
	}
	return "success", nil
}

// adoptGood parses and compiles raw and makes it the last good document.
func (s *Source) adoptGood(raw []byte) error {
	cfg, err := config.Parse(raw)
	if err != nil {
		return err
	}
	if _, err := split.Compile(cfg); err != nil {
		return err
	}
	s.mu.Lock()
	s.good = &goodConfig{cfg: cfg, raw: raw, sha: config.SHA256(raw)}
	s.mu.Unlock()
	return nil
}

// applyLocked applies the mirror as of rev; s.mu is held. setAts are the
// write times of the override records this revision brought, for the
// propagation histogram. It returns an error only when nothing could be
// applied (no valid configuration ever).
func (s *Source) applyLocked(rev int64, setAts []time.Time) error {
	cfgKey := s.keys.Config()
	kv := s.kvs[cfgKey]
	var docErr error
	var docSHA string
	cfgModRev := int64(0)
	switch {
	case kv == nil:
		docErr = fmt.Errorf("etcd %s: no configuration (push one with `splitter config push FILE`)", cfgKey)
		docSHA = "absent"
	default:
		cfgModRev = kv.ModRevision
		docSHA = config.SHA256(kv.Value)
	}

	overrides := map[string]store.Override{}
	badRecords := map[string]string{}
	for key, okv := range s.kvs {
		svc := s.keys.service(key)
		if svc == "" {
			continue
		}
		rec, err := decodeOverride(okv.Value)
		if err != nil {
			badRecords[svc] = "invalid override record: " + err.Error()
			continue
		}
		s.notes.Note(s.log, "override record", key, rec.unknown)
		overrides[svc] = rec.override()
	}

	// The configuration revision decided on: the document's, whether it
	// is put in force or rejected; a deleted document is decided on as of
	// rev (the last good one serves).
	at := store.Revisions{State: rev, Config: cfgModRev}
	if kv == nil {
		at.Config = rev
	}
	mirrors, badMirrors := s.mirrorsLocked()
	routes, badRoutes := s.routesLocked()
	mirrorRoutes, badMirrorRoutes := s.mirrorRoutesLocked()
	var droppedMirrors, droppedRoutes, droppedMirrorRoutes map[string]string
	apply := func(g *goodConfig) (*store.Snapshot, map[string]string, error) {
		snap, drops, err := s.store.ApplySharedRuntime(g.cfg, g.sha, "etcd "+cfgKey, at,
			store.SharedState{Overrides: overrides, Mirrors: mirrors, Routes: routes, MirrorRoutes: mirrorRoutes})
		if err == nil {
			droppedMirrors, droppedRoutes, droppedMirrorRoutes = drops.Mirrors, drops.Routes, drops.MirrorRoutes
		}
		return snap, drops.Overrides, err
	}
	var snap *store.Snapshot
	var dropped map[string]string
	inForce := false // etcd's document is the one applied
	if docErr == nil {
		if s.good != nil && s.good.sha == docSHA {
			var err error
			if snap, dropped, err = apply(s.good); err != nil {
				docErr = fmt.Errorf("etcd %s (revision %d): %w", cfgKey, cfgModRev, err)
			} else {
				inForce = true
			}
		} else if s.rejected != nil && s.rejected.sha == docSHA {
			docErr = s.rejected.err // known bad: not parsed again
		} else if cfg, err := config.Parse(kv.Value); err != nil {
			docErr = fmt.Errorf("etcd %s (revision %d): %w", cfgKey, cfgModRev, err)
		} else {
			g := &goodConfig{cfg: cfg, raw: kv.Value, sha: docSHA}
			if snap, dropped, err = apply(g); err != nil {
				docErr = fmt.Errorf("etcd %s (revision %d): %w", cfgKey, cfgModRev, err)
			} else {
				s.good, inForce = g, true
			}
		}
	}
	if docErr != nil {
		if s.rejected == nil || s.rejected.sha != docSHA {
			s.rejected = &rejection{sha: docSHA, err: docErr, at: s.now()}
			s.m.rejectedDocs.Inc()
			s.log.Error("fleet configuration rejected; the last good one keeps serving", "revision", rev, "error", docErr)
		}
		s.m.rejectedNow.Set(1)
		s.store.RecordReloadError(docErr)
		if s.good != nil {
			var err error
			if snap, dropped, err = apply(s.good); err != nil {
				// The last good document compiled before; only a changed
				// header setting could fail it now. Keep what serves.
				s.log.Error("last good fleet configuration no longer applies", "error", err)
			}
		}
	} else {
		if s.rejected != nil {
			s.log.Info("fleet configuration in force again", "revision", rev, "sha256", docSHA)
		}
		s.rejected = nil
		s.m.rejectedNow.Set(0)
		s.store.RecordReloadError(nil)
	}
	for svc, reason := range badRecords {
		if dropped == nil {
			dropped = map[string]string{}
		}
		dropped[svc] = reason
	}
	s.noteDropped(dropped, inForce, cfgModRev)
	s.noteDroppedMirrors(droppedMirrors, badMirrors)
	// ApplySharedRuntime names a route "service/name": key them as etcd does.
	for name, reason := range droppedRoutes {
		badRoutes[s.keys.LiveRoutes()+name] = reason
	}
	s.noteRoutesDropped(badRoutes)
	s.noteMirrorRoutesDropped(droppedMirrorRoutes, badMirrorRoutes)
	if snap == nil && s.store.Load() == nil {
		return docErr
	}

	s.rev = rev
	s.m.appliedRevision.Set(float64(rev))
	now := s.now()
	for _, at := range setAts {
		if !at.IsZero() {
			s.m.propagation.Observe(max(now.Sub(at).Seconds(), 0))
		}
	}
	s.amu.Lock()
	s.appliedRev, s.appliedAt = rev, now
	close(s.applied)
	s.applied = make(chan struct{})
	s.amu.Unlock()
	s.logApplied(rev, now)
	s.wake()
	return nil
}

// logApplied adds the state now in force to the event log; s.mu is held.
func (s *Source) logApplied(rev int64, at time.Time) {
	snap := s.store.Load()
	if snap == nil {
		return
	}
	e := Event{At: at, Kind: "applied", Revision: rev, SHA256: snap.SHA256, StateSHA256: StateSHA256(snap)}
	if len(snap.Overrides) > 0 {
		e.Overrides = make(map[string]string, len(snap.Overrides))
		for svc, w := range snap.Overrides {
			e.Overrides[svc] = w.String()
		}
	}
	if s.rejected != nil {
		e.Rejected = s.rejected.err.Error()
	}
	s.events.add(e)
}

// noteDropped logs overrides that do not apply (once per record version)
// and schedules the deletion of those the configuration in force made
// stale; s.mu is held.
func (s *Source) noteDropped(dropped map[string]string, inForce bool, cfgModRev int64) {
	for svc := range s.dropped {
		if _, ok := dropped[svc]; !ok {
			delete(s.dropped, svc)
		}
	}
	for svc, reason := range dropped {
		key := s.keys.Override(svc)
		kv := s.kvs[key]
		if kv == nil {
			continue
		}
		if s.dropped[svc] != kv.ModRevision {
			s.dropped[svc] = kv.ModRevision
			s.log.Warn("override in etcd does not apply", "service", svc, "key", key, "reason", reason)
		}
		// Only etcd's own document may retire an override; one that is
		// stale against the last good document (etcd's is rejected) may
		// apply again once the document is fixed.
		if inForce && !strings.HasPrefix(reason, "invalid override record") {
			s.cleanup[key] = cleanupOp{overrideRev: kv.ModRevision, configRev: cfgModRev}
		}
	}
}

// wake asks the reporter to write the replica record and the cache.
func (s *Source) wake() {
	select {
	case s.report <- struct{}{}:
	default:
	}
}

// waitApplied blocks until the state in force is as of rev or later.
func (s *Source) waitApplied(ctx context.Context, rev int64) error {
	for {
		s.amu.Lock()
		cur, ch := s.appliedRev, s.applied
		s.amu.Unlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// AppliedRevision is the revision of the state in force.
func (s *Source) AppliedRevision() int64 {
	s.amu.Lock()
	defer s.amu.Unlock()
	return s.appliedRev
}

// refreshConnected sets the connection state from what the watch has
// proved now (follow.go) and returns it.
func (s *Source) refreshConnected() bool {
	now := s.now()
	up := s.follow.following(now)
	cause := ""
	if !up {
		if cause = s.follow.stalled(now); cause == "" {
			cause = "the watch has not caught up with etcd"
		}
	}
	s.setConnected(up, cause)
	return up
}

// setConnected records the connection state; a change is logged, added to
// the event log and exported with its time.
func (s *Source) setConnected(up bool, cause string) {
	cur := s.conn.Load()
	if cur.connected == up {
		return
	}
	next := &connState{connected: up, since: s.now()}
	if !s.conn.CompareAndSwap(cur, next) {
		return
	}
	s.m.setConnected(up, next.since)
	member := s.follow.watching()
	if up {
		s.events.add(Event{At: next.since, Kind: "connected", Member: member, Revision: s.AppliedRevision()})
		s.log.Info("etcd connected: following", "member", member, "endpoints", s.opts.Client.Endpoints)
	} else {
		s.events.add(Event{At: next.since, Kind: "disconnected", Member: member, Reason: cause, Revision: s.AppliedRevision()})
		s.log.Warn("etcd disconnected: deciding from the last good state until it is back",
			"endpoints", s.opts.Client.Endpoints, "error", cause)
	}
}

// Run keeps the store in step with etcd until ctx ends: it watches
// (resuming from the applied revision, reading everything again after a
// compaction), probes the connection, and keeps the replica record and the
// cache file current. It never gives up on etcd and returns nil when ctx
// ends.
func (s *Source) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { s.probeLoop(ctx) })
	wg.Go(func() { s.reportLoop(ctx) })
	s.watchLoop(ctx)
	wg.Wait()
	return nil
}

func (s *Source) watchLoop(ctx context.Context) {
	backoff := minBackoff
	needRead := s.startedFrom.Load() != "etcd" || s.store.Load() == nil
	var ended string // why the last watch ended
	for ctx.Err() == nil {
		if err := s.connect(ctx); err != nil {
			s.setConnected(false, err.Error())
			s.log.Debug("etcd: cannot connect yet", "error", err)
			backoff = sleep(ctx, backoff)
			continue
		}
		if needRead {
			// After a start from the cache, always a full read: the
			// cluster may be another one, whose revisions mean nothing
			// against the cached one.
			if err := s.fullRead(ctx, "resync"); err != nil {
				s.setConnected(false, err.Error())
				s.log.Debug("etcd: full read failed", "error", err)
				backoff = sleep(ctx, backoff)
				continue
			}
			needRead = false
		}
		var answered bool
		needRead, answered, ended = s.watch(ctx, strings.HasPrefix(ended, "stalled"))
		if ctx.Err() != nil {
			s.closeWatcher()
			return
		}
		s.m.watchRestarts.Inc()
		s.log.Info("etcd watch ended; starting again", "reason", ended, "full_read", needRead, "applied_revision", s.AppliedRevision())
		if answered || strings.HasPrefix(ended, "stalled") {
			// It worked for a while, or it already waited followBound:
			// start again at once, from the applied revision.
			backoff = minBackoff
		}
		backoff = sleep(ctx, backoff)
	}
	s.closeWatcher()
}

// closeWatcher closes the watch's clients.
func (s *Source) closeWatcher() {
	s.pinned.Store(nil)
	for i, c := range s.watchers {
		c.Close()
		delete(s.watchers, i)
	}
}

// sleep waits d (with jitter) or until ctx ends, and returns the next
// backoff.
func sleep(ctx context.Context, d time.Duration) time.Duration {
	j := d/2 + rand.N(d/2+1)
	t := time.NewTimer(j)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return min(d*2, maxBackoff)
}

// errStalled ends a watch that stopped following (follow.stalled).
type errStalled struct{ why string }

func (e errStalled) Error() string { return "stalled: " + e.why }

// watch follows the state range from the applied revision until the watch
// ends, on the next member when move is set; it says whether everything
// must be read again, whether the watch answered at all, and why it ended.
func (s *Source) watch(ctx context.Context, move bool) (needRead, answered bool, why string) {
	c, member, err := s.watchClient(move)
	if err != nil {
		return false, false, "stalled: no client for the next member: " + err.Error()
	}
	start, end := s.keys.stateRange()
	s.mu.Lock()
	// From the applied revision itself rather than the next one: etcd
	// answers a progress request only for a watch whose start is not past
	// its current revision, which the next one is for a replica that is
	// up to date. The event at the applied revision, if any, is skipped
	// below.
	from := max(s.rev, 1)
	cluster := s.clusterID
	s.mu.Unlock()

	// A watcher of its own, closed with everything it opened (a progress
	// request sent as a stream ends could otherwise leave one behind).
	w := clientv3.NewWatcher(c)
	defer w.Close()
	wctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(ctx))
	s.follow.started(s.now(), member)
	s.events.add(Event{At: s.now(), Kind: "watch", Revision: from, Member: member, Reason: "started"})
	var tending sync.WaitGroup
	defer func() {
		cancel(nil)
		tending.Wait()
		s.follow.ended()
		if ctx.Err() == nil {
			s.refreshConnected()
		}
	}()
	tending.Go(func() { s.tend(wctx, w, cancel) })

	for resp := range w.Watch(wctx, start, clientv3.WithRange(end), clientv3.WithRev(from), clientv3.WithCreatedNotify()) {
		if resp.CompactRevision != 0 {
			s.m.compactions.Inc()
			s.log.Warn("etcd compacted past the applied revision; reading everything again",
				"applied_revision", from, "compact_revision", resp.CompactRevision)
			return true, answered, "compacted"
		}
		if err := resp.Err(); err != nil {
			return false, answered, err.Error()
		}
		if resp.Canceled {
			return false, answered, "canceled"
		}
		if cluster != 0 && resp.Header.ClusterId != 0 && resp.Header.ClusterId != cluster {
			s.log.Warn("etcd cluster changed; reading everything again", "was", cluster, "now", resp.Header.ClusterId)
			return true, answered, "cluster changed"
		}
		answered = true
		switch {
		case resp.Created:
			// Alive; what it delivers comes after.
			s.follow.answered(s.now(), 0, false)
		case resp.IsProgressNotify():
			// Everything up to the member's revision was delivered.
			s.follow.answered(s.now(), resp.Header.Revision, true)
		}
		if len(resp.Events) == 0 {
			s.refreshConnected()
			continue
		}
		s.mu.Lock()
		var setAts []time.Time
		newer := false
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision <= s.rev {
				// Already applied: the event at the revision the watch
				// started from, or one a full read (POST /v1/reload)
				// applied while this response was on its way. Applying
				// it again would move keys, and the revision, backwards.
				continue
			}
			newer = true
			key := string(ev.Kv.Key)
			switch ev.Type {
			case mvccpb.PUT:
				s.kvs[key] = ev.Kv
				if s.keys.service(key) != "" {
					if rec, err := decodeOverride(ev.Kv.Value); err == nil {
						setAts = append(setAts, rec.SetAt)
					}
				}
			case mvccpb.DELETE:
				delete(s.kvs, key)
			}
		}
		rev := resp.Events[len(resp.Events)-1].Kv.ModRevision
		if newer {
			if err := s.applyLocked(rev, setAts); err != nil {
				s.log.Debug("nothing to apply yet", "revision", rev, "error", err)
			}
		}
		s.mu.Unlock()
		s.follow.answered(s.now(), rev, false)
		s.refreshConnected()
	}
	if ctx.Err() != nil {
		return false, answered, "stopped"
	}
	var st errStalled
	if errors.As(context.Cause(wctx), &st) {
		return false, answered, st.Error()
	}
	// A closed channel without a cancel (older servers, a lost leader):
	// start over, as after a compaction.
	return true, answered, "watch channel closed"
}

// tend asks the watch for progress every progressEvery and gives it up
// (cancel) when it stalls, suspecting its member.
func (s *Source) tend(wctx context.Context, w clientv3.Watcher, cancel context.CancelCauseFunc) {
	t := time.NewTicker(s.follow.c.progressEvery)
	defer t.Stop()
	for {
		select {
		case <-wctx.Done():
			return
		case <-t.C:
		}
		member := s.follow.watching()
		// Silent, but its member sends bytes (other answers, keep-alives):
		// slow, not gone. Starting the watch again would only load it
		// more; the replica says it is not following meanwhile.
		slow := s.follow.silentFor(s.now()) < s.follow.c.slowBound && s.members.heard(member, s.follow.c.followBound)
		if why := s.follow.stalled(s.now()); why != "" && !slow {
			s.m.watchStalls.Inc()
			s.follow.gaveUp()
			s.log.Warn("etcd watch stalled; starting it again on the next member", "member", member, "reason", why, "applied_revision", s.AppliedRevision())
			s.events.add(Event{At: s.now(), Kind: "watch", Member: member, Reason: "stalled: " + why})
			s.members.suspect(member, "the watch stalled: "+why)
			cancel(errStalled{why})
			return
		}
		s.refreshConnected()
		pctx, pcancel := context.WithTimeout(wctx, s.follow.c.progressEvery)
		if err := w.RequestProgress(pctx); err != nil && wctx.Err() == nil {
			s.log.Debug("etcd: progress request not sent", "error", err)
		}
		pcancel()
	}
}

// probeLoop learns the cluster's revision every probeInterval with a
// linearizable read, which the watch must reach within followBound
// (follow.go); a read that gets no answer makes its member suspect.
func (s *Source) probeLoop(ctx context.Context) {
	t := time.NewTicker(s.follow.c.probeInterval)
	defer t.Stop()
	var busy atomic.Bool
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.refreshConnected()
		c := s.client.Load()
		if c == nil || !busy.CompareAndSwap(false, true) {
			continue
		}
		wg.Go(func() {
			defer busy.Store(false)
			at := s.now()
			var rev int64
			err := s.tryOn(ctx, false, func(actx context.Context, c *clientv3.Client) error {
				resp, err := c.Get(clientv3.WithRequireLeader(actx), s.keys.Config(), clientv3.WithCountOnly())
				if err == nil {
					rev = resp.Header.Revision
				}
				return err
			}, func(attempt, error) bool { return false })
			if err == nil {
				s.follow.learnt(rev, at)
			}
		})
	}
}

// reportLoop writes the replica record (under a lease) and the cache file
// after changes, deletes stale overrides, and renews the record when the
// lease was lost.
func (s *Source) reportLoop(ctx context.Context) {
	var sess *concurrency.Session
	defer func() {
		if sess != nil {
			// Revoke, so the record leaves /v1/fleet at once; bounded,
			// etcd may be gone.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			if c := s.client.Load(); c != nil {
				_, _ = c.Revoke(rctx, sess.Lease())
			}
			cancel()
			sess.Orphan()
		}
	}()
	t := time.NewTicker(s.follow.c.probeInterval)
	defer t.Stop()
	var written int64 = -1 // revision of the record written
	var cached int64 = -1  // revision of the cache file written
	var wrote time.Time    // when the record was last written
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.report:
		case <-t.C:
		}
		if written >= 0 {
			// Every replica writes its record after a change: N writes
			// per change, just as the next one is made. Spread them
			// (a random part of recordSpread) and write each replica's
			// at most every recordEvery, with the state as it is then.
			d := max(recordEvery-time.Since(wrote), 0) + rand.N(recordSpread)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		rev := s.AppliedRevision()
		if rev > 0 && rev != cached && s.opts.CacheFile != "" {
			if err := s.writeCache(); err != nil {
				s.log.Error("cannot write etcd_cache_file", "path", s.opts.CacheFile, "error", err)
			} else {
				cached = rev
			}
		}
		c := s.client.Load()
		if c == nil || !s.conn.Load().connected {
			continue
		}
		s.runCleanup(ctx, c)
		if sess != nil {
			select {
			case <-sess.Done():
				s.log.Warn("replica lease lost; registering again", "node_id", s.opts.NodeID)
				sess, written = nil, -1
			default:
			}
		}
		if sess == nil {
			// The grant is bounded here; NewSession would wait as long as
			// ctx for an etcd that went away meanwhile.
			gctx, cancel := context.WithTimeout(ctx, requestTimeout)
			lease, err := c.Grant(gctx, replicaTTL)
			cancel()
			if err != nil {
				s.log.Debug("cannot create the replica lease yet", "error", err)
				continue
			}
			if sess, err = concurrency.NewSession(c, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx)); err != nil {
				s.log.Debug("cannot keep the replica lease alive", "error", err)
				sess = nil
				continue
			}
		}
		if rev == written && written >= 0 {
			continue
		}
		rec, err := json.Marshal(s.Record())
		if err != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err = c.Put(pctx, s.keys.Replica(s.opts.NodeID), string(rec), clientv3.WithLease(sess.Lease()))
		cancel()
		if err != nil {
			s.log.Debug("cannot write the replica record yet", "error", err)
			continue
		}
		written, wrote = rev, time.Now()
	}
}

// runCleanup deletes overrides that the configuration in force made
// stale, each only if neither it nor the configuration changed since (so
// a replica that lags never deletes a newer override).
func (s *Source) runCleanup(ctx context.Context, c *clientv3.Client) {
	s.mu.Lock()
	ops := s.cleanup
	s.cleanup = map[string]cleanupOp{}
	s.mu.Unlock()
	for key, op := range ops {
		cctx, cancel := context.WithTimeout(ctx, requestTimeout)
		resp, err := c.Txn(cctx).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", op.overrideRev),
			clientv3.Compare(clientv3.ModRevision(s.keys.Config()), "=", op.configRev),
		).Then(clientv3.OpDelete(key)).Commit()
		cancel()
		if err == nil && resp.Succeeded {
			s.log.Info("stale override deleted from etcd: the configuration changed the service's weights", "key", key)
		}
	}
}

// Record is this replica's record as it would be written now.
func (s *Source) Record() ReplicaRecord {
	snap := s.store.Load()
	r := ReplicaRecord{NodeID: s.opts.NodeID, Version: s.version, Features: Features()}
	if snap != nil {
		r.Revision, r.SHA256, r.StateSHA256 = snap.Revision, snap.SHA256, StateSHA256(snap)
	}
	s.amu.Lock()
	r.AppliedAt = s.appliedAt
	s.amu.Unlock()
	s.mu.Lock()
	if s.rejected != nil {
		at := s.rejected.at
		r.Error, r.ErrorAt = s.rejected.err.Error(), &at
	}
	s.mu.Unlock()
	return r
}

// StateSHA256 identifies what a replica decides with: the document's
// sha256 and the overrides in force.
func StateSHA256(snap *store.Snapshot) string {
	h := sha256.New()
	h.Write([]byte(snap.SHA256))
	names := make([]string, 0, len(snap.Overrides))
	for n := range snap.Overrides {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(h, "\n%s=%s", n, snap.Overrides[n].String())
		if o := snap.Owners[n]; o != "" {
			fmt.Fprintf(h, " owner=%s", o)
		}
	}
	// Runtime routes decide too; a state without any hashes as before.
	routed := make([]string, 0, len(snap.Routes))
	for n := range snap.Routes {
		routed = append(routed, n)
	}
	slices.Sort(routed)
	for _, n := range routed {
		for _, r := range snap.Routes[n] {
			b, _ := json.Marshal(r)
			fmt.Fprintf(h, "\nroute %s/%s=%s", n, r.Name, b)
		}
	}
	// Runtime mirrors change what a replica decides too.
	for _, n := range slices.Sorted(maps.Keys(snap.Mirrors)) {
		m := snap.Mirrors[n]
		fmt.Fprintf(h, "\nmirror %s=%s:%d", n, m.Version, m.Percent)
	}
	// And the runtime mirror routes; a state without any hashes as before.
	for _, n := range slices.Sorted(maps.Keys(snap.MirrorRoutes)) {
		for _, r := range snap.MirrorRoutes[n] {
			b, _ := json.Marshal(r)
			fmt.Fprintf(h, "\nmirror-route %s/%s=%s", n, r.Name, b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// readCache reads the cache file; a missing one is (nil, nil).
func (s *Source) readCache() (*cacheDoc, error) {
	if s.opts.CacheFile == "" {
		return nil, nil
	}
	data, err := fsutil.ReadCapped(s.opts.CacheFile, 4*split.MaxConfigBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc cacheDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", s.opts.CacheFile, err)
	}
	if doc.Config == "" {
		return nil, fmt.Errorf("%s: no configuration", s.opts.CacheFile)
	}
	s.notes.Note(s.log, "etcd_cache_file", s.opts.CacheFile, compat.Unknown(data, &doc))
	return &doc, nil
}

// writeCache writes the state in force (the last good document and the
// override records) atomically.
func (s *Source) writeCache() error {
	s.mu.Lock()
	if s.good == nil {
		s.mu.Unlock()
		return nil
	}
	doc := cacheDoc{
		Revision: s.rev, ClusterID: s.clusterID, Config: string(s.good.raw), SHA256: s.good.sha,
		Overrides: map[string]string{}, WrittenAt: s.now().UTC(),
	}
	for key, kv := range s.kvs {
		// Runtime mirrors go with the overrides: the cache keeps their
		// records by key, and a start from it puts them back as they were.
		if s.keys.service(key) != "" || s.keys.mirrorService(key) != "" {
			doc.Overrides[key] = string(kv.Value)
		}
		// Runtime routes and mirror routes: their records by key, put
		// back as they were by a start from the cache.
		if svc, _ := s.keys.liveRoute(key); svc != "" || s.keys.isLiveMirrorRoute(key) {
			if doc.Routes == nil {
				doc.Routes = map[string]string{}
			}
			doc.Routes[key] = string(kv.Value)
		}
	}
	s.mu.Unlock()
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteAtomic(s.opts.CacheFile, append(data, '\n'), 0o600, nil)
}

// buildVersion names the running build for the replica record.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, st := range info.Settings {
		if st.Key == "vcs.revision" && len(st.Value) >= 12 {
			return st.Value[:12]
		}
	}
	return "devel"
}
