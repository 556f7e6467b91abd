// Package e2e tests the splitter through a real Envoy: requests go to
// Envoy's listener and are counted at the backends that answer them. Envoy
// comes from $ENVOY_BIN, .venv/bin/envoy (`make envoy`) or PATH; the fleet
// tests also need etcd, from $ETCD_BIN, .venv/bin/etcd (`make etcd`) or
// PATH; the console's tests need Chromium, from $CHROMIUM_BIN,
// /usr/bin/chromium (`make chromium`) or PATH. Without them the tests skip,
// except under CI (CI set) where they fail.
package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// env is what TestMain found; it is read-only once tests run.
type env struct {
	root        string
	envoyBin    string
	envoyErr    error
	etcdBin     string
	etcdErr     error
	chromiumBin string
	chromiumErr error
	splitterBin string
	// moduleDir holds libsplitter.so (built once per run when Envoy is
	// there); moduleErr says why it could not be built.
	moduleDir string
	moduleErr error
}

var found env

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := testbed.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	found.root = root
	found.envoyBin, found.envoyErr = testbed.FindEnvoy(root)
	found.etcdBin, found.etcdErr = testbed.FindEtcd(root)
	found.chromiumBin, found.chromiumErr = testbed.FindChromium()
	found.splitterBin = os.Getenv("SPLITTER_BIN")
	if found.splitterBin == "" && (found.envoyErr == nil || found.etcdErr == nil) {
		dir, err := os.MkdirTemp("", "splitter-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		found.splitterBin, err = testbed.BuildSplitter(ctx, root, dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	if found.envoyErr == nil {
		dir, err := os.MkdirTemp("", "splitter-e2e-module-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		found.moduleDir, found.moduleErr = testbed.BuildModule(ctx, root, dir)
	}
	code := m.Run()
	if previous.dir != "" {
		os.RemoveAll(previous.dir)
	}
	return code
}

// requireEnvoy skips (or, under CI, fails) a test that needs Envoy when
// none is installed.
func requireEnvoy(t *testing.T) {
	t.Helper()
	if found.envoyErr == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%v (CI is set, so this is a failure; run `make envoy`)", found.envoyErr)
	}
	t.Skipf("%v", found.envoyErr)
}

// requireModule is requireEnvoy for module mode: it also needs the
// library, which TestMain built (a failed build fails the test).
func requireModule(t *testing.T) {
	t.Helper()
	requireEnvoy(t)
	if found.moduleErr != nil {
		t.Fatalf("building libsplitter.so (a C compiler is needed): %v", found.moduleErr)
	}
}

// bed is one test's deployment: backends v1 and v2 (plus more if asked),
// the splitter on a config file (a process, or in module mode the library
// inside Envoy), and Envoy in front.
type bed struct {
	*testbed.Bed
	cfgPath  string
	splitter *testbed.Splitter // nil in module mode
	module   *testbed.Module   // module mode only
	admin    *testbed.AdminClient
	envoy    *testbed.Envoy
	client   *testbed.Client
	backends []*testbed.Backend
}

// newBed starts a bed for mode with config as the splitter's file.
func newBed(t *testing.T, mode envoy.Mode, config string, versions ...string) *bed {
	t.Helper()
	return newBedArgs(t, mode, config, nil, versions...)
}

// newBedArgs is newBed with extra command-line arguments for the splitter.
func newBedArgs(t *testing.T, mode envoy.Mode, config string, args []string, versions ...string) *bed {
	t.Helper()
	return startBed(t, mode, config, args, false, nil, versions...)
}

// startBed is newBedArgs; with envoyAdmin, Envoy's admin port is chosen
// first and given to the splitter (--envoy-admin), for rollout signals;
// tune, if set, changes the sidecar's Envoy parameters.
func startBed(t *testing.T, mode envoy.Mode, config string, args []string, envoyAdmin bool, tune func(*envoy.Params), versions ...string) *bed {
	t.Helper()
	if mode == envoy.ModeModule {
		return startModuleBed(t, found.moduleDir, config, flagSettings(t, args), versions...)
	}
	requireEnvoy(t)
	b := startBackends(t, config, versions...)
	var err error
	adminPort := 0
	if envoyAdmin {
		if adminPort, err = testbed.FreePort(); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--envoy-admin", fmt.Sprintf("127.0.0.1:%d", adminPort)}, args...)
	}
	b.splitter, err = b.StartSplitter(t.Context(), found.splitterBin, b.cfgPath, args...)
	if err != nil {
		t.Fatal(err)
	}
	b.admin = b.splitter.AdminClient
	p, err := testbed.LoopbackParams(mode, b.splitter.GRPCAddr, b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	p.Admin.Port = adminPort
	if tune != nil {
		tune(&p)
	}
	b.envoy, err = b.StartEnvoy(t.Context(), found.envoyBin, p, testbed.EnvoyOptions{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.client = b.envoy.Client()
	t.Cleanup(b.client.Close)
	return b
}

// startModuleBed starts a bed in module mode: backends, the config file,
// and Envoy with libsplitter.so from libDir, its filter_config being
// settings plus the file (if config is not "") and a short reload debounce.
func startModuleBed(t *testing.T, libDir, config string, settings map[string]any, versions ...string) *bed {
	t.Helper()
	requireModule(t)
	b := startBackends(t, config, versions...)
	fc := map[string]any{"reload_debounce": "50ms"}
	if b.cfgPath != "" {
		fc["config"] = b.cfgPath
	}
	maps.Copy(fc, settings)
	p, err := testbed.LoopbackParams(envoy.ModeModule, "", b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	b.envoy, b.module, err = b.StartEnvoyModule(t.Context(), found.envoyBin, libDir, p, fc, testbed.EnvoyOptions{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.admin = b.module.AdminClient
	b.client = b.envoy.Client()
	t.Cleanup(b.client.Close)
	return b
}

// startBackends begins a bed: its backends (v1 and v2 unless versions are
// given) and, unless config is "", the configuration file at b.cfgPath.
func startBackends(t *testing.T, config string, versions ...string) *bed {
	t.Helper()
	if len(versions) == 0 {
		versions = []string{"v1", "v2"}
	}
	b := &bed{Bed: testbed.ForTest(t)}
	var err error
	if b.backends, err = b.StartBackends(versions...); err != nil {
		t.Fatal(err)
	}
	if config != "" {
		b.cfgPath = filepath.Join(t.TempDir(), "config.yaml")
		writeFile(t, b.cfgPath, config)
	}
	return b
}

// flagSettings turns the sidecar's "--key-name value" arguments into the
// module's filter_config settings ({"key_name": "value"}).
func flagSettings(t *testing.T, args []string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for i := 0; i < len(args); i += 2 {
		name, ok := strings.CutPrefix(args[i], "--")
		if !ok || i+1 >= len(args) {
			t.Fatalf("argument %q is not --flag value", args[i])
		}
		out[strings.ReplaceAll(name, "-", "_")] = args[i+1]
	}
	return out
}

// writeFile replaces path atomically (temp file + rename), as editors and
// ConfigMap updates do, so the splitter never reads a half-written file.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// get sends one request and fails the test on any error.
func (b *bed) get(t *testing.T, h http.Header) (version string, headers map[string]string) {
	t.Helper()
	rep, err := b.client.Get(t.Context(), "/", h)
	if err != nil {
		t.Fatal(err)
	}
	return rep.Version, rep.Headers
}

// hdr builds a header set from name, value pairs.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// waitFor polls cond every 50 ms until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
