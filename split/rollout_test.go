package split_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

// TestRolloutParsedExactly reads the rollout fixture: numbers come from
// their text (0.5 % is 50 bp, a ratio of 2.25 is 225 hundredths), keys left
// out keep DefaultRollout's values, and the canary defaults to the one
// non-stable version.
func TestRolloutParsedExactly(t *testing.T) {
	data, err := os.ReadFile("testdata/valid/rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := split.Load(data, processKeys)
	if err != nil {
		t.Fatal(err)
	}
	api, _ := tb.Service("api")
	want := &split.Rollout{
		Canary:    "v2",
		Steps:     split.Percents{50, 500, 2500, 5000, 10000},
		Hold:      split.Duration(90 * time.Second),
		OnFailure: "rollback",
		Guard: split.Guard{
			Window: split.Duration(10 * time.Second), MinRequests: 100,
			MaxErrorRate: 150, MaxErrorRatio: 225, LatencyPercentile: 9900,
		},
	}
	if diff := cmp.Diff(want, api.Rollout); diff != "" {
		t.Errorf("api rollout (-want +got):\n%s", diff)
	}
	if api.Cluster("v2") != "api-v2" || api.Cluster("v1") != "api-v1" {
		t.Errorf("clusters: v1 %q v2 %q", api.Cluster("v1"), api.Cluster("v2"))
	}

	web, _ := tb.Service("web")
	def := split.DefaultRollout()
	def.Canary = "green"
	if diff := cmp.Diff(&def, web.Rollout); diff != "" {
		t.Errorf("web rollout: an empty block must mean the defaults (-want +got):\n%s", diff)
	}
	if web.Cluster("green") != "green" {
		t.Errorf("a version without a clusters entry is served by the cluster of its name, got %q", web.Cluster("green"))
	}

	gw, _ := tb.Service("gw")
	for v, want := range map[string]string{
		"v1": "envoy-gateway-system/api-v1",
		"v2": "httproute/envoy-gateway-system/api/rule/0",
		"v3": "outbound|80|v3|api.default.svc.cluster.local",
	} {
		if got := gw.Cluster(v); got != want {
			t.Errorf("gw: cluster of %s = %q, want %q (Envoy Gateway's and Istio's cluster names are accepted as written)", v, got, want)
		}
	}

	three, _ := tb.Service("three")
	if three.Rollout.Canary != "c" || three.Rollout.Guard.MaxErrorRate != 0 || three.Rollout.Guard.MaxErrorRatio != 0 {
		t.Errorf("three: %+v", three.Rollout)
	}

	// The admin API shows the rollout as written: percentages, duration text.
	b, err := json.Marshal(api.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"canary":"v2","steps":[0.5,5,25,50,100],"hold":"1m30s","guard":{"window":"10s","min_requests":100,"max_error_rate":1.5,"max_error_ratio":2.25,"latency_percentile":99,"failing_for":"0s"},"on_failure":"rollback"}`
	if string(b) != wantJSON {
		t.Errorf("JSON:\n got %s\nwant %s", b, wantJSON)
	}
}

// TestRolloutSurvivesWithWeights: an override recompiles the service; the
// rollout block and clusters stay as they were.
func TestRolloutSurvivesWithWeights(t *testing.T) {
	data, err := os.ReadFile("testdata/valid/rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := split.Load(data, processKeys)
	if err != nil {
		t.Fatal(err)
	}
	w, err := tb.CanaryWeights("api", 2500)
	if err != nil {
		t.Fatal(err)
	}
	next, err := tb.WithWeights("api", w)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := tb.Service("api")
	after, _ := next.Service("api")
	if diff := cmp.Diff(before.Rollout, after.Rollout); diff != "" {
		t.Errorf("rollout changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(before.Clusters, after.Clusters); diff != "" {
		t.Errorf("clusters changed:\n%s", diff)
	}
}

func TestShadowStep(t *testing.T) {
	base := "services:\n  - name: api\n    weights: {v1: 100, v2: 0}\n    rollout:\n"
	for _, c := range []struct {
		name, yaml string
		want       *split.Shadow
		err        string
	}{
		{"every key", base + "      shadow: {percent: 12.5, hold: 30s}\n", &split.Shadow{Percent: 1250, Hold: split.Duration(30 * time.Second)}, ""},
		{"defaults", base + "      shadow: {}\n", &split.Shadow{Percent: 1000, Hold: split.Duration(time.Minute)}, ""},
		{"null", base + "      shadow:\n", &split.Shadow{Percent: 1000, Hold: split.Duration(time.Minute)}, ""},
		{"none", base + "      steps: [50, 100]\n", nil, ""},
		{"zero percent", base + "      shadow: {percent: 0}\n", nil, "services[0].rollout.shadow.percent: must be above 0 and at most 100"},
		{"over 100", base + "      shadow: {percent: 101}\n", nil, "services[0].rollout.shadow.percent: must be between 0 and 100"},
		{"hold without unit", base + "      shadow: {hold: 60}\n", nil, "services[0].rollout.shadow.hold: must be a duration with a unit"},
		{"negative hold", base + "      shadow: {hold: -1s}\n", nil, "services[0].rollout.shadow.hold: must be between 0s"},
		{"unknown key", base + "      shadow: {percentage: 5}\n", nil, "services[0].rollout.shadow.percentage: unknown key (expected one of percent, hold)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tb, err := split.Load([]byte(c.yaml), split.ParseOptions{})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			svc, _ := tb.Service("api")
			if got := svc.Rollout.Shadow; (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
				t.Fatalf("shadow %+v, want %+v", got, c.want)
			}
		})
	}
}
