package rollout

import (
	"fmt"
	"math/big"
	"time"

	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/split"
)

// Result is a verdict on the canary over one window.
type Result string

// The verdicts (docs/rollouts.md, "The verdict").
const (
	// Healthy: enough canary requests, and not failing.
	Healthy Result = "healthy"
	// Failing: at least min_requests canary requests, an error rate above
	// max_error_rate and above max_error_ratio times stable's.
	Failing Result = "failing"
	// Inconclusive: fewer than min_requests canary requests. It never
	// promotes and never rolls back: a quiet service is not a broken one.
	Inconclusive Result = "inconclusive"
)

// Results is the closed set of verdicts, in a fixed order.
func Results() []Result { return []Result{Healthy, Failing, Inconclusive} }

// Verdict is one judgement of the canary with the numbers behind it.
type Verdict struct {
	Result Result    `json:"result"`
	At     time.Time `json:"at"`
	// Covered is how much of the guard's window the counts cover (less
	// than the window after a start or a restart).
	Covered split.Duration `json:"covered"`
	Canary  signals.Counts `json:"canary"`
	Stable  signals.Counts `json:"stable"`
	// Error rates in percent, for people; the rule uses exact integers.
	CanaryErrorRate float64 `json:"canary_error_rate"`
	StableErrorRate float64 `json:"stable_error_rate"`
	Reason          string  `json:"reason"`
	// Latency is the latency half of the verdict, when the guard has a
	// latency bound (Result and Reason then combine both halves).
	Latency *LatencyVerdict `json:"latency,omitempty"`
	// FailingFor is how long the verdicts have been failing without a
	// break, this one included (0 at the first failing one); a rollback
	// waits until it reaches the guard's failing_for.
	FailingFor split.Duration `json:"failing_for,omitempty"`
	// Replicas are those whose counts were summed (etcd mode).
	Replicas []string `json:"replicas,omitempty"`
}

// Judge applies the guard's rule to the canary's and stable's counts over
// the window: failing when the canary has at least MinRequests requests
// and its error rate is above MaxErrorRate and above MaxErrorRatio times
// stable's; inconclusive below MinRequests; healthy otherwise. "Above" is
// strict, and the comparisons are exact (integers, no floating point): a
// canary exactly at the limit is healthy. A stable version without
// requests counts as error-free, so only the absolute limit applies.
func Judge(g split.Guard, canary, stable signals.Counts) (Result, string) {
	cRate := rateText(canary)
	if canary.Requests < uint64(g.MinRequests) {
		return Inconclusive, fmt.Sprintf("%d canary requests in the window, fewer than min_requests %d", canary.Requests, g.MinRequests)
	}
	// errors/requests > rate/10000  <=>  errors*10000 > rate*requests
	aboveRate := mulCmp(canary.Errors, 10000, uint64(g.MaxErrorRate), canary.Requests) > 0
	if !aboveRate {
		return Healthy, fmt.Sprintf("canary error rate %s is not above max_error_rate %s%%", cRate, split.FormatPercent(int(g.MaxErrorRate)))
	}
	// ce/cr > ratio/100 * se/sr  <=>  ce*sr*100 > ratio*se*cr
	left := new(big.Int).Mul(new(big.Int).SetUint64(canary.Errors), new(big.Int).SetUint64(stable.Requests))
	left.Mul(left, big.NewInt(100))
	right := new(big.Int).Mul(new(big.Int).SetUint64(uint64(g.MaxErrorRatio)), new(big.Int).SetUint64(stable.Errors))
	right.Mul(right, new(big.Int).SetUint64(canary.Requests))
	aboveRatio := left.Cmp(right) > 0
	if stable.Requests == 0 {
		aboveRatio = canary.Errors > 0
	}
	ratio := split.FormatPercent(int(g.MaxErrorRatio))
	if !aboveRatio {
		return Healthy, fmt.Sprintf("canary error rate %s is above max_error_rate %s%% but not above %s x stable's %s",
			cRate, split.FormatPercent(int(g.MaxErrorRate)), ratio, rateText(stable))
	}
	return Failing, fmt.Sprintf("canary error rate %s is above max_error_rate %s%% and above %s x stable's %s",
		cRate, split.FormatPercent(int(g.MaxErrorRate)), ratio, rateText(stable))
}

// mulCmp compares a*b with c*d exactly.
func mulCmp(a, b, c, d uint64) int {
	l := new(big.Int).Mul(new(big.Int).SetUint64(a), new(big.Int).SetUint64(b))
	r := new(big.Int).Mul(new(big.Int).SetUint64(c), new(big.Int).SetUint64(d))
	return l.Cmp(r)
}

// errorRate is errors per request in percent (0 without requests).
func errorRate(c signals.Counts) float64 {
	if c.Requests == 0 {
		return 0
	}
	return 100 * float64(c.Errors) / float64(c.Requests)
}

func rateText(c signals.Counts) string {
	return fmt.Sprintf("%.4g%% (%d of %d)", errorRate(c), c.Errors, c.Requests)
}

// newVerdict judges and keeps the numbers; lat is the latency half (nil
// without a latency bound).
func newVerdict(g split.Guard, canary, stable signals.Counts, lat *LatencyVerdict, covered time.Duration, now time.Time) Verdict {
	res, reason := Judge(g, canary, stable)
	res, reason = combine(res, reason, lat)
	return Verdict{
		Result: res, At: now, Covered: split.Duration(covered),
		Canary: canary, Stable: stable,
		CanaryErrorRate: errorRate(canary), StableErrorRate: errorRate(stable),
		Reason: reason, Latency: lat,
	}
}
