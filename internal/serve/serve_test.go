package serve_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trafficsplit/splitter/internal/serve"
	"github.com/trafficsplit/splitter/internal/settings"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func routing(canary int) string {
	return fmt.Sprintf(`services:
  - name: api
    hosts: ["*"]
    weights: {v1: %d, v2: %d}
    rules:
      - name: beta
        when: [{header: x-beta, exact: "true"}]
        version: v2
`, 100-canary, canary)
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type running struct {
	addrs  serve.Addrs
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
	path   string
}

// settings returns loopback, port-0 settings. The watcher's debounce and
// the poll are long so that only an explicit reload (SIGHUP, POST) can
// change the configuration during a test.
func testSettings(path string) settings.Settings {
	s := settings.Defaults()
	s.ConfigPath = path
	s.GRPCAddr = "127.0.0.1:0"
	s.AdminAddr = "127.0.0.1:0"
	s.ReloadDebounce = time.Hour
	s.ReloadPollInterval = time.Hour
	s.DrainDelay = 0 // TestDrainDelay sets its own
	s.ShutdownTimeout = 30 * time.Second
	return s
}

func startServe(t *testing.T, s settings.Settings, opts ...serve.Option) *running {
	t.Helper()
	r := &running{done: make(chan error, 1), logs: &syncBuffer{}, path: s.ConfigPath}
	ready := make(chan serve.Addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	logger := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append(opts, serve.WithOnReady(func(a serve.Addrs) { ready <- a }))
	go func() { r.done <- serve.Run(ctx, s, logger, opts...) }()
	select {
	case r.addrs = <-ready:
	case err := <-r.done:
		cancel()
		t.Fatalf("Run returned before serving: %v\n%s", err, r.logs.String())
	}
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// stop cancels Run and expects nil; the deadline only guards against a hang.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		r.done <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return after cancel\n%s", r.logs.String())
	}
}

func (r *running) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	return r.send(t, http.MethodGet, path, "")
}

func (r *running) servingSHA(t *testing.T) string {
	t.Helper()
	code, body := r.get(t, "/v1/services")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/services = %d %s", code, body)
	}
	var v struct {
		Config struct {
			SHA256 string `json:"sha256"`
		} `json:"config"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	return v.Config.SHA256
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func requestHeaders(headers map[string]string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	for k, v := range headers {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: true}}}
}

// routeOf returns the route header set by a request_headers answer.
func routeOf(t *testing.T, resp *extprocv3.ProcessingResponse) string {
	t.Helper()
	rh := resp.GetRequestHeaders()
	if rh == nil {
		t.Fatalf("answer is not a request_headers response: %v", resp)
	}
	for _, h := range rh.GetResponse().GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == "x-route-version" {
			return string(h.GetHeader().GetRawValue())
		}
	}
	t.Fatalf("no x-route-version in %v", resp)
	return ""
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "splitter.yaml")
	writeFile(t, path, content)
	return path
}

func TestServe(t *testing.T) {
	path := newConfig(t, routing(20))
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	r := startServe(t, testSettings(path), serve.WithReadyFile(readyFile))

	t.Run("logs the bound addresses", func(t *testing.T) {
		for _, want := range []string{"grpc listening on " + r.addrs.GRPC, "admin listening on " + r.addrs.Admin} {
			if !strings.Contains(r.logs.String(), want) {
				t.Errorf("log lacks %q", want)
			}
		}
	})
	t.Run("ready file", func(t *testing.T) {
		b, err := os.ReadFile(readyFile)
		if err != nil {
			t.Fatal(err)
		}
		var got serve.Addrs
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("ready file %q: %v", b, err)
		}
		if got != r.addrs {
			t.Errorf("ready file = %+v, want %+v", got, r.addrs)
		}
	})
	t.Run("readyz", func(t *testing.T) {
		if code, body := r.get(t, "/readyz"); code != http.StatusOK {
			t.Errorf("GET /readyz = %d %s", code, body)
		}
	})
	t.Run("grpc health", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(dial(t, r.addrs.GRPC)).Check(t.Context(),
			&healthpb.HealthCheckRequest{Service: "envoy.service.ext_proc.v3.ExternalProcessor"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health = %v", resp.GetStatus())
		}
	})
	t.Run("ext_proc stream", func(t *testing.T) {
		stream, err := extprocv3.NewExternalProcessorClient(dial(t, r.addrs.GRPC)).Process(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(requestHeaders(map[string]string{":authority": "api.example.com", ":path": "/", "x-beta": "true"})); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := routeOf(t, resp); got != "v2" {
			t.Errorf("route = %q, want v2 (beta rule)", got)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		code, body := r.get(t, "/metrics")
		if code != http.StatusOK || !strings.Contains(string(body), sha(routing(20))) {
			t.Errorf("GET /metrics = %d, config sha missing:\n%.2000s", code, body)
		}
	})
	t.Run("SIGHUP reloads", func(t *testing.T) {
		writeFile(t, path, routing(30))
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the SIGHUP reload", func() bool { return r.servingSHA(t) == sha(routing(30)) })
	})
	t.Run("POST /v1/reload", func(t *testing.T) {
		writeFile(t, path, routing(40))
		resp, err := http.Post("http://"+r.addrs.Admin+"/v1/reload", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("POST /v1/reload = %d", resp.StatusCode)
		}
		if got := r.servingSHA(t); got != sha(routing(40)) {
			t.Errorf("serving sha %s after POST /v1/reload, want %s", got, sha(routing(40)))
		}
	})
	t.Run("an invalid reload keeps serving", func(t *testing.T) {
		writeFile(t, path, "services: []\n")
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reload error", func() bool {
			_, body := r.get(t, "/v1/services")
			return strings.Contains(string(body), `"last_reload_error":"`)
		})
		if got := r.servingSHA(t); got != sha(routing(40)) {
			t.Errorf("serving sha changed to %s after an invalid file", got)
		}
	})

	r.stop(t)
	if _, err := os.Stat(readyFile); !os.IsNotExist(err) {
		t.Errorf("ready file left behind after stop: %v", err)
	}
	if !strings.Contains(r.logs.String(), "stopped") {
		t.Errorf("no clean stop in the log:\n%s", r.logs.String())
	}
}

// While a stream is open, cancelling Run makes the process unready at once
// and keeps the stream alive until it ends by itself.
func TestDrainOrder(t *testing.T) {
	r := startServe(t, testSettings(newConfig(t, routing(20))))
	cc := dial(t, r.addrs.GRPC)
	stream, err := extprocv3.NewExternalProcessorClient(cc).Process(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(requestHeaders(map[string]string{":authority": "a", ":path": "/"})); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	// Once draining, new RPCs are refused, so watch health from before.
	wctx, stopWatch := context.WithCancel(t.Context())
	defer stopWatch()
	watch, err := healthpb.NewHealthClient(cc).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before the drain: %v, %v", st, err)
	}

	r.cancel()
	waitFor(t, "/readyz to answer 503", func() bool {
		code, _ := r.get(t, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if st, err := watch.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health during the drain: %v, %v", st, err)
	}
	stopWatch()
	// The open stream still works during the drain.
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{}}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetResponseHeaders() == nil {
		t.Fatalf("during drain: %v, %v", resp, err)
	}
	select {
	case err := <-r.done:
		t.Fatalf("Run returned (%v) while a stream was open", err)
	default:
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		r.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the last stream ended")
	}
}

func TestBuiltinDefault(t *testing.T) {
	r := startServe(t, testSettings(""))
	if !strings.Contains(r.logs.String(), "built-in default") || !strings.Contains(r.logs.String(), "--config") {
		t.Errorf("no warning naming --config:\n%s", r.logs.String())
	}
	resp, err := http.Post("http://"+r.addrs.Admin+"/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("POST /v1/reload without a file = 200")
	}
	r.stop(t)
}

func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, strings.Replace(routing(20), "v2: 20", "v2: 25", 1))
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, routing(20))
	tests := []struct {
		name        string
		mod         func(*settings.Settings)
		occupyAdmin bool // admin_addr is a port another server holds
		want        []string
	}{
		{name: "invalid config", mod: func(s *settings.Settings) { s.ConfigPath = bad }, want: []string{bad}},
		{name: "missing config", mod: func(s *settings.Settings) { s.ConfigPath = filepath.Join(dir, "none.yaml") }, want: []string{"none.yaml"}},
		{
			name: "non-loopback admin without token",
			mod:  func(s *settings.Settings) { s.ConfigPath = good; s.AdminAddr = "0.0.0.0:0" },
			want: []string{"admin_addr", "token"},
		},
		{
			name:        "port in use",
			mod:         func(s *settings.Settings) { s.ConfigPath = good },
			occupyAdmin: true,
			want:        []string{"admin_addr"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testSettings("")
			tc.mod(&s)
			if tc.occupyAdmin {
				s.AdminAddr = startServe(t, testSettings(good)).addrs.GRPC
			}
			err := serve.Run(t.Context(), s, nil)
			if err == nil {
				t.Fatal("Run succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The GC target and the pprof routes are process settings: both show at
// startup (log, gauge, admin routes), and the GC target is restored when
// Run returns.
func TestProcessTuning(t *testing.T) {
	tests := []struct {
		name       string
		tune       func(*settings.Settings)
		wantGC     string
		wantSource string
		wantPprof  int
	}{
		{name: "defaults", tune: func(*settings.Settings) {}, wantGC: "400", wantSource: "default", wantPprof: http.StatusNotFound},
		{
			name: "explicit setting and pprof",
			tune: func(s *settings.Settings) {
				s.GCPercent, s.GCPercentSource, s.Pprof = 250, settings.GCSourceSetting, true
			},
			wantGC: "250", wantSource: "gc_percent", wantPprof: http.StatusOK,
		},
		{
			name:   "collector off",
			tune:   func(s *settings.Settings) { s.GCPercent, s.GCPercentSource = -1, settings.GCSourceGOGC },
			wantGC: "-1", wantSource: "GOGC", wantPprof: http.StatusNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := debug.SetGCPercent(123)
			t.Cleanup(func() { debug.SetGCPercent(before) })
			s := testSettings(newConfig(t, routing(20)))
			tc.tune(&s)
			r := startServe(t, s)
			want := fmt.Sprintf("gc_percent=%s source=%s", tc.wantGC, tc.wantSource)
			if !strings.Contains(r.logs.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, r.logs.String())
			}
			if _, body := r.get(t, "/metrics"); !strings.Contains(string(body), "\nsplitter_gc_percent "+tc.wantGC+"\n") {
				t.Errorf("/metrics lacks splitter_gc_percent %s", tc.wantGC)
			}
			if code, body := r.get(t, "/debug/pprof/"); code != tc.wantPprof {
				t.Errorf("GET /debug/pprof/ = %d, want %d: %.200s", code, tc.wantPprof, body)
			}
			r.stop(t)
			if got := debug.SetGCPercent(before); got != 123 {
				t.Errorf("GC percent after Run = %d, want the 123 from before", got)
			}
		})
	}
}

// TestConsoleStreamsEndAtDrain: an open console event stream is closed
// (with a "bye" event) as soon as the drain starts, before the drain
// delay is over, so it never holds the admin server's shutdown up; new
// streams are refused meanwhile, and Run then returns cleanly.
func TestConsoleStreamsEndAtDrain(t *testing.T) {
	s := testSettings(newConfig(t, routing(20)))
	s.DrainDelay = 5 * time.Second
	r := startServe(t, s)
	resp, err := http.Get("http://" + r.addrs.Admin + "/v1/console/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	body := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		body <- string(b)
	}()

	r.cancel()
	select {
	case got := <-body:
		if !strings.Contains(got, "event: state\n") || !strings.HasSuffix(got, "event: bye\ndata: {\"reason\":\"draining\"}\n\n") {
			t.Errorf("stream %q: want the state, then a bye", got)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("the event stream was still open 4s into the drain")
	}
	select {
	case err := <-r.done:
		t.Fatalf("Run returned (%v) before the drain delay was over; the check above proves nothing", err)
	default:
	}
	if code, _ := r.get(t, "/v1/console/events"); code != http.StatusServiceUnavailable {
		t.Errorf("a new stream during the drain: %d, want 503", code)
	}
	r.stop(t)
	if strings.Contains(r.logs.String(), "did not stop in time") {
		t.Errorf("the admin server's shutdown was held up:\n%s", r.logs.String())
	}
}
