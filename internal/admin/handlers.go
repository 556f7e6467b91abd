package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// snapshot returns the state in force, or a 503 before the first load.
func (a *api) snapshot() (*store.Snapshot, error) {
	if a.opts.Store == nil {
		return nil, errorf(http.StatusServiceUnavailable, "", "no configuration loaded")
	}
	snap := a.opts.Store.Load()
	if snap == nil {
		// Started without one (the module tolerates a bad initial
		// configuration): say why, so that the operator can fix it.
		if msg, _ := a.opts.Store.LastReloadError(); msg != "" {
			return nil, errorf(http.StatusServiceUnavailable, "", "no configuration loaded: %s", msg)
		}
		return nil, errorf(http.StatusServiceUnavailable, "", "no configuration loaded")
	}
	return snap, nil
}

func (a *api) listServices(r *http.Request, _ []byte, _ *auditEvent) (int, any, error) {
	snap, err := a.snapshot()
	if err != nil {
		return 0, nil, err
	}
	out := servicesView{Services: []serviceView{}, Experiments: []experimentView{}, Config: a.configView(snap)}
	for _, fs := range snap.File.Services {
		out.Services = append(out.Services, newServiceView(snap, fs.Name))
	}
	if cfg := snap.Table.Config(); cfg != nil {
		for _, e := range cfg.Experiments {
			out.Experiments = append(out.Experiments, experimentView{
				Name: e.Name, Key: newKeyView(&e.Key), Variants: e.Variants, Header: e.Header,
			})
		}
	}
	return http.StatusOK, out, nil
}

func (a *api) getService(r *http.Request, _ []byte, _ *auditEvent) (int, any, error) {
	snap, err := a.snapshot()
	if err != nil {
		return 0, nil, err
	}
	name := r.PathValue("name")
	if _, ok := snap.FileService(name); !ok {
		return 0, nil, errorf(http.StatusNotFound, "name", "unknown service %q", name)
	}
	return http.StatusOK, serviceDetail{serviceView: newServiceView(snap, name), Config: a.configView(snap)}, nil
}

type canaryRequest struct {
	Percentage json.RawMessage `json:"percentage"`
	// Owner, when set, is the controller taking the service's weights
	// (routes.go).
	Owner string `json:"owner"`
}

func (a *api) putCanary(r *http.Request, body []byte, ev *auditEvent) (int, any, error) {
	if _, err := a.snapshot(); err != nil {
		return 0, nil, err
	}
	name := r.PathValue("name")
	ev.service = name
	var req canaryRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, err
	}
	bp, aerr := parsePercentage(req.Percentage)
	if aerr != nil {
		return 0, nil, aerr
	}
	if req.Owner != "" {
		return a.putCanaryOwned(r, name, bp, req.Owner, ev)
	}
	if err := a.refuseOwned(name); err != nil {
		return 0, nil, err
	}
	if err := a.refuseOwner(name); err != nil {
		return 0, nil, err
	}
	ch, err := a.opts.Mutator.SetCanary(r.Context(), name, bp, ev.actor)
	if err != nil {
		return 0, nil, storeError(err, "percentage")
	}
	ev.change(ch)
	return appliedStatus(ch), weightsAnswer{service: name, weights: ch.New, revision: ch.Revision, notApplied: ch.NotApplied}, nil
}

// parsePercentage accepts a JSON number 0..100 with at most two decimals;
// a string such as "50", null, NaN or an exponent is refused.
func parsePercentage(raw json.RawMessage) (int, *apiError) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, errorf(http.StatusBadRequest, "percentage", "percentage is required")
	}
	if c := s[0]; c != '-' && (c < '0' || c > '9') {
		return 0, errorf(http.StatusBadRequest, "percentage", "percentage must be a number from 0 to 100, not %s", s)
	}
	bp, err := split.ParsePercent(s)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "percentage", "%v", err)
	}
	return bp, nil
}

func (a *api) putWeights(r *http.Request, body []byte, ev *auditEvent) (int, any, error) {
	if _, err := a.snapshot(); err != nil {
		return 0, nil, err
	}
	name := r.PathValue("name")
	ev.service = name
	w, err := split.ParseWeightsJSON(body)
	if err != nil {
		var fe *split.FieldError
		if errors.As(err, &fe) {
			return 0, nil, errorf(http.StatusBadRequest, weightsField(fe.Path), "%v", err)
		}
		return 0, nil, errorf(http.StatusBadRequest, "", "invalid JSON: %v", err)
	}
	if err := a.refuseOwned(name); err != nil {
		return 0, nil, err
	}
	if err := a.refuseOwner(name); err != nil {
		return 0, nil, err
	}
	ch, err := a.opts.Mutator.SetWeights(r.Context(), name, w, ev.actor)
	if err != nil {
		return 0, nil, storeError(err, "weights")
	}
	ev.change(ch)
	return appliedStatus(ch), weightsAnswer{service: name, weights: ch.New, revision: ch.Revision, notApplied: ch.NotApplied}, nil
}

// weightsField names a weights error's field: the version, prefixed so it
// cannot be mistaken for a top-level field.
func weightsField(path string) string {
	if path == "" || path == "weights" || strings.HasPrefix(path, "weights.") || strings.HasPrefix(path, "weights[") {
		if path == "" {
			return "weights"
		}
		return path
	}
	return "weights." + path
}

func (a *api) deleteOverride(r *http.Request, _ []byte, ev *auditEvent) (int, any, error) {
	if _, err := a.snapshot(); err != nil {
		return 0, nil, err
	}
	name := r.PathValue("name")
	ev.service = name
	if err := a.refuseOwned(name); err != nil {
		return 0, nil, err
	}
	ch, err := a.opts.Mutator.ClearOverride(r.Context(), name, ev.actor)
	if err != nil {
		return 0, nil, storeError(err, "")
	}
	ev.change(ch)
	detail := serviceDetail{serviceView: newServiceView(ch.Snapshot, name), Config: a.configView(ch.Snapshot)}
	if ch.NotApplied {
		return appliedStatus(ch), notAppliedDetail{serviceDetail: detail, Revision: ch.Revision, Applied: false}, nil
	}
	return http.StatusOK, detail, nil
}

// appliedStatus is a mutation's success status: 200, or 202 in fleet mode
// when the change is committed in etcd but this replica had not applied it
// yet when the answer was due (docs/fleet.md): accepted, not yet in force
// here.
func appliedStatus(ch store.Change) int {
	if ch.NotApplied {
		return http.StatusAccepted
	}
	return http.StatusOK
}

// notAppliedDetail is a 202 answer to an override deletion: the service as
// still in force here, the commit's revision, and "applied": false.
type notAppliedDetail struct {
	serviceDetail
	Revision int64 `json:"revision"`
	Applied  bool  `json:"applied"`
}

type assignRequest struct {
	UserID     string `json:"user_id"`
	Experiment string `json:"experiment"`
}

type assignAnswer struct {
	UserID     string `json:"user_id"`
	Experiment string `json:"experiment"`
	Variant    string `json:"variant"`
	Bucket     int    `json:"bucket"`
}

func (a *api) assign(r *http.Request, body []byte, _ *auditEvent) (int, any, error) {
	var req assignRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, err
	}
	if req.UserID == "" {
		return 0, nil, errorf(http.StatusBadRequest, "user_id", "user_id is required")
	}
	snap, err := a.snapshot()
	if err != nil {
		return 0, nil, err
	}
	v, err := snap.Table.Assign(req.Experiment, req.UserID)
	if err != nil {
		if errors.Is(err, split.ErrUnknownExperiment) {
			return 0, nil, errorf(http.StatusNotFound, "experiment", "%v", err)
		}
		return 0, nil, errorf(http.StatusBadRequest, "experiment", "%v", err)
	}
	return http.StatusOK, assignAnswer{UserID: req.UserID, Experiment: v.Experiment, Variant: v.Variant, Bucket: v.Bucket}, nil
}

type explainRequest struct {
	Authority string                     `json:"authority"`
	Path      string                     `json:"path"`
	Method    string                     `json:"method"`
	Headers   map[string]json.RawMessage `json:"headers"`
	Cookies   map[string]string          `json:"cookies"`
}

func (a *api) explain(r *http.Request, body []byte, _ *auditEvent) (int, any, error) {
	var req explainRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, err
	}
	sreq, aerr := req.toRequest()
	if aerr != nil {
		return 0, nil, aerr
	}
	snap, err := a.snapshot()
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, snap.Table.Explain(sreq), nil
}

// toRequest builds the request to explain. Header values may be a string
// or a list of strings; cookies become one cookie header. A missing
// method is GET and a missing path "/"; a missing authority is read from
// the ":authority" or "host" header.
func (e *explainRequest) toRequest() (*split.Request, *apiError) {
	req := &split.Request{Authority: e.Authority, Method: e.Method, Path: e.Path}
	for _, name := range sortedKeys(e.Headers) {
		lname := strings.ToLower(name)
		field := "headers." + name
		if lname == "" || (strings.ContainsAny(lname, " \t\r\n:") && !strings.HasPrefix(lname, ":")) {
			return nil, errorf(http.StatusBadRequest, field, "invalid header name %q", name)
		}
		var values []string
		raw := e.Headers[name]
		var one string
		if err := json.Unmarshal(raw, &one); err == nil {
			values = []string{one}
		} else if err := json.Unmarshal(raw, &values); err != nil || values == nil {
			return nil, errorf(http.StatusBadRequest, field, "%s must be a string or a list of strings", field)
		}
		for _, v := range values {
			adapter.AddHeader(req, lname, v)
		}
	}
	adapter.FinishRequest(req)
	if len(e.Cookies) > 0 {
		parts := make([]string, 0, len(e.Cookies))
		for _, name := range sortedKeys(e.Cookies) {
			if name == "" || strings.ContainsAny(name, "=; \t\r\n") {
				return nil, errorf(http.StatusBadRequest, "cookies."+name, "invalid cookie name %q", name)
			}
			parts = append(parts, name+"="+e.Cookies[name])
		}
		req.Headers = append(req.Headers, split.Header{Name: "cookie", Value: strings.Join(parts, "; ")})
	}
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	if req.Path == "" {
		req.Path = "/"
	}
	return req, nil
}

type reloadAnswer struct {
	Result     string    `json:"result"` // success or unchanged
	SHA256     string    `json:"sha256"`
	Source     string    `json:"source"`
	LoadedAt   time.Time `json:"loaded_at"`
	Generation uint64    `json:"generation"`
}

func (a *api) reload(r *http.Request, body []byte, ev *auditEvent) (int, any, error) {
	if len(strings.TrimSpace(string(body))) > 0 {
		var empty struct{}
		if err := decodeStrict(body, &empty); err != nil {
			return 0, nil, err
		}
	}
	if a.opts.Reload == nil {
		return 0, nil, errorf(http.StatusNotImplemented, "", "reload is not available")
	}
	before := a.opts.Store.Load()
	result, err := a.opts.Reload(r.Context())
	if err != nil {
		return 0, nil, errorf(http.StatusUnprocessableEntity, "", "%v", err)
	}
	after, err := a.snapshot()
	if err != nil {
		return 0, nil, err
	}
	if before != nil {
		ev.old = before.SHA256
	}
	ev.new, ev.generation = after.SHA256, after.Generation
	return http.StatusOK, reloadAnswer{
		Result: result, SHA256: after.SHA256, Source: after.Source,
		LoadedAt: after.LoadedAt, Generation: after.Generation,
	}, nil
}

// fleet is GET /v1/fleet: the replicas and their applied revisions, read
// from etcd.
func (a *api) fleet(r *http.Request, _ []byte, _ *auditEvent) (int, any, error) {
	if a.opts.Fleet == nil {
		return 0, nil, errorf(http.StatusNotFound, "", "not in fleet mode: etcd_endpoints is not set")
	}
	v, err := a.opts.Fleet(r.Context())
	if err != nil {
		return 0, nil, errorf(http.StatusServiceUnavailable, "", "%v", err)
	}
	return http.StatusOK, v, nil
}

type statusAnswer struct {
	Status string `json:"status"`
}

// healthz is liveness: it answers while the process runs, whatever the
// configuration, so a bad push never becomes a restart loop.
func (a *api) healthz(*http.Request, []byte, *auditEvent) (int, any, error) {
	return http.StatusOK, statusAnswer{Status: "ok"}, nil
}

func (a *api) readyz(*http.Request, []byte, *auditEvent) (int, any, error) {
	if a.opts.Store == nil || a.opts.Store.Load() == nil {
		return 0, nil, errorf(http.StatusServiceUnavailable, "", "no configuration loaded")
	}
	if a.opts.Ready != nil && !a.opts.Ready() {
		return 0, nil, errorf(http.StatusServiceUnavailable, "", "not ready (draining)")
	}
	return http.StatusOK, statusAnswer{Status: "ready"}, nil
}

// storeError maps a store error to its answer.
func storeError(err error, field string) error {
	var fe *split.FieldError
	switch {
	case errors.Is(err, split.ErrUnknownService):
		return errorf(http.StatusNotFound, "name", "%v", err)
	case errors.Is(err, split.ErrNotTwoVersions), errors.Is(err, store.ErrOlderReplicas):
		return errorf(http.StatusConflict, "name", "%v", err)
	case errors.Is(err, store.ErrNoConfig), errors.Is(err, store.ErrUnavailable):
		return errorf(http.StatusServiceUnavailable, "", "%v", err)
	case errors.As(err, &fe):
		if field == "weights" {
			field = weightsField(fe.Path)
		}
		return errorf(http.StatusBadRequest, field, "%v", err)
	}
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
