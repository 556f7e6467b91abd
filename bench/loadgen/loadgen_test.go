package loadgen_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trafficsplit/splitter/bench/loadgen"
	"github.com/trafficsplit/splitter/bench/noop"
)

// start serves srv on a loopback port until the test ends.
func start(t *testing.T, srv extprocv3.ExternalProcessorServer) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return l.Addr().String()
}

// router answers like the splitter would on the seed configuration:
// x-beta: true pins v2, everything else alternates v1/v2, and keyed
// requests get a variant. mode breaks one aspect of the answer.
type router struct {
	extprocv3.UnimplementedExternalProcessorServer
	mode    string
	n       atomic.Int64
	streams atomic.Int64
}

func (r *router) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	r.streams.Add(1)
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return err
		}
		var beta, keyed bool
		for _, h := range req.GetRequestHeaders().GetHeaders().GetHeaders() {
			switch h.GetKey() {
			case "x-beta":
				beta = string(h.GetRawValue()) == "true"
			case "x-user-id":
				keyed = true
			}
		}
		version := "v1"
		if beta || r.n.Add(1)%2 == 0 {
			version = "v2"
		}
		switch r.mode {
		case "ignore-pin":
			if beta {
				version = "v1"
			}
		case "unknown-version":
			version = "v9"
		}
		set := []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-route-version", RawValue: []byte(version)}}}
		if r.mode == "value-field" {
			set[0].Header.Value = version
		}
		if keyed && r.mode != "no-variant" {
			set = append(set, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-variant", RawValue: []byte("A")}})
		}
		resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
				HeaderMutation:  &extprocv3.HeaderMutation{SetHeaders: set},
				ClearRouteCache: r.mode != "no-clear",
			}}}}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

var routed = loadgen.Expect{
	RouteHeader:   "x-route-version",
	Versions:      []string{"v1", "v2"},
	PinnedVersion: "v2",
	VariantHeader: "x-variant",
	Variants:      []string{"A", "B"},
}

func TestRunNoop(t *testing.T) {
	addr := start(t, noop.Server{})
	tests := []struct {
		name  string
		conns int
		conc  int
		n     int64
		beta  float64
		users int
	}{
		{name: "one stream", conns: 1, conc: 1, n: 50},
		{name: "many streams two conns", conns: 2, conc: 16, n: 500, beta: 0.2, users: 10},
		{name: "more streams than requests", conns: 4, conc: 64, n: 40, beta: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := loadgen.Run(t.Context(), loadgen.Config{
				Addr: addr, Conns: tt.conns, Concurrency: tt.conc, Requests: tt.n,
				Duration: time.Minute, BetaShare: tt.beta, Users: tt.users,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != tt.n || res.Errors != 0 || res.Invalid != 0 {
				t.Fatalf("requests %d errors %d invalid %d (%v), want %d, 0, 0", res.Requests, res.Errors, res.Invalid, res.FirstErrors, tt.n)
			}
			if got := res.Latency.Count(); got != uint64(tt.n) {
				t.Errorf("latency observations %d, want %d", got, tt.n)
			}
			if res.Versions[""] != tt.n || len(res.Versions) != 1 {
				t.Errorf("versions %v, want all %d without a route header", res.Versions, tt.n)
			}
			if tt.beta == 1 && res.Pinned != tt.n {
				t.Errorf("pinned %d, want %d", res.Pinned, tt.n)
			}
			if tt.beta == 0 && res.Pinned != 0 {
				t.Errorf("pinned %d, want 0", res.Pinned)
			}
			if wantKeyed := map[bool]int64{true: tt.n, false: 0}[tt.users > 0]; res.Keyed != wantKeyed {
				t.Errorf("keyed %d, want %d", res.Keyed, wantKeyed)
			}
			if res.ClientAllocsPerReq <= 0 {
				t.Errorf("client allocs per request %v, want > 0", res.ClientAllocsPerReq)
			}
		})
	}
}

func TestRunOneStreamPerRequest(t *testing.T) {
	r := &router{}
	addr := start(t, r)
	res, err := loadgen.Run(t.Context(), loadgen.Config{Addr: addr, Conns: 2, Concurrency: 8, Requests: 200, Expect: routed})
	if err != nil {
		t.Fatal(err)
	}
	// Warm-up is off, so every stream the server saw is a measured request.
	if got := r.streams.Load(); got != res.Requests || res.Requests != 200 {
		t.Errorf("server saw %d streams for %d requests, want 200 each", got, res.Requests)
	}
}

func TestRunChecksAnswers(t *testing.T) {
	tests := []struct {
		name        string
		mode        string
		beta        float64
		users       int
		wantInvalid bool
		wantMsg     string
	}{
		{name: "correct", beta: 0.3, users: 5},
		{name: "pinned request not on v2", mode: "ignore-pin", beta: 1, wantInvalid: true, wantMsg: "pinned request"},
		{name: "unknown version", mode: "unknown-version", wantInvalid: true, wantMsg: "is not one of"},
		{name: "value field filled", mode: "value-field", wantInvalid: true, wantMsg: "raw_value only"},
		{name: "route cache kept", mode: "no-clear", wantInvalid: true, wantMsg: "clear_route_cache"},
		{name: "variant missing", mode: "no-variant", users: 3, wantInvalid: true, wantMsg: "x-variant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := start(t, &router{mode: tt.mode})
			const n = 100
			res, err := loadgen.Run(t.Context(), loadgen.Config{
				Addr: addr, Concurrency: 4, Requests: n, BetaShare: tt.beta, Users: tt.users, Expect: routed,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != n || res.Errors != 0 {
				t.Fatalf("requests %d errors %d (%v), want %d, 0", res.Requests, res.Errors, res.FirstErrors, n)
			}
			var sum int64
			for _, c := range res.Versions {
				sum += c
			}
			if sum != n {
				t.Errorf("version counts %v sum to %d, want %d", res.Versions, sum, n)
			}
			if !tt.wantInvalid {
				if res.Invalid != 0 {
					t.Fatalf("invalid %d: %v", res.Invalid, res.FirstErrors)
				}
				if res.Versions["v1"] == 0 || res.Versions["v2"] < res.Pinned {
					t.Errorf("versions %v with %d pinned", res.Versions, res.Pinned)
				}
				return
			}
			if res.Invalid == 0 {
				t.Fatal("invalid answers were not detected")
			}
			if len(res.FirstErrors) == 0 || !strings.Contains(res.FirstErrors[0], tt.wantMsg) {
				t.Errorf("first errors %v, want one containing %q", res.FirstErrors, tt.wantMsg)
			}
		})
	}
}

// fixedProbe reports a server that spent 1 ms and 10 allocations per call.
type fixedProbe struct{ calls atomic.Int64 }

func (p *fixedProbe) Sample(context.Context) (loadgen.ServerSample, error) {
	n := p.calls.Add(1)
	return loadgen.ServerSample{CPU: time.Duration(n) * 100 * time.Millisecond, Mallocs: uint64(n) * 1000, HasMallocs: true}, nil
}

func TestRunBounds(t *testing.T) {
	addr := start(t, noop.Server{})
	t.Run("time bound only", func(t *testing.T) {
		res, err := loadgen.Run(t.Context(), loadgen.Config{Addr: addr, Concurrency: 2, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests == 0 || res.Errors != 0 || res.Invalid != 0 {
			t.Fatalf("requests %d errors %d invalid %d", res.Requests, res.Errors, res.Invalid)
		}
		if res.Elapsed < 200*time.Millisecond {
			t.Errorf("elapsed %v, want at least the duration", res.Elapsed)
		}
	})
	t.Run("server probe per request", func(t *testing.T) {
		res, err := loadgen.Run(t.Context(), loadgen.Config{Addr: addr, Concurrency: 2, Requests: 100, Server: &fixedProbe{}})
		if err != nil {
			t.Fatal(err)
		}
		if res.ServerCPUPerReq != time.Millisecond || res.ServerAllocsPerReq != 10 {
			t.Errorf("server per request %v, %v allocs; want 1ms, 10", res.ServerCPUPerReq, res.ServerAllocsPerReq)
		}
	})
	t.Run("no bound", func(t *testing.T) {
		if _, err := loadgen.Run(t.Context(), loadgen.Config{Addr: addr}); err == nil {
			t.Fatal("a run without count or duration was accepted")
		}
	})
	t.Run("nobody listening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := l.Addr().String()
		l.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if _, err := loadgen.Run(ctx, loadgen.Config{Addr: dead, Requests: 1}); err == nil {
			t.Fatal("a run against a closed port succeeded")
		}
	})
}
