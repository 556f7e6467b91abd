// Package viaenvoy measures the splitter where it is used: behind a real
// Envoy, loaded over HTTP by a standard load tool (wrk), against Envoy's
// own weighted_clusters (no splitter at all) as the baseline. Envoy and the
// splitter share one CPU (the sidecar takes from the proxy's budget), wrk
// and the backends the other. Envoy's counters confirm that the splitter
// really answered: a failed-open ext_proc call would look cheap and route
// everything to v1. The in-process module (libsplitter.so) runs inside its
// Envoy, beside a C module that only sets the route header and clears the
// route cache (bench/cmodule/cbase.c): the floor for any module.
package viaenvoy

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/bench/compare"
	"github.com/trafficsplit/splitter/bench/proc"
	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// Config is one set of runs through Envoy.
type Config struct {
	Splitter    string // splitter binary
	Envoy       string // Envoy binary; "" finds one as the test bed does
	Wrk         string // wrk binary
	Rounds      int
	Duration    time.Duration
	Connections int // wrk -c
	Threads     int // wrk -t
	Workers     int // Envoy --concurrency
	ProxyCPU    int // Envoy and the splitter; -1 unpinned
	LoadCPU     int // wrk and the in-process backends; -1 unpinned
	// SplitterWithLoad pins the splitter to LoadCPU instead of ProxyCPU:
	// a sidecar that does not take from the proxy's core.
	SplitterWithLoad bool
	BetaShare        float64
	Users            int
	// ModuleDir holds libsplitter.so (`make module`), for the module
	// setups; CC compiles the C baseline module (default "cc").
	ModuleDir string
	CC        string
	// Setups are the Envoys to compare, in report order; the first is the
	// baseline. Default: Setups().
	Setups []Setup
	// SplitterConfig is the routing configuration the splitter (and the
	// module) runs on; "" is the seed configuration.
	SplitterConfig string
	Logger         *slog.Logger
}

// Setup is one Envoy under test: a mode with the template's defaults,
// optionally changed, so that a tuning knob can be measured against the
// same baseline in the same rounds.
type Setup struct {
	Name    string // report label; default the mode
	Mode    envoy.Mode
	Workers int                   // Envoy --concurrency; 0: Config.Workers
	Tune    func(p *envoy.Params) // applied to the loopback parameters
	// Module is the library of a ModeModule setup: ModuleSplitter or
	// ModuleCBase.
	Module string
	// Edit rewrites the rendered bootstrap, for knobs Params lacks.
	Edit func(bootstrap []byte) ([]byte, error)
	// Script is wrk's Lua request generator for this setup; "" is the
	// standard mix (Config.BetaShare, Config.Users).
	Script string
}

// The libraries of the module setups.
const (
	ModuleSplitter = envoy.DefaultModuleName // libsplitter.so
	ModuleCBase    = "splitter_cbase"        // bench/cmodule/cbase.c
)

// Setups are the standard comparison: Envoy's own weighted_clusters (the
// baseline), the splitter inside Envoy (the module), the C baseline module,
// then the splitter over ext_proc and over ext_authz, each with the
// bootstrap template's defaults.
func Setups() []Setup {
	return []Setup{
		{Mode: envoy.ModeWeighted},
		{Name: "module", Mode: envoy.ModeModule, Module: ModuleSplitter},
		{Name: "c_module", Mode: envoy.ModeModule, Module: ModuleCBase},
		{Mode: envoy.ModeExtProc},
		{Mode: envoy.ModeExtAuthz},
	}
}

// Run is one wrk run.
type Run struct {
	Round    int               `json:"round"`
	Mode     string            `json:"mode"`
	RPS      float64           `json:"rps"`
	P50us    float64           `json:"p50_us"`
	P90us    float64           `json:"p90_us"`
	P99us    float64           `json:"p99_us"`
	Requests int64             `json:"requests"`
	Non2xx   int64             `json:"non_2xx"`
	SockErrs int64             `json:"socket_errors"`
	Versions map[string]uint64 `json:"versions"` // upstream requests per cluster
	Stats    map[string]uint64 `json:"filter_stats,omitempty"`
	CPU      CPU               `json:"cpu"`
}

// CPU is where the processor time of a run went: microseconds of CPU per
// request completed by wrk, from /proc/<pid>/stat (10 ms ticks, so runs of
// a few seconds are needed), and how busy each of the two pinned cores was
// (from /proc/stat, which counts every process, other users' included).
type CPU struct {
	Envoy    float64 `json:"envoy_us_per_req"`
	Splitter float64 `json:"splitter_us_per_req"`
	Wrk      float64 `json:"wrk_us_per_req"`
	Backends float64 `json:"backends_us_per_req"` // this process: the in-process backends
	// ProxyBusy and LoadBusy are the busy share (0..1) of ProxyCPU and LoadCPU.
	ProxyBusy float64 `json:"proxy_cpu_busy"`
	LoadBusy  float64 `json:"load_cpu_busy"`
}

// Mode is the summary of one mode.
type Mode struct {
	Mode     string            `json:"mode"`
	RPS      float64           `json:"rps"`
	P50us    float64           `json:"p50_us"`
	P90us    float64           `json:"p90_us"`
	P99us    float64           `json:"p99_us"`
	Requests int64             `json:"requests"`
	Non2xx   int64             `json:"non_2xx"`
	SockErrs int64             `json:"socket_errors"`
	Versions map[string]uint64 `json:"versions"`
	Stats    map[string]uint64 `json:"filter_stats,omitempty"`
	CPU      CPU               `json:"cpu"` // median of each field over rounds
	// Ratios to the baseline: rps, p50, p99 and proxy_cpu (Envoy plus
	// splitter CPU per request).
	Ratios map[string]compare.Ratio `json:"ratios,omitempty"`
}

// Result is the whole Envoy section.
type Result struct {
	Started     time.Time `json:"started"`
	EnvoyBin    string    `json:"envoy"`
	EnvoyVer    string    `json:"envoy_version"`
	Tool        string    `json:"tool"`
	Rounds      int       `json:"rounds"`
	Duration    string    `json:"duration"`
	Connections int       `json:"connections"`
	Threads     int       `json:"threads"`
	Workers     int       `json:"envoy_workers"`
	ProxyCPU    int       `json:"proxy_cpu"`
	LoadCPU     int       `json:"load_cpu"`
	SplitterCPU int       `json:"splitter_cpu"`
	// SplitterProcs is the splitter's GOMAXPROCS setting ("" for Go's default).
	SplitterProcs string   `json:"splitter_gomaxprocs,omitempty"`
	BetaShare     float64  `json:"beta_share"`
	Users         int      `json:"users"`
	Modes         []Mode   `json:"modes"`
	Runs          []Run    `json:"runs"`
	Notes         []string `json:"notes"`
}

func (c *Config) defaults() {
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Connections <= 0 {
		c.Connections = 32
	}
	if c.Threads <= 0 {
		c.Threads = 1
	}
	if c.Workers <= 0 {
		c.Workers = 1
	}
	if c.Wrk == "" {
		c.Wrk = "wrk"
	}
	if c.BetaShare == 0 {
		c.BetaShare = 0.1
	}
	if c.Users == 0 {
		c.Users = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.CC == "" {
		c.CC = "cc"
	}
	if len(c.Setups) == 0 {
		c.Setups = Setups()
	}
	c.Setups = slices.Clone(c.Setups)
	for i := range c.Setups {
		if c.Setups[i].Name == "" {
			c.Setups[i].Name = string(c.Setups[i].Mode)
		}
	}
}

// script is wrk's request generator: the same mix as the ext_proc
// generator (a share of x-beta: true, x-user-id from a fixed set).
const script = `local beta, users = %g, %d
local n = 0
setup = function(thread) thread:set("seed", %d + n); n = n + 1 end
init = function(args) math.randomseed(seed) end
request = function()
  local h = {}
  if math.random() < beta then h["x-beta"] = "true" end
  if users > 0 then h["x-user-id"] = "user-" .. math.random(0, users - 1) end
  return wrk.format("GET", "/api/items?page=1", h)
end
`

// Execute starts the backends, the splitter and one Envoy per mode, then
// loads each Envoy in turn, round after round.
func Execute(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	log := cfg.Logger
	wrk, err := exec.LookPath(cfg.Wrk)
	if err != nil {
		return nil, fmt.Errorf("viaenvoy: %w (scripts/loadtool.sh installs wrk)", err)
	}
	envoyBin := cfg.Envoy
	if envoyBin == "" {
		root, _ := testbed.RepoRoot()
		if envoyBin, err = testbed.FindEnvoy(root); err != nil {
			return nil, fmt.Errorf("viaenvoy: %w", err)
		}
	}
	splitterBin, err := filepath.Abs(cfg.Splitter)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "splitter-bench-envoy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bed := testbed.New(dir, log)
	defer bed.Close()

	if cfg.LoadCPU >= 0 {
		// The backends run in this process: they belong with the client.
		if err := proc.PinSelf(cfg.LoadCPU); err != nil {
			return nil, err
		}
	}
	backends, err := bed.StartBackends("v1", "v2")
	if err != nil {
		return nil, fmt.Errorf("viaenvoy: backends: %w", err)
	}
	cfgPath := filepath.Join(dir, "split.yaml")
	if err := os.WriteFile(cfgPath, []byte(cmp.Or(cfg.SplitterConfig, compare.SeedConfig)), 0o644); err != nil {
		return nil, err
	}
	splitterCPU := cfg.ProxyCPU
	if cfg.SplitterWithLoad {
		splitterCPU = cfg.LoadCPU
	}
	// One core, one P, as a sidecar limited to one CPU gets; a GOMAXPROCS
	// set by the caller wins (the report's machine section shows it).
	var env []string
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && splitterCPU >= 0 {
		env = []string{"GOMAXPROCS=1"}
	}
	sp, err := bed.StartSplitterEnv(ctx, splitterBin, cfgPath, env)
	if err != nil {
		return nil, fmt.Errorf("viaenvoy: splitter: %w", err)
	}
	if err := pin(sp.Pid(), splitterCPU); err != nil {
		return nil, err
	}
	setups := cfg.Setups
	libDir := ""
	if slices.ContainsFunc(setups, func(s Setup) bool { return s.Mode == envoy.ModeModule }) {
		if libDir, err = moduleDir(ctx, cfg, dir); err != nil {
			return nil, err
		}
	}
	envoys := make([]*testbed.Envoy, len(setups))
	for i, s := range setups {
		p, err := testbed.LoopbackParams(s.Mode, sp.GRPCAddr, backends...)
		if err != nil {
			return nil, err
		}
		if s.Mode == envoy.ModeWeighted {
			p.Backends[0].Weight, p.Backends[1].Weight = 80, 20
		}
		if s.Tune != nil {
			s.Tune(&p)
		}
		workers := cmp.Or(s.Workers, cfg.Workers)
		o := testbed.EnvoyOptions{Concurrency: workers, Edit: s.Edit}
		var e *testbed.Envoy
		switch {
		case s.Mode == envoy.ModeModule && s.Module == ModuleSplitter:
			// The module's settings: the same configuration file as the
			// sidecar's, logs at warn.
			e, _, err = bed.StartEnvoyModule(ctx, envoyBin, libDir, p, map[string]any{"config": cfgPath, "log_level": "warn"}, o)
		case s.Mode == envoy.ModeModule:
			p.Module.Name = s.Module
			o.Env = append(o.Env, testbed.ModuleSearchPath+"="+libDir)
			e, err = bed.StartEnvoy(ctx, envoyBin, p, o)
		default:
			e, err = bed.StartEnvoy(ctx, envoyBin, p, o)
		}
		if err != nil {
			return nil, fmt.Errorf("viaenvoy: envoy %s: %w", s.Name, err)
		}
		if err := pin(e.Pid(), cfg.ProxyCPU); err != nil {
			return nil, err
		}
		envoys[i] = e
		log.Info("envoy started", "setup", s.Name, "listen", e.ListenAddr, "pid", e.Pid(), "workers", workers)
	}
	scriptPath := filepath.Join(dir, "mix.lua")
	if err := WriteScript(scriptPath, cfg); err != nil {
		return nil, err
	}
	scripts := make([]string, len(setups))
	for i, s := range setups {
		scripts[i] = scriptPath
		if s.Script != "" {
			scripts[i] = filepath.Join(dir, fmt.Sprintf("setup-%d.lua", i))
			if err := os.WriteFile(scripts[i], []byte(s.Script), 0o644); err != nil {
				return nil, err
			}
		}
	}

	res := &Result{
		Started: time.Now().UTC(), EnvoyBin: envoyBin, EnvoyVer: EnvoyVersion(ctx, envoyBin), Tool: wrkVersion(ctx, wrk),
		Rounds: cfg.Rounds, Duration: cfg.Duration.String(), Connections: cfg.Connections, Threads: cfg.Threads,
		Workers: cfg.Workers, ProxyCPU: cfg.ProxyCPU, LoadCPU: cfg.LoadCPU, SplitterCPU: splitterCPU,
		SplitterProcs: cmp.Or(strings.TrimPrefix(strings.Join(env, ""), "GOMAXPROCS="), os.Getenv("GOMAXPROCS")),
		BetaShare:     cfg.BetaShare, Users: cfg.Users,
	}
	target := func(i int) Target {
		e := envoys[i]
		t := Target{URL: e.URL("/"), EnvoyPID: e.Pid(), Stats: func(ctx context.Context) (map[string]uint64, error) { return e.Stats(ctx, "") },
			ProxyCPU: cfg.ProxyCPU, LoadCPU: cfg.LoadCPU}
		if m := setups[i].Mode; m == envoy.ModeExtProc || m == envoy.ModeExtAuthz {
			t.SplitterPID = sp.Pid()
		}
		return t
	}
	// One short unmeasured run per Envoy first: the first requests pay
	// for connection setup and cold caches, in Envoy and in the splitter.
	warm := cfg
	warm.Duration = time.Second
	for i := range envoys {
		if _, err := RunOne(ctx, wrk, scripts[i], target(i), warm); err != nil {
			return nil, fmt.Errorf("viaenvoy: warm-up %s: %w", setups[i].Name, err)
		}
	}
	bySetup := make([][]Run, len(setups))
	for round := range cfg.Rounds {
		for k := range setups {
			// Rotate the order so no setup always runs first or last.
			i := (k + round) % len(setups)
			r, err := RunOne(ctx, wrk, scripts[i], target(i), cfg)
			if err != nil {
				return nil, fmt.Errorf("viaenvoy: round %d, %s: %w", round+1, setups[i].Name, err)
			}
			r.Round, r.Mode = round+1, setups[i].Name
			res.Runs = append(res.Runs, r)
			bySetup[i] = append(bySetup[i], r)
			log.Info("run", "round", round+1, "setup", setups[i].Name, "rps", int(r.RPS), "p50_us", int(r.P50us), "p99_us", int(r.P99us),
				"envoy_cpu_us", fmt.Sprintf("%.1f", r.CPU.Envoy), "splitter_cpu_us", fmt.Sprintf("%.1f", r.CPU.Splitter),
				"proxy_busy", fmt.Sprintf("%.2f", r.CPU.ProxyBusy), "load_busy", fmt.Sprintf("%.2f", r.CPU.LoadBusy),
				"non2xx", r.Non2xx, "socket_errors", r.SockErrs, "versions", r.Versions)
		}
	}
	for i, s := range setups {
		res.Modes = append(res.Modes, Summarize(s.Name, bySetup[i], bySetup[0]))
	}
	res.Notes = notes(res)
	return res, nil
}

// moduleDir makes the directory Envoy loads the modules from: the
// splitter's library (linked from cfg.ModuleDir) and the C baseline,
// compiled here.
func moduleDir(ctx context.Context, cfg Config, dir string) (string, error) {
	if cfg.ModuleDir == "" {
		return "", errors.New("viaenvoy: module setups need the directory of libsplitter.so (--module-dir; make module)")
	}
	lib, err := filepath.Abs(filepath.Join(cfg.ModuleDir, "libsplitter.so"))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(lib); err != nil {
		return "", fmt.Errorf("viaenvoy: %w (make module)", err)
	}
	out := filepath.Join(dir, "modules")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	if err := os.Symlink(lib, filepath.Join(out, "libsplitter.so")); err != nil {
		return "", err
	}
	root, err := testbed.RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, cfg.CC, "-O2", "-shared", "-fPIC", "-I", filepath.Join(root, "module", "abi"),
		"-o", filepath.Join(out, "lib"+ModuleCBase+".so"), filepath.Join(root, "bench", "cmodule", "cbase.c"))
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("viaenvoy: compile the C baseline module: %w\n%s", err, msg)
	}
	return out, nil
}

func pin(pid, cpu int) error {
	if cpu < 0 {
		return nil
	}
	return proc.PinPID(pid, cpu)
}

// WriteScript writes wrk's request generator for cfg's mix to path.
func WriteScript(path string, cfg Config) error {
	cfg.defaults()
	return os.WriteFile(path, fmt.Appendf(nil, script, cfg.BetaShare, cfg.Users, time.Now().UnixNano()%1e6), 0o644)
}

// Target is what one run loads and measures: an Envoy's listener, its
// process, its counters, and the splitter's process when there is one.
type Target struct {
	URL         string
	EnvoyPID    int
	SplitterPID int // 0: no sidecar (weighted, the modules)
	// Stats returns the Envoy's counters, named as Envoy's /stats names
	// them: the version clusters as cluster.<version>.*, the splitter's as
	// cluster.splitter.*.
	Stats             func(ctx context.Context) (map[string]uint64, error)
	ProxyCPU, LoadCPU int
}

// cpuSample is the processor time consumed so far by each party.
type cpuSample struct {
	envoy, splitter, self time.Duration
	cores                 map[int]coreTime
}

func sampleCPU(t Target) (cpuSample, error) {
	var s cpuSample
	var errs [4]error
	s.envoy, errs[0] = proc.CPUTime(t.EnvoyPID)
	if t.SplitterPID != 0 {
		s.splitter, errs[1] = proc.CPUTime(t.SplitterPID)
	}
	s.self, errs[2] = proc.CPUTime(os.Getpid())
	s.cores, errs[3] = readCoreTimes()
	return s, errors.Join(errs[:]...)
}

// setCPU fills r.CPU from the samples around a run in which wrk itself
// used wrkCPU.
func setCPU(r *Run, t Target, before, after cpuSample, wrkCPU time.Duration) {
	perReq := func(d time.Duration) float64 {
		if r.Requests <= 0 {
			return 0
		}
		return float64(d) / float64(time.Microsecond) / float64(r.Requests)
	}
	r.CPU = CPU{
		Envoy:     perReq(after.envoy - before.envoy),
		Splitter:  perReq(after.splitter - before.splitter),
		Wrk:       perReq(wrkCPU),
		Backends:  perReq(after.self - before.self),
		ProxyBusy: busy(before.cores, after.cores, t.ProxyCPU),
		LoadBusy:  busy(before.cores, after.cores, t.LoadCPU),
	}
}

// RunOne runs wrk once against t and reads Envoy's counters and
// everybody's CPU time around it.
func RunOne(ctx context.Context, wrk, script string, t Target, cfg Config) (Run, error) {
	cfg.defaults()
	before, err := t.Stats(ctx)
	if err != nil {
		return Run{}, err
	}
	args := []string{"-t", strconv.Itoa(cfg.Threads), "-c", strconv.Itoa(cfg.Connections),
		"-d", fmt.Sprintf("%ds", max(1, int(cfg.Duration.Seconds()))), "--latency", "-s", script, t.URL}
	if t.LoadCPU >= 0 {
		// taskset execs wrk in the same process, so wrk's rusage below is wrk's.
		args = append([]string{"-c", strconv.Itoa(t.LoadCPU), wrk}, args...)
		wrk = "taskset"
	}
	cpuBefore, err := sampleCPU(t)
	if err != nil {
		return Run{}, err
	}
	cmd := exec.CommandContext(ctx, wrk, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Run{}, fmt.Errorf("%s %s: %w\n%s", wrk, strings.Join(args, " "), err, out)
	}
	cpuAfter, err := sampleCPU(t)
	if err != nil {
		return Run{}, err
	}
	r, err := ParseWrk(string(out))
	if err != nil {
		return Run{}, fmt.Errorf("%w\n%s", err, out)
	}
	setCPU(&r, t, cpuBefore, cpuAfter, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
	after, err := t.Stats(ctx)
	if err != nil {
		return Run{}, err
	}
	r.Versions, r.Stats = statDeltas(before, after)
	return r, nil
}

// isGauge tells the splitter cluster's gauges, kept as their value after
// the run, from its counters, kept as their increase during it.
func isGauge(name string) bool {
	return strings.HasSuffix(name, "_active") || strings.HasSuffix(name, ".pending_send_bytes")
}

// statDeltas picks from two /stats snapshots the upstream requests per
// version cluster and the counters that tell how Envoy talked to the
// splitter: the filter's own, and the splitter cluster's connections,
// streams and HTTP/2 events.
func statDeltas(before, after map[string]uint64) (versions, stats map[string]uint64) {
	versions, stats = map[string]uint64{}, map[string]uint64{}
	for k, v := range after {
		d := v - before[k]
		if v < before[k] {
			d = 0
		}
		switch {
		case strings.HasPrefix(k, "cluster.splitter.") && isGauge(k):
			stats[strings.TrimPrefix(k, "cluster.")] = v
		case strings.HasPrefix(k, "cluster.v") && strings.HasSuffix(k, ".upstream_rq_total"):
			versions[strings.TrimSuffix(strings.TrimPrefix(k, "cluster."), ".upstream_rq_total")] = d
		case strings.Contains(k, ".ext_proc.") || strings.Contains(k, ".ext_authz."):
			if d > 0 {
				stats[k[strings.Index(k, "ext_"):]] = d
			}
		case k == "cluster.splitter.upstream_cx_total" || k == "cluster.splitter.upstream_rq_total" ||
			strings.HasPrefix(k, "cluster.splitter.http2."):
			if d > 0 {
				stats[strings.TrimPrefix(k, "cluster.")] = d
			}
		}
	}
	return versions, stats
}

// coreTime is one CPU's line of /proc/stat, in clock ticks.
type coreTime struct{ busy, total uint64 }

func readCoreTimes() (map[int]coreTime, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	return parseCoreTimes(string(data))
}

// parseCoreTimes reads the per-CPU lines of /proc/stat ("cpuN user nice
// system idle iowait irq softirq steal ..."); idle and iowait are not busy.
func parseCoreTimes(stat string) (map[int]coreTime, error) {
	out := map[int]coreTime{}
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		var c coreTime
		for i, x := range f[1:min(len(f), 9)] {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/stat %s field %d: %w", f[0], i+1, err)
			}
			c.total += v
			if i != 3 && i != 4 {
				c.busy += v
			}
		}
		out[n] = c
	}
	if len(out) == 0 {
		return nil, errors.New("/proc/stat: no per-CPU lines")
	}
	return out, nil
}

// busy is the share of cpu's time between two samples that was not idle;
// 0 when cpu is -1 (unpinned) or unknown.
func busy(before, after map[int]coreTime, cpu int) float64 {
	b, ok1 := before[cpu]
	a, ok2 := after[cpu]
	if !ok1 || !ok2 || a.total <= b.total {
		return 0
	}
	return float64(a.busy-b.busy) / float64(a.total-b.total)
}

// ParseWrk reads the summary of `wrk --latency`.
func ParseWrk(out string) (Run, error) {
	var r Run
	var have50, haveRPS bool
	sc := bufio.NewScanner(strings.NewReader(out))
	inDist := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "Latency" && len(f) >= 2 && f[1] == "Distribution":
			inDist = true
			continue
		case f[0] == "Requests/sec:" && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %w", sc.Text(), err)
			}
			r.RPS, haveRPS = v, true
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.Requests, _ = strconv.ParseInt(f[0], 10, 64)
		case f[0] == "Non-2xx" && len(f) >= 5:
			r.Non2xx, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		case f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.SockErrs += n
			}
		}
		if inDist && len(f) == 2 && strings.HasSuffix(f[0], "%") {
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			us := float64(d) / float64(time.Microsecond)
			switch f[0] {
			case "50%":
				r.P50us, have50 = us, true
			case "90%":
				r.P90us = us
			case "99%":
				r.P99us = us
			}
		} else if inDist && !strings.HasSuffix(f[0], "%") {
			inDist = false
		}
	}
	if !have50 || !haveRPS {
		return r, errors.New("wrk: no latency distribution or Requests/sec in the output")
	}
	return r, nil
}

// parseWrkDuration reads wrk's "812.00us", "1.23ms", "2.00s" and "1.50m".
func parseWrkDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk duration %q: %w", s, err)
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("wrk duration %q: unknown unit", s)
}

// Summarize reduces one setup's runs to medians, and to ratios against the
// baseline's runs of the same rounds.
func Summarize(mode string, runs, base []Run) Mode {
	m := Mode{Mode: mode, Versions: map[string]uint64{}, Stats: map[string]uint64{}, Ratios: map[string]compare.Ratio{}}
	var rps, p50, p90, p99 []float64
	var cpu [6][]float64
	for _, r := range runs {
		rps, p50, p90, p99 = append(rps, r.RPS), append(p50, r.P50us), append(p90, r.P90us), append(p99, r.P99us)
		for i, x := range []float64{r.CPU.Envoy, r.CPU.Splitter, r.CPU.Wrk, r.CPU.Backends, r.CPU.ProxyBusy, r.CPU.LoadBusy} {
			cpu[i] = append(cpu[i], x)
		}
		m.Requests += r.Requests
		m.Non2xx += r.Non2xx
		m.SockErrs += r.SockErrs
		for k, v := range r.Versions {
			m.Versions[k] += v
		}
		for k, v := range r.Stats {
			if strings.HasPrefix(k, "splitter.") && isGauge(k) {
				m.Stats[k] = max(m.Stats[k], v)
			} else {
				m.Stats[k] += v
			}
		}
	}
	m.RPS, m.P50us, m.P90us, m.P99us = compare.Median(rps), compare.Median(p50), compare.Median(p90), compare.Median(p99)
	m.CPU = CPU{
		Envoy: compare.Median(cpu[0]), Splitter: compare.Median(cpu[1]), Wrk: compare.Median(cpu[2]),
		Backends: compare.Median(cpu[3]), ProxyBusy: compare.Median(cpu[4]), LoadBusy: compare.Median(cpu[5]),
	}
	for _, k := range []string{"rps", "p50", "p99", "proxy_cpu"} {
		var xs []float64
		for i := range min(len(runs), len(base)) {
			b, c := figure(base[i], k), figure(runs[i], k)
			if b > 0 {
				xs = append(xs, c/b)
			}
		}
		if len(xs) > 0 {
			m.Ratios[k] = compare.Ratio{Median: compare.Median(xs), Min: minOf(xs), Max: maxOf(xs)}
		}
	}
	return m
}

func figure(r Run, k string) float64 {
	switch k {
	case "rps":
		return r.RPS
	case "p50":
		return r.P50us
	case "proxy_cpu":
		return r.CPU.Envoy + r.CPU.Splitter
	default:
		return r.P99us
	}
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs[1:] {
		m = min(m, x)
	}
	return m
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs[1:] {
		m = max(m, x)
	}
	return m
}

// notes flags what would make the figures meaningless.
func notes(r *Result) []string {
	var out []string
	for _, m := range r.Modes {
		if m.Mode == "module" && m.Versions["v2"] == 0 {
			out = append(out, "module: no request reached v2: the module did not decide (see Envoy's log)")
		}
		if m.Non2xx > 0 || m.SockErrs > 0 {
			out = append(out, fmt.Sprintf("%s: %d non-2xx responses and %d socket errors", m.Mode, m.Non2xx, m.SockErrs))
		}
		for _, k := range []string{"ext_proc.failure_mode_allowed", "ext_proc.message_timeouts", "ext_proc.streams_failed",
			"ext_authz.failure_mode_allowed", "ext_authz.error", "ext_authz.denied"} {
			if n := m.Stats[k]; n > 0 {
				out = append(out, fmt.Sprintf("%s: Envoy counted %d %s: some requests did not get the splitter's answer", m.Mode, n, k))
			}
		}
	}
	return out
}

// EnvoyVersion is what `bin --version` says after "version: ".
func EnvoyVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "unknown"
	}
	s := strings.TrimSpace(string(out))
	if i := strings.LastIndex(s, "version: "); i >= 0 {
		s = s[i+len("version: "):]
	}
	return s
}

func wrkVersion(ctx context.Context, bin string) string {
	// wrk prints "wrk <version> [epoll] Copyright ..." and exits non-zero.
	out, _ := exec.CommandContext(ctx, bin, "-v").CombinedOutput()
	f := strings.Fields(string(out))
	if len(f) < 2 || f[0] != "wrk" {
		return "wrk"
	}
	return f[0] + " " + f[1]
}

// Render writes the Envoy section of BENCH.md.
func Render(b *strings.Builder, r *Result) {
	b.WriteString("## Through Envoy: native weighted_clusters, the module, a C module, ext_proc, ext_authz\n\n")
	proxy := "unpinned"
	if r.ProxyCPU >= 0 {
		procs := "Go's default GOMAXPROCS"
		if r.SplitterProcs != "" {
			procs = "GOMAXPROCS=" + r.SplitterProcs
		}
		proxy = fmt.Sprintf("Envoy pinned to CPU %d, the splitter to CPU %d (%s), wrk and the backends to CPU %d",
			r.ProxyCPU, r.SplitterCPU, procs, r.LoadCPU)
	}
	fmt.Fprintf(b, "Envoy %s (%d worker) in front of two echo backends (v1, v2), %s. Load: %s, "+
		"%d connection(s) over %d thread(s), HTTP/1.1 keep-alive, %.0f %% of requests with `x-beta: true`, "+
		"`x-user-id` from %d values; %d rounds of %s per mode, the order rotated each round. "+
		"`weighted` is Envoy's own weighted_clusters 80/20 with no splitter; `module` is the splitter inside Envoy "+
		"(libsplitter.so, the same configuration file; its Go runtime runs in Envoy's process, on Envoy's core); "+
		"`c_module` is a C module that only sets `x-route-version: v1` and clears the route cache "+
		"(bench/cmodule/cbase.c, the floor for any module); `ext_proc` and `ext_authz` ask the "+
		"splitter (seed configuration) on every request with the bootstrap template's defaults "+
		"(`envoy/bootstrap.yaml.tmpl`: fail open, message timeout 200 ms, one HTTP/2 connection per Envoy worker).\n\n",
		r.EnvoyVer, r.Workers, proxy, r.Tool, r.Connections, r.Threads, r.BetaShare*100, r.Users, r.Rounds, r.Duration)
	b.WriteString("| mode | req/s | p50 µs | p90 µs | p99 µs | req/s vs native | p50 vs native | p99 vs native | requests | non-2xx | socket errors | upstream v1 / v2 |\n")
	b.WriteString("|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---|\n")
	for _, m := range r.Modes {
		v1, v2 := m.Versions["v1"], m.Versions["v2"]
		fmt.Fprintf(b, "| %s | %.0f | %.0f | %.0f | %.0f | %s | %s | %s | %d | %d | %d | %d / %d (%.1f %% v2) |\n",
			m.Mode, m.RPS, m.P50us, m.P90us, m.P99us, ratioCell(m, "rps"), ratioCell(m, "p50"), ratioCell(m, "p99"),
			m.Requests, m.Non2xx, m.SockErrs, v1, v2, 100*float64(v2)/float64(max(v1+v2, 1)))
	}
	b.WriteString("\nWhere the CPU goes: microseconds of CPU per request (process user+system time from " +
		"`/proc/<pid>/stat` over each run divided by the requests wrk completed; median over rounds), " +
		"and how busy each pinned core was (`/proc/stat`, which also counts every other process on the machine). " +
		"While the proxy core is saturated, req/s follows Envoy plus splitter CPU per request; while the load core " +
		"is, it follows wrk plus backends. The modules have no splitter process: their cost is in Envoy's column.\n\n")
	b.WriteString("| mode | Envoy µs/req | splitter µs/req | Envoy+splitter vs native | wrk µs/req | backends µs/req | proxy core busy | load core busy | HTTP/2 connections to the splitter | splitter streams per request |\n")
	b.WriteString("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, m := range r.Modes {
		split, conns, streams := "-", "-", "-"
		if rq := m.Stats["splitter.upstream_rq_total"]; rq > 0 {
			split = fmt.Sprintf("%.1f", m.CPU.Splitter)
			conns = strconv.FormatUint(m.Stats["splitter.upstream_cx_active"], 10)
			streams = fmt.Sprintf("%.2f", float64(rq)/float64(max(m.Requests, 1)))
		}
		fmt.Fprintf(b, "| %s | %.1f | %s | %s | %.1f | %.1f | %.0f %% | %.0f %% | %s | %s |\n",
			m.Mode, m.CPU.Envoy, split, ratioCell(m, "proxy_cpu"), m.CPU.Wrk, m.CPU.Backends,
			100*m.CPU.ProxyBusy, 100*m.CPU.LoadBusy, conns, streams)
	}
	b.WriteString("\n")
	if len(r.Notes) > 0 {
		b.WriteString("Warnings:\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
}

// RatioCell renders m's ratio k as "median (min..max)".
func RatioCell(m Mode, k string) string { return ratioCell(m, k) }

func ratioCell(m Mode, k string) string {
	x, ok := m.Ratios[k]
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.2f (%.2f..%.2f)", x.Median, x.Min, x.Max)
}
