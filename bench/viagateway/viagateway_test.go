package viagateway

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trafficsplit/splitter/bench/compare"
	"github.com/trafficsplit/splitter/bench/viaenvoy"
)

// TestResourcesRender: every setup's file renders into YAML documents with
// the resources its Gateway needs, and only the module's EnvoyProxy
// allows the library.
func TestResourcesRender(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		kind  string
		kinds []string
	}{
		{SetupWeighted, []string{"EnvoyProxy", "Gateway", "HTTPRoute"}},
		{SetupExtProc, []string{"EnvoyProxy", "Gateway", "HTTPRoute", "ClientTrafficPolicy", "EnvoyExtensionPolicy"}},
		{SetupModule, []string{"EnvoyProxy", "Gateway", "HTTPRoute", "ClientTrafficPolicy", "EnvoyExtensionPolicy"}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			f := filepath.Join(dir, tc.kind+".yaml")
			err := render(f, setupResources, map[string]any{
				"S": setupSpec{Name: "bench-" + tc.kind, Kind: tc.kind, Port: 10080}, "EnvoyVersion": EnvoyVersion,
				"Library": "/lib/libsplitter.so", "Config": "/etc/split.yaml", "ModuleAdmin": 9002,
			})
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, part := range regexp.MustCompile(`(?m)^---$`).Split(string(data), -1) {
				var d struct {
					APIVersion string         `json:"apiVersion"`
					Kind       string         `json:"kind"`
					Metadata   map[string]any `json:"metadata"`
					Spec       map[string]any `json:"spec"`
				}
				if err := yaml.UnmarshalStrict([]byte(part), &d); err != nil {
					t.Fatalf("%v in:\n%s", err, part)
				}
				kinds = append(kinds, d.Kind)
			}
			if strings.Join(kinds, ",") != strings.Join(tc.kinds, ",") {
				t.Fatalf("kinds %v, want %v", kinds, tc.kinds)
			}
			if got := bytes.Contains(data, []byte("/lib/libsplitter.so")); got != (tc.kind == SetupModule) {
				t.Fatalf("library allowed: %v", got)
			}
			if tc.kind == SetupWeighted && !bytes.Contains(data, []byte("weight: 80")) {
				t.Fatalf("no 80/20 weights:\n%s", data)
			}
		})
	}
}

// TestVersionStats: the requests each backend got are read per host from
// /clusters whatever the cluster's name, and the ext_proc Backend's
// cluster is renamed to the name bench/viaenvoy reads.
func TestVersionStats(t *testing.T) {
	stats := func(context.Context) (map[string]uint64, error) {
		return map[string]uint64{
			"cluster.envoyextensionpolicy/envoy-gateway-system/p/extproc/0.upstream_rq_total": 7,
			"cluster.httproute/envoy-gateway-system/api/rule/0.upstream_rq_total":             99,
			"http.http-10080.ext_proc.streams_started":                                        7,
		}, nil
	}
	clusters := func(context.Context) (string, error) {
		return "httproute/ns/r/rule/0::127.0.0.1:9101::rq_total::80\n" +
			"httproute/ns/r/rule/0::127.0.0.1:9102::rq_total::20\n" +
			"httproute/ns/r/rule/1::127.0.0.1:9102::rq_total::5\n" +
			"httproute/ns/r/rule/1::127.0.0.1:9102::cx_total::3\n", nil
	}
	got, err := versionStats(stats, clusters, map[string]string{"127.0.0.1:9101": "v1", "127.0.0.1:9102": "v2"})(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{
		"cluster.v1.upstream_rq_total":             80,
		"cluster.v2.upstream_rq_total":             25,
		"cluster.splitter.upstream_rq_total":       7,
		"http.http-10080.ext_proc.streams_started": 7,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

// TestCheckAndRender: a setup that was not split, or that failed open,
// makes the result fail its check, and the report says why.
func TestCheckAndRender(t *testing.T) {
	r := &Result{Rounds: 1, ProxyCPU: 0, LoadCPU: 1, Modes: []viaenvoy.Mode{
		{Mode: SetupWeighted, RPS: 100, Versions: map[string]uint64{"v1": 80, "v2": 20}},
		{Mode: SetupExtProc, RPS: 50, Versions: map[string]uint64{"v1": 100}, Stats: map[string]uint64{"ext_proc.failure_mode_allowed": 100}},
	}, EnvoyRatios: map[string]compare.Ratio{SetupExtProc: {Median: 2.2, Min: 2.1, Max: 2.3}}}
	r.Notes = notes(r)
	if err := Check(r); err == nil || !strings.Contains(err.Error(), "ext_proc: upstream v1=100 v2=0") {
		t.Fatalf("Check: %v", err)
	}
	r.Modes[1].Versions["v2"] = 30
	if err := Check(r); err != nil {
		t.Fatalf("Check of a split with warnings: %v", err)
	}
	var b strings.Builder
	Render(&b, r)
	for _, want := range []string{"| ext_proc | 50 |", "2.20 (2.10..2.30)", "Warnings:", "failure_mode_allowed"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, b.String())
		}
	}
}
