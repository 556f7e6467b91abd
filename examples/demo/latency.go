package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
)

// latencyConfig is the demo's rollout judged on latency too: a canary
// whose p99 over the 1s window is above 100 ms and above 5 x stable's
// fails (Envoy's upstream_rq_time histograms, or the module's own timing).
const latencyConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: 2s
      guard: {window: 1s, min_requests: 20, max_error_rate: 1, max_error_ratio: 2, max_latency_ms: 100, max_latency_ratio: 5}
`

func (d *demo) slowCanary(ctx context.Context) error {
	fmt.Fprintln(d.out, "\n11. A slow canary: the guard also judges p99 latency per version; v2 starts answering 200 ms late at the 25 % step")
	if err := d.writeConfig(ctx, latencyConfig); err != nil {
		return err
	}
	d.backends[1].Fail(0)
	d.backends[1].Slow(0)
	defer d.backends[1].Slow(0)
	tr := d.startTraffic(ctx)
	defer tr.Halt()
	if err := d.rolloutAction(ctx, rollout.Start); err != nil {
		return err
	}
	if _, err := d.follow(ctx, tr, 30*time.Second, func(s rollout.Status) bool { return s.Step == 2 }); err != nil {
		return err
	}
	d.backends[1].Slow(200 * time.Millisecond)
	s, err := d.follow(ctx, tr, 30*time.Second, func(s rollout.Status) bool { return s.State != rollout.Progressing })
	if err != nil {
		return err
	}
	rb := s.History[len(s.History)-1]
	if s.State != rollout.RolledBack || rb.Verdict == nil || rb.Verdict.Latency == nil || rb.Verdict.Latency.Result != rollout.Failing {
		return fmt.Errorf("the slow canary ended %s (%s), not rolled back on latency", s.State, rb.Reason)
	}
	slow := d.backends[1].Faults.FirstSlow()
	fmt.Fprintf(d.out, "  ✓ rolled back %v after v2 turned slow, without a single error: %s\n", rb.At.Sub(slow).Round(time.Millisecond), rb.Reason)
	time.Sleep(time.Second)
	counts, errs := tr.take()
	fmt.Fprintf(d.out, "  the second after: %d answered, %d failed\n", counts.Total(), errs)
	d.bars(counts)
	if counts["v2"] > 0 || errs > 0 {
		return errors.New("traffic still reaches the slow v2 after the rollback")
	}
	return nil
}
