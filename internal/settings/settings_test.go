package settings_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/settings"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func newFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	settings.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

const routing = `
services:
  - name: api
    weights: {v1: 80, v2: 20}
`

func TestLoadPrecedence(t *testing.T) {
	file := writeFile(t, "c.yaml", "grpc_addr: 127.0.0.1:3001\nshutdown_timeout: 3s\nreason_header: x-file-reason\n"+routing)
	gcFile := writeFile(t, "gc.yaml", "gc_percent: 250\npprof: true\n"+routing)
	gcOffFile := writeFile(t, "gcoff.yaml", "gc_percent: off\n"+routing)
	rolloutFile := writeFile(t, "rollout.yaml", "envoy_admin: 127.0.0.1:19901\nsignals_interval: 1s\n"+routing)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(*settings.Settings)
	}{
		{
			name: "defaults",
			want: func(*settings.Settings) {},
		},
		{
			name: "file beats default",
			args: []string{"--config", file},
			want: func(s *settings.Settings) {
				s.ConfigPath = file
				s.GRPCAddr = "127.0.0.1:3001"
				s.ShutdownTimeout = 3 * time.Second
				s.ReasonHeader = "x-file-reason"
			},
		},
		{
			name: "file named by SPLITTER_CONFIG",
			env:  map[string]string{"SPLITTER_CONFIG": file},
			want: func(s *settings.Settings) {
				s.ConfigPath = file
				s.GRPCAddr = "127.0.0.1:3001"
				s.ShutdownTimeout = 3 * time.Second
				s.ReasonHeader = "x-file-reason"
			},
		},
		{
			name: "env beats file",
			args: []string{"--config", file},
			env: map[string]string{
				"SPLITTER_GRPC_ADDR":        "127.0.0.1:4001",
				"SPLITTER_SHUTDOWN_TIMEOUT": "4s",
				"SPLITTER_REASON_HEADER":    "", // set but empty: disables the header
			},
			want: func(s *settings.Settings) {
				s.ConfigPath = file
				s.GRPCAddr = "127.0.0.1:4001"
				s.ShutdownTimeout = 4 * time.Second
				s.ReasonHeader = ""
			},
		},
		{
			name: "flag beats env and file",
			args: []string{"--config", file, "--grpc-addr", "127.0.0.1:5001", "--shutdown-timeout", "5s", "--reason-header", "x-flag"},
			env:  map[string]string{"SPLITTER_GRPC_ADDR": "127.0.0.1:4001", "SPLITTER_SHUTDOWN_TIMEOUT": "4s"},
			want: func(s *settings.Settings) {
				s.ConfigPath = file
				s.GRPCAddr = "127.0.0.1:5001"
				s.ShutdownTimeout = 5 * time.Second
				s.ReasonHeader = "x-flag"
			},
		},
		{
			name: "config flag beats SPLITTER_CONFIG",
			args: []string{"--config", file},
			env:  map[string]string{"SPLITTER_CONFIG": "/nonexistent.yaml"},
			want: func(s *settings.Settings) {
				s.ConfigPath = file
				s.GRPCAddr = "127.0.0.1:3001"
				s.ShutdownTimeout = 3 * time.Second
				s.ReasonHeader = "x-file-reason"
			},
		},
		{
			name: "env without file beats default",
			env:  map[string]string{"SPLITTER_ADMIN_ADDR": "127.0.0.1:0", "SPLITTER_LOG_FORMAT": "JSON"},
			want: func(s *settings.Settings) {
				s.AdminAddr = "127.0.0.1:0"
				s.LogFormat = "json"
			},
		},
		{
			name: "header names are lower-cased, drain delay set",
			args: []string{"--route-header", "X-Route", "--drain-delay", "0s"},
			want: func(s *settings.Settings) { s.RouteHeader, s.DrainDelay = "x-route", 0 },
		},
		{
			name: "GOGC beats the default gc_percent",
			env:  map[string]string{"GOGC": "150"},
			want: func(s *settings.Settings) { s.GCPercent, s.GCPercentSource = 150, settings.GCSourceGOGC },
		},
		{
			name: "GOGC off",
			env:  map[string]string{"GOGC": "off"},
			want: func(s *settings.Settings) { s.GCPercent, s.GCPercentSource = -1, settings.GCSourceGOGC },
		},
		{
			name: "invalid GOGC read as the runtime does",
			env:  map[string]string{"GOGC": "lots"},
			want: func(s *settings.Settings) { s.GCPercent, s.GCPercentSource = 100, settings.GCSourceGOGC },
		},
		{
			name: "empty GOGC is unset",
			env:  map[string]string{"GOGC": ""},
			want: func(*settings.Settings) {},
		},
		{
			name: "gc_percent in the file beats GOGC",
			args: []string{"--config", gcFile},
			env:  map[string]string{"GOGC": "150"},
			want: func(s *settings.Settings) {
				s.ConfigPath = gcFile
				s.GCPercent, s.GCPercentSource, s.Pprof = 250, settings.GCSourceSetting, true
			},
		},
		{
			name: "gc_percent off in the file",
			args: []string{"--config", gcOffFile},
			want: func(s *settings.Settings) {
				s.ConfigPath, s.GCPercent, s.GCPercentSource = gcOffFile, -1, settings.GCSourceSetting
			},
		},
		{
			name: "SPLITTER_GC_PERCENT beats GOGC",
			env:  map[string]string{"GOGC": "150", "SPLITTER_GC_PERCENT": "off", "SPLITTER_PPROF": "1"},
			want: func(s *settings.Settings) {
				s.GCPercent, s.GCPercentSource, s.Pprof = -1, settings.GCSourceSetting, true
			},
		},
		{
			name: "empty SPLITTER_GC_PERCENT is unset",
			env:  map[string]string{"SPLITTER_GC_PERCENT": ""},
			want: func(*settings.Settings) {},
		},
		{
			name: "gc-percent flag beats SPLITTER_GC_PERCENT and GOGC",
			args: []string{"--gc-percent", "800", "--pprof"},
			env:  map[string]string{"GOGC": "150", "SPLITTER_GC_PERCENT": "300", "SPLITTER_PPROF": "false"},
			want: func(s *settings.Settings) {
				s.GCPercent, s.GCPercentSource, s.Pprof = 800, settings.GCSourceSetting, true
			},
		},
		{
			name: "envoy_admin from the file, signals_interval from the environment",
			args: []string{"--config", rolloutFile},
			env:  map[string]string{"SPLITTER_SIGNALS_INTERVAL": "100ms"},
			want: func(s *settings.Settings) {
				s.ConfigPath, s.EnvoyAdmin, s.SignalsInterval = rolloutFile, "127.0.0.1:19901", 100*time.Millisecond
			},
		},
		{
			name: "console_interval from its flag",
			args: []string{"--console-interval", "1s"},
			want: func(s *settings.Settings) { s.ConsoleInterval = time.Second },
		},
		{
			name: "empty envoy_admin: no signal source",
			env:  map[string]string{"SPLITTER_ENVOY_ADMIN": ""},
			want: func(s *settings.Settings) { s.EnvoyAdmin = "" },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := settings.Load(newFlags(t, tc.args...), envMap(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			want := settings.Defaults()
			tc.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadErrorsNameKeys(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		args  []string
		env   map[string]string
		wants []string
	}{
		{name: "address without port", args: []string{"--grpc-addr", "localhost"}, wants: []string{"grpc_addr: "}},
		{name: "port out of range", env: map[string]string{"SPLITTER_ADMIN_ADDR": "127.0.0.1:70000"}, wants: []string{"admin_addr: "}},
		{name: "reason header is the route header in another case", args: []string{"--route-header", "x-route", "--reason-header", "X-Route"}, wants: []string{"reason_header: must differ from route_header"}},
		{name: "negative drain delay", args: []string{"--drain-delay", "-1s"}, wants: []string{"drain_delay: -1s must not be negative"}},
		{name: "header with a space", file: "reason_header: \"x reason\"\n", wants: []string{"reason_header: "}},
		{name: "empty route header", env: map[string]string{"SPLITTER_ROUTE_HEADER": ""}, wants: []string{"route_header: must not be empty"}},
		{name: "pseudo header", args: []string{"--route-header", ":path"}, wants: []string{"route_header: "}},
		{name: "same route and reason header", args: []string{"--reason-header", "x-route-version"}, wants: []string{"reason_header: must differ"}},
		{name: "mirror header is the route header", args: []string{"--mirror-header", "X-Route-Version"}, wants: []string{"mirror_header: must differ from route_header"}},
		{name: "mirror header is the reason header", env: map[string]string{"SPLITTER_MIRROR_HEADER": "x-route-reason"}, wants: []string{"mirror_header: must differ from reason_header"}},
		{name: "empty mirror header", file: "mirror_header: \"\"\n", wants: []string{"mirror_header: must not be empty"}},
		{name: "bad mirror header", args: []string{"--mirror-header", "x mirror"}, wants: []string{"mirror_header: "}},
		{name: "zero duration", args: []string{"--reload-debounce", "0s"}, wants: []string{"reload_debounce: 0s must be positive"}},
		{name: "negative duration", env: map[string]string{"SPLITTER_SHUTDOWN_TIMEOUT": "-1s"}, wants: []string{"shutdown_timeout: "}},
		{name: "duration without unit in file", file: "reload_poll_interval: 30\n", wants: []string{"reload_poll_interval: \"30\" is not a duration"}},
		{name: "bad log level", env: map[string]string{"SPLITTER_LOG_LEVEL": "loud"}, wants: []string{"log_level: "}},
		{name: "bad log format", file: "log_format: xml\n", wants: []string{"log_format: "}},
		{name: "map where a scalar belongs", file: "grpc_addr: {host: a}\n", wants: []string{"grpc_addr: must be a scalar"}},
		{name: "token and token file", args: []string{"--admin-token", "a", "--admin-token-file", "/x"}, wants: []string{"admin_token: set either"}},
		{name: "unreadable token file", args: []string{"--admin-token-file", "/nonexistent/token"}, wants: []string{"admin_token_file: ", "/nonexistent/token"}},
		{name: "missing config file", args: []string{"--config", "/nonexistent/splitter.yaml"}, wants: []string{"/nonexistent/splitter.yaml"}},
		{name: "broken yaml", file: "grpc_addr: [\n", wants: []string{"c.yaml"}},
		{name: "gc_percent zero", args: []string{"--gc-percent", "0"}, wants: []string{"gc_percent: \"0\" is not a positive integer"}},
		{name: "gc_percent negative", env: map[string]string{"SPLITTER_GC_PERCENT": "-5"}, wants: []string{"gc_percent: "}},
		{name: "gc_percent not a number", file: "gc_percent: lots\n", wants: []string{"gc_percent: \"lots\""}},
		{name: "gc_percent a map", file: "gc_percent: {a: 1}\n", wants: []string{"gc_percent: must be a scalar"}},
		{name: "pprof not a bool", env: map[string]string{"SPLITTER_PPROF": "maybe"}, wants: []string{"pprof: \"maybe\""}},
		{name: "envoy_admin without a port", args: []string{"--envoy-admin", "localhost"}, wants: []string{"envoy_admin: "}},
		{name: "signals_interval too short", file: "signals_interval: 1ms\n", wants: []string{"signals_interval: 1ms must be between 10ms and 10s"}},
		{name: "console_interval too short", env: map[string]string{"SPLITTER_CONSOLE_INTERVAL": "10ms"}, wants: []string{"console_interval: 10ms must be between 100ms and 1m"}},
		{name: "console_interval too long", file: "console_interval: 2m\n", wants: []string{"console_interval: 2m0s must be between 100ms and 1m"}},
		{
			name:  "several problems at once",
			args:  []string{"--grpc-addr", "nope", "--log-level", "loud"},
			wants: []string{"grpc_addr: ", "log_level: "},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append(args, "--config", writeFile(t, "c.yaml", tc.file))
			}
			_, err := settings.Load(newFlags(t, args...), envMap(tc.env))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestTokenSource(t *testing.T) {
	t.Run("inline token", func(t *testing.T) {
		s, err := settings.Load(newFlags(t, "--admin-token", "s3cret"), nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := s.TokenSource(discard())
		if err != nil {
			t.Fatal(err)
		}
		if got := tok(); got != "s3cret" {
			t.Errorf("token = %q, want s3cret", got)
		}
	})
	t.Run("file is trimmed and re-read", func(t *testing.T) {
		path := writeFile(t, "token", "first\n")
		s, err := settings.Load(newFlags(t), envMap(map[string]string{"SPLITTER_ADMIN_TOKEN_FILE": path}))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := s.TokenSource(discard())
		if err != nil {
			t.Fatal(err)
		}
		if got := tok(); got != "first" {
			t.Errorf("token = %q, want first", got)
		}
		if err := os.WriteFile(path, []byte("  second \n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := tok(); got != "second" {
			t.Errorf("after rotation token = %q, want second", got)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if got := tok(); got != "second" {
			t.Errorf("with the file gone token = %q, want the last good one", got)
		}
	})
	t.Run("empty file is refused at startup", func(t *testing.T) {
		path := writeFile(t, "token", " \n")
		_, err := settings.Load(newFlags(t, "--admin-token-file", path), nil)
		if err == nil || !strings.Contains(err.Error(), "admin_token_file: ") {
			t.Fatalf("err = %v, want an admin_token_file error", err)
		}
	})
}

func TestFileSettings(t *testing.T) {
	got, err := settings.FileSettings([]byte("grpc_addr: 127.0.0.1:1\nreason_header:\nservices: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"grpc_addr": "127.0.0.1:1", "reason_header": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FileSettings (-want +got):\n%s", diff)
	}
}

// The same bytes feed viper (process scalars, lower-cased keys) and the
// routing parser, which must keep the case of version and service names.
func TestRoutingNamesKeepCase(t *testing.T) {
	file := writeFile(t, "c.yaml", `grpc_addr: 127.0.0.1:7001
services:
  - name: CheckoutAPI
    stable: Blue
    weights: {Blue: 90, GreenCanary: 10}
`)
	s, err := settings.Load(newFlags(t, "--config", file), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.GRPCAddr != "127.0.0.1:7001" {
		t.Errorf("grpc_addr = %q", s.GRPCAddr)
	}
	l, err := config.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Config.Services) != 1 {
		t.Fatalf("services = %+v", l.Config.Services)
	}
	svc := l.Config.Services[0]
	if svc.Name != "CheckoutAPI" || svc.Stable != "Blue" {
		t.Errorf("service = %q stable %q, want CheckoutAPI / Blue", svc.Name, svc.Stable)
	}
	var names []string
	for _, w := range svc.Weights {
		names = append(names, w.Version)
	}
	if diff := cmp.Diff([]string{"Blue", "GreenCanary"}, names); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
