// Package assign measures what a request given a fresh sticky key costs
// (sticky.assign, docs/anonymous-and-mirror.md) against a keyed request of
// the same service, through a real Envoy: over ext_proc the assigned
// request is two messages on its stream (request headers, whose reply asks
// for the response headers with mode_override, then the response headers,
// answered with the key's Set-Cookie), the keyed one is one; in the
// module the assigned request's key is copied into the stream and added in
// the response-headers hook. The runs are package viaenvoy's (wrk, Envoy on
// one pinned core with the splitter, wrk and the backends on the other),
// the keyed and the assigned setups of each adapter alternating in every
// round, and every ratio is taken between the two runs of one round.
package assign

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/trafficsplit/splitter/bench/compare"
	"github.com/trafficsplit/splitter/bench/viaenvoy"
	"github.com/trafficsplit/splitter/envoy"
)

// Config is the seed configuration with key assignment on its service.
var Config = strings.Replace(compare.SeedConfig, "sticky: {header: x-user-id}",
	"sticky: {header: x-user-id, assign: {cookie: splitter-id, max_age: 720h}}", 1)

// keyed sends every request with one of 1000 user ids (sticky_routing);
// anonymous sends none, and wrk keeps no cookies: every request is given a
// key (sticky_assigned).
const (
	keyed = `local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/api/items?page=1", {["x-user-id"] = "user-" .. (n % 1000)})
end
`
	anonymous = `request = function() return wrk.format("GET", "/api/items?page=1", {}) end
`
)

// Pair is one adapter's assigned setup against its keyed one.
type Pair struct {
	Adapter  string `json:"adapter"`
	Keyed    string `json:"keyed"`
	Assigned string `json:"assigned"`
	// Ratios of assigned to keyed, per round: rps, p50, p99, proxy_cpu
	// (Envoy plus splitter CPU per request) and splitter_cpu.
	Ratios map[string]compare.Ratio `json:"ratios"`
	// MessagesPerStream is what Envoy's ext_proc filter sent per stream
	// (keyed, assigned); 0 for the module.
	KeyedMessages    float64 `json:"keyed_msgs_per_stream,omitempty"`
	AssignedMessages float64 `json:"assigned_msgs_per_stream,omitempty"`
}

// Result is the section.
type Result struct {
	Machine string           `json:"machine"`
	Envoy   *viaenvoy.Result `json:"envoy"`
	Pairs   []Pair           `json:"pairs"`
}

// Setups are the keyed and assigned setups of ext_proc and of the module.
func Setups() []viaenvoy.Setup {
	return []viaenvoy.Setup{
		{Name: "ext_proc keyed", Mode: envoy.ModeExtProc, Script: keyed},
		{Name: "ext_proc assigned", Mode: envoy.ModeExtProc, Script: anonymous},
		{Name: "module keyed", Mode: envoy.ModeModule, Module: viaenvoy.ModuleSplitter, Script: keyed},
		{Name: "module assigned", Mode: envoy.ModeModule, Module: viaenvoy.ModuleSplitter, Script: anonymous},
	}
}

// Execute runs the setups and pairs them.
func Execute(ctx context.Context, cfg viaenvoy.Config) (*Result, error) {
	cfg.Setups, cfg.SplitterConfig = Setups(), Config
	res, err := viaenvoy.Execute(ctx, cfg)
	if err != nil {
		return nil, err
	}
	out := &Result{Envoy: res}
	for _, a := range []string{"ext_proc", "module"} {
		p := Pair{Adapter: a, Keyed: a + " keyed", Assigned: a + " assigned", Ratios: map[string]compare.Ratio{}}
		k, s := runsOf(res, p.Keyed), runsOf(res, p.Assigned)
		for _, f := range []string{"rps", "p50", "p99", "proxy_cpu", "splitter_cpu"} {
			var xs []float64
			for i := range min(len(k), len(s)) {
				if b := figure(k[i], f); b > 0 {
					xs = append(xs, figure(s[i], f)/b)
				}
			}
			if len(xs) > 0 {
				p.Ratios[f] = compare.Ratio{Median: compare.Median(xs), Min: slices.Min(xs), Max: slices.Max(xs)}
			}
		}
		p.KeyedMessages, p.AssignedMessages = messagesPerStream(res, p.Keyed), messagesPerStream(res, p.Assigned)
		out.Pairs = append(out.Pairs, p)
	}
	return out, nil
}

func runsOf(r *viaenvoy.Result, mode string) []viaenvoy.Run {
	var out []viaenvoy.Run
	for _, run := range r.Runs {
		if run.Mode == mode {
			out = append(out, run)
		}
	}
	slices.SortFunc(out, func(a, b viaenvoy.Run) int { return a.Round - b.Round })
	return out
}

func figure(r viaenvoy.Run, k string) float64 {
	switch k {
	case "rps":
		return r.RPS
	case "p50":
		return r.P50us
	case "p99":
		return r.P99us
	case "proxy_cpu":
		return r.CPU.Envoy + r.CPU.Splitter
	case "splitter_cpu":
		return r.CPU.Splitter
	}
	return 0
}

// messagesPerStream is the ext_proc filter's messages sent per stream
// started, over the setup's runs; 0 when it has no such counters.
func messagesPerStream(r *viaenvoy.Result, mode string) float64 {
	for _, m := range r.Modes {
		if m.Mode != mode {
			continue
		}
		var msgs, streams uint64
		for k, v := range m.Stats {
			switch {
			case strings.HasSuffix(k, "ext_proc.stream_msgs_sent"):
				msgs += v
			case strings.HasSuffix(k, "ext_proc.streams_started"):
				streams += v
			}
		}
		if streams > 0 {
			return float64(msgs) / float64(streams)
		}
	}
	return 0
}

// Render writes the section of BENCH.md.
func Render(b *strings.Builder, r *Result) {
	e := r.Envoy
	b.WriteString("## Anonymous clients: a request given a sticky key against a keyed one\n\n")
	fmt.Fprintf(b, "`make bench-assign` (package `bench/assign`). The seed configuration with `sticky.assign` on its service; "+
		"`keyed` requests carry one of 1000 `x-user-id` values (sticky_routing), `assigned` ones carry nothing and wrk keeps "+
		"no cookies, so every one is given a fresh key from crypto/rand and its response a `Set-Cookie` (sticky_assigned). "+
		"Over ext_proc an assigned request is two messages on its stream (the request headers, whose reply asks for the "+
		"response headers with `mode_override`, then the response headers, answered with the cookie), a keyed one is one; "+
		"in the module the cookie is kept with the stream and added by the response-headers hook in C. "+
		"Envoy %s (%d worker) pinned to CPU %d with the splitter, %s and the backends on CPU %d; %d connections; "+
		"%d rounds of %s per setup, the order rotated each round; ratios assigned / keyed between the two runs of a round "+
		"(median, min..max). Machine: %s.\n\n",
		e.EnvoyVer, e.Workers, e.ProxyCPU, e.Tool, e.LoadCPU, e.Connections, e.Rounds, e.Duration, r.Machine)
	b.WriteString("| adapter | req/s | p50 | p99 | Envoy+splitter CPU/req | splitter CPU/req | ext_proc messages per stream (keyed → assigned) |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, p := range r.Pairs {
		msgs := "-"
		if p.KeyedMessages > 0 {
			msgs = fmt.Sprintf("%.2f → %.2f", p.KeyedMessages, p.AssignedMessages)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", p.Adapter, cell(p, "rps"), cell(p, "p50"), cell(p, "p99"),
			cell(p, "proxy_cpu"), cell(p, "splitter_cpu"), msgs)
	}
	b.WriteString("\nAbsolute figures (median over rounds; CPU in µs per request):\n\n")
	b.WriteString("| setup | req/s | p50 µs | p99 µs | Envoy µs/req | splitter µs/req | requests | non-2xx | upstream v1 / v2 |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, m := range e.Modes {
		v1, v2 := m.Versions["v1"], m.Versions["v2"]
		fmt.Fprintf(b, "| %s | %.0f | %.0f | %.0f | %.1f | %.1f | %d | %d | %d / %d (%.1f %% v2) |\n",
			m.Mode, m.RPS, m.P50us, m.P99us, m.CPU.Envoy, m.CPU.Splitter, m.Requests, m.Non2xx, v1, v2,
			100*float64(v2)/float64(max(v1+v2, 1)))
	}
	b.WriteString("\n")
}

func cell(p Pair, k string) string {
	r, ok := p.Ratios[k]
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.2f (%.2f..%.2f)", r.Median, r.Min, r.Max)
}
