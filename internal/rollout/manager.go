// Package rollout runs guarded progressive rollouts (docs/rollouts.md): a
// service's canary moves up through its steps while the guard finds it
// healthy, and back to 0 within seconds when it fails.
//
// The pure parts are Judge (the verdict rule), Act (an operator's action)
// and Advance (the guard's move). The Manager runs them: on every tick it
// samples the signals of the active rollouts (Evidence), judges, moves,
// persists the new state (StateStore) and applies its weights through the
// same Mutator as the admin API, with actor "rollout". The loop only runs
// where the Elector says so, which is always in file mode; etcd mode plugs
// in its own StateStore, Elector and Evidence (package fleet): every
// replica samples its own signals on every tick (the Evidence publishes
// them), only the leader judges and moves, and the others follow the
// stored states (Observe).
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// Actor is the name the rollout's own changes carry (logs, audit, store).
const Actor = "rollout"

// Mutator applies weights. admin.Mutator (the store in file mode, the
// fleet's write-through store in etcd mode) satisfies it.
type Mutator interface {
	SetWeights(ctx context.Context, service string, w split.Weights, actor string) (store.Change, error)
}

// Options configures a Manager.
type Options struct {
	Store   *store.Store // the configuration in force (required)
	Mutator Mutator      // nil: Store
	// Mirrors sets a shadow step's mirror; nil: the Mutator when it sets
	// mirrors too, else Store.
	Mirrors MirrorMutator
	// NoShadow, when set, says why this process cannot judge a shadow
	// step (its signals do not see the mirrored requests): a rollout with
	// one then cannot be started.
	NoShadow string
	States   StateStore // nil: FileStates{Store}
	// Evidence supplies the counts verdicts are made of; nil means there
	// is no signal source, and a rollout cannot be started.
	Evidence Evidence
	Elector  Elector       // nil: Always
	Interval time.Duration // tick: sampling and decisions; default 250ms
	// NodeID names this replica in transitions and the status (etcd
	// mode); "" in file mode.
	NodeID string
	Logger *slog.Logger // nil: discard
	Audit  *slog.Logger // transitions; nil: Logger
	Now    func() time.Time
	// HookClient makes the webhook calls (nil: one with its own
	// transport; redirects are never followed).
	HookClient *http.Client
}

// DefaultInterval is the tick when Options.Interval is not set.
const DefaultInterval = 250 * time.Millisecond

// Manager runs every service's rollout. It is safe for concurrent use.
type Manager struct {
	store    *store.Store
	mut      Mutator
	mirrors  MirrorMutator
	noShadow string
	states   StateStore
	evidence Evidence
	elector  Elector
	node     string
	interval time.Duration
	log      *slog.Logger
	audit    *slog.Logger
	now      func() time.Time

	mu       sync.Mutex // serialises transitions; guards the fields below
	current  map[string]State
	verdicts map[string]Verdict // last verdict per service (not persisted)
	counts   map[string]*serviceCounts
	sigErr   string    // last signal error, "" when the last sample worked
	sigSince time.Time // when the signals became unreadable
	// behind: per service, the revision of a stored state written under a
	// configuration this replica has not decided on yet (logged once).
	behind map[string]int64
	// seen: per service whose progressing state another replica's clock
	// wrote, when this replica first saw that state's Since (local).
	seen map[string]seenSince
	// failing: per service, the first of an unbroken run of failing
	// verdicts (failing_for); a verdict that is not failing ends it.
	failing map[string]time.Time
	// waits: per waiting service, what it waits on (the leader's view).
	waits map[string]WaitStatus
	// eventHooks: per active rollout, the event hooks of the configuration
	// it last ran under, so that an abort because a reload removed the
	// rollout (or the service) is still told to them.
	eventHooks map[string][]split.Webhook
	// held: per service, the last refusal of its transition because
	// replicas of an older build hold a lease (logged once).
	held map[string]string
	// leading: this replica ran the decision loop at its last tick (file
	// mode: always), so it calls the hooks.
	leading bool

	hooks  *hookClient
	gates  *gates
	events *events
	closed sync.Once
}

// seenSince is when this replica saw a hold clock another replica started.
type seenSince struct {
	since time.Time // the state's Since, on the writer's clock
	clock string
	at    time.Time // on this replica's clock
}

type serviceCounts struct {
	verdicts    map[Result]uint64
	transitions map[Phase]uint64
}

// New loads the persisted states; a state that cannot be read is an error.
// Nothing runs until Run (or Tick).
func New(ctx context.Context, opts Options) (*Manager, error) {
	if opts.Store == nil {
		return nil, errors.New("rollout: no store")
	}
	m := &Manager{
		store: opts.Store, mut: opts.Mutator, mirrors: opts.Mirrors, noShadow: opts.NoShadow, states: opts.States, evidence: opts.Evidence,
		elector: opts.Elector, node: opts.NodeID, interval: opts.Interval, log: opts.Logger, audit: opts.Audit, now: opts.Now,
		current: map[string]State{}, verdicts: map[string]Verdict{}, counts: map[string]*serviceCounts{},
		behind: map[string]int64{}, seen: map[string]seenSince{},
		failing: map[string]time.Time{}, waits: map[string]WaitStatus{}, eventHooks: map[string][]split.Webhook{}, held: map[string]string{},
	}
	if m.mut == nil {
		m.mut = opts.Store
	}
	if m.mirrors == nil {
		// The Mutator's own mirrors when it has them (etcd mode's
		// write-through store), else the store's.
		if mm, ok := m.mut.(MirrorMutator); ok {
			m.mirrors = mm
		} else {
			m.mirrors = opts.Store
		}
	}
	if m.states == nil {
		m.states = FileStates{Store: opts.Store}
	}
	if m.elector == nil {
		m.elector = Always{}
	}
	if m.interval <= 0 {
		m.interval = DefaultInterval
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.audit == nil {
		m.audit = m.log
	}
	if m.now == nil {
		m.now = time.Now
	}
	_, m.leading = m.elector.(Always)
	m.hooks = newHookClient(opts.HookClient, m.node, m.log.With("component", "rollout-hooks"))
	m.gates, m.events = newGates(m.hooks), newEvents(m.hooks)
	loaded, err := m.states.Load(ctx)
	var unreadable *UnreadableError
	switch {
	case errors.Is(err, store.ErrUnavailable):
		// A shared store (etcd) that does not answer yet: the states
		// arrive through Observe once it does.
		m.log.Warn("rollout states unavailable at start; following them once the store answers", "error", err)
	case errors.As(err, &unreadable):
		// As a running replica does with a state it cannot read: skip
		// it, and say so; the others start as usual.
		for _, name := range slices.Sorted(maps.Keys(unreadable.States)) {
			m.log.Error("rollout state unreadable; ignoring it (actions on the service answer 409 until it is fixed or deleted)",
				"service", name, "error", unreadable.States[name])
		}
	case err != nil:
		return nil, err
	}
	maps.Copy(m.current, loaded)
	for name, st := range loaded {
		m.saw(st)
		if st.Phase.active() {
			m.log.Info("rollout resumed from the saved state", "service", name, "state", st.Phase,
				"step", st.Step, "weight", split.FormatPercent(int(st.Weight)), "since", st.Since, "held", m.local(st).Held(m.now()).Round(time.Millisecond))
		}
	}
	return m, nil
}

// Run ticks until ctx ends. The first tick is immediate: a restarted
// process finishes an interrupted transition and puts the step's weights
// back before anything else.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	defer m.Close()
	for {
		m.Tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick samples the active rollouts' signals, and where this process leads
// judges and moves them. A replica that does not lead only samples (in
// etcd mode its Evidence publishes the counts for the leader). It does
// nothing before a configuration is loaded.
func (m *Manager) Tick(ctx context.Context) {
	snap := m.store.Load()
	if snap == nil {
		return
	}
	lctx, release, leading := m.elector.Lead(ctx)
	defer release()
	m.mu.Lock()
	wasLeading := m.leading
	m.leading = leading
	m.mu.Unlock()
	if wasLeading && !leading {
		// Only the leader asks the hooks.
		m.gates.stop()
	}
	var watches []Watch
	if leading {
		watches = m.prepare(lctx, snap, m.now())
	} else {
		watches = m.following(snap)
	}
	// The readings are stamped after prepare, which may have waited on an
	// apply: a stall before the reading is then a gap the windows see.
	now := m.now()
	var err error
	switch {
	case m.evidence != nil:
		err = m.evidence.Sample(lctx, now, watches)
	case len(watches) > 0:
		err = errNoSignals
	}
	if !leading {
		m.mu.Lock()
		m.signalResult(err, watches)
		m.mu.Unlock()
		return
	}
	m.decide(lctx, snap, now, watches, err)
}

// following returns what a replica that does not lead watches: the active
// rollouts the configuration still allows (the leader aborts the others).
func (m *Manager) following(snap *store.Snapshot) []Watch {
	m.mu.Lock()
	defer m.mu.Unlock()
	var watches []Watch
	for _, name := range slices.Sorted(maps.Keys(m.current)) {
		st := m.current[name]
		if !st.Phase.active() || m.isBehind(snap, st) {
			continue
		}
		if w, reason := watchOf(snap, st); reason == "" {
			watches = append(watches, w)
		}
	}
	return watches
}

// isBehind reports whether st was written under a configuration newer
// than the one in snap, which this replica has not decided on yet (its
// configuration watch lags behind its rollouts/ watch): st is then
// neither judged nor acted on (a lagging leader would abort a rollout
// its configuration does not have yet); m.mu is held.
func (m *Manager) isBehind(snap *store.Snapshot, st State) bool {
	if st.ConfigRevision <= snap.ConfigRevision {
		delete(m.behind, st.Service)
		return false
	}
	if m.behind[st.Service] != st.Revision {
		m.behind[st.Service] = st.Revision
		m.log.Info("the rollout state was written under a configuration this replica has not applied yet; waiting for it",
			"service", st.Service, "state_config_revision", st.ConfigRevision, "applied_config_revision", snap.ConfigRevision)
	}
	return true
}

// watchOf is what st watches under the configuration in snap, or why the
// configuration no longer allows it.
func watchOf(snap *store.Snapshot, st State) (Watch, string) {
	svc, ok := snap.Table.Service(st.Service)
	switch {
	case !ok:
		return Watch{}, "the configuration no longer has the service"
	case svc.Rollout == nil:
		return Watch{}, "the configuration no longer has a rollout for the service"
	case svc.Rollout.Canary != st.Canary || svc.Stable != st.Stable:
		return Watch{}, fmt.Sprintf("the configuration changed the versions (canary %s, stable %s; the rollout moved %s against %s)",
			svc.Rollout.Canary, svc.Stable, st.Canary, st.Stable)
	}
	return Watch{
		Service: st.Service,
		Stable:  signals.Target{Service: st.Service, Version: st.Stable, Cluster: svc.Cluster(st.Stable)},
		Canary:  signals.Target{Service: st.Service, Version: st.Canary, Cluster: svc.Cluster(st.Canary)},
		Window:  svc.Rollout.Guard.Window.D(),
		Run:     st.Started(),
		Latency: svc.Rollout.Guard.JudgesLatency(),
	}, ""
}

var errNoSignals = errors.New("no signal source: set envoy_admin to Envoy's admin address")

// prepare finishes interrupted transitions, stops the active rollouts the
// configuration no longer allows, and returns what the others watch.
func (m *Manager) prepare(ctx context.Context, snap *store.Snapshot, now time.Time) []Watch {
	m.mu.Lock()
	defer m.mu.Unlock()
	var watches []Watch
	for _, name := range slices.Sorted(maps.Keys(m.current)) {
		st := m.current[name]
		if st.Applying {
			_ = m.apply(ctx, name)
			st = m.current[name]
		}
		if !st.Phase.active() || m.isBehind(snap, st) {
			continue
		}
		w, reason := watchOf(snap, st)
		if svc, ok := snap.Table.Service(name); ok && svc.Rollout != nil {
			m.eventHooks[name] = svc.Rollout.HooksOf(split.HookEvent)
		}
		if reason != "" {
			if err := m.commit(ctx, snap, st.to(Aborted, st.Step, 0, now, Actor, "aborted: "+reason, nil)); errors.Is(err, ErrStale) {
				_ = m.refresh(ctx, name)
			}
			continue
		}
		watches = append(watches, w)
	}
	return watches
}

// decide judges every watched rollout and moves it.
func (m *Manager) decide(ctx context.Context, snap *store.Snapshot, now time.Time, watches []Watch, sampleErr error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sampleErr == nil {
		// Hooks no waiting rollout asked this tick are stopped (a tick
		// without readings asks nothing, and stops nothing either).
		defer m.gates.sweep()
	}
	m.signalResult(sampleErr, watches)
	for _, w := range watches {
		if ctx.Err() != nil {
			return // the leadership was lost: decide nothing more
		}
		st := m.current[w.Service]
		svc, ok := snap.Table.Service(w.Service)
		if !st.Phase.active() || !ok || svc.Rollout == nil || m.isBehind(snap, st) {
			continue // an action or the configuration changed it meanwhile
		}
		if sampleErr == nil {
			stable, canary, covered := m.evidence.Totals(w.Service, now)
			lat := latencyOf(svc.Rollout.Guard, m.evidence, w.Service, now)
			v := newVerdict(svc.Rollout.Guard, canary, stable, lat, covered, now)
			v.FailingFor = split.Duration(m.failingFor(w.Service, v.Result, now))
			if age := m.now().Sub(now); age > w.Window {
				// The tick stalled (an apply under the lock, a slow read)
				// for longer than the window since these readings: they
				// may still roll back, never step.
				m.log.Warn("the rollout's readings are older than its window: no step on them",
					"service", w.Service, "age", age.Round(time.Millisecond), "window", w.Window)
				covered = 0
			}
			if src, ok := m.evidence.(Sourced); ok {
				v.Replicas = src.Sources(w.Service)
			}
			m.verdicts[w.Service] = v
			m.countsOf(w.Service).verdicts[v.Result]++
			next, changed := Advance(m.local(st), svc.Rollout, v, covered, now)
			if !changed && st.Phase == Waiting {
				next, changed = m.gate(m.local(st), svc.Rollout, v, covered, now)
			}
			if changed {
				if err := m.commit(ctx, snap, next); errors.Is(err, ErrStale) {
					// An operator's action (or another leader) won the
					// race: judge the state that is stored next time.
					_ = m.refresh(ctx, w.Service)
				}
				continue
			}
		}
		// A progressing rollout owns the weights: put its step's weights
		// back if something else changed them (a file reload that dropped
		// the override, a manual change racing a start); and at the shadow
		// step, its mirror.
		if st.Phase.Owns() && (!m.weightsInForce(snap, st) || !shadowMirrorInForce(snap, svc, st)) {
			m.log.Warn("the service's weights changed outside the rollout; restoring the step's weights",
				"service", w.Service, "step", st.Step, "weight", split.FormatPercent(int(st.Weight)))
			_ = m.apply(ctx, w.Service)
		}
	}
}

// signalResult logs a sampling error when it starts or changes, and the
// recovery; m.mu is held.
func (m *Manager) signalResult(err error, watches []Watch) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg == m.sigErr {
		return
	}
	switch {
	case msg == "":
		// Readings are stamped when taken: a gap longer than a rollout's
		// window starts its window again (docs/rollouts.md, "Signals").
		m.log.Info("rollout signals readable again; a rollout whose window is shorter than the gap waits for a full window of new readings before any step",
			"unreadable_for", m.now().Sub(m.sigSince).Round(time.Millisecond))
	default:
		if m.sigErr == "" {
			m.sigSince = m.now()
		}
		services := make([]string, len(watches))
		for i, w := range watches {
			services[i] = w.Service
		}
		m.log.Error("cannot read the rollout signals: no verdicts until they are readable (nothing is promoted meanwhile; the guard cannot roll back either)",
			"error", msg, "services", services)
	}
	m.sigErr = msg
}

// commit persists next, computed under the configuration of snap, then
// applies its weights. The state is saved with Applying set first, so a
// crash between the two is finished at the next start (or by the next
// leader); m.mu is held. An error wraps ErrStale when the stored state is
// no longer the one next was derived from.
func (m *Manager) commit(ctx context.Context, snap *store.Snapshot, next State) error {
	next.Applying = true
	next.ConfigRevision = snap.ConfigRevision
	next.Clock = m.node
	if n := len(next.History); n > 0 && next.History[n-1].Node == "" {
		next.History[n-1].Node = m.node
	}
	saved, err := m.states.Save(ctx, next)
	if err != nil {
		level := slog.LevelError
		switch {
		case errors.Is(err, ErrStale):
			level = slog.LevelInfo
		case errors.Is(err, store.ErrOlderReplicas):
			// A rolling upgrade: the rollout holds where it is until the
			// older replicas are gone; said once, not at every tick.
			if m.held[next.Service] == err.Error() {
				return fmt.Errorf("saving the rollout state: %w", err)
			}
			m.held[next.Service] = err.Error()
			level = slog.LevelWarn
		}
		m.log.Log(ctx, level, "cannot save the rollout state; the transition did not happen", "service", next.Service, "to", next.Phase, "error", err)
		return fmt.Errorf("saving the rollout state: %w", err)
	}
	delete(m.held, next.Service)
	m.current[next.Service] = saved
	m.saw(saved)
	m.countsOf(next.Service).transitions[next.Phase]++
	m.logTransition(ctx, saved)
	m.moved(saved, saved.History[len(saved.History)-1:])
	return m.apply(ctx, next.Service)
}

// refresh reads service's state from the StateStore after a write lost to
// a newer one; m.mu is held. It returns an error only when service's
// stored state cannot be read (the state known here is kept).
func (m *Manager) refresh(ctx context.Context, service string) error {
	loaded, err := m.states.Load(ctx)
	var unreadable *UnreadableError
	if errors.As(err, &unreadable) {
		if bad := unreadable.States[service]; bad != nil {
			m.log.Warn("the stored rollout state cannot be read", "service", service, "error", bad)
			return bad
		}
	} else if err != nil {
		m.log.Warn("cannot read the rollout states again", "service", service, "error", err)
		return nil
	}
	st, ok := loaded[service]
	cur, known := m.current[service]
	switch {
	case !ok:
		delete(m.current, service)
	case !known || st.Revision >= cur.Revision:
		m.follow(cur, st)
	}
	return nil
}

// Observe takes a state another replica stored (etcd mode: from the watch
// of rollouts/), so that every replica answers the status and the 409
// ownership check alike, and the leader judges what an operator changed on
// another replica. A state no newer than the one known is ignored; one
// with Revision 0 says the stored state was deleted (the service is idle).
func (m *Manager) Observe(st State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, known := m.current[st.Service]
	if st.Revision == 0 {
		if known {
			delete(m.current, st.Service)
			delete(m.verdicts, st.Service)
			delete(m.seen, st.Service)
			delete(m.failing, st.Service)
			delete(m.waits, st.Service)
			m.log.Warn("rollout state deleted from the store: the service is idle", "service", st.Service)
		}
		return
	}
	if known && st.Revision <= cur.Revision {
		return
	}
	m.follow(cur, st)
}

// follow makes st current after cur: the transitions st adds are counted
// and logged (as followed: the replica that made them audited them); m.mu
// is held.
func (m *Manager) follow(cur, st State) {
	news := added(cur.History, st.History)
	for _, tr := range news {
		m.countsOf(st.Service).transitions[tr.To]++
		m.log.Info("rollout transition followed", "service", st.Service, "from", tr.From, "to", tr.To, "step", tr.Step,
			"weight", split.FormatPercent(int(tr.Weight)), "actor", tr.Actor, "node", tr.Node, "reason", tr.Reason)
	}
	m.moved(st, news)
	if !st.Started().Equal(cur.Started()) {
		delete(m.verdicts, st.Service)
		delete(m.failing, st.Service)
	}
	m.current[st.Service] = st
	m.saw(st)
}

// added is the transitions of next after those of cur: next's history
// continues cur's (capped to MaxHistory), found by cur's last transition.
// Transitions carry their writers' clocks, so they are matched, never
// ordered by time.
func added(cur, next []Transition) []Transition {
	if len(cur) == 0 {
		return next
	}
	last := cur[len(cur)-1]
	for i := len(next) - 1; i >= 0; i-- {
		tr := next[i]
		if tr.At.Equal(last.At) && tr.From == last.From && tr.To == last.To && tr.Step == last.Step && tr.Actor == last.Actor && tr.Node == last.Node {
			return next[i+1:]
		}
	}
	return next
}

// saw notes when this replica first saw st's hold clock, when another
// replica's clock started it; m.mu is held.
func (m *Manager) saw(st State) {
	if !st.Phase.running() || st.Clock == m.node {
		delete(m.seen, st.Service)
		return
	}
	if s, ok := m.seen[st.Service]; ok && s.since.Equal(st.Since) && s.clock == st.Clock {
		return
	}
	m.seen[st.Service] = seenSince{since: st.Since, clock: st.Clock, at: m.now()}
}

// local is st with its hold clock on this replica's clock: a Since that
// another replica's clock wrote is replaced by when this replica saw it,
// so that the hold is never measured across two clocks (it is measured
// short by how long the state took to arrive, never long by how far the
// clocks are apart); m.mu is held.
func (m *Manager) local(st State) State {
	if !st.Phase.running() || st.Clock == m.node {
		return st
	}
	held := carried(st)
	if s, ok := m.seen[st.Service]; ok && s.since.Equal(st.Since) && s.clock == st.Clock {
		st.Since = s.at
	} else {
		st.Since = m.now()
	}
	st.Since = st.Since.Add(-held)
	return st
}

// carried is what a state written by the release before held_before
// (no clock: docs/upgrading.md) had held when its last transition was
// made: that release keeps the hold before a pause by pushing since back,
// so it is the transition's time minus since, both on the writer's clock.
// This build's states carry it in HeldBefore (since is then the
// transition's time).
func carried(st State) time.Duration {
	if st.Clock != "" || len(st.History) == 0 {
		return 0
	}
	return max(st.History[len(st.History)-1].At.Sub(st.Since), 0)
}

// apply sets the weights of service's state (unless they are in force
// already) and clears Applying; m.mu is held. On failure Applying stays
// set and the next tick tries again.
func (m *Manager) apply(ctx context.Context, service string) error {
	st := m.current[service]
	snap := m.store.Load() // the latest: an earlier apply may have changed it
	sm, shared := m.mut.(StateMutator)
	// A shared store judges what is in force itself: this replica's
	// snapshot may not have applied another replica's latest weights yet.
	if w, err := rolloutWeights(snap, st); err == nil && (shared || !m.weightsInForce(snap, st)) {
		if shared {
			_, err = sm.SetStateWeights(ctx, st, w)
		} else {
			_, err = m.mut.SetWeights(ctx, service, w, Actor)
		}
		if errors.Is(err, ErrStale) {
			// The state was saved, then moved on (another replica applied
			// it and cleared its mark, or replaced it): its weights are
			// the newer state's business. The transition happened.
			m.log.Info("the rollout state moved on; its weights were not written here", "service", service, "weights", w.String(), "error", err)
			return nil
		}
		if err != nil {
			m.log.Error("cannot apply the rollout's weights; retrying at the next tick", "service", service, "weights", w.String(), "error", err)
			return fmt.Errorf("applying the rollout's weights: %w", err)
		}
	} else if err != nil && !errors.Is(err, split.ErrUnknownService) {
		m.log.Error("cannot compute the rollout's weights", "service", service, "error", err)
		return err
	}
	if err := m.applyMirror(ctx, m.store.Load(), st); err != nil {
		return err
	}
	if !st.Applying {
		return nil
	}
	st.Applying = false
	saved, err := m.states.Save(ctx, st)
	switch {
	case errors.Is(err, ErrStale):
		// Another replica finished it, or moved the rollout on.
		m.log.Debug("the rollout state moved on before its applying mark was cleared", "service", service, "error", err)
	case err != nil:
		// The saved state still says Applying: a restart applies the same
		// weights again, which changes nothing.
		m.current[service] = st
		m.log.Warn("cannot save the rollout state after applying its weights", "service", service, "error", err)
	default:
		m.current[service] = saved
		m.saw(saved)
	}
	return nil
}

// rolloutWeights is what st puts in force: the canary at its weight, the
// stable version (as configured now) at the rest, every other version 0,
// in the file's declared order.
func rolloutWeights(snap *store.Snapshot, st State) (split.Weights, error) {
	fileSvc, ok := snap.FileService(st.Service)
	svc, ok2 := snap.Table.Service(st.Service)
	if !ok || !ok2 {
		return nil, fmt.Errorf("service %q: %w", st.Service, split.ErrUnknownService)
	}
	w := fileSvc.Weights.Clone()
	canary := int(st.Weight)
	if _, declared := w.Get(st.Canary); !declared || st.Canary == svc.Stable {
		canary = 0
	}
	for i := range w {
		switch w[i].Version {
		case svc.Stable:
			w[i].BasisPoints = split.Buckets - canary
		case st.Canary:
			w[i].BasisPoints = canary
		default:
			w[i].BasisPoints = 0
		}
	}
	return w, nil
}

// weightsInForce reports whether the service decides with st's weights.
func (m *Manager) weightsInForce(snap *store.Snapshot, st State) bool {
	want, err := rolloutWeights(snap, st)
	if err != nil {
		return true
	}
	svc, _ := snap.Table.Service(st.Service)
	for _, x := range want {
		if bp, _ := svc.Weights.Get(x.Version); bp != x.BasisPoints {
			return false
		}
	}
	return true
}

func (m *Manager) logTransition(ctx context.Context, st State) {
	tr := st.History[len(st.History)-1]
	attrs := []slog.Attr{
		slog.String("service", st.Service), slog.String("from", string(tr.From)), slog.String("to", string(tr.To)),
		slog.Int("step", tr.Step), slog.String("weight", split.FormatPercent(int(tr.Weight))),
		slog.String("actor", tr.Actor), slog.String("reason", tr.Reason),
	}
	if tr.Node != "" {
		attrs = append(attrs, slog.String("node", tr.Node))
	}
	if v := tr.Verdict; v != nil {
		attrs = append(attrs, slog.String("verdict", string(v.Result)),
			slog.Uint64("canary_requests", v.Canary.Requests), slog.Uint64("canary_errors", v.Canary.Errors),
			slog.Uint64("stable_requests", v.Stable.Requests), slog.Uint64("stable_errors", v.Stable.Errors),
			slog.Duration("window_covered", v.Covered.D()))
		if len(v.Replicas) > 0 {
			attrs = append(attrs, slog.Any("replicas", v.Replicas))
		}
		attrs = append(attrs, latencyAttrs(v)...)
	}
	if st.Wait != nil {
		attrs = append(attrs, slog.Int("next_step", st.Wait.Step), slog.String("next_weight", split.FormatPercent(int(st.Wait.Weight))))
	}
	level := slog.LevelInfo
	if tr.To == RolledBack {
		level = slog.LevelWarn
	}
	m.audit.LogAttrs(ctx, level, "rollout transition", attrs...)
}

func (m *Manager) countsOf(service string) *serviceCounts {
	c := m.counts[service]
	if c == nil {
		c = &serviceCounts{verdicts: map[Result]uint64{}, transitions: map[Phase]uint64{}}
		m.counts[service] = c
	}
	return c
}

// Owns reports whether a rollout decides service's weights now (it is
// progressing), so that an admin weights, canary or override call must be
// refused, and the phase it is in.
func (m *Manager) Owns(service string) (Phase, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.current[service]
	if !ok {
		return Idle, false
	}
	return st.Phase, st.Phase.Owns()
}

// Act applies an operator's action (start, pause, resume, abort, promote)
// and returns the new status. Errors wrap split.ErrUnknownService,
// ErrNoRollout, ErrUnknownAction, ErrConflict or store.ErrNoConfig.
func (m *Manager) Act(ctx context.Context, service string, action Action, actor string) (Status, error) {
	snap := m.store.Load()
	if snap == nil {
		return Status{}, store.ErrNoConfig
	}
	svc, err := configured(snap, service)
	if err != nil {
		return Status{}, err
	}
	if !slices.Contains(Actions(), action) {
		return Status{}, fmt.Errorf("%w %q (one of start, pause, resume, abort, promote)", ErrUnknownAction, action)
	}
	if action == Start && m.evidence == nil {
		return Status{}, fmt.Errorf("%w: %v", ErrConflict, errNoSignals)
	}
	if action == Start && svc.Rollout.Shadow != nil && m.noShadow != "" {
		return Status{}, fmt.Errorf("%w: the rollout starts with a shadow step, which %s", ErrConflict, m.noShadow)
	}
	if action == Start {
		if err := checkOwner(snap, service); err != nil {
			return Status{}, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	unreadable := func(err error) error {
		return fmt.Errorf("%w: service %q: the stored rollout state cannot be read (%v); fix or delete it", ErrConflict, service, err)
	}
	if _, ok := m.states.(FileStates); !ok {
		// A shared store: this replica's copy may lag behind a step the
		// leader just took; act on the stored state.
		if err := m.refresh(ctx, service); err != nil {
			return Status{}, unreadable(err)
		}
	}
	for attempt := 1; ; attempt++ {
		st := m.stateOf(service)
		if st.ConfigRevision > snap.ConfigRevision {
			return Status{}, fmt.Errorf("%w: service %q: this replica has applied configuration revision %d, older than revision %d the rollout state was written under; retry once it has caught up",
				store.ErrUnavailable, service, snap.ConfigRevision, st.ConfigRevision)
		}
		next, err := Act(m.local(st), svc.Rollout, svc.Stable, action, m.now(), actor)
		if err != nil {
			return Status{}, err
		}
		if action == Start && m.evidence != nil {
			m.evidence.Forget(service)
			delete(m.verdicts, service)
			delete(m.failing, service)
		}
		err = m.commit(ctx, snap, next)
		if errors.Is(err, ErrStale) && attempt < maxActAttempts {
			// The leader stepped (or another operator acted) since this
			// replica last saw the state: act on the stored one.
			if err := m.refresh(ctx, service); err != nil {
				return Status{}, unreadable(err)
			}
			continue
		}
		if err != nil {
			return Status{}, fmt.Errorf("service %q: %w", service, err)
		}
		return m.statusLocked(svc), nil
	}
}

// maxActAttempts bounds how often an operator's action is computed again
// on a state that changed under it.
const maxActAttempts = 8

func configured(snap *store.Snapshot, service string) (split.Service, error) {
	svc, ok := snap.Table.Service(service)
	if !ok {
		return split.Service{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
	}
	if svc.Rollout == nil {
		return split.Service{}, fmt.Errorf("service %q: %w", service, ErrNoRollout)
	}
	return svc, nil
}

func (m *Manager) stateOf(service string) State {
	if st, ok := m.current[service]; ok {
		return st
	}
	return State{Service: service, Phase: Idle, History: []Transition{}}
}

// Status is GET /v1/services/{name}/rollout.
type Status struct {
	Service string `json:"service"`
	State   Phase  `json:"state"`
	Canary  string `json:"canary"`
	Stable  string `json:"stable"`
	Step    int    `json:"step"` // 1..len(steps); 0 before the first (and at the shadow step)
	Steps   int    `json:"steps"`
	// Shadow: at the shadow step, the canary serving no user and
	// ShadowPercent of the requests mirrored to it.
	Shadow        bool           `json:"shadow,omitempty"`
	ShadowPercent *split.Percent `json:"shadow_percent,omitempty"`
	Weight        split.Percent  `json:"weight"` // the canary's share the rollout set
	Since         time.Time      `json:"since,omitzero"`
	// Held is how long the step has been held (pauses excluded), of Hold.
	Held split.Duration `json:"held"`
	Hold split.Duration `json:"hold"`
	// OwnsWeights: admin weights, canary and override calls answer 409.
	OwnsWeights bool `json:"owns_weights"`
	// Leader is the replica that decides (etcd mode), Node this one, and
	// Revision the stored state's etcd revision.
	Leader   string `json:"leader,omitempty"`
	Node     string `json:"node,omitempty"`
	Revision int64  `json:"revision,omitempty"`
	// Verdict is the last one, with its numbers (not kept across restarts).
	Verdict *Verdict `json:"verdict,omitempty"`
	// Waiting is what a waiting rollout waits on.
	Waiting     *WaitStatus    `json:"waiting,omitempty"`
	SignalError string         `json:"signal_error,omitempty"`
	History     []Transition   `json:"history"`
	Config      *split.Rollout `json:"config"`
}

// Status returns service's rollout. Errors wrap split.ErrUnknownService,
// ErrNoRollout or store.ErrNoConfig.
func (m *Manager) Status(service string) (Status, error) {
	snap := m.store.Load()
	if snap == nil {
		return Status{}, store.ErrNoConfig
	}
	svc, err := configured(snap, service)
	if err != nil {
		return Status{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.statusLocked(svc), nil
}

func (m *Manager) statusLocked(svc split.Service) Status {
	st := m.stateOf(svc.Name)
	out := Status{
		Service: svc.Name, State: st.Phase, Canary: st.Canary, Stable: st.Stable,
		Step: st.Step, Steps: len(svc.Rollout.Steps), Weight: st.Weight, Since: st.Since,
		Held: split.Duration(m.local(st).Held(m.now())), Hold: svc.Rollout.Hold, OwnsWeights: st.Phase.Owns(),
		History: slices.Clone(st.History), Config: svc.Rollout,
		Leader: m.elector.Leader(), Node: m.node, Revision: st.Revision,
	}
	if out.Canary == "" {
		out.Canary, out.Stable = svc.Rollout.Canary, svc.Stable
	}
	if st.Shadow && st.Phase.active() && svc.Rollout.Shadow != nil {
		p := svc.Rollout.Shadow.Percent
		out.Shadow, out.ShadowPercent, out.Hold = true, &p, svc.Rollout.Shadow.Hold
	}
	if out.History == nil {
		out.History = []Transition{}
	}
	if v, ok := m.verdicts[svc.Name]; ok {
		out.Verdict = &v
	}
	if st.Phase.active() {
		out.SignalError = m.sigErr
	}
	if st.Phase == Waiting {
		w := m.waits[svc.Name]
		if st.Wait != nil {
			w.NextStep, w.NextWeight = st.Wait.Step, st.Wait.Weight
		}
		out.Waiting = &w
	}
	return out
}
