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
	tab, err := split.Compile(split.Default())
	if err != nil {
		f.Fatalf("compile: %v", err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req extprocv3.ProcessingRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		rec := newRecorder()
		s := newTestServer(fixedSource{tab}, rec)
		// The same message twice: the second exercises the duplicate paths.
		st := newFakeStream(context.Background(), step{req: &req}, step{req: &req})
		if err := s.Process(st); err != nil {
			t.Fatalf("Process: %v", err)
		}
		if results, _, _, _, panics := rec.snapshot(); panics != 0 || results[adapter.ResultPanic] != 0 {
			t.Fatalf("handler panicked on %v", &req)
		}
		want := requestPhase(&req)
		switch {
		case want == "":
			if len(st.sent) != 0 {
				t.Fatalf("empty oneof answered with %d replies", len(st.sent))
			}
		case req.GetObservabilityMode():
			if len(st.sent) != 0 {
				t.Fatalf("observability mode answered with %d replies", len(st.sent))
			}
		default:
			if len(st.sent) != 2 {
				t.Fatalf("%s: %d replies, want 2", want, len(st.sent))
			}
		}
		for _, r := range st.sent {
			if got := responsePhase(r); got != want {
				t.Fatalf("request %s answered with %s", want, got)
			}
			if _, err := proto.Marshal(r); err != nil {
				t.Fatalf("reply does not marshal: %v", err)
			}
		}
	})
}
