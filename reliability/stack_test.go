package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trafficsplit/splitter/internal/serve"
	"github.com/trafficsplit/splitter/internal/settings"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// baseConfig is the configuration every bad-input case starts from (and
// must still be serving afterwards): a two-version sticky service on "*",
// a three-version service on web.example.com and one experiment.
func baseConfig(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "base.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// syncBuffer collects the process log; the server writes it from many
// goroutines.
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

// stack is serve.Run in-process on loopback port 0, with its admin client
// and one gRPC connection.
type stack struct {
	addrs serve.Addrs
	path  string
	token string
	logs  *syncBuffer
	cc    *grpc.ClientConn
	http  *http.Client
}

// startStack runs serve.Run on a copy of content. Watcher and poll are
// parked (an hour) so that only the requests a test makes reload the file:
// POST /v1/reload is the same path the watcher takes.
func startStack(t *testing.T, content []byte, mod func(*settings.Settings)) *stack {
	t.Helper()
	st := &stack{path: filepath.Join(t.TempDir(), "config.yaml"), logs: &syncBuffer{}}
	if err := os.WriteFile(st.path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	s := settings.Defaults()
	s.ConfigPath = st.path
	s.GRPCAddr = "127.0.0.1:0"
	s.AdminAddr = "127.0.0.1:0"
	s.ReloadDebounce = time.Hour
	s.ReloadPollInterval = time.Hour
	s.DrainDelay = 0
	s.ShutdownTimeout = 10 * time.Second
	if mod != nil {
		mod(&s)
	}
	st.token = s.AdminToken

	logger := slog.New(slog.NewJSONHandler(st.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan serve.Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- serve.Run(ctx, s, logger, serve.WithOnReady(func(a serve.Addrs) { ready <- a })) }()
	select {
	case st.addrs = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve.Run returned before serving: %v\n%s", err, st.logs.String())
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve.Run = %v", err)
		}
	})
	cc, err := grpc.NewClient(st.addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	st.cc = cc
	st.http = &http.Client{Timeout: 10 * time.Second}
	// Cleanups run last-in first-out: clients close before Run is stopped.
	t.Cleanup(func() {
		cc.Close()
		st.http.CloseIdleConnections()
	})
	return st
}

// request is one admin call.
type request struct {
	method, path string
	body         []byte
	contentType  string            // "" means application/json when body != nil
	header       map[string]string // extra headers; "Authorization" replaces the token
	noAuth       bool              // send no Authorization header
}

type response struct {
	code int
	body []byte
	err  struct {
		Error string `json:"error"`
		Field string `json:"field"`
	}
}

func (st *stack) do(t *testing.T, r request) response {
	t.Helper()
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(t.Context(), r.method, "http://"+st.addrs.Admin+r.path, rd)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case r.contentType != "":
		req.Header.Set("Content-Type", r.contentType)
	case r.body != nil:
		req.Header.Set("Content-Type", "application/json")
	}
	if st.token != "" && !r.noAuth {
		req.Header.Set("Authorization", "Bearer "+st.token)
	}
	for k, v := range r.header {
		if strings.EqualFold(k, "Host") {
			req.Host = v // net/http sends req.Host, not a Host header entry
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := st.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	out := response{code: resp.StatusCode}
	out.body, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out.code >= 400 {
		if err := json.Unmarshal(out.body, &out.err); err != nil {
			t.Errorf("%s %s: error answer %q is not JSON: %v", r.method, r.path, out.body, err)
		}
	}
	return out
}

// reload asks for the same reload the file watcher would do.
func (st *stack) reload(t *testing.T) response {
	t.Helper()
	return st.do(t, request{method: http.MethodPost, path: "/v1/reload", body: []byte("{}")})
}

func (st *stack) writeConfig(t *testing.T, content []byte) {
	t.Helper()
	if err := os.WriteFile(st.path, content, 0o644); err != nil {
		t.Fatal(err)
	}
}

// serving is what must not move when bad input is refused: the snapshot's
// generation and hash, every service's effective weights, and the decision
// for a fixed sticky request and a fixed rule-pinned request.
type serving struct {
	Generation uint64
	SHA256     string
	Weights    map[string]string // service -> weights JSON
	Sticky     decision
	Pinned     decision
}

// decision is the part of an ext_proc answer the tests compare.
type decision struct {
	Version, Reason, Variant string
}

func (st *stack) serving(t *testing.T) serving {
	t.Helper()
	r := st.do(t, request{method: http.MethodGet, path: "/v1/services"})
	if r.code != http.StatusOK {
		t.Fatalf("GET /v1/services = %d %s", r.code, r.body)
	}
	var v struct {
		Services []struct {
			Name    string          `json:"name"`
			Weights json.RawMessage `json:"weights"`
		} `json:"services"`
		Config struct {
			SHA256     string `json:"sha256"`
			Generation uint64 `json:"generation"`
		} `json:"config"`
	}
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("GET /v1/services: %v in %s", err, r.body)
	}
	s := serving{Generation: v.Config.Generation, SHA256: v.Config.SHA256, Weights: map[string]string{}}
	for _, svc := range v.Services {
		s.Weights[svc.Name] = string(svc.Weights)
	}
	s.Sticky = st.decide(t, map[string]string{":authority": "api.example.com", ":path": "/", "x-user-id": "user-fixed"})
	s.Pinned = st.decide(t, map[string]string{":authority": "api.example.com", ":path": "/", "x-beta": "true"})
	return s
}

// assertServing fails t if what is serving differs from want.
func (st *stack) assertServing(t *testing.T, want serving) {
	t.Helper()
	if diff := cmp.Diff(want, st.serving(t)); diff != "" {
		t.Errorf("serving state changed (-before +after):\n%s", diff)
	}
}

// decide runs one ext_proc stream with headers and returns the route,
// reason and variant headers it sets.
func (st *stack) decide(t *testing.T, headers map[string]string) decision {
	t.Helper()
	resp, err := st.exchange(t, requestHeaders(headers))
	if err != nil {
		t.Fatalf("ext_proc: %v", err)
	}
	return decisionOf(t, resp[0])
}

// exchange opens one stream, sends msgs, reads one answer per message
// (stopping at the first error), half-closes and waits for the server to
// end the stream. A clean end before all answers is not an error: the
// answers read so far are returned.
func (st *stack) exchange(t *testing.T, msgs ...*extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := extprocv3.NewExternalProcessorClient(st.cc).Process(ctx)
	if err != nil {
		return nil, err
	}
	var out []*extprocv3.ProcessingResponse
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			if errors.Is(err, io.EOF) {
				break // the server ended the stream; Recv reports how
			}
			return out, err
		}
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, resp)
	}
	if err := stream.CloseSend(); err != nil {
		return out, err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return out, err
	}
	return out, nil
}

func requestHeaders(headers map[string]string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	for _, k := range sortedKeys(headers) {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(headers[k])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: true}}}
}

// decisionOf reads the headers a request_headers answer sets.
func decisionOf(t *testing.T, resp *extprocv3.ProcessingResponse) decision {
	t.Helper()
	rh := resp.GetRequestHeaders()
	if rh == nil {
		t.Fatalf("answer is not a request_headers response: %v", resp)
	}
	var d decision
	for _, h := range rh.GetResponse().GetHeaderMutation().GetSetHeaders() {
		v := string(h.GetHeader().GetRawValue())
		switch h.GetHeader().GetKey() {
		case "x-route-version":
			d.Version = v
		case "x-route-reason":
			d.Reason = v
		case "x-variant":
			d.Variant = v
		}
	}
	return d
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// missing returns the wanted substrings that s lacks.
func missing(s string, want ...string) []string {
	var out []string
	for _, w := range want {
		if !strings.Contains(s, w) {
			out = append(out, w)
		}
	}
	return out
}
