package fleet

import (
	"context"
	"encoding/json"
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

// The runtime routes and the runtime mirror routes are kept in etcd the
// same way, one key per route under a prefix of their kind; what differs
// between the two kinds is in a liveKind, and the logic lives once here.

// liveKind is what sets one kind of runtime route apart in etcd.
type liveKind[R any] struct {
	what    string // in errors and logs: "route", "mirror route"
	logKey  string // the log attribute naming one: "route", "mirror_route"
	note    string // what the log calls a record with unknown fields
	feature string // the fleet feature a write needs
	prefix  string // of the keys: live-routes/, live-mirror-routes/
	// rollouts: a write with an owner (a controller's) also needs the
	// service's rollout state not to drive it, read and compared in the
	// same transaction.
	rollouts bool
	decode   func(data []byte, name string) (r R, unknown []string, err error)
	encode   func(r R, at time.Time, node, actor string) ([]byte, error)
	check    func(cfg *split.Config, service string, others []R, r R) error
}

// decodeRecord decodes data, a record of at most maxRecordBytes, into v
// and returns the fields a newer build added: they are ignored (and named
// once in the log by the reader); the ones this build knows are checked.
func decodeRecord(data []byte, v any) ([]string, error) {
	if len(data) > maxRecordBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxRecordBytes)
	}
	return compat.DecodeObject(data, v)
}

// liveNamed returns the service and route a key under prefix names, or
// "", "".
func (k Keys) liveNamed(prefix, key string) (service, name string) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", ""
	}
	service, name, ok = strings.Cut(rest, "/")
	if !ok || service == "" || name == "" || strings.Contains(name, "/") {
		return "", ""
	}
	return service, name
}

// namedLocked collects the runtime routes of kind k of the mirror
// (service -> its routes) and the keys whose record cannot be read (key ->
// why); s.mu is held.
func namedLocked[R any](s *Source, k liveKind[R]) (map[string][]R, map[string]string) {
	routes := map[string][]R{}
	bad := map[string]string{}
	for key, kv := range s.kvs {
		service, name := s.keys.liveNamed(k.prefix, key)
		if service == "" {
			continue
		}
		r, unknown, err := k.decode(kv.Value, name)
		if err == nil {
			err = store.CheckRouteName(name)
		}
		if err != nil {
			bad[key] = "invalid " + k.what + " record: " + err.Error()
			continue
		}
		s.notes.Note(s.log, k.note, key, unknown)
		routes[service] = append(routes[service], r)
	}
	return routes, bad
}

// noteRecordsDropped logs msg for each key of dropped (key -> reason),
// once per version of its record (seen: key -> the version logged); s.mu
// is held.
func (s *Source) noteRecordsDropped(seen *map[string]int64, msg string, dropped map[string]string) {
	if *seen == nil {
		*seen = map[string]int64{}
	}
	for key := range *seen {
		if _, ok := dropped[key]; !ok {
			delete(*seen, key)
		}
	}
	for key, reason := range dropped {
		kv := s.kvs[key]
		if kv == nil || (*seen)[key] == kv.ModRevision {
			continue
		}
		(*seen)[key] = kv.ModRevision
		s.log.Warn(msg, "key", key, "reason", reason)
	}
}

// putNamed writes service's runtime route r of kind k to etcd: see
// PutRoute and PutMirrorRoute.
func putNamed[R store.RuntimeRoute[R]](ctx context.Context, s *Source, k liveKind[R], service string, r R, actor string) (store.NamedChange[R], error) {
	b := r.Base()
	if err := store.CheckRouteName(b.Name); err != nil {
		return store.NamedChange[R]{}, err
	}
	if err := s.requireFeature(ctx, k.feature); err != nil {
		return store.NamedChange[R]{}, err
	}
	key := k.prefix + service + "/" + b.Name
	var out store.NamedChange[R]
	rev, err := casNamed(ctx, s, k, service, b.Name, b.Owner != "", func(base *split.Table, cur *mvccpb.KeyValue, others []R) (clientv3.Op, bool, error) {
		out = store.NamedChange[R]{Service: service, New: &r}
		if cur != nil {
			if o, _, err := k.decode(cur.Value, b.Name); err == nil {
				out.Old = &o
				if o.Base().Owner != b.Owner {
					return clientv3.Op{}, false, &store.OwnerError{Service: service, What: fmt.Sprintf("%s %q", k.what, b.Name), Owner: o.Base().Owner, Want: b.Owner}
				}
				if o.Equal(r) {
					return clientv3.Op{}, false, nil
				}
			}
		}
		if err := k.check(base.Config(), service, others, r); err != nil {
			return clientv3.Op{}, false, err
		}
		val, err := k.encode(r, s.now().UTC(), s.opts.NodeID, actor)
		if err != nil {
			return clientv3.Op{}, false, err
		}
		return clientv3.OpPut(key, string(val)), true, nil
	})
	if err != nil {
		return store.NamedChange[R]{}, err
	}
	out.Snapshot, out.Revision = s.store.Load(), rev
	return out, nil
}

// deleteNamed deletes service's runtime route name of kind k from etcd:
// see DeleteRoute and DeleteMirrorRoute.
func deleteNamed[R store.RuntimeRoute[R]](ctx context.Context, s *Source, k liveKind[R], service, name, owner, actor string) (store.NamedChange[R], error) {
	if err := store.CheckRouteName(name); err != nil {
		return store.NamedChange[R]{}, err
	}
	key := k.prefix + service + "/" + name
	var out store.NamedChange[R]
	rev, err := casNamed(ctx, s, k, service, name, false, func(base *split.Table, cur *mvccpb.KeyValue, _ []R) (clientv3.Op, bool, error) {
		out = store.NamedChange[R]{Service: service}
		if cur == nil {
			if _, ok := base.Service(service); !ok {
				return clientv3.Op{}, false, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
			}
			return clientv3.Op{}, false, nil
		}
		if o, _, err := k.decode(cur.Value, name); err == nil {
			out.Old = &o
			if owner != "" && o.Base().Owner != owner {
				return clientv3.Op{}, false, &store.OwnerError{Service: service, What: fmt.Sprintf("%s %q", k.what, name), Owner: o.Base().Owner, Want: owner}
			}
		} else if owner != "" {
			// An unreadable record names no owner: only an operator
			// (no owner) removes it.
			return clientv3.Op{}, false, &store.OwnerError{Service: service, What: fmt.Sprintf("%s %q", k.what, name), Want: owner}
		}
		s.log.Info("runtime "+k.what+" removed from etcd", "service", service, k.logKey, name, "actor", actor)
		return clientv3.OpDelete(key), true, nil
	})
	if err != nil {
		return store.NamedChange[R]{}, err
	}
	out.Snapshot, out.Revision = s.store.Load(), rev
	return out, nil
}

// casNamed runs a mutation of service's runtime route name of kind k:
// read the document, the route's key, the service's other routes of the
// kind and (a kind that minds rollouts) the service's rollout state at
// one revision, let compute decide the operation (write false: nothing
// to do), and commit it if neither the document nor the key (nor, owned:
// a controller's write, the rollout state) changed meanwhile (else read
// again). It waits until this replica applied the commit, and returns the
// commit's revision (or, with nothing to write, the read's).
func casNamed[R store.RuntimeRoute[R]](ctx context.Context, s *Source, k liveKind[R], service, name string, owned bool,
	compute func(base *split.Table, cur *mvccpb.KeyValue, others []R) (op clientv3.Op, write bool, err error)) (int64, error) {
	c := s.client.Load()
	if c == nil || !s.conn.Load().connected {
		return 0, errUnavailable("not connected; the change was not made")
	}
	owned = owned && k.rollouts
	cfgKey, key, roKey := s.keys.Config(), k.prefix+service+"/"+name, s.keys.Rollout(service)
	reads := []clientv3.Op{clientv3.OpGet(cfgKey), clientv3.OpGet(key), clientv3.OpGet(k.prefix+service+"/", clientv3.WithPrefix())}
	if k.rollouts {
		reads = append(reads, clientv3.OpGet(roKey))
	}
	for range maxWriteAttempts {
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		read, err := c.Txn(rctx).Then(reads...).Commit()
		cancel()
		if err != nil {
			return 0, errUnavailable("read: " + err.Error())
		}
		cfgKV := firstKV(read.Responses[0].GetResponseRange().Kvs)
		cur := firstKV(read.Responses[1].GetResponseRange().Kvs)
		var roKV *mvccpb.KeyValue
		if k.rollouts {
			roKV = firstKV(read.Responses[3].GetResponseRange().Kvs)
		}
		var others []R
		for _, kv := range read.Responses[2].GetResponseRange().Kvs {
			svc, other := s.keys.liveNamed(k.prefix, string(kv.Key))
			if svc != service || other == name {
				continue
			}
			if r, _, err := k.decode(kv.Value, other); err == nil {
				others = append(others, r)
			}
		}
		if owned && roKV != nil {
			if err := drivenError(service, roKV); err != nil {
				return 0, err
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

// drivenError refuses a controller's write while the service's rollout
// (roKV, its rollouts/<service> record) is progressing or paused.
func drivenError(service string, roKV *mvccpb.KeyValue) error {
	var st struct {
		Phase rollout.Phase `json:"phase"`
	}
	if err := json.Unmarshal(roKV.Value, &st); err == nil && st.Phase.Drives() {
		return fmt.Errorf("service %q: %w (%s): abort it first (POST /v1/services/%s/rollout {\"action\": \"abort\"})",
			service, rollout.ErrDriven, st.Phase, service)
	}
	return nil
}
