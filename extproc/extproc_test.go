package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/split"
)

func newTestServer(src adapter.TableSource, rec adapter.Recorder) *Server {
	return New(src, Options{Headers: adapter.Headers{Route: routeHdr, Reason: reasonHdr}, Recorder: rec})
}

// hostTable routes only api.example.com, so other authorities are unmatched.
func hostTable(t testing.TB) *split.Table {
	t.Helper()
	tab, err := split.Compile(&split.Config{Services: []split.Service{{
		Name: "api", Hosts: []string{"api.example.com"},
		Weights: split.Weights{{Version: "v1", BasisPoints: 10000}},
	}}})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return tab
}

func TestProcessRequestHeaders(t *testing.T) {
	type tc struct {
		name  string
		table func(t testing.TB) *split.Table
		hm    *corev3.HeaderMap
		// want computes the expected answer from a reference table (a
		// twin of the one served, so weighted counters start equal).
		want func(ref *split.Table) *extprocv3.ProcessingResponse
	}
	beta := func(*split.Table) *extprocv3.ProcessingResponse {
		return wantSet(hv{routeHdr, "v2"}, hv{reasonHdr, "header_match"})
	}
	first := func(*split.Table) *extprocv3.ProcessingResponse {
		// A fresh table sends its first unkeyed request to the largest weight.
		return wantSet(hv{routeHdr, "v1"}, hv{reasonHdr, "weighted_routing"})
	}
	sticky := func(hm *corev3.HeaderMap) func(ref *split.Table) *extprocv3.ProcessingResponse {
		return func(ref *split.Table) *extprocv3.ProcessingResponse {
			d := reference(ref, hm)
			if d.Reason != split.ReasonStickyRouting {
				t.Errorf("reference reason = %v, want sticky_routing", d.Reason)
			}
			return wantFor(d)
		}
	}
	matchedV1 := func(*split.Table) *extprocv3.ProcessingResponse {
		return wantSet(hv{routeHdr, "v1"}, hv{reasonHdr, "weighted_routing"})
	}
	unmatched := func(*split.Table) *extprocv3.ProcessingResponse { return wantUnmatched() }
	nonUTF8 := raw(envoyHeaders("x-user-id", "\xff\xfeu\x00ser")...)
	for _, c := range []tc{
		{"raw_value only", defaultTable, raw(envoyHeaders("x-beta", "true")...), beta},
		{"value only", defaultTable, val(envoyHeaders("x-beta", "true")...), beta},
		{"raw_value wins over value", defaultTable, &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":authority", RawValue: []byte("api.example.com")},
			{Key: "x-beta", Value: "false", RawValue: []byte("true")},
		}}, beta},
		{"value used when raw_value empty", defaultTable, &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "x-beta", Value: "true", RawValue: []byte{}},
		}}, beta},
		{"non-UTF-8 bytes in raw_value", defaultTable, nonUTF8, sticky(nonUTF8)},
		{"upper-case header name", defaultTable, raw(":authority", "api.example.com", "X-Beta", "true"), beta},
		{"client route header overwritten", defaultTable, raw(envoyHeaders(routeHdr, "v2", reasonHdr, "header_match")...), first},
		{"empty header map", defaultTable, &corev3.HeaderMap{}, first},
		{"nil header map", defaultTable, nil, first},
		{"authority from host header", hostTable, raw("host", "api.example.com:8080", ":path", "/"), matchedV1},
		{":authority wins over host", hostTable, raw("host", "other.example.com", ":authority", "API.example.com"), matchedV1},
		{"missing authority is unmatched", hostTable, raw(":path", "/", ":method", "GET", routeHdr, "v2"), unmatched},
		{"other host is unmatched", hostTable, raw(":authority", "other.example.com", routeHdr, "v2"), unmatched},
	} {
		t.Run(c.name, func(t *testing.T) {
			served, ref := c.table(t), c.table(t)
			rec := newRecorder()
			s := newTestServer(fixedSource{served}, rec)
			st := newFakeStream(t.Context(), step{req: reqHeaders(c.hm)})
			if err := s.Process(st); err != nil {
				t.Fatalf("Process: %v", err)
			}
			want := []*extprocv3.ProcessingResponse{c.want(ref)}
			if d := diffResponses(want, st.sent); d != "" {
				t.Errorf("responses (-want +got):\n%s", d)
			}
			for _, r := range st.sent {
				if _, err := proto.Marshal(r); err != nil {
					t.Errorf("response does not marshal: %v", err)
				}
			}
			results, _, decided, started, _ := rec.snapshot()
			if decided != 1 || started != 1 || results[adapter.ResultOK] != 1 {
				t.Errorf("recorder: decided=%d started=%d results=%v, want 1/1/ok", decided, started, results)
			}
		})
	}
}

func TestProcessStickyStableAcrossStreams(t *testing.T) {
	tab := defaultTable(t)
	s := newTestServer(fixedSource{tab}, nil)
	var first []*extprocv3.ProcessingResponse
	for i := range 5 {
		st := newFakeStream(t.Context(), step{req: reqHeaders(raw(envoyHeaders("x-user-id", "user-123")...))})
		if err := s.Process(st); err != nil {
			t.Fatalf("Process %d: %v", i, err)
		}
		if i == 0 {
			first = st.sent
			continue
		}
		if d := diffResponses(first, st.sent); d != "" {
			t.Errorf("stream %d differs from the first (-first +got):\n%s", i, d)
		}
	}
	ref := reference(tab, raw(envoyHeaders("x-user-id", "user-123")...))
	if ref.Reason != split.ReasonStickyRouting || len(ref.Variants()) == 0 {
		t.Fatalf("reference decision %+v: want sticky with the default experiment", ref)
	}
	if d := diffResponses([]*extprocv3.ProcessingResponse{wantFor(ref)}, first); d != "" {
		t.Errorf("sticky answer (-want +got):\n%s", d)
	}
}

func TestProcessExperimentHeader(t *testing.T) {
	tab := defaultTable(t)
	s := newTestServer(fixedSource{tab}, nil)
	// The header rule decides the version; the experiment still applies.
	hm := raw(envoyHeaders("x-beta", "true", "x-user-id", "user-42")...)
	st := newFakeStream(t.Context(), step{req: reqHeaders(hm)})
	if err := s.Process(st); err != nil {
		t.Fatalf("Process: %v", err)
	}
	ref := reference(tab, hm)
	vs := ref.Variants()
	if len(vs) != 1 || vs[0].Header != "x-variant" {
		t.Fatalf("reference variants = %+v, want one for x-variant", vs)
	}
	want := wantSet(hv{routeHdr, "v2"}, hv{reasonHdr, "header_match"}, hv{"x-variant", vs[0].Variant})
	if d := diffResponses([]*extprocv3.ProcessingResponse{want}, st.sent); d != "" {
		t.Errorf("responses (-want +got):\n%s", d)
	}
}

func TestProcessReasonHeaderDisabled(t *testing.T) {
	s := New(fixedSource{defaultTable(t)}, Options{Headers: adapter.Headers{Route: routeHdr}})
	st := newFakeStream(t.Context(),
		step{req: reqHeaders(raw("x-beta", "true"))})
	if err := s.Process(st); err != nil {
		t.Fatalf("Process: %v", err)
	}
	if d := diffResponses([]*extprocv3.ProcessingResponse{wantSet(hv{routeHdr, "v2"})}, st.sent); d != "" {
		t.Errorf("responses (-want +got):\n%s", d)
	}
}

func TestProcessOtherPhases(t *testing.T) {
	for _, c := range []struct {
		phase string
		req   *extprocv3.ProcessingRequest
		want  *extprocv3.ProcessingResponse
	}{
		{adapter.PhaseRequestBody,
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("x")}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}},
		{adapter.PhaseRequestTrailers,
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}},
		{adapter.PhaseResponseHeaders,
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: raw(":status", "200")}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}},
		{adapter.PhaseResponseBody,
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{EndOfStream: true}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}},
		{adapter.PhaseResponseTrailers,
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}},
	} {
		t.Run(c.phase, func(t *testing.T) {
			tab := defaultTable(t)
			rec := newRecorder()
			s := newTestServer(fixedSource{tab}, rec)
			// Alone as the first message, and after request_headers.
			st := newFakeStream(t.Context(), step{req: c.req}, step{req: reqHeaders(raw("x-beta", "true"))}, step{req: c.req})
			if err := s.Process(st); err != nil {
				t.Fatalf("Process: %v", err)
			}
			want := []*extprocv3.ProcessingResponse{c.want, wantSet(hv{routeHdr, "v2"}, hv{reasonHdr, "header_match"}), c.want}
			if d := diffResponses(want, st.sent); d != "" {
				t.Errorf("responses (-want +got):\n%s", d)
			}
			results, unexpected, _, _, _ := rec.snapshot()
			if unexpected[c.phase] != 2 || results[adapter.ResultOK] != 1 {
				t.Errorf("unexpected=%v results=%v, want %s counted twice and ok", unexpected, results, c.phase)
			}
		})
	}
}

func TestProcessDuplicateRequestHeaders(t *testing.T) {
	rec := newRecorder()
	s := newTestServer(fixedSource{defaultTable(t)}, rec)
	st := newFakeStream(t.Context(), step{req: reqHeaders(raw("x-beta", "true"))}, step{req: reqHeaders(raw("x-beta", "true"))})
	if err := s.Process(st); err != nil {
		t.Fatalf("Process: %v", err)
	}
	want := []*extprocv3.ProcessingResponse{wantSet(hv{routeHdr, "v2"}, hv{reasonHdr, "header_match"}), emptyReqHeaders()}
	if d := diffResponses(want, st.sent); d != "" {
		t.Errorf("responses (-want +got):\n%s", d)
	}
	_, unexpected, decided, _, _ := rec.snapshot()
	if unexpected[adapter.PhaseDuplicateRequestHeaders] != 1 || decided != 1 {
		t.Errorf("unexpected=%v decided=%d, want one duplicate and one decision", unexpected, decided)
	}
}

func TestProcessEmptyOneofClosesCleanly(t *testing.T) {
	rec := newRecorder()
	s := newTestServer(fixedSource{defaultTable(t)}, rec)
	st := newFakeStream(t.Context(), step{req: &extprocv3.ProcessingRequest{}}, step{req: reqHeaders(raw("x-beta", "true"))})
	if err := s.Process(st); err != nil {
		t.Fatalf("Process: %v", err)
	}
	if len(st.sent) != 0 || st.next != 1 {
		t.Errorf("sent %d responses after reading %d messages, want none after 1", len(st.sent), st.next)
	}
	_, unexpected, _, _, _ := rec.snapshot()
	if unexpected[adapter.PhaseUnknown] != 1 {
		t.Errorf("unexpected = %v, want unknown counted", unexpected)
	}
}

func TestProcessObservabilityModeNeverReplies(t *testing.T) {
	rec := newRecorder()
	s := newTestServer(fixedSource{defaultTable(t)}, rec)
	obs := func(r *extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest {
		r.ObservabilityMode = true
		return r
	}
	st := newFakeStream(t.Context(),
		step{req: obs(reqHeaders(raw("x-beta", "true")))},
		step{req: obs(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}})},
	)
	if err := s.Process(st); err != nil {
		t.Fatalf("Process: %v", err)
	}
	if len(st.sent) != 0 {
		t.Errorf("sent %d responses in observability mode, want none", len(st.sent))
	}
	results, _, decided, _, _ := rec.snapshot()
	if decided != 1 || results[adapter.ResultOK] != 1 {
		t.Errorf("decided=%d results=%v, want the shadow decision counted and ok", decided, results)
	}
}

func TestProcessStreamEnd(t *testing.T) {
	for _, c := range []struct {
		name       string
		err        error
		wantErr    bool
		wantResult string
	}{
		{"EOF", io.EOF, false, adapter.ResultOK},
		{"status Canceled", status.Error(codes.Canceled, "context canceled"), false, adapter.ResultOK},
		{"context.Canceled", context.Canceled, false, adapter.ResultOK},
		{"wrapped context.Canceled", fmt.Errorf("recv: %w", context.Canceled), false, adapter.ResultOK},
		{"Unavailable", status.Error(codes.Unavailable, "transport closing"), true, adapter.ResultError},
		{"ResourceExhausted", status.Error(codes.ResourceExhausted, "message too large"), true, adapter.ResultError},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder()
			s := newTestServer(fixedSource{defaultTable(t)}, rec)
			st := newFakeStream(t.Context(), step{req: reqHeaders(raw("x-beta", "true"))}, step{err: c.err})
			err := s.Process(st)
			if (err != nil) != c.wantErr {
				t.Fatalf("Process = %v, want error %v", err, c.wantErr)
			}
			if c.wantErr && !errors.Is(err, c.err) {
				t.Errorf("Process = %v, want the Recv error %v", err, c.err)
			}
			results, _, _, _, _ := rec.snapshot()
			if results[c.wantResult] != 1 {
				t.Errorf("results = %v, want %s", results, c.wantResult)
			}
		})
	}
	t.Run("canceled before any answer", func(t *testing.T) {
		rec := newRecorder()
		s := newTestServer(fixedSource{defaultTable(t)}, rec)
		if err := s.Process(newFakeStream(t.Context(), step{err: context.Canceled})); err != nil {
			t.Fatalf("Process: %v", err)
		}
		if results, _, _, _, _ := rec.snapshot(); results[adapter.ResultCanceled] != 1 {
			t.Errorf("results = %v, want canceled", results)
		}
	})
}

func TestProcessSendError(t *testing.T) {
	rec := newRecorder()
	s := newTestServer(fixedSource{defaultTable(t)}, rec)
	st := newFakeStream(t.Context(), step{req: reqHeaders(raw("x-beta", "true"))}, step{req: reqHeaders(raw())})
	sendErr := status.Error(codes.Unavailable, "peer gone")
	st.sendErr = sendErr
	if err := s.Process(st); !errors.Is(err, sendErr) {
		t.Fatalf("Process = %v, want %v", err, sendErr)
	}
	if st.next != 1 {
		t.Errorf("read %d messages, want to stop after the failed Send", st.next)
	}
	if results, _, _, _, _ := rec.snapshot(); results[adapter.ResultError] != 1 {
		t.Errorf("results = %v, want error", results)
	}
}

func TestProcessNoConfig(t *testing.T) {
	rec := newRecorder()
	s := newTestServer(fixedSource{nil}, rec)
	st := newFakeStream(t.Context(), step{req: reqHeaders(raw(envoyHeaders(routeHdr, "v2")...))})
	if err := s.Process(st); err != nil {
		t.Fatalf("Process: %v", err)
	}
	if d := diffResponses([]*extprocv3.ProcessingResponse{wantUnmatched()}, st.sent); d != "" {
		t.Errorf("responses (-want +got):\n%s", d)
	}
	if results, _, decided, _, _ := rec.snapshot(); results[adapter.ResultNoConfig] != 1 || decided != 0 {
		t.Errorf("results=%v decided=%d, want no_config and no decision", results, decided)
	}
}

func TestProcessPanicRecovered(t *testing.T) {
	t.Run("pending phase answered", func(t *testing.T) {
		rec := newRecorder()
		s := newTestServer(panicSource{}, rec)
		st := newFakeStream(t.Context(), step{req: reqHeaders(raw("x-beta", "true"))}, step{req: reqHeaders(raw())})
		if err := s.Process(st); err != nil {
			t.Fatalf("Process = %v, want nil after answering the pending phase", err)
		}
		if d := diffResponses([]*extprocv3.ProcessingResponse{emptyReqHeaders()}, st.sent); d != "" {
			t.Errorf("responses (-want +got):\n%s", d)
		}
		results, _, _, _, panics := rec.snapshot()
		if results[adapter.ResultPanic] != 1 || panics != 1 {
			t.Errorf("results=%v panics=%d, want one panic", results, panics)
		}
	})
	t.Run("answer impossible", func(t *testing.T) {
		rec := newRecorder()
		s := newTestServer(panicSource{}, rec)
		st := newFakeStream(t.Context(), step{req: reqHeaders(raw("x-beta", "true"))})
		st.sendErr = errors.New("peer gone")
		err := s.Process(st)
		if status.Code(err) != codes.Internal {
			t.Fatalf("Process = %v, want codes.Internal", err)
		}
		if results, _, _, _, _ := rec.snapshot(); results[adapter.ResultPanic] != 1 {
			t.Errorf("results = %v, want panic", results)
		}
	})
	t.Run("observability mode", func(t *testing.T) {
		s := newTestServer(panicSource{}, nil)
		r := reqHeaders(raw())
		r.ObservabilityMode = true
		st := newFakeStream(t.Context(), step{req: r})
		if err := s.Process(st); status.Code(err) != codes.Internal || len(st.sent) != 0 {
			t.Fatalf("Process = %v with %d sent, want codes.Internal and silence", err, len(st.sent))
		}
	})
}

func TestResponsesAreSharedAndUnchanged(t *testing.T) {
	// Cached responses are shared between streams; building the same
	// decision twice must hand out the same, unmodified message.
	s := newTestServer(fixedSource{defaultTable(t)}, nil)
	var got []*extprocv3.ProcessingResponse
	for range 3 {
		st := newFakeStream(t.Context(), step{req: reqHeaders(raw("x-beta", "true"))})
		if err := s.Process(st); err != nil {
			t.Fatalf("Process: %v", err)
		}
		got = append(got, st.sent...)
	}
	if got[0] != got[1] || got[1] != got[2] {
		t.Errorf("the same decision built distinct responses; want one cached message")
	}
	if d := diffResponses([]*extprocv3.ProcessingResponse{wantSet(hv{routeHdr, "v2"}, hv{reasonHdr, "header_match"})}, got[:1]); d != "" {
		t.Errorf("cached response (-want +got):\n%s", d)
	}
}
