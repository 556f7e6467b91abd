package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// mirrorRecord is the value of mirrors/<service>: a runtime mirror, the
// configuration's mirror of the service when it was set (null: none),
// which decides whether it still applies (the overrides' rule), and who
// set it when.
type mirrorRecord struct {
	Mirror  split.Mirror  `json:"mirror"`
	Against *split.Mirror `json:"against"`
	SetAt   time.Time     `json:"set_at"`
	Node    string        `json:"node,omitempty"`
	Actor   string        `json:"actor,omitempty"`
	unknown []string      // fields this build does not know
}

func decodeMirror(data []byte) (mirrorRecord, error) {
	var r mirrorRecord
	unknown, err := decodeRecord(data, &r)
	if err != nil {
		return r, err
	}
	r.unknown = unknown
	if r.Mirror.Version == "" {
		return r, errors.New("mirror.version: missing")
	}
	return r, nil
}

// mirrorsLocked returns the runtime mirror records of the state in force
// and the reasons those that cannot be read are left out; s.mu is held.
func (s *Source) mirrorsLocked() (map[string]store.MirrorOverride, map[string]string) {
	out := map[string]store.MirrorOverride{}
	bad := map[string]string{}
	for key, kv := range s.kvs {
		svc := s.keys.mirrorService(key)
		if svc == "" {
			continue
		}
		rec, err := decodeMirror(kv.Value)
		if err != nil {
			bad[svc] = "invalid mirror record: " + err.Error()
			continue
		}
		s.notes.Note(s.log, "runtime mirror record", key, rec.unknown)
		out[svc] = store.MirrorOverride{Mirror: rec.Mirror, Against: rec.Against}
	}
	return out, bad
}

// noteDroppedMirrors logs the runtime mirrors that do not apply, once per
// record version. They are left in etcd (DELETE .../mirror removes one);
// a stale one never applies again unless the configuration's mirror goes
// back to what it was set against. s.mu is held.
func (s *Source) noteDroppedMirrors(dropped, bad map[string]string) {
	all := map[string]string{}
	for k, v := range dropped {
		all[k] = v
	}
	for k, v := range bad {
		all[k] = v
	}
	if s.mirrorDrops == nil {
		s.mirrorDrops = map[string]int64{}
	}
	for svc := range s.mirrorDrops {
		if _, ok := all[svc]; !ok {
			delete(s.mirrorDrops, svc)
		}
	}
	for svc, reason := range all {
		kv := s.kvs[s.keys.Mirror(svc)]
		if kv == nil || s.mirrorDrops[svc] == kv.ModRevision {
			continue
		}
		s.mirrorDrops[svc] = kv.ModRevision
		s.log.Warn("runtime mirror in etcd does not apply", "service", svc, "key", s.keys.Mirror(svc), "reason", reason)
	}
}

// SetMirror writes service's runtime mirror to etcd (compare-and-swap
// against the document it was validated with) and answers once this
// replica applied it.
func (s *Source) SetMirror(ctx context.Context, service string, m split.Mirror, actor string) (store.MirrorChange, error) {
	return s.mutateMirror(ctx, service, actor, &m, nil)
}

// ClearMirror deletes service's runtime mirror from etcd.
func (s *Source) ClearMirror(ctx context.Context, service string, actor string) (store.MirrorChange, error) {
	return s.mutateMirror(ctx, service, actor, nil, nil)
}

// mutateMirror is mutate for mirrors/<service>: read the document and the
// record at one revision, check m against that document, write (m nil:
// delete) if neither changed meanwhile, else read again. A fence adds
// comparisons the write is conditional on (a rollout's state revision,
// the leader's key).
func (s *Source) mutateMirror(ctx context.Context, service, actor string, m *split.Mirror, fence []clientv3.Cmp) (store.MirrorChange, error) {
	c := s.client.Load()
	if c == nil || !s.conn.Load().connected {
		return store.MirrorChange{}, errUnavailable("not connected; the change was not made")
	}
	if m != nil {
		if err := s.requireFeature(ctx, FeatureMirrors); err != nil {
			return store.MirrorChange{}, err
		}
	}
	cfgKey, key := s.keys.Config(), s.keys.Mirror(service)
	for range maxWriteAttempts {
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		read, err := c.Txn(rctx).Then(clientv3.OpGet(cfgKey), clientv3.OpGet(key)).Commit()
		cancel()
		if err != nil {
			return store.MirrorChange{}, errUnavailable("read: " + err.Error())
		}
		cfgKV := firstKV(read.Responses[0].GetResponseRange().Kvs)
		recKV := firstKV(read.Responses[1].GetResponseRange().Kvs)
		base, err := s.baseTable(cfgKV)
		if err != nil {
			return store.MirrorChange{}, err
		}
		fileSvc, ok := base.Service(service)
		if !ok {
			return store.MirrorChange{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
		}
		current := fileSvc.Mirror
		if recKV != nil {
			if rec, err := decodeMirror(recKV.Value); err == nil && rec.Against.Equal(fileSvc.Mirror) {
				cm := rec.Mirror
				current = &cm
			}
		}
		var op clientv3.Op
		next := fileSvc.Mirror
		if m == nil {
			if recKV == nil {
				return store.MirrorChange{Service: service, Old: current, New: current, Snapshot: s.store.Load(), Revision: read.Header.Revision}, nil
			}
			op = clientv3.OpDelete(key)
		} else {
			if err := store.CheckMirror(fileSvc, *m); err != nil {
				return store.MirrorChange{}, fmt.Errorf("service %q: %w", service, err)
			}
			if len(fence) > 0 && current.Equal(m) {
				return store.MirrorChange{Service: service, Old: current, New: m, Snapshot: s.store.Load(), Revision: read.Header.Revision}, nil
			}
			val, err := json.Marshal(mirrorRecord{Mirror: *m, Against: fileSvc.Mirror, SetAt: s.now().UTC(), Node: s.opts.NodeID, Actor: actor})
			if err != nil {
				return store.MirrorChange{}, err
			}
			op, next = clientv3.OpPut(key, string(val)), m
		}
		wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		cmps := append([]clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(cfgKey), "=", modRev(cfgKV)),
			clientv3.Compare(clientv3.ModRevision(key), "=", modRev(recKV)),
		}, fence...)
		resp, err := c.Txn(wctx).If(cmps...).Then(op).Commit()
		cancel()
		if err != nil {
			return store.MirrorChange{}, errUnavailable("write (outcome unknown; GET the service to see): " + err.Error())
		}
		if !resp.Succeeded {
			if len(fence) > 0 {
				if held, err := s.holds(ctx, c, fence); err != nil {
					return store.MirrorChange{}, err
				} else if !held {
					return store.MirrorChange{}, fmt.Errorf("service %q: mirror not written: %w", service, rollout.ErrStale)
				}
			}
			s.m.conflicts.Inc()
			continue
		}
		rev := resp.Header.Revision
		s.log.Info("runtime mirror written to etcd", "service", service, "actor", actor,
			"old", describeMirror(current), "new", describeMirror(next), "revision", rev)
		wctx, cancel = context.WithTimeout(ctx, s.follow.c.applyWait)
		werr := s.waitApplied(wctx, rev)
		cancel()
		if werr != nil {
			s.log.Warn("committed to etcd but not yet applied here", "service", service, "revision", rev, "error", werr)
		}
		return store.MirrorChange{Service: service, Old: current, New: next, Snapshot: s.store.Load(), Revision: rev}, nil
	}
	return store.MirrorChange{}, errUnavailable(fmt.Sprintf("%d concurrent writes in a row won over this one; try again", maxWriteAttempts))
}

func describeMirror(m *split.Mirror) string {
	if m == nil {
		return "none"
	}
	return m.Version + " " + split.FormatPercent(int(m.Percent)) + "%"
}

// SetMirror implements rollout.MirrorMutator: the Source's write.
func (r *Rollouts) SetMirror(ctx context.Context, service string, m split.Mirror, actor string) (store.MirrorChange, error) {
	return r.src.SetMirror(ctx, service, m, actor)
}

// ClearMirror implements rollout.MirrorMutator: the Source's delete.
func (r *Rollouts) ClearMirror(ctx context.Context, service string, actor string) (store.MirrorChange, error) {
	return r.src.ClearMirror(ctx, service, actor)
}

// SetStateMirror implements rollout.StateMirrorMutator: a shadow step's
// mirror (m nil: its removal) written on the condition that
// rollouts/<service> is still at st.Revision and the leadership of ctx
// holds.
func (r *Rollouts) SetStateMirror(ctx context.Context, st rollout.State, m *split.Mirror) (store.MirrorChange, error) {
	f := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(r.keys.Rollout(st.Service)), "=", st.Revision)}, fence(ctx)...)
	return r.src.mutateMirror(ctx, st.Service, rollout.Actor, m, f)
}
