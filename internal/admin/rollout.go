package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// Rollouts runs the services' guarded rollouts; *rollout.Manager
// implements it.
type Rollouts interface {
	// Owns reports whether a rollout decides service's weights now; the
	// weights, canary and override calls then answer 409.
	Owns(service string) (rollout.Phase, bool)
	Status(service string) (rollout.Status, error)
	Act(ctx context.Context, service string, action rollout.Action, actor string) (rollout.Status, error)
}

// refuseOwned answers 409 for a weights, canary or override call on a
// service whose rollout is progressing.
func (a *api) refuseOwned(service string) error {
	if a.opts.Rollouts == nil {
		return nil
	}
	if phase, owns := a.opts.Rollouts.Owns(service); owns {
		return errorf(http.StatusConflict, "name",
			"service %q is in a rollout (%s) that owns its weights: pause or abort it first (POST /v1/services/%s/rollout {\"action\": \"pause\"})",
			service, phase, service)
	}
	return nil
}

func (a *api) getRollout(r *http.Request, _ []byte, _ *auditEvent) (int, any, error) {
	if a.opts.Rollouts == nil {
		return 0, nil, errorf(http.StatusNotImplemented, "", "rollouts are not available")
	}
	s, err := a.opts.Rollouts.Status(r.PathValue("name"))
	if err != nil {
		return 0, nil, rolloutError(err)
	}
	return http.StatusOK, s, nil
}

type rolloutRequest struct {
	Action rollout.Action `json:"action"`
}

func (a *api) postRollout(r *http.Request, body []byte, ev *auditEvent) (int, any, error) {
	if a.opts.Rollouts == nil {
		return 0, nil, errorf(http.StatusNotImplemented, "", "rollouts are not available")
	}
	name := r.PathValue("name")
	ev.service = name
	var req rolloutRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, err
	}
	if req.Action == "" {
		return 0, nil, errorf(http.StatusBadRequest, "action", "action is required: one of start, pause, resume, abort, promote")
	}
	before, _ := a.opts.Rollouts.Status(name)
	s, err := a.opts.Rollouts.Act(r.Context(), name, req.Action, ev.actor)
	if err != nil {
		return 0, nil, rolloutError(err)
	}
	ev.old = fmt.Sprintf("%s step %d canary %s", before.State, before.Step, split.FormatPercent(int(before.Weight)))
	ev.new = fmt.Sprintf("%s step %d canary %s", s.State, s.Step, split.FormatPercent(int(s.Weight)))
	return http.StatusOK, s, nil
}

// rolloutError maps a rollout error to its answer.
func rolloutError(err error) error {
	switch {
	case errors.Is(err, split.ErrUnknownService):
		return errorf(http.StatusNotFound, "name", "%v", err)
	case errors.Is(err, rollout.ErrNoRollout):
		return errorf(http.StatusNotFound, "name", "%v", err)
	case errors.Is(err, rollout.ErrUnknownAction):
		return errorf(http.StatusBadRequest, "action", "%v", err)
	case errors.Is(err, rollout.ErrConflict), errors.Is(err, rollout.ErrStale), errors.Is(err, store.ErrOlderReplicas):
		return errorf(http.StatusConflict, "action", "%v", err)
	case errors.Is(err, store.ErrNoConfig), errors.Is(err, store.ErrUnavailable):
		return errorf(http.StatusServiceUnavailable, "", "%v", err)
	}
	return err
}
