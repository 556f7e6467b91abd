// Package store holds splitter's runtime state: the compiled table that
// decisions read, the file configuration it came from, and the overrides an
// operator set through the admin API.
//
// Readers take one immutable *Snapshot with an atomic load and never lock.
// Writers (file reloads and admin mutations) are serialised by one mutex,
// build a whole new Snapshot and publish it with a single pointer swap, so
// a decision always sees one configuration generation, never a mix.
//
// An override replaces one service's weights. It survives a file reload
// only while that service's weights in the file are the same as they were
// when the override was set; when the file changes them (or removes the
// service or one of its versions) the file wins, the override is dropped
// and the drop is logged. With a state file, overrides (and the file
// weights they were set against) persist across restarts, and the same
// survival rule is applied to them at the first load.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trafficsplit/splitter/internal/compat"
	"github.com/trafficsplit/splitter/split"
)

// Snapshot is one immutable state of the store. Nothing in it may be
// modified after it is published.
type Snapshot struct {
	Table      *split.Table             // effective table: file config + overrides
	File       *split.Config            // as loaded from the file (or built-in default)
	Overrides  map[string]split.Weights // service -> weights set at runtime (nil: none)
	SHA256     string                   // hex sha256 of the file bytes
	Source     string                   // file path, or "built-in default"
	LoadedAt   time.Time                // when the file config was (re)loaded
	Generation uint64                   // +1 on every swap (file or override)
	// Revision is the etcd revision the state is as of, in fleet mode
	// (ApplyShared); 0 for a file.
	Revision int64
	// ConfigRevision is, in fleet mode, the etcd revision of the
	// configuration document this state was decided after: the one in
	// force, or a newer one that was rejected (the last good one then
	// serves); 0 for a file.
	ConfigRevision int64
	// Mirrors are the mirrors set at runtime (SetMirror), service -> the
	// mirror in force in place of the file's (nil: none).
	Mirrors map[string]split.Mirror
	// Owners names, per overridden service, the controller that set its
	// override (SetCanaryOwned: the Argo Rollouts plugin); the owner goes
	// with the override. nil: none.
	Owners map[string]string
	// Routes are the runtime routes per service, sorted by name (nil:
	// none); Table evaluates them ahead of the service's own rules.
	Routes map[string][]Route
	// MirrorRoutes are the runtime mirror routes per service, sorted by
	// name (nil: none); Table tries them before the service's mirror.
	MirrorRoutes map[string][]MirrorRoute
}

// FileService returns the service as written in the file, before
// overrides.
func (s *Snapshot) FileService(name string) (split.Service, bool) {
	if s == nil || s.File == nil {
		return split.Service{}, false
	}
	for _, svc := range s.File.Services {
		if svc.Name == name {
			return svc, true
		}
	}
	return split.Service{}, false
}

// Options configures a Store.
type Options struct {
	Logger    *slog.Logger     // nil: discard
	StateFile string           // "": overrides are not persisted
	Now       func() time.Time // nil: time.Now
	OnSwap    func(*Snapshot)  // called after every successful swap, under the write lock; may be nil
	// Check runs on every file configuration before it is compiled, for
	// rules that need process settings (e.g. experiment headers must not
	// be the route header). nil: none.
	Check func(*split.Config) error
	// InitialState, when set, is a state document (the state file's
	// format, ExportState) to start from instead of reading StateFile:
	// what another process handed over (the module's hot restart). Its
	// overrides meet the first ApplyFile under the usual survival rule; a
	// StateFile, if set, is written from then on as usual.
	InitialState []byte
}

// ErrNoConfig is returned by mutations made before the first ApplyFile.
var ErrNoConfig = errors.New("no configuration loaded")

// Store is splitter's runtime state. It is safe for concurrent use.
type Store struct {
	log *slog.Logger
	// notes: state documents with fields this build does not know, logged
	// once each.
	notes     compat.Notes
	stateFile string
	now       func() time.Time
	onSwap    func(*Snapshot)
	check     func(*split.Config) error

	cur     atomic.Pointer[Snapshot]
	lastErr atomic.Pointer[reloadError]

	mu sync.Mutex // serialises writers; readers never take it
	// fileWeights holds, per overridden service, the file's weights at the
	// time the override was set: the survival rule compares against them.
	fileWeights map[string]split.Weights
	// pending holds the overrides read from the state file until the first
	// ApplyFile decides which of them survive.
	pending *state
	// rollouts are the rollout states (SaveRollout), persisted with the
	// overrides; replaced, never modified in place.
	rollouts map[string]json.RawMessage
	// rename is os.Rename; tests replace it to simulate a failed write.
	rename func(oldpath, newpath string) error
	// mirrors are the runtime mirrors in force (or, before the first
	// ApplyFile, those read from the state file), and mirrorAgainst the
	// file's mirror of each service when its runtime mirror was set (nil:
	// the file had none); they persist with the overrides (mirror.go).
	mirrors       map[string]split.Mirror
	mirrorAgainst map[string]*split.Mirror
}

type reloadError struct {
	msg string
	at  time.Time
}

// New creates a Store. If opts.StateFile exists it is read now (a corrupt
// file is an error naming it); its overrides are applied by the first
// ApplyFile under the usual survival rule.
func New(opts Options) (*Store, error) {
	s := &Store{
		log:         opts.Logger,
		stateFile:   opts.StateFile,
		now:         opts.Now,
		onSwap:      opts.OnSwap,
		check:       opts.Check,
		fileWeights: map[string]split.Weights{},
		rename:      os.Rename,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	switch {
	case opts.InitialState != nil:
		st, err := decodeState(opts.InitialState)
		if err != nil {
			return nil, fmt.Errorf("handed-over state: %w", err)
		}
		s.notes.Note(s.log, "the handed-over state", "handover", st.unknown)
		s.pending, s.rollouts = st, st.rollouts
		s.mirrors, s.mirrorAgainst = st.mirrors, st.fileMirrors
	case s.stateFile != "":
		st, err := readState(s.stateFile)
		if err != nil {
			return nil, err
		}
		s.pending = st
		if st != nil {
			s.notes.Note(s.log, "the state file", s.stateFile, st.unknown)
			s.rollouts = st.rollouts
			s.mirrors, s.mirrorAgainst = st.mirrors, st.fileMirrors
		}
	}
	return s, nil
}

// ExportState returns the runtime state as a state document (the state
// file's format, with or without a state file): the overrides in force
// and the configuration weights they were set against, the runtime
// mirrors and the configuration's mirrors they were set against, the
// runtime routes and mirror routes, the owners of owned weights, the
// rollout states, and the configuration's sha256. Before the first load it is the state still to
// be judged. Store.New takes it back as InitialState, and
// ApplyState applies it: so one process hands its state to another.
func (s *Store) ExportState() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch cur := s.cur.Load(); {
	case cur != nil:
		return encodeState(cur.Overrides, s.fileWeights, cur.runtime(),
			s.rollouts, cur.SHA256, s.mirrors, s.mirrorAgainst)
	case s.pending != nil:
		return encodeState(s.pending.overrides, s.pending.fileWeights, s.pending.runtime,
			s.rollouts, s.pending.fileSHA, s.mirrors, s.mirrorAgainst)
	}
	return encodeState(nil, nil, runtimeState{}, s.rollouts, "", s.mirrors, s.mirrorAgainst)
}

// ApplyState makes this store follow another's: cfg (from source, whose
// bytes hash to sha) with exactly the overrides of the state document
// data (ExportState) that apply to it (with their owners), as
// ApplySharedState, its runtime mirrors, routes and mirror routes that
// apply, and its rollout states. Nothing is written to the state file: the store that
// exported the state owns it. An error leaves the store as it was.
func (s *Store) ApplyState(cfg *split.Config, sha, source string, data []byte) error {
	st, err := decodeState(data)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	s.notes.Note(s.log, "the followed state", source, st.unknown)
	overrides := make(map[string]Override, len(st.overrides))
	for name, w := range st.overrides {
		overrides[name] = Override{Weights: w, Against: st.fileWeights[name], Owner: st.runtime.owners[name]}
	}
	mirrors := make(map[string]MirrorOverride, len(st.mirrors))
	for name, m := range st.mirrors {
		mirrors[name] = MirrorOverride{Mirror: m, Against: st.fileMirrors[name]}
	}
	shared := SharedState{Overrides: overrides, Mirrors: mirrors, Routes: st.runtime.routes, MirrorRoutes: st.runtime.mirrorRoutes}
	if _, _, err := s.applyShared(cfg, sha, source, Revisions{}, shared); err != nil {
		return err
	}
	s.mu.Lock()
	s.rollouts = st.rollouts
	s.mu.Unlock()
	return nil
}

// Rollouts returns the rollout states saved with SaveRollout (read from
// the state file at start), service -> the document as saved. Package
// rollout owns their format; the store only keeps them.
func (s *Store) Rollouts() map[string]json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.rollouts)
}

// SaveRollout keeps service's rollout state (doc nil: removes it) and,
// with a state file, rewrites the file before it returns, with the
// overrides in force. On a write error the state is not kept.
func (s *Store) SaveRollout(service string, doc json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := maps.Clone(s.rollouts)
	if next == nil {
		next = map[string]json.RawMessage{}
	}
	if doc == nil {
		delete(next, service)
	} else {
		next[service] = append(json.RawMessage(nil), doc...)
	}
	if s.stateFile != "" {
		prev := s.rollouts
		s.rollouts = next
		var err error
		switch cur := s.cur.Load(); {
		case cur != nil:
			err = s.writeState(cur.Overrides, s.fileWeights, cur.SHA256, cur.runtime())
		case s.pending != nil:
			// Before the first load: keep the overrides still to be judged.
			err = s.writeState(s.pending.overrides, s.pending.fileWeights, s.pending.fileSHA, s.pending.runtime)
		default:
			err = s.writeState(nil, nil, "", runtimeState{})
		}
		if err != nil {
			s.rollouts = prev
			return fmt.Errorf("rollout state of %q: %w", service, err)
		}
	}
	s.rollouts = next
	return nil
}

// Load returns the current snapshot, nil before the first ApplyFile. It is
// safe to call on a nil *Store.
func (s *Store) Load() *Snapshot {
	if s == nil {
		return nil
	}
	return s.cur.Load()
}

// Table returns the current effective table, nil before the first
// ApplyFile. It is safe to call on a nil *Store.
func (s *Store) Table() *split.Table {
	if s == nil {
		return nil
	}
	if snap := s.cur.Load(); snap != nil {
		return snap.Table
	}
	return nil
}

// ApplyFile compiles cfg (read from source, whose bytes hash to sha) with
// the overrides that survive it and publishes the result. An override
// survives only if the file's weights for its service are exactly those it
// was set against; the others are dropped, logged and removed from the
// state file. Applying the same sha from the same source again changes
// nothing and returns the current snapshot (no new generation): the bytes,
// hence the config and the survival of every override, are the same. On
// error nothing changes. The store keeps its own copy of cfg.
func (s *Store) ApplyFile(cfg *split.Config, sha, source string) (*Snapshot, error) {
	if cfg == nil {
		return nil, errors.New("apply file: nil configuration")
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.check != nil {
		if err := s.check(cfg); err != nil {
			return nil, err
		}
	}
	cfg = cfg.Clone()
	old := s.cur.Load()
	if old != nil && old.SHA256 == sha && old.Source == source {
		s.lastErr.Store(nil)
		return old, nil
	}

	// Candidates: the live overrides, or at the first load the persisted ones.
	candidates := map[string]split.Weights{}
	against := map[string]split.Weights{}
	persistedSHA := ""
	var owners map[string]string
	var routes runtimeRoutes
	if old != nil {
		maps.Copy(candidates, old.Overrides)
		maps.Copy(against, s.fileWeights)
		owners, routes = old.Owners, runtimeRoutes{routes: old.Routes, mirrorRoutes: old.MirrorRoutes}
	} else if s.pending != nil {
		maps.Copy(candidates, s.pending.overrides)
		maps.Copy(against, s.pending.fileWeights)
		persistedSHA = s.pending.fileSHA
		owners = s.pending.runtime.owners
		routes = runtimeRoutes{routes: s.pending.runtime.routes, mirrorRoutes: s.pending.runtime.mirrorRoutes}
	}

	// The effective configuration is the file's with every surviving
	// override in place of its service's weights, compiled once: services
	// whose effective weights did not change (overridden or not) keep their
	// round-robin position.
	effective := cfg.Clone()
	kept := map[string]split.Weights{}
	keptAgainst := map[string]split.Weights{}
	type drop struct{ name, reason string }
	var drops []drop
	for _, name := range sortedKeys(candidates) {
		w := candidates[name]
		i := serviceIndex(effective, name)
		reason := ""
		switch fw, known := against[name]; {
		case i < 0:
			reason = "service no longer in the file"
		case known && !sameWeights(fw, effective.Services[i].Weights):
			reason = "file changed the service's weights"
		case !known && (persistedSHA == "" || persistedSHA != sha):
			// A hand-written state file without file weights can only be
			// trusted against the exact file it names.
			reason = "file weights at the time of the override are unknown"
		default:
			if err := sameVersions(w, effective.Services[i].Weights); err != nil {
				reason = "override no longer valid: " + err.Error()
			} else if w.Sum() != split.Buckets {
				reason = "override no longer valid: weights sum to " + split.FormatPercent(w.Sum()) + ", not 100"
			}
		}
		if reason != "" {
			drops = append(drops, drop{name, reason})
			continue
		}
		fileWeights := effective.Services[i].Weights
		w = split.InDeclaredOrder(w, fileWeights)
		effective.Services[i].Weights = w
		kept[name] = w
		keptAgainst[name] = fileWeights
	}
	mj := judgeMirrors(effective, s.mirrors, s.mirrorAgainst, old == nil && (persistedSHA == "" || persistedSHA != sha))
	var prev *split.Table
	if old != nil {
		prev = old.Table
	}
	// Runtime routes survive while they fit the new file; the file is
	// never refused because of one.
	table, keptRoutes, routeDrops, err := compileWithRoutes(prev, effective, routes)
	if err != nil {
		return nil, err
	}
	s.mirrors, s.mirrorAgainst = mj.kept, mj.against
	mj.log(s.log, source)
	keptOwners := map[string]string{}
	for name := range kept {
		if o := owners[name]; o != "" {
			keptOwners[name] = o
		}
	}
	for _, key := range sortedKeys(routeDrops.routes) {
		s.log.Warn("runtime route cleared by the configuration file", "route", key, "reason", routeDrops.routes[key], "source", source)
	}
	for _, key := range sortedKeys(routeDrops.mirrorRoutes) {
		s.log.Warn("runtime mirror route cleared by the configuration file", "mirror_route", key, "reason", routeDrops.mirrorRoutes[key], "source", source)
	}
	dropped := len(drops) + len(mj.drops) + len(routeDrops.routes) + len(routeDrops.mirrorRoutes)
	for _, d := range drops {
		fileW := split.Weights(nil)
		if svc, ok := findService(cfg, d.name); ok {
			fileW = svc.Weights
		}
		s.log.Warn("runtime override cleared by the configuration file",
			"service", d.name, "override", formatWeights(candidates[d.name]), "file_weights", formatWeights(fileW),
			"reason", d.reason, "source", source)
	}

	rt := runtimeState{owners: nilIfEmpty(keptOwners), routes: keptRoutes.routes, mirrorRoutes: keptRoutes.mirrorRoutes}
	if s.stateFile != "" && (dropped > 0 || len(kept) > 0 || len(mj.kept) > 0 || !keptRoutes.empty()) {
		// The file config applies even if the state cannot be written: a
		// dropped override left in the file is dropped again at the next
		// start by the same rule.
		if err := s.writeState(kept, keptAgainst, sha, rt); err != nil {
			s.log.Error("cannot update the state file", "path", s.stateFile, "error", err)
		}
	}

	snap := &Snapshot{
		Table:        table,
		File:         cfg,
		Overrides:    nilIfEmpty(kept),
		Owners:       rt.owners,
		Routes:       rt.routes,
		MirrorRoutes: rt.mirrorRoutes,
		SHA256:       sha,
		Source:       source,
		LoadedAt:     s.now(),
		Mirrors:      nilIfEmpty(mj.kept),
	}
	s.fileWeights = keptAgainst
	s.pending = nil
	s.lastErr.Store(nil)
	s.publish(old, snap)
	return snap, nil
}

// RecordReloadError remembers a failed reload for the admin API. A nil err
// clears it, as does the next successful ApplyFile.
func (s *Store) RecordReloadError(err error) {
	if err == nil {
		s.lastErr.Store(nil)
		return
	}
	s.lastErr.Store(&reloadError{msg: err.Error(), at: s.now()})
}

// LastReloadError returns the last reload error and when it happened, or
// "" and the zero time when the last reload succeeded.
func (s *Store) LastReloadError() (msg string, at time.Time) {
	if e := s.lastErr.Load(); e != nil {
		return e.msg, e.at
	}
	return "", time.Time{}
}

// Change is what an override mutation did to one service: its effective
// weights before and after (read under the store's lock, so Old is what
// this mutation replaced, not what a concurrent one left) and the snapshot
// published.
type Change struct {
	Service  string
	Old, New split.Weights
	Snapshot *Snapshot
	// Revision is the etcd revision that committed the change (fleet
	// mode); 0 when the change was made in this process only.
	Revision int64
	// NotApplied (fleet mode): the change is committed in etcd, but this
	// replica had not applied it yet when the answer was due; Snapshot is
	// then the state still in force here.
	NotApplied bool
}

// SetWeights overrides service's weights (in any order; they are kept in
// the file's declared order). Errors wrap split.ErrUnknownService for an
// unknown service; invalid weights give the engine's *split.FieldError.
// actor is recorded in the log.
func (s *Store) SetWeights(ctx context.Context, service string, w split.Weights, actor string) (Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setLocked(ctx, service, w, actor, "")
}

// SetCanary gives the canary (non-stable) version of a two-version service
// basisPoints of the traffic and the stable version the rest. Errors wrap
// split.ErrUnknownService or split.ErrNotTwoVersions.
func (s *Store) SetCanary(ctx context.Context, service string, basisPoints int, actor string) (Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return Change{}, ErrNoConfig
	}
	w, err := cur.Table.CanaryWeights(service, basisPoints)
	if err != nil {
		return Change{}, fmt.Errorf("service %q: %w", service, err)
	}
	return s.setLocked(ctx, service, w, actor, "")
}

// ClearOverride removes service's override, restoring the file's weights.
// Clearing a service that has no override changes nothing and returns the
// current snapshot.
func (s *Store) ClearOverride(ctx context.Context, service string, actor string) (Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return Change{}, ErrNoConfig
	}
	fileSvc, ok := cur.FileService(service)
	if !ok {
		return Change{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
	}
	old := effectiveWeights(cur, service)
	if _, ok := cur.Overrides[service]; !ok {
		return Change{Service: service, Old: old, New: old, Snapshot: cur}, nil
	}
	if err := ctx.Err(); err != nil {
		return Change{}, err
	}
	table, err := cur.Table.WithWeights(service, fileSvc.Weights)
	if err != nil {
		return Change{}, fmt.Errorf("service %q: restore file weights: %w", service, err)
	}
	overrides := maps.Clone(cur.Overrides)
	delete(overrides, service)
	against := maps.Clone(s.fileWeights)
	delete(against, service)
	// Clearing the override releases its owner.
	rt := cur.runtime()
	rt.owners = withOwner(cur.Owners, service, "")
	if s.stateFile != "" {
		if err := s.writeState(overrides, against, cur.SHA256, rt); err != nil {
			return Change{}, fmt.Errorf("service %q: %w", service, err)
		}
	}
	snap := &Snapshot{
		Table: table, File: cur.File, Overrides: nilIfEmpty(overrides), Owners: rt.owners, Routes: rt.routes, MirrorRoutes: rt.mirrorRoutes,
		SHA256: cur.SHA256, Source: cur.Source, LoadedAt: cur.LoadedAt, Mirrors: cur.Mirrors,
	}
	s.fileWeights = against
	s.log.Info("runtime override cleared", "service", service, "actor", actor,
		"old", formatWeights(old), "new", formatWeights(fileSvc.Weights), "released_owner", cur.Owners[service])
	s.publish(cur, snap)
	return Change{Service: service, Old: old, New: fileSvc.Weights, Snapshot: snap}, nil
}

// setLocked applies an override set on behalf of owner ("" for none);
// s.mu is held.
func (s *Store) setLocked(ctx context.Context, service string, w split.Weights, actor, owner string) (Change, error) {
	cur := s.cur.Load()
	if cur == nil {
		return Change{}, ErrNoConfig
	}
	fileSvc, ok := cur.FileService(service)
	if !ok {
		return Change{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
	}
	if err := sameVersions(w, fileSvc.Weights); err != nil {
		return Change{}, fmt.Errorf("service %q: %w", service, err)
	}
	table, err := cur.Table.WithWeights(service, w)
	if err != nil {
		return Change{}, fmt.Errorf("service %q: %w", service, err)
	}
	if err := ctx.Err(); err != nil {
		return Change{}, err
	}
	// The table laid w out in the declared order; keep that order, so the
	// override reads (and persists) the way the file does.
	w = effectiveWeights(&Snapshot{Table: table}, service)
	overrides := maps.Clone(cur.Overrides)
	if overrides == nil {
		overrides = map[string]split.Weights{}
	}
	overrides[service] = w
	against := maps.Clone(s.fileWeights)
	against[service] = fileSvc.Weights
	rt := cur.runtime()
	rt.owners = withOwner(cur.Owners, service, owner)
	if s.stateFile != "" {
		if err := s.writeState(overrides, against, cur.SHA256, rt); err != nil {
			return Change{}, fmt.Errorf("service %q: %w", service, err)
		}
	}
	old := effectiveWeights(cur, service)
	snap := &Snapshot{
		Table: table, File: cur.File, Overrides: overrides, Owners: rt.owners, Routes: rt.routes, MirrorRoutes: rt.mirrorRoutes,
		SHA256: cur.SHA256, Source: cur.Source, LoadedAt: cur.LoadedAt, Mirrors: cur.Mirrors,
	}
	s.fileWeights = against
	s.log.Info("runtime override set", "service", service, "actor", actor,
		"old", formatWeights(old), "new", formatWeights(w), "owner", owner)
	s.publish(cur, snap)
	return Change{Service: service, Old: old, New: w, Snapshot: snap}, nil
}

// effectiveWeights returns the weights service decides with in snap.
func effectiveWeights(snap *Snapshot, service string) split.Weights {
	if svc, ok := snap.Table.Service(service); ok {
		return svc.Weights
	}
	return nil
}

// publish numbers snap after old and swaps it in; s.mu is held.
func (s *Store) publish(old, snap *Snapshot) {
	if old != nil {
		snap.Generation = old.Generation + 1
	} else {
		snap.Generation = 1
	}
	s.cur.Store(snap)
	if s.onSwap != nil {
		s.onSwap(snap)
	}
}

func serviceIndex(cfg *split.Config, name string) int {
	for i := range cfg.Services {
		if cfg.Services[i].Name == name {
			return i
		}
	}
	return -1
}

func findService(cfg *split.Config, name string) (split.Service, bool) {
	for _, svc := range cfg.Services {
		if svc.Name == name {
			return svc, true
		}
	}
	return split.Service{}, false
}

// sameVersions checks that an override names exactly the versions the
// file declares: the file decides which versions exist (Envoy has a route
// for each), an override only moves shares between them.
func sameVersions(w, file split.Weights) error {
	var errs []error
	for _, x := range w {
		if _, ok := file.Get(x.Version); !ok {
			errs = append(errs, &split.FieldError{Path: "weights." + x.Version,
				Reason: "unknown version (the service has " + versionList(file) + ")"})
		}
	}
	for _, x := range file {
		if _, ok := w.Get(x.Version); !ok {
			errs = append(errs, &split.FieldError{Path: "weights." + x.Version,
				Reason: "missing (give every version of the service, 0 for none)"})
		}
	}
	return errors.Join(errs...)
}

func versionList(w split.Weights) string {
	names := make([]string, len(w))
	for i, x := range w {
		names[i] = x.Version
	}
	return strings.Join(names, ", ")
}

// sameWeights compares as version -> share: the file may reorder versions
// without changing what the override was set against.
func sameWeights(a, b split.Weights) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]int, len(a))
	for _, w := range a {
		m[w.Version] = w.BasisPoints
	}
	for _, w := range b {
		bp, ok := m[w.Version]
		if !ok || bp != w.BasisPoints {
			return false
		}
	}
	return true
}

// formatWeights renders weights for logs: "v1=80 v2=20".
func formatWeights(w split.Weights) string {
	b := make([]byte, 0, 16*len(w))
	for i, x := range w {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, x.Version...)
		b = append(b, '=')
		b = append(b, split.FormatPercent(x.BasisPoints)...)
	}
	return string(b)
}

func nilIfEmpty[V any](m map[string]V) map[string]V {
	if len(m) == 0 {
		return nil
	}
	return m
}
