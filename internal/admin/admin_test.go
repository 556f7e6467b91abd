package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

var loadedAt = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// recorder is a fake admin.Recorder.
type recorder struct {
	mu        sync.Mutex
	requests  []string
	mutations []string
}

func (r *recorder) AdminRequest(endpoint string, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, endpoint+" "+http.StatusText(code))
}

func (r *recorder) AdminMutation(result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mutations = append(r.mutations, result)
}

type env struct {
	t       *testing.T
	h       http.Handler
	store   *store.Store
	audit   *bytes.Buffer
	rec     *recorder
	tokenMu sync.Mutex
	token   string
	reload  func(ctx context.Context) (string, error)
	ready   bool
}

type envOptions struct {
	token    string
	noConfig bool
	noReload bool
}

// testConfig is the built-in default plus a three-version service (for
// 409 on canary).
func testConfig() *split.Config {
	cfg := split.Default()
	cfg.Services = append(cfg.Services, split.Service{
		Name: "three", Hosts: []string{"three.example.com"},
		Weights: split.Weights{{Version: "a", BasisPoints: 5000}, {Version: "b", BasisPoints: 3000}, {Version: "c", BasisPoints: 2000}},
	})
	return cfg
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	s, err := store.New(store.Options{Now: func() time.Time { return loadedAt }})
	if err != nil {
		t.Fatal(err)
	}
	if !o.noConfig {
		if _, err := s.ApplyFile(testConfig(), "sha-1", "config.yaml"); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{t: t, store: s, audit: &bytes.Buffer{}, rec: &recorder{}, token: o.token, ready: true}
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	opts := admin.Options{
		Store:    s,
		Token:    func() string { e.tokenMu.Lock(); defer e.tokenMu.Unlock(); return e.token },
		Metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Ready:    func() bool { return e.ready },
		Audit:    slog.New(slog.NewJSONHandler(e.audit, nil)),
		Recorder: e.rec,
	}
	if !o.noReload {
		opts.Reload = func(ctx context.Context) (string, error) { return e.reload(ctx) }
		e.reload = func(context.Context) (string, error) { return "unchanged", nil }
	}
	e.h = admin.New(opts)
	return e
}

type req struct {
	method, path, body string
	contentType        string // "" means application/json; "-" means none
	auth               string
	host               string // "" means 127.0.0.1:9002
}

func (e *env) do(r req) *httptest.ResponseRecorder {
	e.t.Helper()
	hr := httptest.NewRequestWithContext(e.t.Context(), r.method, r.path, strings.NewReader(r.body))
	switch r.contentType {
	case "":
		hr.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		hr.Header.Set("Content-Type", r.contentType)
	}
	if r.auth != "" {
		hr.Header.Set("Authorization", r.auth)
	}
	hr.Host = "127.0.0.1:9002"
	if r.host != "" {
		hr.Host = r.host
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, hr)
	return w
}

func decode(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json (body %s)", ct, w.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v\n%s", err, w.Body)
	}
	return m
}

// auditLines returns the audit log lines written so far, and resets it.
func (e *env) auditLines() []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for line := range strings.Lines(e.audit.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			e.t.Fatalf("audit line is not JSON: %v: %s", err, line)
		}
		out = append(out, m)
	}
	e.audit.Reset()
	return out
}

// state is what a rejected request must leave alone.
func (e *env) state() string {
	snap := e.store.Load()
	if snap == nil {
		return "no config"
	}
	var b strings.Builder
	for _, name := range []string{"api", "three"} {
		svc, _ := snap.Table.Service(name)
		b.WriteString(name + "=" + svc.Weights.String() + ";")
	}
	return b.String() + " generation " + strconv.FormatUint(snap.Generation, 10)
}

func TestServicesView(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.do(req{method: "GET", path: "/v1/services/api"})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	want := map[string]any{
		"name":         "api",
		"hosts":        []any{"*"},
		"stable":       "v1",
		"weights":      map[string]any{"v1": 80.0, "v2": 20.0},
		"file_weights": map[string]any{"v1": 80.0, "v2": 20.0},
		"override":     false,
		"sticky":       map[string]any{"header": "x-user-id"},
		"rules": []any{map[string]any{
			"name": "beta-testers", "version": "v2",
			"when": []any{map[string]any{"header": "x-beta", "exact": "true"}},
		}},
		"mirror":      nil,
		"file_mirror": nil,
		"config": map[string]any{
			"sha256": "sha-1", "source": "config.yaml", "loaded_at": "2026-03-04T05:06:07Z",
			"generation": 1.0, "last_reload_error": nil, "last_reload_error_at": nil,
		},
		"runtime_routes": []any{},
		"mirror_routes":  []any{},
	}
	if diff := cmp.Diff(want, decode(t, w)); diff != "" {
		t.Fatalf("GET /v1/services/api (-want +got):\n%s", diff)
	}

	// An override shows as such, with the file's weights beside it; a
	// reload error shows in config.
	if _, err := e.store.SetCanary(t.Context(), "api", 5000, "t"); err != nil {
		t.Fatal(err)
	}
	e.store.RecordReloadError(errors.New("services[0].weights: sum is 90"))
	all := decode(t, e.do(req{method: "GET", path: "/v1/services"}))
	services := all["services"].([]any)
	if len(services) != 2 {
		t.Fatalf("%d services, want 2", len(services))
	}
	api := services[0].(map[string]any)
	if diff := cmp.Diff(map[string]any{"v1": 50.0, "v2": 50.0}, api["weights"]); diff != "" {
		t.Errorf("effective weights (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"v1": 80.0, "v2": 20.0}, api["file_weights"]); diff != "" {
		t.Errorf("file weights (-want +got):\n%s", diff)
	}
	if api["override"] != true || api["override_weights"] == nil {
		t.Errorf("override not shown: %v", api)
	}
	wantExp := []any{map[string]any{
		"name": "default", "key": map[string]any{"header": "x-user-id"},
		"variants": map[string]any{"A": 50.0, "B": 50.0}, "header": "x-variant",
	}}
	if diff := cmp.Diff(wantExp, all["experiments"]); diff != "" {
		t.Errorf("experiments (-want +got):\n%s", diff)
	}
	cfg := all["config"].(map[string]any)
	if cfg["last_reload_error"] != "services[0].weights: sum is 90" || cfg["generation"] != 2.0 {
		t.Errorf("config view: %v", cfg)
	}
}

func TestReadErrors(t *testing.T) {
	tests := []struct {
		name       string
		noConfig   bool
		r          req
		wantStatus int
		wantAllow  string
	}{
		{name: "unknown service", r: req{method: "GET", path: "/v1/services/nope"}, wantStatus: 404},
		{name: "unknown route", r: req{method: "GET", path: "/v2/whatever"}, wantStatus: 404},
		{name: "root", r: req{method: "GET", path: "/"}, wantStatus: 404},
		{name: "POST on a read route", r: req{method: "POST", path: "/v1/services"}, wantStatus: 405, wantAllow: "GET, HEAD"},
		{name: "GET on canary", r: req{method: "GET", path: "/v1/services/api/canary"}, wantStatus: 405, wantAllow: "PUT"},
		{name: "DELETE on weights", r: req{method: "DELETE", path: "/v1/services/api/weights"}, wantStatus: 405, wantAllow: "PUT"},
		{name: "GET on reload", r: req{method: "GET", path: "/v1/reload"}, wantStatus: 405, wantAllow: "POST"},
		{name: "services before a config", noConfig: true, r: req{method: "GET", path: "/v1/services"}, wantStatus: 503},
		{name: "assign before a config", noConfig: true, r: req{method: "POST", path: "/v1/assign", body: `{"user_id":"u"}`}, wantStatus: 503},
		{name: "canary before a config", noConfig: true, r: req{method: "PUT", path: "/v1/services/api/canary", body: `{"percentage":5}`}, wantStatus: 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{noConfig: tc.noConfig})
			w := e.do(tc.r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			if got := w.Header().Get("Allow"); got != tc.wantAllow {
				t.Fatalf("Allow %q, want %q", got, tc.wantAllow)
			}
			if msg, _ := decode(t, w)["error"].(string); msg == "" {
				t.Fatalf("no error message: %s", w.Body)
			}
			// A mutating method is audited even on the wrong route.
			wantAudit := 0
			if tc.r.method != "GET" && (tc.wantStatus == 405 || tc.r.path == "/v1/services/api/canary") {
				wantAudit = 1
			}
			if got := len(e.auditLines()); got != wantAudit {
				t.Fatalf("%d audit lines, want %d", got, wantAudit)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name       string
		noConfig   bool
		notReady   bool
		path       string
		wantStatus int
	}{
		{name: "healthz with config", path: "/healthz", wantStatus: 200},
		{name: "healthz without config", noConfig: true, path: "/healthz", wantStatus: 200},
		{name: "healthz while draining", notReady: true, path: "/healthz", wantStatus: 200},
		{name: "readyz with config", path: "/readyz", wantStatus: 200},
		{name: "readyz without config", noConfig: true, path: "/readyz", wantStatus: 503},
		{name: "readyz while draining", notReady: true, path: "/readyz", wantStatus: 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{noConfig: tc.noConfig})
			e.ready = !tc.notReady
			if w := e.do(req{method: "GET", path: tc.path}); w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
		})
	}
}

func TestCanary(t *testing.T) {
	huge := `{"percentage": 50` + strings.Repeat(" ", admin.MaxBodyBytes) + `}`
	tests := []struct {
		name       string
		r          req
		wantStatus int
		wantBody   string // exact, for successes
		wantField  string
		wantError  string // substring
	}{
		{name: "50", r: req{body: `{"percentage": 50}`}, wantStatus: 200, wantBody: `{"service":"api","v1":50,"v2":50}`},
		{name: "12.5", r: req{body: `{"percentage": 12.5}`}, wantStatus: 200, wantBody: `{"service":"api","v1":87.5,"v2":12.5}`},
		{name: "0.05", r: req{body: `{"percentage": 0.05}`}, wantStatus: 200, wantBody: `{"service":"api","v1":99.95,"v2":0.05}`},
		{name: "0", r: req{body: `{"percentage": 0}`}, wantStatus: 200, wantBody: `{"service":"api","v1":100,"v2":0}`},
		{name: "100", r: req{body: `{"percentage": 100}`}, wantStatus: 200, wantBody: `{"service":"api","v1":0,"v2":100}`},
		{name: "charset parameter", r: req{body: `{"percentage": 50}`, contentType: "application/json; charset=utf-8"}, wantStatus: 200, wantBody: `{"service":"api","v1":50,"v2":50}`},
		{name: "missing percentage", r: req{body: `{}`}, wantStatus: 400, wantField: "percentage", wantError: "required"},
		{name: "null", r: req{body: `{"percentage": null}`}, wantStatus: 400, wantField: "percentage"},
		{name: "string 50", r: req{body: `{"percentage": "50"}`}, wantStatus: 400, wantField: "percentage", wantError: "number"},
		{name: "NaN string", r: req{body: `{"percentage": "NaN"}`}, wantStatus: 400, wantField: "percentage"},
		{name: "bare NaN", r: req{body: `{"percentage": NaN}`}, wantStatus: 400, wantError: "invalid"},
		{name: "boolean", r: req{body: `{"percentage": true}`}, wantStatus: 400, wantField: "percentage"},
		{name: "negative", r: req{body: `{"percentage": -1}`}, wantStatus: 400, wantField: "percentage", wantError: "negative"},
		{name: "over 100", r: req{body: `{"percentage": 101}`}, wantStatus: 400, wantField: "percentage", wantError: "between 0 and 100"},
		{name: "three decimals", r: req{body: `{"percentage": 50.125}`}, wantStatus: 400, wantField: "percentage", wantError: "two decimals"},
		{name: "1e309", r: req{body: `{"percentage": 1e309}`}, wantStatus: 400, wantField: "percentage"},
		{name: "exponent", r: req{body: `{"percentage": 5e1}`}, wantStatus: 400, wantField: "percentage"},
		{name: "bad JSON", r: req{body: `{`}, wantStatus: 400, wantError: "invalid JSON"},
		{name: "empty body", r: req{body: ``}, wantStatus: 400, wantError: "empty body"},
		{name: "array", r: req{body: `[50]`}, wantStatus: 400},
		{name: "trailing garbage", r: req{body: `{"percentage": 50} garbage`}, wantStatus: 400, wantError: "after the JSON"},
		{name: "second object", r: req{body: `{"percentage": 50}{"percentage": 10}`}, wantStatus: 400, wantError: "after the JSON"},
		{name: "unknown field", r: req{body: `{"percentage": 50, "service": "web"}`}, wantStatus: 400, wantField: "service", wantError: "unknown field"},
		{name: "wrong content type", r: req{body: `{"percentage": 50}`, contentType: "text/plain"}, wantStatus: 415},
		{name: "form content type", r: req{body: `percentage=50`, contentType: "application/x-www-form-urlencoded"}, wantStatus: 415},
		{name: "no content type", r: req{body: `{"percentage": 50}`, contentType: "-"}, wantStatus: 415},
		{name: "oversized body", r: req{body: huge}, wantStatus: 413},
		{name: "unknown service", r: req{path: "/v1/services/nope/canary", body: `{"percentage": 50}`}, wantStatus: 404, wantField: "name"},
		{name: "three versions", r: req{path: "/v1/services/three/canary", body: `{"percentage": 50}`}, wantStatus: 409, wantField: "name", wantError: "exactly two versions"},
		{name: "non-loopback Host without token", r: req{body: `{"percentage": 50}`, host: "attacker.example.com"}, wantStatus: 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			before := e.state()
			r := tc.r
			r.method = "PUT"
			if r.path == "" {
				r.path = "/v1/services/api/canary"
			}
			w := e.do(r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			audit := e.auditLines()
			if len(audit) != 1 {
				t.Fatalf("%d audit lines, want 1", len(audit))
			}
			if tc.wantStatus == 200 {
				if got := strings.TrimSpace(w.Body.String()); got != tc.wantBody {
					t.Fatalf("body %s, want %s", got, tc.wantBody)
				}
				if e.state() == before {
					t.Fatal("state did not change")
				}
				if audit[0]["result"] != "success" || audit[0]["old"] != "v1: 80, v2: 20" || audit[0]["generation"] != 2.0 {
					t.Fatalf("audit line: %v", audit[0])
				}
				return
			}
			if got := e.state(); got != before {
				t.Fatalf("rejected request changed the state: %s -> %s", before, got)
			}
			body := decode(t, w)
			if msg, _ := body["error"].(string); !strings.Contains(msg, tc.wantError) || msg == "" {
				t.Fatalf("error %q, want it to contain %q", msg, tc.wantError)
			}
			if got, _ := body["field"].(string); got != tc.wantField {
				t.Fatalf("field %q, want %q (%s)", got, tc.wantField, w.Body)
			}
			want := "rejected"
			if tc.wantStatus == http.StatusForbidden {
				want = "forbidden" // refused at the door
			}
			if audit[0]["result"] != want {
				t.Fatalf("audit result %v, want %s", audit[0]["result"], want)
			}
		})
	}
}

func TestWeights(t *testing.T) {
	tests := []struct {
		name       string
		service    string
		body       string
		wantStatus int
		wantBody   string
		wantField  string
	}{
		{name: "two versions", body: `{"v1": 70, "v2": 30}`, wantStatus: 200, wantBody: `{"service":"api","v1":70,"v2":30}`},
		{name: "answered in the declared order", body: `{"v2": 30, "v1": 70}`, wantStatus: 200, wantBody: `{"service":"api","v1":70,"v2":30}`},
		{name: "three versions reordered", service: "three", body: `{"c": 10, "b": 20, "a": 70}`, wantStatus: 200, wantBody: `{"service":"three","a":70,"b":20,"c":10}`},
		{name: "three versions", service: "three", body: `{"a": 70, "b": 20, "c": 10}`, wantStatus: 200, wantBody: `{"service":"three","a":70,"b":20,"c":10}`},
		{name: "sum not 100", body: `{"v1": 70, "v2": 20}`, wantStatus: 400, wantField: "weights"},
		{name: "unknown version", body: `{"v1": 70, "v2": 20, "v3": 10}`, wantStatus: 400, wantField: "weights.v3"},
		{name: "missing version", body: `{"v1": 100}`, wantStatus: 400, wantField: "weights.v2"},
		{name: "duplicate version", body: `{"v1": 50, "v1": 50}`, wantStatus: 400, wantField: "weights.v1"},
		{name: "string value", body: `{"v1": "70", "v2": 30}`, wantStatus: 400, wantField: "weights.v1"},
		{name: "three decimals", body: `{"v1": 70.001, "v2": 29.999}`, wantStatus: 400, wantField: "weights.v1"},
		{name: "negative", body: `{"v1": 110, "v2": -10}`, wantStatus: 400, wantField: "weights.v1"},
		{name: "not an object", body: `[70, 30]`, wantStatus: 400, wantField: "weights"},
		{name: "bad JSON", body: `{"v1": 70,`, wantStatus: 400},
		{name: "trailing garbage", body: `{"v1": 70, "v2": 30} x`, wantStatus: 400, wantField: "weights"},
		{name: "unknown service", service: "nope", body: `{"v1": 100}`, wantStatus: 404, wantField: "name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			before := e.state()
			service := tc.service
			if service == "" {
				service = "api"
			}
			w := e.do(req{method: "PUT", path: "/v1/services/" + service + "/weights", body: tc.body})
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			if n := len(e.auditLines()); n != 1 {
				t.Fatalf("%d audit lines, want 1", n)
			}
			if tc.wantStatus == 200 {
				if got := strings.TrimSpace(w.Body.String()); got != tc.wantBody {
					t.Fatalf("body %s, want %s", got, tc.wantBody)
				}
				return
			}
			if got := e.state(); got != before {
				t.Fatalf("rejected request changed the state: %s -> %s", before, got)
			}
			if got, _ := decode(t, w)["field"].(string); got != tc.wantField {
				t.Fatalf("field %q, want %q (%s)", got, tc.wantField, w.Body)
			}
		})
	}
}

func TestDeleteOverride(t *testing.T) {
	e := newEnv(t, envOptions{})
	if w := e.do(req{method: "PUT", path: "/v1/services/api/canary", body: `{"percentage": 40}`}); w.Code != 200 {
		t.Fatalf("canary: %d %s", w.Code, w.Body)
	}
	w := e.do(req{method: "DELETE", path: "/v1/services/api/override", contentType: "-"})
	if w.Code != 200 {
		t.Fatalf("delete: %d %s", w.Code, w.Body)
	}
	body := decode(t, w)
	if body["override"] != false || !cmp.Equal(body["weights"], map[string]any{"v1": 80.0, "v2": 20.0}) {
		t.Fatalf("after DELETE: %s", w.Body)
	}
	if w := e.do(req{method: "DELETE", path: "/v1/services/nope/override"}); w.Code != 404 {
		t.Fatalf("DELETE unknown service: %d %s", w.Code, w.Body)
	}
	audit := e.auditLines()
	if len(audit) != 3 || audit[1]["old"] != "v1: 60, v2: 40" || audit[1]["new"] != "v1: 80, v2: 20" || audit[2]["result"] != "rejected" {
		t.Fatalf("audit: %v", audit)
	}
}

func TestAuth(t *testing.T) {
	const token = "s3cret-token"
	canary := req{method: "PUT", path: "/v1/services/api/canary", body: `{"percentage": 50}`}
	with := func(r req, f func(*req)) req { f(&r); return r }
	tests := []struct {
		name       string
		r          req
		wantStatus int
	}{
		{name: "no token", r: canary, wantStatus: 401},
		{name: "wrong token", r: with(canary, func(r *req) { r.auth = "Bearer nope" }), wantStatus: 401},
		{name: "token prefix", r: with(canary, func(r *req) { r.auth = "Bearer s3cret" }), wantStatus: 401},
		{name: "basic scheme", r: with(canary, func(r *req) { r.auth = "Basic czNjcmV0LXRva2Vu" }), wantStatus: 401},
		{name: "token without scheme", r: with(canary, func(r *req) { r.auth = token }), wantStatus: 401},
		{name: "token in query", r: with(canary, func(r *req) { r.path += "?token=" + token }), wantStatus: 401},
		{name: "access_token in query", r: with(canary, func(r *req) { r.path += "?access_token=" + token }), wantStatus: 401},
		{name: "401 before content type", r: with(canary, func(r *req) { r.contentType = "text/plain" }), wantStatus: 401},
		{name: "weights without token", r: req{method: "PUT", path: "/v1/services/api/weights", body: `{"v1":50,"v2":50}`}, wantStatus: 401},
		{name: "delete without token", r: req{method: "DELETE", path: "/v1/services/api/override"}, wantStatus: 401},
		{name: "reload without token", r: req{method: "POST", path: "/v1/reload"}, wantStatus: 401},
		{name: "right token", r: with(canary, func(r *req) { r.auth = "Bearer " + token }), wantStatus: 200},
		{name: "scheme is case-insensitive", r: with(canary, func(r *req) { r.auth = "bearer " + token }), wantStatus: 200},
		{name: "any Host with a token", r: with(canary, func(r *req) { r.auth = "Bearer " + token; r.host = "10.0.0.7:9002" }), wantStatus: 200},
		{name: "read needs no token", r: req{method: "GET", path: "/v1/services"}, wantStatus: 200},
		{name: "assign needs no token", r: req{method: "POST", path: "/v1/assign", body: `{"user_id":"u"}`}, wantStatus: 200},
		{name: "explain needs no token", r: req{method: "POST", path: "/v1/explain", body: `{}`}, wantStatus: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{token: token})
			before := e.state()
			w := e.do(tc.r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			audit := e.auditLines()
			if w.Code != 401 {
				if w.Code == 200 && tc.r.method == "PUT" && (len(audit) != 1 || !strings.HasPrefix(audit[0]["actor"].(string), "token:")) {
					t.Fatalf("audit for an authorised mutation: %v", audit)
				}
				return
			}
			if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Fatalf("WWW-Authenticate %q", got)
			}
			if got := e.state(); got != before {
				t.Fatalf("unauthorised request changed the state: %s -> %s", before, got)
			}
			if len(audit) != 1 || audit[0]["result"] != "unauthorized" || audit[0]["actor"] != "anonymous" {
				t.Fatalf("audit: %v", audit)
			}
			if strings.Contains(e.audit.String()+w.Body.String(), token) {
				t.Fatal("the token leaked into the audit log or the answer")
			}
		})
	}
}

func TestTokenRotation(t *testing.T) {
	e := newEnv(t, envOptions{token: "old"})
	put := func(auth string) int {
		return e.do(req{method: "PUT", path: "/v1/services/api/canary", body: `{"percentage": 1}`, auth: auth}).Code
	}
	if got := put("Bearer old"); got != 200 {
		t.Fatalf("old token before rotation: %d", got)
	}
	e.tokenMu.Lock()
	e.token = "new"
	e.tokenMu.Unlock()
	if got := put("Bearer old"); got != 401 {
		t.Fatalf("old token after rotation: %d, want 401", got)
	}
	if got := put("Bearer new"); got != 200 {
		t.Fatalf("new token after rotation: %d, want 200", got)
	}
}

func TestAssign(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
		want       map[string]any
		wantField  string
	}{
		{name: "default experiment", body: `{"user_id": "user-123"}`, wantStatus: 200,
			want: map[string]any{"user_id": "user-123", "experiment": "default", "variant": "A", "bucket": 338.0}},
		{name: "named experiment", body: `{"user_id": "user-123", "experiment": "default"}`, wantStatus: 200,
			want: map[string]any{"user_id": "user-123", "experiment": "default", "variant": "A", "bucket": 338.0}},
		{name: "unknown experiment", body: `{"user_id": "u", "experiment": "nope"}`, wantStatus: 404, wantField: "experiment"},
		{name: "missing user_id", body: `{"experiment": "default"}`, wantStatus: 400, wantField: "user_id"},
		{name: "user_id not a string", body: `{"user_id": 123}`, wantStatus: 400, wantField: "user_id"},
		{name: "unknown field", body: `{"user_id": "u", "userid": "u"}`, wantStatus: 400, wantField: "userid"},
		{name: "trailing data", body: `{"user_id": "u"}]`, wantStatus: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			w := e.do(req{method: "POST", path: "/v1/assign", body: tc.body})
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			body := decode(t, w)
			if tc.want != nil {
				if diff := cmp.Diff(tc.want, body); diff != "" {
					t.Fatalf("(-want +got):\n%s", diff)
				}
			} else if got, _ := body["field"].(string); got != tc.wantField {
				t.Fatalf("field %q, want %q (%s)", got, tc.wantField, w.Body)
			}
			if n := len(e.auditLines()); n != 0 {
				t.Fatalf("assign is not a mutation but wrote %d audit lines", n)
			}
		})
	}
	e := newEnv(t, envOptions{})
	if w := e.do(req{method: "POST", path: "/v1/assign", body: `{"user_id":"u"}`, contentType: "text/plain"}); w.Code != 415 {
		t.Fatalf("assign with text/plain: %d", w.Code)
	}
}

func TestExplain(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		wantStatus  int
		wantVersion string
		wantReason  string
		wantField   string
	}{
		{name: "header rule", body: `{"authority": "api.example.com", "path": "/", "headers": {"x-beta": "true"}}`,
			wantStatus: 200, wantVersion: "v2", wantReason: "header_match"},
		{name: "header list", body: `{"authority": "api.example.com", "headers": {"X-Beta": ["false", "true"]}}`,
			wantStatus: 200, wantVersion: "v2", wantReason: "header_match"},
		{name: "sticky key", body: `{"headers": {":authority": "api.example.com", "x-user-id": "user-123"}}`,
			wantStatus: 200, wantReason: "sticky_routing"},
		{name: "weighted", body: `{"authority": "api.example.com", "method": "POST", "path": "/x?y=1"}`,
			wantStatus: 200, wantVersion: "v1", wantReason: "weighted_routing"},
		{name: "cookies", body: `{"authority": "api.example.com", "cookies": {"session": "abc"}}`,
			wantStatus: 200, wantReason: "weighted_routing"},
		{name: "header value not a string", body: `{"headers": {"x-beta": 1}}`, wantStatus: 400, wantField: "headers.x-beta"},
		{name: "empty header name", body: `{"headers": {"": "x"}}`, wantStatus: 400, wantField: "headers."},
		{name: "unknown field", body: `{"host": "api.example.com"}`, wantStatus: 400, wantField: "host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			w := e.do(req{method: "POST", path: "/v1/explain", body: tc.body})
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			body := decode(t, w)
			if tc.wantStatus != 200 {
				if body["field"] != tc.wantField {
					t.Fatalf("field %v, want %q", body["field"], tc.wantField)
				}
				return
			}
			if body["reason"] != tc.wantReason || (tc.wantVersion != "" && body["version"] != tc.wantVersion) {
				t.Fatalf("explain: %s", w.Body)
			}
			if body["service"] != "api" || body["weights"] == nil {
				t.Fatalf("explain lacks service or weights: %s", w.Body)
			}
		})
	}
}

func TestReload(t *testing.T) {
	edited := testConfig()
	edited.Services[0].Weights = split.Weights{{Version: "v1", BasisPoints: 5000}, {Version: "v2", BasisPoints: 5000}}
	type reloadFunc = func(context.Context) (string, error)
	unchanged := func(*store.Store) reloadFunc {
		return func(context.Context) (string, error) { return "unchanged", nil }
	}
	tests := []struct {
		name       string
		reload     func(s *store.Store) reloadFunc
		noReload   bool
		r          req
		wantStatus int
		wantResult string
		wantError  string
	}{
		{
			name: "file changed",
			reload: func(s *store.Store) reloadFunc {
				return func(context.Context) (string, error) {
					_, err := s.ApplyFile(edited, "sha-2", "config.yaml")
					return "success", err
				}
			},
			wantStatus: 200, wantResult: "success",
		},
		{name: "file unchanged", reload: unchanged, wantStatus: 200, wantResult: "unchanged"},
		{
			// The watcher applied a new file just before this reload ran,
			// which then found nothing new: the answer is this reload's own
			// result, not a comparison of snapshots.
			name: "another reload applied a file meanwhile",
			reload: func(s *store.Store) reloadFunc {
				return func(context.Context) (string, error) {
					_, err := s.ApplyFile(edited, "sha-2", "config.yaml")
					return "unchanged", err
				}
			},
			wantStatus: 200, wantResult: "unchanged",
		},
		{name: "empty JSON object body", reload: unchanged, r: req{body: `{}`}, wantStatus: 200, wantResult: "unchanged"},
		{
			name: "invalid file",
			reload: func(s *store.Store) reloadFunc {
				return func(context.Context) (string, error) {
					err := errors.New("config.yaml: services[0].weights: sum is 90, want 100")
					s.RecordReloadError(err)
					return "error", err
				}
			},
			wantStatus: 422, wantError: "services[0].weights: sum is 90",
		},
		{name: "not configured", noReload: true, wantStatus: 501},
		{name: "wrong content type", r: req{contentType: "text/plain"}, wantStatus: 415},
		{name: "unknown field", r: req{body: `{"force": true}`}, wantStatus: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{noReload: tc.noReload})
			if tc.reload != nil {
				e.reload = tc.reload(e.store)
			}
			before := e.store.Load()
			r := tc.r
			r.method, r.path = "POST", "/v1/reload"
			w := e.do(r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			body := decode(t, w)
			if tc.wantStatus != 200 {
				if msg, _ := body["error"].(string); !strings.Contains(msg, tc.wantError) {
					t.Fatalf("error %q, want %q", msg, tc.wantError)
				}
				if e.store.Load() != before {
					t.Fatal("a failed reload changed the snapshot")
				}
			} else if tc.name == "another reload applied a file meanwhile" {
				if body["result"] != tc.wantResult {
					t.Fatalf("reload answer: %s", w.Body)
				}
			} else if body["result"] != tc.wantResult || body["sha256"] != e.store.Load().SHA256 {
				t.Fatalf("reload answer: %s", w.Body)
			}
			if n := len(e.auditLines()); n != 1 {
				t.Fatalf("%d audit lines, want 1", n)
			}
		})
	}
}

func TestRequestMetrics(t *testing.T) {
	e := newEnv(t, envOptions{token: "t"})
	e.do(req{method: "GET", path: "/v1/services/api"})
	e.do(req{method: "GET", path: "/v1/services/other-name"})
	e.do(req{method: "PUT", path: "/v1/services/api/canary", body: `{"percentage": 5}`})
	e.do(req{method: "PUT", path: "/v1/services/api/canary", body: `{"percentage": 5}`, auth: "Bearer t"})
	e.do(req{method: "GET", path: "/no/such/path"})
	w := e.do(req{method: "GET", path: "/metrics"})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "splitter_config_reloads_total") {
		t.Fatalf("/metrics: %d\n%s", w.Code, w.Body)
	}
	want := []string{
		"GET /v1/services/{name} OK",
		"GET /v1/services/{name} Not Found",
		"PUT /v1/services/{name}/canary Unauthorized",
		"PUT /v1/services/{name}/canary OK",
		"unmatched Not Found",
		"GET /metrics OK",
	}
	if diff := cmp.Diff(want, e.rec.requests); diff != "" {
		t.Fatalf("request metrics (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"unauthorized", "success"}, e.rec.mutations); diff != "" {
		t.Fatalf("mutation metrics (-want +got):\n%s", diff)
	}
}

// TestOverHTTP runs the handler behind NewServer on a real loopback
// listener: body limit, JSON errors and auth hold over the wire.
func TestOverHTTP(t *testing.T) {
	e := newEnv(t, envOptions{token: "tok"})
	srv := httptest.NewUnstartedServer(e.h)
	srv.Config = admin.NewServer("127.0.0.1:0", e.h)
	srv.Start()
	t.Cleanup(srv.Close)

	send := func(method, path, body, auth string) (int, string) {
		r, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		resp, err := srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := send("PUT", "/v1/services/api/canary", `{"percentage": 30}`, "Bearer tok"); code != 200 || !strings.Contains(body, `"v2":30`) {
		t.Fatalf("canary over HTTP: %d %s", code, body)
	}
	big := `{"percentage": 5, "x": "` + strings.Repeat("a", 10<<20) + `"}`
	if code, _ := send("PUT", "/v1/services/api/canary", big, "Bearer tok"); code != 413 {
		t.Fatalf("10 MiB body: %d, want 413", code)
	}
	if code, _ := send("PUT", "/v1/services/api/canary?token=tok", `{"percentage": 5}`, ""); code != 401 {
		t.Fatalf("token in query over HTTP: %d, want 401", code)
	}
	if code, body := send("GET", "/v1/services/api", "", ""); code != 200 || !strings.Contains(body, `"override":true`) {
		t.Fatalf("read over HTTP: %d %s", code, body)
	}
}

func TestCheckBindAddress(t *testing.T) {
	tests := []struct {
		addr, token string
		wantErr     string
	}{
		{addr: "127.0.0.1:9002"},
		{addr: "[::1]:9002"},
		{addr: "localhost:9002"},
		{addr: "127.0.0.1:0"},
		{addr: "0.0.0.0:9002", wantErr: "admin_addr 0.0.0.0:9002 is not loopback; set admin_token"},
		{addr: ":9002", wantErr: "is not loopback"},
		{addr: "10.1.2.3:9002", wantErr: "is not loopback"},
		{addr: "[::]:9002", wantErr: "is not loopback"},
		{addr: "admin.internal:9002", wantErr: "is not loopback"},
		{addr: "0.0.0.0:9002", token: "t"},
		{addr: "no-port", wantErr: "admin_addr"},
		{addr: "no-port", token: "t", wantErr: "admin_addr"},
	}
	for _, tc := range tests {
		t.Run(tc.addr+"/"+tc.token, func(t *testing.T) {
			err := admin.CheckBindAddress(tc.addr, tc.token)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestNewServerTimeouts(t *testing.T) {
	s := admin.NewServer("127.0.0.1:0", http.NotFoundHandler())
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 {
		t.Fatalf("server without limits: %+v", s)
	}
	if s.Addr != "127.0.0.1:0" || s.Handler == nil {
		t.Fatalf("addr %q handler %v", s.Addr, s.Handler)
	}
}

// TestConcurrentPuts: mutations are serialised; the final state is one of
// the requests and every one of them got its own generation.
func TestConcurrentPuts(t *testing.T) {
	e := newEnv(t, envOptions{})
	const n = 8
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for i := range n {
		wg.Go(func() {
			hr := httptest.NewRequestWithContext(t.Context(), "PUT", "/v1/services/api/canary",
				strings.NewReader(`{"percentage": `+strconv.Itoa(10*(i+1))+`}`))
			hr.Header.Set("Content-Type", "application/json")
			hr.Host = "localhost:9002"
			w := httptest.NewRecorder()
			e.h.ServeHTTP(w, hr)
			codes <- w.Code
		})
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != 200 {
			t.Fatalf("a concurrent PUT got %d", code)
		}
	}
	snap := e.store.Load()
	if snap.Generation != 1+n {
		t.Fatalf("generation %d, want %d", snap.Generation, 1+n)
	}
	canary := snap.Overrides["api"][1].BasisPoints
	if canary%1000 != 0 || canary < 1000 || canary > 1000*n {
		t.Fatalf("final canary share %d bp is none of the requests", canary)
	}
}

// TestAuditOldIsWhatTheChangeReplaced: with concurrent mutations, every
// audit line's "old" is exactly the "new" of the change before it (by
// generation): the old value is read under the store's lock, not before.
func TestAuditOldIsWhatTheChangeReplaced(t *testing.T) {
	e := newEnv(t, envOptions{})
	const writers, each = 4, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				// Distinct shares: 0.5, 1, 1.5, ... 80.
				body := `{"percentage": ` + strconv.FormatFloat(float64(1+w*each+i)/2, 'f', -1, 64) + `}`
				if code := e.do(req{method: "PUT", path: "/v1/services/api/canary", body: body}).Code; code != 200 {
					t.Errorf("PUT %s: %d", body, code)
				}
			}
		})
	}
	wg.Wait()
	byGen := map[int]map[string]any{}
	for _, line := range e.auditLines() {
		byGen[int(line["generation"].(float64))] = line
	}
	if len(byGen) != writers*each {
		t.Fatalf("%d audit lines with distinct generations, want %d", len(byGen), writers*each)
	}
	for g, line := range byGen {
		prev, ok := byGen[g-1]
		if !ok {
			continue
		}
		if line["old"] != prev["new"] {
			t.Fatalf("generation %d: old %q, but generation %d set %q", g, line["old"], g-1, prev["new"])
		}
	}
}
