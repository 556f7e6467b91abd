package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/compat"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// Runtime mirror routes live at live-mirror-routes/<service>/<route>, one
// key per mirror route, in the range every replica reads and watches
// ("live-mirror-routes/" sorts before "replicas/"), so a change to one is
// applied in the same snapshot as the configuration and the rest of the
// runtime state. Written like the runtime routes: a compare-and-swap on
// the document and the key (and, for an owned one, the service's rollout
// state), answered once this replica applied the commit.

// LiveMirrorRoutes is the prefix of the runtime mirror routes' keys.
func (k Keys) LiveMirrorRoutes() string { return k.Prefix + "live-mirror-routes/" }

// LiveMirrorRoute is the key of service's runtime mirror route name.
func (k Keys) LiveMirrorRoute(service, name string) string {
	return k.LiveMirrorRoutes() + service + "/" + name
}

// liveMirrorRoute returns the service and mirror route a key names, or
// "", "".
func (k Keys) liveMirrorRoute(key string) (service, name string) {
	rest, ok := strings.CutPrefix(key, k.LiveMirrorRoutes())
	if !ok {
		return "", ""
	}
	service, name, ok = strings.Cut(rest, "/")
	if !ok || service == "" || name == "" || strings.Contains(name, "/") {
		return "", ""
	}
	return service, name
}

func (k Keys) isLiveMirrorRoute(key string) bool {
	svc, _ := k.liveMirrorRoute(key)
	return svc != ""
}

// mirrorRouteRecord is the value of live-mirror-routes/<service>/<route>:
//
//	{"when": [{"header": "x-canary", "exact": "true"}], "version": "canary", "percent": 50,
//	 "owner": "argo-rollouts:shop/api", "set_at": "...", "node": "pod-a", "actor": "token:0a1b2c3d4e5f"}
type mirrorRouteRecord struct {
	When    []split.Condition `json:"when"`
	Version string            `json:"version"`
	Percent split.Percent     `json:"percent"`
	Owner   string            `json:"owner,omitempty"`
	SetAt   time.Time         `json:"set_at"`
	Node    string            `json:"node,omitempty"`
	Actor   string            `json:"actor,omitempty"`
	unknown []string          // fields this build does not know
}

func decodeMirrorRoute(data []byte) (mirrorRouteRecord, error) {
	var r mirrorRouteRecord
	if len(data) > maxRecordBytes {
		return r, fmt.Errorf("larger than %d bytes", maxRecordBytes)
	}
	// Fields a newer build added are ignored (and named once in the
	// log by the reader); the ones this build knows are checked.
	unknown, err := compat.DecodeObject(data, &r)
	if err != nil {
		return r, err
	}
	r.unknown = unknown
	if len(r.When) == 0 || r.Version == "" {
		return r, errors.New("when and version are required")
	}
	if r.Percent < 0 || r.Percent > split.Buckets {
		return r, errors.New("percent must be between 0 and 100")
	}
	if r.Owner != "" {
		if err := store.CheckOwner(r.Owner); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (r mirrorRouteRecord) mirrorRoute(name string) store.MirrorRoute {
	return store.MirrorRoute{Name: name, When: r.When, Version: r.Version, Percent: r.Percent, Owner: r.Owner}
}

// mirrorRoutesLocked collects the runtime mirror routes of the mirror
// (service -> its mirror routes) and the keys whose record cannot be read
// (key -> why); s.mu is held.
func (s *Source) mirrorRoutesLocked() (map[string][]store.MirrorRoute, map[string]string) {
	routes := map[string][]store.MirrorRoute{}
	bad := map[string]string{}
	for key, kv := range s.kvs {
		service, name := s.keys.liveMirrorRoute(key)
		if service == "" {
			continue
		}
		rec, err := decodeMirrorRoute(kv.Value)
		if err == nil {
			err = store.CheckRouteName(name)
		}
		if err != nil {
			bad[key] = "invalid mirror route record: " + err.Error()
			continue
		}
		s.notes.Note(s.log, "mirror route record", key, rec.unknown)
		routes[service] = append(routes[service], rec.mirrorRoute(name))
	}
	return routes, bad
}

// noteMirrorRoutesDropped logs each mirror route of the mirror that is
// not in force (dropped by the store, keyed "service/name", or unreadable,
// keyed by its etcd key), once per version of its record; s.mu is held.
// Like a route, one that does not fit is left in etcd: it applies again
// when the configuration fits it again, and DELETE removes it.
func (s *Source) noteMirrorRoutesDropped(dropped, bad map[string]string) {
	all := map[string]string{}
	for name, reason := range dropped {
		all[s.keys.LiveMirrorRoutes()+name] = reason
	}
	for key, reason := range bad {
		all[key] = reason
	}
	if s.mirrorRoutesDropped == nil {
		s.mirrorRoutesDropped = map[string]int64{}
	}
	for key := range s.mirrorRoutesDropped {
		if _, ok := all[key]; !ok {
			delete(s.mirrorRoutesDropped, key)
		}
	}
	for key, reason := range all {
		kv := s.kvs[key]
		if kv == nil || s.mirrorRoutesDropped[key] == kv.ModRevision {
			continue
		}
		s.mirrorRoutesDropped[key] = kv.ModRevision
		s.log.Warn("runtime mirror route in etcd does not apply", "key", key, "reason", reason)
	}
}

// PutMirrorRoute writes service's runtime mirror route r to etcd: a
// compare-and-swap on the document and the mirror route's key (and, when
// r has an owner, the service's rollout state, which must not be
// progressing or paused: rollout.ErrDriven), computed against the
// document and the service's other mirror routes read at one revision.
// It answers once this replica applied the commit. Errors as
// store.PutMirrorRoute's, and store.ErrUnavailable.
func (s *Source) PutMirrorRoute(ctx context.Context, service string, r store.MirrorRoute, actor string) (store.MirrorRouteChange, error) {
	if err := store.CheckRouteName(r.Name); err != nil {
		return store.MirrorRouteChange{}, err
	}
	if err := s.requireFeature(ctx, FeatureLiveMirrorRoutes); err != nil {
		return store.MirrorRouteChange{}, err
	}
	var out store.MirrorRouteChange
	rev, err := s.casMirrorRoute(ctx, service, r.Name, r.Owner != "", func(base *split.Table, cur *mvccpb.KeyValue, others []store.MirrorRoute) (clientv3.Op, bool, error) {
		out = store.MirrorRouteChange{Service: service, New: &r}
		if cur != nil {
			if old, err := decodeMirrorRoute(cur.Value); err == nil {
				o := old.mirrorRoute(r.Name)
				out.Old = &o
				if o.Owner != r.Owner {
					return clientv3.Op{}, false, &store.OwnerError{Service: service, What: fmt.Sprintf("mirror route %q", r.Name), Owner: o.Owner, Want: r.Owner}
				}
				if o.Equal(r) {
					return clientv3.Op{}, false, nil
				}
			}
		}
		if err := store.CheckMirrorRoute(base.Config(), service, others, r); err != nil {
			return clientv3.Op{}, false, err
		}
		val, err := json.Marshal(mirrorRouteRecord{When: r.When, Version: r.Version, Percent: r.Percent, Owner: r.Owner,
			SetAt: s.now().UTC(), Node: s.opts.NodeID, Actor: actor})
		if err != nil {
			return clientv3.Op{}, false, err
		}
		return clientv3.OpPut(s.keys.LiveMirrorRoute(service, r.Name), string(val)), true, nil
	})
	if err != nil {
		return store.MirrorRouteChange{}, err
	}
	out.Snapshot, out.Revision = s.store.Load(), rev
	return out, nil
}

// DeleteMirrorRoute deletes service's runtime mirror route name from
// etcd; with owner set, only one of that owner (*store.OwnerError
// otherwise). Deleting one that is not there changes nothing.
func (s *Source) DeleteMirrorRoute(ctx context.Context, service, name, owner, actor string) (store.MirrorRouteChange, error) {
	if err := store.CheckRouteName(name); err != nil {
		return store.MirrorRouteChange{}, err
	}
	var out store.MirrorRouteChange
	rev, err := s.casMirrorRoute(ctx, service, name, false, func(base *split.Table, cur *mvccpb.KeyValue, _ []store.MirrorRoute) (clientv3.Op, bool, error) {
		out = store.MirrorRouteChange{Service: service}
		if cur == nil {
			if _, ok := base.Service(service); !ok {
				return clientv3.Op{}, false, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
			}
			return clientv3.Op{}, false, nil
		}
		if old, err := decodeMirrorRoute(cur.Value); err == nil {
			o := old.mirrorRoute(name)
			out.Old = &o
			if owner != "" && o.Owner != owner {
				return clientv3.Op{}, false, &store.OwnerError{Service: service, What: fmt.Sprintf("mirror route %q", name), Owner: o.Owner, Want: owner}
			}
		} else if owner != "" {
			// An unreadable record names no owner: only an operator
			// (no owner) removes it.
			return clientv3.Op{}, false, &store.OwnerError{Service: service, What: fmt.Sprintf("mirror route %q", name), Want: owner}
		}
		s.log.Info("runtime mirror route removed from etcd", "service", service, "mirror_route", name, "actor", actor)
		return clientv3.OpDelete(s.keys.LiveMirrorRoute(service, name)), true, nil
	})
	if err != nil {
		return store.MirrorRouteChange{}, err
	}
	out.Snapshot, out.Revision = s.store.Load(), rev
	return out, nil
}

// casMirrorRoute runs a mirror route mutation: read the document, the
// mirror route's key, the service's other mirror routes and (owned: a
// controller's) the service's rollout state at one revision, let compute
// decide the operation (write false: nothing to do), and commit it if
// none of the keys it read changed meanwhile (else read again). It waits
// until this replica applied the commit, and returns the commit's
// revision (or, with nothing to write, the read's).
func (s *Source) casMirrorRoute(ctx context.Context, service, name string, owned bool,
	compute func(base *split.Table, cur *mvccpb.KeyValue, others []store.MirrorRoute) (op clientv3.Op, write bool, err error)) (int64, error) {
	c := s.client.Load()
	if c == nil || !s.conn.Load().connected {
		return 0, errUnavailable("not connected; the change was not made")
	}
	cfgKey, key, roKey := s.keys.Config(), s.keys.LiveMirrorRoute(service, name), s.keys.Rollout(service)
	svcPrefix := s.keys.LiveMirrorRoutes() + service + "/"
	for range maxWriteAttempts {
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		read, err := c.Txn(rctx).Then(clientv3.OpGet(cfgKey), clientv3.OpGet(key), clientv3.OpGet(svcPrefix, clientv3.WithPrefix()), clientv3.OpGet(roKey)).Commit()
		cancel()
		if err != nil {
			return 0, errUnavailable("read: " + err.Error())
		}
		cfgKV := firstKV(read.Responses[0].GetResponseRange().Kvs)
		cur := firstKV(read.Responses[1].GetResponseRange().Kvs)
		roKV := firstKV(read.Responses[3].GetResponseRange().Kvs)
		var others []store.MirrorRoute
		for _, kv := range read.Responses[2].GetResponseRange().Kvs {
			svc, other := s.keys.liveMirrorRoute(string(kv.Key))
			if svc != service || other == name {
				continue
			}
			if rec, err := decodeMirrorRoute(kv.Value); err == nil {
				others = append(others, rec.mirrorRoute(other))
			}
		}
		if owned && roKV != nil {
			var st struct {
				Phase rollout.Phase `json:"phase"`
			}
			if err := json.Unmarshal(roKV.Value, &st); err == nil && st.Phase.Drives() {
				return 0, fmt.Errorf("service %q: %w (%s): abort it first (POST /v1/services/%s/rollout {\"action\": \"abort\"})",
					service, rollout.ErrDriven, st.Phase, service)
			}
		}
		base, err := s.baseTable(cfgKV)
		if err != nil {
			return 0, err
		}
		op, write, err := compute(base, cur, others)
		if err != nil {
			return 0, err
		}
		if !write {
			return read.Header.Revision, nil
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(cfgKey), "=", modRev(cfgKV)),
			clientv3.Compare(clientv3.ModRevision(key), "=", modRev(cur)),
		}
		if owned {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(roKey), "=", modRev(roKV)))
		}
		wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		resp, err := c.Txn(wctx).If(cmps...).Then(op).Commit()
		cancel()
		if err != nil {
			return 0, errUnavailable("write (outcome unknown; GET the service to see): " + err.Error())
		}
		if !resp.Succeeded {
			s.m.conflicts.Inc()
			continue
		}
		rev := resp.Header.Revision
		wctx, cancel = context.WithTimeout(ctx, s.follow.c.applyWait)
		werr := s.waitApplied(wctx, rev)
		cancel()
		if werr != nil {
			s.log.Warn("committed to etcd but not yet applied here", "key", key, "revision", rev, "error", werr)
		}
		return rev, nil
	}
	return 0, errUnavailable(fmt.Sprintf("%d concurrent writes in a row won over this one; try again", maxWriteAttempts))
}
