package reliability

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/extproc"
	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/grpcserver"
	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/internal/reload"
	"github.com/trafficsplit/splitter/internal/store"
)

var (
	soakRequests = flag.Int("soak.requests", defaultSoakRequests, "ext_proc requests the churn soak sends")
	soakDuration = flag.Duration("soak.duration", 0, "run the churn soak for this long instead of -soak.requests")
)

const (
	soakConns       = 4
	soakWorkers     = 64
	soakWriteEvery  = 20 * time.Millisecond
	soakCanaryEvery = 50 * time.Millisecond
)

// soakValid is valid configuration k. Each routes pin.example.com to its
// own marker version c<k>, so every answer names the file it came from;
// api.example.com is a sticky two-version service the admin API changes.
func soakValid(k int) []byte {
	return fmt.Appendf(nil, `services:
  - name: pin
    hosts: ["pin.example.com"]
    weights: {c%d: 100}
  - name: api
    hosts: ["api.example.com"]
    stable: v1
    weights: {v1: %d, v2: %d}
    sticky: {header: x-user-id}
`, k, 100-10*(k+1), 10*(k+1))
}

// soakInvalid are refused files. Each names the version "bad", which must
// never be answered, and each is invalid from its first line on, so that
// a reader catching it half-written sees an invalid file too.
func soakInvalid() [][]byte {
	tail := `services:
  - name: pin
    hosts: ["pin.example.com"]
    weights: {bad: 100}
  - name: api
    hosts: ["api.example.com"]
    weights: {v1: 50, bad: 50}
`
	return [][]byte{
		[]byte("bogus_key: bad\n" + tail),
		[]byte("services: [\n" + tail),
		[]byte("- bad\n" + tail),
		[]byte("services:\n  - name: pin\n    hosts: [\"pin.example.com\"]\n    weights: {bad: 110}\n"),
	}
}

// reloadCounter counts reload results and forwards them to the metrics.
type reloadCounter struct {
	next             reload.Metrics
	ok, failed, same atomic.Int64
}

func (c *reloadCounter) ReloadResult(result string) {
	switch result {
	case reload.ResultSuccess:
		c.ok.Add(1)
	case reload.ResultError:
		c.failed.Add(1)
	default:
		c.same.Add(1)
	}
	c.next.ReloadResult(result)
}

// soakStack is the sidecar assembled as serve.Run assembles it, with a hook
// on every snapshot the store publishes.
type soakStack struct {
	path     string
	grpcAddr string
	admin    string
	reloads  *reloadCounter
	stop     func()

	mu   sync.Mutex
	shas []string // every published snapshot's file hash, in order
}

func startSoakStack(t *testing.T, initial []byte) *soakStack {
	t.Helper()
	s := &soakStack{path: filepath.Join(t.TempDir(), "config.yaml")}
	if err := os.WriteFile(s.path, initial, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	s.reloads = &reloadCounter{next: m}
	st, err := store.New(store.Options{OnSwap: func(snap *store.Snapshot) {
		m.ObserveSnapshot(snap)
		s.mu.Lock()
		s.shas = append(s.shas, snap.SHA256)
		s.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := config.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApplyFile(l.Config, l.SHA256, s.path); err != nil {
		t.Fatal(err)
	}
	rl := reload.New(reload.Options{
		Path: s.path, Store: st, Metrics: s.reloads,
		// A short quiet period so that a write every 20 ms is reloaded
		// each time rather than debounced away.
		Debounce:     2 * time.Millisecond,
		PollInterval: 250 * time.Millisecond,
	})
	gs := grpcserver.New(grpcserver.Options{OnPanic: func() { m.Panic("") }})
	extprocv3.RegisterExternalProcessorServer(gs, extproc.New(st, extproc.Options{Recorder: m}))
	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	alis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := admin.NewServer(alis.Addr().String(), admin.New(admin.Options{Store: st, Recorder: m}))
	s.grpcAddr, s.admin = glis.Addr().String(), alis.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = grpcserver.Serve(ctx, glis, gs, nil, 5*time.Second) })
	wg.Go(func() { _ = hs.Serve(alis) })
	wg.Go(func() { _ = rl.Run(ctx) })
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			hs.Shutdown(sctx)
			wg.Wait()
		})
	}
	t.Cleanup(s.stop)
	return s
}

func (s *soakStack) published() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.shas)
}

// writeAtomic replaces path through a rename, as deploy tools and
// ConfigMap updates do.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func hexSHA(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// soakResult tallies what the workers saw.
type soakResult struct {
	requests, done, streamErrs atomic.Int64
	mu                         sync.Mutex
	bad                        []string // answers no valid configuration can give
	firstErr                   error
}

func (r *soakResult) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) < 10 {
		r.bad = append(r.bad, fmt.Sprintf(format, args...))
	}
}

// TestChurnSoak sends ext_proc requests over many streams while the file
// flips between valid and invalid contents every 20 ms and the admin API
// changes the canary every 50 ms: no stream fails, every answer is one a
// valid configuration gives, no invalid file is ever published, memory is
// flat and nothing leaks.
func TestChurnSoak(t *testing.T) {
	valid := [][]byte{soakValid(0), soakValid(1), soakValid(2), soakValid(3)}
	validSHA := map[string]bool{}
	markers := map[string]bool{}
	for k, v := range valid {
		validSHA[hexSHA(v)] = true
		markers[fmt.Sprintf("c%d", k)] = true
	}
	s := startSoakStack(t, valid[0])

	conns := make([]*grpc.ClientConn, soakConns)
	for i := range conns {
		cc, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = cc
	}
	closeConns := func() {
		for _, cc := range conns {
			cc.Close()
		}
	}
	defer closeConns()

	total := int64(*soakRequests)
	var deadline time.Time
	if *soakDuration > 0 {
		total = 1 << 62
		deadline = time.Now().Add(*soakDuration)
	}
	warmAt := min(total/10, 20000)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var res soakResult
	var churn, workers sync.WaitGroup

	// Churn: the file and the admin API, until the workers are done.
	var writes, canaryOK, canaryOther atomic.Int64
	churn.Go(func() {
		invalid := soakInvalid()
		tick := time.NewTicker(soakWriteEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var err error
			if i%2 == 0 {
				err = writeAtomic(s.path, valid[(i/2)%len(valid)])
			} else {
				// In place (truncate, then write): the reloader may catch
				// the file empty, which must be refused too.
				err = os.WriteFile(s.path, invalid[(i/2)%len(invalid)], 0o644)
			}
			if err != nil {
				res.fail("write: %v", err)
				return
			}
			writes.Add(1)
		}
	})
	churn.Go(func() {
		client := &http.Client{Timeout: 10 * time.Second}
		defer client.CloseIdleConnections()
		tick := time.NewTicker(soakCanaryEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pct := []int{5, 15, 50, 95}[i%4]
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+s.admin+"/v1/services/api/canary",
				strings.NewReader(fmt.Sprintf(`{"percentage": %d}`, pct)))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					res.fail("admin PUT: %v", err)
				}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				canaryOK.Add(1)
			} else {
				canaryOther.Add(1)
			}
		}
	})

	var warmHeap uint64
	var warmGoroutines int
	warmed := make(chan struct{})
	start := time.Now()
	for w := range soakWorkers {
		workers.Go(func() {
			client := extprocv3.NewExternalProcessorClient(conns[w%soakConns])
			pin := requestHeaders(map[string]string{":authority": "pin.example.com", ":path": "/"})
			for i := 0; ; i++ {
				n := res.requests.Add(1)
				if n > total || (!deadline.IsZero() && time.Now().After(deadline)) {
					return
				}
				if n == warmAt {
					close(warmed)
				}
				req, allowed := pin, markers
				if i%2 == 1 {
					req = requestHeaders(map[string]string{
						":authority": "api.example.com", ":path": "/", "x-user-id": fmt.Sprintf("u%d-%d", w, i%1000),
					})
					allowed = map[string]bool{"v1": true, "v2": true}
				}
				version, err := oneStream(ctx, client, req)
				res.done.Add(1)
				if err != nil {
					res.streamErrs.Add(1)
					res.mu.Lock()
					if res.firstErr == nil {
						res.firstErr = err
					}
					res.mu.Unlock()
					continue
				}
				if !allowed[version] {
					res.fail("request %d answered %q", n, version)
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() {
		workers.Wait()
		close(finished)
	}()
	if warmAt > 0 {
		select {
		case <-warmed:
			warmHeap, warmGoroutines = heapAfterGC()
		case <-finished: // a -soak.duration too short to warm up
		}
	}
	<-finished
	elapsed := time.Since(start)
	cancel()
	churn.Wait()
	sent := res.done.Load()

	// Resource figures while the server is still up but idle.
	endHeap, endGoroutines := heapAfterGC()

	published := s.published()
	var foreign []string
	for _, sha := range published {
		if !validSHA[sha] {
			foreign = append(foreign, sha)
		}
	}
	s.stop()
	closeConns()

	t.Logf("soak: %d requests in %v (%.0f/s) over %d streams/%d conns, GOMAXPROCS=%d",
		sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), soakWorkers, soakConns, runtime.GOMAXPROCS(0))
	t.Logf("soak: %d file writes, reloads ok=%d error=%d unchanged=%d, %d snapshots published; admin canary PUTs ok=%d other=%d",
		writes.Load(), s.reloads.ok.Load(), s.reloads.failed.Load(), s.reloads.same.Load(), len(published), canaryOK.Load(), canaryOther.Load())
	t.Logf("soak: heap after GC %.1f MiB at warm-up (request %d), %.1f MiB at the end; goroutines %d -> %d",
		mib(warmHeap), warmAt, mib(endHeap), warmGoroutines, endGoroutines)

	if n := res.streamErrs.Load(); n > 0 {
		t.Errorf("%d stream errors, first: %v", n, res.firstErr)
	}
	if len(res.bad) > 0 {
		t.Errorf("answers no valid configuration gives: %v", res.bad)
	}
	if len(foreign) > 0 {
		t.Errorf("%d published snapshots are not from a valid file: %v", len(foreign), foreign)
	}
	if s.reloads.ok.Load() == 0 || s.reloads.failed.Load() == 0 || canaryOK.Load() == 0 {
		t.Errorf("the churn did not exercise both reload outcomes and the admin API")
	}
	// Memory must not grow with the number of requests: allow the
	// warm-up heap half again plus a fixed 8 MiB for caches and buffers.
	if warmHeap > 0 && endHeap > warmHeap+warmHeap/2+8<<20 {
		t.Errorf("heap grew from %.1f MiB to %.1f MiB", mib(warmHeap), mib(endHeap))
	}
	goleak.VerifyNone(t)
}

// oneStream runs one request the way Envoy does: request_headers, the
// answer, then the end of the stream.
func oneStream(ctx context.Context, c extprocv3.ExternalProcessorClient, req *extprocv3.ProcessingRequest) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Process(ctx)
	if err != nil {
		return "", err
	}
	if err := stream.Send(req); err != nil {
		return "", err
	}
	resp, err := stream.Recv()
	if err != nil {
		return "", err
	}
	if err := stream.CloseSend(); err != nil {
		return "", err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("end of stream: %w", err)
	}
	for _, h := range resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == adapter.DefaultRouteHeader {
			return string(bytes.Clone(h.GetHeader().GetRawValue())), nil
		}
	}
	return "", nil
}

func heapAfterGC() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
