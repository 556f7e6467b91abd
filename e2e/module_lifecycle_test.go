package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// listenerFromFile returns a bootstrap edit that moves the static
// listeners into ldsPath (Envoy's LDS from a file, which it watches) and
// pins the ingress listener to port, so that rewriting ldsPath is a
// listener update, as a control plane would push.
func listenerFromFile(ldsPath string, port int) func([]byte) ([]byte, error) {
	return func(in []byte) ([]byte, error) {
		var boot map[string]any
		if err := yaml.Unmarshal(in, &boot); err != nil {
			return nil, err
		}
		static, _ := boot["static_resources"].(map[string]any)
		listeners, _ := static["listeners"].([]any)
		if len(listeners) != 1 {
			return nil, fmt.Errorf("want one static listener, found %d", len(listeners))
		}
		l := listeners[0].(map[string]any)
		l["address"] = map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": port}}
		if err := writeLDS(ldsPath, l); err != nil {
			return nil, err
		}
		delete(static, "listeners")
		boot["dynamic_resources"] = map[string]any{
			"lds_config": map[string]any{"path_config_source": map[string]any{"path": ldsPath}, "resource_api_version": "V3"},
		}
		return json.Marshal(boot)
	}
}

// writeLDS replaces the LDS file atomically (Envoy watches for the move).
func writeLDS(path string, listener map[string]any) error {
	l := map[string]any{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener"}
	for k, v := range listener {
		l[k] = v
	}
	b, err := json.Marshal(map[string]any{"resources": []any{l}})
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// lds reads the LDS file back as the ingress listener.
func lds(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Resources []map[string]any `json:"resources"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Resources) != 1 {
		t.Fatalf("LDS file %s: %v", path, err)
	}
	delete(doc.Resources[0], "@type")
	return doc.Resources[0]
}

// setStatPrefix sets the listener's HTTP connection manager stat_prefix:
// a change that leaves the module's filter_config as it is.
func setStatPrefix(t *testing.T, l map[string]any, prefix string) {
	t.Helper()
	chains, _ := l["filter_chains"].([]any)
	if len(chains) == 0 {
		t.Fatal("listener without filter chains")
	}
	filters, _ := chains[0].(map[string]any)["filters"].([]any)
	hcm, _ := filters[0].(map[string]any)["typed_config"].(map[string]any)
	if hcm == nil {
		t.Fatal("no http_connection_manager")
	}
	hcm["stat_prefix"] = prefix
}

// TestModuleListenerUpdateAfterFileSettingChange: the module compares each
// later filter configuration with the filter_config it started with (what
// Envoy gave), not with settings re-read from the routing file. After a
// top-level scalar of the routing file changes (log_level), a listener
// update whose filter_config is unchanged is accepted, and so is the next.
func TestModuleListenerUpdateAfterFileSettingChange(t *testing.T) {
	requireModule(t)
	b := startBackends(t, baseConfig)
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ldsPath := filepath.Join(t.TempDir(), "lds.yaml")
	p, err := testbed.LoopbackParams(envoy.ModeModule, "", b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	b.envoy, b.module, err = b.StartEnvoyModule(t.Context(), found.envoyBin, found.moduleDir, p,
		map[string]any{"config": b.cfgPath, "reload_debounce": "50ms"},
		testbed.EnvoyOptions{Concurrency: 1, LogLevel: "info", Edit: listenerFromFile(ldsPath, port)})
	if err != nil {
		t.Fatal(err)
	}
	b.admin = b.module.AdminClient
	b.client = b.envoy.Client()
	t.Cleanup(b.client.Close)
	assertExactSplit(t, b, 100, 80, nil)

	// A top-level scalar of the routing file changes; the module reloads
	// the file (the routing part is the same).
	writeFile(t, b.cfgPath, "log_level: debug\n"+baseConfig)
	waitFor(t, 30*time.Second, "the reload of the edited file", func() bool {
		return strings.Contains(b.envoy.Tail(200), "log_level")
	})

	for i, prefix := range []string{"ingress_update_1", "ingress_update_2"} {
		l := lds(t, ldsPath)
		setStatPrefix(t, l, prefix)
		if err := writeLDS(ldsPath, l); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("LDS update %d applied or rejected", i+1), func() bool {
			st, err := b.envoy.Stats(t.Context(), "listener_manager.lds.update_")
			return err == nil && st["listener_manager.lds.update_success"]+st["listener_manager.lds.update_rejected"] >= uint64(i+2)
		})
		st, err := b.envoy.Stats(t.Context(), "listener_manager.lds.update_")
		if err != nil {
			t.Fatal(err)
		}
		if st["listener_manager.lds.update_rejected"] != 0 {
			t.Fatalf("LDS update %d (stat_prefix %s, filter_config unchanged) rejected: %v\n%s",
				i+1, prefix, st, grepLines(b.envoy.Tail(200), "differs"))
		}
		// Requests go through the updated listener, still split by the module.
		waitFor(t, 30*time.Second, "the updated listener's statistics", func() bool {
			st, err := b.envoy.Stats(t.Context(), "http."+prefix+".downstream_rq_total")
			if err != nil {
				return false
			}
			if _, err := b.client.Get(t.Context(), "/", nil); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Logf("request: %v", err)
			}
			return st["http."+prefix+".downstream_rq_total"] > 0
		})
		assertExactSplit(t, b, 100, 80, nil)
	}
}
