package admin_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// newRolloutEnv serves the admin API with a rollout manager on a config
// whose api service has a rollout (and web has none), with a token.
func newRolloutEnv(t *testing.T) *env {
	t.Helper()
	s, err := store.New(store.Options{Now: func() time.Time { return loadedAt }})
	if err != nil {
		t.Fatal(err)
	}
	r := split.DefaultRollout()
	cfg := &split.Config{Services: []split.Service{
		{Name: "api", Hosts: []string{"*"}, Weights: split.Weights{{Version: "v1", BasisPoints: 10000}, {Version: "v2", BasisPoints: 0}}, Rollout: &r},
		{Name: "web", Hosts: []string{"web.example.com"}, Weights: split.Weights{{Version: "a", BasisPoints: 5000}, {Version: "b", BasisPoints: 5000}}},
	}}
	if _, err := s.ApplyFile(cfg, "sha-1", "config.yaml"); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: s, audit: &bytes.Buffer{}, rec: &recorder{}, token: "s3cret", ready: true}
	audit := slog.New(slog.NewJSONHandler(e.audit, nil))
	m, err := rollout.New(t.Context(), rollout.Options{
		Store: s, Evidence: rollout.NewLocal(&signals.Counters{}, time.Second), Audit: audit,
		Now: func() time.Time { return loadedAt },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.h = admin.New(admin.Options{
		Store: s, Rollouts: m, Token: func() string { return e.token }, Audit: audit, Recorder: e.rec,
	})
	return e
}

const bearer = "Bearer s3cret"

func (e *env) canary(service string) string {
	svc, _ := e.store.Table().Service(service)
	bp, _ := svc.Weights.Get("v2")
	return split.FormatPercent(bp)
}

func TestRolloutEndpoints(t *testing.T) {
	e := newRolloutEnv(t)
	post := func(body string) map[string]any {
		t.Helper()
		w := e.do(req{method: http.MethodPost, path: "/v1/services/api/rollout", body: body, auth: bearer})
		if w.Code != http.StatusOK {
			t.Fatalf("POST %s: %d %s", body, w.Code, w.Body)
		}
		return decode(t, w)
	}

	w := e.do(req{method: http.MethodGet, path: "/v1/services/api/rollout"})
	got := decode(t, w)
	if w.Code != http.StatusOK || got["state"] != "idle" || got["canary"] != "v2" || got["stable"] != "v1" || got["steps"] != 4.0 {
		t.Fatalf("GET idle rollout: %d %v", w.Code, got)
	}
	cfg, _ := got["config"].(map[string]any)
	if cfg["hold"] != "1m0s" {
		t.Fatalf("config in the status: %v", cfg)
	}

	got = post(`{"action": "start"}`)
	if got["state"] != "progressing" || got["step"] != 1.0 || got["weight"] != 5.0 || got["owns_weights"] != true || e.canary("api") != "5" {
		t.Fatalf("start: %v (canary %s)", got, e.canary("api"))
	}
	hist, _ := got["history"].([]any)
	if len(hist) != 1 {
		t.Fatalf("history after start: %v", hist)
	}
	actor, _ := hist[0].(map[string]any)["actor"].(string)
	if !strings.HasPrefix(actor, "token:") || actor == "token:"+unkeyedFingerprint("s3cret") {
		t.Fatalf("history after start names %q, want a keyed token fingerprint", actor)
	}
	var sawAdmin, sawTransition bool
	for _, l := range e.auditLines() {
		switch l["msg"] {
		case "admin mutation":
			sawAdmin = l["endpoint"] == "POST /v1/services/{name}/rollout" && l["old"] == "idle step 0 canary 0" &&
				l["new"] == "progressing step 1 canary 5" && l["result"] == "success" && l["actor"] == actor
		case "rollout transition":
			sawTransition = l["to"] == "progressing" && l["service"] == "api"
		}
	}
	if !sawAdmin || !sawTransition {
		t.Errorf("audit: admin line %v, transition line %v", sawAdmin, sawTransition)
	}

	// While it progresses, the rollout owns the weights.
	before := e.canary("api")
	for _, r := range []req{
		{method: http.MethodPut, path: "/v1/services/api/canary", body: `{"percentage": 50}`, auth: bearer},
		{method: http.MethodPut, path: "/v1/services/api/weights", body: `{"v1": 50, "v2": 50}`, auth: bearer},
		{method: http.MethodDelete, path: "/v1/services/api/override", auth: bearer},
	} {
		w := e.do(r)
		body := decode(t, w)
		if w.Code != http.StatusConflict || body["field"] != "name" || !strings.Contains(body["error"].(string), "in a rollout (progressing)") {
			t.Errorf("%s %s during a rollout: %d %v, want 409", r.method, r.path, w.Code, body)
		}
	}
	if e.canary("api") != before {
		t.Fatalf("a refused call changed the canary to %s", e.canary("api"))
	}
	// Another service is not concerned.
	if w := e.do(req{method: http.MethodPut, path: "/v1/services/web/weights", body: `{"a": 60, "b": 40}`, auth: bearer}); w.Code != http.StatusOK {
		t.Errorf("weights of a service without a rollout: %d %s", w.Code, w.Body)
	}

	// Paused, the operator may set the canary by hand.
	post(`{"action": "pause"}`)
	if w := e.do(req{method: http.MethodPut, path: "/v1/services/api/canary", body: `{"percentage": 1}`, auth: bearer}); w.Code != http.StatusOK {
		t.Fatalf("canary while paused: %d %s", w.Code, w.Body)
	}
	if got = post(`{"action": "resume"}`); got["state"] != "progressing" || e.canary("api") != "5" {
		t.Fatalf("resume: %v, canary %s (want the step's 5 back)", got, e.canary("api"))
	}
	if got = post(`{"action": "abort"}`); got["state"] != "aborted" || e.canary("api") != "0" || got["owns_weights"] != false {
		t.Fatalf("abort: %v, canary %s", got, e.canary("api"))
	}
}

func TestRolloutEndpointErrors(t *testing.T) {
	e := newRolloutEnv(t)
	tests := []struct {
		name   string
		r      req
		status int
		field  string
		msg    string
	}{
		{"no token", req{method: http.MethodPost, path: "/v1/services/api/rollout", body: `{"action":"start"}`}, http.StatusUnauthorized, "", "missing bearer token"},
		{"not JSON", req{method: http.MethodPost, path: "/v1/services/api/rollout", body: `{"action":"start"}`, contentType: "text/plain", auth: bearer}, http.StatusUnsupportedMediaType, "", "application/json"},
		{"unknown action", req{method: http.MethodPost, path: "/v1/services/api/rollout", body: `{"action":"fly"}`, auth: bearer}, http.StatusBadRequest, "action", `unknown action "fly"`},
		{"no action", req{method: http.MethodPost, path: "/v1/services/api/rollout", body: `{}`, auth: bearer}, http.StatusBadRequest, "action", "action is required"},
		{"unknown field", req{method: http.MethodPost, path: "/v1/services/api/rollout", body: `{"action":"start","step":2}`, auth: bearer}, http.StatusBadRequest, "step", `unknown field "step"`},
		{"action not a string", req{method: http.MethodPost, path: "/v1/services/api/rollout", body: `{"action":1}`, auth: bearer}, http.StatusBadRequest, "action", "must be a JSON string"},
		{"resume an idle rollout", req{method: http.MethodPost, path: "/v1/services/api/rollout", body: `{"action":"resume"}`, auth: bearer}, http.StatusConflict, "action", "cannot resume a rollout that is idle"},
		{"service without a rollout", req{method: http.MethodPost, path: "/v1/services/web/rollout", body: `{"action":"start"}`, auth: bearer}, http.StatusNotFound, "name", "no rollout configured"},
		{"unknown service", req{method: http.MethodGet, path: "/v1/services/nope/rollout"}, http.StatusNotFound, "name", "unknown service"},
		{"GET a service without a rollout", req{method: http.MethodGet, path: "/v1/services/web/rollout"}, http.StatusNotFound, "name", "no rollout configured"},
		{"PUT is not a rollout method", req{method: http.MethodPut, path: "/v1/services/api/rollout", body: `{}`, auth: bearer}, http.StatusMethodNotAllowed, "", "not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := e.do(tc.r)
			body := decode(t, w)
			if w.Code != tc.status || body["field"] != nilIfEmpty(tc.field) || !strings.Contains(body["error"].(string), tc.msg) {
				t.Fatalf("%d %v, want %d field %q containing %q", w.Code, body, tc.status, tc.field, tc.msg)
			}
		})
	}
	if e.canary("api") != "0" {
		t.Fatalf("refused calls changed the canary to %s", e.canary("api"))
	}
}

// TestRolloutWithoutManager: an admin API built without rollouts answers
// 501 on their routes and refuses nothing else.
func TestRolloutWithoutManager(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.do(req{method: http.MethodGet, path: "/v1/services/api/rollout"})
	if w.Code != http.StatusNotImplemented {
		t.Fatalf("GET rollout without a manager: %d %s", w.Code, w.Body)
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// unkeyedFingerprint is how the audit named a token before it was keyed
// (the first 6 bytes of its sha256, in hex), which anyone could check
// against a guessed token.
func unkeyedFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}
