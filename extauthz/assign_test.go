package extauthz

import (
	"regexp"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/split"
)

func assignTable(t *testing.T) *split.Table {
	t.Helper()
	tb, err := split.Load([]byte(`services:
  - name: api
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id, assign: {cookie: sid, max_age: 2h}}
    mirror: {version: v2, percent: 100}
`), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func headerValue(r *authv3.CheckResponse, name string) string {
	for _, h := range r.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// TestCheckAssignsKey: a request without a key gets one in
// response_headers_to_add, appended (the backend's own Set-Cookie stays);
// the next request, carrying it, is keyed by it and sets no cookie.
func TestCheckAssignsKey(t *testing.T) {
	s := New(source{assignTable(t)}, Options{Headers: adapter.Headers{Route: routeHdr, Reason: reasonHdr}})
	got, err := s.Check(t.Context(), check(&authv3.AttributeContext_HttpRequest{Host: "api", Headers: map[string]string{"x-mirror-version": "v2"}}))
	if err != nil {
		t.Fatal(err)
	}
	add := got.GetOkResponse().GetResponseHeadersToAdd()
	if len(add) != 1 || add[0].GetHeader().GetKey() != "set-cookie" || add[0].GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
		t.Fatalf("response_headers_to_add = %v", add)
	}
	m := regexp.MustCompile(`^sid=([A-Za-z0-9_-]{22}); Path=/; Max-Age=7200; HttpOnly; SameSite=Lax$`).FindStringSubmatch(add[0].GetHeader().GetValue())
	if m == nil {
		t.Fatalf("Set-Cookie %q", add[0].GetHeader().GetValue())
	}
	version := headerValue(got, routeHdr)
	if headerValue(got, reasonHdr) != "sticky_assigned" || version == "" {
		t.Fatalf("answer %v", got)
	}
	// Mirrored (100 %) unless v2 serves it; a client's mirror header is
	// never kept.
	if want := map[string]string{"v1": "v2", "v2": ""}[version]; headerValue(got, "x-mirror-version") != want {
		t.Errorf("%s: mirror header %q, want %q", version, headerValue(got, "x-mirror-version"), want)
	}

	again, err := s.Check(t.Context(), check(&authv3.AttributeContext_HttpRequest{Host: "api",
		Headers: map[string]string{"cookie": "sid=" + m[1]}}))
	if err != nil {
		t.Fatal(err)
	}
	if headerValue(again, routeHdr) != version || headerValue(again, reasonHdr) != "sticky_routing" ||
		len(again.GetOkResponse().GetResponseHeadersToAdd()) != 0 {
		t.Errorf("with the cookie: %v", again)
	}
}

func TestCheckMirrorHeaderRemovedWhenNotMirrored(t *testing.T) {
	s := New(source{compile(t, split.Default())}, Options{Headers: adapter.Headers{Route: routeHdr, Reason: reasonHdr, Mirror: "x-shadow"}})
	got, err := s.Check(t.Context(), check(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{"x-beta": "true", "x-shadow": "v2"}}))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"x-shadow"}
	if d := cmp.Diff(want, got.GetOkResponse().GetHeadersToRemove(), protocmp.Transform()); d != "" {
		t.Errorf("headers_to_remove (-want +got):\n%s", d)
	}
}
