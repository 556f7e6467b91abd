package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
)

// TestMirrorRoutesCopyMatching: a mirror route set through the admin API
// (GET requests under /api/ with x-canary: true, 50 %) copies exactly half
// of the unkeyed requests it matches to v2, counted at v2's backend, in
// all three modes (the module reads :method and :path only because the
// table asks for them); the requests it does not match (another path, a
// POST) are copied by the file's mirror (10 %) instead, and after DELETE
// the file's mirror copies the matching ones too.
func TestMirrorRoutesCopyMatching(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) {
			b := newBed(t, mode, mirrorConfig)
			v2 := b.backends[1]
			send := func(n int, method, path string) {
				t.Helper()
				for i := range n {
					req, err := http.NewRequestWithContext(t.Context(), method, b.client.BaseURL+path, nil)
					if err != nil {
						t.Fatal(err)
					}
					req.Header.Set("X-Canary", "true")
					resp, err := b.client.HTTP.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					var rep struct {
						Version string `json:"version"`
					}
					err = json.NewDecoder(resp.Body).Decode(&rep)
					resp.Body.Close()
					if err != nil || resp.StatusCode != http.StatusOK || rep.Version != "v1" {
						t.Fatalf("%s %s #%d: %d from %q (%v), want 200 from v1", method, path, i, resp.StatusCode, rep.Version, err)
					}
				}
			}
			seen := int64(0)
			copies := func(what string, want int64) {
				t.Helper()
				waitFor(t, 30*time.Second, fmt.Sprintf("%d copies at v2 (%s)", want, what), func() bool {
					all, _ := v2.Requests()
					return all-seen >= want
				})
				time.Sleep(500 * time.Millisecond)
				all, shadow := v2.Requests()
				if all-seen != want || shadow != all {
					t.Fatalf("%s: v2 received %d requests (%d of all %d are copies), want exactly %d copies", what, all-seen, shadow, all, want)
				}
				seen = all
			}

			route := map[string]any{
				"when": []map[string]string{
					{"request": "method", "exact": "GET"},
					{"request": "path", "prefix": "/api/"},
					{"header": "x-canary", "exact": "true"},
				},
				"version": "v2", "percent": 50, "owner": "e2e",
			}
			if err := b.admin.Admin(t.Context(), http.MethodPut, "/v1/services/api/mirror-routes/testers", route, nil); err != nil {
				t.Fatal(err)
			}
			send(1000, http.MethodGet, "/api/orders?page=2")
			copies("matching GETs", 500)
			send(200, http.MethodGet, "/other")
			copies("another path: the file's 10 %", 20)
			send(200, http.MethodPost, "/api/orders")
			copies("POSTs: the file's 10 %", 20)

			if err := b.admin.Admin(t.Context(), http.MethodDelete, "/v1/services/api/mirror-routes/testers?owner=e2e", nil, nil); err != nil {
				t.Fatal(err)
			}
			send(1000, http.MethodGet, "/api/orders")
			copies("matching GETs after DELETE: the file's 10 %", 100)
		})
	}
}
