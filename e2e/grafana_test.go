package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// dashboardPath is the Grafana dashboard shipped for the Prometheus
// metrics.
const dashboardPath = "examples/grafana/splitter.json"

// promQLWord reports whether w is a PromQL keyword or modifier that looks
// like a name.
func promQLWord(w string) bool {
	switch strings.ToLower(w) {
	case "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
		"group_left", "group_right", "inf", "nan", "atan2":
		return true
	}
	return false
}

var (
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	reMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	reRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	reGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	reName     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// metricNames returns the metric names a PromQL expression (or a Grafana
// variable query such as label_values(metric{...}, label)) reads: label
// matchers, ranges, grouping labels, strings, functions, keywords,
// numbers and Grafana variables are not names.
func metricNames(expr string) []string {
	e := reMatchers.ReplaceAllString(expr, " ")
	e = reString.ReplaceAllString(e, " ")
	e = reRange.ReplaceAllString(e, " ")
	e = reGrouping.ReplaceAllString(e, " ")
	if strings.HasPrefix(strings.TrimSpace(e), "label_values(") {
		// label_values(metric, label): only the metric is a name.
		inner := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(e), "label_values("), ")")
		if i := strings.LastIndex(inner, ","); i >= 0 {
			inner = inner[:i]
		}
		e = inner
	}
	var names []string
	for _, loc := range reName.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsRune("$0123456789.", rune(e[loc[0]-1])) {
			continue // a Grafana variable, or the exponent of a number
		}
		rest := strings.TrimLeft(e[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promQLWord(name) {
			continue // a function or a keyword
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		name, expr string
		want       []string
	}{
		{name: "plain", expr: `splitter_weight_percent`, want: []string{"splitter_weight_percent"}},
		{
			name: "rate with matchers, a Grafana range and grouping",
			expr: `sum by (service, reason) (rate(splitter_decisions_total{job=~"$job", service=~"$service"}[$__rate_interval]))`,
			want: []string{"splitter_decisions_total"},
		},
		{
			name: "histogram quantile",
			expr: `histogram_quantile(0.99, sum by (le) (rate(splitter_etcd_propagation_seconds_bucket{job=~"$job"}[5m])))`,
			want: []string{"splitter_etcd_propagation_seconds_bucket"},
		},
		{
			name: "arithmetic, comparison and two metrics",
			expr: `time() - max by (instance) (splitter_config_last_reload_success_timestamp_seconds) > 1e3 and on() up == 1`,
			want: []string{"splitter_config_last_reload_success_timestamp_seconds", "up"},
		},
		{name: "a misspelt metric is still a name", expr: `sum(splitter_decision_total)`, want: []string{"splitter_decision_total"}},
		{name: "variable query", expr: `label_values(splitter_weight_percent{job=~"$job"}, service)`, want: []string{"splitter_weight_percent"}},
		{name: "matcher values are not names", expr: `splitter_rollout_transitions_total{to="rolled_back"}`, want: []string{"splitter_rollout_transitions_total"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, metricNames(tc.expr)); diff != "" {
				t.Errorf("metricNames(%s) (-want +got):\n%s", tc.expr, diff)
			}
		})
	}
}

// dashboardQueries returns every query of the dashboard: the panels'
// targets (rows' nested panels included) and the variables' queries.
func dashboardQueries(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				walk(c, k)
			}
		case []any:
			for _, c := range x {
				walk(c, key)
			}
		case string:
			if key == "expr" || (key == "query" && strings.Contains(x, "(")) {
				out = append(out, x)
			}
		}
	}
	walk(doc, "")
	return out
}

// exportedFamilies scrapes GET /metrics and returns every family's name
// and type, from its "# TYPE" line.
func exportedFamilies(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// exported reports whether name is a family, or a histogram's or
// summary's series (_bucket, _sum, _count).
func exported(families map[string]string, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ := families[base]; typ == "histogram" || (typ == "summary" && suffix != "_bucket") {
				return true
			}
		}
	}
	return false
}

// grafanaRolloutConfig is fleetConfig with a rollout, so that the rollout
// series exist.
const grafanaRolloutConfig = fleetConfig + `    rollout: {steps: [50, 100], hold: 1h}
`

// TestGrafanaDashboardQueriesExportedMetrics: every query of the Grafana
// dashboard names only metrics that a running splitter exports. The
// splitter runs in fleet mode (etcd) behind a real Envoy, with a rollout
// configured, traffic and an admin change, so that every family it can
// export has a series; its /metrics is its registry gathered.
func TestGrafanaDashboardQueriesExportedMetrics(t *testing.T) {
	fb := newFleet(t, 1, true)
	doc := filepath.Join(t.TempDir(), "rollout.yaml")
	writeFile(t, doc, grafanaRolloutConfig)
	if out, err := fb.cli(t, "config", "push", doc); err != nil {
		t.Fatalf("config push: %v\n%s", err, out)
	}
	s := fb.replicas[0]
	waitFor(t, 10*time.Second, "the rollout configuration applied", func() bool {
		return s.Admin(t.Context(), http.MethodGet, "/v1/services/api/rollout", nil, nil) == nil
	})
	if _, err := fb.clients[0].Count(t.Context(), 50, 2, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCanary(t.Context(), "api", 30); err != nil {
		t.Fatal(err)
	}
	families := exportedFamilies(t, s.AdminURL("/metrics"))

	queries := dashboardQueries(t, filepath.Join(found.root, dashboardPath))
	if len(queries) < 20 {
		t.Fatalf("%s has %d queries; the walk found too few (want every panel's)", dashboardPath, len(queries))
	}
	checked := map[string]bool{}
	for _, q := range queries {
		names := metricNames(q)
		if len(names) == 0 {
			t.Errorf("query names no metric: %s", q)
		}
		for _, n := range names {
			checked[n] = true
			if !exported(families, n) {
				t.Errorf("%s: query %q reads %s, which the splitter does not export", dashboardPath, q, n)
			}
		}
	}
	// The checks above are only as good as the names they found.
	for _, want := range []string{
		"splitter_decisions_total", "splitter_weight_percent", "splitter_rollout_state", "splitter_config_info",
		"splitter_etcd_applied_revision", "splitter_etcd_propagation_seconds_bucket", "splitter_streams_total",
	} {
		if !checked[want] {
			t.Errorf("the dashboard's queries do not read %s", want)
		}
	}
	t.Logf("%d queries, %d metric names, all exported by a running splitter (%d families)", len(queries), len(checked), len(families))
}
