package serve_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/trafficsplit/splitter/internal/serve"
)

// Regression tests for bugs found on a running sidecar, each through the
// real paths: the admin API, file reloads and ext_proc streams.

func (r *running) send(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+r.addrs.Admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" || method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// explainVersion asks POST /v1/explain which version user gets.
func (r *running) explainVersion(t *testing.T, user string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"authority": "api.example.com", "headers": map[string]string{"x-user-id": user}})
	code, out := r.send(t, http.MethodPost, "/v1/explain", string(body))
	if code != http.StatusOK {
		t.Fatalf("explain: %d %s", code, out)
	}
	var e struct {
		Version string `json:"version"`
		Reason  string `json:"reason"`
	}
	if err := json.Unmarshal(out, &e); err != nil || e.Reason != "sticky_routing" {
		t.Fatalf("explain answer %s (%v)", out, err)
	}
	return e.Version
}

// The same shares in another key order move no sticky user.
func TestRegressionReorderedOverrideMovesNobody(t *testing.T) {
	const cfg = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 70, v2: 20, v3: 10}
    sticky: {header: x-user-id}
`
	r := startServe(t, testSettings(newConfig(t, cfg)))
	users := make([]string, 2000)
	before := make([]string, len(users))
	for i := range users {
		users[i] = fmt.Sprint("user-", i)
		before[i] = r.explainVersion(t, users[i])
	}
	if code, out := r.send(t, http.MethodPut, "/v1/services/api/weights", `{"v3":10,"v2":20,"v1":70}`); code != http.StatusOK {
		t.Fatalf("PUT weights: %d %s", code, out)
	}
	moved := 0
	for i, u := range users {
		if r.explainVersion(t, u) != before[i] {
			moved++
		}
	}
	if moved != 0 {
		t.Fatalf("%d of %d sticky users moved after the same weights were PUT in another order", moved, len(users))
	}
	// The override reads in the file's order.
	code, out := r.get(t, "/v1/services/api")
	if code != http.StatusOK || !strings.Contains(string(out), `"weights":{"v1":70,"v2":20,"v3":10}`) {
		t.Fatalf("GET /v1/services/api: %d %s", code, out)
	}
}

// A reload that leaves an overridden service's weights alone in the file
// keeps its place in the round-robin cycle.
func TestRegressionReloadKeepsOverriddenCycle(t *testing.T) {
	const base = `services:
  - name: api
    hosts: [api.example.com]
    weights: {v1: 80, v2: 20}
  - name: web
    hosts: [web.example.com]
    weights: {a: %d, b: %d}
`
	path := newConfig(t, fmt.Sprintf(base, 50, 50))
	r := startServe(t, testSettings(path))
	if code, out := r.send(t, http.MethodPut, "/v1/services/api/canary", `{"percentage": 50}`); code != http.StatusOK {
		t.Fatalf("PUT canary: %d %s", code, out)
	}
	client := extprocv3.NewExternalProcessorClient(dial(t, r.addrs.GRPC))
	next := func() string {
		t.Helper()
		st, err := client.Process(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(requestHeaders(map[string]string{":authority": "api.example.com", ":path": "/"})); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		st.CloseSend()
		return routeOf(t, resp)
	}
	// 50/50 alternates, starting with the first declared version.
	if got := next(); got != "v1" {
		t.Fatalf("first request: %s, want v1", got)
	}
	writeFile(t, path, fmt.Sprintf(base, 40, 60)) // only web changes
	if code, out := r.send(t, http.MethodPost, "/v1/reload", ""); code != http.StatusOK || !strings.Contains(string(out), `"result":"success"`) {
		t.Fatalf("reload: %d %s", code, out)
	}
	if code, out := r.get(t, "/v1/services/api"); !strings.Contains(string(out), `"override":`) {
		t.Fatalf("the override did not survive the reload: %d %s", code, out)
	}
	if got := next(); got != "v2" {
		t.Fatalf("after the reload: %s, want v2 (the cycle restarted)", got)
	}
}

// An experiment that would write the route or reason header is refused
// whatever the case of its name: at start, at reload, and by validate.
func TestRegressionHeaderClashIgnoresCase(t *testing.T) {
	clash := `services:
  - name: api
    weights: {v1: 80, v2: 20}
experiments:
  - name: default
    key: {header: x-user-id}
    variants: {A: 50, B: 50}
    header: X-Route-Version
`
	err := serve.Run(t.Context(), testSettings(newConfig(t, clash)), nil)
	if err == nil || !strings.Contains(err.Error(), `experiments[0].header: "X-Route-Version" is the route header`) {
		t.Fatalf("start on a clashing experiment: %v", err)
	}

	path := newConfig(t, routing(20))
	r := startServe(t, testSettings(path))
	sha := r.servingSHA(t)
	writeFile(t, path, strings.Replace(clash, "X-Route-Version", "X-Route-Reason", 1))
	code, out := r.send(t, http.MethodPost, "/v1/reload", "")
	if code != http.StatusUnprocessableEntity || !bytes.Contains(out, []byte(`is the reason header`)) {
		t.Fatalf("reload of a clashing experiment: %d %s", code, out)
	}
	if r.servingSHA(t) != sha {
		t.Fatal("the clashing configuration took effect")
	}
}
