package admin

import (
	"context"
	"net/http"

	"github.com/trafficsplit/splitter/internal/store"
)

// The handlers of the runtime routes and the runtime mirror routes
// (PUT/DELETE /v1/services/{name}/routes/{route} and .../mirror-routes/
// {route}) are one implementation; what differs between the two kinds is
// in a namedKind.

// namedKind is what sets one kind of runtime route apart in the API.
type namedKind[R any] struct {
	what string // in the audit: "route", "mirror route"
	put  func(ctx context.Context, service string, r R, actor string) (store.NamedChange[R], error)
	del  func(ctx context.Context, service, name, owner, actor string) (store.NamedChange[R], error)
	// request reads a PUT's body into the route named name of service.
	request func(service, name string, body []byte) (R, error)
	// fail maps a mutation's error (on the route named name) to its
	// answer.
	fail func(err error, name string) error
	// answer is what a mutation answers: for PUT the route in force, for
	// DELETE the name and whether it was there.
	answer func(service string, r *R, name string, removed *bool, generation uint64, revision int64) any
}

// putNamed is PUT of a runtime route of kind k.
func putNamed[R store.RuntimeRoute[R]](r *http.Request, body []byte, ev *auditEvent, a *api, kind func() (namedKind[R], error)) (int, any, error) {
	if _, err := a.snapshot(); err != nil {
		return 0, nil, err
	}
	name, routeName := r.PathValue("name"), r.PathValue("route")
	ev.service = name
	k, err := kind()
	if err != nil {
		return 0, nil, err
	}
	route, err := k.request(name, routeName, body)
	if err != nil {
		return 0, nil, err
	}
	ch, err := k.put(r.Context(), name, route, ev.actor)
	if err != nil {
		return 0, nil, k.fail(err, routeName)
	}
	ev.old, ev.new = namedText(k.what, routeName, ch.Old), namedText(k.what, routeName, ch.New)
	ev.generation, ev.revision = generation(ch.Snapshot), ch.Revision
	return http.StatusOK, k.answer(name, ch.New, "", nil, ev.generation, ch.Revision), nil
}

// deleteNamed is DELETE of a runtime route of kind k (?owner=: only that
// owner's).
func deleteNamed[R store.RuntimeRoute[R]](r *http.Request, ev *auditEvent, a *api, kind func() (namedKind[R], error)) (int, any, error) {
	if _, err := a.snapshot(); err != nil {
		return 0, nil, err
	}
	name, routeName := r.PathValue("name"), r.PathValue("route")
	ev.service = name
	k, err := kind()
	if err != nil {
		return 0, nil, err
	}
	owner := r.URL.Query().Get("owner")
	if r.URL.Query().Has("owner") {
		if err := store.CheckOwner(owner); err != nil {
			return 0, nil, errorf(http.StatusBadRequest, "owner", "%v", err)
		}
	}
	ch, err := k.del(r.Context(), name, routeName, owner, ev.actor)
	if err != nil {
		return 0, nil, k.fail(err, routeName)
	}
	removed := ch.Old != nil
	ev.old, ev.new = namedText(k.what, routeName, ch.Old), namedText[R](k.what, routeName, nil)
	ev.generation, ev.revision = generation(ch.Snapshot), ch.Revision
	return http.StatusOK, k.answer(name, nil, routeName, &removed, ev.generation, ch.Revision), nil
}

// namedText is the audit's text of a route of a kind ("route canary: ...").
func namedText[R store.RuntimeRoute[R]](what, name string, r *R) string {
	if r == nil {
		return what + " " + name + ": none"
	}
	return what + " " + name + ": " + (*r).String()
}
