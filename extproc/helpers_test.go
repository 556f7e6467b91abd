package extproc

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/trafficsplit/splitter/internal/envoypb"
	"github.com/trafficsplit/splitter/internal/fastcodec"
	"github.com/trafficsplit/splitter/split"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	routeHdr  = "x-route-version"
	reasonHdr = "x-route-reason"
	mirrorHdr = "x-mirror-version"
)

// fixedSource serves one table for the whole test.
type fixedSource struct{ t *split.Table }

func (s fixedSource) Table() *split.Table { return s.t }

// panicSource panics the moment a stream asks for the table.
type panicSource struct{}

func (panicSource) Table() *split.Table { panic("injected") }

// recorder counts every event; it is safe for concurrent streams.
type recorder struct {
	mu         sync.Mutex
	decided    []split.Decision
	started    int
	results    map[string]int
	unexpected map[string]int
	panics     int
}

func newRecorder() *recorder {
	return &recorder{results: map[string]int{}, unexpected: map[string]int{}}
}

func (r *recorder) Decided(api string, d *split.Decision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decided = append(r.decided, *d)
}

func (r *recorder) StreamStarted(string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started++
}

func (r *recorder) StreamEnded(_ string, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[result]++
}

func (r *recorder) PhaseUnexpected(_ string, phase string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unexpected[phase]++
}

func (r *recorder) Panic(string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.panics++
}

func (r *recorder) snapshot() (results, unexpected map[string]int, decided, started, panics int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	results, unexpected = map[string]int{}, map[string]int{}
	for k, v := range r.results {
		results[k] = v
	}
	for k, v := range r.unexpected {
		unexpected[k] = v
	}
	return results, unexpected, len(r.decided), r.started, r.panics
}

// step is one scripted Recv: a message or an error.
type step struct {
	req  *extprocv3.ProcessingRequest
	err  error
	wire mem.BufferSlice // req encoded, filled by RecvMsg
}

// fakeStream plays Envoy's side of one stream from a script; after the
// script it reports io.EOF. Methods not listed panic (nil embedded stream).
type fakeStream struct {
	grpc.ServerStream
	codec   *fastcodec.Codec
	ctx     context.Context
	script  []step
	next    int
	sent    []*extprocv3.ProcessingResponse
	sendErr error
	// count only: benchmarks must not grow a slice.
	nsent int
	keep  bool
}

func newFakeStream(ctx context.Context, script ...step) *fakeStream {
	return &fakeStream{codec: fastcodec.New(), ctx: ctx, script: script, keep: true}
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if f.next >= len(f.script) {
		return nil, io.EOF
	}
	s := f.script[f.next]
	f.next++
	return s.req, s.err
}

// RecvMsg is what Process calls: the scripted message goes through the
// sidecar's codec, as on the wire (encoded once per step, so benchmarks
// measure the decoding and not the test's own marshalling).
func (f *fakeStream) RecvMsg(m any) error {
	if f.next >= len(f.script) {
		return io.EOF
	}
	s := &f.script[f.next]
	f.next++
	if s.err != nil {
		return s.err
	}
	if s.wire == nil {
		b, err := proto.Marshal(s.req)
		if err != nil {
			return err
		}
		s.wire = mem.BufferSlice{mem.SliceBuffer(b)}
	}
	return f.codec.Unmarshal(s.wire, m)
}

// SendMsg is what Process calls: the answer is recorded as the
// ProcessingResponse it carries.
func (f *fakeStream) SendMsg(m any) error {
	switch r := m.(type) {
	case *fastcodec.Encoded:
		return f.Send(r.Message.(*extprocv3.ProcessingResponse))
	case *extprocv3.ProcessingResponse:
		return f.Send(r)
	}
	return fmt.Errorf("fakeStream: SendMsg of %T", m)
}

func (f *fakeStream) Send(r *extprocv3.ProcessingResponse) error {
	if f.sendErr != nil {
		return f.sendErr
	}
	f.nsent++
	if f.keep {
		f.sent = append(f.sent, r)
	}
	return nil
}

// raw builds a header list with values in raw_value (Envoy 1.27+).
func raw(kv ...string) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return hm
}

// val builds a header list with values in value (Envoy 1.26 and older).
func val(kv ...string) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], Value: kv[i+1]})
	}
	return hm
}

func reqHeaders(hm *corev3.HeaderMap) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: true}}}
}

// envoyHeaders is what Envoy sends for a GET: pseudo-headers first, then
// the headers the connection manager adds, then the client's.
func envoyHeaders(user ...string) []string {
	return append([]string{
		":authority", "api.example.com", ":path", "/items?id=1", ":method", "GET", ":scheme", "http",
		"user-agent", "curl/8.5.0", "accept", "*/*", "x-forwarded-proto", "http",
		"x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e",
	}, user...)
}

func defaultTable(t testing.TB) *split.Table {
	t.Helper()
	tab, err := split.Compile(split.Default())
	if err != nil {
		t.Fatalf("compile default config: %v", err)
	}
	return tab
}

// reference decides hm directly on tab, the way the adapter should.
func reference(tab *split.Table, hm *corev3.HeaderMap) split.Decision {
	var req split.Request
	var d split.Decision
	envoypb.FromHeaders(&req, hm.GetHeaders())
	tab.Decide(&req, &d)
	return d
}

type hv struct{ name, value string }

// wantSet is the expected answer that sets headers in this order (and
// removes a client's mirror header: the request is not mirrored).
func wantSet(hs ...hv) *extprocv3.ProcessingResponse {
	m := &extprocv3.HeaderMutation{RemoveHeaders: []string{mirrorHdr}}
	for _, h := range hs {
		m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.name, RawValue: []byte(h.value)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: m, ClearRouteCache: true}}}}
}

// wantFor is the expected answer for a decision with a version.
func wantFor(d split.Decision) *extprocv3.ProcessingResponse {
	hs := []hv{{routeHdr, d.Version}, {reasonHdr, d.Reason.String()}}
	for _, v := range d.Variants() {
		hs = append(hs, hv{v.Header, v.Variant})
	}
	return wantSet(hs...)
}

// wantUnmatched removes the client's route header (and says why).
func wantUnmatched() *extprocv3.ProcessingResponse {
	r := wantSet(hv{reasonHdr, "unmatched"})
	r.GetRequestHeaders().GetResponse().GetHeaderMutation().RemoveHeaders = []string{routeHdr, mirrorHdr}
	return r
}

func emptyReqHeaders() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{}}}
}

func diffResponses(want, got []*extprocv3.ProcessingResponse) string {
	return cmp.Diff(want, got, protocmp.Transform())
}
