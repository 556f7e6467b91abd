// Package viaenvoy measures the splitter where it is used: behind a real
// Envoy, loaded over HTTP by a standard load tool (wrk), against Envoy's
// own weighted_clusters (no splitter at all) as the baseline. Envoy and the
// splitter share one CPU (the sidecar takes from the proxy's budget), wrk
// and the backends the other. Envoy's counters confirm that the splitter
// really answered: a failed-open ext_proc call would look cheap and route
// everything to v1.
package viaenvoy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
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
	BetaShare   float64
	Users       int
	Logger      *slog.Logger
}

// Modes in report order; the first is the baseline.
func Modes() []envoy.Mode {
	return []envoy.Mode{envoy.ModeWeighted, envoy.ModeExtProc, envoy.ModeExtAuthz}
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
}

// Mode is the summary of one mode.
type Mode struct {
	Mode     string                   `json:"mode"`
	RPS      float64                  `json:"rps"`
	P50us    float64                  `json:"p50_us"`
	P90us    float64                  `json:"p90_us"`
	P99us    float64                  `json:"p99_us"`
	Requests int64                    `json:"requests"`
	Non2xx   int64                    `json:"non_2xx"`
	SockErrs int64                    `json:"socket_errors"`
	Versions map[string]uint64        `json:"versions"`
	Stats    map[string]uint64        `json:"filter_stats,omitempty"`
	Ratios   map[string]compare.Ratio `json:"ratios,omitempty"` // to the baseline: rps, p50, p99
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
	BetaShare   float64   `json:"beta_share"`
	Users       int       `json:"users"`
	Modes       []Mode    `json:"modes"`
	Runs        []Run     `json:"runs"`
	Notes       []string  `json:"notes"`
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
	if err := os.WriteFile(cfgPath, []byte(compare.SeedConfig), 0o644); err != nil {
		return nil, err
	}
	sp, err := bed.StartSplitter(ctx, splitterBin, cfgPath)
	if err != nil {
		return nil, fmt.Errorf("viaenvoy: splitter: %w", err)
	}
	if err := pin(sp.Pid(), cfg.ProxyCPU); err != nil {
		return nil, err
	}
	modes := Modes()
	envoys := make([]*testbed.Envoy, len(modes))
	for i, m := range modes {
		p, err := testbed.LoopbackParams(m, sp.GRPCAddr, backends...)
		if err != nil {
			return nil, err
		}
		if m == envoy.ModeWeighted {
			p.Backends[0].Weight, p.Backends[1].Weight = 80, 20
		}
		e, err := bed.StartEnvoy(ctx, envoyBin, p, testbed.EnvoyOptions{Concurrency: cfg.Workers})
		if err != nil {
			return nil, fmt.Errorf("viaenvoy: envoy %s: %w", m, err)
		}
		if err := pin(e.Pid(), cfg.ProxyCPU); err != nil {
			return nil, err
		}
		envoys[i] = e
		log.Info("envoy started", "mode", m, "listen", e.ListenAddr, "pid", e.Pid())
	}
	scriptPath := filepath.Join(dir, "mix.lua")
	if err := os.WriteFile(scriptPath, fmt.Appendf(nil, script, cfg.BetaShare, cfg.Users, time.Now().UnixNano()%1e6), 0o644); err != nil {
		return nil, err
	}

	res := &Result{
		Started: time.Now().UTC(), EnvoyBin: envoyBin, EnvoyVer: envoyVersion(ctx, envoyBin), Tool: wrkVersion(ctx, wrk),
		Rounds: cfg.Rounds, Duration: cfg.Duration.String(), Connections: cfg.Connections, Threads: cfg.Threads,
		Workers: cfg.Workers, ProxyCPU: cfg.ProxyCPU, LoadCPU: cfg.LoadCPU, BetaShare: cfg.BetaShare, Users: cfg.Users,
	}
	// One short unmeasured run per Envoy first: the first requests pay
	// for connection setup and cold caches, in Envoy and in the splitter.
	warm := cfg
	warm.Duration = time.Second
	for i, e := range envoys {
		if _, err := runOne(ctx, wrk, scriptPath, e, warm); err != nil {
			return nil, fmt.Errorf("viaenvoy: warm-up %s: %w", modes[i], err)
		}
	}
	byMode := make([][]Run, len(modes))
	for round := range cfg.Rounds {
		for k := range modes {
			// Rotate the order so no mode always runs first or last.
			i := (k + round) % len(modes)
			r, err := runOne(ctx, wrk, scriptPath, envoys[i], cfg)
			if err != nil {
				return nil, fmt.Errorf("viaenvoy: round %d, %s: %w", round+1, modes[i], err)
			}
			r.Round, r.Mode = round+1, string(modes[i])
			res.Runs = append(res.Runs, r)
			byMode[i] = append(byMode[i], r)
			log.Info("run", "round", round+1, "mode", modes[i], "rps", int(r.RPS), "p99_us", int(r.P99us),
				"non2xx", r.Non2xx, "socket_errors", r.SockErrs, "versions", r.Versions)
		}
	}
	for i, m := range modes {
		res.Modes = append(res.Modes, summarize(string(m), byMode[i], byMode[0]))
	}
	res.Notes = notes(res)
	return res, nil
}

func pin(pid, cpu int) error {
	if cpu < 0 {
		return nil
	}
	return proc.PinPID(pid, cpu)
}

// runOne runs wrk once against e and reads Envoy's counters around it.
func runOne(ctx context.Context, wrk, script string, e *testbed.Envoy, cfg Config) (Run, error) {
	before, err := e.Stats(ctx, "")
	if err != nil {
		return Run{}, err
	}
	args := []string{"-t", strconv.Itoa(cfg.Threads), "-c", strconv.Itoa(cfg.Connections),
		"-d", fmt.Sprintf("%ds", max(1, int(cfg.Duration.Seconds()))), "--latency", "-s", script, e.URL("/")}
	if cfg.LoadCPU >= 0 {
		args = append([]string{"-c", strconv.Itoa(cfg.LoadCPU), wrk}, args...)
		wrk = "taskset"
	}
	out, err := exec.CommandContext(ctx, wrk, args...).CombinedOutput()
	if err != nil {
		return Run{}, fmt.Errorf("%s %s: %w\n%s", wrk, strings.Join(args, " "), err, out)
	}
	r, err := ParseWrk(string(out))
	if err != nil {
		return Run{}, fmt.Errorf("%w\n%s", err, out)
	}
	after, err := e.Stats(ctx, "")
	if err != nil {
		return Run{}, err
	}
	r.Versions = map[string]uint64{}
	r.Stats = map[string]uint64{}
	for k, v := range after {
		d := v - before[k]
		if v < before[k] {
			d = 0
		}
		switch {
		case strings.HasPrefix(k, "cluster.v") && strings.HasSuffix(k, ".upstream_rq_total"):
			r.Versions[strings.TrimSuffix(strings.TrimPrefix(k, "cluster."), ".upstream_rq_total")] = d
		case strings.Contains(k, ".ext_proc.") || strings.Contains(k, ".ext_authz."):
			if d > 0 {
				r.Stats[k[strings.Index(k, "ext_"):]] = d
			}
		}
	}
	return r, nil
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

func summarize(mode string, runs, base []Run) Mode {
	m := Mode{Mode: mode, Versions: map[string]uint64{}, Stats: map[string]uint64{}, Ratios: map[string]compare.Ratio{}}
	var rps, p50, p90, p99 []float64
	for _, r := range runs {
		rps, p50, p90, p99 = append(rps, r.RPS), append(p50, r.P50us), append(p90, r.P90us), append(p99, r.P99us)
		m.Requests += r.Requests
		m.Non2xx += r.Non2xx
		m.SockErrs += r.SockErrs
		for k, v := range r.Versions {
			m.Versions[k] += v
		}
		for k, v := range r.Stats {
			m.Stats[k] += v
		}
	}
	m.RPS, m.P50us, m.P90us, m.P99us = compare.Median(rps), compare.Median(p50), compare.Median(p90), compare.Median(p99)
	for _, k := range []string{"rps", "p50", "p99"} {
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

func envoyVersion(ctx context.Context, bin string) string {
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
	b.WriteString("## Through Envoy: native weighted_clusters, ext_proc, ext_authz\n\n")
	proxy := "unpinned"
	if r.ProxyCPU >= 0 {
		proxy = fmt.Sprintf("Envoy and the splitter pinned to CPU %d, wrk and the backends to CPU %d", r.ProxyCPU, r.LoadCPU)
	}
	fmt.Fprintf(b, "Envoy %s (%d worker) in front of two echo backends (v1, v2), %s. Load: %s, "+
		"%d connection(s) over %d thread(s), HTTP/1.1 keep-alive, %.0f %% of requests with `x-beta: true`, "+
		"`x-user-id` from %d values; %d rounds of %s per mode, the order rotated each round. "+
		"`weighted` is Envoy's own weighted_clusters 80/20 with no splitter; `ext_proc` and `ext_authz` ask the "+
		"splitter (seed configuration) on every request, `failure_mode_allow: true`, message timeout 200 ms, "+
		"splitter cluster circuit breakers raised to 100000.\n\n",
		r.EnvoyVer, r.Workers, proxy, r.Tool, r.Connections, r.Threads, r.BetaShare*100, r.Users, r.Rounds, r.Duration)
	b.WriteString("| mode | req/s | p50 µs | p90 µs | p99 µs | req/s vs native | p50 vs native | p99 vs native | requests | non-2xx | socket errors | upstream v1 / v2 |\n")
	b.WriteString("|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---|\n")
	for _, m := range r.Modes {
		cell := func(k string) string {
			x, ok := m.Ratios[k]
			if !ok {
				return "n/a"
			}
			return fmt.Sprintf("%.2f (%.2f..%.2f)", x.Median, x.Min, x.Max)
		}
		v1, v2 := m.Versions["v1"], m.Versions["v2"]
		fmt.Fprintf(b, "| %s | %.0f | %.0f | %.0f | %.0f | %s | %s | %s | %d | %d | %d | %d / %d (%.1f %% v2) |\n",
			m.Mode, m.RPS, m.P50us, m.P90us, m.P99us, cell("rps"), cell("p50"), cell("p99"),
			m.Requests, m.Non2xx, m.SockErrs, v1, v2, 100*float64(v2)/float64(max(v1+v2, 1)))
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
