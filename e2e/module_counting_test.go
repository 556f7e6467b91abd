package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// rawBackend is a backend written on the socket, so that it can fail the
// ways a real one does: by path, "/hang" holds the request until Envoy
// drops the upstream connection (and reports its arrival on arrived),
// "/reset" resets the connection before answering, "/cut" sends the
// response headers and part of the body and then resets, "/500" answers
// 500; anything else gets a 200 with an echo-style body.
type rawBackend struct {
	*testbed.Backend
	arrived chan string
}

func startRawBackend(t *testing.T, version string) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rb := &rawBackend{Backend: &testbed.Backend{Version: version, Addr: ln.Addr().String()}, arrived: make(chan string, 1000)}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	body, _ := json.Marshal(map[string]any{"version": version, "path": "/", "headers": map[string]string{}})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go rb.serve(c.(*net.TCPConn), body)
		}
	}()
	return rb
}

func (rb *rawBackend) serve(c *net.TCPConn, body []byte) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/hang":
			rb.arrived <- req.URL.Path
			_, _ = io.Copy(io.Discard, br) // until Envoy closes the connection
			return
		case "/reset":
			_ = c.SetLinger(0)
			return
		case "/cut":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"version\":")
			time.Sleep(100 * time.Millisecond)
			_ = c.SetLinger(0)
			return
		case "/500":
			fmt.Fprintf(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail")
		default:
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	}
}

// abortAfterArrival sends GET path with h on a new connection to Envoy,
// waits until the backend has the request (so the module decided it and
// Envoy routed it), and resets the connection without reading an answer:
// a client that gives up mid-request.
func abortAfterArrival(t *testing.T, listen string, path string, h http.Header, be *rawBackend) {
	t.Helper()
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "GET %s HTTP/1.1\r\nHost: api\r\n", path)
	for k, vs := range h {
		for _, v := range vs {
			fmt.Fprintf(&sb, "%s: %s\r\n", k, v)
		}
	}
	sb.WriteString("\r\n")
	if _, err := io.WriteString(c, sb.String()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-be.arrived:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s never reached backend %s", path, be.Version)
	}
	_ = c.(*net.TCPConn).SetLinger(0) // RST
	_ = c.Close()
}

// responses reads the module's splitter_responses_total for service api
// and version: class -> count.
func responses(t *testing.T, b *bed, version string) map[string]string {
	t.Helper()
	out := map[string]string{}
	prefix := `splitter_responses_total{api="module",class="`
	for l := range strings.Lines(metricsBody(t, b)) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), prefix)
		if !ok || !strings.Contains(rest, `service="api",version="`+version+`"}`) {
			continue
		}
		class, _, _ := strings.Cut(rest, `"`)
		out[class] = l[strings.LastIndexByte(strings.TrimSpace(l), ' ')+1:]
		out[class] = strings.TrimSpace(out[class])
	}
	return out
}

// countingConfig is a rollout of v2 with rules that pin a request to
// either version, judged on 10 requests over a window that holds the whole
// test; the hold keeps the guard from promoting while the test looks.
const countingConfig = `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rules:
      - name: canary-testers
        when: [{header: x-pin, exact: canary}]
        version: v2
      - name: stable-testers
        when: [{header: x-pin, exact: stable}]
        version: v1
    rollout:
      steps: [5, 100]
      hold: 1h
      guard: {window: 10m, min_requests: 10, max_error_rate: 1, max_error_ratio: 2}
`

// TestModuleCountsUpstreamFailuresNotClientAborts: the module's response
// counters, which the rollout guard reads in module mode, count what the
// upstream answered, not what the client did. Clients that send a request
// pinned to the canary (or to stable) and reset the connection before the
// answer are not errors, and not requests either (as Envoy's
// upstream_rq_completed and upstream_rq_5xx, which the guard reads in the
// other modes): the rollout goes on. A canary that really fails (a 500,
// a reset before the response, which Envoy answers 503, a response cut off
// by a reset) is counted and rolled back.
func TestModuleCountsUpstreamFailuresNotClientAborts(t *testing.T) {
	requireModule(t)
	b := &bed{Bed: testbed.ForTest(t)}
	v1, v2 := startRawBackend(t, "v1"), startRawBackend(t, "v2")
	b.backends = []*testbed.Backend{v1.Backend, v2.Backend}
	b.cfgPath = t.TempDir() + "/config.yaml"
	writeFile(t, b.cfgPath, countingConfig)
	p, err := testbed.LoopbackParams(envoy.ModeModule, "", b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	b.envoy, b.module, err = b.StartEnvoyModule(t.Context(), found.envoyBin, found.moduleDir, p,
		map[string]any{"config": b.cfgPath, "signals_interval": "100ms"}, testbed.EnvoyOptions{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.admin = b.module.AdminClient
	b.client = b.envoy.Client()
	t.Cleanup(b.client.Close)

	if s := b.act(t, rollout.Start); s.State != rollout.Progressing || s.Step != 1 {
		t.Fatalf("start: %+v", s)
	}
	// The guard's first reading is its baseline: abort after it.
	b.waitRollout(t, 30*time.Second, "the guard's first reading", func(s rollout.Status) bool { return s.Verdict != nil })
	// 30 client aborts on the canary and 10 on stable, each after the
	// backend got the request.
	for range 30 {
		abortAfterArrival(t, b.envoy.ListenAddr, "/hang", hdr("x-pin", "canary"), v2)
	}
	for range 10 {
		abortAfterArrival(t, b.envoy.ListenAddr, "/hang", hdr("x-pin", "stable"), v1)
	}
	var got2, got1 map[string]string
	waitFor(t, 30*time.Second, "the 40 aborted streams counted", func() bool {
		got2, got1 = responses(t, b, "v2"), responses(t, b, "v1")
		return sumClasses(got2) == 30 && sumClasses(got1) == 10
	})
	if want := map[string]string{"aborted": "30"}; fmt.Sprint(got2) != fmt.Sprint(want) {
		t.Errorf("v2's responses after 30 client aborts: %v, want %v (no errors)", got2, want)
	}
	if want := map[string]string{"aborted": "10"}; fmt.Sprint(got1) != fmt.Sprint(want) {
		t.Errorf("v1's responses after 10 client aborts: %v, want %v (no errors)", got1, want)
	}
	// A verdict made after the aborts: not a failure, and the rollout goes on.
	after := time.Now()
	s := b.waitRollout(t, 30*time.Second, "a verdict after the aborts", func(s rollout.Status) bool {
		return s.State != rollout.Progressing || s.Verdict != nil && s.Verdict.At.After(after)
	})
	if s.State != rollout.Progressing || s.Verdict.Result == rollout.Failing || s.Verdict.Canary.Errors != 0 {
		t.Fatalf("after client aborts: %s, verdict %+v; want progressing, no canary errors", s.State, s.Verdict)
	}

	// Now the canary really fails: 500s, resets before the response (Envoy
	// answers 503) and responses cut off by a reset.
	for _, path := range []string{"/500", "/reset", "/cut"} {
		for range 10 {
			if _, err := b.client.Get(t.Context(), path, hdr("x-pin", "canary")); err == nil {
				t.Fatalf("%s on v2 succeeded", path)
			}
		}
	}
	waitFor(t, 30*time.Second, "the canary's failures counted", func() bool {
		got2 = responses(t, b, "v2")
		return sumClasses(got2) == 60
	})
	if want := map[string]string{"5xx": "20", "aborted": "30", "reset": "10"}; fmt.Sprint(got2) != fmt.Sprint(want) {
		t.Errorf("v2's responses: %v, want %v", got2, want)
	}
	s = b.waitRollout(t, 30*time.Second, "the rollback", func(s rollout.Status) bool { return s.State != rollout.Progressing })
	if s.State != rollout.RolledBack {
		t.Fatalf("after the canary failed: %s, want rolled_back", s.State)
	}
	rb := s.History[len(s.History)-1]
	if rb.Verdict == nil || rb.Verdict.Canary.Errors < 10 {
		t.Fatalf("rollback verdict %+v: want the canary's counted failures", rb.Verdict)
	}
	t.Logf("rolled back on %+v", rb.Verdict)
}

func sumClasses(m map[string]string) int {
	n := 0
	for _, v := range m {
		var x int
		fmt.Sscan(v, &x)
		n += x
	}
	return n
}
