package rollout

import (
	"context"
	"sync"
	"time"

	"github.com/trafficsplit/splitter/split"
)

// WaitStatus is what a waiting rollout waits on (Status.Waiting).
type WaitStatus struct {
	// NextStep and NextWeight: where the rollout goes once every hook
	// has answered 2xx (and the verdict is healthy over a full window).
	NextStep   int           `json:"next_step"`
	NextWeight split.Percent `json:"next_weight"`
	// Hook is the hook asked now, of Type; empty once every hook has
	// answered 2xx, and on a replica that does not lead (fleet mode: the
	// leader's status has it).
	Hook string `json:"hook,omitempty"`
	Type string `json:"type,omitempty"`
	// Asked is how many times Hook has been asked, since Since.
	Asked int       `json:"asked,omitempty"`
	Since time.Time `json:"since,omitzero"`
	// LastAnswer is Hook's last answer (status line and the start of the
	// body, or why there was none), at LastAt.
	LastAnswer string    `json:"last_answer,omitempty"`
	LastAt     time.Time `json:"last_at,omitzero"`
	// Passed are the hooks that answered 2xx already, in order.
	Passed []string `json:"passed,omitempty"`
	// Note says what else the step waits for.
	Note string `json:"note,omitempty"`
}

// gateKey names one hook asked during one wait: a wait is the waiting
// state's Since (the same on every replica), so that a wait entered
// again (after a pause) asks every hook again, and a changed hook is a
// new one.
type gateKey struct {
	service string
	episode int64
	hook    split.Webhook
}

// gateRun is one hook being asked, in its own goroutine: a confirm hook
// every Poll until it answers 2xx, a pre_step hook once plus Retries.
type gateRun struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	open    bool // answered 2xx
	failed  bool // a pre_step hook that failed every attempt
	answer  string
	asked   int
	since   time.Time
	lastAt  time.Time
	checked bool // looked at since the last sweep
}

// gateState is a copy of a run's progress.
type gateState struct {
	open, failed bool
	answer       string
	asked        int
	since        time.Time
	lastAt       time.Time
}

// gates runs the hooks waiting rollouts ask, away from the tick: the guard
// keeps judging (and rolling back) while a hook takes its time.
type gates struct {
	client *hookClient

	mu   sync.Mutex
	runs map[gateKey]*gateRun
}

func newGates(c *hookClient) *gates { return &gates{client: c, runs: map[gateKey]*gateRun{}} }

// check starts asking k's hook if it is not being asked yet and returns
// its progress. p is the payload of its calls.
func (g *gates) check(k gateKey, p Payload) gateState {
	g.mu.Lock()
	run := g.runs[k]
	if run == nil {
		ctx, cancel := context.WithCancel(context.Background())
		run = &gateRun{cancel: cancel, done: make(chan struct{}), since: time.Now()}
		g.runs[k] = run
		go g.ask(ctx, k, run, p)
	}
	g.mu.Unlock()
	run.mu.Lock()
	defer run.mu.Unlock()
	run.checked = true
	return gateState{open: run.open, failed: run.failed, answer: run.answer, asked: run.asked, since: run.since, lastAt: run.lastAt}
}

// ask calls the hook until it opens (or, for pre_step, fails for good).
func (g *gates) ask(ctx context.Context, k gateKey, run *gateRun, p Payload) {
	defer close(run.done)
	h := k.hook
	for attempt := 0; ; attempt++ {
		started := time.Now()
		answer, ok := g.client.call(ctx, k.service, h, p)
		if ctx.Err() != nil {
			return
		}
		run.mu.Lock()
		run.asked++
		run.answer, run.lastAt = answer, time.Now()
		run.open = ok
		last := h.Type == split.HookPreStep && attempt >= h.Retries
		if !ok && last {
			run.failed = true
		}
		run.mu.Unlock()
		if ok || last {
			if ok {
				g.client.log.Info("rollout hook answered 2xx", "service", k.service, "hook", h.Name, "type", h.Type, "answer", answer, "asked", attempt+1)
			} else {
				g.client.log.Warn("rollout pre_step hook failed", "service", k.service, "hook", h.Name, "answer", answer, "attempts", attempt+1)
			}
			return
		}
		wait := h.Poll.D() - time.Since(started)
		if h.Type == split.HookPreStep {
			wait = retryBackoff(attempt)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
	}
}

// retryBackoff is the pause before retry attempt+1: 250ms, doubling, at
// most 5s.
func retryBackoff(attempt int) time.Duration {
	return min(250*time.Millisecond<<min(attempt, 5), 5*time.Second)
}

// sweep stops the runs no tick has looked at since the last sweep: their
// rollout no longer waits on them (it moved, was paused, rolled back,
// or the hook changed).
func (g *gates) sweep() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, run := range g.runs {
		run.mu.Lock()
		keep := run.checked
		run.checked = false
		run.mu.Unlock()
		if !keep {
			run.cancel()
			delete(g.runs, k)
		}
	}
}

// stop stops every run (this replica no longer leads, or it is closing)
// and waits for them.
func (g *gates) stop() {
	g.mu.Lock()
	runs := g.runs
	g.runs = map[gateKey]*gateRun{}
	g.mu.Unlock()
	for _, run := range runs {
		run.cancel()
	}
	for _, run := range runs {
		<-run.done
	}
}
