package signals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// statTime is Envoy's per-cluster histogram of upstream request times, in
// whole milliseconds.
const statTime = "upstream_rq_time"

// LatencySource is a Source that can also read each target's latency
// histogram (cumulative, like the counts), in the same reading as its
// counts. EnvoyAdmin reads Envoy's upstream_rq_time; the in-process module
// times the responses it counts.
type LatencySource interface {
	Source
	// ReadLatency fills out[i] and lat[i] for targets[i]. ErrNotTimed
	// (wrapped) says that the counts were read but nothing is timed.
	ReadLatency(ctx context.Context, targets []Target, out []Counts, lat []Histogram) error
}

// ErrNotTimed is what ReadLatency returns, with the counts read, when the
// source cannot time requests after all.
var ErrNotTimed = errors.New("signals: this source does not time requests")

// ReadLatency implements LatencySource with one request for both: Envoy's
// statistics as JSON with the histograms detailed
// (histogram_buckets=detailed: every bin of the histogram since Envoy
// started, with its count), each bin put in the bucket of EnvoyBin.
// Envoy merges its workers' histograms at a stats flush; with
// stats_flush_on_admin every read of the admin interface is one, so each
// reading shows the requests up to the read before it (docs/rollouts.md,
// "Latency").
func (e *EnvoyAdmin) ReadLatency(ctx context.Context, targets []Target, out []Counts, lat []Histogram) error {
	if len(out) < len(targets) || len(lat) < len(targets) {
		return ErrShortOut
	}
	if len(targets) == 0 {
		return nil
	}
	e.checkFlush(ctx)
	q := url.Values{"format": {"json"}, "histogram_buckets": {"detailed"}, "filter": {latencyFilter(targets)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/stats?"+q.Encode(), nil)
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
	stats, hists, err := ParseStatsJSON(io.LimitReader(resp.Body, MaxStatsBytes))
	if err != nil {
		return fmt.Errorf("envoy admin %s/stats: %w", e.base, err)
	}
	if err := fill(stats, targets, out); err != nil {
		return err
	}
	for i, t := range targets {
		// A histogram appears at the cluster's first timed request:
		// absent is empty.
		lat[i] = hists["cluster."+t.Cluster+"."+statTime]
	}
	return nil
}

// latencyFilter is the /stats regex that selects the targets' counters and
// their upstream_rq_time histograms.
func latencyFilter(targets []Target) string {
	seen := map[string]bool{}
	var names []string
	for _, t := range targets {
		if !seen[t.Cluster] {
			seen[t.Cluster] = true
			names = append(names, regexp.QuoteMeta(t.Cluster))
		}
	}
	return `^cluster\.(` + strings.Join(names, "|") + `)\.(` + statCompleted + `|` + stat5xx + `|` + statTime + `)$`
}

// statsJSON is Envoy's /stats?format=json answer: counters and gauges as
// {name, value}, histograms (one element) with their details.
type statsJSON struct {
	Stats []struct {
		Name       string          `json:"name"`
		Value      json.RawMessage `json:"value"`
		Histograms *struct {
			Details []struct {
				Name   string `json:"name"`
				Totals []struct {
					Lower float64 `json:"lower_bound"`
					Width float64 `json:"width"`
					Count uint64  `json:"count"`
				} `json:"totals"`
			} `json:"details"`
		} `json:"histograms"`
	} `json:"stats"`
}

// ParseStatsJSON reads Envoy's /stats?format=json&histogram_buckets=detailed
// answer: the whole-number statistics by name (text readouts are skipped),
// and each histogram's totals (since Envoy started) in Histogram buckets.
// A bin that is not a time is an error naming the histogram.
func ParseStatsJSON(r io.Reader) (map[string]uint64, map[string]Histogram, error) {
	var doc statsJSON
	if err := json.NewDecoder(r).Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("not Envoy's JSON statistics: %w", err)
	}
	stats := map[string]uint64{}
	hists := map[string]Histogram{}
	for _, s := range doc.Stats {
		if s.Histograms != nil {
			for _, d := range s.Histograms.Details {
				var h Histogram
				for _, bin := range d.Totals {
					i, err := EnvoyBin(bin.Lower, bin.Width)
					if err != nil {
						return nil, nil, fmt.Errorf("%s: %w", d.Name, err)
					}
					h[i] += bin.Count
				}
				hists[d.Name] = h
			}
			continue
		}
		var v uint64
		if s.Name == "" || json.Unmarshal(s.Value, &v) != nil {
			continue
		}
		stats[s.Name] = v
	}
	return stats, hists, nil
}
