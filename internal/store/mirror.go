package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"

	"github.com/trafficsplit/splitter/split"
)

// A runtime mirror replaces one service's mirror (PUT
// /v1/services/{name}/mirror, an Argo Rollouts SetMirrorRoute, a
// rollout's shadow step). It follows the overrides' rules: it survives a
// reload only while the file's mirror of that service is the one it was
// set against (so removing or changing the mirror in the file wins and
// stops it), it persists in the state file, and in fleet mode it lives in
// etcd (mirrors/<service>) and applies on every replica.

// MirrorChange is what a mirror mutation did to one service: the mirror
// in force before and after (nil: none) and the snapshot published.
type MirrorChange struct {
	Service  string
	Old, New *split.Mirror
	Snapshot *Snapshot
	// Revision is the etcd revision that committed the change (fleet
	// mode); 0 when the change was made in this process only.
	Revision int64
}

// MirrorOverride is a runtime mirror as a shared store (etcd) holds it:
// the mirror and the configuration's mirror of the service when it was
// set (nil: none), which decides whether it still applies.
type MirrorOverride struct {
	Mirror  split.Mirror
	Against *split.Mirror
}

// EffectiveMirror returns the mirror service decides with in snap (nil:
// none).
func EffectiveMirror(snap *Snapshot, service string) *split.Mirror {
	if snap == nil || snap.Table == nil {
		return nil
	}
	if svc, ok := snap.Table.Service(service); ok {
		return svc.Mirror
	}
	return nil
}

// CheckMirror validates a mirror for service's configuration svc: a
// declared version, a percent from 0 to 100. Errors are *split.FieldError
// with paths mirror.version and mirror.percent.
func CheckMirror(svc split.Service, m split.Mirror) error {
	var errs []error
	if _, ok := svc.Weights.Get(m.Version); !ok {
		errs = append(errs, &split.FieldError{Path: "mirror.version",
			Reason: fmt.Sprintf("unknown version %q (the service has %s)", m.Version, versionList(svc.Weights))})
	}
	if m.Percent < 0 || m.Percent > split.Buckets {
		errs = append(errs, &split.FieldError{Path: "mirror.percent",
			Reason: "must be between 0 and 100 (got " + split.FormatPercent(int(m.Percent)) + ")"})
	}
	return errors.Join(errs...)
}

// mirrorJudgement is which runtime mirrors survive a configuration.
type mirrorJudgement struct {
	kept    map[string]split.Mirror
	against map[string]*split.Mirror
	drops   map[string]string // service -> reason
}

// judgeMirrors applies the runtime mirrors that survive effective to it
// (in place) and says which were dropped. unknownAgainst: the mirrors come
// from a state file written for another configuration, so one without
// its file mirror recorded cannot be trusted.
func judgeMirrors(effective *split.Config, mirrors map[string]split.Mirror, against map[string]*split.Mirror, unknownAgainst bool) mirrorJudgement {
	j := mirrorJudgement{kept: map[string]split.Mirror{}, against: map[string]*split.Mirror{}, drops: map[string]string{}}
	for _, name := range sortedKeys(mirrors) {
		m := mirrors[name]
		i := serviceIndex(effective, name)
		a, known := against[name]
		reason := ""
		switch {
		case i < 0:
			reason = "service no longer in the configuration"
		case !known && unknownAgainst:
			reason = "the file's mirror at the time it was set is unknown"
		case !a.Equal(effective.Services[i].Mirror):
			reason = "the configuration changed the service's mirror"
		default:
			if err := CheckMirror(effective.Services[i], m); err != nil {
				reason = "mirror no longer valid: " + err.Error()
			}
		}
		if reason != "" {
			j.drops[name] = reason
			continue
		}
		j.against[name] = effective.Services[i].Mirror
		c := m
		effective.Services[i].Mirror = &c
		j.kept[name] = m
	}
	return j
}

func (j mirrorJudgement) log(log *slog.Logger, source string) {
	for _, name := range sortedKeys(j.drops) {
		log.Warn("runtime mirror cleared by the configuration", "service", name, "reason", j.drops[name], "source", source)
	}
}

// SetMirror sets service's mirror at runtime, in place of the file's.
// Errors wrap split.ErrUnknownService for an unknown service; an invalid
// mirror gives a *split.FieldError (mirror.version, mirror.percent).
func (s *Store) SetMirror(ctx context.Context, service string, m split.Mirror, actor string) (MirrorChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return MirrorChange{}, ErrNoConfig
	}
	fileSvc, ok := cur.FileService(service)
	if !ok {
		return MirrorChange{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
	}
	if err := CheckMirror(fileSvc, m); err != nil {
		return MirrorChange{}, fmt.Errorf("service %q: %w", service, err)
	}
	table, err := cur.Table.WithMirror(service, &m)
	if err != nil {
		return MirrorChange{}, fmt.Errorf("service %q: %w", service, err)
	}
	if err := ctx.Err(); err != nil {
		return MirrorChange{}, err
	}
	mirrors := maps.Clone(cur.Mirrors)
	if mirrors == nil {
		mirrors = map[string]split.Mirror{}
	}
	mirrors[service] = m
	against := maps.Clone(s.mirrorAgainst)
	if against == nil {
		against = map[string]*split.Mirror{}
	}
	against[service] = fileSvc.Mirror
	if err := s.persistMirrors(cur, mirrors, against); err != nil {
		return MirrorChange{}, fmt.Errorf("service %q: %w", service, err)
	}
	old := EffectiveMirror(cur, service)
	snap := &Snapshot{
		Table: table, File: cur.File, Overrides: cur.Overrides, Mirrors: mirrors, Owners: cur.Owners, Routes: cur.Routes,
		MirrorRoutes: cur.MirrorRoutes, SHA256: cur.SHA256, Source: cur.Source, LoadedAt: cur.LoadedAt, Revision: cur.Revision,
	}
	s.log.Info("runtime mirror set", "service", service, "actor", actor, "old", formatMirror(old), "new", formatMirror(&m))
	s.publish(cur, snap)
	return MirrorChange{Service: service, Old: old, New: &m, Snapshot: snap}, nil
}

// ClearMirror removes service's runtime mirror: the file's applies again
// (or none). Clearing a service without one changes nothing.
func (s *Store) ClearMirror(ctx context.Context, service string, actor string) (MirrorChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return MirrorChange{}, ErrNoConfig
	}
	fileSvc, ok := cur.FileService(service)
	if !ok {
		return MirrorChange{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
	}
	old := EffectiveMirror(cur, service)
	if _, ok := cur.Mirrors[service]; !ok {
		return MirrorChange{Service: service, Old: old, New: old, Snapshot: cur}, nil
	}
	if err := ctx.Err(); err != nil {
		return MirrorChange{}, err
	}
	table, err := cur.Table.WithMirror(service, fileSvc.Mirror)
	if err != nil {
		return MirrorChange{}, fmt.Errorf("service %q: restore the file's mirror: %w", service, err)
	}
	mirrors := maps.Clone(cur.Mirrors)
	delete(mirrors, service)
	against := maps.Clone(s.mirrorAgainst)
	delete(against, service)
	if err := s.persistMirrors(cur, mirrors, against); err != nil {
		return MirrorChange{}, fmt.Errorf("service %q: %w", service, err)
	}
	snap := &Snapshot{
		Table: table, File: cur.File, Overrides: cur.Overrides, Mirrors: nilIfEmpty(mirrors), Owners: cur.Owners, Routes: cur.Routes,
		MirrorRoutes: cur.MirrorRoutes, SHA256: cur.SHA256, Source: cur.Source, LoadedAt: cur.LoadedAt, Revision: cur.Revision,
	}
	s.log.Info("runtime mirror cleared", "service", service, "actor", actor, "old", formatMirror(old), "new", formatMirror(fileSvc.Mirror))
	s.publish(cur, snap)
	return MirrorChange{Service: service, Old: old, New: fileSvc.Mirror, Snapshot: snap}, nil
}

// persistMirrors makes mirrors the ones in force and writes the state
// file (when there is one); on a write error nothing changes. s.mu is
// held.
func (s *Store) persistMirrors(cur *Snapshot, mirrors map[string]split.Mirror, against map[string]*split.Mirror) error {
	prevM, prevA := s.mirrors, s.mirrorAgainst
	s.mirrors, s.mirrorAgainst = mirrors, against
	if s.stateFile == "" {
		return nil
	}
	if err := s.writeState(cur.Overrides, s.fileWeights, cur.SHA256, cur.runtime()); err != nil {
		s.mirrors, s.mirrorAgainst = prevM, prevA
		return err
	}
	return nil
}

// ApplySharedMirrors is ApplySharedAt with the runtime mirrors of the shared
// store: each applies only while the configuration's mirror of its
// service is the one it was set against and it is valid; the others are
// returned in droppedMirrors (service -> reason).
func (s *Store) ApplySharedMirrors(cfg *split.Config, sha, source string, at Revisions, overrides map[string]Override,
	mirrors map[string]MirrorOverride) (snap *Snapshot, dropped, droppedMirrors map[string]string, err error) {
	snap, drops, err := s.applyShared(cfg, sha, source, at, SharedState{Overrides: overrides, Mirrors: mirrors})
	return snap, drops.Overrides, drops.Mirrors, err
}

// MirrorsEqual reports whether two sets of shared runtime mirrors are the
// same.
func MirrorsEqual(a, b map[string]MirrorOverride) bool {
	return maps.EqualFunc(a, b, func(x, y MirrorOverride) bool {
		return x.Mirror == y.Mirror && x.Against.Equal(y.Against)
	})
}

func formatMirror(m *split.Mirror) string {
	if m == nil {
		return "none"
	}
	return m.Version + "=" + split.FormatPercent(int(m.Percent)) + "%"
}
