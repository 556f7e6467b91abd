package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/testbed"
	"github.com/trafficsplit/splitter/split"
)

// rolloutConfig is the demo's rollout: 5, 25, 50, 100 %, each step held
// 2s while a 1s window of per-version counters (Envoy's, or the module's
// own) says the canary is healthy.
const rolloutConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 2s
      guard: {window: 1s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2}
`

// traffic is a run of requests through Envoy, read in takes: the
// outcomes since the previous take.
type traffic struct {
	*testbed.Traffic
	last time.Time
}

func (d *demo) startTraffic(ctx context.Context) *traffic {
	return &traffic{Traffic: d.client.StartTraffic(ctx, 4), last: time.Now()}
}

// take returns the versions that answered and the failures since the
// last take.
func (tr *traffic) take() (testbed.Counts, int) {
	now := time.Now()
	counts, errs := testbed.Tally(tr.Since(tr.last))
	tr.last = now
	return counts, len(errs)
}

func (d *demo) rolloutStatus(ctx context.Context) (rollout.Status, error) {
	var s rollout.Status
	err := d.admin.Admin(ctx, http.MethodGet, "/v1/services/api/rollout", nil, &s)
	return s, err
}

func (d *demo) rolloutAction(ctx context.Context, a rollout.Action) error {
	return d.admin.Admin(ctx, http.MethodPost, "/v1/services/api/rollout", map[string]rollout.Action{"action": a}, nil)
}

// follow draws the traffic of each step as the rollout moves, until done
// says the rollout is where the scene ends.
func (d *demo) follow(ctx context.Context, tr *traffic, timeout time.Duration, done func(rollout.Status) bool) (rollout.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last, err := d.rolloutStatus(ctx)
	if err != nil {
		return last, err
	}
	tr.take()
	for {
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("the rollout did not get there: %w (at %s step %d)", ctx.Err(), last.State, last.Step)
		case <-time.After(50 * time.Millisecond):
		}
		s, err := d.rolloutStatus(ctx)
		if err != nil {
			return s, err
		}
		if s.Step == last.Step && s.State == last.State {
			continue
		}
		counts, errs := tr.take()
		fmt.Fprintf(d.out, "  step %d, canary at %s%%: %d answered, %d failed\n", last.Step, split.FormatPercent(int(last.Weight)), counts.Total(), errs)
		d.bars(counts)
		last = s
		if done(s) {
			return s, nil
		}
	}
}

func (d *demo) rollout(ctx context.Context) error {
	fmt.Fprintln(d.out, "\n8. Guarded rollout: steps 5, 25, 50, 100 %, each held 2s while the per-version counters say v2 is healthy")
	if err := d.writeConfig(ctx, rolloutConfig); err != nil {
		return err
	}
	tr := d.startTraffic(ctx)
	defer tr.Halt()
	if err := d.rolloutAction(ctx, rollout.Start); err != nil {
		return err
	}
	s, err := d.follow(ctx, tr, 60*time.Second, func(s rollout.Status) bool { return s.State != rollout.Progressing })
	if err != nil {
		return err
	}
	if s.State != rollout.Promoted {
		return fmt.Errorf("the healthy rollout ended %s, not promoted", s.State)
	}
	time.Sleep(time.Second)
	counts, errs := tr.take()
	fmt.Fprintf(d.out, "  promoted, the second after: %d answered, %d failed\n", counts.Total(), errs)
	d.bars(counts)
	if counts["v1"] > 0 || errs > 0 {
		return errors.New("a promoted canary does not serve everything")
	}
	fmt.Fprintln(d.out, "  ✓ promoted: v2 serves 100 %")
	return nil
}

func (d *demo) badCanary(ctx context.Context) error {
	fmt.Fprintln(d.out, "\n9. A bad canary: started again, v2 begins answering 500 to half its requests at the 25 % step")
	d.backends[1].Fail(0)
	tr := d.startTraffic(ctx)
	defer tr.Halt()
	if err := d.rolloutAction(ctx, rollout.Start); err != nil {
		return err
	}
	if _, err := d.follow(ctx, tr, 30*time.Second, func(s rollout.Status) bool { return s.Step == 2 }); err != nil {
		return err
	}
	d.backends[1].Fail(50)
	s, err := d.follow(ctx, tr, 30*time.Second, func(s rollout.Status) bool { return s.State != rollout.Progressing })
	if err != nil {
		return err
	}
	if s.State != rollout.RolledBack {
		return fmt.Errorf("the failing canary ended %s, not rolled back", s.State)
	}
	first, _ := d.backends[1].Faults.FirstFailure()
	rb := s.History[len(s.History)-1]
	fmt.Fprintf(d.out, "  ✓ rolled back %v after v2's first bad answer: %s\n", rb.At.Sub(first).Round(time.Millisecond), rb.Reason)
	time.Sleep(time.Second)
	counts, errs := tr.take()
	fmt.Fprintf(d.out, "  the second after: %d answered, %d failed\n", counts.Total(), errs)
	d.bars(counts)
	if counts["v2"] > 0 || errs > 0 {
		return errors.New("traffic still reaches the failing v2 after the rollback")
	}
	fmt.Fprintln(d.out, "  ✓ v2 stays at 0 until an operator starts the rollout again")
	return nil
}

// writeConfig replaces the config file and waits until the rollout it
// declares is served.
func (d *demo) writeConfig(ctx context.Context, cfg string) error {
	if err := os.WriteFile(d.cfgPath+".tmp", []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := os.Rename(d.cfgPath+".tmp", d.cfgPath); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		if _, err := d.rolloutStatus(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the splitter did not pick up the rollout configuration: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
