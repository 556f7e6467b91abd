// Package loadgen drives an ext_proc server the way Envoy does: one gRPC
// stream per simulated HTTP request (request_headers sent, the reply read,
// then a half-close followed by a reset), over a few pooled HTTP/2
// connections with large static flow-control windows. Every answer is
// checked, and the cost per request is measured on both sides: client CPU
// and allocations from this process, server CPU and allocations through a
// ServerProbe.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

// EnvoyWindow is the static HTTP/2 window Envoy's gRPC client uses by
// default for both the stream and the connection (256 MiB).
const EnvoyWindow = 256 << 20

// Config is one load run.
type Config struct {
	Addr        string        // host:port of the ext_proc server (loopback)
	Conns       int           // HTTP/2 connections; default 1
	Concurrency int           // concurrent streams in flight; default 16
	Requests    int64         // stop after this many measured requests; 0: no count bound
	Duration    time.Duration // stop after this long (measured part); 0: no time bound
	Warmup      time.Duration // unmeasured load before the measured part

	// BetaShare is the fraction (0..1) of requests carrying PinHeader: PinValue.
	BetaShare float64
	// Users is the number of distinct UserHeader values; 0 sends none.
	Users int

	Authority   string   // default "api.example.com"
	PinHeader   string   // default "x-beta"
	PinValue    string   // default "true"
	UserHeader  string   // default "x-user-id"
	ExtraHeader []Header // sent on every request after the Envoy-added ones

	Expect Expect
	// Server, if set, is sampled at the start and end of the measured part.
	Server ServerProbe
}

// Header is one user header sent on every request.
type Header struct{ Name, Value string }

// Expect says what a correct answer looks like. The zero value accepts any
// request_headers HeadersResponse (the no-op baseline).
type Expect struct {
	// RouteHeader, if set, must be in the header mutation (raw_value only,
	// value empty) with clear_route_cache set, and its value in Versions.
	RouteHeader string
	Versions    []string
	// PinnedVersion is the version every pinned request must get.
	PinnedVersion string
	// VariantHeader, if set, must carry one of Variants on every request
	// that sends a user id.
	VariantHeader string
	Variants      []string
}

// ServerSample is the server's cumulative cost at one instant.
type ServerSample struct {
	CPU        time.Duration // user + system
	Mallocs    uint64
	HasMallocs bool
}

// ServerProbe reads the server's cumulative cost.
type ServerProbe interface {
	Sample(ctx context.Context) (ServerSample, error)
}

// Result is the outcome of the measured part of a run.
type Result struct {
	Requests int64 // completed and answered correctly or not
	Errors   int64 // transport or gRPC errors (no answer)
	Invalid  int64 // answered, but the answer failed a check
	// FirstErrors holds up to a few distinct error and check messages.
	FirstErrors []string
	Versions    map[string]int64 // route header value ("" when none) -> count
	Pinned      int64            // pinned requests sent (and answered)
	Keyed       int64            // requests that carried a user id

	Elapsed time.Duration
	Latency *Histogram // whole stream: open, send, reply, close

	ClientCPUPerReq    time.Duration
	ClientAllocsPerReq float64

	ServerCPUPerReq    time.Duration // 0 without a probe
	ServerAllocsPerReq float64       // -1 when the server does not expose them
}

// RPS is completed requests per second of the measured part.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

func (c *Config) defaults() error {
	if c.Addr == "" {
		return errors.New("loadgen: addr is empty")
	}
	if c.Conns <= 0 {
		c.Conns = 1
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 16
	}
	if c.Requests <= 0 && c.Duration <= 0 {
		return errors.New("loadgen: neither a request count nor a duration bounds the run")
	}
	if c.BetaShare < 0 || c.BetaShare > 1 {
		return fmt.Errorf("loadgen: beta share %v is outside 0..1", c.BetaShare)
	}
	if c.Users < 0 {
		return fmt.Errorf("loadgen: users %d is negative", c.Users)
	}
	if c.Authority == "" {
		c.Authority = "api.example.com"
	}
	if c.PinHeader == "" {
		c.PinHeader = "x-beta"
	}
	if c.PinValue == "" {
		c.PinValue = "true"
	}
	if c.UserHeader == "" {
		c.UserHeader = "x-user-id"
	}
	return nil
}

// Dial opens n HTTP/2 connections to addr with Envoy's client transport
// settings and waits until each is ready.
func Dial(ctx context.Context, addr string, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := range n {
		cc, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(EnvoyWindow),
			grpc.WithInitialConnWindowSize(EnvoyWindow),
		)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("loadgen: connection %d to %s: %w", i, addr, err)
		}
		conns = append(conns, cc)
		cc.Connect()
		for st := cc.GetState(); st != connectivity.Ready; st = cc.GetState() {
			if !cc.WaitForStateChange(ctx, st) {
				closeAll()
				return nil, fmt.Errorf("loadgen: connection %d to %s: %w (last state %v)", i, addr, ctx.Err(), st)
			}
		}
	}
	return conns, nil
}

// Run executes one load run. It returns an error only when the run could
// not take place (bad config, no connection, probe failure); failed
// requests are counted in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	dialCtx, cancelDial := context.WithTimeout(ctx, 10*time.Second)
	conns, err := Dial(dialCtx, cfg.Addr, cfg.Conns)
	cancelDial()
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		client := extprocv3.NewExternalProcessorClient(conns[i%len(conns)])
		workers[i] = newWorker(&cfg, client, uint64(i))
	}

	if cfg.Warmup > 0 {
		// Warm-up runs to completion before the first sample, so no
		// unmeasured stream is in flight while costs are counted.
		var stop atomic.Bool
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Go(func() {
				for !stop.Load() && ctx.Err() == nil {
					w.one(ctx, false)
				}
			})
		}
		select {
		case <-time.After(cfg.Warmup):
		case <-ctx.Done():
		}
		stop.Store(true)
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}

	var before, after ServerSample
	if cfg.Server != nil {
		if before, err = cfg.Server.Sample(ctx); err != nil {
			return nil, fmt.Errorf("loadgen: server probe: %w", err)
		}
	}
	var msBefore, msAfter runtime.MemStats
	runtime.ReadMemStats(&msBefore)
	cpuBefore := processCPU()
	start := time.Now()

	var (
		stop   atomic.Bool
		issued atomic.Int64
		wg     sync.WaitGroup
	)
	for _, w := range workers {
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				if cfg.Requests > 0 && issued.Add(1) > cfg.Requests {
					return
				}
				w.one(ctx, true)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var timer <-chan time.Time
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-done:
	case <-timer:
		stop.Store(true)
		<-done
	case <-ctx.Done():
		stop.Store(true)
		<-done
		return nil, ctx.Err()
	}
	elapsed := time.Since(start)
	cpuAfter := processCPU()
	runtime.ReadMemStats(&msAfter)
	if cfg.Server != nil {
		if after, err = cfg.Server.Sample(ctx); err != nil {
			return nil, fmt.Errorf("loadgen: server probe: %w", err)
		}
	}

	res := &Result{
		Versions:           map[string]int64{},
		Elapsed:            elapsed,
		Latency:            &Histogram{},
		ServerAllocsPerReq: -1,
	}
	seen := map[string]bool{}
	for _, w := range workers {
		res.Requests += w.requests
		res.Errors += w.errors
		res.Invalid += w.invalid
		res.Pinned += w.pinned
		res.Keyed += w.keyed
		for v, n := range w.versions {
			res.Versions[v] += n
		}
		res.Latency.Merge(&w.hist)
		for _, m := range w.firstErrs {
			if !seen[m] && len(res.FirstErrors) < 5 {
				seen[m] = true
				res.FirstErrors = append(res.FirstErrors, m)
			}
		}
	}
	sort.Strings(res.FirstErrors)
	if res.Requests > 0 {
		n := float64(res.Requests)
		res.ClientCPUPerReq = time.Duration(float64(cpuAfter-cpuBefore) / n)
		res.ClientAllocsPerReq = float64(msAfter.Mallocs-msBefore.Mallocs) / n
		if cfg.Server != nil {
			res.ServerCPUPerReq = time.Duration(float64(after.CPU-before.CPU) / n)
			if before.HasMallocs && after.HasMallocs {
				res.ServerAllocsPerReq = float64(after.Mallocs-before.Mallocs) / n
			}
		}
	}
	return res, nil
}

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// worker runs one stream at a time and keeps its own counters, so the hot
// loop shares nothing but the phase and the issue counter.
type worker struct {
	cfg    *Config
	client extprocv3.ExternalProcessorClient
	rng    *rand.Rand
	seq    uint64
	id     uint64

	// The request is built once and its values rewritten in place:
	// SendMsg marshals before it returns, so reuse is safe.
	req       *extprocv3.ProcessingRequest
	base      []*corev3.HeaderValue // Envoy-added and user headers
	requestID *corev3.HeaderValue
	pin       *corev3.HeaderValue
	user      *corev3.HeaderValue
	userVals  [][]byte

	requests, errors, invalid, pinned, keyed int64
	versions                                 map[string]int64
	firstErrs                                []string
	hist                                     Histogram
}

func newWorker(cfg *Config, client extprocv3.ExternalProcessorClient, id uint64) *worker {
	w := &worker{
		cfg:      cfg,
		client:   client,
		rng:      rand.New(rand.NewPCG(id, 0x5eed)),
		id:       id,
		versions: map[string]int64{},
	}
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	w.requestID = hv("x-request-id", "00000000-0000-4000-8000-000000000000")
	w.base = []*corev3.HeaderValue{
		hv(":authority", cfg.Authority),
		hv(":path", "/api/items?page=1"),
		hv(":method", "GET"),
		hv(":scheme", "http"),
		hv("user-agent", "splitter-bench/1"),
		hv("accept", "*/*"),
		hv("x-forwarded-proto", "http"),
		w.requestID,
	}
	for _, h := range cfg.ExtraHeader {
		w.base = append(w.base, hv(h.Name, h.Value))
	}
	w.pin = hv(cfg.PinHeader, cfg.PinValue)
	w.user = hv(cfg.UserHeader, "")
	for i := range cfg.Users {
		w.userVals = append(w.userVals, fmt.Appendf(nil, "user-%d", i))
	}
	hdrs := make([]*corev3.HeaderValue, len(w.base), len(w.base)+2)
	copy(hdrs, w.base)
	w.req = &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{
				Headers:     &corev3.HeaderMap{Headers: hdrs},
				EndOfStream: true,
			},
		},
	}
	return w
}

const hexDigits = "0123456789abcdef"

// one sends a single simulated HTTP request on a fresh stream.
func (w *worker) one(ctx context.Context, measured bool) {
	w.seq++
	// A unique, UUID-shaped x-request-id, written over the template.
	id := w.requestID.RawValue
	v := w.id<<40 ^ w.seq
	for i := len(id) - 1; i >= 24; i-- {
		id[i] = hexDigits[v&0xf]
		v >>= 4
	}
	hm := w.req.GetRequestHeaders().Headers
	hm.Headers = hm.Headers[:len(w.base)]
	pinned := w.cfg.BetaShare > 0 && w.rng.Float64() < w.cfg.BetaShare
	if pinned {
		hm.Headers = append(hm.Headers, w.pin)
	}
	keyed := len(w.userVals) > 0
	if keyed {
		w.user.RawValue = w.userVals[w.rng.IntN(len(w.userVals))]
		hm.Headers = append(hm.Headers, w.user)
	}

	start := time.Now()
	resp, err := w.exchange(ctx)
	lat := time.Since(start)
	if !measured {
		return
	}
	if err != nil {
		if ctx.Err() != nil {
			return // the run was cancelled, not a server failure
		}
		w.errors++
		w.note(err.Error())
		return
	}
	w.requests++
	w.hist.Record(lat)
	if pinned {
		w.pinned++
	}
	if keyed {
		w.keyed++
	}
	version, err := check(&w.cfg.Expect, resp, pinned, keyed)
	w.versions[version]++
	if err != nil {
		w.invalid++
		w.note(err.Error())
	}
}

// exchange is the Envoy side of one stream: open, send the headers, read
// one reply, half-close, reset.
func (w *worker) exchange(ctx context.Context) (*extprocv3.ProcessingResponse, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // the reset: RST_STREAM, as Envoy's closeStream+resetStream
	st, err := w.client.Process(sctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if err := st.Send(w.req); err != nil {
		return nil, fmt.Errorf("send request_headers: %w", err)
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, fmt.Errorf("receive reply: %w", err)
	}
	if err := st.CloseSend(); err != nil {
		return nil, fmt.Errorf("half-close: %w", err)
	}
	return resp, nil
}

func (w *worker) note(msg string) {
	if len(w.firstErrs) < 5 {
		w.firstErrs = append(w.firstErrs, msg)
	}
}

// check validates one answer and returns the route header value it set.
func check(e *Expect, resp *extprocv3.ProcessingResponse, pinned, keyed bool) (string, error) {
	hr, ok := resp.GetResponse().(*extprocv3.ProcessingResponse_RequestHeaders)
	if !ok {
		return "", fmt.Errorf("reply is %T, want request_headers", resp.GetResponse())
	}
	if e.RouteHeader == "" {
		return "", nil
	}
	common := hr.RequestHeaders.GetResponse()
	version, found, err := mutationValue(common, e.RouteHeader)
	if err != nil {
		return version, err
	}
	if !found {
		return "", fmt.Errorf("no %s in the header mutation", e.RouteHeader)
	}
	if !common.GetClearRouteCache() {
		return version, errors.New("clear_route_cache is not set")
	}
	if !contains(e.Versions, version) {
		return version, fmt.Errorf("%s %q is not one of %v", e.RouteHeader, version, e.Versions)
	}
	if pinned && e.PinnedVersion != "" && version != e.PinnedVersion {
		return version, fmt.Errorf("pinned request got %s %q, want %q", e.RouteHeader, version, e.PinnedVersion)
	}
	if keyed && e.VariantHeader != "" {
		variant, found, err := mutationValue(common, e.VariantHeader)
		if err != nil {
			return version, err
		}
		if !found || !contains(e.Variants, variant) {
			return version, fmt.Errorf("keyed request got %s %q, want one of %v", e.VariantHeader, variant, e.Variants)
		}
	}
	return version, nil
}

// mutationValue finds name among the set headers. Envoy ≥1.32 reads only
// raw_value and older ones fail a request that fills both, so a value in
// the string field is an error.
func mutationValue(c *extprocv3.CommonResponse, name string) (string, bool, error) {
	for _, o := range c.GetHeaderMutation().GetSetHeaders() {
		h := o.GetHeader()
		if h.GetKey() != name {
			continue
		}
		if h.GetValue() != "" {
			return "", true, fmt.Errorf("%s is set in value, want raw_value only", name)
		}
		return string(h.GetRawValue()), true, nil
	}
	return "", false, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
