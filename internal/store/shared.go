package store

import (
	"errors"
	"maps"

	"github.com/trafficsplit/splitter/split"
)

// Override is an override as a shared store (etcd) holds it: the weights
// and the configuration's weights for the service when it was set, which
// decide whether it still applies (the same survival rule as the state
// file's).
type Override struct {
	Weights split.Weights
	// Against are the configuration's weights the override was set
	// against; nil means unknown, and such an override never applies.
	Against split.Weights
	// Owner names the controller that set the override ("" for none).
	Owner string
}

// Revisions say what a shared store's state is as of: State is the
// revision of the whole state (configuration and overrides), Config the
// revision of the configuration document decided on (Snapshot.Revision
// and Snapshot.ConfigRevision).
type Revisions struct {
	State, Config int64
}

// ApplyShared is ApplySharedAt at revision, the configuration's revision
// unknown (0).
func (s *Store) ApplyShared(cfg *split.Config, sha, source string, revision int64, overrides map[string]Override) (snap *Snapshot, dropped map[string]string, err error) {
	return s.ApplySharedAt(cfg, sha, source, Revisions{State: revision}, overrides)
}

// ApplySharedAt publishes cfg with exactly the given overrides in force,
// for a configuration that lives in a shared store rather than a file:
// the store holds no overrides of its own and writes no state file; the
// caller passes the whole state (configuration and overrides) as of at.
//
// An override applies only when the configuration still has the weights
// it was set against, names the same versions and sums to 100; the others
// are left out and returned in dropped (service -> reason), so the caller
// can report them. The configuration is compiled once with the applying
// overrides in place (services whose effective weights did not change keep
// their round-robin position). An error means the configuration itself is
// invalid: nothing changes.
func (s *Store) ApplySharedAt(cfg *split.Config, sha, source string, at Revisions, overrides map[string]Override) (snap *Snapshot, dropped map[string]string, err error) {
	snap, drops, err := s.applyShared(cfg, sha, source, at, SharedState{Overrides: overrides})
	return snap, drops.Overrides, err
}

// ApplySharedState is ApplySharedAt with the runtime mirrors and the
// runtime routes of the shared store in force too. A mirror applies as
// ApplySharedMirrors says; a route (service -> its routes, in any order)
// that does not fit the configuration (its service or version gone, its
// name taken by a rule, it does not compile) is left out and returned in
// droppedRoutes ("service/name" -> reason): the configuration is never
// refused because of one.
func (s *Store) ApplySharedState(cfg *split.Config, sha, source string, at Revisions, overrides map[string]Override,
	mirrors map[string]MirrorOverride, routes map[string][]Route) (snap *Snapshot, dropped, droppedMirrors, droppedRoutes map[string]string, err error) {
	snap, drops, err := s.ApplySharedRuntime(cfg, sha, source, at, SharedState{Overrides: overrides, Mirrors: mirrors, Routes: routes})
	return snap, drops.Overrides, drops.Mirrors, drops.Routes, err
}

// SharedState is what a shared store (etcd) holds besides the
// configuration: the overrides, the runtime mirrors, the runtime routes
// and the runtime mirror routes (service -> its routes, in any order).
type SharedState struct {
	Overrides    map[string]Override
	Mirrors      map[string]MirrorOverride
	Routes       map[string][]Route
	MirrorRoutes map[string][]MirrorRoute
}

// SharedDrops are the parts of a SharedState that do not apply, and why:
// overrides and mirrors by service, routes and mirror routes by
// "service/name"; nil when none.
type SharedDrops struct {
	Overrides, Mirrors, Routes, MirrorRoutes map[string]string
}

// ApplySharedRuntime is ApplySharedState with the runtime mirror routes
// too, which apply as the runtime routes do: one that does not fit the
// configuration (its service or version gone, it does not compile) is
// left out and returned in SharedDrops.MirrorRoutes.
func (s *Store) ApplySharedRuntime(cfg *split.Config, sha, source string, at Revisions, st SharedState) (*Snapshot, SharedDrops, error) {
	return s.applyShared(cfg, sha, source, at, st)
}

// applyShared is ApplySharedRuntime.
func (s *Store) applyShared(cfg *split.Config, sha, source string, at Revisions, st SharedState) (snap *Snapshot, drops SharedDrops, err error) {
	if cfg == nil {
		return nil, SharedDrops{}, errors.New("apply: nil configuration")
	}
	overrides := st.Overrides
	mirrors := make(map[string]split.Mirror, len(st.Mirrors))
	mirrorAgainst := make(map[string]*split.Mirror, len(st.Mirrors))
	for name, m := range st.Mirrors {
		mirrors[name], mirrorAgainst[name] = m.Mirror, m.Against
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.check != nil {
		if err := s.check(cfg); err != nil {
			return nil, SharedDrops{}, err
		}
	}
	cfg = cfg.Clone()
	effective := cfg.Clone()
	kept := map[string]split.Weights{}
	against := map[string]split.Weights{}
	owners := map[string]string{}
	dropped := map[string]string{}
	for _, name := range sortedKeys(overrides) {
		o := overrides[name]
		i := serviceIndex(effective, name)
		reason := ""
		switch {
		case i < 0:
			reason = "service not in the configuration"
		case o.Against == nil:
			reason = "configuration weights at the time of the override are unknown"
		case !sameWeights(o.Against, effective.Services[i].Weights):
			reason = "the configuration changed the service's weights"
		default:
			if err := sameVersions(o.Weights, effective.Services[i].Weights); err != nil {
				reason = "override not valid: " + err.Error()
			} else if o.Weights.Sum() != split.Buckets {
				reason = "override not valid: weights sum to " + split.FormatPercent(o.Weights.Sum()) + ", not 100"
			}
		}
		if reason != "" {
			dropped[name] = reason
			continue
		}
		w := split.InDeclaredOrder(o.Weights, effective.Services[i].Weights)
		against[name] = effective.Services[i].Weights
		effective.Services[i].Weights = w
		kept[name] = w
		if o.Owner != "" {
			owners[name] = o.Owner
		}
	}
	mj := judgeMirrors(effective, mirrors, mirrorAgainst, false)
	old := s.cur.Load()
	var prev *split.Table
	if old != nil {
		prev = old.Table
	}
	var sorted runtimeRoutes
	for service, rs := range st.Routes {
		for _, r := range rs {
			sorted.routes = addNamed(sorted.routes, service, r)
		}
	}
	for service, rs := range st.MirrorRoutes {
		for _, r := range rs {
			sorted.mirrorRoutes = addNamed(sorted.mirrorRoutes, service, r)
		}
	}
	table, keptRoutes, routeDrops, err := compileWithRoutes(prev, effective, sorted)
	if err != nil {
		return nil, SharedDrops{}, err
	}
	loadedAt := s.now()
	if old != nil && old.SHA256 == sha && old.Source == source {
		loadedAt = old.LoadedAt // the configuration did not change, only overrides
	}
	snap = &Snapshot{
		Table:          table,
		File:           cfg,
		Overrides:      nilIfEmpty(kept),
		Owners:         nilIfEmpty(owners),
		Routes:         keptRoutes.routes,
		MirrorRoutes:   keptRoutes.mirrorRoutes,
		SHA256:         sha,
		Source:         source,
		LoadedAt:       loadedAt,
		Revision:       at.State,
		ConfigRevision: at.Config,
		Mirrors:        nilIfEmpty(mj.kept),
	}
	// The last error is the caller's to keep or clear: a rejected
	// configuration stays reported while overrides apply on the last good.
	s.fileWeights = against
	s.mirrors, s.mirrorAgainst = mj.kept, mj.against
	s.pending = nil
	s.publish(old, snap)
	drops = SharedDrops{Overrides: nilIfEmpty(dropped), Mirrors: nilIfEmpty(mj.drops),
		Routes: nilIfEmpty(routeDrops.routes), MirrorRoutes: nilIfEmpty(routeDrops.mirrorRoutes)}
	return snap, drops, nil
}

// OverridesEqual reports whether two override sets are the same (service,
// weights and the weights they were set against).
func OverridesEqual(a, b map[string]Override) bool {
	return maps.EqualFunc(a, b, func(x, y Override) bool {
		return x.Weights.Equal(y.Weights) && x.Against.Equal(y.Against) && x.Owner == y.Owner
	})
}

// ErrUnavailable wraps errors of a shared store that cannot be reached
// (or kept losing to concurrent writers): the change was not made, and
// trying again later may succeed.
var ErrUnavailable = errors.New("shared store unavailable")

// CheckVersions checks that override weights w name exactly the versions
// of the configuration's weights file: an override moves shares, the
// configuration decides which versions exist (Envoy has a route for each).
func CheckVersions(w, file split.Weights) error { return sameVersions(w, file) }
