package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/settings"
	"github.com/trafficsplit/splitter/internal/testbed"
	"github.com/trafficsplit/splitter/split"
)

// envoyValidate runs `envoy --mode validate` on a bootstrap file.
func envoyValidate(t *testing.T, path string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// --disable-hot-restart: no shared memory, so parallel runs cannot clash.
	cmd := exec.CommandContext(ctx, found.envoyBin, "--mode", "validate", "-c", path,
		"--disable-hot-restart", "--log-level", "warn")
	// Validation loads the module of a module-mode bootstrap (and runs its
	// filter config hook).
	cmd.Env = append(os.Environ(), testbed.ModuleSearchPath+"="+found.moduleDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return errors.New(strings.TrimSpace(string(out)))
	}
	return nil
}

func TestBootstrapsPassEnvoyValidate(t *testing.T) {
	requireModule(t)
	files := map[string]string{} // name -> path
	committed, err := filepath.Glob(filepath.Join(found.root, "envoy", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	committed = append(committed, filepath.Join(found.root, "examples", "kubernetes", "envoy.yaml"))
	dir := t.TempDir()
	for _, p := range committed {
		rel, _ := filepath.Rel(found.root, p)
		// As committed: under --mode validate the module binds nothing, so
		// envoy-module.yaml's admin port may be taken on this machine.
		files[rel] = p
	}
	// The loopback variants the test bed renders at run time.
	be := func(v string, port int) *testbed.Backend {
		return &testbed.Backend{Version: v, Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	}
	for name, backends := range map[string][]*testbed.Backend{
		"loopback ext_proc":       {be("v1", 8081), be("v2", 8082)},
		"loopback ext_authz":      {be("v1", 8081), be("v2", 8082)},
		"loopback weighted 80-20": {be("v1", 8081), be("v2", 8082)},
		"loopback three versions": {be("v1", 8081), be("v2", 8082), be("v3", 8083)},
		"loopback module":         {be("v1", 8081), be("v2", 8082)},
	} {
		mode := envoy.ModeExtProc
		switch {
		case strings.Contains(name, "ext_authz"):
			mode = envoy.ModeExtAuthz
		case strings.Contains(name, "weighted"):
			mode = envoy.ModeWeighted
		case strings.Contains(name, "module"):
			mode = envoy.ModeModule
		}
		p, err := testbed.LoopbackParams(mode, "127.0.0.1:9001", backends...)
		if err != nil {
			t.Fatal(err)
		}
		if mode == envoy.ModeModule {
			p.Module.Config = `{"admin_addr": "127.0.0.1:0"}`
		}
		out, err := envoy.Render(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		files[name] = path
	}
	if len(files) < 9 {
		t.Fatalf("only %d bootstraps found: %v", len(files), files)
	}
	for name, path := range files {
		t.Run(name, func(t *testing.T) {
			if err := envoyValidate(t, path); err != nil {
				t.Fatalf("envoy --mode validate %s:\n%v", path, err)
			}
		})
	}
	t.Run("module: an unknown filter_config key is rejected, named", func(t *testing.T) {
		good, err := os.ReadFile(files["loopback module"])
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Replace(good, []byte(`{\"admin_addr\": \"127.0.0.1:0\"}`), []byte(`{\"admin_adr\": \"127.0.0.1:0\"}`), 1)
		if bytes.Equal(bad, good) {
			t.Fatal("the loopback module bootstrap has no admin_addr to misspell")
		}
		path := filepath.Join(dir, "bad-module.yaml")
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := envoyValidate(t, path); err == nil || !strings.Contains(err.Error(), "admin_adr: unknown key") {
			t.Fatalf("envoy --mode validate with a misspelt filter_config key: %v", err)
		}
	})
	t.Run("negative control: an unknown field is rejected", func(t *testing.T) {
		good, err := os.ReadFile(files["envoy/envoy.yaml"])
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Replace(good, []byte("route_cache_action:"), []byte("route_cache_actions:"), 1)
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := envoyValidate(t, path); err == nil || !strings.Contains(err.Error(), "route_cache_actions") {
			t.Fatalf("envoy --mode validate accepted a misspelt field (err %v)", err)
		}
	})
}

func TestComposeFile(t *testing.T) {
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(found.root, "docker-compose.yaml")},
		cli.WithWorkingDirectory(found.root),
		// Only the file itself: no .env or shell variables may change the result.
		cli.WithEnv(nil),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("compose-go rejects docker-compose.yaml: %v", err)
	}
	want := []string{"backend-v1", "backend-v2", "envoy", "splitter"}
	if got := slices.Sorted(func(yield func(string) bool) {
		for name := range project.Services {
			if !yield(name) {
				return
			}
		}
	}); !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}

	t.Run("every published port is on the host's loopback", func(t *testing.T) {
		for name, svc := range project.Services {
			for _, p := range svc.Ports {
				if p.Published != "" && p.HostIP != "127.0.0.1" {
					t.Errorf("%s publishes %s:%s->%d", name, p.HostIP, p.Published, p.Target)
				}
			}
		}
		for name, port := range map[string]uint32{"envoy": 10000, "splitter": 9002} {
			if !slices.ContainsFunc(project.Services[name].Ports, func(p types.ServicePortConfig) bool { return p.Target == port }) {
				t.Errorf("%s does not publish %d", name, port)
			}
		}
	})

	t.Run("envoy is pinned and mounts the generated bootstrap", func(t *testing.T) {
		e := project.Services["envoy"]
		if e.Image != "envoyproxy/envoy:v1.40.0" {
			t.Errorf("envoy image %q, want envoyproxy/envoy:v1.40.0", e.Image)
		}
		if !hasMount(e.Volumes, filepath.Join(found.root, "envoy", "envoy.yaml"), "/etc/envoy/envoy.yaml") {
			t.Errorf("envoy volumes %+v lack envoy/envoy.yaml", e.Volumes)
		}
	})

	t.Run("splitter mounts the config DIRECTORY read-only", func(t *testing.T) {
		s := project.Services["splitter"]
		dir := filepath.Join(found.root, "examples", "config")
		if !hasMount(s.Volumes, dir, "/etc/splitter") {
			t.Fatalf("splitter volumes %+v: want %s mounted at /etc/splitter", s.Volumes, dir)
		}
		for _, v := range s.Volumes {
			if v.Target == "/etc/splitter" && !v.ReadOnly {
				t.Error("config directory is mounted read-write")
			}
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		if env["SPLITTER_CONFIG"] != "/etc/splitter/config.yaml" || env["SPLITTER_GRPC_ADDR"] != "0.0.0.0:9001" ||
			env["SPLITTER_ENVOY_ADMIN"] != "envoy:9902" {
			t.Errorf("splitter environment %v", env)
		}
		if env["SPLITTER_ADMIN_ADDR"] != "" && !strings.HasPrefix(env["SPLITTER_ADMIN_ADDR"], "127.0.0.1:") && env["SPLITTER_ADMIN_TOKEN_FILE"] == "" {
			t.Error("admin listens beyond loopback without a token")
		}
		if s.Build == nil || s.Build.Target != "splitter" {
			t.Errorf("splitter build %+v, want the Dockerfile's splitter target", s.Build)
		}
		if _, err := os.Stat(filepath.Join(dir, "config.yaml")); err != nil {
			t.Errorf("the demo's live file: %v", err)
		}
	})

	t.Run("backends share one image target with different versions", func(t *testing.T) {
		for _, v := range []string{"v1", "v2"} {
			b := project.Services["backend-"+v]
			if b.Build == nil || b.Build.Target != "backend" || !slices.Contains(b.Command, v) {
				t.Errorf("backend-%s: build %+v command %v", v, b.Build, b.Command)
			}
		}
	})
}

func hasMount(vols []types.ServiceVolumeConfig, source, target string) bool {
	return slices.ContainsFunc(vols, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeBind && v.Source == source && v.Target == target
	})
}

// TestExampleConfigsCompile runs the splitter's own loader and compiler on
// every example configuration (what `splitter validate` does).
func TestExampleConfigsCompile(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(found.root, "examples", "config", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(found.root, "examples", "kubernetes", "splitter-config.yaml"),
		filepath.Join(found.root, "examples", "envoy-gateway", "config.yaml"))
	files = append(files, configMapConfigs(t, filepath.Join(found.root, "examples", "istio"))...)
	if len(files) < 9 {
		t.Fatalf("only %d example configurations: %v", len(files), files)
	}
	for _, path := range files {
		rel, _ := filepath.Rel(found.root, path)
		if strings.HasPrefix(rel, "..") { // a ConfigMap's, written out
			rel = "examples/istio/" + filepath.Base(path)
		}
		t.Run(rel, func(t *testing.T) {
			l, err := config.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := split.Compile(l.Config); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// configMapConfigs writes the splitter configurations that the ConfigMaps
// of the recipes in dir carry (their config.yaml keys) to files, and
// returns their paths.
func configMapConfigs(t *testing.T, dir string) []string {
	t.Helper()
	recipes, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, path := range recipes {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc struct {
				Kind     string `yaml:"kind"`
				Metadata struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
				Data map[string]string `yaml:"data"`
			}
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if doc.Kind != "ConfigMap" || doc.Data["config.yaml"] == "" {
				continue
			}
			f := filepath.Join(t.TempDir(), filepath.Base(path)+"-"+doc.Metadata.Name+".yaml")
			if err := os.WriteFile(f, []byte(doc.Data["config.yaml"]), 0o644); err != nil {
				t.Fatal(err)
			}
			out = append(out, f)
		}
	}
	if len(out) < 2 {
		t.Fatalf("%s: %d ConfigMaps with a splitter configuration, want splitter.yaml's and gateway-guard.yaml's", dir, len(out))
	}
	return out
}

// TestKubernetesManifests checks what kubectl cannot: the sidecar layout.
func TestKubernetesManifests(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(found.root, "examples", "kubernetes", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		Name           string `yaml:"name"`
		Image          string `yaml:"image"`
		RestartPolicy  string `yaml:"restartPolicy"`
		ReadinessProbe any    `yaml:"readinessProbe"`
		LivenessProbe  any    `yaml:"livenessProbe"`
		StartupProbe   any    `yaml:"startupProbe"`
		Resources      any    `yaml:"resources"`
		Lifecycle      struct {
			PreStop struct {
				Sleep struct {
					Seconds int `yaml:"seconds"`
				} `yaml:"sleep"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
		Security struct {
			ReadOnlyRoot bool `yaml:"readOnlyRootFilesystem"`
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			SubPath   string `yaml:"subPath"`
		} `yaml:"volumeMounts"`
	}
	var dep struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Template struct {
				Spec struct {
					TerminationGrace int         `yaml:"terminationGracePeriodSeconds"`
					InitContainers   []container `yaml:"initContainers"`
					Containers       []container `yaml:"containers"`
					Volumes          []struct {
						Name      string         `yaml:"name"`
						ConfigMap map[string]any `yaml:"configMap"`
						Secret    map[string]any `yaml:"secret"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(false)
	if err := dec.Decode(&dep); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	pod := dep.Spec.Template.Spec
	// Envoy's traffic stops before the splitter's: the splitter is a native
	// sidecar (an init container that keeps running), which the kubelet
	// starts before Envoy and stops only after Envoy has exited; Envoy
	// pauses in preStop while endpoints are withdrawn.
	if dep.Kind != "Deployment" || len(pod.Containers) != 1 || pod.Containers[0].Name != "envoy" ||
		len(pod.InitContainers) != 1 || pod.InitContainers[0].Name != "splitter" || pod.InitContainers[0].RestartPolicy != "Always" {
		t.Fatalf("want a Deployment with envoy as its container and splitter as a native sidecar (init container, restartPolicy Always)")
	}
	if pod.InitContainers[0].StartupProbe == nil {
		t.Error("the splitter sidecar has no startup probe: Envoy could start before it is ready")
	}
	preStop := pod.Containers[0].Lifecycle.PreStop.Sleep.Seconds
	d := settings.Defaults()
	drain := int((d.DrainDelay + d.ShutdownTimeout).Seconds())
	if preStop == 0 || pod.TerminationGrace < preStop+drain {
		t.Errorf("envoy preStop sleep %ds and grace period %ds: want a pause, and a grace period covering it plus the splitter's drain (%ds)",
			preStop, pod.TerminationGrace, drain)
	}
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		if c.ReadinessProbe == nil || c.LivenessProbe == nil || c.Resources == nil || !c.Security.ReadOnlyRoot {
			t.Errorf("container %s lacks probes, resources or a read-only root", c.Name)
		}
		for _, m := range c.VolumeMounts {
			if m.SubPath != "" {
				t.Errorf("container %s mounts %s with subPath: ConfigMap updates would never reach it", c.Name, m.Name)
			}
		}
		if c.Name == "envoy" && c.Image != "envoyproxy/envoy:v1.40.0" {
			t.Errorf("envoy image %q not pinned to v1.40.0", c.Image)
		}
	}
	var configMap, secret bool
	for _, v := range pod.Volumes {
		configMap = configMap || v.ConfigMap["name"] == "splitter-config"
		secret = secret || v.Secret["secretName"] == "splitter-admin-token"
	}
	if !configMap || !secret {
		t.Errorf("volumes: splitter-config ConfigMap %v, admin token Secret %v", configMap, secret)
	}
}

// The fleet profile adds a pinned etcd (3.7.3, the client's release) that
// publishes nothing, and the splitter's fleet switch defaults to off.
func TestComposeFleetProfile(t *testing.T) {
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(found.root, "docker-compose.yaml")},
		cli.WithWorkingDirectory(found.root),
		cli.WithEnv(nil),
		cli.WithProfiles([]string{"fleet"}),
		cli.WithConsistency(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("compose-go rejects docker-compose.yaml with --profile fleet: %v", err)
	}
	e, ok := project.Services["etcd"]
	if !ok {
		t.Fatal("no etcd service in the fleet profile")
	}
	if e.Image != "gcr.io/etcd-development/etcd:v3.7.3" || len(e.Ports) != 0 {
		t.Errorf("etcd: image %q ports %v", e.Image, e.Ports)
	}
	env := project.Services["splitter"].Environment["SPLITTER_ETCD_ENDPOINTS"]
	if env == nil || *env != "" {
		t.Errorf("SPLITTER_ETCD_ENDPOINTS = %v, want empty unless the operator sets it", env)
	}
}

// The Kubernetes fleet overlay sets only settings that exist, on the
// splitter sidecar of the base Deployment, and mounts what they name.
func TestKubernetesFleetOverlay(t *testing.T) {
	dir := filepath.Join(found.root, "examples", "kubernetes", "fleet")
	kust, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(kust), "- ../") || !strings.Contains(string(kust), "splitter-etcd.yaml") {
		t.Fatalf("the overlay does not patch the base:\n%s", kust)
	}
	data, err := os.ReadFile(filepath.Join(dir, "splitter-etcd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var patch struct {
		Metadata struct{ Name string } `yaml:"metadata"`
		Spec     struct {
			Template struct {
				Spec struct {
					InitContainers []struct {
						Name string `yaml:"name"`
						Env  []struct {
							Name  string `yaml:"name"`
							Value string `yaml:"value"`
						} `yaml:"env"`
						VolumeMounts []struct {
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"initContainers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(data, &patch); err != nil {
		t.Fatal(err)
	}
	ics := patch.Spec.Template.Spec.InitContainers
	if patch.Metadata.Name != "api-edge" || len(ics) != 1 || ics[0].Name != "splitter" {
		t.Fatalf("patch targets %q %+v", patch.Metadata.Name, ics)
	}
	known := map[string]bool{}
	for _, k := range settings.Keys() {
		known[settings.EnvName(k)] = true
	}
	set := map[string]string{}
	for _, e := range ics[0].Env {
		if !known[e.Name] {
			t.Errorf("%s is not a setting", e.Name)
		}
		set[e.Name] = e.Value
	}
	for _, k := range []string{"SPLITTER_ETCD_ENDPOINTS", "SPLITTER_NODE_ID", "SPLITTER_ETCD_CACHE_FILE", "SPLITTER_ETCD_CA_FILE"} {
		if _, ok := set[k]; !ok {
			t.Errorf("the overlay does not set %s", k)
		}
	}
	for _, file := range []string{set["SPLITTER_ETCD_CACHE_FILE"], set["SPLITTER_ETCD_CA_FILE"], set["SPLITTER_ETCD_PASSWORD_FILE"]} {
		if !slices.ContainsFunc(ics[0].VolumeMounts, func(m struct {
			MountPath string `yaml:"mountPath"`
		}) bool {
			return strings.HasPrefix(file, m.MountPath+"/")
		}) {
			t.Errorf("%s is on no mounted volume", file)
		}
	}
}
