package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// flakySource is the bed's counters, or an error while down (Envoy's
// admin port unreachable).
type flakySource struct {
	src  signals.Source
	down atomic.Bool
}

func (f *flakySource) Read(ctx context.Context, targets []signals.Target, out []signals.Counts) error {
	if f.down.Load() {
		return errors.New("envoy admin: connection refused")
	}
	return f.src.Read(ctx, targets, out)
}

func flakyBed(t *testing.T) (*bed, *flakySource) {
	t.Helper()
	src := &flakySource{}
	b := newBedWith(t, "", nil, func(o *rollout.Options) { o.Evidence = rollout.NewLocal(src, tick) })
	src.src = b.counters
	return b, src
}

// A gap in the readings longer than the window (the reproduction:
// a 2s window, Envoy's admin port unreadable for two minutes of healthy
// traffic, the canary failing half its requests in the last second): the
// growth read after the gap cannot be placed in the window, so the first
// reading after it is a new baseline, and nothing steps until the window
// has been watched in full again.
func TestReadingGapStartsANewWindow(t *testing.T) {
	failing := traffic{stable: 30, canary: 10, canaryErrs: 5}
	outage := func(t *testing.T, last traffic) *bed {
		b, src := flakyBed(t)
		b.act(rollout.Start)
		b.run(3*time.Second, healthy, nil) // a full, healthy window; the 10s hold not yet
		if s := b.status(); s.Step != 1 || s.Verdict == nil || s.Verdict.Result != rollout.Healthy || s.Verdict.Covered.D() != 2*time.Second {
			t.Fatalf("before the outage: step %d, verdict %+v", s.Step, s.Verdict)
		}
		src.down.Store(true)
		b.run(2*time.Minute, healthy, nil)
		b.run(time.Second, last, nil)
		src.down.Store(false)
		return b
	}

	t.Run("a canary failing at the end of the gap is rolled back, not promoted", func(t *testing.T) {
		b := outage(t, failing)
		b.run(10*time.Second, failing, func(s rollout.Status) bool { return s.State != rollout.Progressing || s.Step != 1 })
		s := b.status()
		if s.State != rollout.RolledBack || s.Step != 1 || b.canaryShare() != "0" {
			t.Fatalf("after the gap: %s step %d, canary %s%%, history %+v: want rolled back from step 1", s.State, s.Step, b.canaryShare(), s.History)
		}
		if v := s.History[len(s.History)-1].Verdict; v.Covered.D() >= 2*time.Second || v.Canary.Requests > 100 {
			t.Fatalf("rollback verdict %+v: want it made on the readings after the gap only", v)
		}
	})

	t.Run("a healthy canary steps only once the window is full again", func(t *testing.T) {
		b := outage(t, healthy)
		took := b.run(10*time.Second, healthy, func(s rollout.Status) bool { return s.Step != 1 })
		s := b.status()
		if s.Step != 2 || took < 2*time.Second {
			t.Fatalf("stepped to %d %v after the gap: want step 2, no sooner than the 2s window", s.Step, took)
		}
		if v := s.History[len(s.History)-1].Verdict; v.Covered.D() != 2*time.Second || v.Canary.Requests > 100 {
			t.Fatalf("step verdict %+v: want a full window of readings after the gap", v)
		}
	})
}

// twoRollouts: api and web, each held 2s (web 2.5s) on a 2s window.
const twoRollouts = `services:
  - name: api
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 2s
      guard: {window: 2s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2}
  - name: web
    hosts: [web.example.com]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: %s
      guard: {window: 2s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2}
`

// stallMutator is the store, with a hook that may stall or fail a write
// (a slow or failing apply under the Manager's lock).
type stallMutator struct {
	rollout.Mutator
	mu   sync.Mutex
	hook func(service string, w split.Weights) error
}

func (s *stallMutator) SetWeights(ctx context.Context, service string, w split.Weights, actor string) (store.Change, error) {
	s.mu.Lock()
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		if err := hook(service, w); err != nil {
			return store.Change{}, err
		}
	}
	return s.Mutator.SetWeights(ctx, service, w, actor)
}

// A tick that stalls (an apply under the Manager's lock that takes two
// minutes, while traffic flows and web's canary starts failing) is a gap
// like any other: web is not moved on evidence read before the stall, and
// its next readings start a new window.
func TestStalledTickIsAGap(t *testing.T) {
	serveBoth := func(b *bed, webErrs int) {
		b.serve(healthy)
		for range 30 {
			b.counters.Record("web", "v1", 200, false)
		}
		for i := range 10 {
			b.counters.Record("web", "v2", map[bool]int{true: 500, false: 200}[i < webErrs], false)
		}
	}
	// stall moves the clock two minutes on, tick by tick, as the traffic
	// goes on; web's canary fails half its requests in the last second.
	stall := func(b *bed) {
		for i := range 484 {
			b.clock.Add(tick)
			serveBoth(b, map[bool]int{true: 5, false: 0}[i >= 480])
		}
	}
	for _, tc := range []struct {
		name, webHold string
		// failFirst: api's step apply fails once, so that the next tick
		// retries it (and stalls) before reading the signals.
		failFirst bool
	}{
		{"an apply stalls in the decision loop", "2s", false},
		{"a retried apply stalls before the reading", "2500ms", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mut := &stallMutator{}
			b := newBedWith(t, "", nil, func(o *rollout.Options) { mut.Mutator = o.Store; o.Mutator = mut })
			b.applyFile(fmt.Sprintf(twoRollouts, tc.webHold))
			var stalled, failed atomic.Bool
			mut.hook = func(service string, w split.Weights) error {
				if bp, _ := w.Get("v2"); service != "api" || bp != 2500 || stalled.Load() {
					return nil
				}
				if tc.failFirst && !failed.Load() {
					failed.Store(true)
					return errors.New("etcd: request timed out")
				}
				stalled.Store(true)
				stall(b)
				return nil
			}
			for _, svc := range []string{"api", "web"} {
				if _, err := b.m.Act(t.Context(), svc, rollout.Start, "op"); err != nil {
					t.Fatal(err)
				}
			}
			webStatus := func() rollout.Status {
				s, err := b.m.Status("web")
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			for range 80 {
				if webStatus().State != rollout.Progressing || webStatus().Step != 1 {
					break
				}
				b.clock.Add(tick)
				serveBoth(b, map[bool]int{true: 5, false: 0}[stalled.Load()])
				b.m.Tick(t.Context())
			}
			if !stalled.Load() {
				t.Fatal("api's step never stalled")
			}
			s := webStatus()
			if s.State != rollout.RolledBack || s.Step != 1 {
				t.Fatalf("web after the stall: %s step %d, history %+v: want rolled back from step 1, never stepped on evidence from before the stall",
					s.State, s.Step, s.History)
			}
		})
	}
}

// statsServer answers GET /stats as Envoy does, with counters the test
// sets (clusters v1 and v2).
type statsServer struct {
	mu     sync.Mutex
	v1, v2 signals.Counts
}

func (s *statsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(w, "cluster.v1.upstream_rq_5xx: %d\ncluster.v1.upstream_rq_completed: %d\n", s.v1.Errors, s.v1.Requests)
	fmt.Fprintf(w, "cluster.v2.upstream_rq_5xx: %d\ncluster.v2.upstream_rq_completed: %d\n", s.v2.Errors, s.v2.Requests)
}

func (s *statsServer) set(f func(v1, v2 *signals.Counts)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.v1, &s.v2)
}

// Envoy restarts: the canary's requests counter starts again from zero,
// but its errors counter is back above its old value by the next reading
// (29 errors in 10000 requests before, 30 in 100 since). Both counters
// restarted together: the 30 errors are all new, and the canary, failing
// 30 % of its requests, is rolled back. Read from Envoy's /stats text.
func TestEnvoyRestartResetsBothCounters(t *testing.T) {
	stats := &statsServer{v1: signals.Counts{Requests: 50000}, v2: signals.Counts{Requests: 10000, Errors: 29}}
	srv := httptest.NewServer(stats)
	defer srv.Close()
	src := signals.NewEnvoyAdmin(strings.TrimPrefix(srv.URL, "http://"), 5*time.Second)
	b := newBedWith(t, "", nil, func(o *rollout.Options) { o.Evidence = rollout.NewLocal(src, tick) })
	b.act(rollout.Start)
	for range 12 {
		stats.set(func(v1, v2 *signals.Counts) { v1.Requests += 30; v2.Requests += 10 })
		b.clock.Add(tick)
		b.m.Tick(t.Context())
	}
	if s := b.status(); s.State != rollout.Progressing || s.Verdict == nil || s.Verdict.Result != rollout.Healthy {
		t.Fatalf("before the restart: %s, verdict %+v", s.State, s.Verdict)
	}
	stats.set(func(v1, v2 *signals.Counts) {
		*v1, *v2 = signals.Counts{Requests: 300}, signals.Counts{Requests: 100, Errors: 30}
	})
	b.clock.Add(tick)
	b.m.Tick(t.Context())
	s := b.status()
	if s.State != rollout.RolledBack {
		t.Fatalf("after Envoy restarted: %s, verdict %+v: want rolled back on the 30 errors counted since the restart", s.State, s.Verdict)
	}
	if v := s.History[len(s.History)-1].Verdict; v.Canary.Errors != 30 {
		t.Fatalf("rollback verdict %+v: want the canary's 30 errors since the restart", v)
	}
}
