package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"time"

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
	return k.liveNamed(k.LiveMirrorRoutes(), key)
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
	unknown, err := decodeRecord(data, &r)
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

// mirrorRouteKind is how the runtime mirror routes are kept in etcd.
func (s *Source) mirrorRouteKind() liveKind[store.MirrorRoute] {
	return liveKind[store.MirrorRoute]{
		what: "mirror route", logKey: "mirror_route", note: "mirror route record", feature: FeatureLiveMirrorRoutes,
		prefix: s.keys.LiveMirrorRoutes(), rollouts: true,
		decode: func(data []byte, name string) (store.MirrorRoute, []string, error) {
			rec, err := decodeMirrorRoute(data)
			return rec.mirrorRoute(name), rec.unknown, err
		},
		encode: func(r store.MirrorRoute, at time.Time, node, actor string) ([]byte, error) {
			return json.Marshal(mirrorRouteRecord{When: r.When, Version: r.Version, Percent: r.Percent, Owner: r.Owner, SetAt: at, Node: node, Actor: actor})
		},
		check: store.CheckMirrorRoute,
	}
}

// mirrorRoutesLocked collects the runtime mirror routes of the mirror
// (service -> its mirror routes) and the keys whose record cannot be read
// (key -> why); s.mu is held.
func (s *Source) mirrorRoutesLocked() (map[string][]store.MirrorRoute, map[string]string) {
	return namedLocked(s, s.mirrorRouteKind())
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
	s.noteRecordsDropped(&s.mirrorRoutesDropped, "runtime mirror route in etcd does not apply", all)
}

// PutMirrorRoute writes service's runtime mirror route r to etcd: a
// compare-and-swap on the document and the mirror route's key (and, when
// r has an owner, the service's rollout state, which must not be
// progressing or paused: rollout.ErrDriven), computed against the
// document and the service's other mirror routes read at one revision.
// It answers once this replica applied the commit. Errors as
// store.PutMirrorRoute's, and store.ErrUnavailable.
func (s *Source) PutMirrorRoute(ctx context.Context, service string, r store.MirrorRoute, actor string) (store.MirrorRouteChange, error) {
	return putNamed(ctx, s, s.mirrorRouteKind(), service, r, actor)
}

// DeleteMirrorRoute deletes service's runtime mirror route name from
// etcd; with owner set, only one of that owner (*store.OwnerError
// otherwise). Deleting one that is not there changes nothing.
func (s *Source) DeleteMirrorRoute(ctx context.Context, service, name, owner, actor string) (store.MirrorRouteChange, error) {
	return deleteNamed(ctx, s, s.mirrorRouteKind(), service, name, owner, actor)
}
