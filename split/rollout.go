package split

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Rollout is a guarded progressive rollout of a service's canary
// (docs/rollouts.md). The engine only parses and validates it; running it
// is internal/rollout's job.
type Rollout struct {
	// Canary is the version that is rolled out; default: the service's one
	// non-stable version.
	Canary string `json:"canary"`
	// Steps are the canary's shares in basis points, strictly increasing,
	// the last one 10000 (100 %).
	Steps Percents `json:"steps"`
	// Hold is how long each step is held while healthy before the next.
	Hold  Duration `json:"hold"`
	Guard Guard    `json:"guard"`
	// OnFailure is what a failing verdict does: "rollback" (canary to 0).
	OnFailure string `json:"on_failure"`
	// Shadow, when set, is a dark step before the first: the canary
	// serves no user, Shadow.Percent of the requests are mirrored to it,
	// and the guard judges it on them for Shadow.Hold.
	Shadow *Shadow `json:"shadow,omitempty"`
	// Webhooks are called around the steps and after every transition
	// (webhooks.go; docs/rollouts.md, "Webhooks").
	Webhooks []Webhook `json:"webhooks,omitempty"`
}

// Shadow is a rollout's dark step.
type Shadow struct {
	Percent Percent  `json:"percent"` // of the service's requests, mirrored to the canary
	Hold    Duration `json:"hold"`
}

// DefaultShadow returns the shadow step `shadow: {}` means: 10 % mirrored
// for 60s.
func DefaultShadow() Shadow {
	return Shadow{Percent: 1000, Hold: Duration(60 * time.Second)}
}

// Guard is the rule that judges the canary over a sliding window.
type Guard struct {
	Window Duration `json:"window"`
	// MinRequests is the fewest canary requests in the window for a
	// conclusive verdict.
	MinRequests int `json:"min_requests"`
	// MaxErrorRate is the canary's error rate, in basis points of its
	// requests, above which it may fail.
	MaxErrorRate Percent `json:"max_error_rate"`
	// MaxErrorRatio, in hundredths, is how many times stable's error rate
	// the canary's must also exceed to fail.
	MaxErrorRatio Hundredths `json:"max_error_ratio"`
	// MaxLatencyMs: a canary whose LatencyPercentile is above this many
	// milliseconds may fail; 0: no absolute latency bound.
	MaxLatencyMs int `json:"max_latency_ms,omitempty"`
	// MaxLatencyRatio, in hundredths: a canary whose percentile is above
	// this many times stable's may fail; 0: no relative latency bound.
	// With both bounds set, both must be exceeded (as for errors); with
	// neither, latency is not judged.
	MaxLatencyRatio Hundredths `json:"max_latency_ratio,omitempty"`
	// LatencyPercentile, in hundredths of a percent (9900: p99), 50 to
	// 99.9.
	LatencyPercentile Hundredths `json:"latency_percentile"`
	// FailingFor is how long every verdict must have been failing before
	// a rollback; 0: the first failing verdict rolls back.
	FailingFor Duration `json:"failing_for"`
}

// JudgesLatency reports whether the guard judges the canary's latency.
func (g Guard) JudgesLatency() bool { return g.MaxLatencyMs > 0 || g.MaxLatencyRatio > 0 }

// OnFailureRollback is the one failure action: the canary goes to 0.
const OnFailureRollback = "rollback"

// Bounds of the rollout fields; a value outside is refused with an error
// naming the place.
const (
	MaxSteps       = 100
	MaxHold        = 30 * 24 * time.Hour
	MinWindow      = time.Second
	MaxWindow      = time.Hour
	MaxMinRequests = 1_000_000_000
	MaxErrorRatio  = 100000 // hundredths: 1000 times
	// MaxLatencyMs is the largest max_latency_ms: the latency histogram's
	// last bound (internal/signals), 100 s.
	MaxLatencyMs = 100_000
	// MinLatencyRatio and MaxLatencyRatio bound max_latency_ratio, in
	// hundredths (1 to 1000 times stable's).
	MinLatencyRatio = 100
	MaxLatencyRatio = 100000
	// MinLatencyPercentile and MaxLatencyPercentile bound
	// latency_percentile, in hundredths of a percent (50 to 99.9).
	MinLatencyPercentile = 5000
	MaxLatencyPercentile = 9990
	// MaxFailingFor bounds failing_for.
	MaxFailingFor = time.Hour
)

// DefaultRollout returns the rollout a `rollout: {}` block means: the
// values of the product contract's example.
func DefaultRollout() Rollout {
	return Rollout{
		Steps:     Percents{500, 2500, 5000, Buckets},
		Hold:      Duration(60 * time.Second),
		OnFailure: OnFailureRollback,
		Guard: Guard{
			Window:        Duration(10 * time.Second),
			MinRequests:   100,
			MaxErrorRate:  100, // 1 %
			MaxErrorRatio: 200, // 2 times
			// p99, as Flagger's request-duration; judged only with a bound.
			LatencyPercentile: 9900,
		},
	}
}

// Clone returns a copy of r that shares nothing with it.
func (r *Rollout) Clone() *Rollout {
	if r == nil {
		return nil
	}
	out := *r
	out.Steps = cloneSlice(r.Steps)
	if r.Shadow != nil {
		sh := *r.Shadow
		out.Shadow = &sh
	}
	out.Webhooks = cloneSlice(r.Webhooks)
	return &out
}

// Cluster returns the Envoy cluster that serves version: its entry in
// Clusters, else the version's own name.
func (s Service) Cluster(version string) string {
	if c, ok := s.Clusters[version]; ok && c != "" {
		return c
	}
	return version
}

// Duration is a time.Duration written as Go duration text ("60s", "1m30s")
// in YAML and JSON.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as its text, "1m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads duration text.
func (d *Duration) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("duration: must be a string such as \"60s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Percent is a share in basis points that marshals as a percentage: 150
// is 1.5.
type Percent int

// MarshalJSON writes p as a percentage number.
func (p Percent) MarshalJSON() ([]byte, error) { return []byte(FormatPercent(int(p))), nil }

// UnmarshalJSON reads a percentage number (at most two decimals).
func (p *Percent) UnmarshalJSON(data []byte) error {
	bp, reason := parseBasisPoints(strings.TrimSpace(string(data)))
	if reason != "" {
		return fmt.Errorf("percentage %s: %s", data, reason)
	}
	*p = Percent(bp)
	return nil
}

// Percents is a list of basis points that marshals as percentages.
type Percents []int

// MarshalJSON writes the list as percentage numbers: [5,25,50,100].
func (ps Percents) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('[')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(FormatPercent(p))
	}
	b.WriteByte(']')
	return []byte(b.String()), nil
}

// Hundredths is a non-negative decimal with at most two decimals, kept
// exactly as an integer count of hundredths: 2.5 is 250.
type Hundredths int

// MarshalJSON writes h as a decimal number.
func (h Hundredths) MarshalJSON() ([]byte, error) { return []byte(FormatPercent(int(h))), nil }

// rollout validates a service's rollout block and fills its canary; path
// is the service's. versions maps declared names to their index.
func (c *checker) rollout(path string, s *Service, versions map[string]int) {
	r := s.Rollout
	if r == nil {
		return
	}
	path += ".rollout"
	switch {
	case r.Canary != "":
		if _, ok := versions[r.Canary]; !ok {
			c.add(path+".canary", "unknown version %q (declared: %s)", r.Canary, versionNames(s.Weights))
		} else if r.Canary == s.Stable {
			c.add(path+".canary", "%q is the stable version; the canary must be another one", r.Canary)
		}
	case len(s.Weights) == 2 && s.Stable != "":
		for _, w := range s.Weights {
			if w.Version != s.Stable {
				r.Canary = w.Version
			}
		}
	case len(s.Weights) < 2:
		c.add(path, "a rollout needs a second version besides stable (the service has %d)", len(s.Weights))
	case len(s.Weights) > 2:
		c.add(path+".canary", "missing: the service has %d versions besides stable, name the one to roll out", len(s.Weights)-1)
	}

	switch {
	case len(r.Steps) == 0:
		c.add(path+".steps", "no steps: at least one is required, and the last must be 100")
	case len(r.Steps) > MaxSteps:
		c.add(path+".steps", "too many steps (%d, at most %d)", len(r.Steps), MaxSteps)
	default:
		for i, bp := range r.Steps {
			sp := index(path+".steps", i)
			switch {
			case bp <= 0 || bp > Buckets:
				c.add(sp, "must be above 0 and at most 100 (got %s)", FormatPercent(bp))
			case i > 0 && bp <= r.Steps[i-1]:
				c.add(sp, "steps must increase: %s follows %s", FormatPercent(bp), FormatPercent(r.Steps[i-1]))
			}
		}
		if last := r.Steps[len(r.Steps)-1]; last != Buckets {
			c.add(index(path+".steps", len(r.Steps)-1), "the last step must be 100 (a rollout ends by promoting the canary), not %s", FormatPercent(last))
		}
	}
	if r.Hold < 0 || r.Hold.D() > MaxHold {
		c.add(path+".hold", "must be between 0s and %s (got %s)", MaxHold, r.Hold.D())
	}
	g := &r.Guard
	gp := path + ".guard"
	if g.Window.D() < MinWindow || g.Window.D() > MaxWindow {
		c.add(gp+".window", "must be between %s and %s (got %s)", MinWindow, MaxWindow, g.Window.D())
	}
	if g.MinRequests < 1 || g.MinRequests > MaxMinRequests {
		c.add(gp+".min_requests", "must be between 1 and %d (got %d): with 0 a silent canary would count as healthy", MaxMinRequests, g.MinRequests)
	}
	if g.MaxErrorRate < 0 || g.MaxErrorRate >= Buckets {
		c.add(gp+".max_error_rate", "must be at least 0 and below 100 (got %s)", FormatPercent(int(g.MaxErrorRate)))
	}
	if g.MaxErrorRatio < 0 || g.MaxErrorRatio > MaxErrorRatio {
		c.add(gp+".max_error_ratio", "must be between 0 and %s (got %s)", FormatPercent(MaxErrorRatio), FormatPercent(int(g.MaxErrorRatio)))
	}
	c.latency(gp, g)
	c.webhooks(path+".webhooks", r.Webhooks)
	if r.OnFailure != OnFailureRollback {
		c.add(path+".on_failure", "must be %q (canary to 0, stable to 100), not %q", OnFailureRollback, r.OnFailure)
	}
	if sh := r.Shadow; sh != nil {
		if sh.Percent <= 0 || sh.Percent > Buckets {
			c.add(path+".shadow.percent", "must be above 0 and at most 100 (got %s): the guard judges the canary on the mirrored requests", FormatPercent(int(sh.Percent)))
		}
		if sh.Hold < 0 || sh.Hold.D() > MaxHold {
			c.add(path+".shadow.hold", "must be between 0s and %s (got %s)", MaxHold, sh.Hold.D())
		}
	}
}

// clusters validates a service's version -> Envoy cluster map.
func (c *checker) clusters(path string, s *Service, versions map[string]int) {
	if len(s.Clusters) == 0 {
		return
	}
	path += ".clusters"
	owner := map[string]string{} // cluster -> version
	for _, w := range s.Weights {
		if _, ok := versions[w.Version]; !ok {
			continue
		}
		cl := s.Cluster(w.Version)
		if first, dup := owner[cl]; dup {
			c.add(join(path, w.Version), "cluster %q also serves version %q: each version needs its own cluster for its signals", cl, first)
			continue
		}
		owner[cl] = w.Version
	}
	for _, v := range sortedNames(s.Clusters) {
		vp := join(path, v)
		if _, ok := versions[v]; !ok {
			c.add(vp, "unknown version %q (declared: %s)", v, versionNames(s.Weights))
			continue
		}
		c.clusterName(vp, s.Clusters[v])
	}
}

// clusterName checks an Envoy cluster name. Unlike the product's own
// names it is only ever used to read Envoy's statistics, and Envoy's
// cluster names are the control plane's: Envoy Gateway's contain '/'
// (httproute/<namespace>/<route>/rule/0, or the <namespace>/<backend> of
// clusterStatName %BACKEND_REFS%), Istio's '|'. So any visible ASCII is
// allowed but ':', which Envoy writes as '_' in statistic names (the
// counters of "a:b" are cluster.a_b.*: the guard would never find them).
func (c *checker) clusterName(path, name string) {
	switch {
	case name == "":
		c.add(path, "cluster name is empty")
	case len(name) > MaxNameLen:
		c.add(path, "cluster name is longer than %d characters", MaxNameLen)
	case strings.ContainsRune(name, ':'):
		c.add(path, "cluster name %q contains ':', which Envoy writes as '_' in its statistics: name the cluster by its statistics name (%q)", name, strings.ReplaceAll(name, ":", "_"))
	default:
		for _, r := range name {
			if r <= ' ' || r >= 0x7f {
				c.add(path, "cluster name %q may only contain visible ASCII characters (no spaces or control characters)", name)
				return
			}
		}
	}
}

func versionNames(w Weights) string {
	names := make([]string, len(w))
	for i, x := range w {
		names[i] = x.Version
	}
	return strings.Join(names, ", ")
}

func sortedNames(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
