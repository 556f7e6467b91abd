package fastcodec

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

func setResponse(name, value string) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: name, RawValue: []byte(value)},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}}},
			ClearRouteCache: true,
		}}}}
}

func TestMarshal(t *testing.T) {
	resp := setResponse("x-route-version", "v2")
	enc := Encode(resp)
	tests := []struct {
		name string
		msg  any
		want proto.Message // what the bytes must decode to
		into func() proto.Message
	}{
		{name: "encoded response", msg: enc, want: resp, into: func() proto.Message { return new(extprocv3.ProcessingResponse) }},
		{name: "plain response", msg: resp, want: resp, into: func() proto.Message { return new(extprocv3.ProcessingResponse) }},
		{
			name: "ext_authz response",
			msg:  &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{HeadersToRemove: []string{"a"}}}},
			want: &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{HeadersToRemove: []string{"a"}}}},
			into: func() proto.Message { return new(authv3.CheckResponse) },
		},
		{
			name: "health",
			msg:  &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING},
			want: &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING},
			into: func() proto.Message { return new(healthpb.HealthCheckResponse) },
		},
		{
			name: "large (pooled buffer)",
			msg:  setResponse("x-big", strings.Repeat("b", 64<<10)),
			want: setResponse("x-big", strings.Repeat("b", 64<<10)),
			into: func() proto.Message { return new(extprocv3.ProcessingResponse) },
		},
	}
	codec := New()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := codec.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			got := tc.into()
			if err := proto.Unmarshal(data.Materialize(), got); err != nil {
				t.Fatal(err)
			}
			data.Free()
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("not a proto message", func(t *testing.T) {
		if _, err := codec.Marshal(struct{}{}); err == nil {
			t.Error("Marshal of a non-message succeeded")
		}
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer{}}, new(int)); err == nil {
			t.Error("Unmarshal into a non-message succeeded")
		}
	})
	t.Run("nil message", func(t *testing.T) {
		if _, err := codec.Marshal(Encode(nil)); err == nil {
			t.Error("Marshal of Encode(nil) succeeded")
		}
	})
	t.Run("unmarshallable message is reported at send", func(t *testing.T) {
		// proto.Marshal checks that string fields are UTF-8.
		e := Encode(&healthpb.HealthCheckRequest{Service: "\xff"})
		if e.Bytes() != nil {
			t.Fatal("invalid UTF-8 in a string field was encoded")
		}
		if _, err := codec.Marshal(e); err == nil {
			t.Error("Marshal succeeded")
		}
	})
	t.Run("encoded bytes are the message", func(t *testing.T) {
		got := new(extprocv3.ProcessingResponse)
		if err := proto.Unmarshal(enc.Bytes(), got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, resp) {
			t.Errorf("Bytes() decode to %v", got)
		}
	})
}

// testProcessor checks, after every stream of a wave has received its
// message (so gRPC has reused its receive buffers many times over), that
// the headers it decoded are still intact, then answers with a shared
// pre-encoded response.
type testProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
	pool    RequestPool
	pooled  bool
	arrived *sync.WaitGroup
	answers []*Encoded
}

func payload(id int) string { return strings.Repeat(string(rune('a'+id%26)), 100+id) }

func (p *testProcessor) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	var req *extprocv3.ProcessingRequest
	if p.pooled {
		r := p.pool.Get()
		defer p.pool.Put(r)
		if err := stream.RecvMsg(r); err != nil {
			return err
		}
		req = &r.ProcessingRequest
	} else {
		var err error
		if req, err = stream.Recv(); err != nil {
			return err
		}
	}
	p.arrived.Done()
	p.arrived.Wait()
	var id = -1
	var got string
	for _, h := range req.GetRequestHeaders().GetHeaders().GetHeaders() {
		switch h.GetKey() {
		case "x-id":
			id, _ = strconv.Atoi(string(h.GetRawValue()))
		case "x-payload":
			got = string(h.GetRawValue())
		}
	}
	if id < 0 || got != payload(id) {
		return fmt.Errorf("stream %d: payload corrupted: %.40q", id, got)
	}
	return stream.SendMsg(p.answers[id%len(p.answers)])
}

func TestServerConcurrentStreams(t *testing.T) {
	const streams = 32
	for _, pooled := range []bool{true, false} {
		t.Run(fmt.Sprintf("pooled=%v", pooled), func(t *testing.T) {
			var answers []*Encoded
			for i := range 4 {
				answers = append(answers, Encode(setResponse("x-answer", strconv.Itoa(i))))
			}
			var arrived sync.WaitGroup
			arrived.Add(streams)
			lis := bufconn.Listen(1 << 20)
			srv := grpc.NewServer(grpc.ForceServerCodecV2(New()))
			extprocv3.RegisterExternalProcessorServer(srv, &testProcessor{pooled: pooled, arrived: &arrived, answers: answers})
			healthpb.RegisterHealthServer(srv, health.NewServer())
			served := make(chan error, 1)
			go func() { served <- srv.Serve(lis) }()
			conn, err := grpc.NewClient("passthrough:///bufconn",
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				conn.Close()
				srv.Stop()
				if err := <-served; err != nil {
					t.Errorf("Serve: %v", err)
				}
			}()

			hr, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
			if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("health through the codec: %v, %v", hr, err)
			}

			client := extprocv3.NewExternalProcessorClient(conn)
			errs := make(chan error, streams)
			for i := range streams {
				go func() { errs <- call(t.Context(), client, i) }()
			}
			for range streams {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func call(ctx context.Context, c extprocv3.ExternalProcessorClient, id int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.Process(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(reqHeaders(raw(":authority", "api.example.com", "x-id", strconv.Itoa(id), "x-payload", payload(id)))); err != nil {
		return fmt.Errorf("stream %d: send: %w", id, err)
	}
	resp, err := st.Recv()
	if err != nil {
		return fmt.Errorf("stream %d: %w", id, err)
	}
	if want := setResponse("x-answer", strconv.Itoa(id%4)); !proto.Equal(resp, want) {
		return fmt.Errorf("stream %d: answer %v, want %v", id, resp, want)
	}
	return nil
}
