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

// Runtime routes live at live-routes/<service>/<route>, one key per route.
// "live-routes/" sorts before "replicas/", so the keys are in the range
// every replica reads and watches with the configuration and the
// overrides, and a change to one is applied in the same snapshot as they
// are.

// LiveRoutes is the prefix of the runtime routes' keys.
func (k Keys) LiveRoutes() string { return k.Prefix + "live-routes/" }

// LiveRoute is the key of service's runtime route name.
func (k Keys) LiveRoute(service, name string) string { return k.LiveRoutes() + service + "/" + name }

// liveRoute returns the service and route a key names, or "", "".
func (k Keys) liveRoute(key string) (service, name string) {
	rest, ok := strings.CutPrefix(key, k.LiveRoutes())
	if !ok {
		return "", ""
	}
	service, name, ok = strings.Cut(rest, "/")
	if !ok || service == "" || name == "" || strings.Contains(name, "/") {
		return "", ""
	}
	return service, name
}

// routeRecord is the value of live-routes/<service>/<route>:
//
//	{"when": [{"header": "x-canary", "exact": "1"}], "version": "v2",
//	 "owner": "argo-rollouts:default/api", "set_at": "...", "node": "pod-a", "actor": "token:0a1b2c3d4e5f"}
type routeRecord struct {
	When    []split.Condition `json:"when"`
	Version string            `json:"version"`
	Owner   string            `json:"owner,omitempty"`
	SetAt   time.Time         `json:"set_at"`
	Node    string            `json:"node,omitempty"`
	Actor   string            `json:"actor,omitempty"`
	unknown []string          // fields this build does not know
}

func decodeRoute(data []byte) (routeRecord, error) {
	var r routeRecord
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
	return r, nil
}

func (r routeRecord) route(name string) store.Route {
	return store.Route{Name: name, When: r.When, Version: r.Version, Owner: r.Owner}
}

// routesLocked collects the runtime routes of the mirror (service -> its
// routes) and the keys whose record cannot be read (key -> why); s.mu is
// held.
func (s *Source) routesLocked() (map[string][]store.Route, map[string]string) {
	routes := map[string][]store.Route{}
	bad := map[string]string{}
	for key, kv := range s.kvs {
		service, name := s.keys.liveRoute(key)
		if service == "" {
			continue
		}
		rec, err := decodeRoute(kv.Value)
		if err == nil {
			err = store.CheckRouteName(name)
		}
		if err != nil {
			bad[key] = "invalid route record: " + err.Error()
			continue
		}
		s.notes.Note(s.log, "runtime route record", key, rec.unknown)
		routes[service] = append(routes[service], rec.route(name))
	}
	return routes, bad
}

// noteRoutesDropped logs each route of the mirror that is not in force,
// once per version of its record; s.mu is held. Unlike an override, a
// route that does not fit is left in etcd: it applies again when the
// configuration fits it again, and DELETE removes it.
func (s *Source) noteRoutesDropped(dropped map[string]string) {
	if s.routesDropped == nil {
		s.routesDropped = map[string]int64{}
	}
	for key := range s.routesDropped {
		if _, ok := dropped[key]; !ok {
			delete(s.routesDropped, key)
		}
	}
	for key, reason := range dropped {
		kv := s.kvs[key]
		if kv == nil || s.routesDropped[key] == kv.ModRevision {
			continue
		}
		s.routesDropped[key] = kv.ModRevision
		s.log.Warn("runtime route in etcd does not apply", "key", key, "reason", reason)
	}
}

// PutRoute writes service's runtime route r to etcd: a compare-and-swap on
// the document and the route's key, computed against the document (and
// the service's other routes) read at one revision. It answers once this
// replica applied the commit. Errors as store.PutRoute's, and
// store.ErrUnavailable.
func (s *Source) PutRoute(ctx context.Context, service string, r store.Route, actor string) (store.RouteChange, error) {
	if err := store.CheckRouteName(r.Name); err != nil {
		return store.RouteChange{}, err
	}
	if err := s.requireFeature(ctx, FeatureLiveRoutes); err != nil {
		return store.RouteChange{}, err
	}
	key := s.keys.LiveRoute(service, r.Name)
	var out store.RouteChange
	rev, err := s.casRoute(ctx, key, func(base *split.Table, cur *mvccpb.KeyValue, others []store.Route) (clientv3.Op, bool, error) {
		out = store.RouteChange{Service: service, New: &r}
		if cur != nil {
			old, err := decodeRoute(cur.Value)
			if err == nil {
				o := old.route(r.Name)
				out.Old = &o
				if o.Owner != r.Owner {
					return clientv3.Op{}, false, &store.OwnerError{Service: service, What: fmt.Sprintf("route %q", r.Name), Owner: o.Owner, Want: r.Owner}
				}
				if o.Equal(r) {
					return clientv3.Op{}, false, nil
				}
			}
		}
		if err := store.CheckRoute(base.Config(), service, others, r); err != nil {
			return clientv3.Op{}, false, err
		}
		val, err := json.Marshal(routeRecord{When: r.When, Version: r.Version, Owner: r.Owner, SetAt: s.now().UTC(), Node: s.opts.NodeID, Actor: actor})
		if err != nil {
			return clientv3.Op{}, false, err
		}
		return clientv3.OpPut(key, string(val)), true, nil
	}, service, r.Name)
	if err != nil {
		return store.RouteChange{}, err
	}
	out.Snapshot, out.Revision = s.store.Load(), rev
	return out, nil
}

// DeleteRoute deletes service's runtime route name from etcd; with owner
// set, only a route of that owner (*store.OwnerError otherwise). Deleting
// a route that is not there changes nothing.
func (s *Source) DeleteRoute(ctx context.Context, service, name, owner, actor string) (store.RouteChange, error) {
	if err := store.CheckRouteName(name); err != nil {
		return store.RouteChange{}, err
	}
	key := s.keys.LiveRoute(service, name)
	var out store.RouteChange
	rev, err := s.casRoute(ctx, key, func(base *split.Table, cur *mvccpb.KeyValue, _ []store.Route) (clientv3.Op, bool, error) {
		out = store.RouteChange{Service: service}
		if cur == nil {
			if _, ok := base.Service(service); !ok {
				return clientv3.Op{}, false, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
			}
			return clientv3.Op{}, false, nil
		}
		if old, err := decodeRoute(cur.Value); err == nil {
			o := old.route(name)
			out.Old = &o
			if owner != "" && o.Owner != owner {
				return clientv3.Op{}, false, &store.OwnerError{Service: service, What: fmt.Sprintf("route %q", name), Owner: o.Owner, Want: owner}
			}
		} else if owner != "" {
			// An unreadable record names no owner: only an operator
			// (no owner) removes it.
			return clientv3.Op{}, false, &store.OwnerError{Service: service, What: fmt.Sprintf("route %q", name), Want: owner}
		}
		s.log.Info("runtime route removed from etcd", "service", service, "route", name, "actor", actor)
		return clientv3.OpDelete(key), true, nil
	}, service, name)
	if err != nil {
		return store.RouteChange{}, err
	}
	out.Snapshot, out.Revision = s.store.Load(), rev
	return out, nil
}

// casRoute runs a route mutation: read the document, the route's key and
// the service's other routes at one revision, let compute decide the
// operation (write false: nothing to do), and commit it if neither the
// document nor the key changed meanwhile (else read again). It waits until
// this replica applied the commit, and returns the commit's revision (or,
// with nothing to write, the read's).
func (s *Source) casRoute(ctx context.Context, key string, compute func(base *split.Table, cur *mvccpb.KeyValue, others []store.Route) (op clientv3.Op, write bool, err error), service, name string) (int64, error) {
	c := s.client.Load()
	if c == nil || !s.conn.Load().connected {
		return 0, errUnavailable("not connected; the change was not made")
	}
	cfgKey := s.keys.Config()
	svcPrefix := s.keys.LiveRoutes() + service + "/"
	for range maxWriteAttempts {
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		read, err := c.Txn(rctx).Then(clientv3.OpGet(cfgKey), clientv3.OpGet(key), clientv3.OpGet(svcPrefix, clientv3.WithPrefix())).Commit()
		cancel()
		if err != nil {
			return 0, errUnavailable("read: " + err.Error())
		}
		cfgKV := firstKV(read.Responses[0].GetResponseRange().Kvs)
		cur := firstKV(read.Responses[1].GetResponseRange().Kvs)
		var others []store.Route
		for _, kv := range read.Responses[2].GetResponseRange().Kvs {
			svc, other := s.keys.liveRoute(string(kv.Key))
			if svc != service || other == name {
				continue
			}
			if rec, err := decodeRoute(kv.Value); err == nil {
				others = append(others, rec.route(other))
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
		wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		resp, err := c.Txn(wctx).If(
			clientv3.Compare(clientv3.ModRevision(cfgKey), "=", modRev(cfgKV)),
			clientv3.Compare(clientv3.ModRevision(key), "=", modRev(cur)),
		).Then(op).Commit()
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

// SetCanaryOwned writes an override giving a two-version service's canary
// basisPoints on behalf of owner: the record carries the owner, and while
// it applies only that owner sets the weights this way (*store.OwnerError
// for another). The same transaction checks that no rollout of the
// service is progressing or paused (rollouts/<service> read at the same
// revision; rollout.ErrDriven otherwise), so a controller never takes the
// weights of a rollout that another replica just started. Weights and
// owner already in force in etcd are not written again.
func (s *Source) SetCanaryOwned(ctx context.Context, service string, basisPoints int, owner, actor string) (store.Change, error) {
	if err := store.CheckOwner(owner); err != nil {
		return store.Change{}, err
	}
	if err := s.requireFeature(ctx, FeatureOwners); err != nil {
		return store.Change{}, err
	}
	c := s.client.Load()
	if c == nil || !s.conn.Load().connected {
		return store.Change{}, errUnavailable("not connected; the change was not made")
	}
	cfgKey, ovKey, roKey := s.keys.Config(), s.keys.Override(service), s.keys.Rollout(service)
	for range maxWriteAttempts {
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		read, err := c.Txn(rctx).Then(clientv3.OpGet(cfgKey), clientv3.OpGet(ovKey), clientv3.OpGet(roKey)).Commit()
		cancel()
		if err != nil {
			return store.Change{}, errUnavailable("read: " + err.Error())
		}
		cfgKV := firstKV(read.Responses[0].GetResponseRange().Kvs)
		ovKV := firstKV(read.Responses[1].GetResponseRange().Kvs)
		roKV := firstKV(read.Responses[2].GetResponseRange().Kvs)
		if roKV != nil {
			var st struct {
				Phase rollout.Phase `json:"phase"`
			}
			if err := json.Unmarshal(roKV.Value, &st); err == nil && st.Phase.Drives() {
				return store.Change{}, fmt.Errorf("service %q: %w (%s): abort it first (POST /v1/services/%s/rollout {\"action\": \"abort\"})",
					service, rollout.ErrDriven, st.Phase, service)
			}
		}
		base, err := s.baseTable(cfgKV)
		if err != nil {
			return store.Change{}, err
		}
		fileSvc, ok := base.Service(service)
		if !ok {
			return store.Change{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
		}
		current, held := fileSvc.Weights, ""
		if ovKV != nil {
			if rec, err := decodeOverride(ovKV.Value); err == nil && sameShares(rec.Against, fileSvc.Weights) {
				current, held = split.InDeclaredOrder(rec.Weights, fileSvc.Weights), rec.Owner
			}
		}
		if held != "" && held != owner {
			return store.Change{}, &store.OwnerError{Service: service, What: "weights", Owner: held, Want: owner}
		}
		next, err := base.CanaryWeights(service, basisPoints)
		if err != nil {
			return store.Change{}, fmt.Errorf("service %q: %w", service, err)
		}
		if held == owner && sameShares(next, current) {
			return store.Change{Service: service, Old: current, New: current, Snapshot: s.store.Load(), Revision: read.Header.Revision}, nil
		}
		val, err := overrideRecord{Weights: next, Against: fileSvc.Weights, SetAt: s.now().UTC(), Node: s.opts.NodeID, Actor: actor, Owner: owner}.encode()
		if err != nil {
			return store.Change{}, err
		}
		wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
		resp, err := c.Txn(wctx).If(
			clientv3.Compare(clientv3.ModRevision(cfgKey), "=", modRev(cfgKV)),
			clientv3.Compare(clientv3.ModRevision(ovKey), "=", modRev(ovKV)),
			clientv3.Compare(clientv3.ModRevision(roKey), "=", modRev(roKV)),
		).Then(clientv3.OpPut(ovKey, string(val))).Commit()
		cancel()
		if err != nil {
			return store.Change{}, errUnavailable("write (outcome unknown; GET the service to see): " + err.Error())
		}
		if !resp.Succeeded {
			s.m.conflicts.Inc()
			continue
		}
		rev := resp.Header.Revision
		s.log.Info("runtime override set in etcd", "service", service, "actor", actor, "owner", owner,
			"old", current.String(), "new", next.String(), "revision", rev)
		wctx, cancel = context.WithTimeout(ctx, s.follow.c.applyWait)
		werr := s.waitApplied(wctx, rev)
		cancel()
		if werr != nil {
			s.log.Warn("committed to etcd but not yet applied here", "service", service, "revision", rev, "error", werr)
		}
		return store.Change{Service: service, Old: current, New: next, Snapshot: s.store.Load(), Revision: rev}, nil
	}
	return store.Change{}, errUnavailable(fmt.Sprintf("%d concurrent writes in a row won over this one; try again", maxWriteAttempts))
}
