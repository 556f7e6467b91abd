package admin_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMirrorEndpoints(t *testing.T) {
	e := newEnv(t, envOptions{token: "s3cret"})
	auth := "Bearer s3cret"

	w := e.do(req{method: "PUT", path: "/v1/services/api/mirror", body: `{"version": "v2", "percent": 12.5}`, auth: auth})
	if w.Code != http.StatusOK {
		t.Fatalf("PUT: %d %s", w.Code, w.Body)
	}
	want := map[string]any{"service": "api", "mirror": map[string]any{"version": "v2", "percent": 12.5}, "mirror_override": true}
	if d := cmp.Diff(want, decode(t, w)); d != "" {
		t.Errorf("PUT answer (-want +got):\n%s", d)
	}
	lines := e.auditLines()
	if len(lines) != 1 || lines[0]["service"] != "api" || lines[0]["old"] != "mirror none" || lines[0]["new"] != "mirror v2 12.5%" {
		t.Errorf("audit %v", lines)
	}
	got := decode(t, e.do(req{method: "GET", path: "/v1/services/api"}))
	if got["mirror_override"] != true || got["file_mirror"] != nil || got["mirror"].(map[string]any)["percent"] != 12.5 {
		t.Errorf("GET after PUT: mirror %v file_mirror %v override %v", got["mirror"], got["file_mirror"], got["mirror_override"])
	}
	// explain shows it.
	ex := decode(t, e.do(req{method: "POST", path: "/v1/explain", body: `{"headers": {"x-user-id": "user-123"}}`}))
	if ex["mirror_percent"] != 12.5 {
		t.Errorf("explain: %v", ex)
	}

	for _, c := range []struct {
		name, body, field string
		status            int
	}{
		{"unknown version", `{"version": "v9", "percent": 10}`, "version", 400},
		{"no version", `{"percent": 10}`, "version", 400},
		{"three decimals", `{"version": "v2", "percent": 1.005}`, "percent", 400},
		{"over 100", `{"version": "v2", "percent": 101}`, "percent", 400},
		{"percent as a string", `{"version": "v2", "percent": "10"}`, "percent", 400},
		{"no percent", `{"version": "v2"}`, "percent", 400},
		{"unknown field", `{"version": "v2", "percent": 1, "share": 2}`, "", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := e.state()
			w := e.do(req{method: "PUT", path: "/v1/services/api/mirror", body: c.body, auth: auth})
			if w.Code != c.status {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			if c.field != "" && decode(t, w)["field"] != c.field {
				t.Errorf("field %v, want %q: %s", decode(t, w)["field"], c.field, w.Body)
			}
			if e.state() != before {
				t.Error("a refused mirror changed the state")
			}
		})
	}
	if w := e.do(req{method: "PUT", path: "/v1/services/nope/mirror", body: `{"version": "v2", "percent": 1}`, auth: auth}); w.Code != http.StatusNotFound {
		t.Errorf("unknown service: %d", w.Code)
	}
	if w := e.do(req{method: "PUT", path: "/v1/services/api/mirror", body: `{"version": "v2", "percent": 1}`}); w.Code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", w.Code)
	}
	e.auditLines()

	w = e.do(req{method: "DELETE", path: "/v1/services/api/mirror", auth: auth})
	if w.Code != http.StatusOK {
		t.Fatalf("DELETE: %d %s", w.Code, w.Body)
	}
	if d := cmp.Diff(map[string]any{"service": "api", "mirror": nil, "mirror_override": false}, decode(t, w)); d != "" {
		t.Errorf("DELETE answer (-want +got):\n%s", d)
	}
	if lines := e.auditLines(); len(lines) != 1 || !strings.HasPrefix(lines[0]["new"].(string), "mirror none") {
		t.Errorf("audit %v", lines)
	}
	if got := decode(t, e.do(req{method: "GET", path: "/v1/services/api"})); got["mirror"] != nil || got["mirror_override"] != nil {
		t.Errorf("GET after DELETE: %v", got)
	}
}
