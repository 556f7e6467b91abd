package testbed

import (
	"context"
	"sync"
	"time"
)

// Outcome is one request of a Traffic run.
type Outcome struct {
	Start, End time.Time
	Version    string // the backend that answered ("" on error)
	Err        error
}

// Traffic sends GET / through a Client from a few goroutines, without
// pause, until halted, and keeps every outcome.
type Traffic struct {
	mu       sync.Mutex
	outcomes []Outcome
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

// StartTraffic starts workers concurrent clients; they stop with ctx or
// Halt. A request cut short by the stop is not an outcome.
func (c *Client) StartTraffic(ctx context.Context, workers int) *Traffic {
	ctx, cancel := context.WithCancel(ctx)
	tr := &Traffic{stop: cancel}
	for range workers {
		tr.wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				rep, err := c.Get(ctx, "/", nil)
				if ctx.Err() != nil {
					return
				}
				tr.mu.Lock()
				tr.outcomes = append(tr.outcomes, Outcome{start, time.Now(), rep.Version, err})
				tr.mu.Unlock()
			}
		})
	}
	return tr
}

// Halt stops the run and waits for its goroutines.
func (tr *Traffic) Halt() {
	tr.stop()
	tr.wg.Wait()
}

// Since returns the outcomes of requests started after t0.
func (tr *Traffic) Since(t0 time.Time) []Outcome {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []Outcome
	for _, o := range tr.outcomes {
		if o.Start.After(t0) {
			out = append(out, o)
		}
	}
	return out
}

// Between returns the outcomes of requests started after from that ended
// before to.
func (tr *Traffic) Between(from, to time.Time) []Outcome {
	var out []Outcome
	for _, o := range tr.Since(from) {
		if o.End.Before(to) {
			out = append(out, o)
		}
	}
	return out
}

// Len is the number of outcomes so far.
func (tr *Traffic) Len() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.outcomes)
}

// Tally counts the versions that answered and collects the errors.
func Tally(outcomes []Outcome) (Counts, []error) {
	c := Counts{}
	var errs []error
	for _, o := range outcomes {
		if o.Err != nil {
			errs = append(errs, o.Err)
			continue
		}
		c[o.Version]++
	}
	return c, errs
}
