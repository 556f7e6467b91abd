package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
func (k Keys) liveRoute(key string) (service, name string) { return k.liveNamed(k.LiveRoutes(), key) }

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
	unknown, err := decodeRecord(data, &r)
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

// routeKind is how the runtime routes are kept in etcd.
func (s *Source) routeKind() liveKind[store.Route] {
	return liveKind[store.Route]{
		what: "route", logKey: "route", note: "runtime route record", feature: FeatureLiveRoutes, prefix: s.keys.LiveRoutes(),
		decode: func(data []byte, name string) (store.Route, []string, error) {
			rec, err := decodeRoute(data)
			return rec.route(name), rec.unknown, err
		},
		encode: func(r store.Route, at time.Time, node, actor string) ([]byte, error) {
			return json.Marshal(routeRecord{When: r.When, Version: r.Version, Owner: r.Owner, SetAt: at, Node: node, Actor: actor})
		},
		check: store.CheckRoute,
	}
}

// routesLocked collects the runtime routes of the mirror (service -> its
// routes) and the keys whose record cannot be read (key -> why); s.mu is
// held.
func (s *Source) routesLocked() (map[string][]store.Route, map[string]string) {
	return namedLocked(s, s.routeKind())
}

// noteRoutesDropped logs each route of the mirror that is not in force,
// once per version of its record; s.mu is held. Unlike an override, a
// route that does not fit is left in etcd: it applies again when the
// configuration fits it again, and DELETE removes it.
func (s *Source) noteRoutesDropped(dropped map[string]string) {
	s.noteRecordsDropped(&s.routesDropped, "runtime route in etcd does not apply", dropped)
}

// PutRoute writes service's runtime route r to etcd: a compare-and-swap on
// the document and the route's key, computed against the document (and
// the service's other routes) read at one revision. It answers once this
// replica applied the commit. Errors as store.PutRoute's, and
// store.ErrUnavailable.
func (s *Source) PutRoute(ctx context.Context, service string, r store.Route, actor string) (store.RouteChange, error) {
	return putNamed(ctx, s, s.routeKind(), service, r, actor)
}

// DeleteRoute deletes service's runtime route name from etcd; with owner
// set, only a route of that owner (*store.OwnerError otherwise). Deleting
// a route that is not there changes nothing.
func (s *Source) DeleteRoute(ctx context.Context, service, name, owner, actor string) (store.RouteChange, error) {
	return deleteNamed(ctx, s, s.routeKind(), service, name, owner, actor)
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
			if err := drivenError(service, roKV); err != nil {
				return store.Change{}, err
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
