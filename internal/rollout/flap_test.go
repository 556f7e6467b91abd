package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
)

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// scripted is Evidence whose totals the test sets before each tick, so
// that every verdict is exactly the one wanted.
type scripted struct {
	mu             sync.Mutex
	stable, canary signals.Counts
	lstable        signals.Histogram
	lcanary        signals.Histogram
	covered        time.Duration
	err            error
}

func (s *scripted) Sample(context.Context, time.Time, []rollout.Watch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *scripted) Totals(string, time.Time) (signals.Counts, signals.Counts, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stable, s.canary, s.covered
}

func (s *scripted) LatencyTotals(string, time.Time) (signals.Histogram, signals.Histogram, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lstable, s.lcanary, true
}

func (s *scripted) Forget(string) {}

// set makes the next verdicts r: F failing (50 % errors), H healthy, I
// inconclusive (too few requests), E no verdict (the signals cannot be
// read).
func (s *scripted) set(r byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err, s.stable, s.covered = nil, counts(1000, 0), 10*time.Second
	switch r {
	case 'F':
		s.canary = counts(100, 50)
	case 'H':
		s.canary = counts(100, 0)
	case 'I':
		s.canary = counts(1, 1)
	case 'E':
		s.err = errors.New("envoy admin: connection refused")
	}
}

// scriptedBed is a bed judged on scripted evidence under cfg.
func scriptedBed(t *testing.T, cfg string) (*bed, *scripted) {
	ev := &scripted{}
	b := newBedWith(t, "", nil, func(o *rollout.Options) { o.Evidence = ev })
	b.applyFile(cfg)
	return b, ev
}

const failingForYAML = `services:
  - name: api
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 1h
      guard: {window: 1s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2, failing_for: %s}
`

// TestFailingForBoundaries: with failing_for F, the guard rolls back on
// the first failing verdict that comes at least F after the first of an
// unbroken run of failing ones (ticks every 250ms here); a healthy or an
// inconclusive verdict breaks the run, a tick without a verdict does not;
// 0 is the first failing verdict.
func TestFailingForBoundaries(t *testing.T) {
	tests := []struct {
		name       string
		failingFor string
		verdicts   string
		rollbackAt int // index of the tick that rolls back, -1: none
		failedFor  time.Duration
	}{
		{"0: the first failing verdict", "0s", "HHF", 2, 0},
		{"1s: 1s of failing verdicts rolls back", "1s", "FFFFF", 4, time.Second},
		{"1s: 0.75s is not enough", "1s", "FFFFHHHH", -1, 0},
		{"1s: a healthy verdict restarts the span", "1s", "FFFHFFFFF", 8, time.Second},
		{"1s: an inconclusive verdict restarts it too", "1s", "FFFIFFFFF", 8, time.Second},
		{"1s: a tick without a verdict does not break it", "1s", "FFEEF", 4, time.Second},
		{"1s: unreadable before the first failing verdict", "1s", "EEFFFFF", 6, time.Second},
		{"3s: the e2e burst (1s of errors, then healthy)", "3s", "FFFFHHHHHHHHHHHH", -1, 0},
		{"3s: continuous errors", "3s", "HHFFFFFFFFFFFFFFF", 14, 3 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, ev := scriptedBed(t, fmt.Sprintf(failingForYAML, tc.failingFor))
			b.act(rollout.Start)
			got := -1
			for i := range len(tc.verdicts) {
				ev.set(tc.verdicts[i])
				b.clock.Add(tick)
				b.m.Tick(t.Context())
				if s := b.status(); s.State == rollout.RolledBack {
					got = i
					break
				}
			}
			if got != tc.rollbackAt {
				t.Fatalf("rolled back at tick %d, want %d (verdicts %s)", got, tc.rollbackAt, tc.verdicts)
			}
			s := b.status()
			if got < 0 {
				if s.State != rollout.Progressing {
					t.Fatalf("state %s", s.State)
				}
				return
			}
			rb := s.History[len(s.History)-1]
			if rb.Verdict == nil || rb.Verdict.FailingFor.D() != tc.failedFor {
				t.Fatalf("rollback verdict %+v, want failing for %v", rb.Verdict, tc.failedFor)
			}
			// The history alone shows the rule was kept: the rollback
			// came failing_for after the first failing verdict.
			if first := rb.At.Add(-rb.Verdict.FailingFor.D()); rb.At.Sub(first) < mustDuration(t, tc.failingFor) {
				t.Fatalf("rolled back %v after the failures began", rb.At.Sub(first))
			}
		})
	}
}

// A failing verdict that has not failed for failing_for yet shows how long
// it has, and never steps the rollout either.
func TestFailingVerdictWaitsButNeverSteps(t *testing.T) {
	b, ev := scriptedBed(t, fmt.Sprintf(failingForYAML, "10s"))
	b.applyFile(`services:
  - name: api
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 0s
      guard: {window: 1s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2, failing_for: 10s}
`)
	b.act(rollout.Start)
	for range 8 {
		ev.set('F')
		b.clock.Add(tick)
		b.m.Tick(t.Context())
	}
	s := b.status()
	if s.State != rollout.Progressing || s.Step != 1 || s.Verdict.Result != rollout.Failing || s.Verdict.FailingFor.D() != 7*tick {
		t.Fatalf("%s step %d, verdict %+v: want held at step 1, failing for 1.75s", s.State, s.Step, s.Verdict)
	}
}
