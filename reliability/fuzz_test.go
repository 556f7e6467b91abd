package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/store"
)

// FuzzAdminMutation sends arbitrary bodies to the admin API's mutation
// routes: never a 5xx, every error is JSON with a message, and the state
// moves only when the answer is 200.
func FuzzAdminMutation(f *testing.F) {
	for _, tc := range adminCases() {
		if tc.req.body != nil && len(tc.req.body) < 4096 {
			f.Add(tc.req.method, tc.req.path, tc.req.body)
		}
	}
	f.Add(http.MethodPut, "/v1/services/api/canary", []byte(`{"percentage": 12.5}`))
	f.Add(http.MethodPut, "/v1/services/web/weights", []byte(`{"v1": 33.33, "v2": 33.33, "v3": 33.34}`))
	f.Add(http.MethodDelete, "/v1/services/api/override", []byte(nil))
	f.Add(http.MethodPut, "/v1/services/api/mirror", []byte(`{"version": "v2", "percent": 12.5}`))
	f.Add(http.MethodPut, "/v1/services/api/mirror", []byte(`{"version": "v9", "percent": 1e2}`))
	f.Add(http.MethodDelete, "/v1/services/api/mirror", []byte(nil))
	f.Add(http.MethodPut, "/v1/services/api/canary", []byte(`{"percentage": 10, "owner": "argo-rollouts:shop/api"}`))
	f.Add(http.MethodPut, "/v1/services/api/routes/canary-testers", []byte(`{"when": [{"header": "x-canary", "regex": "t.*"}], "version": "v2", "owner": "o"}`))
	f.Add(http.MethodDelete, "/v1/services/api/routes/canary-testers?owner=o", []byte(nil))
	f.Add(http.MethodPut, "/v1/services/api/routes/writes", []byte(`{"when": [{"request": "method", "regex": "P.*"}, {"request": "path", "prefix": "/a"}], "version": "v2"}`))
	f.Add(http.MethodPut, "/v1/services/api/mirror-routes/mirror", []byte(`{"when": [{"header": "x-canary", "exact": "true"}, {"request": "path", "prefix": "/"}], "version": "v2", "percent": 50, "owner": "argo-rollouts:shop/api"}`))
	f.Add(http.MethodPut, "/v1/services/api/mirror-routes/m", []byte(`{"when": [{"request": "host", "present": true}], "version": "v9", "percent": 100.001}`))
	f.Add(http.MethodDelete, "/v1/services/api/mirror-routes/mirror?owner=argo-rollouts:shop/api", []byte(nil))
	f.Add(http.MethodPost, "/v1/assign", []byte(`{"user_id": "user-123"}`))
	f.Add(http.MethodPost, "/v1/explain", []byte(`{"authority": "web.example.com", "headers": {"x-beta": ["true", "false"]}, "cookies": {"s": "1"}}`))

	cfg, err := config.Parse(baseConfig(f))
	if err != nil {
		f.Fatal(err)
	}
	st, err := store.New(store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := st.ApplyFile(cfg, "base", "base.yaml"); err != nil {
		f.Fatal(err)
	}
	// Reload re-reads nothing here: the fuzzer is after the request
	// handling, and a reload that changes nothing must not move the state.
	h := admin.New(admin.Options{Store: st, Reload: func(context.Context) (string, error) { return "unchanged", nil }})

	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		req, err := http.NewRequest(method, "http://127.0.0.1"+path, bytes.NewReader(body))
		if err != nil || req.URL.Host != "127.0.0.1" {
			return // not a request a client could send here
		}
		req.Header.Set("Content-Type", "application/json")
		before := st.Load()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		after := st.Load()
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q = %d %s", method, path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s %s = %d with a body that is not a JSON error: %q", method, path, rec.Code, rec.Body)
			}
		}
		if rec.Code != http.StatusOK && after != before {
			t.Fatalf("%s %s %q = %d but the state moved (generation %d -> %d)", method, path, body, rec.Code, before.Generation, after.Generation)
		}
	})
}
