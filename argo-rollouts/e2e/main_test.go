// Package e2e tests splitter's Argo Rollouts plugin the way Argo's
// controller runs it: the argo-rollouts-config ConfigMap of
// examples/argo-rollouts is read by Argo's own config code (from a fake
// Kubernetes API), its file:// location copied into plugin-bin/ by
// Argo's downloader, and the real binary (bin/splitter-argo-rollouts)
// started and called through Argo's plugin client (go-plugin, net/rpc),
// against real splitter processes: one in file mode, a fleet of three on
// a real etcd, and one behind a real Envoy. It is its own module so that
// Argo's and Kubernetes' packages stay out of splitter's go.mod, and so
// that the plugin's module builds with exactly the versions Argo pins.
//
// Envoy and etcd are found as splitter's e2e tests find them ($ENVOY_BIN,
// $ETCD_BIN, .venv/bin, PATH); without them the tests that need them skip,
// and fail when CI is set. $SPLITTER_BIN and $SPLITTER_ARGO_PLUGIN name
// prebuilt binaries; otherwise both are built here.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/argoproj/argo-rollouts/rollout/trafficrouting/plugin/client"
	"github.com/argoproj/argo-rollouts/rollout/trafficrouting/plugin/rpc"
	argoconfig "github.com/argoproj/argo-rollouts/utils/config"
	"github.com/argoproj/argo-rollouts/utils/defaults"
	argoplugin "github.com/argoproj/argo-rollouts/utils/plugin"
	"github.com/argoproj/argo-rollouts/utils/plugin/types"

	"github.com/trafficsplit/splitter/argo-rollouts/router"
	"github.com/trafficsplit/splitter/internal/testbed"
)

var found struct {
	root        string
	examples    string // examples/argo-rollouts
	envoyBin    string
	envoyErr    error
	etcdBin     string
	etcdErr     error
	splitterBin string
	pluginBin   string
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "argo-rollouts e2e:", err)
		return 1
	}
	root, err := testbed.RepoRoot()
	if err != nil {
		return fail(err)
	}
	found.root, found.examples = root, filepath.Join(root, "examples", "argo-rollouts")
	found.envoyBin, found.envoyErr = testbed.FindEnvoy(root)
	found.etcdBin, found.etcdErr = testbed.FindEtcd(root)
	dir, err := os.MkdirTemp("", "splitter-argo-e2e-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if found.splitterBin = os.Getenv("SPLITTER_BIN"); found.splitterBin == "" {
		if found.splitterBin, err = testbed.BuildSplitter(ctx, root, dir); err != nil {
			return fail(err)
		}
	}
	if found.pluginBin = os.Getenv("SPLITTER_ARGO_PLUGIN"); found.pluginBin == "" {
		// Built in its own module, with the versions Argo pins: what
		// `make argo-plugin` ships.
		found.pluginBin = filepath.Join(dir, "splitter-argo-rollouts")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", found.pluginBin, ".")
		cmd.Dir = filepath.Join(root, "argo-rollouts")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("go build ./argo-rollouts: %w\n%s", err, out))
		}
	}
	// Argo's controller resolves plugin-bin/ against its working
	// directory: give it one of its own.
	controller := filepath.Join(dir, "controller")
	if err := os.MkdirAll(controller, 0o700); err != nil {
		return fail(err)
	}
	if err := os.Chdir(controller); err != nil {
		return fail(err)
	}
	if err := loadPlugins(); err != nil {
		return fail(err)
	}
	code := m.Run()
	goplugin.CleanupClients()
	return code
}

// loadPlugins does what the controller does at start: read the
// argo-rollouts-config ConfigMap (the example, with the binary's path as
// its location) from the Kubernetes API and copy the plugins it names
// into plugin-bin/.
func loadPlugins() error {
	cm, err := exampleConfigMap(found.pluginBin)
	if err != nil {
		return err
	}
	os.Setenv("POD_NAMESPACE", cm.Namespace)
	kube := fake.NewSimpleClientset(cm)
	if _, err := argoconfig.InitializeConfig(kube, defaults.DefaultRolloutsConfigMapName); err != nil {
		return fmt.Errorf("Argo's InitializeConfig: %w", err)
	}
	if err := argoplugin.DownloadPlugins(argoplugin.FileDownloaderImpl{}, kube); err != nil {
		return fmt.Errorf("Argo's DownloadPlugins: %w", err)
	}
	return nil
}

// exampleLocation is the location the example ConfigMap gives; a user
// puts the binary's path there.
const exampleLocation = "file:///plugins/splitter-argo-rollouts"

// exampleConfigMap decodes examples/argo-rollouts/argo-rollouts-config.yaml
// strictly, with bin as the plugin's location (empty: as it ships).
func exampleConfigMap(bin string) (*corev1.ConfigMap, error) {
	data, err := os.ReadFile(filepath.Join(found.examples, "argo-rollouts-config.yaml"))
	if err != nil {
		return nil, err
	}
	text := string(data)
	if bin != "" {
		if !strings.Contains(text, exampleLocation) {
			return nil, fmt.Errorf("argo-rollouts-config.yaml no longer has location %s", exampleLocation)
		}
		text = strings.Replace(text, exampleLocation, "file://"+bin, 1)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict([]byte(text), &cm); err != nil {
		return nil, fmt.Errorf("argo-rollouts-config.yaml: %w", err)
	}
	return &cm, nil
}

// argo returns the plugin as the controller holds it: started once
// through go-plugin by Argo's client, pinged (and started again if it
// died) on every call.
func argo(t *testing.T) rpc.TrafficRouterPlugin {
	t.Helper()
	p, err := client.GetTrafficPlugin(router.Name)
	if err != nil {
		t.Fatalf("Argo's GetTrafficPlugin: %v", err)
	}
	return p
}

// exampleRollout is the Rollout of examples/argo-rollouts/rollout.yaml,
// decoded strictly with Argo's types, with the plugin configuration's
// admin URL and token file (and, when not "", service) set as a user
// would.
func exampleRollout(t *testing.T, adminURL, tokenFile, service string) *v1alpha1.Rollout {
	t.Helper()
	return exampleRolloutOf(t, "rollout.yaml", adminURL, tokenFile, service)
}

// exampleRolloutOf is exampleRollout with the Rollout of another example
// file (rollout-mirror.yaml).
func exampleRolloutOf(t *testing.T, file, adminURL, tokenFile, service string) *v1alpha1.Rollout {
	t.Helper()
	ro, err := decodeRolloutFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tr := ro.Spec.Strategy.Canary.TrafficRouting
	var cfg map[string]any
	if err := json.Unmarshal(tr.Plugins[router.Name], &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["adminURL"], cfg["tokenFile"] = adminURL, tokenFile
	if service != "" {
		cfg["service"] = service
	}
	if tr.Plugins[router.Name], err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	return ro
}

// decodeRollout reads the first document of rollout.yaml, the Rollout.
func decodeRollout() (*v1alpha1.Rollout, error) { return decodeRolloutFile("rollout.yaml") }

// decodeRolloutFile reads the first document of an example file, a
// Rollout.
func decodeRolloutFile(file string) (*v1alpha1.Rollout, error) {
	docs, err := exampleDocs(file)
	if err != nil {
		return nil, err
	}
	var ro v1alpha1.Rollout
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &ro); err != nil {
		return nil, fmt.Errorf("%s: the Rollout: %w", file, err)
	}
	return &ro, nil
}

// mirrorStep and removeMirrorStep are rollout-mirror.yaml's first and
// third steps: the mirror route, and its removal.
func mirrorStep(t *testing.T, ro *v1alpha1.Rollout) *v1alpha1.SetMirrorRoute {
	t.Helper()
	s := ro.Spec.Strategy.Canary.Steps[0].SetMirrorRoute
	if s == nil || len(s.Match) == 0 || s.Percentage == nil {
		t.Fatal("rollout-mirror.yaml: the first step is no longer a setMirrorRoute with a match and a percentage")
	}
	return s
}

func removeMirrorStep(t *testing.T, ro *v1alpha1.Rollout) *v1alpha1.SetMirrorRoute {
	t.Helper()
	s := ro.Spec.Strategy.Canary.Steps[2].SetMirrorRoute
	if s == nil || len(s.Match) != 0 || s.Name != mirrorStep(t, ro).Name {
		t.Fatal("rollout-mirror.yaml: the third step is no longer the setMirrorRoute without a match")
	}
	return s
}

// exampleDocs splits an example file into its YAML documents.
func exampleDocs(name string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(found.examples, name))
	if err != nil {
		return nil, err
	}
	var docs []string
	for _, d := range strings.Split("\n"+string(data), "\n---\n") {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, d)
		}
	}
	return docs, nil
}

// headerStep and removeStep are the example's first and last steps: the
// header route, and its removal.
func headerStep(t *testing.T, ro *v1alpha1.Rollout) *v1alpha1.SetHeaderRoute {
	t.Helper()
	s := ro.Spec.Strategy.Canary.Steps[0].SetHeaderRoute
	if s == nil || len(s.Match) == 0 {
		t.Fatal("rollout.yaml: the first step is no longer a setHeaderRoute with a match")
	}
	return s
}

func removeStep(t *testing.T, ro *v1alpha1.Rollout) *v1alpha1.SetHeaderRoute {
	t.Helper()
	steps := ro.Spec.Strategy.Canary.Steps
	s := steps[len(steps)-1].SetHeaderRoute
	if s == nil || len(s.Match) != 0 {
		t.Fatal("rollout.yaml: the last step is no longer a setHeaderRoute without a match")
	}
	return s
}

// noError fails the test when Argo's RpcError carries one.
func noError(t *testing.T, what string, e types.RpcError) {
	t.Helper()
	if e.HasError() {
		t.Fatalf("%s: %s", what, e.ErrorString)
	}
}

// wantError fails the test unless Argo's RpcError carries every part.
func wantError(t *testing.T, what string, e types.RpcError, parts ...string) {
	t.Helper()
	if !e.HasError() {
		t.Fatalf("%s: no error, want one with %q", what, parts)
	}
	for _, p := range parts {
		if !strings.Contains(e.ErrorString, p) {
			t.Fatalf("%s: error %q lacks %q", what, e.ErrorString, p)
		}
	}
}

// require skips (or under CI fails) a test whose binary is missing.
func require(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%v (CI is set, so this is a failure)", err)
	}
	t.Skip(err)
}

// exampleSplitterConfig is examples/argo-rollouts/splitter.yaml plus
// extra services.
func exampleSplitterConfig(t *testing.T, extra string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(found.examples, "splitter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data) + extra
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// view is what the tests read of GET /v1/services/{name}.
type view struct {
	Weights       map[string]float64 `json:"weights"`
	WeightsOwner  string             `json:"weights_owner"`
	RuntimeRoutes []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Owner   string `json:"owner"`
	} `json:"runtime_routes"`
	MirrorRoutes []struct {
		Name    string  `json:"name"`
		Version string  `json:"version"`
		Percent float64 `json:"percent"`
		Owner   string  `json:"owner"`
	} `json:"mirror_routes"`
	Mirror *struct {
		Version string  `json:"version"`
		Percent float64 `json:"percent"`
	} `json:"mirror"`
	MirrorOverride bool `json:"mirror_override"`
	Config         struct {
		Revision int64 `json:"revision"`
	} `json:"config"`
}

func (v view) routes() string {
	var names []string
	for _, r := range v.RuntimeRoutes {
		names = append(names, r.Name+"="+r.Owner)
	}
	return strings.Join(names, ",")
}

// mirrorRoutes lists the mirror routes as name=owner, in order.
func (v view) mirrorRoutes() string {
	var names []string
	for _, r := range v.MirrorRoutes {
		names = append(names, r.Name+"="+r.Owner)
	}
	return strings.Join(names, ",")
}

func serviceOf(t *testing.T, a *testbed.AdminClient, name string) view {
	t.Helper()
	var v view
	if err := a.Admin(t.Context(), http.MethodGet, "/v1/services/"+name, nil, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// explain returns the version a request to api with headers gets, and
// the rule that decided.
func explain(t *testing.T, a *testbed.AdminClient, headers map[string]string) (version, rule string) {
	t.Helper()
	var ex struct {
		Version string `json:"version"`
		Rule    string `json:"rule"`
	}
	if err := a.Admin(t.Context(), http.MethodPost, "/v1/explain", map[string]any{"authority": "api.shop.svc", "headers": headers}, &ex); err != nil {
		t.Fatal(err)
	}
	return ex.Version, ex.Rule
}

// waitFor polls cond every 50 ms until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const token = "argo-e2e-token"

// startSplitter runs splitter on config in file mode with the admin
// token, and returns it with the token's file.
func startSplitter(t *testing.T, b *testbed.Bed, config string, args ...string) (*testbed.Splitter, string) {
	t.Helper()
	tok := writeFile(t, "admin-token", token+"\n")
	s, err := b.StartSplitter(t.Context(), found.splitterBin, writeFile(t, "splitter.yaml", config), append([]string{"--admin-token-file", tok}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	s.Token = token
	return s, tok
}
