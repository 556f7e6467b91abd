package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// MirrorMutator sets and clears runtime mirrors: the store in file mode,
// etcd in fleet mode (package fleet).
type MirrorMutator interface {
	SetMirror(ctx context.Context, service string, m split.Mirror, actor string) (store.MirrorChange, error)
	ClearMirror(ctx context.Context, service string, actor string) (store.MirrorChange, error)
}

type mirrorRequest struct {
	Version string          `json:"version"`
	Percent json.RawMessage `json:"percent"`
}

// mirrorAnswer is a mirror mutation's answer: the service's mirror in
// force now (null: none) and, in fleet mode, the commit's revision.
type mirrorAnswer struct {
	Service  string        `json:"service"`
	Mirror   *split.Mirror `json:"mirror"`
	Override bool          `json:"mirror_override"`
	Revision int64         `json:"revision,omitempty"`
}

// putMirror is PUT /v1/services/{name}/mirror {"version": "v2",
// "percent": 10}: the service copies that share of its requests to the
// version, in place of the file's mirror, until DELETE (or until the file
// changes its mirror). Percent 0 stops the file's mirror.
func (a *api) putMirror(r *http.Request, body []byte, ev *auditEvent) (int, any, error) {
	if _, err := a.snapshot(); err != nil {
		return 0, nil, err
	}
	name := r.PathValue("name")
	ev.service = name
	var req mirrorRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, err
	}
	if req.Version == "" {
		return 0, nil, errorf(http.StatusBadRequest, "version", "version is required: the version requests are copied to")
	}
	bp, aerr := parsePercentage(req.Percent)
	if aerr != nil {
		aerr.field = "percent"
		aerr.msg = strings.Replace(aerr.msg, "percentage", "percent", 1)
		return 0, nil, aerr
	}
	if err := a.refuseOwned(name); err != nil {
		return 0, nil, err
	}
	ch, err := a.mirrors().SetMirror(r.Context(), name, split.Mirror{Version: req.Version, Percent: split.Percent(bp)}, ev.actor)
	if err != nil {
		return 0, nil, mirrorError(err)
	}
	ev.mirrorChange(ch)
	return http.StatusOK, mirrorAnswer{Service: name, Mirror: ch.New, Override: true, Revision: ch.Revision}, nil
}

// deleteMirror is DELETE /v1/services/{name}/mirror: back to the file's
// mirror (or none).
func (a *api) deleteMirror(r *http.Request, _ []byte, ev *auditEvent) (int, any, error) {
	if _, err := a.snapshot(); err != nil {
		return 0, nil, err
	}
	name := r.PathValue("name")
	ev.service = name
	if err := a.refuseOwned(name); err != nil {
		return 0, nil, err
	}
	ch, err := a.mirrors().ClearMirror(r.Context(), name, ev.actor)
	if err != nil {
		return 0, nil, mirrorError(err)
	}
	ev.mirrorChange(ch)
	return http.StatusOK, mirrorAnswer{Service: name, Mirror: ch.New, Revision: ch.Revision}, nil
}

func (a *api) mirrors() MirrorMutator {
	if a.opts.Mirrors != nil {
		return a.opts.Mirrors
	}
	return a.opts.Store
}

// mirrorError maps a mirror mutation's error to its answer.
func mirrorError(err error) error {
	var fe *split.FieldError
	if errors.As(err, &fe) && strings.HasPrefix(fe.Path, "mirror.") {
		return errorf(http.StatusBadRequest, strings.TrimPrefix(fe.Path, "mirror."), "%v", err)
	}
	return storeError(err, "")
}

// mirrorChange records a mirror mutation in the audit line.
func (ev *auditEvent) mirrorChange(ch store.MirrorChange) {
	ev.old, ev.new = "mirror "+mirrorText(ch.Old), "mirror "+mirrorText(ch.New)
	if ch.Snapshot != nil {
		ev.generation = ch.Snapshot.Generation
	}
	ev.revision = ch.Revision
}

func mirrorText(m *split.Mirror) string {
	if m == nil {
		return "none"
	}
	return m.Version + " " + split.FormatPercent(int(m.Percent)) + "%"
}
