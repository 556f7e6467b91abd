package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/grpcserver"
	"github.com/trafficsplit/splitter/split"
)

// atomicSource is how the sidecar serves tables: swapped atomically by
// reloads while streams read it.
type atomicSource struct{ p atomic.Pointer[split.Table] }

func (s *atomicSource) Table() *split.Table { return s.p.Load() }

// startServer runs s behind the production gRPC server on an in-memory
// listener and returns a client; everything stops when the test ends.
func startServer(t *testing.T, s *Server) extprocv3.ExternalProcessorClient {
	t.Helper()
	c, _ := startServerStop(t, s)
	return c
}

// startServerStop also returns an idempotent stop; once it returns every
// handler has returned (WaitForHandlers), so counters are final.
func startServerStop(t *testing.T, s *Server) (extprocv3.ExternalProcessorClient, func()) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpcserver.New(grpcserver.Options{})
	extprocv3.RegisterExternalProcessorServer(srv, s)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			conn.Close()
			srv.Stop()
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return extprocv3.NewExternalProcessorClient(conn), stop
}

// envoyCall drives one HTTP request as Envoy 1.32+ does: a new stream, one
// request_headers message, wait for the answer, half-close, then reset.
func envoyCall(ctx context.Context, c extprocv3.ExternalProcessorClient, hm *corev3.HeaderMap) (*extprocv3.ProcessingResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the reset
	st, err := c.Process(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if err := st.Send(reqHeaders(hm)); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, fmt.Errorf("recv: %w", err)
	}
	if err := st.CloseSend(); err != nil {
		return nil, fmt.Errorf("close send: %w", err)
	}
	return resp, nil
}

func TestGRPCEnvoyLikeStreams(t *testing.T) {
	for _, c := range []struct {
		name  string
		build func(kv ...string) *corev3.HeaderMap
	}{
		{"raw_value (Envoy 1.27+)", raw},
		{"value (Envoy 1.26 and older)", val},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder()
			tab := defaultTable(t)
			client, stop := startServerStop(t, newTestServer(fixedSource{tab}, rec))
			const n = 20
			for i := range n {
				hm := c.build(envoyHeaders("x-beta", "true", "x-user-id", fmt.Sprintf("user-%d", i))...)
				resp, err := envoyCall(t.Context(), client, hm)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				want := wantFor(reference(tab, hm))
				if d := diffResponses([]*extprocv3.ProcessingResponse{want}, []*extprocv3.ProcessingResponse{resp}); d != "" {
					t.Fatalf("request %d (-want +got):\n%s", i, d)
				}
			}
			stop()
			results, _, decided, started, _ := rec.snapshot()
			if started != n || decided != n || results[adapter.ResultOK] != n {
				t.Errorf("started=%d decided=%d results=%v, want %d ok streams", started, decided, results, n)
			}
		})
	}
}

func TestGRPCHalfCloseEndsStream(t *testing.T) {
	// Envoy's opt-in graceful close: half-close and wait for the server to
	// end the RPC, which must then return promptly with OK.
	client := startServer(t, newTestServer(fixedSource{defaultTable(t)}, nil))
	st, err := client.Process(t.Context())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := st.Send(reqHeaders(raw(envoyHeaders()...))); err != nil {
		t.Fatalf("send: %v", err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("recv: %v", err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatalf("close send: %v", err)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after half-close Recv = %v, want io.EOF (server ended with OK)", err)
	}
}

func TestGRPCConcurrentStreams(t *testing.T) {
	tab := defaultTable(t)
	rec := newRecorder()
	client := startServer(t, newTestServer(fixedSource{tab}, rec))
	const workers, perWorker = 32, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				var hm *corev3.HeaderMap
				switch i % 3 {
				case 0:
					hm = raw(envoyHeaders("x-user-id", fmt.Sprintf("u%d-%d", w, i))...)
				case 1:
					hm = raw(envoyHeaders("x-beta", "true")...)
				default:
					hm = raw(envoyHeaders()...)
				}
				resp, err := envoyCall(t.Context(), client, hm)
				if err != nil {
					errs <- err
					return
				}
				if err := checkAnswer(tab, hm, i%3 == 2, resp); err != nil {
					errs <- fmt.Errorf("worker %d request %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// checkAnswer verifies resp for hm. Keyed and rule-matched requests are
// deterministic and compared with the reference; weighted ones depend on
// the shared counter, so they are checked for shape only.
func checkAnswer(tab *split.Table, hm *corev3.HeaderMap, weighted bool, resp *extprocv3.ProcessingResponse) error {
	if !weighted {
		want := wantFor(reference(tab, hm))
		if !proto.Equal(want, resp) {
			return fmt.Errorf("got %v, want %v", resp, want)
		}
		return nil
	}
	v1 := wantSet(hv{routeHdr, "v1"}, hv{reasonHdr, "weighted_routing"})
	v2 := wantSet(hv{routeHdr, "v2"}, hv{reasonHdr, "weighted_routing"})
	if !proto.Equal(v1, resp) && !proto.Equal(v2, resp) {
		return fmt.Errorf("weighted answer %v is neither v1 nor v2", resp)
	}
	return nil
}

func TestGRPCTableSwapMidTraffic(t *testing.T) {
	a := defaultTable(t)
	cfgB := split.Default()
	// B differs in weights and in the experiment's header, so an answer
	// mixing the two snapshots cannot equal either table's decision.
	cfgB.Services[0].Weights = split.Weights{{Version: "v1", BasisPoints: 1000}, {Version: "v2", BasisPoints: 9000}}
	cfgB.Experiments[0].Header = "x-variant-b"
	b, err := split.Compile(cfgB)
	if err != nil {
		t.Fatalf("compile B: %v", err)
	}
	src := &atomicSource{}
	src.p.Store(a)
	client := startServer(t, newTestServer(src, nil))

	stop := make(chan struct{})
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				src.p.Store(b)
			} else {
				src.p.Store(a)
			}
		}
	}()
	const workers, perWorker = 8, 60
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				hm := raw(envoyHeaders("x-user-id", fmt.Sprintf("swap-%d-%d", w, i))...)
				resp, err := envoyCall(t.Context(), client, hm)
				if err != nil {
					errs <- err
					return
				}
				wa, wb := wantFor(reference(a, hm)), wantFor(reference(b, hm))
				if !proto.Equal(resp, wa) && !proto.Equal(resp, wb) {
					errs <- fmt.Errorf("worker %d request %d: %v matches neither snapshot (A %v, B %v)", w, i, resp, wa, wb)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-swapped
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
