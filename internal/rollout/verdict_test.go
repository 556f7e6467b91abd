package rollout_test

import (
	"math"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/split"
)

func counts(requests, errors uint64) signals.Counts {
	return signals.Counts{Requests: requests, Errors: errors}
}

// TestJudgeBoundaries pins the rule at its edges: min_requests (below, at,
// above), max_error_rate (at, above), max_error_ratio (at, above) and a
// stable version without errors or without requests.
func TestJudgeBoundaries(t *testing.T) {
	// min_requests 100, max_error_rate 1 %, max_error_ratio 2.
	g := split.Guard{MinRequests: 100, MaxErrorRate: 100, MaxErrorRatio: 200}
	tests := []struct {
		name           string
		g              split.Guard
		canary, stable signals.Counts
		want           rollout.Result
		reason         string
	}{
		{"below min_requests, every request failed", g, counts(99, 99), counts(1000, 0), rollout.Inconclusive, "99 canary requests in the window, fewer than min_requests 100"},
		{"no canary request at all", g, counts(0, 0), counts(1000, 0), rollout.Inconclusive, "fewer than min_requests"},
		{"at min_requests and failing", g, counts(100, 50), counts(1000, 0), rollout.Failing, "above max_error_rate 1%"},
		{"above min_requests, healthy", g, counts(101, 0), counts(1000, 0), rollout.Healthy, "is not above max_error_rate"},
		{"at max_error_rate exactly (1 of 100)", g, counts(100, 1), counts(1000, 0), rollout.Healthy, "1% (1 of 100) is not above max_error_rate 1%"},
		{"just above max_error_rate (11 of 1000)", g, counts(1000, 11), counts(1000, 0), rollout.Failing, "above max_error_rate 1% and above 2 x stable's 0% (0 of 1000)"},
		{"just below max_error_rate (9 of 1000)", g, counts(1000, 9), counts(1000, 0), rollout.Healthy, "not above max_error_rate"},
		{"above the rate, at 2 x stable exactly", g, counts(1000, 40), counts(1000, 20), rollout.Healthy, "not above 2 x stable's 2% (20 of 1000)"},
		{"above the rate, just above 2 x stable", g, counts(1000, 41), counts(1000, 20), rollout.Failing, "above 2 x stable's 2%"},
		{"above the rate, below 2 x stable", g, counts(1000, 30), counts(1000, 20), rollout.Healthy, "not above 2 x stable's"},
		{"ratio with different volumes: 3% vs 1.5% is 2 x exactly", g, counts(200, 6), counts(2000, 30), rollout.Healthy, "not above 2 x stable's"},
		{"stable error rate 0: any canary error rate above the limit fails", g, counts(100, 2), counts(5000, 0), rollout.Failing, "above 2 x stable's 0%"},
		{"stable without requests counts as error-free", g, counts(100, 2), counts(0, 0), rollout.Failing, "above 2 x stable's 0% (0 of 0)"},
		{"stable without requests, canary at the limit", g, counts(100, 1), counts(0, 0), rollout.Healthy, "not above max_error_rate"},
		{"max_error_rate 0: one error fails when stable has none", split.Guard{MinRequests: 10, MaxErrorRate: 0, MaxErrorRatio: 200},
			counts(10, 1), counts(10, 0), rollout.Failing, "above max_error_rate 0%"},
		{"max_error_rate 0: no error is healthy", split.Guard{MinRequests: 10, MaxErrorRate: 0, MaxErrorRatio: 200},
			counts(10, 0), counts(10, 0), rollout.Healthy, "not above max_error_rate 0%"},
		{"max_error_ratio 0: only the absolute limit", split.Guard{MinRequests: 10, MaxErrorRate: 100, MaxErrorRatio: 0},
			counts(100, 2), counts(100, 50), rollout.Failing, "above 0 x stable's 50%"},
		{"fractional limits: 0.5 % and 1.5 x", split.Guard{MinRequests: 1, MaxErrorRate: 50, MaxErrorRatio: 150},
			counts(1000, 7), counts(1000, 4), rollout.Failing, "0.7% (7 of 1000) is above max_error_rate 0.5% and above 1.5 x stable's 0.4%"},
		{"fractional ratio at its edge: 0.6 % is 1.5 x 0.4 %", split.Guard{MinRequests: 1, MaxErrorRate: 50, MaxErrorRatio: 150},
			counts(1000, 6), counts(2000, 8), rollout.Healthy, "not above 1.5 x stable's"},
		{"huge counts stay exact", g, counts(math.MaxUint64/2, math.MaxUint64/100+1), counts(math.MaxUint64/2, 0), rollout.Failing, "above max_error_rate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := rollout.Judge(tc.g, tc.canary, tc.stable)
			if got != tc.want || !strings.Contains(reason, tc.reason) {
				t.Errorf("Judge(canary %v, stable %v) = %s (%s), want %s (containing %q)", tc.canary, tc.stable, got, reason, tc.want, tc.reason)
			}
		})
	}
}
