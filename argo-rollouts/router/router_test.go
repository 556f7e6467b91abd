package router

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Removing a route that is not the Rollout's (409: another owner's) or
// cannot exist (400: a name splitter refuses) is not an error; anything
// else is, with splitter's message.
func TestRemoveRouteAnswers(t *testing.T) {
	tests := []struct {
		status  int
		wantErr string
	}{
		{http.StatusOK, ""},
		{http.StatusConflict, ""},
		{http.StatusBadRequest, ""},
		{http.StatusNotFound, `404 Not Found: unknown service "api"`},
		{http.StatusServiceUnavailable, "503 Service Unavailable"},
	}
	for _, tc := range tests {
		var got *http.Request
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = r
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(tc.status)
			w.Write([]byte(`{"error": "unknown service \"api\""}`))
		}))
		r := New(Options{})
		err := r.removeRoute(t.Context(), adminClient{base: srv.URL, http: srv.Client()}, "api", "canary testers", "argo-rollouts:shop/api")
		srv.Close()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%d: error %v", tc.status, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%d: error %v, want %q", tc.status, err, tc.wantErr)
		}
		if got == nil || got.Method != http.MethodDelete || got.URL.EscapedPath() != "/v1/services/api/routes/canary%20testers" ||
			got.URL.Query().Get("owner") != "argo-rollouts:shop/api" {
			t.Errorf("%d: request %v", tc.status, got)
		}
	}
}
