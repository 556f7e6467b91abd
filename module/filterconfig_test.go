package module

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/settings"
)

func TestParseFilterConfig(t *testing.T) {
	for _, c := range []struct {
		name    string
		raw     string
		check   func(t *testing.T, fc FilterConfig)
		wantErr []string
	}{
		{
			name: "empty means every default",
			raw:  "",
			check: func(t *testing.T, fc FilterConfig) {
				d := settings.Defaults()
				if fc.Settings.ConfigPath != "" || fc.Settings.AdminAddr != d.AdminAddr || fc.Settings.RouteHeader != d.RouteHeader {
					t.Fatalf("%+v", fc.Settings)
				}
			},
		},
		{
			name: "the settings keys, strings, numbers, booleans and lists",
			raw: `{"config": "/nonexistent/config.yaml", "admin_addr": "127.0.0.1:9102", "route_header": "X-Version",
				"reason_header": null, "gc_percent": 200, "pprof": true, "signals_interval": "100ms",
				"etcd_endpoints": ["http://127.0.0.1:2379", "http://127.0.0.1:2380"], "node_id": "edge-1",
				"ready_file": "/tmp/ready.json"}`,
			check: func(t *testing.T, fc FilterConfig) {
				s := fc.Settings
				if s.ConfigPath != "/nonexistent/config.yaml" || s.AdminAddr != "127.0.0.1:9102" || s.RouteHeader != "x-version" ||
					s.ReasonHeader != "" || s.GCPercent != 200 || !s.Pprof || s.SignalsInterval != 100*time.Millisecond ||
					len(s.EtcdEndpoints) != 2 || s.NodeID != "edge-1" || fc.ReadyFile != "/tmp/ready.json" {
					t.Fatalf("%+v %q", s, fc.ReadyFile)
				}
			},
		},
		{name: "not JSON", raw: `config: x`, wantErr: []string{"filter_config: not a JSON object"}},
		{name: "not an object", raw: `["a"]`, wantErr: []string{"filter_config: not a JSON object"}},
		{name: "two objects", raw: `{} {}`, wantErr: []string{"data after it"}},
		{name: "unknown keys are named", raw: `{"confg": "x", "admin": "y"}`,
			wantErr: []string{"filter_config: admin: unknown key", "filter_config: confg: unknown key"}},
		{name: "keys the module does not use", raw: `{"grpc_addr": "127.0.0.1:9001", "drain_delay": "1s"}`,
			wantErr: []string{"grpc_addr: not used by the module", "drain_delay: not used by the module"}},
		{
			name: "envoy_admin is off unless given (the module's own counters)",
			raw:  `{}`,
			check: func(t *testing.T, fc FilterConfig) {
				if fc.Settings.EnvoyAdmin != "" {
					t.Fatalf("envoy_admin %q, want none", fc.Settings.EnvoyAdmin)
				}
			},
		},
		{
			name: "envoy_admin given: Envoy's cluster statistics (shadow steps)",
			raw:  `{"envoy_admin": "127.0.0.1:9901"}`,
			check: func(t *testing.T, fc FilterConfig) {
				if fc.Settings.EnvoyAdmin != "127.0.0.1:9901" {
					t.Fatalf("envoy_admin %q", fc.Settings.EnvoyAdmin)
				}
			},
		},
		{name: "nested value", raw: `{"admin_addr": {"host": "x"}}`, wantErr: []string{"admin_addr: must be a string"}},
		{name: "list of numbers", raw: `{"etcd_endpoints": [1]}`, wantErr: []string{"etcd_endpoints[0]"}},
		{name: "invalid setting names its key", raw: `{"route_header": "x bad", "signals_interval": "1h"}`,
			wantErr: []string{"route_header", "signals_interval"}},
		{
			name: "a missing config file is not a filter_config error (the module starts without one)",
			raw:  `{"config": "/nonexistent/splitter.yaml", "admin_addr": "127.0.0.1:0"}`,
			check: func(t *testing.T, fc FilterConfig) {
				if fc.Settings.ConfigPath != "/nonexistent/splitter.yaml" {
					t.Fatalf("%+v", fc.Settings)
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc, err := ParseFilterConfig([]byte(c.raw))
			if len(c.wantErr) > 0 {
				if err == nil {
					t.Fatalf("accepted: %+v", fc)
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, fc)
		})
	}
}

func TestFilterConfigOverFileSettings(t *testing.T) {
	path := t.TempDir() + "/config.yaml"
	if err := os.WriteFile(path, []byte("route_header: x-from-file\nreason_header: x-why\nservices: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fc, err := ParseFilterConfig(fmt.Appendf(nil, `{"config": %q, "reason_header": "x-from-filter"}`, path))
	if err != nil {
		t.Fatal(err)
	}
	if fc.Settings.RouteHeader != "x-from-file" || fc.Settings.ReasonHeader != "x-from-filter" {
		t.Fatalf("route %q reason %q: want the file's route header and filter_config's reason header", fc.Settings.RouteHeader, fc.Settings.ReasonHeader)
	}
}
