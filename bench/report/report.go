// Package report gathers what the benchmarks measured (machine facts, the
// ext_proc comparison, the Go micro-benchmarks, the runs through Envoy)
// and renders BENCH.md from it. Each part is kept as JSON in a results
// directory, so one part can be re-run without losing the others.
package report

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/bench/assign"
	"github.com/trafficsplit/splitter/bench/compare"
	"github.com/trafficsplit/splitter/bench/fleetprop"
	"github.com/trafficsplit/splitter/bench/proc"
	"github.com/trafficsplit/splitter/bench/rollback"
	"github.com/trafficsplit/splitter/bench/viaenvoy"
	"github.com/trafficsplit/splitter/bench/viagateway"
)

// Machine describes where the figures were taken.
type Machine struct {
	Model  string `json:"model"`
	Cores  int    `json:"cores"`
	Go     string `json:"go"`
	Kernel string `json:"kernel"`
	Date   string `json:"date"`
	Load   string `json:"loadavg"` // /proc/loadavg when the run started
	Env    string `json:"env"`     // GOGC, GODEBUG, GOMAXPROCS as the servers inherit them
}

// ReadMachine reads /proc for the CPU model, core count, kernel and load.
func ReadMachine() Machine {
	m := Machine{Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH, Date: time.Now().UTC().Format("2006-01-02 15:04 MST")}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "processor":
				m.Cores++
			case "model name":
				if m.Model == "" {
					m.Model = strings.TrimSpace(v)
				}
			}
		}
	}
	var env []string
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GODEBUG", "GOMAXPROCS"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	m.Env = strings.Join(env, " ")
	if m.Env == "" {
		m.Env = "none of GOGC, GOMEMLIMIT, GODEBUG, GOMAXPROCS set (Go defaults; the splitter applies its own gc_percent default of 400)"
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	m.Load = proc.LoadAverage()
	return m
}

// Micro is one `go test -bench` result line.
type Micro struct {
	Package     string  `json:"package"`
	Name        string  `json:"name"`
	NsPerOp     float64 `json:"ns_per_op"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
	Line        string  `json:"line"`
}

// RunMicro runs the Go micro-benchmarks of pkgs in the module at dir
// (`go test -run '^$' -bench . -benchmem`). A package without benchmarks
// contributes nothing; a failing build is an error.
func RunMicro(ctx context.Context, dir, benchtime string, pkgs []string) ([]Micro, string, error) {
	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem"}
	if benchtime != "" {
		args = append(args, "-benchtime", benchtime)
	}
	args = append(args, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return ParseMicro(bytes.NewReader(out)), string(out), fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return ParseMicro(bytes.NewReader(out)), string(out), nil
}

// ParseMicro reads `go test -bench` output.
func ParseMicro(r io.Reader) []Micro {
	var out []Micro
	pkg := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		m := Micro{Package: pkg, Name: f[0], Line: strings.Join(f, " ")}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				m.NsPerOp = v
			case "B/op":
				m.BytesPerOp = v
			case "allocs/op":
				m.AllocsPerOp = v
			}
		}
		out = append(out, m)
	}
	return out
}

// Results is everything BENCH.md is made of; a nil part is left out.
type Results struct {
	Machine *Machine         `json:"machine"`
	ExtProc *compare.Result  `json:"ext_proc,omitempty"`
	Micro   []Micro          `json:"micro,omitempty"`
	Envoy   *viaenvoy.Result `json:"envoy,omitempty"`
	// Gateway is the same comparison through Envoy Gateway's Envoy.
	Gateway *viagateway.Result `json:"gateway,omitempty"`
	// Fleet is measured on its own (make bench-fleet) and names its
	// machine itself.
	Fleet *fleetprop.Result `json:"fleet,omitempty"`
	// Rollback is the rollout guard's time to take a failing canary to 0.
	Rollback *rollback.Result `json:"rollback,omitempty"`
	// Assign is a request given a sticky key against a keyed one
	// (make bench-assign); it names its machine itself.
	Assign *assign.Result `json:"assign,omitempty"`
}

const (
	machineFile  = "machine.json"
	extprocFile  = "extproc.json"
	microFile    = "micro.json"
	envoyFile    = "envoy.json"
	gatewayFile  = "gateway.json"
	fleetFile    = "fleet.json"
	rollbackFile = "rollback.json"
	assignFile   = "assign.json"
)

// Save writes the non-nil parts of r as JSON files in dir.
func Save(dir string, r *Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	parts := []struct {
		name string
		v    any
		set  bool
	}{
		{machineFile, r.Machine, r.Machine != nil},
		{extprocFile, r.ExtProc, r.ExtProc != nil},
		{microFile, r.Micro, r.Micro != nil},
		{envoyFile, r.Envoy, r.Envoy != nil},
		{gatewayFile, r.Gateway, r.Gateway != nil},
		{fleetFile, r.Fleet, r.Fleet != nil},
		{rollbackFile, r.Rollback, r.Rollback != nil},
		{assignFile, r.Assign, r.Assign != nil},
	}
	for _, p := range parts {
		if !p.set {
			continue
		}
		data, err := json.MarshalIndent(p.v, "", "  ")
		if err != nil {
			return fmt.Errorf("results %s: %w", p.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, p.name), append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Load reads whatever parts exist in dir.
func Load(dir string) (*Results, error) {
	r := &Results{}
	parts := []struct {
		name string
		v    any
	}{
		{machineFile, &r.Machine}, {extprocFile, &r.ExtProc}, {microFile, &r.Micro}, {envoyFile, &r.Envoy},
		{gatewayFile, &r.Gateway},
		{fleetFile, &r.Fleet},
		{rollbackFile, &r.Rollback},
		{assignFile, &r.Assign},
	}
	for _, p := range parts {
		data, err := os.ReadFile(filepath.Join(dir, p.name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(data, p.v); err != nil {
			return nil, fmt.Errorf("results %s: %w", filepath.Join(dir, p.name), err)
		}
	}
	return r, nil
}

// Render writes BENCH.md.
func Render(w io.Writer, r *Results) error {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `splitter-bench` (`make bench`) from the JSON files in its results directory. " +
		"Compare ratios, not absolute numbers: on a shared 2-core machine a " +
		"single run moves by 15-25 %, so every ratio below is taken between runs made back to back and " +
		"summarised as the median with min..max over rounds.\n\n")
	if m := r.Machine; m != nil {
		fmt.Fprintf(&b, "## Machine\n\n- CPU: %s, %d cores (from /proc/cpuinfo)\n- Go: %s; kernel %s\n"+
			"- Runtime environment of the servers: %s\n- Date: %s; load average at start: %s\n\n",
			m.Model, m.Cores, m.Go, m.Kernel, m.Env, m.Date, m.Load)
	}
	if r.ExtProc != nil {
		renderExtProc(&b, r.ExtProc)
	}
	if len(r.Micro) > 0 {
		renderMicro(&b, r.Micro)
	}
	if r.Envoy != nil {
		viaenvoy.Render(&b, r.Envoy)
	}
	if r.Gateway != nil {
		viagateway.Render(&b, r.Gateway)
	}
	if r.Assign != nil {
		assign.Render(&b, r.Assign)
	}
	if r.Fleet != nil {
		fleetprop.Render(&b, r.Fleet)
	}
	if r.Rollback != nil {
		rollback.Render(&b, r.Rollback)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func ratioCell(lv compare.Level, k string) string {
	r, ok := lv.Ratios[k]
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.2f (%.2f..%.2f)", r.Median, r.Min, r.Max)
}

func renderExtProc(b *strings.Builder, c *compare.Result) {
	fmt.Fprintf(b, "## ext_proc: %s against the %s baseline\n\n", c.Candidate, c.Baseline)
	cpu := "unpinned"
	if c.ServerCPU >= 0 {
		cpu = fmt.Sprintf("pinned to CPU %d, the generator to the other", c.ServerCPU)
	}
	fmt.Fprintf(b, "Each server runs as its own process (%s). The generator opens one gRPC stream per "+
		"simulated HTTP request as Envoy does (`request_headers` with pseudo-headers, x-request-id and "+
		"user headers in `raw_value`; the reply; half-close; reset) over pooled HTTP/2 connections with "+
		"Envoy's 256 MiB static windows. Mix: %.0f %% of requests carry `x-beta: true`, %s. "+
		"%d rounds of %s per level (after %s warm-up), the two servers alternating within each round. "+
		"Every answer is checked (route header present in `raw_value`, a known version, `clear_route_cache`, "+
		"pinned requests on v2, a variant for keyed requests).\n\n",
		cpu, c.BetaShare*100, usersText(c.Users), c.Rounds, c.Duration, c.Warmup)
	if len(c.CandidateEnv) > 0 {
		fmt.Fprintf(b, "The %s ran with `%s` in its environment; the baseline without.\n\n", c.Candidate, strings.Join(c.CandidateEnv, " "))
	}
	b.WriteString("Ratios (splitter / baseline; median, min..max over rounds; req/s above 1 is better, the rest below 1 is better):\n\n")
	b.WriteString("| streams | conns | req/s | p50 | p99 | server CPU/req | server allocs/req |\n|---:|---:|---|---|---|---|---|\n")
	for _, lv := range c.Levels {
		fmt.Fprintf(b, "| %d | %d | %s | %s | %s | %s | %s |\n", lv.Concurrency, lv.Conns,
			ratioCell(lv, "rps"), ratioCell(lv, "p50"), ratioCell(lv, "p99"), ratioCell(lv, "server_cpu"), ratioCell(lv, "server_allocs"))
	}
	b.WriteString("\nAbsolute figures (median of each over rounds; latency is the whole stream: open, request, reply, close; CPU in µs per request):\n\n")
	b.WriteString("| streams | server | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | server CPU | server allocs | client CPU | client allocs | requests | errors | bad answers |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, lv := range c.Levels {
		for _, row := range []struct {
			name string
			s    compare.Stats
		}{{c.Baseline, lv.Baseline}, {c.Candidate, lv.Candidate}} {
			s := row.s
			allocs := "n/a"
			if s.ServerAllocs >= 0 {
				allocs = fmt.Sprintf("%.1f", s.ServerAllocs)
			}
			fmt.Fprintf(b, "| %d | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %s | %.1f | %.1f | %d | %d | %d |\n",
				lv.Concurrency, row.name, s.RPS, s.P50us, s.P90us, s.P99us, s.P999us,
				s.ServerCPUus, allocs, s.ClientCPUus, s.ClientAllocs, s.Requests, s.Errors, s.Invalid)
		}
	}
	b.WriteString("\nVersions the splitter chose (all rounds):\n\n")
	for _, lv := range c.Levels {
		fmt.Fprintf(b, "- %d streams: %s; %d pinned requests\n", lv.Concurrency, versionsText(lv.Versions), lv.Pinned)
	}
	var errs []string
	for _, lv := range c.Levels {
		for _, e := range lv.FirstErrors {
			errs = append(errs, fmt.Sprintf("%d streams: %s", lv.Concurrency, e))
		}
	}
	if len(errs) > 0 {
		b.WriteString("\nFirst errors:\n\n")
		for _, e := range errs {
			fmt.Fprintf(b, "- `%s`\n", e)
		}
	}
	b.WriteString("\n")
}

func usersText(n int) string {
	if n == 0 {
		return "no user ids (unkeyed)"
	}
	return fmt.Sprintf("every request carries one of %d `x-user-id` values", n)
}

func versionsText(v map[string]int64) string {
	var total int64
	keys := make([]string, 0, len(v))
	for k, n := range v {
		keys = append(keys, k)
		total += n
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s %d (%.1f %%)", name, v[k], 100*float64(v[k])/float64(max(total, 1))))
	}
	return strings.Join(parts, ", ")
}

func renderMicro(b *strings.Builder, ms []Micro) {
	b.WriteString("## Micro-benchmarks\n\n`go test -run '^$' -bench . -benchmem ./split/ ./extproc/`:\n\n")
	b.WriteString("| package | benchmark | ns/op | B/op | allocs/op |\n|---|---|---:|---:|---:|\n")
	for _, m := range ms {
		fmt.Fprintf(b, "| %s | %s | %.1f | %.0f | %.0f |\n", path.Base(m.Package), m.Name, m.NsPerOp, m.BytesPerOp, m.AllocsPerOp)
	}
	b.WriteString("\n")
}
