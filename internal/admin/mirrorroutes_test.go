package admin_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/trafficsplit/splitter/internal/store"
)

const canaryMirror = `{"when": [{"header": "x-canary", "exact": "1"}], "version": "v2", "percent": 50}`

// explainMirror asks POST /v1/explain which version a request with the
// given headers would be copied to, and by which mirror route.
func (e *env) explainMirror(body string) (mirror, route string) {
	e.t.Helper()
	w := e.do(req{method: http.MethodPost, path: "/v1/explain", body: body})
	if w.Code != http.StatusOK {
		e.t.Fatalf("explain: %d %s", w.Code, w.Body)
	}
	got := decode(e.t, w)
	mirror, _ = got["mirror"].(string)
	route, _ = got["mirror_route"].(string)
	return mirror, route
}

// A mirror route is in force at once, listed with its owner in the
// service's view, explained, and gone when deleted; deleting it again
// changes nothing. Both are audited.
func TestMirrorRoute(t *testing.T) {
	e := newEnv(t, envOptions{})
	body := `{"when": [{"header": "x-canary", "exact": "1"}, {"request": "method", "exact": "POST"}, {"request": "path", "prefix": "/orders"}], "version": "v2", "percent": 100, "owner": "argo-rollouts:shop/api"}`
	w := e.do(req{method: http.MethodPut, path: "/v1/services/api/mirror-routes/mirror", body: body})
	if w.Code != http.StatusOK {
		t.Fatalf("PUT mirror route: %d %s", w.Code, w.Body)
	}
	want := map[string]any{
		"service": "api", "generation": 2.0,
		"mirror_route": map[string]any{
			"name": "mirror", "version": "v2", "percent": 100.0, "owner": "argo-rollouts:shop/api",
			"when": []any{
				map[string]any{"header": "x-canary", "exact": "1"},
				map[string]any{"request": "method", "exact": "POST"},
				map[string]any{"request": "path", "prefix": "/orders"},
			},
		},
	}
	if diff := cmp.Diff(want, decode(t, w)); diff != "" {
		t.Fatalf("PUT answer (-want +got):\n%s", diff)
	}
	lines := e.auditLines()
	if len(lines) != 1 || lines[0]["endpoint"] != "PUT /v1/services/{name}/mirror-routes/{route}" || lines[0]["old"] != "mirror route mirror: none" ||
		lines[0]["new"] != `mirror route mirror: header x-canary exact "1" and request method exact "POST" and request path prefix "/orders" -> v2 100% (owner argo-rollouts:shop/api)` {
		t.Fatalf("audit of the PUT: %v", lines)
	}
	// v1 serves every request with the user id (sticky at 80/20 is not
	// certain), so ask without one: the round-robin's next is v1 or v2.
	match := `{"authority": "api.example.com", "method": "POST", "path": "/orders/7?x=1", "headers": {"x-canary": "1"}}`
	if m, route := e.explainMirror(match); route != "mirror" || (m != "v2" && m != "") {
		t.Fatalf("matching request: mirror %q by %q", m, route)
	}
	if _, route := e.explainMirror(`{"authority": "api.example.com", "method": "GET", "path": "/orders", "headers": {"x-canary": "1"}}`); route != "" {
		t.Fatalf("a GET matched the mirror route %q", route)
	}
	view := decode(t, e.do(req{method: http.MethodGet, path: "/v1/services/api"}))
	routes, _ := view["mirror_routes"].([]any)
	if len(routes) != 1 || routes[0].(map[string]any)["owner"] != "argo-rollouts:shop/api" || routes[0].(map[string]any)["percent"] != 100.0 {
		t.Fatalf("mirror_routes: %v", view["mirror_routes"])
	}
	all := decode(t, e.do(req{method: http.MethodGet, path: "/v1/services"}))
	if svc := all["services"].([]any)[0].(map[string]any); len(svc["mirror_routes"].([]any)) != 1 {
		t.Fatalf("GET /v1/services: %v", svc["mirror_routes"])
	}

	w = e.do(req{method: http.MethodDelete, path: "/v1/services/api/mirror-routes/mirror?owner=argo-rollouts:shop/api", contentType: "-"})
	if got := decode(t, w); w.Code != http.StatusOK || got["removed"] != true {
		t.Fatalf("DELETE: %d %v", w.Code, got)
	}
	if _, route := e.explainMirror(match); route != "" {
		t.Fatalf("after DELETE the mirror route %q still matched", route)
	}
	lines = e.auditLines()
	if len(lines) != 1 || !strings.HasPrefix(lines[0]["old"].(string), "mirror route mirror: header x-canary") || lines[0]["new"] != "mirror route mirror: none" {
		t.Fatalf("audit of the DELETE: %v", lines)
	}
	w = e.do(req{method: http.MethodDelete, path: "/v1/services/api/mirror-routes/mirror", contentType: "-"})
	if got := decode(t, w); w.Code != http.StatusOK || got["removed"] != false {
		t.Fatalf("DELETE again: %d %v", w.Code, got)
	}
	view = decode(t, e.do(req{method: http.MethodGet, path: "/v1/services/api"}))
	if routes, ok := view["mirror_routes"].([]any); !ok || len(routes) != 0 {
		t.Fatalf("mirror_routes after DELETE: %v (want [])", view["mirror_routes"])
	}
}

// Every bad mirror route is refused with the field that is wrong, and
// changes nothing.
func TestMirrorRouteRefused(t *testing.T) {
	tests := []struct {
		name, path, body string
		code             int
		field, msg       string
	}{
		{"no version", "/v1/services/api/mirror-routes/m", `{"when": [{"header": "x-a", "exact": "1"}], "percent": 5}`, 400, "version", "version is required"},
		{"no percent", "/v1/services/api/mirror-routes/m", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2"}`, 400, "percent", "percent is required"},
		{"percent as a string", "/v1/services/api/mirror-routes/m", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "percent": "50"}`, 400, "percent", "percent must be a number"},
		{"percent above 100", "/v1/services/api/mirror-routes/m", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "percent": 100.5}`, 400, "percent", "100"},
		{"three decimals", "/v1/services/api/mirror-routes/m", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "percent": 1.125}`, 400, "percent", "decimals"},
		{"unknown version", "/v1/services/api/mirror-routes/m", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v9", "percent": 5}`, 400, "version", `unknown version "v9"`},
		{"no conditions", "/v1/services/api/mirror-routes/m", `{"when": [], "version": "v2", "percent": 5}`, 400, "when", "no conditions"},
		{"bad regex", "/v1/services/api/mirror-routes/m", `{"when": [{"request": "path", "regex": "("}], "version": "v2", "percent": 5}`, 400, "when[0].regex", "invalid regular expression"},
		{"bad request target", "/v1/services/api/mirror-routes/m", `{"when": [{"request": "scheme", "exact": "https"}], "version": "v2", "percent": 5}`, 400, "when[0].request", "must be method or path"},
		{"present on the path", "/v1/services/api/mirror-routes/m", `{"when": [{"request": "path", "present": true}], "version": "v2", "percent": 5}`, 400, "when[0].present", "every request has a path"},
		{"unknown field", "/v1/services/api/mirror-routes/m", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "percent": 5, "weight": 1}`, 400, "weight", "unknown field"},
		{"bad name", "/v1/services/api/mirror-routes/a%20b", canaryMirror, 400, "route", "may only contain"},
		{"bad owner", "/v1/services/api/mirror-routes/m", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "percent": 5, "owner": "two words"}`, 400, "owner", "without spaces"},
		{"unknown service", "/v1/services/nope/mirror-routes/m", canaryMirror, 404, "name", "unknown service"},
		{"not JSON", "/v1/services/api/mirror-routes/m", `{"when": `, 400, "", "invalid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			putRefused(t, tc.path, tc.body, tc.code, tc.field, tc.msg, "mirror route", func(s *store.Snapshot) bool { return s.MirrorRoutes != nil })
		})
	}
}

// A mirror route belongs to its owner, like a runtime route; the token
// rules are the other mutations'.
func TestMirrorRouteOwners(t *testing.T) {
	e := newEnv(t, envOptions{token: "s3cret"})
	put := func(body string) (int, string) {
		t.Helper()
		w := e.do(req{method: http.MethodPut, path: "/v1/services/api/mirror-routes/m", body: body, auth: bearer})
		msg, _ := decode(t, w)["error"].(string)
		return w.Code, msg
	}
	owned := strings.Replace(canaryMirror, `"version"`, `"owner": "argo-rollouts:ns/a", "version"`, 1)
	if code, msg := put(owned); code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, msg)
	}
	if code, msg := put(strings.Replace(owned, "ns/a", "ns/b", 1)); code != http.StatusConflict || !strings.Contains(msg, `mirror route "m" belong to "argo-rollouts:ns/a", not "argo-rollouts:ns/b"`) {
		t.Fatalf("PUT by another owner: %d %s", code, msg)
	}
	if code, msg := put(canaryMirror); code != http.StatusConflict || !strings.Contains(msg, `belong to "argo-rollouts:ns/a"`) {
		t.Fatalf("PUT without the owner: %d %s", code, msg)
	}
	w := e.do(req{method: http.MethodDelete, path: "/v1/services/api/mirror-routes/m?owner=argo-rollouts:ns/b", contentType: "-", auth: bearer})
	if w.Code != http.StatusConflict || len(e.store.Load().MirrorRoutes["api"]) != 1 {
		t.Fatalf("DELETE by another owner: %d %s", w.Code, w.Body)
	}
	e.auditLines()
	for _, r := range []req{
		{method: http.MethodPut, path: "/v1/services/api/mirror-routes/n", body: canaryMirror},
		{method: http.MethodDelete, path: "/v1/services/api/mirror-routes/m", contentType: "-"},
		{method: http.MethodDelete, path: "/v1/services/api/mirror-routes/m", contentType: "-", auth: "Bearer wrong"},
	} {
		if w := e.do(r); w.Code != http.StatusUnauthorized || len(e.store.Load().MirrorRoutes["api"]) != 1 {
			t.Fatalf("%s %s %q without the token: %d", r.method, r.path, r.auth, w.Code)
		}
	}
	if lines := e.auditLines(); len(lines) != 3 || lines[0]["result"] != "unauthorized" {
		t.Fatalf("audit of the refused calls: %v", lines)
	}
	w = e.do(req{method: http.MethodDelete, path: "/v1/services/api/mirror-routes/m", contentType: "-", auth: bearer})
	if w.Code != http.StatusOK || e.store.Load().MirrorRoutes != nil {
		t.Fatalf("operator's DELETE: %d %s", w.Code, w.Body)
	}
}

// A controller's mirror route is refused while a splitter rollout drives
// the service (progressing or paused), an operator's while it is
// progressing (as a runtime mirror is); removing one is always allowed.
func TestMirrorRouteAndRollouts(t *testing.T) {
	e := newRolloutEnv(t)
	do := func(method, path, body string) (int, string) { return e.call(t, method, path, body) }
	owned := strings.Replace(canaryMirror, `"version"`, `"owner": "argo-rollouts:shop/api", "version"`, 1)
	if code, msg := do(http.MethodPut, "/v1/services/api/mirror-routes/m", owned); code != http.StatusOK {
		t.Fatalf("owned mirror route: %d %s", code, msg)
	}
	if code, msg := do(http.MethodPost, "/v1/services/api/rollout", `{"action": "start"}`); code != http.StatusOK {
		t.Fatalf("start: %d %s", code, msg)
	}
	code, msg := do(http.MethodPut, "/v1/services/api/mirror-routes/m", strings.Replace(owned, `"percent": 50`, `"percent": 60`, 1))
	if code != http.StatusConflict || !strings.Contains(msg, "splitter rollout drives") || !strings.Contains(msg, "progressing") {
		t.Fatalf("owned PUT while progressing: %d %s", code, msg)
	}
	if code, msg := do(http.MethodPut, "/v1/services/api/mirror-routes/ops", canaryMirror); code != http.StatusConflict || !strings.Contains(msg, "in a rollout") {
		t.Fatalf("operator's PUT while progressing: %d %s", code, msg)
	}
	if code, msg := do(http.MethodPost, "/v1/services/api/rollout", `{"action": "pause"}`); code != http.StatusOK {
		t.Fatalf("pause: %d %s", code, msg)
	}
	if code, msg := do(http.MethodPut, "/v1/services/api/mirror-routes/m", owned); code != http.StatusConflict || !strings.Contains(msg, "(paused)") {
		t.Fatalf("owned PUT while paused: %d %s", code, msg)
	}
	if code, msg := do(http.MethodPut, "/v1/services/api/mirror-routes/ops", canaryMirror); code != http.StatusOK {
		t.Fatalf("operator's PUT while paused: %d %s", code, msg)
	}
	if code, msg := do(http.MethodDelete, "/v1/services/api/mirror-routes/m?owner=argo-rollouts:shop/api", ""); code != http.StatusOK {
		t.Fatalf("owned DELETE while paused: %d %s", code, msg)
	}
	if names := e.store.Load().MirrorRoutes["api"]; len(names) != 1 || names[0].Name != "ops" {
		t.Fatalf("mirror routes: %v", names)
	}
}
