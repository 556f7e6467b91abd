package e2e

import (
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
)

// latencyConfig: steps 5, 25, 50, 100 held 3s, judged over a 2s window on
// errors and on p99 latency (above 150ms and above 10 x stable's fails).
// failing_for 2.5s, longer than the window, keeps a few requests stalled
// by a loaded machine from rolling a healthy canary back on their own, as
// flap control is meant to; a canary that stays slow is still rolled back.
const latencyConfig = `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 3s
      guard: {window: 2s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2, max_latency_ms: 150, max_latency_ratio: 10, failing_for: 2500ms}
`

// TestRolloutSlowCanary: in ext_proc mode the guard reads each version's
// upstream_rq_time histogram from Envoy's admin port (the rendered
// bootstrap flushes at every read); in the module the requests are timed
// in process. A canary whose p99 goes from a few ms to 200ms at the 25 %
// step is rolled back on latency alone; one 10ms slower than stable
// (inside both bounds) is promoted.
func TestRolloutSlowCanary(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeModule} {
		t.Run(string(mode)+"/200ms at 25%", func(t *testing.T) {
			b := newRolloutBed(t, mode, latencyConfig)
			tr := startTraffic(t, b.client, 4)
			b.act(t, rollout.Start)
			b.waitRollout(t, 60*time.Second, "the 25% step", func(s rollout.Status) bool { return s.Step == 2 })
			b.backends[1].Slow(200 * time.Millisecond)
			s := b.waitRollout(t, 60*time.Second, "the rollback", func(s rollout.Status) bool { return s.State != rollout.Progressing })
			tr.Halt()
			if s.State != rollout.RolledBack || s.Weight != 0 {
				t.Fatalf("a slow canary: %s at %v, want rolled_back at 0 (history %+v)", s.State, s.Weight, s.History)
			}
			rb := s.History[len(s.History)-1]
			v := rb.Verdict
			if rb.Step != 2 || v == nil || v.Latency == nil || v.Latency.Result != rollout.Failing || v.Canary.Errors != 0 ||
				v.Latency.Canary.Ms < 200 || !strings.Contains(rb.Reason, "canary p99 ") || !strings.Contains(rb.Reason, "above max_latency_ms 150 and above 10 x stable's") {
				t.Fatalf("rollback %+v (verdict %+v, latency %+v): want failing at step 2 on latency alone", rb, v, v.Latency)
			}
			slow := b.backends[1].Faults.FirstSlow()
			t.Logf("%s: slowdown -> canary at 0: %v; %s", mode, rb.At.Sub(slow).Round(time.Millisecond), rb.Reason)
		})
		t.Run(string(mode)+"/10ms slower", func(t *testing.T) {
			b := newRolloutBed(t, mode, latencyConfig)
			b.backends[1].Slow(10 * time.Millisecond)
			tr := startTraffic(t, b.client, 4)
			b.act(t, rollout.Start)
			s := b.waitRollout(t, 90*time.Second, "the end", func(s rollout.Status) bool { return s.State != rollout.Progressing })
			tr.Halt()
			if s.State != rollout.Promoted {
				t.Fatalf("a canary 10ms slower: %s (verdict %+v, history %+v), want promoted", s.State, s.Verdict, s.History)
			}
			// Healthy on latency: inside both bounds, or (a loaded machine
			// delays a backend's timers) above 150 ms but not above 10 x
			// stable's, which is slowed alike.
			last := s.History[len(s.History)-1].Verdict
			if last == nil || last.Latency == nil || last.Latency.Result != rollout.Healthy || last.Latency.Canary.Ms < 10 {
				t.Fatalf("promoted on %+v", last)
			}
			t.Logf("%s: promoted on %s", mode, last.Reason)
		})
	}
}

// hookReceiver answers webhook calls with the status it is set to, and
// keeps them; with a key it checks every signature.
type hookReceiver struct {
	srv    *httptest.Server
	key    []byte
	status atomic.Int32
	mu     sync.Mutex
	calls  []rollout.Payload
	bad    []string
}

func newHookReceiver(t *testing.T, status int, key []byte) *hookReceiver {
	h := &hookReceiver{key: key}
	h.status.Store(int32(status))
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p rollout.Payload
		err := json.Unmarshal(body, &p)
		h.mu.Lock()
		if err != nil {
			h.bad = append(h.bad, err.Error())
		}
		if h.key != nil {
			// What a receiver does: the HMAC of the body it received, in
			// constant time.
			if got, want := r.Header.Get("X-Splitter-Signature"), rollout.Sign(h.key, body); !hmac.Equal([]byte(got), []byte(want)) {
				h.bad = append(h.bad, fmt.Sprintf("signature %q, want %q", got, want))
			}
		}
		h.calls = append(h.calls, p)
		h.mu.Unlock()
		w.WriteHeader(int(h.status.Load()))
		fmt.Fprintf(w, "answered %d", h.status.Load())
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) payloads() []rollout.Payload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]rollout.Payload(nil), h.calls...)
}

func gateConfig(gateURL string) string {
	return fmt.Sprintf(`
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 1s
      guard: {window: 1s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2}
      webhooks:
        - {name: approve, type: confirm_step, url: %q, poll: 200ms, timeout: 1s}
`, gateURL)
}

// TestRolloutConfirmGate: a confirm_step hook answering 403 holds the
// rollout at its step long past the hold, the status waiting and naming
// the hook with its last answer, while a canary that starts failing is
// rolled back all the same; started again, once the hook answers 200 the
// rollout steps on to promotion.
func TestRolloutConfirmGate(t *testing.T) {
	gate := newHookReceiver(t, http.StatusForbidden, nil)
	b := newRolloutBed(t, envoy.ModeExtProc, gateConfig(gate.srv.URL+"/approve"))
	tr := startTraffic(t, b.client, 2)
	b.act(t, rollout.Start)
	s := b.waitRollout(t, 30*time.Second, "a wait past the hold", func(s rollout.Status) bool {
		return s.State == rollout.Waiting && s.Waiting != nil && s.Waiting.Asked >= 5
	})
	if s.Step != 1 || s.Waiting.Hook != "approve" || s.Waiting.Type != "confirm_step" || s.Waiting.NextStep != 2 ||
		!strings.HasPrefix(s.Waiting.LastAnswer, "403 Forbidden") || s.Weight != 500 {
		t.Fatalf("waiting: step %d at %v, %+v", s.Step, s.Weight, s.Waiting)
	}
	// Five asks, 200ms apart, after the 1s hold: the hold is long past.
	b.backends[1].Fail(50)
	s = b.waitRollout(t, 30*time.Second, "the rollback while waiting", func(s rollout.Status) bool { return s.State != rollout.Waiting })
	rb := s.History[len(s.History)-1]
	if s.State != rollout.RolledBack || rb.From != rollout.Waiting || rb.Verdict == nil || rb.Verdict.Result != rollout.Failing {
		t.Fatalf("a failing canary while the gate waits: %s, last %+v", s.State, rb)
	}

	b.backends[1].Fail(0)
	b.act(t, rollout.Start)
	b.waitRollout(t, 30*time.Second, "the wait again", func(s rollout.Status) bool { return s.State == rollout.Waiting && s.Waiting.Asked > 0 })
	gate.status.Store(http.StatusOK)
	s = b.waitRollout(t, 60*time.Second, "the promotion", func(s rollout.Status) bool { return s.State == rollout.Promoted })
	tr.Halt()
	var moves []string
	for _, h := range s.History[len(s.History)-7:] {
		moves = append(moves, fmt.Sprintf("%s@%d", h.To, h.Step))
	}
	if got := strings.Join(moves, " "); got != "progressing@1 waiting@1 progressing@2 waiting@2 progressing@3 waiting@3 promoted@4" {
		t.Fatalf("the second run: %s", got)
	}
	p := gate.payloads()[0]
	if p.Service != "api" || p.Type != "confirm_step" || p.State != rollout.Waiting || p.Step != 1 || p.NextStep != 2 || p.Canary != "v2" || p.Verdict == nil {
		t.Errorf("payload %+v", p)
	}
}

// TestRolloutEventHooks: an event hook gets every transition, in order,
// with a valid signature; a hook that is down and one that hangs without
// answering never delay one: the rollout is promoted while every call to
// the hanging hook is still open.
func TestRolloutEventHooks(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "hook-secret")
	if err := os.WriteFile(secret, []byte("e2e-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := newHookReceiver(t, http.StatusAccepted, []byte("e2e-secret"))
	var open, answered atomic.Int32
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		open.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		answered.Add(1)
	}))
	t.Cleanup(hang.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/events"
	ln.Close()
	b := newRolloutBed(t, envoy.ModeExtProc, fmt.Sprintf(`
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 1s
      guard: {window: 1s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2}
      webhooks:
        - {name: chat, type: event, url: %q, secret_file: %q}
        - {name: hang, type: event, url: %q, timeout: 1m, retries: 0}
        - {name: down, type: event, url: %q, timeout: 1s}
`, good.srv.URL+"/events", secret, hang.URL, down))
	tr := startTraffic(t, b.client, 2)
	b.act(t, rollout.Start)
	s := b.waitRollout(t, 60*time.Second, "the promotion", func(s rollout.Status) bool { return s.State == rollout.Promoted })
	tr.Halt()
	if open.Load() == 0 || answered.Load() != 0 {
		t.Fatalf("the hanging hook: %d calls open, %d answered; want it holding its first call while the rollout went on", open.Load(), answered.Load())
	}
	close(release)
	waitFor(t, 20*time.Second, "every transition at the receiver", func() bool { return len(good.payloads()) >= len(s.History) })
	got := good.payloads()
	if len(got) != len(s.History) {
		t.Fatalf("%d events for %d transitions", len(got), len(s.History))
	}
	for i, p := range got {
		tr := s.History[i]
		if p.Transition == nil || p.Transition.To != tr.To || p.Step != tr.Step || !p.Time.After(tr.At.Add(-time.Second)) || p.Hook != "chat" || p.Type != "event" {
			t.Errorf("event %d: %+v, want transition %+v", i, p, tr)
		}
	}
	good.mu.Lock()
	defer good.mu.Unlock()
	if len(good.bad) > 0 {
		t.Fatalf("bad calls: %v", good.bad)
	}
	var metrics string
	waitFor(t, 20*time.Second, "the down hook's failures counted", func() bool {
		m, err := metricsText(b)
		metrics = m
		return err == nil && strings.Contains(metrics, fmt.Sprintf(`splitter_rollout_webhook_events_total{hook="down",outcome="failed",service="api"} %d`, len(s.History)))
	})
	if !strings.Contains(metrics, fmt.Sprintf(`splitter_rollout_webhook_events_total{hook="chat",outcome="delivered",service="api"} %d`, len(s.History))) {
		t.Errorf("metrics:\n%s", grepLines(metrics, "webhook"))
	}
}

// TestRolloutFailingFor: with failing_for 3s (window 1s), a 1s burst of
// errors is not rolled back; continuous errors are, and the history shows
// the rollback came at least 3s after the first failing verdict, which
// came after the errors began.
func TestRolloutFailingFor(t *testing.T) {
	b := newRolloutBed(t, envoy.ModeExtProc, `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [20, 50, 100]
      hold: 1h
      guard: {window: 1s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2, failing_for: 3s}
`)
	tr := startTraffic(t, b.client, 2)
	defer tr.Halt()
	b.act(t, rollout.Start)
	b.waitRollout(t, 30*time.Second, "a healthy window", func(s rollout.Status) bool {
		return s.Verdict != nil && s.Verdict.Result == rollout.Healthy && s.Verdict.Covered.D() == time.Second
	})
	b.backends[1].Fail(50)
	sawFailing := false
	burst := time.Now().Add(time.Second)
	for time.Now().Before(burst) {
		if s := b.rollout(t); s.Verdict != nil && s.Verdict.Result == rollout.Failing {
			sawFailing = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	first, _ := b.backends[1].Faults.FirstFailure()
	b.backends[1].Fail(0)
	// The burst leaves the window within a second; then healthy verdicts
	// end the failing run.
	s := b.waitRollout(t, 30*time.Second, "healthy again", func(s rollout.Status) bool {
		return s.Verdict != nil && s.Verdict.Result == rollout.Healthy && s.Verdict.At.After(burst.Add(time.Second))
	})
	if s.State != rollout.Progressing || !sawFailing {
		t.Fatalf("after a 1s burst: %s (saw a failing verdict: %v), history %+v; want progressing", s.State, sawFailing, s.History)
	}
	t.Logf("burst from %v: no rollback", first.Format(time.StampMilli))

	b.backends[1].Fail(50)
	s = b.waitRollout(t, 30*time.Second, "the rollback", func(s rollout.Status) bool { return s.State != rollout.Progressing })
	first, _ = b.backends[1].Faults.FirstFailure()
	rb := s.History[len(s.History)-1]
	if s.State != rollout.RolledBack || rb.Verdict == nil || rb.Verdict.FailingFor.D() < 3*time.Second {
		t.Fatalf("continuous errors: %s, last %+v (verdict %+v)", s.State, rb, rb.Verdict)
	}
	firstFailing := rb.At.Add(-rb.Verdict.FailingFor.D())
	if firstFailing.Before(first) {
		t.Fatalf("the first failing verdict (%v) came before the errors (%v)", firstFailing, first)
	}
	t.Logf("errors from %v, first failing verdict +%v, rollback +%v: %s", first.Format(time.StampMilli),
		firstFailing.Sub(first).Round(time.Millisecond), rb.At.Sub(first).Round(time.Millisecond), rb.Reason)
}

// metricsText is the admin port's /metrics.
func metricsText(b *bed) (string, error) {
	resp, err := http.Get(b.admin.AdminURL("/metrics"))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return string(data), err
}
