// Package compare runs the ext_proc comparison: the splitter against the
// no-op baseline, each in its own process pinned to one CPU, loaded
// alternately over several rounds and concurrency levels by the Envoy-like
// generator. Because a single run moves by 15-25 % on a shared machine,
// the figures that matter are the per-round ratios (splitter / baseline,
// measured back to back) summarised as median and min..max.
package compare

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/trafficsplit/splitter/bench/loadgen"
	"github.com/trafficsplit/splitter/bench/proc"
)

// Target is one server under test.
type Target struct {
	Name   string
	Argv   []string // --grpc-addr/--admin-addr/--ready-file are appended
	Env    []string
	Expect loadgen.Expect
}

// Config is one comparison.
type Config struct {
	Baseline, Candidate Target
	Levels              []int // concurrent streams; default 1, 16, 64, 256
	Conns               int   // HTTP/2 connections (fewer when a level has fewer streams); default 2
	Rounds              int   // default 5
	Duration            time.Duration
	Warmup              time.Duration
	BetaShare           float64
	Users               int
	ServerCPU           int // CPU the servers are pinned to; -1: unpinned
	Dir                 string
	Logger              *slog.Logger
}

// Stats is one target's figures at one level; in a Level they are the
// medians over rounds of each figure separately.
type Stats struct {
	RPS          float64 `json:"rps"`
	P50us        float64 `json:"p50_us"`
	P90us        float64 `json:"p90_us"`
	P99us        float64 `json:"p99_us"`
	P999us       float64 `json:"p999_us"`
	ServerCPUus  float64 `json:"server_cpu_us_per_req"`
	ServerAllocs float64 `json:"server_allocs_per_req"` // -1: not exposed
	ClientCPUus  float64 `json:"client_cpu_us_per_req"`
	ClientAllocs float64 `json:"client_allocs_per_req"`
	Requests     int64   `json:"requests"`
	Errors       int64   `json:"errors"`
	Invalid      int64   `json:"invalid"`
}

// Ratio summarises candidate/baseline over rounds.
type Ratio struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Level is the outcome at one concurrency.
type Level struct {
	Concurrency int              `json:"concurrency"`
	Conns       int              `json:"conns"`
	Baseline    Stats            `json:"baseline"`
	Candidate   Stats            `json:"candidate"`
	Ratios      map[string]Ratio `json:"ratios"` // keys: RatioKeys
	Versions    map[string]int64 `json:"candidate_versions"`
	Pinned      int64            `json:"candidate_pinned"`
	FirstErrors []string         `json:"first_errors,omitempty"`
}

// RatioKeys are the figures compared, in report order.
func RatioKeys() []string { return []string{"rps", "p50", "p99", "server_cpu", "server_allocs"} }

// Run is one measured run, kept for the record.
type Run struct {
	Round       int    `json:"round"`
	Concurrency int    `json:"concurrency"`
	Target      string `json:"target"`
	Stats       Stats  `json:"stats"`
}

// Result is a whole comparison.
type Result struct {
	Started   time.Time `json:"started"`
	Baseline  string    `json:"baseline"`
	Candidate string    `json:"candidate"`
	// CandidateEnv is what the candidate's environment had beyond the
	// baseline's.
	CandidateEnv []string `json:"candidate_env,omitempty"`
	Rounds       int      `json:"rounds"`
	Duration     string   `json:"duration"`
	Warmup       string   `json:"warmup"`
	BetaShare    float64  `json:"beta_share"`
	Users        int      `json:"users"`
	ServerCPU    int      `json:"server_cpu"`
	Levels       []Level  `json:"levels"`
	Runs         []Run    `json:"runs"`
}

func (c *Config) defaults() {
	if len(c.Levels) == 0 {
		c.Levels = []int{1, 16, 64, 256}
	}
	if c.Conns <= 0 {
		c.Conns = 2
	}
	if c.Rounds <= 0 {
		c.Rounds = 5
	}
	if c.Duration <= 0 {
		c.Duration = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Execute starts both servers, runs every round and level, and stops them.
func Execute(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	log := cfg.Logger
	servers := make([]*proc.Server, 2)
	for i, t := range []Target{cfg.Baseline, cfg.Candidate} {
		s, err := proc.Start(ctx, proc.Spec{Name: t.Name, Argv: t.Argv, Env: t.Env, CPU: cfg.ServerCPU, Dir: cfg.Dir})
		if err != nil {
			for _, s := range servers[:i] {
				s.Stop()
			}
			return nil, fmt.Errorf("compare: %w", err)
		}
		defer s.Stop()
		servers[i] = s
		log.Info("started", "target", t.Name, "pid", s.PID, "grpc", s.GRPCAddr, "admin", s.AdminAddr)
	}
	targets := []Target{cfg.Baseline, cfg.Candidate}

	res := &Result{
		Started: time.Now().UTC(), Baseline: cfg.Baseline.Name, Candidate: cfg.Candidate.Name, CandidateEnv: cfg.Candidate.Env,
		Rounds: cfg.Rounds, Duration: cfg.Duration.String(), Warmup: cfg.Warmup.String(),
		BetaShare: cfg.BetaShare, Users: cfg.Users, ServerCPU: cfg.ServerCPU,
	}
	type key struct{ level, target int }
	raw := map[key][]*loadgen.Result{}
	for round := range cfg.Rounds {
		for li, conc := range cfg.Levels {
			// Alternate which target goes first, so slow drift of the
			// machine does not always favour the same one.
			order := []int{0, 1}
			if (round+li)%2 == 1 {
				order = []int{1, 0}
			}
			for _, ti := range order {
				t, s := targets[ti], servers[ti]
				r, err := loadgen.Run(ctx, loadgen.Config{
					Addr: s.GRPCAddr, Conns: min(cfg.Conns, conc), Concurrency: conc,
					Duration: cfg.Duration, Warmup: cfg.Warmup,
					BetaShare: cfg.BetaShare, Users: cfg.Users,
					Expect: t.Expect, Server: s,
				})
				if err != nil {
					return nil, fmt.Errorf("compare: round %d, %d streams, %s: %w", round+1, conc, t.Name, err)
				}
				raw[key{li, ti}] = append(raw[key{li, ti}], r)
				st := statsOf(r)
				res.Runs = append(res.Runs, Run{Round: round + 1, Concurrency: conc, Target: t.Name, Stats: st})
				log.Info("run", "round", round+1, "streams", conc, "target", t.Name,
					"rps", int(st.RPS), "p99_us", int(st.P99us), "server_cpu_us", fmt.Sprintf("%.1f", st.ServerCPUus),
					"server_allocs", fmt.Sprintf("%.1f", st.ServerAllocs), "errors", st.Errors, "invalid", st.Invalid)
			}
		}
	}
	for li, conc := range cfg.Levels {
		base, cand := raw[key{li, 0}], raw[key{li, 1}]
		lv := Level{
			Concurrency: conc, Conns: min(cfg.Conns, conc),
			Baseline: medianStats(base), Candidate: medianStats(cand),
			Ratios: map[string]Ratio{}, Versions: map[string]int64{},
		}
		for _, r := range cand {
			for v, n := range r.Versions {
				lv.Versions[v] += n
			}
			lv.Pinned += r.Pinned
			lv.FirstErrors = append(lv.FirstErrors, r.FirstErrors...)
		}
		for _, r := range base {
			lv.FirstErrors = append(lv.FirstErrors, r.FirstErrors...)
		}
		if len(lv.FirstErrors) > 5 {
			lv.FirstErrors = lv.FirstErrors[:5]
		}
		for _, k := range RatioKeys() {
			var rs []float64
			for i := range min(len(base), len(cand)) {
				b, c := figure(statsOf(base[i]), k), figure(statsOf(cand[i]), k)
				if b > 0 && c >= 0 {
					rs = append(rs, c/b)
				}
			}
			if len(rs) > 0 {
				lv.Ratios[k] = summarize(rs)
			}
		}
		res.Levels = append(res.Levels, lv)
	}
	return res, nil
}

func figure(s Stats, k string) float64 {
	switch k {
	case "rps":
		return s.RPS
	case "p50":
		return s.P50us
	case "p99":
		return s.P99us
	case "server_cpu":
		return s.ServerCPUus
	case "server_allocs":
		return s.ServerAllocs
	}
	return -1
}

func statsOf(r *loadgen.Result) Stats {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return Stats{
		RPS: r.RPS(), P50us: us(r.Latency.Quantile(0.5)), P90us: us(r.Latency.Quantile(0.9)),
		P99us: us(r.Latency.Quantile(0.99)), P999us: us(r.Latency.Quantile(0.999)),
		ServerCPUus: us(r.ServerCPUPerReq), ServerAllocs: r.ServerAllocsPerReq,
		ClientCPUus: us(r.ClientCPUPerReq), ClientAllocs: r.ClientAllocsPerReq,
		Requests: r.Requests, Errors: r.Errors, Invalid: r.Invalid,
	}
}

// medianStats takes the median of each figure on its own and the sum of
// the counts.
func medianStats(rs []*loadgen.Result) Stats {
	var all []Stats
	for _, r := range rs {
		all = append(all, statsOf(r))
	}
	med := func(f func(Stats) float64) float64 {
		var xs []float64
		for _, s := range all {
			xs = append(xs, f(s))
		}
		return Median(xs)
	}
	out := Stats{
		RPS:          med(func(s Stats) float64 { return s.RPS }),
		P50us:        med(func(s Stats) float64 { return s.P50us }),
		P90us:        med(func(s Stats) float64 { return s.P90us }),
		P99us:        med(func(s Stats) float64 { return s.P99us }),
		P999us:       med(func(s Stats) float64 { return s.P999us }),
		ServerCPUus:  med(func(s Stats) float64 { return s.ServerCPUus }),
		ServerAllocs: med(func(s Stats) float64 { return s.ServerAllocs }),
		ClientCPUus:  med(func(s Stats) float64 { return s.ClientCPUus }),
		ClientAllocs: med(func(s Stats) float64 { return s.ClientAllocs }),
	}
	for _, s := range all {
		out.Requests += s.Requests
		out.Errors += s.Errors
		out.Invalid += s.Invalid
	}
	return out
}

// Median of xs (0 for none); xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func summarize(xs []float64) Ratio {
	return Ratio{Median: Median(xs), Min: slices.Min(xs), Max: slices.Max(xs)}
}
