package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/split"
)

// LatencyEvidence is Evidence that also sums each version's latency
// histogram over the window (Local from a signals.LatencySource; the
// fleet's sum of every replica's). ok is false when there is none for the
// service (its source does not time requests).
type LatencyEvidence interface {
	LatencyTotals(service string, now time.Time) (stable, canary signals.Histogram, ok bool)
}

// LatencyFigure is one version's latency percentile over the window.
type LatencyFigure struct {
	// Ms is the upper bound of the histogram bucket the percentile's
	// request falls in (signals.Histogram.Percentile): at least the
	// percentile's share of the requests took less than it. Past the
	// last bound it is that bound (100000) and Over is set.
	Ms   float64 `json:"ms"`
	Over bool    `json:"over,omitempty"`
	// Requests is how many of the version's requests were timed in the
	// window.
	Requests uint64 `json:"requests"`
}

// LatencyVerdict is the latency half of a verdict, with its numbers.
type LatencyVerdict struct {
	Result Result `json:"result"`
	// Percentile is latency_percentile (99 is p99).
	Percentile split.Hundredths `json:"percentile"`
	Canary     LatencyFigure    `json:"canary"`
	Stable     LatencyFigure    `json:"stable"`
	Reason     string           `json:"reason"`
}

func figure(q signals.Quantile) LatencyFigure {
	f := LatencyFigure{Requests: q.Requests}
	if q.Requests == 0 {
		return f
	}
	d, ok := q.Upper()
	if !ok {
		last, _ := signals.LatencyBound(signals.LatencyBuckets - 2)
		d, f.Over = last, true
	}
	f.Ms = float64(d) / float64(time.Millisecond)
	return f
}

// JudgeLatency applies the guard's latency rule (docs/rollouts.md, "The
// verdict"): with N canary requests timed in the window, below
// min_requests it is inconclusive; otherwise the canary's percentile
// (the upper bound of its bucket) fails when it is above max_latency_ms
// (if set) and above max_latency_ratio times stable's (if set). "Above" is
// strict and exact: whole microseconds, the ratio in hundredths compared
// as integer products. Without stable requests to compare with, only the
// absolute bound applies; with only the ratio set, that is inconclusive.
func JudgeLatency(g split.Guard, canary, stable signals.Histogram) LatencyVerdict {
	p := int(g.LatencyPercentile)
	cq, sq := canary.Percentile(p), stable.Percentile(p)
	v := LatencyVerdict{Percentile: g.LatencyPercentile, Canary: figure(cq), Stable: figure(sq)}
	name := "p" + split.FormatPercent(p)
	head := fmt.Sprintf("canary %s %s over %d requests", name, cq, cq.Requests)
	if cq.Requests < uint64(g.MinRequests) {
		v.Result = Inconclusive
		v.Reason = fmt.Sprintf("%d canary requests timed in the window, fewer than min_requests %d", cq.Requests, g.MinRequests)
		return v
	}
	cUs, cBounded := bound(cq)
	var parts []string
	above := true
	if g.MaxLatencyMs > 0 {
		abs := !cBounded || cUs > uint64(g.MaxLatencyMs)*1000
		above = above && abs
		parts = append(parts, aboveText(abs, fmt.Sprintf("max_latency_ms %d", g.MaxLatencyMs)))
	}
	if g.MaxLatencyRatio > 0 {
		ratio := split.FormatPercent(int(g.MaxLatencyRatio))
		switch {
		case sq.Requests == 0 && g.MaxLatencyMs > 0:
			parts = append(parts, "no stable request timed to compare with (only max_latency_ms applies)")
		case sq.Requests == 0:
			v.Result = Inconclusive
			v.Reason = head + ": no stable request timed in the window to compare with " + ratio + " x"
			return v
		default:
			sUs, sBounded := bound(sq)
			var rel bool
			switch {
			case !cBounded:
				rel = sBounded
			case !sBounded:
				rel = false
			default:
				// c > ratio/100 * s  <=>  c*100 > ratio*s
				l := new(big.Int).Mul(new(big.Int).SetUint64(cUs), big.NewInt(100))
				r := new(big.Int).Mul(new(big.Int).SetUint64(uint64(g.MaxLatencyRatio)), new(big.Int).SetUint64(sUs))
				rel = l.Cmp(r) > 0
			}
			above = above && rel
			parts = append(parts, aboveText(rel, fmt.Sprintf("%s x stable's %s", ratio, sq)))
		}
	}
	v.Result = Healthy
	if above {
		v.Result = Failing
	}
	v.Reason = head + " is " + joinParts(parts, above)
	return v
}

// bound is a quantile's value in whole microseconds, and false past the
// last bound.
func bound(q signals.Quantile) (uint64, bool) {
	d, ok := q.Upper()
	return uint64(d / time.Microsecond), ok
}

func aboveText(above bool, what string) string {
	if above {
		return "above " + what
	}
	return "not above " + what
}

// joinParts words the checks: "above A and above B" when failing, and
// "above A but not above B" or "not above A" otherwise.
func joinParts(parts []string, failing bool) string {
	switch {
	case len(parts) == 1:
		return parts[0]
	case failing:
		return strings.Join(parts, " and ")
	case strings.HasPrefix(parts[0], "not "):
		return parts[0]
	}
	return parts[0] + " but " + strings.Join(parts[1:], " and ")
}

// combine merges the error and latency verdicts: failing when either
// fails, else inconclusive when either is, else healthy; the reason is
// that of the half that decided (both when they agree).
func combine(errRes Result, errReason string, lat *LatencyVerdict) (Result, string) {
	if lat == nil {
		return errRes, errReason
	}
	for _, r := range []Result{Failing, Inconclusive} {
		switch {
		case errRes == r && lat.Result == r:
			return r, errReason + "; " + lat.Reason
		case errRes == r:
			return r, errReason
		case lat.Result == r:
			return r, lat.Reason
		}
	}
	return Healthy, errReason + "; " + lat.Reason
}

// errNoLatency: a latency bound is set, but the signal source does not
// time requests.
const noLatency = "latency bounds are set, but the signal source does not time requests"

// latencyOf judges the latency of a watched service, or nil when its
// guard has no latency bound.
func latencyOf(g split.Guard, ev Evidence, service string, now time.Time) *LatencyVerdict {
	if !g.JudgesLatency() {
		return nil
	}
	le, ok := ev.(LatencyEvidence)
	var stable, canary signals.Histogram
	if ok {
		stable, canary, ok = le.LatencyTotals(service, now)
	}
	if !ok {
		return &LatencyVerdict{Result: Inconclusive, Percentile: g.LatencyPercentile, Reason: noLatency}
	}
	v := JudgeLatency(g, canary, stable)
	return &v
}

// readLatency reads counts and latency histograms from src in one reading
// when it can, else counts only (lat stays empty).
func readLatency(ctx context.Context, src signals.Source, targets []signals.Target, out []signals.Counts, lat []signals.Histogram) (timed bool, err error) {
	if ls, ok := src.(signals.LatencySource); ok {
		err := ls.ReadLatency(ctx, targets, out, lat)
		if errors.Is(err, signals.ErrNotTimed) {
			return false, nil
		}
		return true, err
	}
	return false, src.Read(ctx, targets, out)
}

// latencyAttrs are the latency numbers of a verdict for the audit line.
func latencyAttrs(v *Verdict) []slog.Attr {
	var out []slog.Attr
	if v.FailingFor > 0 {
		out = append(out, slog.Duration("failing_for", v.FailingFor.D()))
	}
	l := v.Latency
	if l == nil {
		return out
	}
	return append(out, slog.String("latency_percentile", split.FormatPercent(int(l.Percentile))),
		slog.Float64("canary_latency_ms", l.Canary.Ms), slog.Uint64("canary_timed", l.Canary.Requests),
		slog.Float64("stable_latency_ms", l.Stable.Ms), slog.Uint64("stable_timed", l.Stable.Requests),
		slog.String("latency_result", string(l.Result)))
}
