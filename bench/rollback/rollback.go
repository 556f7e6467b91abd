// Package rollback measures how fast the rollout guard takes a failing
// canary back to 0 through a real Envoy: the time from the canary's first
// bad answer to the rollback, over many runs, and the errors clients saw
// meanwhile. The anchors, Flagger and Argo Rollouts, query a metrics store
// once per analysis interval (a minute or more) and roll back after several
// failed checks; their documented defaults sit beside the figures.
package rollback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/bench/viaenvoy"
	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// Config is one series of runs.
type Config struct {
	Splitter string // splitter binary
	Envoy    string // Envoy binary; "" finds one as the test bed does
	Runs     int
	// Windows are the guard windows to measure, one series each.
	Windows []time.Duration
	// Intervals are the splitter's signals_interval values to measure,
	// one series each with every window.
	Intervals   []time.Duration
	FailPercent float64 // share of the canary's requests answered 500
	Canary      int     // the canary's step, in percent
	MinRequests int
	Workers     int // concurrent clients sending through Envoy
	Logger      *slog.Logger
}

// Defaults: 20 runs with the product contract's 1s window (its stretch
// goal) and its 10s example window, each with the default signals
// interval (250ms) and 100ms, v2 failing half its requests at a 25 % step.
func Defaults() Config {
	return Config{
		Runs: 20, Windows: []time.Duration{time.Second, 10 * time.Second},
		Intervals:   []time.Duration{250 * time.Millisecond, 100 * time.Millisecond},
		FailPercent: 50, Canary: 25, MinRequests: 20, Workers: 2,
	}
}

// Run is one measured rollback.
type Run struct {
	// DetectMs: the canary's first bad answer (at the backend) to the
	// rollback (the guard's decision; the weights are applied right after
	// it, before the guard's lock is released).
	DetectMs float64 `json:"detect_ms"`
	// ClientErrors: requests that failed at the client between the first
	// bad answer and the rollback (plus 100 ms for requests in flight).
	ClientErrors int `json:"client_errors"`
	// Verdict is the rule's explanation of the rollback.
	Verdict string `json:"verdict"`
}

// Series is the runs with one window.
type Series struct {
	Window   string  `json:"window"`
	Runs     []Run   `json:"runs"`
	Detect   Dist    `json:"detect_ms"`
	Errors   Dist    `json:"client_errors"`
	RPS      float64 `json:"rps"` // client requests per second during the series
	Interval string  `json:"signals_interval"`
}

// Dist summarises values: min, median, 90th percentile, max.
type Dist struct {
	Min, P50, P90, Max float64
}

// Result is every series.
type Result struct {
	Machine     string   `json:"machine"` // where it ran, filled by the caller
	Envoy       string   `json:"envoy"`
	Mode        string   `json:"mode"`
	FailPercent float64  `json:"fail_percent"`
	Canary      int      `json:"canary_percent"`
	MinRequests int      `json:"min_requests"`
	Workers     int      `json:"workers"`
	Series      []Series `json:"series"`
}

// Execute runs every series.
func Execute(ctx context.Context, cfg Config) (*Result, error) {
	d := Defaults()
	if cfg.Runs <= 0 {
		cfg.Runs = d.Runs
	}
	if len(cfg.Windows) == 0 {
		cfg.Windows = d.Windows
	}
	if len(cfg.Intervals) == 0 {
		cfg.Intervals = d.Intervals
	}
	if cfg.FailPercent <= 0 {
		cfg.FailPercent = d.FailPercent
	}
	if cfg.Canary <= 0 {
		cfg.Canary = d.Canary
	}
	if cfg.MinRequests <= 0 {
		cfg.MinRequests = d.MinRequests
	}
	if cfg.Workers <= 0 {
		cfg.Workers = d.Workers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	res := &Result{Mode: string(envoy.ModeExtProc), FailPercent: cfg.FailPercent, Canary: cfg.Canary, MinRequests: cfg.MinRequests, Workers: cfg.Workers}
	for _, w := range cfg.Windows {
		for _, iv := range cfg.Intervals {
			s, ver, err := series(ctx, cfg, w, iv)
			if err != nil {
				return nil, fmt.Errorf("window %s, signals interval %s: %w", w, iv, err)
			}
			res.Envoy = ver
			res.Series = append(res.Series, *s)
		}
	}
	return res, nil
}

// config is the bench's routing file: a rollout that stays at its first
// step (the hold is an hour) until the guard rolls it back.
func config(canary, minRequests int, window time.Duration) string {
	return fmt.Sprintf(`services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [%d, 100]
      hold: 1h
      guard: {window: %s, min_requests: %d, max_error_rate: 1, max_error_ratio: 2}
`, canary, window, minRequests)
}

func series(ctx context.Context, cfg Config, window, interval time.Duration) (_ *Series, version string, err error) {
	dir, err := os.MkdirTemp("", "splitter-bench-rollback-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(dir)
	bed := testbed.New(dir, cfg.Logger)
	defer bed.Close()
	envoyBin := cfg.Envoy
	if envoyBin == "" {
		root, err := testbed.RepoRoot()
		if err != nil {
			return nil, "", err
		}
		if envoyBin, err = testbed.FindEnvoy(root); err != nil {
			return nil, "", err
		}
	}
	backends, err := bed.StartBackends("v1", "v2")
	if err != nil {
		return nil, "", err
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(config(cfg.Canary, cfg.MinRequests, window)), 0o644); err != nil {
		return nil, "", err
	}
	port, err := testbed.FreePort()
	if err != nil {
		return nil, "", err
	}
	args := []string{"--envoy-admin", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "warn", "--signals-interval", interval.String()}
	sp, err := bed.StartSplitter(ctx, cfg.Splitter, cfgPath, args...)
	if err != nil {
		return nil, "", err
	}
	p, err := testbed.LoopbackParams(envoy.ModeExtProc, sp.GRPCAddr, backends...)
	if err != nil {
		return nil, "", err
	}
	p.Admin.Port = port
	e, err := bed.StartEnvoy(ctx, envoyBin, p, testbed.EnvoyOptions{})
	if err != nil {
		return nil, "", err
	}
	version = viaenvoy.EnvoyVersion(ctx, envoyBin)
	client := e.Client()
	defer client.Close()

	tr := client.StartTraffic(ctx, cfg.Workers)
	defer tr.Halt()
	s := &Series{Window: window.String(), Interval: interval.String()}
	start := time.Now()
	for i := range cfg.Runs {
		r, err := one(ctx, sp, backends[1], tr, cfg.FailPercent)
		if err != nil {
			return nil, version, fmt.Errorf("run %d: %w", i+1, err)
		}
		cfg.Logger.Info("rollback", "window", window, "signals_interval", interval, "run", i+1, "detect_ms", r.DetectMs, "client_errors", r.ClientErrors)
		s.Runs = append(s.Runs, *r)
	}
	s.RPS = float64(tr.Len()) / time.Since(start).Seconds()
	var detect, errs []float64
	for _, r := range s.Runs {
		detect = append(detect, r.DetectMs)
		errs = append(errs, float64(r.ClientErrors))
	}
	s.Detect, s.Errors = dist(detect), dist(errs)
	return s, version, nil
}

// one starts the rollout with a healthy canary, waits for a healthy
// verdict, makes the canary fail and waits for the rollback.
func one(ctx context.Context, sp *testbed.Splitter, canary *testbed.Backend, tr *testbed.Traffic, failPercent float64) (*Run, error) {
	canary.Fail(0)
	var s rollout.Status
	if err := sp.Admin(ctx, http.MethodPost, "/v1/services/api/rollout", map[string]string{"action": "start"}, &s); err != nil {
		return nil, err
	}
	if err := poll(ctx, 30*time.Second, func() (bool, error) {
		err := sp.Admin(ctx, http.MethodGet, "/v1/services/api/rollout", nil, &s)
		return err == nil && s.Verdict != nil && s.Verdict.Result == rollout.Healthy, err
	}); err != nil {
		return nil, fmt.Errorf("waiting for a healthy verdict: %w", err)
	}
	// A failure starts at any moment, not in step with the guard's ticks
	// (the poll above ends right after one).
	time.Sleep(rand.N(time.Second))
	canary.Fail(failPercent)
	if err := poll(ctx, 30*time.Second, func() (bool, error) {
		err := sp.Admin(ctx, http.MethodGet, "/v1/services/api/rollout", nil, &s)
		return err == nil && s.State != rollout.Progressing, err
	}); err != nil {
		return nil, fmt.Errorf("waiting for the rollback: %w", err)
	}
	if s.State != rollout.RolledBack {
		return nil, fmt.Errorf("the rollout ended %s, not rolled back", s.State)
	}
	rb := s.History[len(s.History)-1]
	first, _ := canary.Faults.FirstFailure()
	if first.IsZero() {
		return nil, errors.New("rolled back before the canary failed")
	}
	// Requests in flight at the rollback may still fail: let them finish.
	time.Sleep(200 * time.Millisecond)
	// Every failure is in the requests that ended by then; none started
	// more than a second before the first bad answer.
	outs := tr.Between(first.Add(-time.Second), rb.At.Add(100*time.Millisecond))
	_, errs := testbed.Tally(outs)
	reason := ""
	if rb.Verdict != nil {
		reason = rb.Verdict.Reason
	}
	return &Run{DetectMs: float64(rb.At.Sub(first).Microseconds()) / 1000, ClientErrors: len(errs), Verdict: reason}, nil
}

func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v (last error: %v)", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func dist(v []float64) Dist {
	if len(v) == 0 {
		return Dist{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	// Nearest rank: the smallest value with at least p of the values at or
	// below it.
	q := func(p float64) float64 { return s[max(int(math.Ceil(p*float64(len(s))))-1, 0)] }
	return Dist{Min: s[0], P50: q(0.5), P90: q(0.9), Max: s[len(s)-1]}
}

// Render writes the BENCH.md section.
func Render(b *strings.Builder, r *Result) {
	b.WriteString("## Rollout guard: failing canary to 0\n\n")
	fmt.Fprintf(b, "A real Envoy (%s, %s) in front of two echo backends; %d clients send requests through it without pause. "+
		"A rollout holds v2 at %d %%; once the guard's verdict is healthy, v2 starts answering 500 to %.0f %% of its requests. "+
		"Measured: from v2's first bad answer (at the backend) to the guard's rollback (the canary's weight goes to 0 in the same step), "+
		"and the requests that failed at the clients in between. Guard: `min_requests: %d`, `max_error_rate: 1`, `max_error_ratio: 2`; "+
		"signals are Envoy's per-cluster counters read from its admin port.\n\n",
		r.Envoy, r.Mode, r.Workers, r.Canary, r.FailPercent, r.MinRequests)
	if r.Machine != "" {
		fmt.Fprintf(b, "Machine: %s.\n\n", r.Machine)
	}
	b.WriteString("| window | signals interval | runs | detection to 0 ms: min / p50 / p90 / max | client errors: min / p50 / p90 / max | client req/s |\n")
	b.WriteString("|---|---|---:|---|---|---:|\n")
	for _, s := range r.Series {
		fmt.Fprintf(b, "| %s | %s | %d | %.0f / %.0f / %.0f / %.0f | %.0f / %.0f / %.0f / %.0f | %.0f |\n",
			s.Window, s.Interval, len(s.Runs), s.Detect.Min, s.Detect.P50, s.Detect.P90, s.Detect.Max,
			s.Errors.Min, s.Errors.P50, s.Errors.P90, s.Errors.Max, s.RPS)
	}
	b.WriteString("\nThe anchors, as documented (not measured here): **Flagger** checks its metrics once per analysis `interval` " +
		"and rolls back after `threshold` failed checks, so detection takes interval x threshold: its docs' example, " +
		"`interval: 1m` with `threshold: 10`, is 10 minutes (a minute at the least, with a threshold of 1). " +
		"**Argo Rollouts** takes one analysis measurement per `interval` over a Prometheus query window and fails the " +
		"analysis after more than `failureLimit` failed measurements: its docs' example measures every `5m` with " +
		"`failureLimit: 3`, 15 to 20 minutes; with the default `failureLimit` of 0 the first failed measurement aborts, " +
		"up to one interval. Both read a metrics store that itself scrapes every 15-60 s. The guard reads Envoy's counters " +
		"directly every signals interval, so detection is bounded by that interval and by how fast min_requests canary " +
		"requests arrive.\n\n")
}
