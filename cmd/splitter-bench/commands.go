package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trafficsplit/splitter/bench/assign"
	"github.com/trafficsplit/splitter/bench/compare"
	"github.com/trafficsplit/splitter/bench/fleetprop"
	"github.com/trafficsplit/splitter/bench/loadgen"
	"github.com/trafficsplit/splitter/bench/noop"
	"github.com/trafficsplit/splitter/bench/proc"
	"github.com/trafficsplit/splitter/bench/report"
	"github.com/trafficsplit/splitter/bench/rollback"
	"github.com/trafficsplit/splitter/bench/viaenvoy"
	"github.com/trafficsplit/splitter/bench/viagateway"
)

func newNoopCmd() *cobra.Command {
	var opts noop.Options
	cmd := &cobra.Command{
		Use:   "noop",
		Short: "Run the no-op ext_proc baseline server (grpc-go defaults, empty answers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Logger = logger()
			return noop.Serve(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.GRPCAddr, "grpc-addr", "127.0.0.1:9001", "ext_proc listen address")
	f.StringVar(&opts.AdminAddr, "admin-addr", "127.0.0.1:9002", `admin (/metrics) listen address; "-" disables`)
	f.StringVar(&opts.ReadyFile, "ready-file", "", `write {"grpc_addr","admin_addr"} here once listening`)
	return cmd
}

func newLoadCmd() *cobra.Command {
	var (
		cfg     loadgen.Config
		pid     int
		admin   string
		routed  bool
		headers []string
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "One Envoy-like ext_proc load run against a running server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return fmt.Errorf("--header %q: want name:value", h)
				}
				cfg.ExtraHeader = append(cfg.ExtraHeader, loadgen.Header{Name: strings.ToLower(strings.TrimSpace(k)), Value: strings.TrimSpace(v)})
			}
			if routed {
				cfg.Expect = compare.SeedExpect()
			}
			if pid > 0 {
				cfg.Server = proc.Attach("server", pid, admin)
			}
			res, err := loadgen.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			printResult(cmd, res)
			if res.Errors > 0 || res.Invalid > 0 {
				return fmt.Errorf("%d errors, %d bad answers", res.Errors, res.Invalid)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", "127.0.0.1:9001", "ext_proc server address")
	f.IntVar(&cfg.Conns, "conns", 2, "HTTP/2 connections")
	f.IntVar(&cfg.Concurrency, "concurrency", 16, "concurrent streams")
	f.Int64Var(&cfg.Requests, "requests", 0, "stop after this many requests (0: duration only)")
	f.DurationVar(&cfg.Duration, "duration", 5*time.Second, "stop after this long (0: count only)")
	f.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "unmeasured load first")
	f.Float64Var(&cfg.BetaShare, "beta", 0.1, "share of requests with x-beta: true")
	f.IntVar(&cfg.Users, "users", 1000, "distinct x-user-id values (0: none)")
	f.StringVar(&cfg.Authority, "authority", "api.example.com", ":authority")
	f.StringArrayVar(&headers, "header", nil, "extra request header name:value (repeatable)")
	f.BoolVar(&routed, "expect-split", false, "check answers as the splitter's on the seed config (x-route-version v1|v2, x-beta pins v2, x-variant A|B)")
	f.IntVar(&pid, "server-pid", 0, "measure this process's CPU (/proc/<pid>/stat)")
	f.StringVar(&admin, "server-admin", "", "read go_memstats_mallocs_total from http://<this>/metrics")
	return cmd
}

func printResult(cmd *cobra.Command, r *loadgen.Result) {
	w := cmd.OutOrStdout()
	q := r.Latency.Quantile
	fmt.Fprintf(w, "requests %d in %v: %.0f req/s; errors %d, bad answers %d\n", r.Requests, r.Elapsed.Round(time.Millisecond), r.RPS(), r.Errors, r.Invalid)
	fmt.Fprintf(w, "stream latency p50 %v p90 %v p99 %v p99.9 %v max %v\n", q(0.5), q(0.9), q(0.99), q(0.999), r.Latency.Max())
	fmt.Fprintf(w, "versions %v; pinned %d, keyed %d\n", r.Versions, r.Pinned, r.Keyed)
	fmt.Fprintf(w, "client: %v CPU and %.1f allocs per request\n", r.ClientCPUPerReq, r.ClientAllocsPerReq)
	if r.ServerCPUPerReq > 0 || r.ServerAllocsPerReq >= 0 {
		fmt.Fprintf(w, "server: %v CPU and %.1f allocs per request (-1: not exposed)\n", r.ServerCPUPerReq, r.ServerAllocsPerReq)
	}
	for _, e := range r.FirstErrors {
		fmt.Fprintln(w, "error:", e)
	}
}

// extprocFlags are the comparison's knobs, shared by `extproc` and `all`.
type extprocFlags struct {
	splitter  string
	levels    []int
	conns     int
	rounds    int
	duration  time.Duration
	warmup    time.Duration
	beta      float64
	users     int
	serverCPU int
	clientCPU int
	env       []string
}

func (e *extprocFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&e.splitter, "splitter", "bin/splitter", "splitter binary")
	f.IntSliceVar(&e.levels, "levels", []int{1, 16, 64, 256}, "concurrent streams per level")
	f.IntVar(&e.conns, "conns", 2, "HTTP/2 connections (as many as Envoy workers)")
	f.IntVar(&e.rounds, "rounds", 5, "rounds (each runs every level on both servers)")
	f.DurationVar(&e.duration, "duration", 3*time.Second, "measured time per run")
	f.DurationVar(&e.warmup, "warmup", 500*time.Millisecond, "unmeasured load before each run")
	f.Float64Var(&e.beta, "beta", 0.1, "share of requests with x-beta: true")
	f.IntVar(&e.users, "users", 1000, "distinct x-user-id values (0: unkeyed)")
	f.IntVar(&e.serverCPU, "server-cpu", 0, "CPU the servers are pinned to (-1: none)")
	f.IntVar(&e.clientCPU, "client-cpu", 1, "CPU the generator is pinned to (-1: none)")
	f.StringArrayVar(&e.env, "splitter-env", nil, "NAME=value added to the splitter's environment only, e.g. GOGC=400 (repeatable)")
}

func runExtProc(ctx context.Context, e *extprocFlags, dir string) (*compare.Result, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(e.splitter); err != nil {
		return nil, fmt.Errorf("splitter binary: %w (run `make build`)", err)
	}
	splitterBin, err := filepath.Abs(e.splitter)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "split.yaml")
	if err := os.WriteFile(cfgPath, []byte(compare.SeedConfig), 0o644); err != nil {
		return nil, err
	}
	if e.clientCPU >= 0 {
		if err := proc.PinSelf(e.clientCPU); err != nil {
			return nil, err
		}
	}
	return compare.Execute(ctx, compare.Config{
		Baseline:  compare.Target{Name: "noop", Argv: []string{self, "noop"}},
		Candidate: compare.Target{Name: "splitter", Argv: []string{splitterBin, "serve", "--config", cfgPath}, Env: e.env, Expect: compare.SeedExpect()},
		Levels:    e.levels, Conns: e.conns, Rounds: e.rounds, Duration: e.duration, Warmup: e.warmup,
		BetaShare: e.beta, Users: e.users, ServerCPU: e.serverCPU, Dir: dir, Logger: logger(),
	})
}

// checkLevels rejects a comparison whose answers were not all correct:
// figures from a server that answers wrongly mean nothing.
func checkLevels(r *compare.Result) error {
	var errs []error
	for _, lv := range r.Levels {
		for name, s := range map[string]compare.Stats{r.Baseline: lv.Baseline, r.Candidate: lv.Candidate} {
			if s.Errors > 0 || s.Invalid > 0 {
				errs = append(errs, fmt.Errorf("%d streams, %s: %d errors, %d bad answers (%v)", lv.Concurrency, name, s.Errors, s.Invalid, lv.FirstErrors))
			}
		}
	}
	return errors.Join(errs...)
}

type outFlags struct {
	results string
	out     string
}

func (o *outFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.results, "results", "bench/results", "directory of the JSON results BENCH.md is rendered from")
	cmd.Flags().StringVar(&o.out, "out", "BENCH.md", "report to write (empty: none)")
}

// save stores the parts run now, then re-renders the report from
// everything in the results directory.
func (o *outFlags) save(r *report.Results) error {
	if err := report.Save(o.results, r); err != nil {
		return err
	}
	if o.out == "" {
		return nil
	}
	all, err := report.Load(o.results)
	if err != nil {
		return err
	}
	f, err := os.Create(o.out)
	if err != nil {
		return err
	}
	if err := report.Render(f, all); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func machine() *report.Machine {
	m := report.ReadMachine()
	return &m
}

func newExtProcCmd() *cobra.Command {
	var (
		e extprocFlags
		o outFlags
	)
	cmd := &cobra.Command{
		Use:   "extproc",
		Short: "Compare the splitter with the no-op baseline over ext_proc (pinned, alternating rounds)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := os.MkdirTemp("", "splitter-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			m := machine()
			res, err := runExtProc(cmd.Context(), &e, dir)
			if err != nil {
				return err
			}
			if err := o.save(&report.Results{Machine: m, ExtProc: res}); err != nil {
				return err
			}
			return checkLevels(res)
		},
	}
	e.register(cmd)
	o.register(cmd)
	return cmd
}

type microFlags struct {
	benchtime string
	pkgs      []string
}

func (m *microFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&m.benchtime, "benchtime", "", "go test -benchtime (default: go's 1s)")
	cmd.Flags().StringSliceVar(&m.pkgs, "packages", []string{"./split/", "./extproc/"}, "packages whose benchmarks run")
}

func runMicro(ctx context.Context, m *microFlags) ([]report.Micro, error) {
	ms, out, err := report.RunMicro(ctx, ".", m.benchtime, m.pkgs)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, out)
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no benchmark results in:\n%s", out)
	}
	return ms, nil
}

func newMicroCmd() *cobra.Command {
	var (
		m microFlags
		o outFlags
	)
	cmd := &cobra.Command{
		Use:   "micro",
		Short: "Run the Go micro-benchmarks (go test -bench) and add them to the report",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, err := runMicro(cmd.Context(), &m)
			if err != nil {
				return err
			}
			return o.save(&report.Results{Machine: machine(), Micro: ms})
		},
	}
	m.register(cmd)
	o.register(cmd)
	return cmd
}

func newEnvoyCmd() *cobra.Command {
	var (
		v viaenvoy.Config
		o outFlags
	)
	cmd := &cobra.Command{
		Use:   "envoy",
		Short: "Load a real Envoy with wrk: native weighted_clusters vs the module, a C module, ext_proc and ext_authz",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v.Logger = logger()
			res, err := viaenvoy.Execute(cmd.Context(), v)
			if err != nil {
				return err
			}
			return o.save(&report.Results{Machine: machine(), Envoy: res})
		},
	}
	registerEnvoy(cmd, &v, true)
	o.register(cmd)
	return cmd
}

// registerEnvoy adds the Envoy run's flags; `all` shares --splitter with
// the ext_proc comparison instead of registering it twice.
func registerEnvoy(cmd *cobra.Command, v *viaenvoy.Config, withSplitter bool) {
	f := cmd.Flags()
	if withSplitter {
		f.StringVar(&v.Splitter, "splitter", "bin/splitter", "splitter binary")
	}
	f.StringVar(&v.Envoy, "envoy", "", "Envoy binary (default: $ENVOY_BIN, .venv/bin/envoy, PATH)")
	f.StringVar(&v.Wrk, "wrk", "wrk", "wrk binary (scripts/loadtool.sh installs it)")
	f.IntVar(&v.Rounds, "envoy-rounds", 3, "rounds (each runs every mode)")
	f.DurationVar(&v.Duration, "envoy-duration", 5*time.Second, "wrk duration per run")
	f.IntVar(&v.Connections, "envoy-connections", 32, "wrk connections")
	f.IntVar(&v.Threads, "envoy-threads", 1, "wrk threads")
	f.IntVar(&v.Workers, "envoy-workers", 1, "Envoy --concurrency")
	f.IntVar(&v.ProxyCPU, "proxy-cpu", 0, "CPU Envoy and the splitter are pinned to (-1: none)")
	f.IntVar(&v.LoadCPU, "load-cpu", 1, "CPU wrk and the backends are pinned to (-1: none)")
	f.StringVar(&v.ModuleDir, "module-dir", "bin", "directory holding libsplitter.so (make module), for the module runs")
	f.StringVar(&v.CC, "cc", "cc", "C compiler for the C baseline module")
}

func newGatewayCmd() *cobra.Command {
	var (
		g viagateway.Config
		o outFlags
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Load Envoy Gateway's Envoy with wrk: its weighted backendRefs vs the splitter over ext_proc and the module",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			g.Logger = logger()
			res, err := viagateway.Execute(cmd.Context(), g)
			if err != nil {
				return err
			}
			if err := o.save(&report.Results{Gateway: res}); err != nil {
				return err
			}
			return viagateway.Check(res)
		},
	}
	registerGateway(cmd, &g, true)
	o.register(cmd)
	return cmd
}

func newAssignCmd() *cobra.Command {
	var (
		v viaenvoy.Config
		o outFlags
	)
	cmd := &cobra.Command{
		Use:   "assign",
		Short: "Through a real Envoy: a request given a sticky key (two ext_proc messages, a Set-Cookie) against a keyed one, over ext_proc and in the module",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v.Logger = logger()
			m := report.ReadMachine()
			res, err := assign.Execute(cmd.Context(), v)
			if err != nil {
				return err
			}
			res.Machine = fmt.Sprintf("%s, %d cores; %s; %s; load average at start %s", m.Model, m.Cores, m.Go, m.Date, m.Load)
			for _, p := range res.Pairs {
				fmt.Fprintf(cmd.OutOrStdout(), "%-8s assigned/keyed: req/s %.2f, Envoy+splitter CPU/req %.2f, messages/stream %.2f -> %.2f\n",
					p.Adapter, p.Ratios["rps"].Median, p.Ratios["proxy_cpu"].Median, p.KeyedMessages, p.AssignedMessages)
			}
			return o.save(&report.Results{Assign: res})
		},
	}
	registerEnvoy(cmd, &v, true)
	o.register(cmd)
	return cmd
}

// registerGateway adds the Envoy Gateway run's flags; `all` shares
// --splitter, --envoy, --wrk, the CPUs and --module-dir with the Envoy runs.
func registerGateway(cmd *cobra.Command, g *viagateway.Config, standalone bool) {
	f := cmd.Flags()
	if standalone {
		f.StringVar(&g.Splitter, "splitter", "bin/splitter", "splitter binary")
		f.StringVar(&g.Envoy, "envoy", "", "Envoy binary (default: $ENVOY_BIN, .venv/bin/envoy, PATH)")
		f.StringVar(&g.Wrk, "wrk", "wrk", "wrk binary (scripts/loadtool.sh installs it)")
		f.IntVar(&g.ProxyCPU, "proxy-cpu", 0, "CPU Envoy Gateway, its Envoys and the splitter are pinned to (-1: none)")
		f.IntVar(&g.LoadCPU, "load-cpu", 1, "CPU wrk and the backends are pinned to (-1: none)")
		f.StringVar(&g.ModuleDir, "module-dir", "bin", "directory holding libsplitter.so (make module)")
	}
	f.StringVar(&g.Gateway, "gateway", "", "envoy-gateway binary (default: $ENVOY_GATEWAY_BIN, .venv/bin/envoy-gateway, PATH); with `all`, the Envoy Gateway runs happen only when it is set")
	f.IntVar(&g.Rounds, "gateway-rounds", 10, "rounds through Envoy Gateway (each runs every setup)")
	f.DurationVar(&g.Duration, "gateway-duration", 5*time.Second, "wrk duration per run through Envoy Gateway")
	f.IntVar(&g.Connections, "gateway-connections", 32, "wrk connections through Envoy Gateway")
}

func newReportCmd() *cobra.Command {
	var o outFlags
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Render BENCH.md from the results directory",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return o.save(&report.Results{})
		},
	}
	o.register(cmd)
	return cmd
}

func newAllCmd() *cobra.Command {
	var (
		e         extprocFlags
		m         microFlags
		v         viaenvoy.Config
		g         viagateway.Config
		o         outFlags
		skipEnvoy bool
	)
	cmd := &cobra.Command{
		Use:   "all",
		Short: "Micro-benchmarks, the ext_proc comparison and (unless --skip-envoy) the Envoy runs, through Envoy Gateway too with --gateway; writes BENCH.md",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			res := &report.Results{Machine: machine()}
			// Micro-benchmarks first, while nothing else of ours runs.
			ms, err := runMicro(ctx, &m)
			if err != nil {
				return err
			}
			res.Micro = ms
			dir, err := os.MkdirTemp("", "splitter-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			if res.ExtProc, err = runExtProc(ctx, &e, dir); err != nil {
				return err
			}
			if !skipEnvoy {
				v.Logger = logger()
				if res.Envoy, err = viaenvoy.Execute(ctx, v); err != nil {
					return err
				}
				if g.Gateway != "" {
					g.Splitter, g.Envoy, g.Wrk, g.ModuleDir = v.Splitter, v.Envoy, v.Wrk, v.ModuleDir
					g.ProxyCPU, g.LoadCPU, g.Threads, g.Logger = v.ProxyCPU, v.LoadCPU, v.Threads, logger()
					if res.Gateway, err = viagateway.Execute(ctx, g); err != nil {
						return err
					}
				}
			}
			if err := o.save(res); err != nil {
				return err
			}
			var gwErr error
			if res.Gateway != nil {
				gwErr = viagateway.Check(res.Gateway)
			}
			return errors.Join(checkLevels(res.ExtProc), gwErr)
		},
	}
	e.register(cmd)
	m.register(cmd)
	registerEnvoy(cmd, &v, false)
	registerGateway(cmd, &g, false)
	cmd.PreRun = func(*cobra.Command, []string) { v.Splitter = e.splitter }
	o.register(cmd)
	cmd.Flags().BoolVar(&skipEnvoy, "skip-envoy", false, "leave out the runs through Envoy")
	return cmd
}

func newFleetCmd() *cobra.Command {
	var (
		cfg fleetprop.Config
		out outFlags
	)
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Fleet propagation through a real etcd: admin change on one replica until applied on all N",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = logger()
			m := report.ReadMachine()
			res, err := fleetprop.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			res.Machine = fmt.Sprintf("%s, %d cores, %s, kernel %s, %s, load average at start %s",
				m.Model, m.Cores, m.Go, m.Kernel, m.Date, m.Load)
			for _, s := range res.Setups {
				fmt.Fprintf(cmd.OutOrStdout(), "%-24s N=%-4d writer p50 %.1f ms p99 %.1f ms; all applied p50 %.1f ms p99 %.1f ms max %.1f ms; %.0f KiB per replica; etcd %.2f cores\n",
					s.Name, s.Replicas, s.WriterP50ms, s.WriterP99ms, s.AllP50ms, s.AllP99ms, s.AllMaxms, s.MemoryKiB, s.EtcdCPU)
			}
			return out.save(&report.Results{Fleet: res})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.SplitterBin, "splitter", "bin/splitter", "the splitter binary")
	f.StringVar(&cfg.EtcdBin, "etcd", ".venv/bin/etcd", "the etcd binary (scripts/etcd.sh)")
	f.IntVar(&cfg.Changes, "changes", 100, "changes per setup")
	f.IntVar(&cfg.Processes, "processes", 3, "splitter processes of the processes setup")
	f.IntVar(&cfg.Watchers, "watchers", 1000, "replicas of the watchers setups (in this process)")
	f.IntVar(&cfg.Smaller, "smaller", 300, "replicas of one more watchers setup, run first (0: none)")
	f.DurationVar(&cfg.PollInterval, "poll", time.Millisecond, "admin API poll interval of the processes setup")
	f.DurationVar(&cfg.Raised, "raised", 2*time.Second, "etcd_follow_interval of the N-watcher setups run again (0: not run)")
	out.register(cmd)
	return cmd
}

func newRolloutCmd() *cobra.Command {
	var (
		c rollback.Config
		o outFlags
	)
	d := rollback.Defaults()
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Time the rollout guard's rollback of a failing or slow canary through a real Envoy, beside it and inside it (runs per window)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.Logger = logger()
			m := report.ReadMachine()
			res, err := rollback.Execute(cmd.Context(), c)
			if err != nil {
				return err
			}
			// This section is measured on its own: it names its machine
			// and leaves the report's machine facts to the other runs.
			res.Machine = fmt.Sprintf("%s, %d cores; %s; %s; load average at start %s", m.Model, m.Cores, m.Go, m.Date, m.Load)
			return o.save(&report.Results{Rollback: res})
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Splitter, "splitter", "bin/splitter", "splitter binary")
	f.StringVar(&c.Envoy, "envoy", "", "Envoy binary (default: $ENVOY_BIN, .venv/bin/envoy, PATH)")
	f.IntVar(&c.Runs, "runs", d.Runs, "rollbacks measured per window")
	f.DurationSliceVar(&c.Windows, "windows", d.Windows, "guard windows, one series each")
	f.DurationSliceVar(&c.Intervals, "signals-intervals", d.Intervals, "the splitter's signals_interval values, one series each with every window")
	f.Float64Var(&c.FailPercent, "fail-percent", d.FailPercent, "share of the canary's requests answered 500")
	f.IntVar(&c.Canary, "canary", d.Canary, "the canary's step, in percent")
	f.IntVar(&c.MinRequests, "min-requests", d.MinRequests, "the guard's min_requests")
	f.IntVar(&c.Workers, "workers", d.Workers, "concurrent clients sending through Envoy")
	f.StringVar(&c.ModuleDir, "module-dir", "", "directory of libsplitter.so (make module): measure the module too")
	f.DurationVar(&c.Delay, "delay", d.Delay, "the latency case's slowdown of every canary request (0: no latency case)")
	o.register(cmd)
	return cmd
}
