package rollout_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// rolloutYAML: steps 5, 25, 50, 100; hold 10s; a 2s window of at least 20
// canary requests, 1 % and 2 x stable.
const rolloutYAML = `services:
  - name: api
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 10s
      guard: {window: 2s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2}
  - name: plain
    hosts: [plain.example.com]
    weights: {v1: 100, v2: 0}
`

const tick = 250 * time.Millisecond

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
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
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// bed is a Manager over a real store (with a state file), in-process
// counters as its signal source and a clock the test moves.
type bed struct {
	t         *testing.T
	clock     *clock
	statePath string
	store     *store.Store
	counters  *signals.Counters
	m         *rollout.Manager
	logs      *syncBuffer
}

func newBed(t *testing.T, statePath string, c *clock) *bed {
	t.Helper()
	return newBedWith(t, statePath, c, nil)
}

// newBedWith is newBed with the Manager's options changed by opts.
func newBedWith(t *testing.T, statePath string, c *clock, opts func(*rollout.Options)) *bed {
	t.Helper()
	if statePath == "" {
		statePath = filepath.Join(t.TempDir(), "state.json")
	}
	if c == nil {
		c = &clock{now: t0}
	}
	b := &bed{t: t, clock: c, statePath: statePath, counters: &signals.Counters{}, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(b.logs, nil))
	st, err := store.New(store.Options{StateFile: statePath, Logger: log, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	b.store = st
	b.applyFile(rolloutYAML)
	o := rollout.Options{
		Store: st, Evidence: rollout.NewLocal(b.counters, tick), Interval: tick, Logger: log, Now: c.Now,
	}
	if opts != nil {
		opts(&o)
	}
	b.m, err = rollout.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *bed) applyFile(yaml string) {
	b.t.Helper()
	cfg, err := split.Parse([]byte(yaml), split.ParseOptions{})
	if err != nil {
		b.t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(yaml))
	if _, err := b.store.ApplyFile(cfg, hex.EncodeToString(sum[:]), "test.yaml"); err != nil {
		b.t.Fatal(err)
	}
}

// traffic is what each version answers during one tick.
type traffic struct{ stable, stableErrs, canary, canaryErrs int }

func (b *bed) serve(tr traffic) {
	for i := range tr.stable {
		b.counters.Record("api", "v1", map[bool]int{true: 503, false: 200}[i < tr.stableErrs], false)
	}
	for i := range tr.canary {
		b.counters.Record("api", "v2", map[bool]int{true: 500, false: 200}[i < tr.canaryErrs], false)
	}
}

// run ticks for d, serving tr before every tick; it stops early when stop
// (if not nil) holds after a tick, and returns how long it ran.
func (b *bed) run(d time.Duration, tr traffic, stop func(rollout.Status) bool) time.Duration {
	b.t.Helper()
	for ran := time.Duration(0); ran < d; {
		b.clock.Add(tick)
		ran += tick
		b.serve(tr)
		b.m.Tick(b.t.Context())
		if stop != nil && stop(b.status()) {
			return ran
		}
	}
	return d
}

func (b *bed) status() rollout.Status {
	b.t.Helper()
	s, err := b.m.Status("api")
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

func (b *bed) act(a rollout.Action) rollout.Status {
	b.t.Helper()
	s, err := b.m.Act(b.t.Context(), "api", a, "op")
	if err != nil {
		b.t.Fatalf("%s: %v", a, err)
	}
	return s
}

// canaryShare is the canary's effective share in the store, in percent.
func (b *bed) canaryShare() string {
	svc, _ := b.store.Table().Service("api")
	v2, _ := svc.Weights.Get("v2")
	v1, _ := svc.Weights.Get("v1")
	if v1+v2 != split.Buckets {
		b.t.Fatalf("weights %s do not sum to 100", svc.Weights)
	}
	return split.FormatPercent(v2)
}

var healthy = traffic{stable: 30, canary: 10}

func TestHealthyCanaryStepsToPromotion(t *testing.T) {
	b := newBed(t, "", nil)
	if s := b.act(rollout.Start); s.State != rollout.Progressing || s.Step != 1 || b.canaryShare() != "5" {
		t.Fatalf("after start: %s step %d, canary %s%%", s.State, s.Step, b.canaryShare())
	}
	for _, want := range []struct {
		step  int
		share string
		phase rollout.Phase
	}{{2, "25", rollout.Progressing}, {3, "50", rollout.Progressing}, {4, "100", rollout.Promoted}} {
		before := b.status().Step
		took := b.run(time.Minute, healthy, func(s rollout.Status) bool { return s.Step != before })
		s := b.status()
		if s.Step != want.step || s.State != want.phase || b.canaryShare() != want.share {
			t.Fatalf("got %s step %d with the canary at %s%%, want %s step %d at %s%%", s.State, s.Step, b.canaryShare(), want.phase, want.step, want.share)
		}
		// Each step is held 10s (the first also waits for 2s of window,
		// which the hold covers).
		if took < 10*time.Second || took > 10*time.Second+tick {
			t.Errorf("step %d after %v, want the 10s hold", want.step, took)
		}
		if v := s.History[len(s.History)-1].Verdict; v == nil || v.Result != rollout.Healthy || v.Canary.Requests < 20 {
			t.Errorf("transition verdict %+v: want healthy with at least min_requests", v)
		}
	}
	// Promoted is final: the guard no longer moves the canary.
	b.run(30*time.Second, traffic{stable: 0, canary: 40, canaryErrs: 40}, nil)
	if s := b.status(); s.State != rollout.Promoted || b.canaryShare() != "100" {
		t.Fatalf("after promotion: %s at %s%%", s.State, b.canaryShare())
	}
	if !strings.Contains(b.logs.String(), `msg="rollout transition" service=api from=progressing to=promoted`) {
		t.Errorf("the promotion is not logged:\n%s", b.logs.String())
	}
}

func TestFailingCanaryRollsBackAtOnce(t *testing.T) {
	b := newBed(t, "", nil)
	b.act(rollout.Start)
	b.run(time.Minute, healthy, func(s rollout.Status) bool { return s.Step == 2 })
	// Half of the canary's answers fail from now on.
	took := b.run(10*time.Second, traffic{stable: 30, canary: 10, canaryErrs: 5}, func(s rollout.Status) bool { return s.State != rollout.Progressing })
	s := b.status()
	if s.State != rollout.RolledBack || b.canaryShare() != "0" {
		t.Fatalf("got %s with the canary at %s%%, want rolled_back at 0", s.State, b.canaryShare())
	}
	if took != tick {
		t.Errorf("rolled back after %v: want the first tick that saw the errors", took)
	}
	last := s.History[len(s.History)-1]
	if last.Actor != rollout.Actor || last.Verdict == nil || last.Verdict.Result != rollout.Failing || last.Verdict.Canary.Errors != 5 ||
		!strings.Contains(last.Reason, "above max_error_rate 1%") {
		t.Fatalf("rollback transition %+v (verdict %+v): want the failing numbers", last, last.Verdict)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "to=rolled_back") || !strings.Contains(logs, "canary_errors=5") {
		t.Errorf("the rollback is not logged with its numbers:\n%s", logs)
	}

	// It stays at 0 however healthy things look, until started again.
	b.run(time.Minute, healthy, nil)
	if s := b.status(); s.State != rollout.RolledBack || b.canaryShare() != "0" {
		t.Fatalf("a minute later: %s at %s%%", s.State, b.canaryShare())
	}
	if s := b.act(rollout.Start); s.State != rollout.Progressing || s.Step != 1 || b.canaryShare() != "5" {
		t.Fatalf("started again: %s step %d at %s%%", s.State, s.Step, b.canaryShare())
	}
	// Started again, it is judged on fresh evidence, not on the failure
	// still inside the window.
	b.run(tick, healthy, nil)
	if s := b.status(); s.State != rollout.Progressing {
		t.Fatalf("restarted rollout judged on old evidence: %s (%s)", s.State, s.Verdict.Reason)
	}
}

func TestQuietServiceIsInconclusive(t *testing.T) {
	b := newBed(t, "", nil)
	b.act(rollout.Start)
	// Every canary answer fails, but there are 2 per tick: 16 in the 2s
	// window, fewer than min_requests 20.
	b.run(2*time.Minute, traffic{stable: 30, canary: 2, canaryErrs: 2}, nil)
	s := b.status()
	if s.State != rollout.Progressing || s.Step != 1 || b.canaryShare() != "5" {
		t.Fatalf("quiet failing canary: %s step %d at %s%%, want it left at step 1", s.State, s.Step, b.canaryShare())
	}
	if s.Verdict == nil || s.Verdict.Result != rollout.Inconclusive || s.Verdict.Canary.Errors == 0 ||
		!strings.Contains(s.Verdict.Reason, "fewer than min_requests 20") {
		t.Fatalf("verdict %+v: want inconclusive, with the errors it saw", s.Verdict)
	}
}

func TestShortBurstBelowTheRule(t *testing.T) {
	for _, tc := range []struct {
		name      string
		burstErrs int
		rolled    bool
	}{
		// 100 canary requests a tick: 800 in the 2s window. 7 errors is
		// 0.875 %, below 1 %; 9 is 1.125 %, above it.
		{"7 errors in one tick", 7, false},
		{"9 errors in one tick", 9, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, "", nil)
			b.act(rollout.Start)
			busy := traffic{stable: 300, canary: 100}
			b.run(3*time.Second, busy, nil)
			burst := busy
			burst.canaryErrs = tc.burstErrs
			b.run(tick, burst, nil)
			b.run(5*time.Second, busy, nil)
			if got := b.status().State == rollout.RolledBack; got != tc.rolled {
				t.Fatalf("rolled back: %v, want %v (verdict %+v)", got, tc.rolled, b.status().Verdict)
			}
		})
	}
}

// TestRestartResumes: a new process on the same state file is at the same
// step, with the hold counted from the step's start (the time it was down
// included), and it still waits for a full window of its own readings.
func TestRestartResumes(t *testing.T) {
	b := newBed(t, "", nil)
	b.act(rollout.Start)
	b.run(time.Minute, healthy, func(s rollout.Status) bool { return s.Step == 2 })
	stepAt := b.status().Since
	b.run(4*time.Second, healthy, nil)

	b.clock.Add(3 * time.Second) // down for 3s
	next := newBed(t, b.statePath, b.clock)
	s := next.status()
	if s.State != rollout.Progressing || s.Step != 2 || !s.Since.Equal(stepAt) || next.canaryShare() != "25" {
		t.Fatalf("after the restart: %s step %d since %v at %s%%, want step 2 since %v at 25%%", s.State, s.Step, s.Since, next.canaryShare(), stepAt)
	}
	if s.Held.D() != 7*time.Second {
		t.Fatalf("held %v after the restart, want 7s (4s up, 3s down)", s.Held.D())
	}
	took := next.run(time.Minute, healthy, func(s rollout.Status) bool { return s.Step == 3 })
	if took != 3*time.Second {
		t.Fatalf("stepped %v after the restart, want 3s: the rest of the hold", took)
	}
}

// TestInterruptedTransitionIsFinished: a state saved as being applied (a
// crash between saving a rollback and applying its weights) gets its
// weights at the first tick of the next process.
func TestInterruptedTransitionIsFinished(t *testing.T) {
	b := newBed(t, "", nil)
	b.act(rollout.Start)
	b.run(time.Minute, healthy, func(s rollout.Status) bool { return s.Step == 2 })
	st := rollout.State{Service: "api", Phase: rollout.RolledBack, Canary: "v2", Stable: "v1", Step: 2, Weight: 0, Since: b.clock.Now(), Applying: true}
	doc, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.store.SaveRollout("api", doc); err != nil {
		t.Fatal(err)
	}
	next := newBed(t, b.statePath, b.clock)
	if next.canaryShare() != "25" {
		t.Fatalf("before the first tick the old override is in force, got %s%%", next.canaryShare())
	}
	next.m.Tick(t.Context())
	if next.canaryShare() != "0" || next.status().State != rollout.RolledBack {
		t.Fatalf("after the first tick: canary %s%%, state %s", next.canaryShare(), next.status().State)
	}
	raw := next.store.Rollouts()["api"]
	if strings.Contains(string(raw), `"applying"`) {
		t.Fatalf("the saved state still says applying: %s", raw)
	}
}

// TestProgressingRolloutOwnsTheWeights: a file reload that changes the
// service's weights drops the rollout's override; the next tick puts the
// step's weights back. A paused rollout leaves them alone.
func TestProgressingRolloutOwnsTheWeights(t *testing.T) {
	b := newBed(t, "", nil)
	b.act(rollout.Start)
	if _, owns := b.m.Owns("api"); !owns {
		t.Fatal("a progressing rollout must own the weights")
	}
	b.applyFile(strings.Replace(rolloutYAML, "weights: {v1: 100, v2: 0}\n    rollout", "weights: {v1: 90, v2: 10}\n    rollout", 1))
	if b.canaryShare() != "10" {
		t.Fatalf("the reload should have dropped the override, canary at %s%%", b.canaryShare())
	}
	b.run(tick, healthy, nil)
	if b.canaryShare() != "5" {
		t.Fatalf("after a tick the canary is at %s%%, want the step's 5%%", b.canaryShare())
	}

	b.act(rollout.Pause)
	if phase, owns := b.m.Owns("api"); owns || phase != rollout.Paused {
		t.Fatalf("a paused rollout: owns %v (%s)", owns, phase)
	}
	if _, err := b.store.SetCanary(t.Context(), "api", 0, "op"); err != nil {
		t.Fatal(err)
	}
	b.run(time.Second, healthy, nil)
	if b.canaryShare() != "0" {
		t.Fatalf("paused: the operator's 0%% was replaced by %s%%", b.canaryShare())
	}
	b.act(rollout.Resume)
	if b.canaryShare() != "5" {
		t.Fatalf("resume puts the step's weights back, got %s%%", b.canaryShare())
	}
}

func TestConfigurationRemovesTheRollout(t *testing.T) {
	b := newBed(t, "", nil)
	b.act(rollout.Start)
	b.run(time.Minute, healthy, func(s rollout.Status) bool { return s.Step == 2 })
	cut := rolloutYAML[:strings.Index(rolloutYAML, "    rollout:")] + rolloutYAML[strings.Index(rolloutYAML, "  - name: plain"):]
	b.applyFile(cut)
	b.m.Tick(t.Context())
	raw := b.store.Rollouts()["api"]
	var st rollout.State
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.Phase != rollout.Aborted || b.canaryShare() != "0" ||
		!strings.Contains(st.History[len(st.History)-1].Reason, "no longer has a rollout") {
		t.Fatalf("after the rollout block was removed: %s, canary %s%%", raw, b.canaryShare())
	}
	if _, err := b.m.Status("api"); !errors.Is(err, rollout.ErrNoRollout) {
		t.Fatalf("status without a rollout block: %v", err)
	}
}

func TestActErrors(t *testing.T) {
	b := newBed(t, "", nil)
	if _, err := b.m.Act(t.Context(), "nope", rollout.Start, "op"); !errors.Is(err, split.ErrUnknownService) {
		t.Errorf("unknown service: %v", err)
	}
	if _, err := b.m.Act(t.Context(), "plain", rollout.Start, "op"); !errors.Is(err, rollout.ErrNoRollout) {
		t.Errorf("service without a rollout: %v", err)
	}
	if _, err := b.m.Act(t.Context(), "api", "restart", "op"); !errors.Is(err, rollout.ErrUnknownAction) {
		t.Errorf("unknown action: %v", err)
	}
	if _, err := b.m.Act(t.Context(), "api", rollout.Resume, "op"); !errors.Is(err, rollout.ErrConflict) {
		t.Errorf("resume an idle rollout: %v", err)
	}

	blind, err := rollout.New(t.Context(), rollout.Options{Store: b.store})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blind.Act(t.Context(), "api", rollout.Start, "op"); !errors.Is(err, rollout.ErrConflict) ||
		!strings.Contains(err.Error(), "envoy_admin") {
		t.Errorf("start without a signal source: %v", err)
	}
}

// failingSource cannot be read.
type failingSource struct{}

func (failingSource) Read(context.Context, []signals.Target, []signals.Counts) error {
	return errors.New("connection refused")
}

func TestUnreadableSignalsMoveNothing(t *testing.T) {
	b := newBed(t, "", nil)
	m, err := rollout.New(t.Context(), rollout.Options{
		Store: b.store, Evidence: rollout.NewLocal(failingSource{}, tick), Now: b.clock.Now,
		Logger: slog.New(slog.NewTextHandler(b.logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Act(t.Context(), "api", rollout.Start, "op"); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		b.clock.Add(tick)
		m.Tick(t.Context())
	}
	s, _ := m.Status("api")
	if s.State != rollout.Progressing || s.Step != 1 || !strings.Contains(s.SignalError, "connection refused") {
		t.Fatalf("without signals: %s step %d, signal error %q", s.State, s.Step, s.SignalError)
	}
	if n := strings.Count(b.logs.String(), "cannot read the rollout signals"); n != 1 {
		t.Errorf("the signal error was logged %d times, want once", n)
	}
}

func TestCorruptStateIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(`{"file_sha256":"","overrides":{},"rollouts":{"api":{"phase":"flying"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.New(store.Options{StateFile: path})
	if err != nil {
		t.Fatal(err)
	}
	_, err = rollout.New(t.Context(), rollout.Options{Store: st})
	if err == nil || !strings.Contains(err.Error(), `rollouts.api: unknown phase "flying"`) {
		t.Fatalf("corrupt rollout state: %v", err)
	}
}

func TestCollector(t *testing.T) {
	b := newBed(t, "", nil)
	b.act(rollout.Start)
	b.run(time.Second, traffic{stable: 30, canary: 2}, nil) // 4 inconclusive verdicts
	const want = `
# HELP splitter_rollout_state 1 for the state the service's rollout is in (idle, progressing, paused, waiting, promoted, rolled_back, aborted), 0 for the others.
# TYPE splitter_rollout_state gauge
splitter_rollout_state{service="api",state="aborted"} 0
splitter_rollout_state{service="api",state="idle"} 0
splitter_rollout_state{service="api",state="paused"} 0
splitter_rollout_state{service="api",state="progressing"} 1
splitter_rollout_state{service="api",state="promoted"} 0
splitter_rollout_state{service="api",state="rolled_back"} 0
splitter_rollout_state{service="api",state="waiting"} 0
# HELP splitter_rollout_step The rollout's step in force, 1..number of steps; 0 before the first.
# TYPE splitter_rollout_step gauge
splitter_rollout_step{service="api"} 1
# HELP splitter_rollout_canary_percent The canary's share the rollout set, in percent.
# TYPE splitter_rollout_canary_percent gauge
splitter_rollout_canary_percent{service="api"} 5
# HELP splitter_rollout_verdicts_total Guard verdicts on the canary (healthy, failing, inconclusive), one per tick while the rollout is progressing, paused or waiting.
# TYPE splitter_rollout_verdicts_total counter
splitter_rollout_verdicts_total{result="failing",service="api"} 0
splitter_rollout_verdicts_total{result="healthy",service="api"} 0
splitter_rollout_verdicts_total{result="inconclusive",service="api"} 4
`
	if err := testutil.CollectAndCompare(b.m.Collector(), strings.NewReader(want),
		"splitter_rollout_state", "splitter_rollout_step", "splitter_rollout_canary_percent", "splitter_rollout_verdicts_total"); err != nil {
		t.Error(err)
	}
}

// TestConcurrentActionsAndTicks: admin actions racing the loop (under -race).
func TestConcurrentActionsAndTicks(t *testing.T) {
	b := newBed(t, "", nil)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(t.Context())
	wg.Go(func() {
		for ctx.Err() == nil {
			b.serve(healthy)
			b.m.Tick(ctx)
		}
	})
	for i := range 200 {
		_, _ = b.m.Act(t.Context(), "api", rollout.Actions()[i%len(rollout.Actions())], "op")
		_, _ = b.m.Status("api")
		b.m.Owns("api")
	}
	cancel()
	wg.Wait()
}
