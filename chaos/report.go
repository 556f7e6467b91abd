package chaos

import (
	"fmt"
	"strings"
	"time"
)

// FaultFigures are one fault's own figures: the checks that apply in its
// window, with their numbers.
type FaultFigures struct {
	Fault Fault
	// Member faults: the worst lag of a replica behind an acknowledged
	// write, and the longest time without an acknowledgement.
	WorstLag, WorstGap time.Duration
	Acked              int
	// Converge is how long after the heal the slowest replica reached the
	// last revision (-1: one never did).
	Converge time.Duration
	Slowest  string
	// Failed and Injected are the requests through Envoy from the start of
	// the fault to Settle after its heal.
	Failed, Injected int
	// BehindLooks are looks in the window that said connected while
	// behind (the following check's failures).
	BehindLooks int
	// Held lists the checks that held in the window; Broke those that did
	// not.
	Held, Broke []string
}

// Figures computes each fault's figures from a checked pass.
func (p *Pass) Figures(settle time.Duration) []FaultFigures {
	h := p.History
	var out []FaultFigures
	for _, f := range h.Faults {
		ff := FaultFigures{Fault: f, Converge: -1}
		for _, c := range p.Convergence {
			if c.Fault == f.Name && len(c.Missing) == 0 {
				ff.Converge, ff.Slowest = c.After, c.Slowest
			}
		}
		to := f.Heal.Add(settle)
		for _, r := range h.Traffic.Failed {
			if !r.At.Before(f.Start) && !r.At.After(to) {
				ff.Failed++
			}
		}
		if f.Kind == MemberFault {
			one := *h
			one.Faults = []Fault{f}
			lag, gap := one.checkLag(), one.checkAckGaps()
			ff.WorstLag, ff.WorstGap = worstOf(lag.Summary), worstOf(gap.Summary)
			for _, w := range h.Writes {
				if w.Acked() && !w.Return.Before(f.Start) && !w.Return.After(f.Heal) {
					ff.Acked++
				}
			}
			mark(&ff, lag.Held, fmt.Sprintf("no replica over %v behind (worst %v)", h.Bounds.Behind, ff.WorstLag.Round(time.Millisecond)))
			mark(&ff, gap.Held, fmt.Sprintf("writes acknowledged throughout (%d; longest gap %v)", ff.Acked, ff.WorstGap.Round(time.Millisecond)))
		}
		one := *h
		one.Looks = nil
		for _, l := range h.Looks {
			if !l.At.Before(f.Start) && !l.At.After(to) {
				one.Looks = append(one.Looks, l)
			}
		}
		one.Logs = nil // the looks in the window only
		fol := one.checkFollowing()
		ff.BehindLooks = len(fol.Violations)
		mark(&ff, fol.Held, fmt.Sprintf("connected only while following (%d looks)", len(one.Looks)))
		conv := ff.Converge >= 0 && ff.Converge <= h.Bounds.Converge
		mark(&ff, conv, fmt.Sprintf("converged within %v", h.Bounds.Converge))
		mark(&ff, ff.Failed == 0, "0 failed requests")
		out = append(out, ff)
	}
	return out
}

func mark(ff *FaultFigures, held bool, what string) {
	if held {
		ff.Held = append(ff.Held, what)
	} else {
		ff.Broke = append(ff.Broke, what)
	}
}

// worstOf reads the duration after "worst " or "longest gap during a
// member fault " in a summary.
func worstOf(summary string) time.Duration {
	for _, marker := range []string{"worst ", "member fault "} {
		if i := strings.Index(summary, marker); i >= 0 {
			f := strings.Fields(summary[i+len(marker):])
			if len(f) > 0 {
				if d, err := time.ParseDuration(strings.TrimRight(f[0], ",;")); err == nil {
					return d
				}
			}
		}
	}
	return 0
}

// Report renders passes as markdown: per pass, each fault with the checks
// that held, the failed requests and the convergence time, then every
// check with its figures, then the violations with the history that shows
// them.
func Report(passes []*Pass, form string, settle time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Chaos: the fleet under etcd faults, checked from recorded histories\n\n")
	held := 0
	for _, p := range passes {
		if p.Held() {
			held++
		}
	}
	fmt.Fprintf(&b, "%s: %d pass(es), %d held every check. Each pass: a 3-member etcd cluster (tools/etcd), three splitter "+
		"replicas in fleet mode each given every member (through its own proxies), an Envoy in front of each, two writers "+
		"changing api's canary on two replicas, traffic through every Envoy, and the faults below in turn.\n\n", form, len(passes), held)
	for _, p := range passes {
		h := p.History
		acked, notApplied, unknown, refused := 0, 0, 0, 0
		for _, w := range h.Writes {
			switch {
			case w.Acked():
				acked++
				if !w.Applied {
					notApplied++
				}
			case w.Status == 0 || strings.Contains(w.Error, "outcome unknown"):
				unknown++
			default:
				refused++
			}
		}
		verdict := "every check held"
		if !p.Held() {
			verdict = "CHECKS FAILED"
		}
		fmt.Fprintf(&b, "## Seed %d: %s\n\n", p.Seed, verdict)
		fmt.Fprintf(&b, "%v, history of %v: %d admin writes (%d acknowledged, %d of them 202 not yet applied by the writer; %d outcome unknown; %d refused), "+
			"%d linearizable reads, %d etcd changes, %d log entries, %d looks, %d requests through Envoy (%d failed; %d answered by the failing canary's injected fault).\n\n",
			p.Took.Round(time.Second), h.End.Sub(h.Start).Round(time.Second), len(h.Writes), acked, notApplied, unknown, refused,
			len(h.Reads), len(h.Etcd), logEntries(h), len(h.Looks), h.Traffic.Total, len(h.Traffic.Failed), h.Traffic.Injected)
		b.WriteString("| fault | at | healed after | checks that held | failed requests | convergence (slowest replica) |\n|---|---|---|---|---:|---|\n")
		for _, ff := range p.Figures(settle) {
			f := ff.Fault
			checks := strings.Join(ff.Held, "; ")
			if len(ff.Broke) > 0 {
				checks += "; **broke: " + strings.Join(ff.Broke, "; ") + "**"
			}
			conv := "never"
			if ff.Converge >= 0 {
				conv = fmt.Sprintf("%v (%s)", ff.Converge.Round(time.Millisecond), ff.Slowest)
			}
			name := f.Name
			if len(f.Notes) > 0 {
				name += " (" + strings.Join(f.Notes, "; ") + ")"
			}
			fmt.Fprintf(&b, "| %s | +%v | %v | %s | %d | %s |\n", name, f.Start.Sub(h.Start).Round(100*time.Millisecond),
				f.Heal.Sub(f.Start).Round(100*time.Millisecond), checks, ff.Failed, conv)
		}
		if len(h.Rollout) > 0 {
			b.WriteString("\nRollout fault:\n\n- " + strings.Join(h.Rollout, "\n- ") + "\n")
		}
		b.WriteString("\n| check | held | figures |\n|---|---|---|\n")
		for _, r := range p.Results {
			mark := "yes"
			if !r.Held {
				mark = "**no**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", r.Name, mark, r.Summary)
		}
		for _, r := range p.Results {
			for _, v := range r.Violations {
				fmt.Fprintf(&b, "\n**%s**: %s\n\n```\n%s\n```\n", r.Name, v.What, strings.Join(v.Excerpt, "\n"))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func logEntries(h *History) int {
	n := 0
	for _, l := range h.Logs {
		n += len(l)
	}
	return n
}

// Failures lists the failed checks of a pass, with their violations, for
// a test's error message.
func (p *Pass) Failures() string {
	var b strings.Builder
	for _, r := range p.Results {
		if r.Held {
			continue
		}
		fmt.Fprintf(&b, "%s: %s\n", r.Name, r.Summary)
		for _, v := range r.Violations {
			fmt.Fprintf(&b, "  %s\n", v.What)
			for _, e := range v.Excerpt {
				fmt.Fprintf(&b, "      %s\n", e)
			}
		}
	}
	return b.String()
}
