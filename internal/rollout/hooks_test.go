package rollout_test

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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/split"
)

// receiver is a webhook receiver: it answers with the status the test
// sets, keeps every call, and checks signatures when it has a key.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	key    []byte
	status atomic.Int32
	mu     sync.Mutex
	calls  []rollout.Payload
	nodes  map[string]int
	bad    []string // calls with a wrong or missing signature
}

func newReceiver(t *testing.T, status int, key []byte) *receiver {
	r := &receiver{t: t, key: key, nodes: map[string]int{}}
	r.status.Store(int32(status))
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	var p rollout.Payload
	err := json.Unmarshal(body, &p)
	r.mu.Lock()
	if err != nil {
		r.bad = append(r.bad, "not a payload: "+err.Error())
	}
	if r.key != nil {
		want := rollout.Sign(r.key, body)
		if got := req.Header.Get(rollout.SignatureHeader); !hmac.Equal([]byte(got), []byte(want)) {
			r.bad = append(r.bad, fmt.Sprintf("signature %q, want %q", got, want))
		}
	}
	r.calls = append(r.calls, p)
	r.nodes[p.Node]++
	r.mu.Unlock()
	code := int(r.status.Load())
	w.WriteHeader(code)
	fmt.Fprintf(w, "said %d\n(second line)", code)
}

func (r *receiver) payloads() []rollout.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rollout.Payload(nil), r.calls...)
}

func (r *receiver) url(path string) string { return r.srv.URL + path }

// until ticks (the clock one tick each, real time a little, so that the
// hooks' goroutines run) serving tr, until cond holds; it fails after
// timeout of real time.
func (b *bed) until(timeout time.Duration, tr traffic, what string, cond func(rollout.Status) bool) rollout.Status {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b.clock.Add(tick)
		b.serve(tr)
		b.m.Tick(b.t.Context())
		s := b.status()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("no %s within %v: %s step %d, waiting %+v, verdict %+v", what, timeout, s.State, s.Step, s.Waiting, s.Verdict)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hooksYAML(hooks string) string {
	return `services:
  - name: api
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 1s
      guard: {window: 1s, min_requests: 5, max_error_rate: 1, max_error_ratio: 2}
      webhooks:
` + hooks
}

// TestConfirmStepHoldsUntil2xx: a confirm_step hook answering 403 holds
// the rollout at its step long past the hold: it waits, naming the hook
// and its last answer, asking again every poll; once it answers 200 the
// rollout steps on (asking again before each step) to promotion.
func TestConfirmStepHoldsUntil2xx(t *testing.T) {
	gate := newReceiver(t, http.StatusForbidden, nil)
	b := newBed(t, "", nil)
	b.applyFile(hooksYAML(fmt.Sprintf("        - {name: approve, type: confirm_step, url: %q, poll: 100ms, timeout: 1s}\n", gate.url("/approve"))))
	b.act(rollout.Start)
	s := b.until(10*time.Second, healthy, "a wait", func(s rollout.Status) bool {
		return s.State == rollout.Waiting && s.Waiting != nil && s.Waiting.Asked >= 3
	})
	w := s.Waiting
	if s.Step != 1 || w.Hook != "approve" || w.Type != split.HookConfirmStep || w.NextStep != 2 || w.NextWeight != 2500 ||
		!strings.HasPrefix(w.LastAnswer, "403 Forbidden: said 403") || strings.Contains(w.LastAnswer, "second line") {
		t.Fatalf("waiting: step %d, %+v", s.Step, w)
	}
	// Long past the hold (the clock moves a tick per round): still there.
	held := b.clock.Now()
	s = b.until(10*time.Second, healthy, "more asks", func(s rollout.Status) bool { return s.Waiting != nil && s.Waiting.Asked >= 6 })
	if s.State != rollout.Waiting || s.Step != 1 || b.canaryShare() != "5" || b.clock.Now().Sub(held) < time.Second {
		t.Fatalf("a 403 gate let the rollout move: %s step %d at %s%%", s.State, s.Step, b.canaryShare())
	}
	p := gate.payloads()[0]
	if p.Service != "api" || p.Type != "confirm_step" || p.Hook != "approve" || p.State != rollout.Waiting || p.Step != 1 ||
		p.Weight != 500 || p.NextStep != 2 || p.Canary != "v2" || p.Stable != "v1" || p.Verdict == nil || p.Time.IsZero() {
		t.Fatalf("payload %+v", p)
	}
	gate.status.Store(http.StatusOK)
	s = b.until(20*time.Second, healthy, "promotion", func(s rollout.Status) bool { return s.State == rollout.Promoted })
	var moves []string
	for _, tr := range s.History {
		moves = append(moves, fmt.Sprintf("%s@%d", tr.To, tr.Step))
	}
	want := "progressing@1 waiting@1 progressing@2 waiting@2 progressing@3 waiting@3 promoted@4"
	if got := strings.Join(moves, " "); got != want {
		t.Fatalf("history %s, want %s", got, want)
	}
	if last := s.History[len(s.History)-1]; !strings.Contains(last.Reason, "hooks approve answered 2xx: last step reached") {
		t.Errorf("promotion reason %q", last.Reason)
	}
	if s.Waiting != nil {
		t.Errorf("a promoted rollout waits on %+v", s.Waiting)
	}
}

// TestGateStillRollsBack: while a confirm_step hook keeps answering 403,
// a failing canary is rolled back all the same, and the hook is no longer
// asked.
func TestGateStillRollsBack(t *testing.T) {
	gate := newReceiver(t, http.StatusForbidden, nil)
	b := newBed(t, "", nil)
	b.applyFile(hooksYAML(fmt.Sprintf("        - {name: approve, type: confirm_step, url: %q, poll: 100ms}\n", gate.url("/approve"))))
	b.act(rollout.Start)
	b.until(10*time.Second, healthy, "a wait", func(s rollout.Status) bool { return s.Waiting != nil && s.Waiting.Asked >= 1 })
	s := b.until(10*time.Second, traffic{stable: 30, canary: 10, canaryErrs: 5}, "the rollback", func(s rollout.Status) bool {
		return s.State != rollout.Waiting
	})
	if s.State != rollout.RolledBack || b.canaryShare() != "0" {
		t.Fatalf("a failing canary while waiting: %s at %s%%", s.State, b.canaryShare())
	}
	rb := s.History[len(s.History)-1]
	if rb.From != rollout.Waiting || rb.Verdict == nil || rb.Verdict.Result != rollout.Failing {
		t.Fatalf("rollback %+v", rb)
	}
	asked := len(gate.payloads())
	for range 10 {
		b.clock.Add(tick)
		b.m.Tick(t.Context())
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(gate.payloads()); n > asked+1 {
		t.Errorf("the hook was asked %d more times after the rollback", n-asked)
	}
}

// TestPreStep: pre_step hooks are asked before each step's weight is
// applied, the first one included (the rollout starts waiting at 0); one
// that fails every attempt fails the canary, naming the hook.
func TestPreStep(t *testing.T) {
	t.Run("answering 200", func(t *testing.T) {
		smoke := newReceiver(t, http.StatusOK, nil)
		b := newBed(t, "", nil)
		b.applyFile(hooksYAML(fmt.Sprintf("        - {name: smoke, type: pre_step, url: %q}\n", smoke.url("/smoke"))))
		if s := b.act(rollout.Start); s.State != rollout.Waiting || s.Step != 0 || b.canaryShare() != "0" || s.Waiting.NextStep != 1 {
			t.Fatalf("start with a pre_step hook: %s step %d at %s%%, %+v", s.State, s.Step, b.canaryShare(), s.Waiting)
		}
		s := b.until(10*time.Second, healthy, "the first step", func(s rollout.Status) bool { return s.State == rollout.Progressing })
		if s.Step != 1 || b.canaryShare() != "5" {
			t.Fatalf("after the hook: step %d at %s%%", s.Step, b.canaryShare())
		}
		s = b.until(10*time.Second, healthy, "the second step", func(s rollout.Status) bool { return s.Step == 2 && s.State == rollout.Progressing })
		if n := len(smoke.payloads()); n != 2 {
			t.Errorf("the hook was called %d times for two steps", n)
		}
		if p := smoke.payloads()[1]; p.NextStep != 2 || p.NextWeight == nil || *p.NextWeight != 2500 || p.Type != "pre_step" {
			t.Errorf("payload %+v", p)
		}
	})
	t.Run("failing", func(t *testing.T) {
		smoke := newReceiver(t, http.StatusInternalServerError, nil)
		b := newBed(t, "", nil)
		b.applyFile(hooksYAML(fmt.Sprintf("        - {name: smoke, type: pre_step, url: %q, retries: 1}\n", smoke.url("/smoke"))))
		b.act(rollout.Start)
		s := b.until(10*time.Second, healthy, "the rollback", func(s rollout.Status) bool { return s.State != rollout.Waiting })
		rb := s.History[len(s.History)-1]
		if s.State != rollout.RolledBack || rb.Verdict == nil || rb.Verdict.Result != rollout.Failing ||
			!strings.Contains(rb.Verdict.Reason, "pre_step hook smoke failed 2 times: 500 Internal Server Error") {
			t.Fatalf("%s, last transition %+v (verdict %+v)", s.State, rb, rb.Verdict)
		}
		if n := len(smoke.payloads()); n != 2 {
			t.Errorf("called %d times, want 1 + retries 1", n)
		}
	})
}

// TestEventsSignedAndNeverBlock: every transition reaches an event hook,
// in order, signed with the secret file's key; a hook that is down and
// one that hangs without answering hold nothing back: the rollout is
// promoted while the hanging one has answered nothing. Delivery is
// counted per hook.
func TestEventsSignedAndNeverBlock(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("k3y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := newReceiver(t, http.StatusNoContent, []byte("k3y"))
	release := make(chan struct{})
	var hung atomic.Int32
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/down"
	ln.Close()

	b := newBed(t, "", nil)
	b.applyFile(hooksYAML(fmt.Sprintf(`        - {name: chat, type: event, url: %q, secret_file: %q}
        - {name: hang, type: event, url: %q, timeout: 1m, retries: 0}
        - {name: down, type: event, url: %q, timeout: 1s, retries: 1}
`, good.url("/chat"), secret, hang.URL, down)))
	b.act(rollout.Start)
	s := b.until(10*time.Second, healthy, "promotion", func(s rollout.Status) bool { return s.State == rollout.Promoted })
	if hung.Load() == 0 {
		t.Fatal("the hanging hook was never called")
	}
	waitFor(t, 10*time.Second, "every event at the good hook", func() bool { return len(good.payloads()) == len(s.History) })
	for i, p := range good.payloads() {
		tr := s.History[i]
		if p.Type != "event" || p.Hook != "chat" || p.Transition == nil || p.Transition.To != tr.To || p.Transition.Step != tr.Step ||
			p.State != tr.To || p.Step != tr.Step || p.Weight != tr.Weight || !p.Transition.At.Equal(tr.At) {
			t.Errorf("event %d: %+v (transition %+v), want %+v", i, p, p.Transition, tr)
		}
	}
	if len(good.bad) > 0 {
		t.Errorf("bad calls: %v", good.bad)
	}
	n := float64(len(s.History))
	waitFor(t, 20*time.Second, "the down hook's failures counted", func() bool {
		return eventCount(t, b.m, "down", "failed") == n
	})
	if v := eventCount(t, b.m, "chat", "delivered"); v != n {
		t.Errorf("chat delivered %v, want %v", v, n)
	}
}

// TestEventOnAbortByReload: a reload that removes the rollout block aborts
// the rollout; the abort is told to the event hooks of the configuration
// the rollout ran under, though the new one has none.
func TestEventOnAbortByReload(t *testing.T) {
	good := newReceiver(t, http.StatusNoContent, nil)
	b := newBed(t, "", nil)
	b.applyFile(hooksYAML(fmt.Sprintf("        - {name: chat, type: event, url: %q}\n", good.url("/chat"))))
	b.act(rollout.Start)
	b.until(10*time.Second, healthy, "a verdict", func(s rollout.Status) bool { return s.Verdict != nil })
	b.applyFile(`services:
  - name: api
    stable: v1
    weights: {v1: 100, v2: 0}
`)
	b.m.Tick(t.Context())
	var st rollout.State
	if err := json.Unmarshal(b.store.Rollouts()["api"], &st); err != nil || st.Phase != rollout.Aborted {
		t.Fatalf("after the reload: %s (%v), want aborted", st.Phase, err)
	}
	waitFor(t, 10*time.Second, "the abort at the hook", func() bool { return len(good.payloads()) == len(st.History) })
	last := good.payloads()[len(st.History)-1]
	if last.State != rollout.Aborted || last.Transition == nil || !strings.Contains(last.Transition.Reason, "no longer has a rollout") {
		t.Fatalf("last event %+v (transition %+v), want the abort by the reload", last, last.Transition)
	}
}

// TestEventQueueBounded: a hook that hangs fills its queue; what does not
// fit is dropped and counted, and the transitions go on.
func TestEventQueueBounded(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	b := newBed(t, "", nil)
	b.applyFile(hooksYAML(fmt.Sprintf("        - {name: hang, type: event, url: %q, timeout: 1m, retries: 0}\n", hang.URL)))
	transitions := 0
	for range rollout.EventQueue + 20 {
		b.act(rollout.Start)
		b.act(rollout.Abort)
		transitions += 2
	}
	// One is being sent, EventQueue wait: the rest were dropped.
	want := float64(transitions - rollout.EventQueue - 1)
	if v := eventCount(t, b.m, "hang", "dropped"); v != want {
		t.Fatalf("dropped %v, want %v", v, want)
	}
}

// TestOnlyTheLeaderCallsHooks: a replica that does not lead neither asks
// gates nor tells event hooks; when it leads, it does.
func TestOnlyTheLeaderCallsHooks(t *testing.T) {
	gate := newReceiver(t, http.StatusForbidden, nil)
	events := newReceiver(t, http.StatusOK, nil)
	states, el := newRevStates(), &switchElector{}
	b := sharedBed(t, states, el)
	b.applyFile(hooksYAML(fmt.Sprintf(`        - {name: approve, type: confirm_step, url: %q, poll: 100ms}
        - {name: chat, type: event, url: %q}
`, gate.url("/approve"), events.url("/chat"))))
	el.lead.Store(true)
	b.run(tick, healthy, nil) // this replica leads from its first tick
	b.act(rollout.Start)
	b.until(10*time.Second, healthy, "asking the gate", func(s rollout.Status) bool { return s.Waiting != nil && s.Waiting.Asked > 0 })
	waitFor(t, 10*time.Second, "two events", func() bool { return len(events.payloads()) == 2 })
	el.lead.Store(false)
	b.run(tick, healthy, nil) // stops the gate
	asked, told := len(gate.payloads()), len(events.payloads())
	b.act(rollout.Pause) // a transition made on a replica that does not lead
	for range 10 {
		b.clock.Add(tick)
		b.m.Tick(t.Context())
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(gate.payloads()); n > asked {
		t.Errorf("a follower asked the gate %d times", n-asked)
	}
	if n := len(events.payloads()); n != told {
		t.Errorf("a follower told %d events", n-told)
	}
	// Leading again, it tells the event hooks of what other replicas do
	// (it follows their transitions through the store's watch).
	el.lead.Store(true)
	b.run(tick, healthy, nil)
	svc, _ := b.store.Table().Service("api")
	resumed, err := rollout.Act(mustLoad(t, states)["api"], svc.Rollout, "v1", rollout.Resume, b.clock.Now(), "op")
	if err != nil {
		t.Fatal(err)
	}
	resumed.History[len(resumed.History)-1].Node = "node-2"
	b.m.Observe(states.put(resumed))
	waitFor(t, 10*time.Second, "the followed transition told", func() bool { return len(events.payloads()) == told+1 })
	if p := events.payloads()[told]; p.Transition == nil || p.Transition.To != rollout.Progressing || p.Transition.Node != "node-2" {
		t.Errorf("followed transition told as %+v", p.Transition)
	}
	for _, p := range append(gate.payloads(), events.payloads()...) {
		if p.Node != "node-1" {
			t.Errorf("a call from node %q", p.Node)
		}
	}
}

// eventCount is splitter_rollout_webhook_events_total{service="api"} of
// hook and outcome.
func eventCount(t *testing.T, m *rollout.Manager, hook, outcome string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.HookCollector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "splitter_rollout_webhook_events_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["service"] == "api" && labels["hook"] == hook && labels["outcome"] == outcome {
				return mt.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no events_total for %s %s", hook, outcome)
	return 0
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A tick without readings neither asks a gate nor stops it: the hook goes
// on being asked from where it was.
func TestGateSurvivesUnreadableSignals(t *testing.T) {
	gate := newReceiver(t, http.StatusForbidden, nil)
	b, ev := scriptedBed(t, hooksYAML(fmt.Sprintf("        - {name: approve, type: confirm_step, url: %q, poll: 100ms}\n", gate.url("/approve"))))
	ev.set('H')
	b.act(rollout.Start)
	s := b.until(10*time.Second, traffic{}, "a wait", func(s rollout.Status) bool { return s.Waiting != nil && s.Waiting.Asked >= 2 })
	since := s.Waiting.Since
	ev.set('E')
	for range 5 {
		b.clock.Add(tick)
		b.m.Tick(t.Context())
		time.Sleep(50 * time.Millisecond)
	}
	ev.set('H')
	s = b.until(10*time.Second, traffic{}, "more asks", func(s rollout.Status) bool { return s.Waiting != nil && s.Waiting.Asked >= 5 })
	if !s.Waiting.Since.Equal(since) {
		t.Fatalf("the gate started again (since %v, then %v)", since, s.Waiting.Since)
	}
}
