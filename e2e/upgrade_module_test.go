package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// A hot restart between a module build without the handover (the
// previous release) and this one, in either direction, fails safe: the
// new epoch's module finds admin_addr held by a module that does not
// answer on the handover socket, rejects its filter configuration, and
// that Envoy epoch exits at start-up; the running epoch goes on serving,
// with its control plane, admin port and runtime state untouched. So
// changing between the two takes a full restart of Envoy
// (docs/upgrading.md, docs/module.md).
func TestUpgradeModuleHotRestartAcrossTheHandover(t *testing.T) {
	requireModule(t)
	rel := previousRelease(t)
	oldDir, err := os.MkdirTemp("", "splitter-previous-module-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(oldDir) })
	if _, err := rel.BuildModule(t.Context(), oldDir); err != nil {
		t.Fatalf("building the previous release's module: %v", err)
	}
	for _, tc := range []struct{ name, from, to string }{
		{"previous to this", oldDir, found.moduleDir},
		{"this to previous", found.moduleDir, oldDir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBackends(t, hotRestartConfig)
			port, err := testbed.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			p, err := testbed.LoopbackParams(envoy.ModeModule, "", b.backends...)
			if err != nil {
				t.Fatal(err)
			}
			opts := testbed.EnvoyOptions{Concurrency: 1, LogLevel: "info", HotRestart: true}
			settings := map[string]any{"config": b.cfgPath, "admin_addr": fmt.Sprintf("127.0.0.1:%d", port)}
			parent, mod, err := b.StartEnvoyModule(t.Context(), found.envoyBin, tc.from, p, settings, opts)
			if err != nil {
				t.Fatal(err)
			}
			b.envoy, b.module, b.admin = parent, mod, mod.AdminClient
			b.client = parent.Client()
			t.Cleanup(b.client.Close)
			if err := b.admin.SetCanary(t.Context(), "api", 35); err != nil {
				t.Fatal(err)
			}

			_, err = parent.HotRestartEnv(t.Context(), []string{testbed.ModuleSearchPath + "=" + tc.to})
			procs := b.Procs()
			next := procs[len(procs)-1]
			if !strings.Contains(strings.Join(next.Args, " "), "--restart-epoch 1") {
				t.Fatalf("not the new epoch's process: %v", next.Args)
			}
			select {
			case <-next.Exited():
			case <-time.After(60 * time.Second):
				t.Fatalf("the new epoch did not exit (hot restart: %v)", err)
			}
			log := next.Tail(200)
			// This release's module says why no previous epoch handed over;
			// the previous one only that the port is taken.
			if !strings.Contains(log, "address already in use") || tc.to == found.moduleDir && !strings.Contains(log, "handed it over") {
				t.Fatalf("the new epoch's exit does not say why:\n%s", log)
			}
			t.Logf("the new epoch (%s): %v; its last words:\n%s", tc.name, next.ExitErr(), grepLines(log, "admin_addr"))

			// The running epoch serves on, as it was.
			if !parent.Running() {
				t.Fatalf("the running epoch exited: %v", parent.ExitErr())
			}
			var svc struct {
				Weights map[string]float64 `json:"weights"`
			}
			if err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &svc); err != nil || svc.Weights["v2"] != 35 {
				t.Fatalf("the running epoch's admin API: %v %v", svc, err)
			}
			if err := b.admin.SetCanary(t.Context(), "api", 60); err != nil {
				t.Fatal(err)
			}
			b.client.Close()
			assertExactSplit(t, b, 100, 40, nil)
		})
	}
}
