package extproc

import (
	"context"
	"net"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/trafficsplit/splitter/internal/envoypb"
	"github.com/trafficsplit/splitter/internal/grpcserver"
	"github.com/trafficsplit/splitter/split"
)

// BenchmarkProcessRequestHeaders runs the whole handler for one Envoy-like
// stream (request_headers, then the stream ends) against a fake stream, so
// it measures the adapter and the engine without grpc.
func BenchmarkProcessRequestHeaders(b *testing.B) {
	for _, c := range []struct {
		name string
		kv   []string
	}{
		{"weighted", envoyHeaders()},
		{"header_rule", envoyHeaders("x-beta", "true")},
		{"sticky_with_experiment", envoyHeaders("x-user-id", "user-123")},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := newTestServer(fixedSource{defaultTable(b)}, nil)
			st := newFakeStream(b.Context(), step{req: reqHeaders(raw(c.kv...))})
			st.keep = false
			b.ReportAllocs()
			for b.Loop() {
				st.next = 0
				if err := s.Process(st); err != nil {
					b.Fatal(err)
				}
			}
			if st.nsent == 0 {
				b.Fatal("no response sent")
			}
		})
	}
}

// BenchmarkFromHeaderMap measures the HeaderMap -> split.Request conversion
// alone, for a typical Envoy header list.
func BenchmarkFromHeaderMap(b *testing.B) {
	hm := raw(envoyHeaders("x-user-id", "user-123", "cookie", "session=abc; theme=dark")...)
	req := split.Request{Headers: make([]split.Header, 0, 32)}
	b.ReportAllocs()
	for b.Loop() {
		envoypb.FromHeaders(&req, hm.GetHeaders())
	}
	if req.Authority != "api.example.com" {
		b.Fatalf("authority = %q", req.Authority)
	}
}

// BenchmarkGRPCStream is one Envoy-like stream end to end over an
// in-memory connection (client and server in this process, so allocs/op
// counts both sides).
func BenchmarkGRPCStream(b *testing.B) {
	s := newTestServer(fixedSource{defaultTable(b)}, nil)
	lis := bufconn.Listen(1 << 20)
	srv := grpcserver.New(grpcserver.Options{})
	extprocv3.RegisterExternalProcessorServer(srv, s)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		conn.Close()
		srv.Stop()
		<-served
	}()
	client := extprocv3.NewExternalProcessorClient(conn)
	hm := raw(envoyHeaders("x-user-id", "user-123")...)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := envoyCall(b.Context(), client, hm); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkProcessAssigned is an Envoy-like stream of a service that
// assigns keys: "keyed" carries x-user-id (one message, as without
// assign); "assigned" carries none, so its reply asks for the response
// headers and the stream carries them too (two messages), answered with the
// fresh key's Set-Cookie. The ratio is the adapter's cost of an assigned
// request; the key (crypto/rand) and the cookie are built per request.
func BenchmarkProcessAssigned(b *testing.B) {
	cfg := split.Default()
	cfg.Services[0].Sticky.Assign = &split.Assign{Cookie: "splitter-id", MaxAge: split.Duration(split.DefaultAssignMaxAge)}
	tab, err := split.Compile(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		steps []step
		sent  int
	}{
		{"keyed", []step{{req: reqHeaders(raw(envoyHeaders("x-user-id", "user-123")...))}}, 1},
		{"assigned", []step{{req: reqHeaders(raw(envoyHeaders()...))}, {req: respHeaders(":status", "200", "content-type", "application/json")}}, 2},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := newTestServer(fixedSource{tab}, nil)
			st := newFakeStream(b.Context(), c.steps...)
			st.keep = false
			b.ReportAllocs()
			for b.Loop() {
				st.next = 0
				if err := s.Process(st); err != nil {
					b.Fatal(err)
				}
			}
			if st.nsent != c.sent*b.N {
				b.Fatalf("%d answers for %d streams, want %d each", st.nsent, b.N, c.sent)
			}
		})
	}
}
