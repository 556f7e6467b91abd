// Package admin serves splitter's HTTP admin API: read the routing state,
// change weights at runtime, assign experiment variants, explain a
// decision, reload the configuration, and expose metrics and health.
//
// Routes:
//
//	GET    /v1/services                   every service, the experiments, the config in force
//	GET    /v1/services/{name}            one service (weights, file weights, override, rules)
//	PUT    /v1/services/{name}/canary     {"percentage": 12.5} on a two-version service
//	PUT    /v1/services/{name}/weights    {"v1": 70, "v2": 20, "v3": 10} (every version)
//	DELETE /v1/services/{name}/override   back to the file's weights
//	PUT    /v1/services/{name}/mirror     {"version": "v2", "percent": 10}: copy a share to a version
//	DELETE /v1/services/{name}/mirror     back to the file's mirror (or none)
//	DELETE /v1/services/{name}/override   back to the file's weights (and releases an owner)
//	PUT    /v1/services/{name}/routes/{route}  a runtime route: {"when": [...], "version": "v2", "owner": "..."}
//	DELETE /v1/services/{name}/routes/{route}  remove it (?owner=: only that owner's)
//	PUT    /v1/services/{name}/mirror-routes/{route}  a conditional mirror: {"when": [...], "version": "v2", "percent": 50, "owner": "..."}
//	DELETE /v1/services/{name}/mirror-routes/{route}  remove it (?owner=: only that owner's)
//	GET    /v1/services/{name}/rollout    the rollout: state, step, weight, last verdict, history
//	POST   /v1/services/{name}/rollout    {"action": "start" | "pause" | "resume" | "abort" | "promote"}
//	POST   /v1/assign                     {"user_id": "...", "experiment": "..."}
//	POST   /v1/explain                    {"authority", "path", "method", "headers", "cookies"}
//	POST   /v1/reload                     same path as the file watcher; 422 keeps the old config
//	GET    /v1/fleet                      fleet mode: every replica's applied revision (404 otherwise)
//	GET    /metrics, /healthz (liveness), /readyz (config loaded and not draining)
//
// Options.Extra mounts more read-only routes beside these: the operator
// console's page, state and event stream (package console), which shows
// the last audit events an AuditRing keeps.
//
// Every answer is JSON; errors are {"error": "...", "field": "..."} with the
// status that fits. Mutations (PUT, DELETE and POST /v1/reload) need
// "Authorization: Bearer <token>" when a token is configured (never a token
// in the query string), "Content-Type: application/json", and, when no
// token is configured, a loopback Host header (a page in a browser cannot
// reach the API through DNS rebinding). Mutations, pprof and the console's
// event stream refuse requests a browser marks as cross-site (see
// CheckSameOrigin). Every mutation attempt, allowed or not, is written to
// the audit log, which names a token by a fingerprint keyed with a secret
// of the process. While a service's rollout is progressing, its canary,
// weights, override and mirror calls answer 409.
package admin

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// MaxBodyBytes caps a request body.
const MaxBodyBytes = 64 << 10

// Recorder receives admin metrics; *metrics.Metrics implements it.
type Recorder interface {
	AdminRequest(endpoint string, code int)
	AdminMutation(result string) // success, rejected, unauthorized, error
}

// Mutator applies the admin API's changes. The store does it directly (the
// file mode); a fleet-wide store writes them somewhere every replica reads
// them from. Change.Old is read at the moment of the change.
type Mutator interface {
	SetWeights(ctx context.Context, service string, w split.Weights, actor string) (store.Change, error)
	SetCanary(ctx context.Context, service string, basisPoints int, actor string) (store.Change, error)
	ClearOverride(ctx context.Context, service string, actor string) (store.Change, error)
}

// Options configures the admin handler.
type Options struct {
	// Store is read for every view; nil answers 503.
	Store *store.Store
	// Mutator applies canary, weights and override changes; nil: Store.
	Mutator Mutator
	// Mirrors sets and clears runtime mirrors; nil: Store.
	Mirrors MirrorMutator
	// Reload runs the same reload as the file watcher and returns its
	// result (success, unchanged) or its error; nil disables POST
	// /v1/reload (501).
	Reload func(ctx context.Context) (string, error)
	// Token returns the admin token, read on every request so that a
	// rotated token file takes effect at once; nil or "" disables auth.
	Token func() string
	// Metrics serves GET /metrics (promhttp for the process registry); nil:
	// the route does not exist.
	Metrics http.Handler
	// Ready reports whether the process accepts traffic (false while
	// draining); nil: ready once a configuration is loaded.
	Ready    func() bool
	Logger   *slog.Logger // nil: discard
	Audit    *slog.Logger // one line per mutation attempt; nil: Logger
	Recorder Recorder     // nil: no metrics
	// Rollouts runs the guarded rollouts; nil: the rollout routes answer
	// 501 and no service is owned by one.
	Rollouts Rollouts
	// Pprof serves net/http/pprof under /debug/pprof/ (same authorisation
	// as mutations); false: the routes do not exist.
	Pprof bool
	// Fleet answers GET /v1/fleet in fleet mode (etcd); an error is a 503.
	// nil: 404, not in fleet mode.
	Fleet func(ctx context.Context) (any, error)
	// FleetStatus, when set, is shown as "fleet" in the config section of
	// the services views.
	FleetStatus func() any
	// Extra serves more read-only routes beside the API (pattern such as
	// "GET /ui/" -> handler): the operator console's page, state and event
	// stream. They are counted like the others; they need no token, so
	// they must not change anything.
	Extra map[string]http.Handler
	// LoopbackOnly refuses (403) every request, reads included, whose Host
	// is not a loopback name: set when the admin port is bound to a
	// loopback address, where any other Host is a page that had its name
	// rebound to 127.0.0.1 (DNS rebinding) and would read the answers as
	// its own origin.
	LoopbackOnly bool
	// Warnings, when set, lists what works but not as configured (an
	// Envoy that ignores what the splitter asks of it, say), shown as
	// "warnings" in the config section of the services views.
	Warnings func() []string
}

// New returns the admin API handler.
func New(opts Options) http.Handler {
	if opts.Mutator == nil && opts.Store != nil {
		opts.Mutator = opts.Store
	}
	a := &api{opts: opts, log: opts.Logger, audit: opts.Audit, mux: http.NewServeMux()}
	// crypto/rand.Read never fails (it crashes the program if the kernel
	// cannot supply randomness).
	_, _ = rand.Read(a.fingerprintKey[:])
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.audit == nil {
		a.audit = a.log
	}
	routes := []route{
		{pattern: "GET /v1/services", fn: a.listServices},
		{pattern: "GET /v1/services/{name}", fn: a.getService},
		{pattern: "PUT /v1/services/{name}/canary", fn: a.putCanary, mutation: true, body: true},
		{pattern: "PUT /v1/services/{name}/weights", fn: a.putWeights, mutation: true, body: true},
		{pattern: "DELETE /v1/services/{name}/override", fn: a.deleteOverride, mutation: true},
		{pattern: "PUT /v1/services/{name}/mirror", fn: a.putMirror, mutation: true, body: true},
		{pattern: "DELETE /v1/services/{name}/mirror", fn: a.deleteMirror, mutation: true},
		{pattern: "PUT /v1/services/{name}/routes/{route}", fn: a.putRoute, mutation: true, body: true},
		{pattern: "DELETE /v1/services/{name}/routes/{route}", fn: a.deleteRoute, mutation: true},
		{pattern: "PUT /v1/services/{name}/mirror-routes/{route}", fn: a.putMirrorRoute, mutation: true, body: true},
		{pattern: "DELETE /v1/services/{name}/mirror-routes/{route}", fn: a.deleteMirrorRoute, mutation: true},
		{pattern: "GET /v1/services/{name}/rollout", fn: a.getRollout},
		{pattern: "POST /v1/services/{name}/rollout", fn: a.postRollout, mutation: true, body: true},
		{pattern: "POST /v1/assign", fn: a.assign, body: true},
		{pattern: "POST /v1/explain", fn: a.explain, body: true},
		{pattern: "POST /v1/reload", fn: a.reload, mutation: true, body: true, emptyBodyOK: true},
		{pattern: "GET /v1/fleet", fn: a.fleet},
		{pattern: "GET /healthz", fn: a.healthz},
		{pattern: "GET /readyz", fn: a.readyz},
	}
	for _, rt := range routes {
		a.mux.Handle(rt.pattern, a.wrap(rt))
	}
	if opts.Metrics != nil {
		const pattern = "GET /metrics"
		a.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			opts.Metrics.ServeHTTP(sw, r)
			a.count(pattern, sw.status)
		}))
	}
	for _, pattern := range sortedKeys(opts.Extra) {
		h := opts.Extra[pattern]
		a.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			h.ServeHTTP(sw, r)
			a.count(pattern, sw.status)
		}))
	}
	if opts.Pprof {
		a.registerPprof()
	}
	// The catch-all turns the mux's plain-text 404 and 405 into JSON errors.
	a.mux.HandleFunc("/", a.notFound)
	if opts.LoopbackOnly {
		return a.loopbackOnly(a.mux)
	}
	return a.mux
}

// loopbackOnly serves h only to requests addressed to a loopback name
// (Options.LoopbackOnly). A refused attempt to change something is
// audited as forbidden, as the door would (authorize).
func (a *api) loopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopbackHost(r.Host) {
			h.ServeHTTP(w, r)
			return
		}
		err := errorf(http.StatusForbidden, "",
			"Host %.64q is not a loopback name: this admin port is bound to loopback and answers only requests addressed to it (a page whose name was rebound to 127.0.0.1 must not read it)", r.Host)
		writeJSON(w, err.status, errorBody{Error: err.msg})
		a.count("loopback-only", err.status)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			a.auditLine(r, r.Method+" "+r.URL.Path, "anonymous", err.status, err, auditEvent{actor: "anonymous", refused: true})
		}
	})
}

// LoopbackAddr reports whether addr (host:port) names a loopback host:
// the admin port's Options.LoopbackOnly.
func LoopbackAddr(addr string) bool { return loopbackHost(addr) }

type api struct {
	opts  Options
	log   *slog.Logger
	audit *slog.Logger
	mux   *http.ServeMux
	// fingerprintKey keys the token fingerprints of this process (see
	// fingerprint); it never leaves memory.
	fingerprintKey [32]byte
}

// route is one endpoint. fn returns the status and body of a success, or
// an error (an *apiError carries its status; anything else is a 500).
type route struct {
	pattern     string
	fn          func(r *http.Request, body []byte, ev *auditEvent) (int, any, error)
	mutation    bool // needs the token, checked Host, and is audited
	body        bool // takes a JSON body
	emptyBodyOK bool
}

// auditEvent is what a mutation handler reports for the audit line.
type auditEvent struct {
	actor string // token fingerprint or "anonymous"; set before the handler runs
	// refused: the attempt did not pass the door (cross-site, token,
	// Host); the console keeps these apart from the changes.
	refused    bool
	service    string
	old, new   string
	generation uint64
	revision   int64 // etcd revision of the commit (fleet mode)
}

// change records a mutation's effect: the weights it replaced and set, as
// the store saw them under its lock.
func (ev *auditEvent) change(ch store.Change) {
	ev.old, ev.new = ch.Old.String(), ch.New.String()
	if ch.Snapshot != nil {
		ev.generation = ch.Snapshot.Generation
	}
	ev.revision = ch.Revision
}

// apiError is an error answer.
type apiError struct {
	status int
	msg    string
	field  string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, field, format string, args ...any) *apiError {
	return &apiError{status: status, field: field, msg: fmt.Sprintf(format, args...)}
}

func (a *api) wrap(rt route) http.Handler {
	endpoint := rt.pattern
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev auditEvent
		actor := "anonymous"
		status, resp, err := func() (int, any, error) {
			if rt.mutation {
				var aerr *apiError
				actor, aerr = a.authorize(r)
				if aerr != nil {
					ev.refused = true
					if aerr.status == http.StatusUnauthorized {
						w.Header().Set("WWW-Authenticate", `Bearer realm="splitter admin"`)
					}
					return 0, nil, aerr
				}
			}
			ev.actor = actor
			var body []byte
			if rt.body {
				var aerr *apiError
				body, aerr = readBody(w, r, rt.emptyBodyOK)
				if aerr != nil {
					return 0, nil, aerr
				}
			}
			return rt.fn(r, body, &ev)
		}()
		if err != nil {
			var aerr *apiError
			if !errors.As(err, &aerr) {
				a.log.Error("admin request failed", "endpoint", endpoint, "error", err)
				aerr = errorf(http.StatusInternalServerError, "", "internal error: %v", err)
			}
			status, resp = aerr.status, errorBody{Error: aerr.msg, Field: aerr.field}
		}
		writeJSON(w, status, resp)
		a.count(endpoint, status)
		if rt.mutation {
			a.auditLine(r, endpoint, actor, status, err, ev)
		}
	})
}

func (a *api) count(endpoint string, status int) {
	if a.opts.Recorder != nil {
		a.opts.Recorder.AdminRequest(endpoint, status)
	}
}

// Audit results (the "result" attribute of an audit line and the label of
// splitter_admin_mutations_total). ResultUnauthorized and ResultForbidden
// are refusals at the door: the attempt never reached the handler.
const (
	ResultSuccess      = "success"
	ResultRejected     = "rejected"     // an authorised attempt with a bad request (4xx)
	ResultError        = "error"        // 5xx
	ResultUnauthorized = "unauthorized" // 401: no token, a wrong one
	ResultForbidden    = "forbidden"    // 403: cross-site, or a non-loopback Host without a token
)

// Refusal reports whether an audit result is a refusal at the door.
func Refusal(result string) bool { return result == ResultUnauthorized || result == ResultForbidden }

func (a *api) auditLine(r *http.Request, endpoint, actor string, status int, err error, ev auditEvent) {
	result := ResultSuccess
	switch {
	case ev.refused && status == http.StatusUnauthorized:
		result = ResultUnauthorized
	case ev.refused:
		result = ResultForbidden
	case status >= 500:
		result = ResultError
	case status >= 400:
		result = ResultRejected
	}
	if a.opts.Recorder != nil {
		a.opts.Recorder.AdminMutation(result)
	}
	attrs := []slog.Attr{
		slog.String("endpoint", endpoint),
		slog.String("remote", r.RemoteAddr),
		slog.String("actor", actor),
		slog.String("result", result),
		slog.Int("status", status),
	}
	if ev.service != "" {
		attrs = append(attrs, slog.String("service", ev.service))
	}
	if ev.old != "" || ev.new != "" {
		attrs = append(attrs, slog.String("old", ev.old), slog.String("new", ev.new))
	}
	if ev.generation != 0 {
		attrs = append(attrs, slog.Uint64("generation", ev.generation))
	}
	if ev.revision != 0 {
		attrs = append(attrs, slog.Int64("revision", ev.revision))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	a.audit.LogAttrs(r.Context(), slog.LevelInfo, "admin mutation", attrs...)
}

// authorize is the door of mutations and pprof: it refuses a cross-site
// request (CheckSameOrigin), then checks the bearer token (or, without one,
// that the request is addressed to a loopback host), and returns the actor
// for the audit log.
func (a *api) authorize(r *http.Request) (string, *apiError) {
	if err := CheckSameOrigin(r); err != nil {
		return "anonymous", errorf(http.StatusForbidden, "", "%v", err)
	}
	token := ""
	if a.opts.Token != nil {
		token = a.opts.Token()
	}
	if token == "" {
		if !loopbackHost(r.Host) {
			return "anonymous", errorf(http.StatusForbidden, "",
				"Host %q is not a loopback address; mutations without an admin token are accepted only on loopback", r.Host)
		}
		return "anonymous", nil
	}
	scheme, given, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "anonymous", errorf(http.StatusUnauthorized, "", "missing bearer token (Authorization: Bearer <token>)")
	}
	// Comparing digests keeps the comparison constant-time even in length.
	want, got := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(strings.TrimSpace(given)))
	if subtle.ConstantTimeCompare(want[:], got[:]) != 1 {
		return "anonymous", errorf(http.StatusUnauthorized, "", "invalid bearer token")
	}
	return a.fingerprint(token), nil
}

// fingerprint names a token in the audit log, the rollouts' history and
// etcd's override records, which anyone who reaches the admin port can
// read. An unkeyed digest would let such a reader test guessed tokens
// offline, so it is an HMAC under a random key of this process: the same
// token has the same fingerprint for the life of the process (a rotation
// shows as a new one), and nothing outside the process can compute it.
// Fingerprints from different processes (replicas, restarts) are not
// comparable (docs/admin-api.md#audit).
func (a *api) fingerprint(token string) string {
	m := hmac.New(sha256.New, a.fingerprintKey[:])
	m.Write([]byte(token))
	return "token:" + hex.EncodeToString(m.Sum(nil)[:6])
}

// CheckSameOrigin refuses a request that a browser sent from a page of
// another origin. It is Go's http.CrossOriginProtection rule, applied to
// every method (the guarded GETs, pprof and the console's event stream,
// have effects: CPU time, a stream slot): a Sec-Fetch-Site header other
// than same-origin or none (typed in the address bar, a bookmark) is
// refused, same-site included (another port on the same host is
// same-site); without one (browsers before 2023), an Origin whose host is
// not the request's Host is refused, "null" included; a request with
// neither header is not from a browser page (the CLI, curl, Prometheus)
// and passes. Sec-Fetch-Site decides when present: browsers set it and
// pages cannot, and it stays right behind a proxy that rewrites Host.
func CheckSameOrigin(r *http.Request) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "same-origin", "none":
		return nil
	case "":
	default:
		return fmt.Errorf("cross-site request refused (Sec-Fetch-Site: %.32q): the admin port answers only its own pages and clients that are not browsers", site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	return fmt.Errorf("cross-site request refused (Origin %.64q is not this admin port's %q): the admin port answers only its own pages and clients that are not browsers", origin, r.Host)
}

// RefuseCrossSite serves h only to requests CheckSameOrigin accepts and
// answers 403 to the others.
func RefuseCrossSite(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := CheckSameOrigin(r); err != nil {
			writeJSON(w, http.StatusForbidden, errorBody{Error: err.Error()})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readBody checks the content type and reads at most MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request, emptyOK bool) ([]byte, *apiError) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, errorf(http.StatusUnsupportedMediaType, "", "Content-Type must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, errorf(http.StatusRequestEntityTooLarge, "", "body is larger than %d bytes", MaxBodyBytes)
		}
		return nil, errorf(http.StatusBadRequest, "", "reading body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 && !emptyOK {
		return nil, errorf(http.StatusBadRequest, "", "empty body; expected a JSON object")
	}
	return body, nil
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func decodeStrict(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			return errorf(http.StatusBadRequest, typeErr.Field, "%s: must be a JSON %s, not %s", typeErr.Field, typeErr.Type.Kind(), typeErr.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return errorf(http.StatusBadRequest, field, "unknown field %q", field)
		}
		return errorf(http.StatusBadRequest, "", "invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, "", "unexpected data after the JSON object")
	}
	return nil
}

type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "encoding the answer: " + err.Error()})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// notFound answers requests no route matched: 405 with Allow when the
// path exists for other methods, else 404.
func (a *api) notFound(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	endpoint := "unmatched"
	if len(allow) > 0 {
		if isMutatingMethod(r.Method) {
			// A mutation attempt on the wrong route is still an attempt,
			// and passes the same door first: an anonymous caller gets
			// the door's answer and is counted with the refusals, so that
			// it cannot crowd the changes out of the console.
			actor, aerr := a.authorize(r)
			ev := auditEvent{actor: actor, refused: aerr != nil}
			if aerr == nil {
				aerr = errorf(http.StatusMethodNotAllowed, "", "method %s not allowed on %s", r.Method, r.URL.Path)
				w.Header().Set("Allow", strings.Join(allow, ", "))
			} else if aerr.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="splitter admin"`)
			}
			writeJSON(w, aerr.status, errorBody{Error: aerr.msg})
			a.count(endpoint, aerr.status)
			a.auditLine(r, endpoint, actor, aerr.status, aerr, ev)
			return
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path)})
		a.count(endpoint, http.StatusMethodNotAllowed)
		return
	}
	writeJSON(w, http.StatusNotFound, errorBody{Error: "no such endpoint: " + r.URL.Path})
	a.count(endpoint, http.StatusNotFound)
}

func isMutatingMethod(m string) bool {
	switch m {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// CheckBindAddress refuses a non-loopback admin address when no token is
// configured: the API can change routing for every request.
func CheckBindAddress(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin_addr %q: %w", addr, err)
	}
	if token != "" || loopbackHost(host) {
		return nil
	}
	return fmt.Errorf("admin_addr %s is not loopback; set admin_token (or admin_token_file) to expose the admin API, or bind it to 127.0.0.1", addr)
}

// NewServer returns an http.Server for the admin API with timeouts that a
// slow or stalled client cannot hold open.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}
