package reliability

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/settings"
)

func TestCheckBindAddress(t *testing.T) {
	tests := []struct {
		addr    string
		token   string
		refused bool
	}{
		{addr: "0.0.0.0:9002", refused: true},
		{addr: "[::]:9002", refused: true},
		{addr: ":9002", refused: true}, // every interface, like 0.0.0.0
		{addr: "192.168.1.20:9002", refused: true},
		{addr: "10.0.0.7:9002", refused: true},
		{addr: "admin.example.com:9002", refused: true},
		{addr: "127.0.0.1:9002"},
		{addr: "127.0.0.2:9002"},
		{addr: "[::1]:9002"},
		{addr: "localhost:9002"},
		{addr: "0.0.0.0:9002", token: "t"},
		{addr: "[::]:9002", token: "t"},
		{addr: "192.168.1.20:9002", token: "t"},
		{addr: "admin.example.com:9002", token: "t"},
	}
	for _, tc := range tests {
		name := tc.addr
		if tc.token != "" {
			name += " with token"
		}
		t.Run(name, func(t *testing.T) {
			err := admin.CheckBindAddress(tc.addr, tc.token)
			if (err != nil) != tc.refused {
				t.Fatalf("CheckBindAddress(%q, %q) = %v, want refused=%v", tc.addr, tc.token, err, tc.refused)
			}
			if err != nil && !strings.Contains(err.Error(), "admin_addr") {
				t.Errorf("error %q does not name admin_addr", err)
			}
		})
	}
}

// TestTokenFileRotation: the token is read from a file on every request,
// so replacing the file rotates it without a restart; an emptied file
// keeps the last good token rather than opening the API.
func TestTokenFileRotation(t *testing.T) {
	tokenPath := filepath.Join(t.TempDir(), "token")
	writeToken := func(tok string) {
		t.Helper()
		if err := writeAtomic(tokenPath, []byte(tok+"\n")); err != nil {
			t.Fatal(err)
		}
	}
	writeToken("first-token")
	st := startStack(t, baseConfig(t), func(s *settings.Settings) { s.AdminTokenFile = tokenPath })
	put := func(tok string) int {
		t.Helper()
		return st.do(t, request{
			method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 30}`),
			header: map[string]string{"Authorization": "Bearer " + tok},
		}).code
	}
	steps := []struct {
		name   string
		rotate string // new file content; "" leaves it
		empty  bool   // empty the file instead
		tok    string
		code   int
	}{
		{name: "first token accepted", tok: "first-token", code: 200},
		{name: "unknown token refused", tok: "second-token", code: 401},
		{name: "after rotation the new token is accepted", rotate: "second-token", tok: "second-token", code: 200},
		{name: "after rotation the old token is refused", tok: "first-token", code: 401},
		{name: "an emptied file keeps the last token", empty: true, tok: "second-token", code: 200},
		{name: "an emptied file does not open the API", tok: "", code: 401},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.rotate != "" {
				writeToken(s.rotate)
			}
			if s.empty {
				if err := os.WriteFile(tokenPath, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := put(s.tok); got != s.code {
				t.Errorf("PUT with %q = %d, want %d", s.tok, got, s.code)
			}
		})
	}
}

// TestAuditEveryMutation: accepted and refused mutations each write
// exactly one audit line with their result; reads write none.
func TestAuditEveryMutation(t *testing.T) {
	st := startStack(t, baseConfig(t), func(s *settings.Settings) { s.AdminToken = testToken })
	tests := []struct {
		name   string
		req    request
		code   int
		result string // "" for a read: no audit line
	}{
		{name: "canary accepted", req: canary(`{"percentage": 40}`), code: 200, result: "success"},
		{name: "weights accepted", req: request{method: http.MethodPut, path: "/v1/services/web/weights", body: []byte(`{"v1": 40, "v2": 40, "v3": 20}`)}, code: 200, result: "success"},
		{name: "override cleared", req: request{method: http.MethodDelete, path: "/v1/services/web/override"}, code: 200, result: "success"},
		{name: "reload accepted", req: request{method: http.MethodPost, path: "/v1/reload", contentType: "application/json"}, code: 200, result: "success"},
		{name: "canary refused", req: canary(`{"percentage": 140}`), code: 400, result: "rejected"},
		{name: "canary unauthorized", req: request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 1}`), noAuth: true}, code: 401, result: "unauthorized"},
		{name: "reload refused", req: request{method: http.MethodPost, path: "/v1/reload", body: []byte(`{"x": 1}`)}, code: 400, result: "rejected"},
		{name: "read", req: request{method: http.MethodGet, path: "/v1/services/api"}, code: 200},
		{name: "explain", req: request{method: http.MethodPost, path: "/v1/explain", body: []byte(`{"authority": "api.example.com"}`)}, code: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := len(st.auditLines())
			r := st.do(t, tc.req)
			if r.code != tc.code {
				t.Fatalf("%s %s = %d %s, want %d", tc.req.method, tc.req.path, r.code, r.body, tc.code)
			}
			got := st.auditLines()[n:]
			switch {
			case tc.result == "" && len(got) != 0:
				t.Errorf("a read wrote audit lines: %v", got)
			case tc.result != "" && len(got) != 1:
				t.Errorf("%d audit lines, want 1: %v", len(got), got)
			case tc.result != "" && (got[0]["result"] != tc.result || got[0]["endpoint"] == nil || got[0]["remote"] == nil || got[0]["actor"] == nil):
				t.Errorf("audit line %v, want result %q with endpoint, remote and actor", got[0], tc.result)
			}
		})
	}
}

// TestMutationNeedsLoopbackHost: without a token, a mutation addressed to a
// non-loopback Host (DNS rebinding from a browser) is refused and audited
// as a refusal at the door (result forbidden).
func TestMutationNeedsLoopbackHost(t *testing.T) {
	st := startStack(t, baseConfig(t), nil)
	before := st.serving(t)
	for _, host := range []string{"evil.example.com", "evil.example.com:9002", "192.168.1.20"} {
		t.Run(host, func(t *testing.T) {
			n := len(st.auditLines())
			r := st.do(t, request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 90}`),
				header: map[string]string{"Host": host}})
			if r.code != http.StatusForbidden || !strings.Contains(r.err.Error, "loopback") {
				t.Errorf("PUT with Host %s = %d %s, want 403 naming loopback", host, r.code, r.body)
			}
			if got := st.auditLines()[n:]; len(got) != 1 || got[0]["result"] != "forbidden" {
				t.Errorf("audit lines %v, want one forbidden", got)
			}
			st.assertServing(t, before)
		})
	}
}

// TestReadsNeedLoopbackHost: an admin port bound to loopback answers only
// requests addressed to a loopback name, reads and the console included,
// with or without a token. A page whose name was rebound to 127.0.0.1
// (DNS rebinding) is same-origin to the browser: Sec-Fetch-Site does not
// stop it, only its Host gives it away.
func TestReadsNeedLoopbackHost(t *testing.T) {
	st := startStack(t, baseConfig(t), func(s *settings.Settings) { s.AdminToken = testToken })
	before := st.serving(t)
	_, port, _ := strings.Cut(st.addrs.Admin, ":")
	rebound := map[string]string{"Host": "evil.example.com:" + port, "Sec-Fetch-Site": "same-origin"}
	for _, path := range []string{"/v1/services", "/v1/services/api", "/v1/console/state", "/ui/", "/metrics", "/healthz"} {
		t.Run(path, func(t *testing.T) {
			r := st.do(t, request{method: http.MethodGet, path: path, header: rebound})
			if r.code != http.StatusForbidden || !strings.Contains(r.err.Error, "loopback") {
				t.Errorf("GET %s with a rebound Host = %d %.200s, want 403 naming loopback", path, r.code, r.body)
			}
			for _, host := range []string{st.addrs.Admin, "localhost:" + port, "[::1]:" + port} {
				if r := st.do(t, request{method: http.MethodGet, path: path, header: map[string]string{"Host": host}}); r.code != http.StatusOK {
					t.Errorf("GET %s with Host %s = %d, want 200", path, host, r.code)
				}
			}
		})
	}
	// Even with the token, a change addressed to another name is refused
	// and audited as a refusal.
	n := len(st.auditLines())
	r := st.do(t, request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 90}`), header: rebound})
	if r.code != http.StatusForbidden || !strings.Contains(r.err.Error, "loopback") {
		t.Errorf("PUT with a rebound Host and the token = %d %s, want 403", r.code, r.body)
	}
	if got := st.auditLines()[n:]; len(got) != 1 || got[0]["result"] != "forbidden" {
		t.Errorf("audit lines %v, want one forbidden", got)
	}
	st.assertServing(t, before)
}

// TestMetricLabelsClosed sends requests with random authorities, header
// values and paths (ext_proc and admin): no request data reaches a label,
// and the number of series stops at what the configuration allows.
func TestMetricLabelsClosed(t *testing.T) {
	st := startStack(t, baseConfig(t), nil)
	rng := rand.New(rand.NewPCG(1, 2))
	word := func() string { return fmt.Sprintf("zq%08x", rng.Uint32()) }
	round := func() {
		t.Helper()
		for i := range 1000 {
			authority := []string{word() + ".example.com", word(), "api.example.com:" + fmt.Sprint(1+rng.IntN(65535)), "web.example.com"}[i%4]
			st.decide(t, map[string]string{
				":authority": authority, ":path": "/" + word() + "?q=" + word(), ":method": []string{"GET", word()}[i%2],
				"x-user-id": word(), "x-beta": word(), "cookie": word() + "=" + word(), "x-route-version": word(),
			})
			if i%10 == 0 {
				st.do(t, request{method: http.MethodGet, path: "/v1/services/" + word()})
				st.do(t, request{method: http.MethodGet, path: "/" + word()})
			}
		}
	}
	splitterSeries := func() map[string]float64 {
		out := map[string]float64{}
		for k, v := range st.series(t) {
			if strings.HasPrefix(k, "splitter_") {
				out[k] = v
			}
		}
		return out
	}

	splitterSeries() // the first scrape adds the /metrics request series
	round()
	first := splitterSeries()
	round()
	second := splitterSeries()
	if len(second) != len(first) {
		var added []string
		for k := range second {
			if _, ok := first[k]; !ok {
				added = append(added, k)
			}
		}
		t.Errorf("series grew from %d to %d with more random traffic: %v", len(first), len(second), added)
	}
	decisions := 0
	for k := range second {
		if strings.Contains(k, "zq") {
			t.Errorf("request data in a label: %s", k)
		}
		if strings.HasPrefix(k, "splitter_decisions_total{") {
			decisions++
		}
	}
	// ext_proc only here: per service, versions x (header_match,
	// sticky_routing, weighted_routing), plus the unmatched series.
	if bound := 2*3 + 3*3 + 1; decisions > bound {
		t.Errorf("%d decision series, more than the %d the configuration allows", decisions, bound)
	}
	t.Logf("%d splitter_ series after 2,000 random requests, %d of them decisions", len(second), decisions)

	t.Run("config_info has one series, moved only by a good reload", func(t *testing.T) {
		info := func() []string {
			var out []string
			for k := range splitterSeries() {
				if strings.HasPrefix(k, "splitter_config_info{") {
					out = append(out, k)
				}
			}
			return out
		}
		before := info()
		st.writeConfig(t, []byte("services: []\n"))
		if r := st.reload(t); r.code != http.StatusUnprocessableEntity {
			t.Fatalf("bad reload = %d", r.code)
		}
		if got := info(); len(got) != 1 || got[0] != before[0] {
			t.Errorf("config_info after a refused reload = %v, want %v", got, before)
		}
		good := strings.Replace(string(baseConfig(t)), "{v1: 80, v2: 20}", "{v1: 70, v2: 30}", 1)
		st.writeConfig(t, []byte(good))
		if r := st.reload(t); r.code != http.StatusOK {
			t.Fatalf("good reload = %d %s", r.code, r.body)
		}
		got := info()
		if len(got) != 1 || got[0] == before[0] || !strings.Contains(got[0], hexSHA([]byte(good))) {
			t.Errorf("config_info after a good reload = %v, want one series with the new hash", got)
		}
	})
}
