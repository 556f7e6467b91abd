package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// MirrorRouteMutator adds and removes runtime mirror routes (named,
// conditional mirrors tried before a service's mirror). The store does it
// directly (file mode); the fleet writes them to etcd.
type MirrorRouteMutator interface {
	PutMirrorRoute(ctx context.Context, service string, r store.MirrorRoute, actor string) (store.MirrorRouteChange, error)
	DeleteMirrorRoute(ctx context.Context, service, name, owner, actor string) (store.MirrorRouteChange, error)
}

// mirrorRouteRequest is PUT /v1/services/{name}/mirror-routes/{route}:
// the conditions (as a rule's when), the version copies go to, the share
// of the matching requests copied, and optionally the controller that
// owns it.
type mirrorRouteRequest struct {
	When    []split.Condition `json:"when"`
	Version string            `json:"version"`
	Percent json.RawMessage   `json:"percent"`
	Owner   string            `json:"owner"`
}

// mirrorRouteAnswer is what a mirror route mutation answers.
type mirrorRouteAnswer struct {
	Service     string             `json:"service"`
	MirrorRoute *store.MirrorRoute `json:"mirror_route,omitempty"`
	// Name and Removed are DELETE's: the mirror route named, and whether
	// it was there.
	Name       string `json:"name,omitempty"`
	Removed    *bool  `json:"removed,omitempty"`
	Generation uint64 `json:"generation"`
	Revision   int64  `json:"revision,omitempty"`
}

// mirrorRouteKind is the runtime mirror routes' part of the API. Like a
// runtime mirror, a mirror route is refused while a rollout of the
// service is progressing; with an owner (a controller such as the Argo
// Rollouts plugin) also while one is paused, as the owner's weights are.
// Removing one never conflicts with a rollout: it copies nothing more.
func (a *api) mirrorRouteKind() (namedKind[store.MirrorRoute], error) {
	m, ok := a.opts.Mutator.(MirrorRouteMutator)
	if !ok {
		return namedKind[store.MirrorRoute]{}, errorf(http.StatusNotImplemented, "", "runtime mirror routes are not available")
	}
	return namedKind[store.MirrorRoute]{
		what: "mirror route", put: m.PutMirrorRoute, del: m.DeleteMirrorRoute,
		request: a.mirrorRouteRequest,
		fail:    func(err error, _ string) error { return mirrorRouteError(err) },
		answer: func(service string, r *store.MirrorRoute, name string, removed *bool, gen uint64, rev int64) any {
			return mirrorRouteAnswer{Service: service, MirrorRoute: r, Name: name, Removed: removed, Generation: gen, Revision: rev}
		},
	}, nil
}

// mirrorRouteRequest reads PUT .../mirror-routes/{route}'s body.
func (a *api) mirrorRouteRequest(name, routeName string, body []byte) (store.MirrorRoute, error) {
	var req mirrorRouteRequest
	if aerr := decodeStrict(body, &req); aerr != nil {
		return store.MirrorRoute{}, aerr
	}
	if req.Version == "" {
		return store.MirrorRoute{}, errorf(http.StatusBadRequest, "version", "version is required: the version matching requests are copied to")
	}
	bp, aerr := parsePercentage(req.Percent)
	if aerr != nil {
		aerr.field = "percent"
		aerr.msg = strings.Replace(aerr.msg, "percentage", "percent", 1)
		return store.MirrorRoute{}, aerr
	}
	if req.Owner != "" {
		if err := store.CheckOwner(req.Owner); err != nil {
			return store.MirrorRoute{}, errorf(http.StatusBadRequest, "owner", "%v", err)
		}
		if a.opts.Rollouts != nil {
			if phase, _ := a.opts.Rollouts.Owns(name); phase.Drives() {
				return store.MirrorRoute{}, errorf(http.StatusConflict, "name",
					"service %q: %v (%s): abort it first (POST /v1/services/%s/rollout {\"action\": \"abort\"})", name, rollout.ErrDriven, phase, name)
			}
		}
	} else if err := a.refuseOwned(name); err != nil {
		return store.MirrorRoute{}, err
	}
	return store.MirrorRoute{Name: routeName, When: req.When, Version: req.Version, Percent: split.Percent(bp), Owner: req.Owner}, nil
}

func (a *api) putMirrorRoute(r *http.Request, body []byte, ev *auditEvent) (int, any, error) {
	return putNamed(r, body, ev, a, a.mirrorRouteKind)
}

func (a *api) deleteMirrorRoute(r *http.Request, _ []byte, ev *auditEvent) (int, any, error) {
	return deleteNamed(r, ev, a, a.mirrorRouteKind)
}

// mirrorRouteError maps a mirror route mutation's error to its answer.
func mirrorRouteError(err error) error {
	if errors.Is(err, store.ErrMirrorRouteLimit) {
		return errorf(http.StatusConflict, "route", "%v", err)
	}
	return routeError(err, "")
}
