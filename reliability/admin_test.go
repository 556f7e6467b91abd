package reliability

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/settings"
)

const testToken = "reliability-token-7f3a"

type adminCase struct {
	name string
	req  request
	code int
	// field is the JSON field the error names ("" when none applies);
	// want are substrings of the message.
	field string
	want  []string
	// audited: the request reached a mutation route, so exactly one audit
	// line must record it.
	audited bool
}

func canary(body string) request {
	return request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(body)}
}

func adminCases() []adminCase {
	return []adminCase{
		{name: "bad JSON", req: canary(`{"percentage": `), code: 400, want: []string{"invalid JSON"}, audited: true},
		{name: "trailing garbage", req: canary(`{"percentage": 50} {"percentage": 90}`), code: 400, want: []string{"unexpected data after the JSON"}, audited: true},
		{name: "unknown field", req: canary(`{"percent": 50}`), code: 400, field: "percent", want: []string{`unknown field "percent"`}, audited: true},
		{name: "empty body", req: canary(``), code: 400, want: []string{"empty body"}, audited: true},
		{
			name: "wrong content type",
			req:  request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 50}`), contentType: "text/plain"},
			code: 415, want: []string{"Content-Type must be application/json"}, audited: true,
		},
		{
			name: "form content type",
			req:  request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`percentage=50`), contentType: "application/x-www-form-urlencoded"},
			code: 415, want: []string{"Content-Type"}, audited: true,
		},
		{
			name: "oversized body",
			req:  canary(`{"percentage": 50, "pad": "` + strings.Repeat("x", admin.MaxBodyBytes) + `"}`),
			code: 413, want: []string{"larger than"}, audited: true,
		},
		{name: "percentage -1", req: canary(`{"percentage": -1}`), code: 400, field: "percentage", want: []string{"-1"}, audited: true},
		{name: "percentage 101", req: canary(`{"percentage": 101}`), code: 400, field: "percentage", want: []string{"101"}, audited: true},
		{name: `percentage "50"`, req: canary(`{"percentage": "50"}`), code: 400, field: "percentage", want: []string{`"50"`}, audited: true},
		{name: "percentage 50.555", req: canary(`{"percentage": 50.555}`), code: 400, field: "percentage", want: []string{"decimals"}, audited: true},
		{name: "percentage null", req: canary(`{"percentage": null}`), code: 400, field: "percentage", want: []string{"required"}, audited: true},
		{name: "percentage missing", req: canary(`{}`), code: 400, field: "percentage", want: []string{"required"}, audited: true},
		{name: "percentage 1e309", req: canary(`{"percentage": 1e309}`), code: 400, field: "percentage", want: []string{"1e309"}, audited: true},
		{name: "percentage 5e1", req: canary(`{"percentage": 5e1}`), code: 400, field: "percentage", want: []string{"5e1"}, audited: true},
		{
			name: "unknown service",
			req:  request{method: http.MethodPut, path: "/v1/services/nope/canary", body: []byte(`{"percentage": 5}`)},
			code: 404, field: "name", want: []string{"nope"}, audited: true,
		},
		{
			name: "canary on a 3-version service",
			req:  request{method: http.MethodPut, path: "/v1/services/web/canary", body: []byte(`{"percentage": 5}`)},
			code: 409, field: "name", want: []string{"exactly two versions"}, audited: true,
		},
		{
			name: "weights with unknown version",
			req:  request{method: http.MethodPut, path: "/v1/services/api/weights", body: []byte(`{"v1": 50, "v9": 50}`)},
			code: 400, field: "weights.v9", want: []string{"unknown version", "weights.v2: missing"}, audited: true,
		},
		{
			name: "weights not summing to 100",
			req:  request{method: http.MethodPut, path: "/v1/services/api/weights", body: []byte(`{"v1": 50, "v2": 40}`)},
			code: 400, field: "weights", want: []string{"90"}, audited: true,
		},
		{
			name: "weights with a negative share",
			req:  request{method: http.MethodPut, path: "/v1/services/api/weights", body: []byte(`{"v1": 110, "v2": -10}`)},
			code: 400, field: "weights.v1", want: []string{"v1", "between 0 and 100"}, audited: true,
		},
		{
			name: "weights with a string share",
			req:  request{method: http.MethodPut, path: "/v1/services/api/weights", body: []byte(`{"v1": "80", "v2": 20}`)},
			code: 400, field: "weights.v1", want: []string{"v1"}, audited: true,
		},
		{
			name: "weights duplicate key",
			req:  request{method: http.MethodPut, path: "/v1/services/api/weights", body: []byte(`{"v1": 80, "v2": 20, "v1": 0}`)},
			code: 400, field: "weights.v1", want: []string{"duplicate version"}, audited: true,
		},
		{
			name: "missing token",
			req:  request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 5}`), noAuth: true},
			code: 401, want: []string{"missing bearer token"}, audited: true,
		},
		{
			name: "wrong token",
			req: request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 5}`),
				header: map[string]string{"Authorization": "Bearer " + testToken + "x"}},
			code: 401, want: []string{"invalid bearer token"}, audited: true,
		},
		{
			name: "Basic scheme",
			req: request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 5}`),
				header: map[string]string{"Authorization": "Basic " + testToken}},
			code: 401, want: []string{"bearer"}, audited: true,
		},
		{
			name: "token in query",
			req: request{method: http.MethodPut, path: "/v1/services/api/canary?token=" + testToken + "&access_token=" + testToken,
				body: []byte(`{"percentage": 5}`), noAuth: true},
			code: 401, want: []string{"bearer"}, audited: true,
		},
		{
			name: "reload with a body that is not an object",
			req:  request{method: http.MethodPost, path: "/v1/reload", body: []byte(`[1]`)},
			code: 400, want: []string{"JSON"}, audited: true,
		},
		{name: "GET on a mutation route", req: request{method: http.MethodGet, path: "/v1/services/api/canary"}, code: 405, want: []string{"not allowed"}},
		{name: "POST on a PUT route", req: request{method: http.MethodPost, path: "/v1/services/api/weights", body: []byte(`{}`)}, code: 405, want: []string{"not allowed"}, audited: true},
		{name: "GET on reload", req: request{method: http.MethodGet, path: "/v1/reload"}, code: 405, want: []string{"not allowed"}},
		{
			name: "explain with a bad header name",
			req:  request{method: http.MethodPost, path: "/v1/explain", body: []byte(`{"headers": {"x bad": "1"}}`)},
			code: 400, field: "headers.x bad", want: []string{"invalid header name"},
		},
		{
			name: "assign without user_id",
			req:  request{method: http.MethodPost, path: "/v1/assign", body: []byte(`{"experiment": "default"}`)},
			code: 400, field: "user_id", want: []string{"user_id is required"},
		},
		{
			name: "assign to an unknown experiment",
			req:  request{method: http.MethodPost, path: "/v1/assign", body: []byte(`{"user_id": "u", "experiment": "nope"}`)},
			code: 404, field: "experiment", want: []string{"nope"},
		},
	}
}

// TestBadAdminRequest sends each bad admin request to a token-protected
// sidecar: the status and the error (field and reason) are right, exactly
// one audit line records each mutation attempt, and nothing served moves.
func TestBadAdminRequest(t *testing.T) {
	st := startStack(t, baseConfig(t), func(s *settings.Settings) { s.AdminToken = testToken })
	before := st.serving(t)

	for _, tc := range adminCases() {
		t.Run(tc.name, func(t *testing.T) {
			audits := st.auditLines()
			r := st.do(t, tc.req)
			if r.code != tc.code {
				t.Fatalf("%s %s = %d %s, want %d", tc.req.method, tc.req.path, r.code, r.body, tc.code)
			}
			if r.err.Field != tc.field {
				t.Errorf("field = %q, want %q (error %q)", r.err.Field, tc.field, r.err.Error)
			}
			if m := missing(r.err.Error, tc.want...); len(m) > 0 {
				t.Errorf("error %q lacks %q", r.err.Error, m)
			}
			if strings.Contains(string(r.body), testToken) {
				t.Errorf("the answer echoes the token: %s", r.body)
			}
			got := st.auditLines()[len(audits):]
			wantN := 0
			if tc.audited {
				wantN = 1
			}
			if len(got) != wantN {
				t.Fatalf("%d audit lines, want %d: %v", len(got), wantN, got)
			}
			if wantN == 1 {
				result := "rejected"
				if r.code == http.StatusUnauthorized {
					result = "unauthorized"
				}
				if got[0]["result"] != result || got[0]["status"] != float64(r.code) {
					t.Errorf("audit line %v, want result %q and status %d", got[0], result, r.code)
				}
			}
			st.assertServing(t, before)
		})
	}
	if strings.Contains(st.logs.String(), testToken) {
		t.Error("the token appears in the log")
	}
}

// auditLines returns the audit records logged so far, in order.
func (st *stack) auditLines() []map[string]any {
	var out []map[string]any
	for line := range strings.Lines(st.logs.String()) {
		if !strings.Contains(line, `"log":"audit"`) {
			continue
		}
		var rec map[string]any
		if err := json.NewDecoder(bytes.NewReader([]byte(line))).Decode(&rec); err == nil {
			out = append(out, rec)
		}
	}
	return out
}
