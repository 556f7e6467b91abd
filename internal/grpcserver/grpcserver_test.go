package grpcserver

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testService has a unary and a streaming method that panic, and a
// streaming Echo whose handler reports when it starts and answers one
// message (or, with ignore set, waits for its context).
type testService struct {
	started chan struct{}
	ignore  bool
}

var testDesc = grpc.ServiceDesc{
	ServiceName: "splitter.test.Test",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Panic", Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		in := new(emptypb.Empty)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(context.Context, any) (any, error) { panic("injected unary") }
		if ic == nil {
			return h(ctx, in)
		}
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/splitter.test.Test/Panic"}, h)
	}}},
	Streams: []grpc.StreamDesc{
		{StreamName: "PanicStream", ServerStreams: true, ClientStreams: true, Handler: func(any, grpc.ServerStream) error { panic("injected stream") }},
		{StreamName: "Echo", ServerStreams: true, ClientStreams: true, Handler: func(srv any, ss grpc.ServerStream) error {
			s := srv.(*testService)
			close(s.started)
			if s.ignore {
				<-ss.Context().Done()
				return ss.Context().Err()
			}
			m := new(wrapperspb.StringValue)
			if err := ss.RecvMsg(m); err != nil {
				return err
			}
			return ss.SendMsg(m)
		}},
	},
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return lis
}

func TestResolveDefaultsAndOverrides(t *testing.T) {
	type view struct {
		MaxRecv, MaxSend          int
		MaxHeaderList, MaxStreams uint32
		MinTime, Time, Timeout    time.Duration
		PermitWithoutStream       bool
	}
	see := func(s settings) view {
		return view{s.maxRecv, s.maxSend, s.maxHeaderList, s.maxStreams,
			s.enforcement.MinTime, s.params.Time, s.params.Timeout, s.enforcement.PermitWithoutStream}
	}
	for _, c := range []struct {
		name string
		in   Options
		want view
	}{
		{"defaults", Options{}, view{1 << 20, 1 << 20, 256 << 10, 1 << 20, 5 * time.Second, 30 * time.Second, 10 * time.Second, true}},
		{"overrides", Options{MaxRecvMsgSize: 4 << 20, MaxSendMsgSize: 64 << 10, MaxHeaderListSize: 1 << 20, MaxConcurrentStreams: 100, KeepaliveMinTime: time.Second},
			view{4 << 20, 64 << 10, 1 << 20, 100, time.Second, 30 * time.Second, 10 * time.Second, true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if d := cmp.Diff(c.want, see(resolve(c.in))); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestHealthTransitions(t *testing.T) {
	h := NewHealth()
	check := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", ExtProcService, ExtAuthzService} {
			resp, err := h.Server().Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatalf("Check(%q): %v", svc, err)
			}
			if resp.GetStatus() != want {
				t.Errorf("Check(%q) = %v, want %v", svc, resp.GetStatus(), want)
			}
		}
	}
	check(healthpb.HealthCheckResponse_NOT_SERVING)
	h.SetServing()
	check(healthpb.HealthCheckResponse_SERVING)
	h.Drain()
	check(healthpb.HealthCheckResponse_NOT_SERVING)
	h.SetServing() // a reload racing with shutdown
	check(healthpb.HealthCheckResponse_NOT_SERVING)

	var none *Health
	none.SetServing()
	none.Drain()
}

func TestPanicInterceptors(t *testing.T) {
	var panics atomic.Int32
	srv := New(Options{OnPanic: func() { panics.Add(1) }})
	srv.RegisterService(&testDesc, &testService{started: make(chan struct{})})
	lis := listen(t)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		<-served
	}()
	conn := dial(t, lis.Addr().String())

	err := conn.Invoke(t.Context(), "/splitter.test.Test/Panic", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Internal {
		t.Errorf("unary: %v, want codes.Internal", err)
	}
	st, err := conn.NewStream(t.Context(), &testDesc.Streams[0], "/splitter.test.Test/PanicStream")
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	if err := st.RecvMsg(new(wrapperspb.StringValue)); status.Code(err) != codes.Internal {
		t.Errorf("stream: %v, want codes.Internal", err)
	}
	if n := panics.Load(); n != 2 {
		t.Errorf("OnPanic called %d times, want 2", n)
	}
	// The server survived: a health-free call still gets an answer.
	if err := conn.Invoke(t.Context(), "/splitter.test.Test/Panic", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.Internal {
		t.Errorf("after panics: %v, want codes.Internal again", err)
	}
}

func TestKeepaliveClientAccepted(t *testing.T) {
	// A client pinging every 10 s (grpc-go's minimum) while idle, as Envoy's
	// connection_keepalive may, is a valid peer for our policy.
	srv := New(Options{})
	h := NewHealth()
	h.Register(srv)
	h.SetServing()
	lis := listen(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, lis, srv, h, time.Second) }()
	conn := dial(t, lis.Addr().String(), grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, PermitWithoutStream: true}))
	resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: ExtProcService})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over keepalive client: %v %v", resp, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestIdlePingsTolerated speaks raw HTTP/2: pings on a connection with no
// stream must not earn GOAWAY too_many_pings (PermitWithoutStream). The
// minimum interval is shrunk so back-to-back pings are all legal and only
// the "without stream" rule is under test.
func TestIdlePingsTolerated(t *testing.T) {
	srv := New(Options{KeepaliveMinTime: time.Nanosecond})
	lis := listen(t)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		<-served
	}()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// grpc-go sends GOAWAY after more than two strikes; send plenty.
	const pings = 6
	for i := range pings {
		if err := fr.WritePing(false, [8]byte{byte(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	acks := 0
	for acks < pings {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame after %d acks: %v", acks, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.PingFrame:
			if f.IsAck() && f.Data[0] != 0 {
				acks++
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v %q after %d acks", f.ErrCode, f.DebugData(), acks)
		}
	}
}

func TestServeDrains(t *testing.T) {
	t.Run("open stream completes", func(t *testing.T) {
		svc := &testService{started: make(chan struct{})}
		srv := New(Options{})
		srv.RegisterService(&testDesc, svc)
		h := NewHealth()
		h.Register(srv)
		h.SetServing()
		lis := listen(t)
		addr := lis.Addr().String()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- Serve(ctx, lis, srv, h, time.Minute) }()

		conn := dial(t, addr)
		st, err := conn.NewStream(t.Context(), &testDesc.Streams[1], "/splitter.test.Test/Echo")
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if err := st.SendMsg(wrapperspb.String("hi")); err != nil {
			t.Fatalf("send: %v", err)
		}
		<-svc.started
		cancel()
		// Shutdown has begun once the listener is gone; the stream is still open.
		waitFor(t, func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err != nil
		})
		if resp, _ := h.Server().Check(t.Context(), &healthpb.HealthCheckRequest{}); resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health during drain = %v, want NOT_SERVING", resp.GetStatus())
		}
		got := new(wrapperspb.StringValue)
		if err := st.RecvMsg(got); err != nil || got.GetValue() != "hi" {
			t.Fatalf("stream during drain: %v %q, want the echo", err, got.GetValue())
		}
		if err := <-done; err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	})
	t.Run("deadline forces stop", func(t *testing.T) {
		svc := &testService{started: make(chan struct{}), ignore: true}
		srv := New(Options{})
		srv.RegisterService(&testDesc, svc)
		lis := listen(t)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- Serve(ctx, lis, srv, nil, 50*time.Millisecond) }()
		conn := dial(t, lis.Addr().String())
		st, err := conn.NewStream(t.Context(), &testDesc.Streams[1], "/splitter.test.Test/Echo")
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if err := st.SendMsg(wrapperspb.String("hi")); err != nil {
			t.Fatalf("send: %v", err)
		}
		<-svc.started
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
		if err := st.RecvMsg(new(wrapperspb.StringValue)); err == nil {
			t.Error("stream survived Stop")
		}
	})
	t.Run("listener failure is returned", func(t *testing.T) {
		lis := listen(t)
		lis.Close()
		err := Serve(t.Context(), lis, New(Options{}), NewHealth(), time.Second)
		if err == nil || errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("Serve on a closed listener = %v, want the accept error", err)
		}
	})
}

// waitFor polls cond until it holds or the test's deadline nears.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := t.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met before the deadline")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countingCodec wraps the proto codec and counts its use.
type countingCodec struct {
	encoding.CodecV2
	marshal, unmarshal atomic.Int64
}

func (c *countingCodec) Marshal(v any) (mem.BufferSlice, error) {
	c.marshal.Add(1)
	return c.CodecV2.Marshal(v)
}

func (c *countingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c.unmarshal.Add(1)
	return c.CodecV2.Unmarshal(data, v)
}

// Every service on the server goes through the configured codec (by
// default the fast one).
func TestCodec(t *testing.T) {
	tests := []struct {
		name  string
		codec *countingCodec // nil: the default
	}{
		{name: "default codec"},
		{name: "custom codec", codec: &countingCodec{CodecV2: encoding.GetCodecV2("proto")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts Options
			if tc.codec != nil {
				opts.Codec = tc.codec
			}
			srv := New(opts)
			srv.RegisterService(&testDesc, &testService{started: make(chan struct{})})
			h := NewHealth()
			h.Register(srv)
			h.SetServing()
			lis := listen(t)
			served := make(chan error, 1)
			go func() { served <- srv.Serve(lis) }()
			t.Cleanup(func() {
				srv.Stop()
				if err := <-served; err != nil {
					t.Errorf("Serve: %v", err)
				}
			})
			conn := dial(t, lis.Addr().String())
			resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("health: %v, %v", resp, err)
			}
			st, err := conn.NewStream(t.Context(), &testDesc.Streams[1], "/splitter.test.Test/Echo")
			if err != nil {
				t.Fatal(err)
			}
			if err := st.SendMsg(wrapperspb.String("hello")); err != nil {
				t.Fatal(err)
			}
			got := new(wrapperspb.StringValue)
			if err := st.RecvMsg(got); err != nil || got.GetValue() != "hello" {
				t.Fatalf("echo: %q, %v", got.GetValue(), err)
			}
			if tc.codec != nil && (tc.codec.marshal.Load() < 2 || tc.codec.unmarshal.Load() < 2) {
				t.Errorf("custom codec used for %d marshals and %d unmarshals, want 2 each", tc.codec.marshal.Load(), tc.codec.unmarshal.Load())
			}
		})
	}
}
