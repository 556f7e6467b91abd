package fastcodec

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
)

// raw builds a header list with values in raw_value, as Envoy 1.27+ sends.
func raw(kv ...string) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return hm
}

func reqHeaders(hm *corev3.HeaderMap) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: true}}}
}

func envoyRequest() *extprocv3.ProcessingRequest {
	return reqHeaders(raw(":authority", "api.example.com", ":path", "/items?id=1", ":method", "GET",
		":scheme", "http", "user-agent", "curl/8.5.0", "accept", "*/*", "x-forwarded-proto", "http",
		"x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e", "x-user-id", "user-17", "x-beta", "true"))
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wire appends raw protobuf fields, for inputs proto.Marshal never makes.
func wire(fields ...func([]byte) []byte) []byte {
	var b []byte
	for _, f := range fields {
		b = f(b)
	}
	return b
}

func bytesField(num protowire.Number, v []byte) func([]byte) []byte {
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, v)
	}
}

func varintField(num protowire.Number, v uint64) func([]byte) []byte {
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
}

// seeds are the table cases and the fuzz seed corpus: what Envoy sends,
// and the shapes at the edge of what the fast path accepts.
func seeds(t testing.TB) []struct {
	name string
	in   []byte
	fast bool // the fast path must take it
} {
	withProtocol := envoyRequest()
	withProtocol.ProtocolConfig = &extprocv3.ProtocolConfiguration{
		RequestBodyMode:                         filterv3.ProcessingMode_STREAMED,
		ResponseBodyMode:                        filterv3.ProcessingMode_BodySendMode(99),
		SendBodyWithoutWaitingForHeaderResponse: true,
	}
	observed := envoyRequest()
	observed.ObservabilityMode = true
	withMetadata := envoyRequest()
	withMetadata.MetadataContext = &corev3.Metadata{}
	withFilterMetadata := envoyRequest()
	withFilterMetadata.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"a": {}}}
	withAttributes := envoyRequest()
	withAttributes.Attributes = map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {}}
	legacyValues := reqHeaders(&corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":authority", Value: "api.example.com"}, {Key: "x-beta", Value: "true"}}})
	emptyValue := reqHeaders(raw(":authority", "", "x-empty", ""))
	noHeaderMap := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{EndOfStream: true}}}
	emptyHeaderMap := reqHeaders(&corev3.HeaderMap{})
	body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte("hello"), EndOfStream: true}}}
	respHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: raw(":status", "200")}}}

	hv := func(k, v string) []byte {
		return wire(bytesField(fieldKey, []byte(k)), bytesField(fieldRawValue, []byte(v)))
	}
	headersOf := func(values ...[]byte) []byte {
		var hm []byte
		for _, v := range values {
			hm = bytesField(fieldHeaderMapHeaders, v)(hm)
		}
		return wire(bytesField(fieldRequestHeaders, wire(bytesField(fieldHTTPHeaders, hm))))
	}
	return []struct {
		name string
		in   []byte
		fast bool
	}{
		{name: "envoy request headers", in: marshal(t, envoyRequest()), fast: true},
		{name: "protocol config", in: marshal(t, withProtocol), fast: true},
		{name: "observability mode", in: marshal(t, observed), fast: true},
		{name: "empty metadata context", in: marshal(t, withMetadata), fast: true},
		{name: "legacy value field", in: marshal(t, legacyValues), fast: true},
		{name: "empty values", in: marshal(t, emptyValue), fast: true},
		{name: "no header map", in: marshal(t, noHeaderMap), fast: true},
		{name: "empty header map", in: marshal(t, emptyHeaderMap), fast: true},
		{name: "repeated key: last wins", in: headersOf(wire(bytesField(fieldKey, []byte("a")), bytesField(fieldKey, []byte("b")), bytesField(fieldRawValue, []byte("v")))), fast: true},
		{name: "value and raw_value", in: headersOf(wire(bytesField(fieldKey, []byte("k")), bytesField(fieldValue, []byte("old")), bytesField(fieldRawValue, []byte("new")))), fast: true},
		{name: "observability twice: last wins", in: append(marshal(t, envoyRequest()), wire(varintField(fieldObservabilityMode, 1), varintField(fieldObservabilityMode, 0))...), fast: true},
		{name: "non-canonical bool", in: append(marshal(t, envoyRequest()), wire(varintField(fieldObservabilityMode, 7))...), fast: true},
		{name: "binary raw value", in: headersOf(hv("x-bin", "\x00\xff\r\n")), fast: true},
		{name: "metadata with content", in: marshal(t, withFilterMetadata)},
		{name: "attributes", in: marshal(t, withAttributes)},
		{name: "request body", in: marshal(t, body)},
		{name: "response headers", in: marshal(t, respHeaders)},
		{name: "empty message", in: nil},
		{name: "request headers twice (merged)", in: append(marshal(t, envoyRequest()), marshal(t, envoyRequest())...)},
		{name: "unknown top-level field", in: append(marshal(t, envoyRequest()), wire(varintField(99, 1))...)},
		{name: "unknown header value field", in: headersOf(wire(bytesField(fieldKey, []byte("k")), varintField(7, 1)))},
		{name: "invalid UTF-8 key", in: headersOf(hv("\xff", "v"))},
		{name: "invalid UTF-8 value", in: headersOf(wire(bytesField(fieldKey, []byte("k")), bytesField(fieldValue, []byte("\xc3"))))},
		{name: "wrong wire type for observability", in: append(marshal(t, envoyRequest()), wire(bytesField(fieldObservabilityMode, nil))...)},
		{name: "truncated", in: marshal(t, envoyRequest())[:40]},
		{name: "garbage", in: []byte{0xff, 0xff, 0xff, 0xff}},
	}
}

// check compares the fast decoder with proto.Unmarshal on in: when the
// fast path takes in, proto.Unmarshal must succeed with an equal message;
// through the codec, the outcome (error or message) must always be the same.
func check(t *testing.T, in []byte, reused *Request) (fast bool) {
	t.Helper()
	want := new(extprocv3.ProcessingRequest)
	wantErr := proto.Unmarshal(in, want)

	var got Request
	fast = decodeRequest(in, &got.ProcessingRequest, &got.s)
	if fast {
		if wantErr != nil {
			t.Fatalf("fast path accepted what proto.Unmarshal rejects: %v", wantErr)
		}
		if diff := cmp.Diff(want, &got.ProcessingRequest, protocmp.Transform()); diff != "" {
			t.Fatalf("fast path differs from proto.Unmarshal (-want +got):\n%s", diff)
		}
	}

	codec := New()
	// The input is copied into a buffer that is overwritten after
	// Unmarshal, as gRPC reuses its receive buffers.
	targets := []proto.Message{new(extprocv3.ProcessingRequest), reused}
	for _, target := range targets {
		buf := bytes.Clone(in)
		err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(buf)}, target)
		for i := range buf {
			buf[i] = 'X'
		}
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("codec error %v, proto.Unmarshal error %v", err, wantErr)
		}
		if err != nil {
			continue
		}
		msg := target
		if r, ok := target.(*Request); ok {
			msg = &r.ProcessingRequest
		}
		if diff := cmp.Diff(want, msg, protocmp.Transform()); diff != "" {
			t.Fatalf("codec into %T differs from proto.Unmarshal (-want +got):\n%s", target, diff)
		}
	}
	return fast
}

func TestDecodeEquivalence(t *testing.T) {
	// One Request is reused across all cases, as a pooled one is.
	reused := new(Request)
	for _, tc := range seeds(t) {
		t.Run(tc.name, func(t *testing.T) {
			if fast := check(t, tc.in, reused); fast != tc.fast {
				t.Errorf("fast path taken = %v, want %v", fast, tc.fast)
			}
		})
	}
}

// Several buffers (a message split across HTTP/2 frames) decode the same.
func TestUnmarshalSplitBuffers(t *testing.T) {
	in := marshal(t, envoyRequest())
	tests := []struct {
		name  string
		parts []int // cut points
	}{
		{name: "one buffer"},
		{name: "two buffers", parts: []int{10}},
		{name: "three buffers", parts: []int{1, 50}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var data mem.BufferSlice
			prev := 0
			for _, cut := range append(tc.parts, len(in)) {
				data = append(data, mem.SliceBuffer(bytes.Clone(in[prev:cut])))
				prev = cut
			}
			got := new(Request)
			if err := New().Unmarshal(data, got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(envoyRequest(), &got.ProcessingRequest, protocmp.Transform()); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzDecodeEquivalence(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s.in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		reused := new(Request)
		// Leave something in the reused storage first.
		if err := proto.Unmarshal(marshal(t, envoyRequest()), reused); err != nil {
			t.Fatal(err)
		}
		check(t, in, reused)
	})
}

func TestDecodeAllocations(t *testing.T) {
	in := marshal(t, envoyRequest())
	codec := New()
	data := mem.BufferSlice{mem.SliceBuffer(in)}
	tests := []struct {
		name   string
		target func() proto.Message
		max    float64
	}{
		// storage, value slice, pointer slice, arena; the message itself
		// is the caller's.
		{name: "fresh ProcessingRequest", target: func() proto.Message { return new(extprocv3.ProcessingRequest) }, max: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := testing.AllocsPerRun(100, func() {
				if err := codec.Unmarshal(data, tc.target()); err != nil {
					t.Fatal(err)
				}
			})
			if got > tc.max+1 { // +1: the target allocated by the test
				t.Errorf("%v allocations per decode, want at most %v", got, tc.max)
			}
		})
	}
	t.Run("reused Request", func(t *testing.T) {
		// A Request as RequestPool hands it out again (the pool itself is
		// left out: under -race it drops items on purpose).
		r := new(Request)
		got := testing.AllocsPerRun(100, func() {
			if err := codec.Unmarshal(data, r); err != nil {
				t.Fatal(err)
			}
			r.ProcessingRequest.Reset()
		})
		if got != 0 {
			t.Errorf("%v allocations per decode into a reused Request, want 0", got)
		}
	})
}
