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

func (a *api) mirrorRouteMutator() (MirrorRouteMutator, error) {
	if m, ok := a.opts.Mutator.(MirrorRouteMutator); ok {
		return m, nil
	}
	return nil, errorf(http.StatusNotImplemented, "", "runtime mirror routes are not available")
}

// putMirrorRoute sets a mirror route. Like a runtime mirror it is refused
// while a rollout of the service is progressing; with an owner (a
// controller such as the Argo Rollouts plugin) also while one is paused,
// as the owner's weights are.
func (a *api) putMirrorRoute(r *http.Request, body []byte, ev *auditEvent) (int, any, error) {
	if _, err := a.snapshot(); err != nil {
		return 0, nil, err
	}
	name, routeName := r.PathValue("name"), r.PathValue("route")
	ev.service = name
	m, err := a.mirrorRouteMutator()
	if err != nil {
		return 0, nil, err
	}
	var req mirrorRouteRequest
	if aerr := decodeStrict(body, &req); aerr != nil {
		return 0, nil, aerr
	}
	if req.Version == "" {
		return 0, nil, errorf(http.StatusBadRequest, "version", "version is required: the version matching requests are copied to")
	}
	bp, aerr := parsePercentage(req.Percent)
	if aerr != nil {
		aerr.field = "percent"
		aerr.msg = strings.Replace(aerr.msg, "percentage", "percent", 1)
		return 0, nil, aerr
	}
	if req.Owner != "" {
		if err := store.CheckOwner(req.Owner); err != nil {
			return 0, nil, errorf(http.StatusBadRequest, "owner", "%v", err)
		}
		if a.opts.Rollouts != nil {
			if phase, _ := a.opts.Rollouts.Owns(name); phase.Drives() {
				return 0, nil, errorf(http.StatusConflict, "name",
					"service %q: %v (%s): abort it first (POST /v1/services/%s/rollout {\"action\": \"abort\"})", name, rollout.ErrDriven, phase, name)
			}
		}
	} else if err := a.refuseOwned(name); err != nil {
		return 0, nil, err
	}
	mr := store.MirrorRoute{Name: routeName, When: req.When, Version: req.Version, Percent: split.Percent(bp), Owner: req.Owner}
	ch, err := m.PutMirrorRoute(r.Context(), name, mr, ev.actor)
	if err != nil {
		return 0, nil, mirrorRouteError(err)
	}
	ev.old, ev.new = mirrorRouteText(routeName, ch.Old), mirrorRouteText(routeName, ch.New)
	ev.generation, ev.revision = generation(ch.Snapshot), ch.Revision
	return http.StatusOK, mirrorRouteAnswer{Service: name, MirrorRoute: ch.New, Generation: ev.generation, Revision: ch.Revision}, nil
}

// deleteMirrorRoute removes a mirror route (?owner=: only that owner's).
// Removing one never conflicts with a rollout: it copies nothing more.
func (a *api) deleteMirrorRoute(r *http.Request, _ []byte, ev *auditEvent) (int, any, error) {
	if _, err := a.snapshot(); err != nil {
		return 0, nil, err
	}
	name, routeName := r.PathValue("name"), r.PathValue("route")
	ev.service = name
	m, err := a.mirrorRouteMutator()
	if err != nil {
		return 0, nil, err
	}
	owner := r.URL.Query().Get("owner")
	if r.URL.Query().Has("owner") {
		if err := store.CheckOwner(owner); err != nil {
			return 0, nil, errorf(http.StatusBadRequest, "owner", "%v", err)
		}
	}
	ch, err := m.DeleteMirrorRoute(r.Context(), name, routeName, owner, ev.actor)
	if err != nil {
		return 0, nil, mirrorRouteError(err)
	}
	removed := ch.Old != nil
	ev.old, ev.new = mirrorRouteText(routeName, ch.Old), mirrorRouteText(routeName, nil)
	ev.generation, ev.revision = generation(ch.Snapshot), ch.Revision
	return http.StatusOK, mirrorRouteAnswer{Service: name, Name: routeName, Removed: &removed, Generation: ev.generation, Revision: ch.Revision}, nil
}

// mirrorRouteError maps a mirror route mutation's error to its answer.
func mirrorRouteError(err error) error {
	if errors.Is(err, store.ErrMirrorRouteLimit) {
		return errorf(http.StatusConflict, "route", "%v", err)
	}
	return routeError(err, "")
}

func mirrorRouteText(name string, r *store.MirrorRoute) string {
	if r == nil {
		return "mirror route " + name + ": none"
	}
	return "mirror route " + name + ": " + r.String()
}
