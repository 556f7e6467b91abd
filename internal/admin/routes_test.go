package admin_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/trafficsplit/splitter/internal/store"
)

const canaryRoute = `{"when": [{"header": "x-canary", "exact": "1"}], "version": "v2"}`

// explainVersion asks POST /v1/explain which version a request with the
// given headers gets, and by which rule.
func (e *env) explainVersion(headers string) (version, rule string) {
	e.t.Helper()
	w := e.do(req{method: http.MethodPost, path: "/v1/explain", body: `{"authority": "api.example.com", "headers": ` + headers + `}`})
	if w.Code != http.StatusOK {
		e.t.Fatalf("explain: %d %s", w.Code, w.Body)
	}
	got := decode(e.t, w)
	version, _ = got["version"].(string)
	rule, _ = got["rule"].(string)
	return version, rule
}

// A runtime route is in force at once, ahead of the file's rules, listed
// with its owner, and gone when deleted; deleting it again changes nothing.
func TestRuntimeRoute(t *testing.T) {
	e := newEnv(t, envOptions{})
	body := `{"when": [{"header": "x-beta", "exact": "true"}], "version": "v1", "owner": "argo-rollouts:default/api"}`
	w := e.do(req{method: http.MethodPut, path: "/v1/services/api/routes/beta-stays", body: body})
	if w.Code != http.StatusOK {
		t.Fatalf("PUT route: %d %s", w.Code, w.Body)
	}
	got := decode(t, w)
	want := map[string]any{
		"service": "api", "generation": 2.0,
		"route": map[string]any{
			"name": "beta-stays", "version": "v1", "owner": "argo-rollouts:default/api",
			"when": []any{map[string]any{"header": "x-beta", "exact": "true"}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("PUT answer (-want +got):\n%s", diff)
	}
	// x-beta: true also matches the file's beta-testers (-> v2): the
	// runtime route comes first.
	if v, rule := e.explainVersion(`{"x-beta": "true"}`); v != "v1" || rule != "beta-stays" {
		t.Fatalf("x-beta: true went to %s by %q, want v1 by beta-stays", v, rule)
	}

	view := decode(t, e.do(req{method: http.MethodGet, path: "/v1/services/api"}))
	rules, _ := view["rules"].([]any)
	routes, _ := view["runtime_routes"].([]any)
	if len(rules) != 2 || rules[0].(map[string]any)["name"] != "beta-stays" || rules[1].(map[string]any)["name"] != "beta-testers" {
		t.Fatalf("rules in force: %v", rules)
	}
	if len(routes) != 1 || routes[0].(map[string]any)["owner"] != "argo-rollouts:default/api" {
		t.Fatalf("runtime_routes: %v", routes)
	}

	w = e.do(req{method: http.MethodDelete, path: "/v1/services/api/routes/beta-stays?owner=argo-rollouts:default/api", contentType: "-"})
	if got := decode(t, w); w.Code != http.StatusOK || got["removed"] != true {
		t.Fatalf("DELETE: %d %v", w.Code, got)
	}
	if v, rule := e.explainVersion(`{"x-beta": "true"}`); v != "v2" || rule != "beta-testers" {
		t.Fatalf("after DELETE x-beta: true went to %s by %q, want v2 by beta-testers", v, rule)
	}
	w = e.do(req{method: http.MethodDelete, path: "/v1/services/api/routes/beta-stays", contentType: "-"})
	if got := decode(t, w); w.Code != http.StatusOK || got["removed"] != false {
		t.Fatalf("DELETE again: %d %v", w.Code, got)
	}
}

// Every bad route is refused with the field that is wrong, and changes
// nothing.
func TestRuntimeRouteRefused(t *testing.T) {
	tests := []struct {
		name, path, body string
		code             int
		field, msg       string
	}{
		{"bad regex", "/v1/services/api/routes/r", `{"when": [{"header": "x-a", "regex": "("}], "version": "v2"}`, 400, "when[0].regex", "invalid regular expression"},
		{"unknown version", "/v1/services/api/routes/r", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v9"}`, 400, "version", `unknown version "v9"`},
		{"no version", "/v1/services/api/routes/r", `{"when": [{"header": "x-a", "exact": "1"}]}`, 400, "version", "missing"},
		{"no conditions", "/v1/services/api/routes/r", `{"when": [], "version": "v2"}`, 400, "when", "no conditions"},
		{"two operators", "/v1/services/api/routes/r", `{"when": [{"header": "x-a", "exact": "1", "prefix": "1"}], "version": "v2"}`, 400, "when[0]", "has both exact and prefix"},
		{"no source", "/v1/services/api/routes/r", `{"when": [{"exact": "1"}], "version": "v2"}`, 400, "when[0]", "needs one of header, cookie, query or request"},
		{"unknown field", "/v1/services/api/routes/r", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "weight": 5}`, 400, "weight", "unknown field"},
		{"name in the body", "/v1/services/api/routes/r", `{"name": "x", "when": [{"header": "x-a", "exact": "1"}], "version": "v2"}`, 400, "name", "unknown field"},
		{"bad route name", "/v1/services/api/routes/a%20b", canaryRoute, 400, "route", "may only contain"},
		{"long route name", "/v1/services/api/routes/" + strings.Repeat("r", 129), canaryRoute, 400, "route", "longer than 128"},
		{"bad owner", "/v1/services/api/routes/r", `{"when": [{"header": "x-a", "exact": "1"}], "version": "v2", "owner": "two words"}`, 400, "owner", "without spaces"},
		{"name of a file rule", "/v1/services/api/routes/beta-testers", canaryRoute, 409, "route", "a rule of the configuration has this name (services[0].rules[0])"},
		{"unknown service", "/v1/services/nope/routes/r", canaryRoute, 404, "name", "unknown service"},
		{"not JSON", "/v1/services/api/routes/r", `{"when": `, 400, "", "invalid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			putRefused(t, tc.path, tc.body, tc.code, tc.field, tc.msg, "route", func(s *store.Snapshot) bool { return len(s.Routes) != 0 })
		})
	}
}

// A route belongs to its owner: another owner (or an operator without
// one) cannot replace it, and DELETE with an owner removes only that
// owner's; DELETE without one is the operator's way out.
func TestRuntimeRouteOwners(t *testing.T) {
	e := newEnv(t, envOptions{token: "s3cret"})
	put := func(body string) (int, string) {
		t.Helper()
		w := e.do(req{method: http.MethodPut, path: "/v1/services/api/routes/canary", body: body, auth: bearer})
		msg, _ := decode(t, w)["error"].(string)
		return w.Code, msg
	}
	owned := strings.Replace(canaryRoute, `"version"`, `"owner": "argo-rollouts:ns/a", "version"`, 1)
	if code, msg := put(owned); code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, msg)
	}
	if code, _ := put(owned); code != http.StatusOK {
		t.Fatalf("PUT the same route again: %d", code)
	}
	if code, msg := put(strings.Replace(owned, "ns/a", "ns/b", 1)); code != http.StatusConflict || !strings.Contains(msg, `belong to "argo-rollouts:ns/a", not "argo-rollouts:ns/b"`) {
		t.Fatalf("PUT by another owner: %d %s", code, msg)
	}
	if code, msg := put(canaryRoute); code != http.StatusConflict || !strings.Contains(msg, `belong to "argo-rollouts:ns/a"`) {
		t.Fatalf("PUT without the owner: %d %s", code, msg)
	}
	w := e.do(req{method: http.MethodDelete, path: "/v1/services/api/routes/canary?owner=argo-rollouts:ns/b", contentType: "-", auth: bearer})
	if w.Code != http.StatusConflict || len(e.store.Load().Routes["api"]) != 1 {
		t.Fatalf("DELETE by another owner: %d %s", w.Code, w.Body)
	}
	// Without a token nothing changes, and the attempt is audited.
	e.auditLines()
	w = e.do(req{method: http.MethodDelete, path: "/v1/services/api/routes/canary", contentType: "-"})
	if w.Code != http.StatusUnauthorized || len(e.store.Load().Routes["api"]) != 1 {
		t.Fatalf("DELETE without the token: %d", w.Code)
	}
	if lines := e.auditLines(); len(lines) != 1 || lines[0]["result"] != "unauthorized" {
		t.Fatalf("audit of the refused DELETE: %v", lines)
	}
	w = e.do(req{method: http.MethodDelete, path: "/v1/services/api/routes/canary", contentType: "-", auth: bearer})
	if w.Code != http.StatusOK || len(e.store.Load().Routes) != 0 {
		t.Fatalf("operator's DELETE: %d %s", w.Code, w.Body)
	}
	lines := e.auditLines()
	if len(lines) != 1 || lines[0]["endpoint"] != "DELETE /v1/services/{name}/routes/{route}" || lines[0]["service"] != "api" ||
		!strings.Contains(lines[0]["old"].(string), `route canary: header x-canary exact "1" -> v2 (owner argo-rollouts:ns/a)`) ||
		lines[0]["new"] != "route canary: none" || lines[0]["result"] != "success" {
		t.Fatalf("audit of the DELETE: %v", lines)
	}
}

// Weights set with an owner belong to it: canary and weights calls
// without it answer 409 naming it, another owner too; DELETE override
// releases them.
func TestOwnedWeights(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.do(req{method: http.MethodPut, path: "/v1/services/api/canary", body: `{"percentage": 30, "owner": "argo-rollouts:default/api"}`})
	if w.Code != http.StatusOK || e.canary("api") != "30" {
		t.Fatalf("owned canary: %d %s", w.Code, w.Body)
	}
	view := decode(t, e.do(req{method: http.MethodGet, path: "/v1/services/api"}))
	if view["weights_owner"] != "argo-rollouts:default/api" || view["override"] != true {
		t.Fatalf("view: %v", view)
	}
	gen := e.store.Load().Generation
	w = e.do(req{method: http.MethodPut, path: "/v1/services/api/canary", body: `{"percentage": 30, "owner": "argo-rollouts:default/api"}`})
	if w.Code != http.StatusOK || e.store.Load().Generation != gen {
		t.Fatalf("the same owned canary again: %d, generation %d -> %d (want no new snapshot)", w.Code, gen, e.store.Load().Generation)
	}
	refused := []req{
		{method: http.MethodPut, path: "/v1/services/api/canary", body: `{"percentage": 50}`},
		{method: http.MethodPut, path: "/v1/services/api/weights", body: `{"v1": 50, "v2": 50}`},
		{method: http.MethodPut, path: "/v1/services/api/canary", body: `{"percentage": 50, "owner": "someone-else"}`},
	}
	for _, r := range refused {
		w := e.do(r)
		msg, _ := decode(t, w)["error"].(string)
		if w.Code != http.StatusConflict || !strings.Contains(msg, "argo-rollouts:default/api") || e.canary("api") != "30" {
			t.Fatalf("%s %s: %d %s, want 409 naming the owner", r.path, r.body, w.Code, msg)
		}
	}
	w = e.do(req{method: http.MethodPut, path: "/v1/services/api/canary", body: `{"percentage": 30, "owner": "bad owner"}`})
	if got := decode(t, w); w.Code != http.StatusBadRequest || got["field"] != "owner" {
		t.Fatalf("bad owner: %d %v", w.Code, got)
	}
	w = e.do(req{method: http.MethodDelete, path: "/v1/services/api/override", contentType: "-"})
	if w.Code != http.StatusOK || e.store.Load().Owners != nil {
		t.Fatalf("DELETE override: %d, owners %v", w.Code, e.store.Load().Owners)
	}
	w = e.do(req{method: http.MethodPut, path: "/v1/services/api/canary", body: `{"percentage": 50}`})
	if w.Code != http.StatusOK {
		t.Fatalf("canary after the release: %d %s", w.Code, w.Body)
	}
	// An operator's override is taken over by the controller.
	w = e.do(req{method: http.MethodPut, path: "/v1/services/api/canary", body: `{"percentage": 10, "owner": "argo-rollouts:default/api"}`})
	if w.Code != http.StatusOK || e.canary("api") != "10" {
		t.Fatalf("owned canary over an operator's override: %d %s", w.Code, w.Body)
	}
}

// The splitter's rollout and a controller never fight: a rollout does not
// start on owned weights (409 naming the owner), and a controller does not
// take the weights of a progressing or paused rollout.
func TestOwnedWeightsAndRollouts(t *testing.T) {
	e := newRolloutEnv(t)
	do := func(method, path, body string) (int, string) { return e.call(t, method, path, body) }
	owned := `{"percentage": 20, "owner": "argo-rollouts:shop/api"}`
	if code, msg := do(http.MethodPut, "/v1/services/api/canary", owned); code != http.StatusOK {
		t.Fatalf("owned canary: %d %s", code, msg)
	}
	code, msg := do(http.MethodPost, "/v1/services/api/rollout", `{"action": "start"}`)
	if code != http.StatusConflict || !strings.Contains(msg, `"argo-rollouts:shop/api"`) || !strings.Contains(msg, "DELETE /v1/services/api/override") {
		t.Fatalf("start on owned weights: %d %s", code, msg)
	}
	if code, msg := do(http.MethodDelete, "/v1/services/api/override", ""); code != http.StatusOK {
		t.Fatalf("release: %d %s", code, msg)
	}
	if code, msg := do(http.MethodPost, "/v1/services/api/rollout", `{"action": "start"}`); code != http.StatusOK {
		t.Fatalf("start after the release: %d %s", code, msg)
	}
	for _, action := range []string{"", "pause"} {
		if action != "" {
			if code, msg := do(http.MethodPost, "/v1/services/api/rollout", `{"action": "`+action+`"}`); code != http.StatusOK {
				t.Fatalf("%s: %d %s", action, code, msg)
			}
		}
		code, msg := do(http.MethodPut, "/v1/services/api/canary", owned)
		if code != http.StatusConflict || !strings.Contains(msg, "splitter rollout drives") || e.store.Load().Owners != nil {
			t.Fatalf("owned canary on a driven service (after %q): %d %s", action, code, msg)
		}
	}
	if code, msg := do(http.MethodPost, "/v1/services/api/rollout", `{"action": "abort"}`); code != http.StatusOK {
		t.Fatalf("abort: %d %s", code, msg)
	}
	if code, msg := do(http.MethodPut, "/v1/services/api/canary", owned); code != http.StatusOK || e.canary("api") != "20" {
		t.Fatalf("owned canary after the abort: %d %s", code, msg)
	}
}

// putRefused checks that PUT path body is refused with code, field and a
// message containing msg, and changes neither the state nor what changed
// says of the snapshot (for a runtime route or mirror route: what).
func putRefused(t *testing.T, path, body string, code int, field, msg, what string, changed func(*store.Snapshot) bool) {
	t.Helper()
	e := newEnv(t, envOptions{})
	before := e.state()
	w := e.do(req{method: http.MethodPut, path: path, body: body})
	got := decode(t, w)
	gotMsg, _ := got["error"].(string)
	gotField, _ := got["field"].(string)
	if w.Code != code || gotField != field || !strings.Contains(gotMsg, msg) {
		t.Fatalf("got %d field %q %q, want %d field %q containing %q", w.Code, gotField, gotMsg, code, field, msg)
	}
	if e.state() != before || changed(e.store.Load()) {
		t.Fatal("a refused " + what + " changed the state")
	}
}

// call makes an authorized request (with a body: JSON, without: none) and
// returns the status code and the error message.
func (e *env) call(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	r := req{method: method, path: path, body: body, auth: bearer}
	if body == "" {
		r.contentType = "-"
	}
	w := e.do(r)
	msg, _ := decode(t, w)["error"].(string)
	return w.Code, msg
}
