package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/argoproj/argo-rollouts/utils/plugin/types"

	"github.com/trafficsplit/splitter/argo-rollouts/router"
)

// The examples decode with Argo's and Kubernetes' own types, unknown
// fields refused, as they ship; they cannot run here (no cluster), so this
// and the tests that use them (the ConfigMap through Argo's loader, the
// Rollout's steps through the plugin) are their check.
func TestExamplesDecode(t *testing.T) {
	cm, err := exampleConfigMap("")
	if err != nil {
		t.Fatal(err)
	}
	if cm.Name != "argo-rollouts-config" || cm.Namespace != "argo-rollouts" {
		t.Fatalf("ConfigMap %s/%s, want argo-rollouts/argo-rollouts-config", cm.Namespace, cm.Name)
	}
	var plugins []types.PluginItem
	if err := yaml.UnmarshalStrict([]byte(cm.Data["trafficRouterPlugins"]), &plugins); err != nil {
		t.Fatalf("trafficRouterPlugins: %v", err)
	}
	if len(plugins) != 1 || plugins[0].Name != router.Name || plugins[0].Location != exampleLocation {
		t.Fatalf("trafficRouterPlugins: %+v", plugins)
	}

	ro, err := decodeRollout()
	if err != nil {
		t.Fatal(err)
	}
	c := ro.Spec.Strategy.Canary
	if c == nil || c.TrafficRouting == nil || c.StableService != "api-stable" || c.CanaryService != "api-canary" {
		t.Fatalf("the Rollout's canary strategy: %+v", c)
	}
	cfg, err := router.ParseConfig(c.TrafficRouting.Plugins[router.Name])
	if err != nil || cfg.Service != "api" {
		t.Fatalf("the plugin's configuration: %+v %v", cfg, err)
	}
	checkManagedRoutes(t, "rollout.yaml", ro)
	// rollout-mirror.yaml is the same Rollout with a dark launch first.
	mro, err := decodeRolloutFile("rollout-mirror.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mc := mro.Spec.Strategy.Canary
	if mc == nil || mc.TrafficRouting == nil || mc.StableService != c.StableService || mc.CanaryService != c.CanaryService ||
		string(mc.TrafficRouting.Plugins[router.Name]) != string(c.TrafficRouting.Plugins[router.Name]) {
		t.Fatalf("rollout-mirror.yaml's canary strategy differs from rollout.yaml's: %+v", mc)
	}
	checkManagedRoutes(t, "rollout-mirror.yaml", mro)

	docs, err := exampleDocs("rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, d := range docs[1:] {
		var svc corev1.Service
		if err := yaml.UnmarshalStrict([]byte(d), &svc); err != nil {
			t.Fatalf("rollout.yaml: %v", err)
		}
		services = append(services, svc.Kind+" "+svc.Name)
	}
	if strings.Join(services, ",") != "Service api-stable,Service api-canary" {
		t.Fatalf("rollout.yaml's other documents: %v", services)
	}
}

// checkManagedRoutes fails unless every setHeaderRoute and
// setMirrorRoute step of ro names one of its managedRoutes (Argo refuses
// the Rollout otherwise).
func checkManagedRoutes(t *testing.T, file string, ro *v1alpha1.Rollout) {
	t.Helper()
	c := ro.Spec.Strategy.Canary
	var managed []string
	for _, m := range c.TrafficRouting.ManagedRoutes {
		managed = append(managed, m.Name)
	}
	for i, s := range c.Steps {
		if s.SetHeaderRoute != nil && !slices.Contains(managed, s.SetHeaderRoute.Name) {
			t.Errorf("%s: steps[%d].setHeaderRoute %q is not in managedRoutes %v (Argo refuses the Rollout)", file, i, s.SetHeaderRoute.Name, managed)
		}
		if s.SetMirrorRoute != nil && !slices.Contains(managed, s.SetMirrorRoute.Name) {
			t.Errorf("%s: steps[%d].setMirrorRoute %q is not in managedRoutes %v (Argo refuses the Rollout)", file, i, s.SetMirrorRoute.Name, managed)
		}
	}
}

// The plugin's binary is built with the versions Argo Rollouts' go.mod
// pins: no module it compiles that Argo requires is at another version.
func TestPluginModuleHasArgosVersions(t *testing.T) {
	list := func(args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "go", append([]string{"list"}, args...)...)
		cmd.Dir = filepath.Join(found.root, "argo-rollouts")
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("go list %v: %v\n%s", args, err, stderr)
		}
		return out
	}
	var argo struct{ Version, GoMod string }
	if err := json.Unmarshal(list("-m", "-json", "github.com/argoproj/argo-rollouts"), &argo); err != nil {
		t.Fatal(err)
	}
	if argo.Version != "v1.8.5" {
		t.Fatalf("argo-rollouts %s, want v1.8.5", argo.Version)
	}
	f, err := os.Open(argo.GoMod)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pinned := map[string]string{}
	inRequire := false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "require (":
			inRequire = true
			continue
		case line == ")":
			inRequire = false
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, "require "))
		if (inRequire || strings.HasPrefix(line, "require ")) && len(fields) >= 2 {
			pinned[fields[0]] = fields[1]
		}
	}
	if len(pinned) < 50 {
		t.Fatalf("read only %d requirements from %s", len(pinned), argo.GoMod)
	}
	// The modules of the packages the binary compiles (go list -m all
	// would also look up the k8s.io/* v0.0.0 placeholders Argo's go.mod
	// replaces, which the proxy does not serve and the build never needs).
	shared := 0
	for line := range strings.Lines(string(list("-deps", "-f", "{{with .Module}}{{.Path}} {{.Version}}{{end}}", "."))) {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		if want, ok := pinned[fields[0]]; ok {
			shared++
			if fields[1] != want {
				t.Errorf("%s is at %s in the plugin's module; Argo Rollouts v1.8.5 pins %s", fields[0], fields[1], want)
			}
		}
	}
	if shared < 20 {
		t.Fatalf("only %d modules shared with Argo's go.mod: is the plugin still built on Argo's packages?", shared)
	}
}
