package extproc

import (
	"context"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/split"
)

// requestPhase and responsePhase give the oneof field name ("" for none).
func requestPhase(r *extprocv3.ProcessingRequest) string {
	if fd := r.ProtoReflect().WhichOneof(r.ProtoReflect().Descriptor().Oneofs().ByName("request")); fd != nil {
		return string(fd.Name())
	}
	return ""
}

func responsePhase(r *extprocv3.ProcessingResponse) string {
	if fd := r.ProtoReflect().WhichOneof(r.ProtoReflect().Descriptor().Oneofs().ByName("response")); fd != nil {
		return string(fd.Name())
	}
	return ""
}

// FuzzProcess feeds arbitrary ProcessingRequest bytes through the handler:
// it must never panic (a recovered panic counts as a failure), must answer
// each message with the same oneof case, stay silent in observability mode
// and close on an empty oneof; every reply must marshal.
func FuzzProcess(f *testing.F) {
	seeds := []*extprocv3.ProcessingRequest{
		reqHeaders(raw(envoyHeaders("x-beta", "true", "x-user-id", "user-123")...)),
		reqHeaders(raw(envoyHeaders("x-user-id", "\xff\xfe")...)),
		reqHeaders(val(envoyHeaders("x-user-id", "user-7")...)),
		reqHeaders(nil),
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("{}")}}},
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: raw(":status", "200")}}},
		{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
		{ObservabilityMode: true, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}},
		{},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatalf("marshal seed: %v", err)
		}
		f.Add(b)
	}
	// The default service, assigning keys and mirroring: a request without
	// a key asks for its response headers, which the script then sends.
	cfg := split.Default()
	cfg.Services[0].Sticky.Assign = &split.Assign{Cookie: "sid", MaxAge: split.Duration(split.DefaultAssignMaxAge)}
	cfg.Services[0].Mirror = &split.Mirror{Version: "v2", Percent: 5000}
	tab, err := split.Compile(cfg)
	if err != nil {
		f.Fatalf("compile: %v", err)
	}
	respHdrs := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: raw(":status", "200", "set-cookie", "a=b")}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req extprocv3.ProcessingRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		rec := newRecorder()
		s := newTestServer(fixedSource{tab}, rec)
		// The same message twice: the second exercises the duplicate paths;
		// then response headers, as Envoy sends them to an assigned request.
		st := newFakeStream(context.Background(), step{req: &req}, step{req: &req}, step{req: respHdrs})
		if err := s.Process(st); err != nil {
			t.Fatalf("Process: %v", err)
		}
		if results, _, _, _, panics := rec.snapshot(); panics != 0 || results[adapter.ResultPanic] != 0 {
			t.Fatalf("handler panicked on %v", &req)
		}
		want := requestPhase(&req)
		var phases []string
		switch {
		case want == "":
		case req.GetObservabilityMode():
			phases = []string{"response_headers"}
		default:
			phases = []string{want, want, "response_headers"}
		}
		if len(st.sent) != len(phases) {
			t.Fatalf("%q (observability %v): %d replies, want %d", want, req.GetObservabilityMode(), len(st.sent), len(phases))
		}
		for i, r := range st.sent {
			if got := responsePhase(r); got != phases[i] {
				t.Fatalf("request %s answered with %s", phases[i], got)
			}
			if _, err := proto.Marshal(r); err != nil {
				t.Fatalf("reply does not marshal: %v", err)
			}
		}
	})
}
