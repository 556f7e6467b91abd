package reliability

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trafficsplit/splitter/internal/grpcserver"
)

// headersOf builds a request_headers message from name, raw value pairs in
// order (duplicates allowed).
func headersOf(kv ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: true}}}
}

func withHeaderMap(hm *corev3.HeaderMap) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}}}
}

type protoCase struct {
	name  string
	msgs  []*extprocv3.ProcessingRequest
	check func(t *testing.T, resps []*extprocv3.ProcessingResponse, err error)
}

// decided expects one request_headers answer that routes to one of versions
// (for reason, if given).
func decided(reason string, versions ...string) func(*testing.T, []*extprocv3.ProcessingResponse, error) {
	return func(t *testing.T, resps []*extprocv3.ProcessingResponse, err error) {
		t.Helper()
		if err != nil || len(resps) != 1 {
			t.Fatalf("got %d answers, %v; want one", len(resps), err)
		}
		d := decisionOf(t, resps[0])
		if !slices.Contains(versions, d.Version) || (reason != "" && d.Reason != reason) {
			t.Errorf("decision %+v, want a version in %v, reason %q", d, versions, reason)
		}
	}
}

// continued expects exactly the empty answers of the given phases, in order.
func continued(phases ...string) func(*testing.T, []*extprocv3.ProcessingResponse, error) {
	return func(t *testing.T, resps []*extprocv3.ProcessingResponse, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("stream error %v", err)
		}
		var got []string
		for _, r := range resps {
			got = append(got, phaseOf(r))
			if rh := r.GetRequestHeaders(); rh != nil && len(rh.GetResponse().GetHeaderMutation().GetSetHeaders()) > 0 {
				t.Errorf("a repeated request_headers was answered with a mutation: %v", r)
			}
		}
		if !slices.Equal(got, phases) {
			t.Errorf("answers %v, want %v", got, phases)
		}
	}
}

func phaseOf(r *extprocv3.ProcessingResponse) string {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return "immediate_response"
	}
	return fmt.Sprintf("%T", r.GetResponse())
}

func protoCases() []protoCase {
	bigValue := strings.Repeat("u", 16<<10)
	var kib60 []string
	for i := range 60 {
		kib60 = append(kib60, fmt.Sprintf("x-filler-%02d", i), strings.Repeat("f", 1000))
	}
	kib60 = append(kib60, ":authority", "api.example.com", "x-beta", "true")
	cookies := []string{":authority", "api.example.com"}
	for i := range 200 {
		cookies = append(cookies, "cookie", fmt.Sprintf("c%d=v%d", i, i))
	}
	body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("x")}}}
	reqTrailers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}
	respHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}}
	respBody := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{}}}
	respTrailers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}}
	pinned := headersOf(":authority", "api.example.com", "x-beta", "true")

	attrs, _ := structpb.NewStruct(map[string]any{"request.path": "/x"})
	withAttrs := headersOf(":authority", "api.example.com", "x-beta", "true")
	withAttrs.Attributes = map[string]*structpb.Struct{"envoy.filters.http.ext_proc": attrs}
	withAttrs.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"ns": attrs}}

	return []protoCase{
		{name: "no :authority", msgs: []*extprocv3.ProcessingRequest{headersOf(":path", "/", "x-beta", "true")}, check: decided("header_match", "v2")},
		{name: "empty header map", msgs: []*extprocv3.ProcessingRequest{withHeaderMap(&corev3.HeaderMap{})}, check: decided("weighted_routing", "v1", "v2")},
		{name: "nil HeaderMap", msgs: []*extprocv3.ProcessingRequest{withHeaderMap(nil)}, check: decided("weighted_routing", "v1", "v2")},
		{name: "non-UTF-8 raw_value", msgs: []*extprocv3.ProcessingRequest{headersOf(":authority", "api.example.com", "x-user-id", "\xff\xfe\x80user")}, check: decided("sticky_routing", "v1", "v2")},
		{name: "CR LF NUL in raw_value", msgs: []*extprocv3.ProcessingRequest{headersOf(":authority", "api.example.com", "x-beta", "tr\r\nue\x00", "x-user-id", "a\x00b")}, check: decided("sticky_routing", "v1", "v2")},
		{name: "value only, no raw_value", msgs: []*extprocv3.ProcessingRequest{withHeaderMap(&corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":authority", Value: "api.example.com"}, {Key: "x-beta", Value: "true"}}})}, check: decided("header_match", "v2")},
		{name: "upper-case names and authority with port", msgs: []*extprocv3.ProcessingRequest{headersOf(":authority", "API.Example.COM:8443", "X-Beta", "true")}, check: decided("header_match", "v2")},
		{name: "client route header overwritten", msgs: []*extprocv3.ProcessingRequest{headersOf(":authority", "api.example.com", "x-route-version", "v9", "x-user-id", "user-fixed")}, check: decided("sticky_routing", "v1", "v2")},
		{name: "16 KiB header value", msgs: []*extprocv3.ProcessingRequest{headersOf(":authority", "api.example.com", "x-user-id", bigValue)}, check: decided("sticky_routing", "v1", "v2")},
		{name: "60 KiB of headers", msgs: []*extprocv3.ProcessingRequest{headersOf(kib60...)}, check: decided("header_match", "v2")},
		{name: "200 duplicate cookie headers", msgs: []*extprocv3.ProcessingRequest{headersOf(cookies...)}, check: decided("weighted_routing", "v1", "v2")},
		{name: "attributes and metadata present", msgs: []*extprocv3.ProcessingRequest{withAttrs}, check: decided("header_match", "v2")},
		{
			name: "message above the receive limit",
			msgs: []*extprocv3.ProcessingRequest{headersOf(":authority", "api.example.com", "x-big", strings.Repeat("b", grpcserver.DefaultMaxRecvMsgSize+1))},
			check: func(t *testing.T, resps []*extprocv3.ProcessingResponse, err error) {
				if status.Code(err) != codes.ResourceExhausted {
					t.Errorf("stream ended with %v (%d answers), want ResourceExhausted", err, len(resps))
				}
			},
		},
		{name: "request_body first", msgs: []*extprocv3.ProcessingRequest{body}, check: continued("request_body")},
		{name: "request_trailers first", msgs: []*extprocv3.ProcessingRequest{reqTrailers}, check: continued("request_trailers")},
		{name: "response_headers first", msgs: []*extprocv3.ProcessingRequest{respHeaders}, check: continued("response_headers")},
		{name: "response_body first", msgs: []*extprocv3.ProcessingRequest{respBody}, check: continued("response_body")},
		{name: "response_trailers first", msgs: []*extprocv3.ProcessingRequest{respTrailers}, check: continued("response_trailers")},
		{
			name: "duplicate request_headers",
			msgs: []*extprocv3.ProcessingRequest{pinned, pinned},
			check: func(t *testing.T, resps []*extprocv3.ProcessingResponse, err error) {
				if err != nil || len(resps) != 2 {
					t.Fatalf("got %d answers, %v; want two", len(resps), err)
				}
				if d := decisionOf(t, resps[0]); d.Version != "v2" {
					t.Errorf("first answer %+v, want v2", d)
				}
				continued("request_headers")(t, resps[1:], nil)
			},
		},
		{name: "every phase in order", msgs: []*extprocv3.ProcessingRequest{pinned, body, reqTrailers, respHeaders, respBody, respTrailers}, check: func(t *testing.T, resps []*extprocv3.ProcessingResponse, err error) {
			if len(resps) != 6 {
				t.Fatalf("got %d answers, %v; want six", len(resps), err)
			}
			continued("request_body", "request_trailers", "response_headers", "response_body", "response_trailers")(t, resps[1:], err)
		}},
		{
			name: "empty oneof",
			msgs: []*extprocv3.ProcessingRequest{{}},
			check: func(t *testing.T, resps []*extprocv3.ProcessingResponse, err error) {
				if err != nil || len(resps) != 0 {
					t.Errorf("got %d answers, %v; want a clean close without an answer", len(resps), err)
				}
			},
		},
		{
			name: "empty oneof after request_headers",
			msgs: []*extprocv3.ProcessingRequest{pinned, {}},
			check: func(t *testing.T, resps []*extprocv3.ProcessingResponse, err error) {
				if err != nil || len(resps) != 1 {
					t.Errorf("got %d answers, %v; want the decision then a clean close", len(resps), err)
				}
			},
		},
	}
}

// TestExtProcProtocol drives the gRPC server with unusual and hostile
// streams: each is answered in the right phase or closed cleanly, the
// server keeps serving, and the configuration does not move.
func TestExtProcProtocol(t *testing.T) {
	st := startStack(t, baseConfig(t), nil)
	before := st.serving(t)
	for _, tc := range protoCases() {
		t.Run(tc.name, func(t *testing.T) {
			resps, err := st.exchange(t, tc.msgs...)
			tc.check(t, resps, err)
			st.assertServing(t, before)
		})
	}

	t.Run("reset mid-stream", func(t *testing.T) {
		// What Envoy does when the downstream goes away: the stream is
		// cancelled with a request in flight and its answer never read.
		for range 50 {
			ctx, cancel := context.WithCancel(t.Context())
			stream, err := extprocv3.NewExternalProcessorClient(st.cc).Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(headersOf(":authority", "api.example.com")); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		st.assertServing(t, before)
		waitStreamsIdle(t, st)
	})
}

// waitStreamsIdle polls the active-streams gauge down to zero: every
// handler goroutine of a reset stream has returned.
func waitStreamsIdle(t *testing.T, st *stack) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, ok := st.metric(t, `splitter_streams_active{api="ext_proc"}`)
		if ok && v == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("streams_active = %v after the resets, want 0", v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
