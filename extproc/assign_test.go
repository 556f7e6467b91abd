package extproc

import (
	"regexp"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/split"
)

const assignConfig = `services:
  - name: api
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id, assign: {cookie: sid, max_age: 1h, secure: true}}
    mirror: {version: v2, percent: 100}
`

func loadTable(t testing.TB, y string) *split.Table {
	t.Helper()
	tb, err := split.Load([]byte(y), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func respHeaders(kv ...string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: raw(kv...)}}}
}

var cookieRE = regexp.MustCompile(`^sid=([A-Za-z0-9_-]{22}); Path=/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure$`)

// headerOf returns the value a request_headers answer sets for name.
func headerOf(r *extprocv3.ProcessingResponse, name string) (string, bool) {
	for _, h := range r.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == name {
			return string(h.GetHeader().GetRawValue()), true
		}
	}
	return "", false
}

// TestAssignedStreamSetsCookie: a request without a key is decided by a
// fresh one, asks Envoy for its response headers (mode_override), and the
// answer to those adds the key's cookie (appended, beside the backend's).
func TestAssignedStreamSetsCookie(t *testing.T) {
	tb := loadTable(t, assignConfig)
	rec := newRecorder()
	s := newTestServer(fixedSource{tb}, rec)
	st := newFakeStream(t.Context(),
		step{req: reqHeaders(raw(envoyHeaders()...))},
		step{req: respHeaders(":status", "200", "set-cookie", "backend=1")})
	if err := s.Process(st); err != nil {
		t.Fatal(err)
	}
	if len(st.sent) != 2 {
		t.Fatalf("%d answers, want 2", len(st.sent))
	}
	first := st.sent[0]
	wantMode := &extprocfilter.ProcessingMode{ResponseHeaderMode: extprocfilter.ProcessingMode_SEND}
	if !proto.Equal(first.GetModeOverride(), wantMode) {
		t.Errorf("mode_override %v, want %v", first.GetModeOverride(), wantMode)
	}
	if r, _ := headerOf(first, reasonHdr); r != "sticky_assigned" {
		t.Errorf("reason %q, want sticky_assigned", r)
	}
	set := st.sent[1].GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
	if len(set) != 1 {
		t.Fatalf("response answer %v: want one set-cookie", st.sent[1])
	}
	// append: true (ext_proc ignores append_action): an entry beside the
	// backend's Set-Cookie, never in its place. The field is deprecated in
	// the API but the one ext_proc reads, so it is read by name here.
	opt := set[0].ProtoReflect()
	app, _ := opt.Get(opt.Descriptor().Fields().ByName("append")).Message().Interface().(*wrapperspb.BoolValue)
	if set[0].GetHeader().GetKey() != "set-cookie" || !app.GetValue() || set[0].GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
		t.Fatalf("response answer %v: want the set-cookie appended", set[0])
	}
	m := cookieRE.FindStringSubmatch(string(set[0].GetHeader().GetRawValue()))
	if m == nil {
		t.Fatalf("Set-Cookie %q does not have the configured form", set[0].GetHeader().GetRawValue())
	}
	version, _ := headerOf(first, routeHdr)
	if want := map[bool]string{true: "v2", false: "v1"}[split.Bucket("api", m[1]) < 2000]; version != want {
		t.Errorf("routed to %s, but the key's bucket says %s", version, want)
	}
	_, unexpected, _, _, _ := rec.snapshot()
	if len(unexpected) != 0 {
		t.Errorf("unexpected phases %v: the response headers were asked for", unexpected)
	}

	// The next request carries the cookie: keyed by it, no override, and a
	// response_headers message (a differently configured Envoy) gets the
	// empty answer.
	st2 := newFakeStream(t.Context(),
		step{req: reqHeaders(raw(envoyHeaders("cookie", "a=b; sid="+m[1])...))},
		step{req: respHeaders(":status", "200")})
	if err := s.Process(st2); err != nil {
		t.Fatal(err)
	}
	if st2.sent[0].GetModeOverride() != nil {
		t.Errorf("keyed request asked for response headers: %v", st2.sent[0].GetModeOverride())
	}
	if v, _ := headerOf(st2.sent[0], routeHdr); v != version {
		t.Errorf("with its cookie: %s, first %s", v, version)
	}
	if r, _ := headerOf(st2.sent[0], reasonHdr); r != "sticky_routing" {
		t.Errorf("with its cookie: reason %q", r)
	}
	if len(st2.sent[1].GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()) != 0 {
		t.Errorf("keyed request set a cookie: %v", st2.sent[1])
	}
	_, unexpected, _, _, _ = rec.snapshot()
	if unexpected[adapter.PhaseResponseHeaders] != 1 {
		t.Errorf("unexpected %v, want one response_headers", unexpected)
	}
}

// TestAssignedKeysDiffer: the request_headers answer is shared per outcome,
// the cookie is each request's own.
func TestAssignedKeysDiffer(t *testing.T) {
	s := newTestServer(fixedSource{loadTable(t, assignConfig)}, nil)
	seen := map[string]bool{}
	for range 50 {
		st := newFakeStream(t.Context(), step{req: reqHeaders(raw(envoyHeaders()...))}, step{req: respHeaders(":status", "200")})
		if err := s.Process(st); err != nil {
			t.Fatal(err)
		}
		c := string(st.sent[1].GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()[0].GetHeader().GetRawValue())
		if seen[c] {
			t.Fatalf("cookie %q given twice", c)
		}
		seen[c] = true
	}
}

func TestMirroredRequestSetsMirrorHeader(t *testing.T) {
	s := newTestServer(fixedSource{loadTable(t, strings.Replace(assignConfig, "{v1: 80, v2: 20}", "{v1: 100, v2: 0}", 1))}, nil)
	st := newFakeStream(t.Context(), step{req: reqHeaders(raw(envoyHeaders("x-user-id", "u1", mirrorHdr, "v1")...))})
	if err := s.Process(st); err != nil {
		t.Fatal(err)
	}
	want := wantSet(hv{routeHdr, "v1"}, hv{reasonHdr, "sticky_routing"}, hv{mirrorHdr, "v2"})
	want.GetRequestHeaders().GetResponse().GetHeaderMutation().RemoveHeaders = nil
	if d := diffResponses([]*extprocv3.ProcessingResponse{want}, st.sent); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
