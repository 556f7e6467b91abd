package signals

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Envoy's per-cluster counters a reading is made of. upstream_rq_completed
// counts every request the cluster answered, including the 503 or 504
// Envoy answers itself when the upstream resets the stream, refuses the
// connection or times out; upstream_rq_5xx counts those and the upstream's
// own 5xx. So resets and timeouts before a response are errors here; a
// reset after the response began is not (Envoy has no per-cluster counter
// that tells it apart).
const (
	statCompleted = "upstream_rq_completed"
	stat5xx       = "upstream_rq_5xx"
)

// MaxStatsBytes caps what is read from Envoy's /stats answer.
const MaxStatsBytes = 4 << 20

// EnvoyAdmin is a Source that reads Envoy's per-cluster statistics from
// its admin interface (GET /stats, filtered to the clusters asked for).
type EnvoyAdmin struct {
	base   string
	client *http.Client
	// Logger, when set, is told once that Envoy does not flush its
	// statistics at admin reads (envoy_flush.go).
	Logger *slog.Logger
	flush  flushState
}

// NewEnvoyAdmin reads from the admin interface at addr (host:port), each
// request bounded by timeout.
func NewEnvoyAdmin(addr string, timeout time.Duration) *EnvoyAdmin {
	return &EnvoyAdmin{
		base:   "http://" + addr,
		client: &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}},
	}
}

// Addr is the admin interface's address.
func (e *EnvoyAdmin) Addr() string { return strings.TrimPrefix(e.base, "http://") }

// Read implements Source. A cluster Envoy does not have is an error naming
// it (a wrong clusters entry would otherwise read as a silent canary).
func (e *EnvoyAdmin) Read(ctx context.Context, targets []Target, out []Counts) error {
	if len(out) < len(targets) {
		return ErrShortOut
	}
	if len(targets) == 0 {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/stats?filter="+url.QueryEscape(statsFilter(targets)), nil)
	if err != nil {
		return fmt.Errorf("envoy admin: %w", err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("envoy admin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("envoy admin %s/stats: %s: %s", e.base, resp.Status, strings.TrimSpace(string(body)))
	}
	stats, err := ParseStats(io.LimitReader(resp.Body, MaxStatsBytes))
	if err != nil {
		return fmt.Errorf("envoy admin %s/stats: %w", e.base, err)
	}
	return fill(stats, targets, out)
}

// statsFilter is the /stats regex that selects exactly the counters of
// the targets' clusters.
func statsFilter(targets []Target) string {
	seen := map[string]bool{}
	var names []string
	for _, t := range targets {
		if !seen[t.Cluster] {
			seen[t.Cluster] = true
			names = append(names, regexp.QuoteMeta(t.Cluster))
		}
	}
	return `^cluster\.(` + strings.Join(names, "|") + `)\.(` + statCompleted + `|` + stat5xx + `)$`
}

// fill reads each target's counters out of stats.
func fill(stats map[string]uint64, targets []Target, out []Counts) error {
	for i, t := range targets {
		prefix := "cluster." + t.Cluster + "."
		completed, ok := stats[prefix+statCompleted]
		if !ok {
			return fmt.Errorf("envoy has no cluster %q (version %s of %s; set the service's clusters)", t.Cluster, t.Version, t.Service)
		}
		// upstream_rq_5xx appears at the cluster's first 5xx: absent is 0.
		out[i] = Counts{Requests: completed, Errors: stats[prefix+stat5xx]}
	}
	return nil
}

// ParseStats reads Envoy's plain-text /stats answer ("name: value" lines).
// Lines whose value is not a whole number (histograms, text readouts) are
// skipped; a line without ": " is an error naming its number.
func ParseStats(r io.Reader) (map[string]uint64, error) {
	out := map[string]uint64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		i := strings.LastIndex(text, ": ")
		if i <= 0 {
			return nil, fmt.Errorf("line %d: not \"name: value\": %.80q", line, text)
		}
		v, err := strconv.ParseUint(strings.TrimSpace(text[i+2:]), 10, 64)
		if err != nil {
			continue
		}
		out[text[:i]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
