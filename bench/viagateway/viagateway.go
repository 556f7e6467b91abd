// Package viagateway measures the splitter where Envoy Gateway users would
// run it: behind the Envoy that Envoy Gateway (standalone mode, host
// infrastructure) starts, loaded by wrk, against Envoy Gateway's own way to
// split, an HTTPRoute rule whose backendRefs are weighted 80/20. Three
// Gateways in one Envoy Gateway, each with its own Envoy, are loaded in
// turn, round after round: the weighted route (the baseline), the splitter
// over ext_proc, the splitter inside Envoy as its dynamic module. Their
// resources carry the settings of examples/envoy-gateway/. The runs
// themselves are bench/viaenvoy's: the same wrk mix, the same CPU
// accounting, the same pinning (Envoy Gateway, its Envoys and the sidecar
// on one core, wrk and the backends on the other).
package viagateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/trafficsplit/splitter/bench/compare"
	"github.com/trafficsplit/splitter/bench/proc"
	"github.com/trafficsplit/splitter/bench/viaenvoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// Config is one set of runs through Envoy Gateway.
type Config struct {
	Splitter  string // splitter binary
	Envoy     string // Envoy binary ("" finds one as the test bed does)
	Gateway   string // envoy-gateway binary ("" finds one as the test bed does)
	ModuleDir string // directory of libsplitter.so
	Wrk       string
	Rounds    int
	Duration  time.Duration
	// Connections and Threads are wrk's -c and -t.
	Connections, Threads int
	// ProxyCPU takes Envoy Gateway, its Envoys (one worker each) and the
	// sidecar; LoadCPU wrk and the in-process backends. -1: unpinned (Envoy
	// then runs a worker per core).
	ProxyCPU, LoadCPU int
	BetaShare         float64
	Users             int
	Logger            *slog.Logger
}

// The setups, in report order; the first is the baseline.
const (
	SetupWeighted = "weighted"
	SetupExtProc  = "ext_proc"
	SetupModule   = "module"
)

// EnvoyVersion is the version the EnvoyProxy resources name (the PyPI
// Envoy is linked under it, so nothing is downloaded).
const EnvoyVersion = "1.40.0"

// Result is the Envoy Gateway section of BENCH.md.
type Result struct {
	Started        time.Time `json:"started"`
	GatewayVersion string    `json:"envoy_gateway_version"`
	EnvoyVer       string    `json:"envoy_version"`
	Tool           string    `json:"tool"`
	Rounds         int       `json:"rounds"`
	Duration       string    `json:"duration"`
	Connections    int       `json:"connections"`
	Threads        int       `json:"threads"`
	ProxyCPU       int       `json:"proxy_cpu"`
	LoadCPU        int       `json:"load_cpu"`
	BetaShare      float64   `json:"beta_share"`
	Users          int       `json:"users"`
	// LoadBefore and LoadAfter are /proc/loadavg around the runs.
	LoadBefore string          `json:"loadavg_before"`
	LoadAfter  string          `json:"loadavg_after"`
	Modes      []viaenvoy.Mode `json:"modes"`
	// EnvoyRatios are, per setup, Envoy's own CPU per request over the
	// baseline's, per round (Modes' proxy_cpu ratio adds the sidecar's).
	EnvoyRatios map[string]compare.Ratio `json:"envoy_cpu_ratios"`
	Runs        []viaenvoy.Run           `json:"runs"`
	Notes       []string                 `json:"notes"`
}

func (c *Config) defaults() {
	if c.Rounds <= 0 {
		c.Rounds = 10
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
}

// envoyGatewayConfig is examples/envoy-gateway/envoy-gateway.yaml with
// quieter logs.
const envoyGatewayConfig = `apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyGateway
gateway:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
provider:
  type: Custom
  custom:
    resource:
      type: File
      file:
        paths: [{{.Resources}}]
    infrastructure:
      type: Host
      host:
        configHome: {{.Dirs.ConfigHome}}
        dataHome: {{.Dirs.DataHome}}
        stateHome: {{.Dirs.StateHome}}
        runtimeDir: {{.Dirs.RuntimeDir}}
logging:
  level:
    default: warn
extensionApis:
  enableBackend: true
`

// commonResources are the GatewayClass and the Backends every Gateway
// uses.
const commonResources = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: bench}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: api-v1}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: {{.V1}}}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: api-v2}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: {{.V2}}}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: splitter}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: {{.Splitter}}}}]}
`

// setupResources are one Gateway, in a file of its own (Envoy Gateway's
// file provider keeps one EnvoyProxy per file): Envoy Gateway's weighted
// backendRefs, or the resources of examples/envoy-gateway/ for ext_proc or
// the module (the strip of client route headers, the route on
// x-route-version, the policy on the Gateway).
const setupResources = `apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyProxy
metadata: {name: {{.S.Name}}}
spec:
  provider: {type: Host, host: {envoyVersion: "{{.EnvoyVersion}}"}}
  extraArgs: ["--disable-hot-restart"]
{{- if eq .S.Kind "module"}}
  dynamicModules:
    - {name: splitter, source: {type: Local, local: {path: {{.Library}}}}, doNotClose: true}
{{- end}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: {{.S.Name}}}
spec:
  gatewayClassName: bench
  infrastructure: {parametersRef: {group: gateway.envoyproxy.io, kind: EnvoyProxy, name: {{.S.Name}}}}
  listeners: [{name: http, protocol: HTTP, port: {{.S.Port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: {{.S.Name}}}
spec:
  parentRefs: [{name: {{.S.Name}}}]
  rules:
{{- if eq .S.Kind "weighted"}}
    - backendRefs:
        - {group: gateway.envoyproxy.io, kind: Backend, name: api-v1, weight: 80}
        - {group: gateway.envoyproxy.io, kind: Backend, name: api-v2, weight: 20}
{{- else}}
    - matches: [{headers: [{type: Exact, name: x-route-version, value: v2}]}]
      backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: api-v2}]
    - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: api-v1}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: {{.S.Name}}}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: {{.S.Name}}}]
  headers: {earlyRequestHeaders: {remove: [x-route-version, x-route-reason, x-variant]}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyExtensionPolicy
metadata: {name: {{.S.Name}}}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: {{.S.Name}}}]
{{- if eq .S.Kind "ext_proc"}}
  extProc:
    - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: splitter}]
      processingMode: {request: {}}
      failOpen: true
      messageTimeout: 200ms
{{- else}}
  dynamicModule:
    - name: splitter
      filterName: splitter
      config: {config: {{.Config}}, admin_addr: "127.0.0.1:{{.ModuleAdmin}}", log_level: warn}
{{- end}}
{{- end}}
`

type setupSpec struct {
	Name, Kind string
	Port       int
}

// Execute starts the backends, the splitter, and Envoy Gateway with the
// three Gateways, then loads each Gateway's Envoy in turn, round after
// round.
func Execute(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	log := cfg.Logger
	wrk, err := exec.LookPath(cfg.Wrk)
	if err != nil {
		return nil, fmt.Errorf("viagateway: %w (scripts/loadtool.sh installs wrk)", err)
	}
	root, _ := testbed.RepoRoot()
	envoyBin, gatewayBin := cfg.Envoy, cfg.Gateway
	if envoyBin == "" {
		if envoyBin, err = testbed.FindEnvoy(root); err != nil {
			return nil, fmt.Errorf("viagateway: %w", err)
		}
	}
	if gatewayBin == "" {
		if gatewayBin, err = testbed.FindGateway(root); err != nil {
			return nil, fmt.Errorf("viagateway: %w", err)
		}
	}
	splitterBin, err := filepath.Abs(cfg.Splitter)
	if err != nil {
		return nil, err
	}
	lib, err := filepath.Abs(filepath.Join(cfg.ModuleDir, "libsplitter.so"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(lib); err != nil {
		return nil, fmt.Errorf("viagateway: %w (make module)", err)
	}
	dir, err := os.MkdirTemp("", "splitter-bench-gateway-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bed := testbed.New(dir, log)
	defer bed.Close()

	if cfg.LoadCPU >= 0 {
		if err := proc.PinSelf(cfg.LoadCPU); err != nil {
			return nil, err
		}
	}
	backends, err := bed.StartBackends("v1", "v2")
	if err != nil {
		return nil, fmt.Errorf("viagateway: backends: %w", err)
	}
	cfgPath := filepath.Join(dir, "split.yaml")
	if err := os.WriteFile(cfgPath, []byte(compare.SeedConfig), 0o644); err != nil {
		return nil, err
	}
	var env []string
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && cfg.ProxyCPU >= 0 {
		env = []string{"GOMAXPROCS=1"}
	}
	sp, err := bed.StartSplitterEnv(ctx, splitterBin, cfgPath, env)
	if err != nil {
		return nil, fmt.Errorf("viagateway: splitter: %w", err)
	}
	if cfg.ProxyCPU >= 0 {
		if err := proc.PinPID(sp.Pid(), cfg.ProxyCPU); err != nil {
			return nil, err
		}
	}

	setups := []setupSpec{{Name: "bench-weighted", Kind: SetupWeighted}, {Name: "bench-ext-proc", Kind: SetupExtProc}, {Name: "bench-module", Kind: SetupModule}}
	for i := range setups {
		if setups[i].Port, err = testbed.FreeAnyPort(); err != nil {
			return nil, err
		}
	}
	moduleAdmin, err := testbed.FreePort()
	if err != nil {
		return nil, err
	}
	dirs, err := bed.NewGatewayDirs()
	if err != nil {
		return nil, err
	}
	port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
	files := []string{filepath.Join(dir, "common.yaml")}
	if err := render(files[0], commonResources, map[string]any{
		"V1": port(backends[0].Addr), "V2": port(backends[1].Addr), "Splitter": port(sp.GRPCAddr),
	}); err != nil {
		return nil, err
	}
	for _, s := range setups {
		f := filepath.Join(dir, s.Name+".yaml")
		if err := render(f, setupResources, map[string]any{
			"S": s, "EnvoyVersion": EnvoyVersion, "Library": lib, "Config": cfgPath, "ModuleAdmin": moduleAdmin,
		}); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	egPath := filepath.Join(dir, "envoy-gateway.yaml")
	if err := render(egPath, envoyGatewayConfig, map[string]any{"Resources": strings.Join(files, ", "), "Dirs": dirs}); err != nil {
		return nil, err
	}
	gw, err := bed.StartGateway(ctx, gatewayBin, testbed.GatewayOptions{
		ConfigPath: egPath, Dirs: dirs, Envoy: envoyBin, EnvoyVersion: EnvoyVersion, CPU: cfg.ProxyCPU,
	})
	if err != nil {
		return nil, fmt.Errorf("viagateway: %w", err)
	}
	targets := make([]viaenvoy.Target, len(setups))
	for i, s := range setups {
		e, err := gw.WaitEnvoy(ctx, s.Port)
		if err != nil {
			return nil, fmt.Errorf("viagateway: %s: %w\n%s", s.Kind, err, gw.Tail(30))
		}
		if err := waitDecided(ctx, e, s.Kind); err != nil {
			return nil, fmt.Errorf("viagateway: %s: %w\n%s", s.Kind, err, gw.Tail(30))
		}
		targets[i] = viaenvoy.Target{URL: e.URL("/"), EnvoyPID: e.PID, Stats: versionStats(func(ctx context.Context) (map[string]uint64, error) { return e.Stats(ctx, "") }, e.Clusters, addrs(backends)), ProxyCPU: cfg.ProxyCPU, LoadCPU: cfg.LoadCPU}
		if s.Kind == SetupExtProc {
			targets[i].SplitterPID = sp.Pid()
		}
		log.Info("envoy started by envoy gateway", "setup", s.Kind, "listen", e.ListenAddr, "pid", e.PID)
	}
	scriptPath := filepath.Join(dir, "mix.lua")
	vcfg := viaenvoy.Config{Rounds: cfg.Rounds, Duration: cfg.Duration, Connections: cfg.Connections, Threads: cfg.Threads,
		ProxyCPU: cfg.ProxyCPU, LoadCPU: cfg.LoadCPU, BetaShare: cfg.BetaShare, Users: cfg.Users}
	if err := viaenvoy.WriteScript(scriptPath, vcfg); err != nil {
		return nil, err
	}
	res := &Result{
		Started: time.Now().UTC(), GatewayVersion: gatewayVersion(ctx, gatewayBin), EnvoyVer: viaenvoy.EnvoyVersion(ctx, envoyBin),
		Tool: wrkVersion(ctx, wrk), Rounds: cfg.Rounds, Duration: cfg.Duration.String(), Connections: cfg.Connections, Threads: cfg.Threads,
		ProxyCPU: cfg.ProxyCPU, LoadCPU: cfg.LoadCPU, BetaShare: cfg.BetaShare, Users: cfg.Users, LoadBefore: proc.LoadAverage(),
	}
	warm := vcfg
	warm.Duration = time.Second
	for i := range targets {
		if _, err := viaenvoy.RunOne(ctx, wrk, scriptPath, targets[i], warm); err != nil {
			return nil, fmt.Errorf("viagateway: warm-up %s: %w", setups[i].Kind, err)
		}
	}
	bySetup := make([][]viaenvoy.Run, len(setups))
	for round := range cfg.Rounds {
		for k := range setups {
			i := (k + round) % len(setups)
			r, err := viaenvoy.RunOne(ctx, wrk, scriptPath, targets[i], vcfg)
			if err != nil {
				return nil, fmt.Errorf("viagateway: round %d, %s: %w", round+1, setups[i].Kind, err)
			}
			r.Round, r.Mode = round+1, setups[i].Kind
			res.Runs = append(res.Runs, r)
			bySetup[i] = append(bySetup[i], r)
			log.Info("run", "round", round+1, "setup", setups[i].Kind, "rps", int(r.RPS), "p50_us", int(r.P50us),
				"envoy_cpu_us", fmt.Sprintf("%.1f", r.CPU.Envoy), "splitter_cpu_us", fmt.Sprintf("%.1f", r.CPU.Splitter),
				"proxy_busy", fmt.Sprintf("%.2f", r.CPU.ProxyBusy), "non2xx", r.Non2xx, "versions", r.Versions)
		}
	}
	res.LoadAfter = proc.LoadAverage()
	res.EnvoyRatios = map[string]compare.Ratio{}
	for i, s := range setups {
		res.Modes = append(res.Modes, viaenvoy.Summarize(s.Kind, bySetup[i], bySetup[0]))
		var xs []float64
		for k := range min(len(bySetup[i]), len(bySetup[0])) {
			if b := bySetup[0][k].CPU.Envoy; b > 0 {
				xs = append(xs, bySetup[i][k].CPU.Envoy/b)
			}
		}
		if len(xs) > 0 {
			res.EnvoyRatios[s.Kind] = ratio(xs)
		}
	}
	res.Notes = notes(res)
	return res, nil
}

func ratio(xs []float64) compare.Ratio {
	r := compare.Ratio{Median: compare.Median(xs), Min: xs[0], Max: xs[0]}
	for _, x := range xs {
		r.Min, r.Max = min(r.Min, x), max(r.Max, x)
	}
	return r
}

func render(path, tmpl string, data any) error {
	t, err := template.New(filepath.Base(path)).Parse(tmpl)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// waitDecided waits until the Gateway's routes and filter are in place: a
// beta tester lands on v2 (decided by the splitter), or, for the weighted
// route, any request is answered.
func waitDecided(ctx context.Context, e *testbed.GatewayEnvoy, kind string) error {
	c := e.Client()
	defer c.Close()
	h := http.Header{"X-Beta": {"true"}}
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		rep, err := c.Get(ctx, "/", h)
		switch {
		case err != nil:
			last = err
		case kind == SetupWeighted || rep.Version == "v2":
			return nil
		default:
			last = fmt.Errorf("a beta tester landed on %s", rep.Version)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("no decided request within 2 minutes: %v", last)
}

// addrs maps each backend's address to its version.
func addrs(backends []*testbed.Backend) map[string]string {
	out := map[string]string{}
	for _, b := range backends {
		out[b.Addr] = b.Version
	}
	return out
}

// versionStats returns an Envoy's counters (from stats and clusters, its
// /stats and /clusters) in the names bench/viaenvoy reads: the requests
// each backend got (per host in /clusters, whatever cluster Envoy Gateway
// put it in) as cluster.<version>.upstream_rq_total, and the ext_proc
// Backend's cluster as cluster.splitter.*.
func versionStats(stats func(context.Context) (map[string]uint64, error), clusters func(context.Context) (string, error), byAddr map[string]string) func(context.Context) (map[string]uint64, error) {
	return func(ctx context.Context) (map[string]uint64, error) {
		st, err := stats(ctx)
		if err != nil {
			return nil, err
		}
		out := map[string]uint64{}
		for k, v := range st {
			rest, isCluster := strings.CutPrefix(k, "cluster.")
			if !isCluster {
				out[k] = v
				continue
			}
			// Envoy Gateway names the ext_proc Backend's cluster
			// envoyextensionpolicy/<ns>/<policy>/extproc/<n>.
			if name, stat, ok := strings.Cut(rest, "."); ok && strings.Contains(name, "/extproc/") {
				out["cluster.splitter."+stat] = v
			}
		}
		cl, err := clusters(ctx)
		if err != nil {
			return nil, err
		}
		for line := range strings.Lines(cl) {
			// cluster::host:port::rq_total::N
			f := strings.Split(strings.TrimSpace(line), "::")
			if len(f) != 4 || f[2] != "rq_total" {
				continue
			}
			if v, ok := byAddr[f[1]]; ok {
				n, _ := strconv.ParseUint(f[3], 10, 64)
				out["cluster."+v+".upstream_rq_total"] += n
			}
		}
		return out, nil
	}
}

func gatewayVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ENVOY_GATEWAY_VERSION: "); ok {
			return v
		}
	}
	return "unknown"
}

func wrkVersion(ctx context.Context, bin string) string {
	out, _ := exec.CommandContext(ctx, bin, "-v").CombinedOutput()
	f := strings.Fields(string(out))
	if len(f) < 2 || f[0] != "wrk" {
		return "wrk"
	}
	return f[0] + " " + f[1]
}

// notes flags what would make the figures meaningless.
func notes(r *Result) []string {
	var out []string
	for _, m := range r.Modes {
		v1, v2 := m.Versions["v1"], m.Versions["v2"]
		if v2 == 0 || v1 == 0 {
			out = append(out, fmt.Sprintf("%s: upstream v1=%d v2=%d: not split (see Envoy Gateway's log)", m.Mode, v1, v2))
		}
		if m.Non2xx > 0 || m.SockErrs > 0 {
			out = append(out, fmt.Sprintf("%s: %d non-2xx responses and %d socket errors", m.Mode, m.Non2xx, m.SockErrs))
		}
		for _, k := range []string{"ext_proc.failure_mode_allowed", "ext_proc.message_timeouts", "ext_proc.streams_failed"} {
			if n := m.Stats[k]; n > 0 {
				out = append(out, fmt.Sprintf("%s: Envoy counted %d %s: some requests did not get the splitter's answer", m.Mode, n, k))
			}
		}
	}
	return out
}

// Render writes the Envoy Gateway section of BENCH.md.
func Render(w io.Writer, r *Result) {
	var b strings.Builder
	b.WriteString("## Through Envoy Gateway: its weighted backendRefs, the splitter over ext_proc, the module\n\n")
	pin := "unpinned"
	if r.ProxyCPU >= 0 {
		pin = fmt.Sprintf("Envoy Gateway, its Envoys (one worker each: Envoy Gateway starts Envoy with `--cpuset-threads`) and the splitter pinned to CPU %d (GOMAXPROCS=1), wrk and the backends to CPU %d", r.ProxyCPU, r.LoadCPU)
	}
	fmt.Fprintf(&b, "Envoy Gateway %s in standalone mode (file resources, host infrastructure) running Envoy %s, one Envoy per Gateway; %s. "+
		"Three Gateways in the same Envoy Gateway, loaded in turn with the order rotated each round, %d rounds of %s: "+
		"`weighted` is Envoy Gateway's own split, one HTTPRoute rule with `backendRefs` weighted 80/20 (no splitter); "+
		"`ext_proc` and `module` are examples/envoy-gateway/'s resources (the early strip of client route headers, a rule on "+
		"`x-route-version`, the EnvoyExtensionPolicy on the Gateway) with the splitter on the seed configuration over ext_proc "+
		"(fail open, 200 ms) and inside Envoy. Load: %s, %d connection(s), %.0f %% `x-beta: true`, `x-user-id` from %d values. "+
		"Load average (1, 5, 15 min) %s before, %s after: the machine is shared, so compare the ratios (per round, median and min..max).\n\n",
		r.GatewayVersion, r.EnvoyVer, pin, r.Rounds, r.Duration, r.Tool, r.Connections, r.BetaShare*100, r.Users, r.LoadBefore, r.LoadAfter)
	b.WriteString("| setup | req/s | req/s vs weighted | p50 µs | p99 µs | Envoy µs/req | Envoy CPU/req vs weighted | splitter µs/req | Envoy+splitter CPU/req vs weighted | upstream v1 / v2 |\n")
	b.WriteString("|---|---:|---|---:|---:|---:|---|---:|---|---|\n")
	for _, m := range r.Modes {
		split := "-"
		if m.Mode == SetupExtProc {
			split = fmt.Sprintf("%.1f", m.CPU.Splitter)
		}
		env := "n/a"
		if x, ok := r.EnvoyRatios[m.Mode]; ok {
			env = fmt.Sprintf("%.2f (%.2f..%.2f)", x.Median, x.Min, x.Max)
		}
		v1, v2 := m.Versions["v1"], m.Versions["v2"]
		fmt.Fprintf(&b, "| %s | %.0f | %s | %.0f | %.0f | %.1f | %s | %s | %s | %d / %d (%.1f %% v2) |\n",
			m.Mode, m.RPS, viaenvoy.RatioCell(m, "rps"), m.P50us, m.P99us, m.CPU.Envoy, env, split,
			viaenvoy.RatioCell(m, "proxy_cpu"), v1, v2, 100*float64(v2)/float64(max(v1+v2, 1)))
	}
	b.WriteString("\n")
	if len(r.Notes) > 0 {
		b.WriteString("Warnings:\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	_, _ = io.WriteString(w, b.String())
}

// Check fails a result whose figures mean nothing: a setup that split
// nothing (no request reached one of the versions). Failed-open requests
// and socket errors, which a contended machine causes now and then, are
// warnings in the report, as for the runs through plain Envoy.
func Check(r *Result) error {
	if len(r.Modes) == 0 {
		return errors.New("viagateway: no runs")
	}
	var bad []string
	for _, m := range r.Modes {
		if m.Versions["v1"] == 0 || m.Versions["v2"] == 0 {
			bad = append(bad, fmt.Sprintf("%s: upstream v1=%d v2=%d", m.Mode, m.Versions["v1"], m.Versions["v2"]))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("viagateway: not split (see Envoy Gateway's log): %s", strings.Join(bad, "; "))
	}
	return nil
}
