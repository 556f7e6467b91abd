// Package rollback measures how fast the rollout guard takes a failing
// canary back to 0 through a real Envoy: the time from the canary's first
// bad answer (or, in the latency case, from its first slowed request) to
// the rollback, over many runs, and the errors (or slowed requests)
// clients saw meanwhile, with the splitter beside Envoy (ext_proc) and
// inside it (the module). The anchors, Flagger and Argo Rollouts, query a metrics store
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
	// ModuleDir holds libsplitter.so (`make module`); "" measures
	// ext_proc only.
	ModuleDir string
	// Delay is the slowdown of the latency case: every canary request is
	// answered this much later; 0 leaves the latency case out.
	Delay  time.Duration
	Logger *slog.Logger
}

// The cases measured.
const (
	CaseErrors  = "errors"  // the canary answers 500 to FailPercent of its requests
	CaseLatency = "latency" // the canary answers every request Delay late
)

// Defaults: 20 runs with the product contract's 1s window (its stretch
// goal) and its 10s example window, each with the default signals
// interval (250ms) and 100ms, v2 failing half its requests at a 25 % step.
func Defaults() Config {
	return Config{
		Runs: 20, Windows: []time.Duration{time.Second, 10 * time.Second},
		Intervals:   []time.Duration{250 * time.Millisecond, 100 * time.Millisecond},
		FailPercent: 50, Canary: 25, MinRequests: 20, Workers: 2, Delay: 200 * time.Millisecond,
	}
}

// latencyGuard is the latency bounds of the latency case: p99 above 100ms
// and above 5 x stable's.
const latencyGuard = ", max_latency_ms: 100, max_latency_ratio: 5"

// Run is one measured rollback.
type Run struct {
	// DetectMs: the canary's first bad answer (at the backend), or the
	// arrival of its first slowed request, to the rollback (the guard's
	// decision; the weights are applied right after it, before the
	// guard's lock is released).
	DetectMs float64 `json:"detect_ms"`
	// ClientErrors: requests that failed at the client between the first
	// bad answer and the rollback (plus 100 ms for requests in flight).
	ClientErrors int `json:"client_errors"`
	// Slowed (latency case): requests that took the delay or more at the
	// client, among those that ended by the rollback (plus 100 ms).
	Slowed int `json:"slowed,omitempty"`
	// Verdict is the rule's explanation of the rollback.
	Verdict string `json:"verdict"`
}

// Series is the runs with one window.
type Series struct {
	Mode     string  `json:"mode"`
	Case     string  `json:"case"`
	Window   string  `json:"window"`
	Runs     []Run   `json:"runs"`
	Detect   Dist    `json:"detect_ms"`
	Errors   Dist    `json:"client_errors"`
	Slowed   Dist    `json:"slowed"`
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
	FailPercent float64  `json:"fail_percent"`
	DelayMs     float64  `json:"delay_ms"`
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
	res := &Result{FailPercent: cfg.FailPercent, DelayMs: float64(cfg.Delay) / float64(time.Millisecond),
		Canary: cfg.Canary, MinRequests: cfg.MinRequests, Workers: cfg.Workers}
	type plan struct {
		mode      envoy.Mode
		kase      string
		intervals []time.Duration
	}
	// The error case in ext_proc with every interval (the figures of the
	// earlier runs); the rest at the default interval only.
	plans := []plan{{envoy.ModeExtProc, CaseErrors, cfg.Intervals}}
	if cfg.ModuleDir != "" {
		plans = append(plans, plan{envoy.ModeModule, CaseErrors, cfg.Intervals[:1]})
	}
	if cfg.Delay > 0 {
		plans = append(plans, plan{envoy.ModeExtProc, CaseLatency, cfg.Intervals[:1]})
		if cfg.ModuleDir != "" {
			plans = append(plans, plan{envoy.ModeModule, CaseLatency, cfg.Intervals[:1]})
		}
	}
	for _, p := range plans {
		for _, w := range cfg.Windows {
			for _, iv := range p.intervals {
				s, ver, err := series(ctx, cfg, p.mode, p.kase, w, iv)
				if err != nil {
					return nil, fmt.Errorf("%s, %s, window %s, signals interval %s: %w", p.mode, p.kase, w, iv, err)
				}
				res.Envoy = ver
				res.Series = append(res.Series, *s)
			}
		}
	}
	return res, nil
}

// config is the bench's routing file: a rollout that stays at its first
// step (the hold is an hour) until the guard rolls it back; the latency
// case judges latency too.
func config(canary, minRequests int, window time.Duration, kase string) string {
	extra := ""
	if kase == CaseLatency {
		extra = latencyGuard
	}
	return fmt.Sprintf(`services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [%d, 100]
      hold: 1h
      guard: {window: %s, min_requests: %d, max_error_rate: 1, max_error_ratio: 2%s}
`, canary, window, minRequests, extra)
}

// admin is the splitter's admin API, the sidecar's or the module's.
type admin interface {
	Admin(ctx context.Context, method, path string, body, out any) error
}

func series(ctx context.Context, cfg Config, mode envoy.Mode, kase string, window, interval time.Duration) (_ *Series, version string, err error) {
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
	if err := os.WriteFile(cfgPath, []byte(config(cfg.Canary, cfg.MinRequests, window, kase)), 0o644); err != nil {
		return nil, "", err
	}
	var (
		e  *testbed.Envoy
		sp admin
	)
	if mode == envoy.ModeModule {
		p, err := testbed.LoopbackParams(envoy.ModeModule, "", backends...)
		if err != nil {
			return nil, "", err
		}
		settings := map[string]any{"config": cfgPath, "log_level": "warn", "signals_interval": interval.String()}
		var m *testbed.Module
		if e, m, err = bed.StartEnvoyModule(ctx, envoyBin, cfg.ModuleDir, p, settings, testbed.EnvoyOptions{}); err != nil {
			return nil, "", err
		}
		sp = m
	} else {
		port, err := testbed.FreePort()
		if err != nil {
			return nil, "", err
		}
		args := []string{"--envoy-admin", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "warn", "--signals-interval", interval.String()}
		s, err := bed.StartSplitter(ctx, cfg.Splitter, cfgPath, args...)
		if err != nil {
			return nil, "", err
		}
		p, err := testbed.LoopbackParams(envoy.ModeExtProc, s.GRPCAddr, backends...)
		if err != nil {
			return nil, "", err
		}
		p.Admin.Port = port
		if e, err = bed.StartEnvoy(ctx, envoyBin, p, testbed.EnvoyOptions{}); err != nil {
			return nil, "", err
		}
		sp = s
	}
	version = viaenvoy.EnvoyVersion(ctx, envoyBin)
	client := e.Client()
	defer client.Close()

	tr := client.StartTraffic(ctx, cfg.Workers)
	defer tr.Halt()
	s := &Series{Mode: string(mode), Case: kase, Window: window.String(), Interval: interval.String()}
	start := time.Now()
	for i := range cfg.Runs {
		r, err := one(ctx, sp, backends[1], tr, cfg, kase)
		if err != nil {
			return nil, version, fmt.Errorf("run %d: %w", i+1, err)
		}
		cfg.Logger.Info("rollback", "mode", mode, "case", kase, "window", window, "signals_interval", interval, "run", i+1,
			"detect_ms", r.DetectMs, "client_errors", r.ClientErrors, "slowed", r.Slowed)
		s.Runs = append(s.Runs, *r)
	}
	s.RPS = float64(tr.Len()) / time.Since(start).Seconds()
	var detect, errs, slowed []float64
	for _, r := range s.Runs {
		detect = append(detect, r.DetectMs)
		errs = append(errs, float64(r.ClientErrors))
		slowed = append(slowed, float64(r.Slowed))
	}
	s.Detect, s.Errors, s.Slowed = dist(detect), dist(errs), dist(slowed)
	return s, version, nil
}

// one starts the rollout with a healthy canary, waits for a healthy
// verdict, makes the canary fail (or slow) and waits for the rollback.
func one(ctx context.Context, sp admin, canary *testbed.Backend, tr *testbed.Traffic, cfg Config, kase string) (*Run, error) {
	canary.Fail(0)
	canary.Slow(0)
	defer canary.Slow(0)
	var s rollout.Status
	if err := sp.Admin(ctx, http.MethodPost, "/v1/services/api/rollout", map[string]string{"action": "start"}, &s); err != nil {
		return nil, err
	}
	if err := poll(ctx, 30*time.Second, func() (bool, error) {
		err := sp.Admin(ctx, http.MethodGet, "/v1/services/api/rollout", nil, &s)
		return err == nil && s.Verdict != nil && s.Verdict.Result == rollout.Healthy, err
	}); err != nil {
		last := "none"
		if s.Verdict != nil {
			last = string(s.Verdict.Result) + ": " + s.Verdict.Reason
		}
		return nil, fmt.Errorf("waiting for a healthy verdict (%s, the last one %s): %w", s.State, last, err)
	}
	// A failure starts at any moment, not in step with the guard's ticks
	// (the poll above ends right after one).
	time.Sleep(rand.N(time.Second))
	if kase == CaseLatency {
		canary.Slow(cfg.Delay)
	} else {
		canary.Fail(cfg.FailPercent)
	}
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
	if kase == CaseLatency {
		first = canary.Faults.FirstSlow()
		if rb.Verdict == nil || rb.Verdict.Latency == nil || rb.Verdict.Latency.Result != rollout.Failing {
			return nil, fmt.Errorf("rolled back, but not on latency: %s", rb.Reason)
		}
	}
	if first.IsZero() {
		return nil, errors.New("rolled back before the canary failed")
	}
	// Requests in flight at the rollback may still fail: let them finish.
	time.Sleep(200 * time.Millisecond)
	// Every failure is in the requests that ended by then; none started
	// more than a second before the first bad answer.
	outs := tr.Between(first.Add(-time.Second), rb.At.Add(100*time.Millisecond))
	_, errs := testbed.Tally(outs)
	slowed := 0
	if kase == CaseLatency {
		for _, o := range outs {
			if o.End.Sub(o.Start) >= cfg.Delay {
				slowed++
			}
		}
	}
	reason := ""
	if rb.Verdict != nil {
		reason = rb.Verdict.Reason
	}
	return &Run{DetectMs: float64(rb.At.Sub(first).Microseconds()) / 1000, ClientErrors: len(errs), Slowed: slowed, Verdict: reason}, nil
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
	b.WriteString("## Rollout guard: failing or slow canary to 0\n\n")
	fmt.Fprintf(b, "A real Envoy (%s) in front of two echo backends; %d clients send requests through it without pause "+
		"(a closed loop: a slow canary slows its clients down too). A rollout holds v2 at %d %%; once the guard's verdict is healthy, "+
		"at a random moment, v2 starts answering 500 to %.0f %% of its requests (**errors**), or answering every request %.0f ms late "+
		"(**latency**). Measured: from v2's first bad answer (at the backend), or from the arrival of its first slowed request, "+
		"to the guard's rollback (the canary's weight goes to 0 in the same step), and the requests that failed, or took the delay "+
		"or more, at the clients in between. Guard: `min_requests: %d`, `max_error_rate: 1`, `max_error_ratio: 2`, and in the "+
		"latency case `max_latency_ms: 100`, `max_latency_ratio: 5` (p99). ext_proc: the signals are Envoy's per-cluster counters "+
		"and `upstream_rq_time` histograms read from its admin port (the bootstrap flushes at every read); module: the responses "+
		"counted and timed in process.\n\n",
		r.Envoy, r.Workers, r.Canary, r.FailPercent, r.DelayMs, r.MinRequests)
	if r.Machine != "" {
		fmt.Fprintf(b, "Machine: %s.\n\n", r.Machine)
	}
	b.WriteString("| case | mode | window | signals interval | runs | to 0 ms: min / p50 / p90 / max | client errors (slowed): min / p50 / p90 / max | client req/s |\n")
	b.WriteString("|---|---|---|---|---:|---|---|---:|\n")
	for _, s := range r.Series {
		kase, mode, affected := s.Case, s.Mode, s.Errors
		if kase == "" {
			kase = CaseErrors
		}
		if mode == "" {
			mode = string(envoy.ModeExtProc)
		}
		if kase == CaseLatency {
			affected = s.Slowed
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %d | %.0f / %.0f / %.0f / %.0f | %.0f / %.0f / %.0f / %.0f | %.0f |\n",
			kase, mode, s.Window, s.Interval, len(s.Runs), s.Detect.Min, s.Detect.P50, s.Detect.P90, s.Detect.Max,
			affected.Min, affected.P50, affected.P90, affected.Max, s.RPS)
	}
	b.WriteString("\nA slowed request takes the delay to be answered, and Envoy records its time only then, so the latency " +
		"case cannot be caught sooner than the delay after the slowdown; a p99 over a long window also needs 1 % of the window's " +
		"canary requests to be slow before it moves, which takes longer with a 10 s window than with a 1 s one.\n\n")
	b.WriteString("The anchors, as documented (not measured here): **Flagger** checks its metrics (`request-success-rate`, " +
		"and `request-duration`, a P99 in milliseconds) once per analysis `interval` " +
		"and rolls back after `threshold` failed checks, so detection takes interval x threshold: its docs' example, " +
		"`interval: 1m` with `threshold: 10`, is 10 minutes (a minute at the least, with a threshold of 1). " +
		"**Argo Rollouts** takes one analysis measurement per `interval` over a Prometheus query window and fails the " +
		"analysis after more than `failureLimit` failed measurements: its docs' example measures every `5m` with " +
		"`failureLimit: 3`, 15 to 20 minutes; with the default `failureLimit` of 0 the first failed measurement aborts, " +
		"up to one interval. Both read a metrics store that itself scrapes every 15-60 s. The guard reads Envoy's counters " +
		"and histograms directly every signals interval, so detection is bounded by that interval and by how fast min_requests canary " +
		"requests arrive (and, for latency, by the delay itself).\n\n")
}
