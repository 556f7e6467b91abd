package admin

import (
	"context"
	"errors"
	"net/http"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// RouteMutator adds and removes runtime routes (named rules ahead of a
// service's own). The store does it directly (file mode); the fleet
// writes them to etcd.
type RouteMutator interface {
	PutRoute(ctx context.Context, service string, r store.Route, actor string) (store.RouteChange, error)
	DeleteRoute(ctx context.Context, service, name, owner, actor string) (store.RouteChange, error)
}

// OwnerMutator sets a canary on behalf of a controller that then owns the
// service's weights (the Argo Rollouts plugin).
type OwnerMutator interface {
	SetCanaryOwned(ctx context.Context, service string, basisPoints int, owner, actor string) (store.Change, error)
}

// routeRequest is PUT /v1/services/{name}/routes/{route}: the route's
// conditions (as a rule's when in the configuration), the version it pins
// to, and optionally the controller that owns it.
type routeRequest struct {
	When    []split.Condition `json:"when"`
	Version string            `json:"version"`
	Owner   string            `json:"owner"`
}

// routeAnswer is what a route mutation answers.
type routeAnswer struct {
	Service string       `json:"service"`
	Route   *store.Route `json:"route,omitempty"`
	// Name and Removed are DELETE's: the route named, and whether it was
	// there.
	Name       string `json:"name,omitempty"`
	Removed    *bool  `json:"removed,omitempty"`
	Generation uint64 `json:"generation"`
	Revision   int64  `json:"revision,omitempty"`
}

// routeKind is the runtime routes' part of the API.
func (a *api) routeKind() (namedKind[store.Route], error) {
	m, ok := a.opts.Mutator.(RouteMutator)
	if !ok {
		return namedKind[store.Route]{}, errorf(http.StatusNotImplemented, "", "runtime routes are not available")
	}
	return namedKind[store.Route]{
		what: "route", put: m.PutRoute, del: m.DeleteRoute,
		request: func(_, routeName string, body []byte) (store.Route, error) {
			var req routeRequest
			if aerr := decodeStrict(body, &req); aerr != nil {
				return store.Route{}, aerr
			}
			if req.Owner != "" {
				if err := store.CheckOwner(req.Owner); err != nil {
					return store.Route{}, errorf(http.StatusBadRequest, "owner", "%v", err)
				}
			}
			return store.Route{Name: routeName, When: req.When, Version: req.Version, Owner: req.Owner}, nil
		},
		fail: routeError,
		answer: func(service string, r *store.Route, name string, removed *bool, gen uint64, rev int64) any {
			return routeAnswer{Service: service, Route: r, Name: name, Removed: removed, Generation: gen, Revision: rev}
		},
	}, nil
}

func (a *api) putRoute(r *http.Request, body []byte, ev *auditEvent) (int, any, error) {
	return putNamed(r, body, ev, a, a.routeKind)
}

func (a *api) deleteRoute(r *http.Request, _ []byte, ev *auditEvent) (int, any, error) {
	return deleteNamed(r, ev, a, a.routeKind)
}

// putCanaryOwned is PUT …/canary with an owner: the controller takes (or
// keeps) the service's weights. A splitter rollout that drives the service
// (progressing or paused) keeps them: 409.
func (a *api) putCanaryOwned(r *http.Request, name string, bp int, owner string, ev *auditEvent) (int, any, error) {
	if err := store.CheckOwner(owner); err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "owner", "%v", err)
	}
	if a.opts.Rollouts != nil {
		if phase, _ := a.opts.Rollouts.Owns(name); phase.Drives() {
			return 0, nil, errorf(http.StatusConflict, "name",
				"service %q: %v (%s): abort it first (POST /v1/services/%s/rollout {\"action\": \"abort\"})", name, rollout.ErrDriven, phase, name)
		}
	}
	m, ok := a.opts.Mutator.(OwnerMutator)
	if !ok {
		return 0, nil, errorf(http.StatusNotImplemented, "owner", "owned weights are not available")
	}
	ch, err := m.SetCanaryOwned(r.Context(), name, bp, owner, ev.actor)
	if err != nil {
		return 0, nil, routeError(err, "percentage")
	}
	ev.change(ch)
	ev.new += " (owner " + owner + ")"
	return http.StatusOK, weightsAnswer{service: name, weights: ch.New, revision: ch.Revision}, nil
}

// refuseOwner answers 409 for a weights or canary call without the owner
// of the service's weights.
func (a *api) refuseOwner(service string) error {
	snap := a.opts.Store.Load()
	if snap == nil {
		return nil
	}
	if owner := snap.Owners[service]; owner != "" {
		return errorf(http.StatusConflict, "name",
			"service %q: its weights are owned by %q (a controller such as the Argo Rollouts plugin sets them): change them through it, or release them with DELETE /v1/services/%s/override",
			service, owner, service)
	}
	return nil
}

// routeError maps a route or owned-weights error to its answer.
func routeError(err error, field string) error {
	var oe *store.OwnerError
	var fe *split.FieldError
	switch {
	case errors.As(err, &oe):
		return errorf(http.StatusConflict, "owner", "%v", err)
	case errors.Is(err, store.ErrRuleName), errors.Is(err, store.ErrRouteLimit):
		return errorf(http.StatusConflict, "route", "%v", err)
	case errors.Is(err, rollout.ErrDriven):
		return errorf(http.StatusConflict, "name", "%v", err)
	case errors.As(err, &fe) && !errors.Is(err, split.ErrUnknownService):
		f := fe.Path
		if f == "" || f == "name" {
			f = "route"
		}
		if field == "percentage" {
			f = field
		}
		return errorf(http.StatusBadRequest, f, "%v", err)
	}
	return storeError(err, field)
}

func generation(snap *store.Snapshot) uint64 {
	if snap == nil {
		return 0
	}
	return snap.Generation
}
