// Package settings reads splitter's process settings (addresses, tokens,
// header names, timeouts) from flags, SPLITTER_* environment variables and
// the configuration file's top-level scalars, once, at startup. The
// routing configuration is not read here: see package config.
package settings

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/fsutil"
	"github.com/trafficsplit/splitter/split"
)

// EnvPrefix starts the name of every environment variable splitter reads:
// SPLITTER_GRPC_ADDR overrides grpc_addr, SPLITTER_CONFIG names the file.
const EnvPrefix = "SPLITTER_"

// Settings are the process settings. They are read once at startup from
// flags, SPLITTER_* variables, the file's top-level scalars and defaults, in
// that order of precedence, and never again: a reload only swaps the routing
// part, so changing grpc_addr (or any other key here) in the file takes
// effect at the next restart.
type Settings struct {
	ConfigPath     string // "" runs on the built-in default configuration
	GRPCAddr       string
	AdminAddr      string
	AdminToken     string
	AdminTokenFile string
	RouteHeader    string
	ReasonHeader   string // "" disables the reason header
	MirrorHeader   string // the version a mirrored request is copied to
	StateFile      string
	LogLevel       string // debug, info, warn, error
	LogFormat      string // text, json

	ShutdownTimeout time.Duration
	// DrainDelay is how long the sidecar keeps deciding new requests after
	// SIGTERM, with gRPC health NOT_SERVING and /readyz failing, before it
	// stops accepting streams: time for Envoy to be stopped or to stop
	// sending, so the tail of traffic is decided rather than failed open.
	DrainDelay         time.Duration
	ReloadDebounce     time.Duration
	ReloadPollInterval time.Duration

	// GCPercent is the garbage collector target applied at startup with
	// debug.SetGCPercent; -1 turns the collector off. See GCPercentSource
	// for where it came from.
	GCPercent int
	// GCPercentSource is GCSourceSetting, GCSourceGOGC or GCSourceDefault.
	GCPercentSource string
	// Pprof serves net/http/pprof on the admin port under /debug/pprof/.
	Pprof bool

	// Fleet mode (docs/fleet.md): with EtcdEndpoints set, the routing
	// configuration and the overrides come from etcd, not the file.
	EtcdEndpoints    []string // client URLs; empty: file mode
	EtcdPrefix       string   // key prefix, ends with "/"
	NodeID           string   // this replica's name under replicas/
	EtcdCAFile       string
	EtcdCertFile     string
	EtcdKeyFile      string
	EtcdUsername     string
	EtcdPasswordFile string
	EtcdCacheFile    string        // last applied state, for starting while etcd is down
	EtcdDialTimeout  time.Duration // bound on one connection attempt or request at start
	// EtcdFollowInterval is the cadence of a replica's liveness checks on
	// its watch (internal/fleet/follow.go): raised for very large fleets.
	EtcdFollowInterval time.Duration
	// EnvoyAdmin is Envoy's admin address (host:port), where the rollout
	// guard reads the per-cluster statistics; "" leaves rollouts without a
	// signal source (they cannot be started).
	EnvoyAdmin string
	// SignalsInterval is how often, while a rollout is active, the signals
	// are read and the guard decides.
	SignalsInterval time.Duration
	// ConsoleInterval is how often the operator console samples each
	// version's requests and errors and the decision reasons: the width of
	// one of its fixed number of buckets (docs/console.md).
	ConsoleInterval time.Duration
	// RolloutPublishInterval is how often, in fleet mode, a replica
	// publishes its window counts of an active rollout for the leader
	// (when they changed); RolloutLeaderTTL is the lease of the rollout
	// leader's election and of the published counts: a replica that dies
	// is replaced as leader, and its counts dropped, within it.
	RolloutPublishInterval time.Duration
	RolloutLeaderTTL       time.Duration
}

// FleetMode reports whether the routing configuration comes from etcd.
func (s Settings) FleetMode() bool { return len(s.EtcdEndpoints) > 0 }

// Where Settings.GCPercent came from. An explicit gc_percent (flag,
// SPLITTER_GC_PERCENT or the file) wins; else GOGC in the environment is
// honoured as the Go runtime reads it; else DefaultGCPercent applies.
const (
	GCSourceSetting = "gc_percent"
	GCSourceGOGC    = "GOGC"
	GCSourceDefault = "default"
)

// DefaultGCPercent is the GC target when neither gc_percent nor GOGC is
// set. The live heap of the sidecar is small (about 2 MB), so collecting
// at 5x instead of 2x of it costs about 10 MiB of memory and saves a fifth
// of the CPU spent per ext_proc stream.
const DefaultGCPercent = 400

// Defaults returns the settings used when nothing overrides them.
func Defaults() Settings {
	return Settings{
		GRPCAddr:           "127.0.0.1:9001",
		AdminAddr:          "127.0.0.1:9002",
		RouteHeader:        "x-route-version",
		ReasonHeader:       "x-route-reason",
		MirrorHeader:       adapter.DefaultMirrorHeader,
		LogLevel:           "info",
		LogFormat:          "text",
		ShutdownTimeout:    10 * time.Second,
		DrainDelay:         5 * time.Second,
		ReloadDebounce:     200 * time.Millisecond,
		ReloadPollInterval: 30 * time.Second,
		GCPercent:          DefaultGCPercent,
		GCPercentSource:    GCSourceDefault,
		EtcdPrefix:         DefaultEtcdPrefix,
		EtcdDialTimeout:    5 * time.Second,
		EtcdFollowInterval: 500 * time.Millisecond,
		EnvoyAdmin:         "127.0.0.1:9901",
		SignalsInterval:    250 * time.Millisecond,
		ConsoleInterval:    5 * time.Second,

		RolloutPublishInterval: time.Second,
		RolloutLeaderTTL:       5 * time.Second,
	}
}

// DefaultEtcdPrefix is where the fleet's keys live unless etcd_prefix says
// otherwise.
const DefaultEtcdPrefix = "/splitter/"

// Keys are the top-level scalar keys of a configuration file that hold
// process settings rather than routing configuration.
func Keys() []string {
	return []string{
		"grpc_addr", "admin_addr", "admin_token", "admin_token_file",
		"route_header", "reason_header", "mirror_header", "state_file",
		"log_level", "log_format", "shutdown_timeout", "drain_delay", "reload_debounce", "reload_poll_interval",
		"gc_percent", "pprof",
		"etcd_endpoints", "etcd_prefix", "node_id", "etcd_ca_file", "etcd_cert_file", "etcd_key_file",
		"etcd_username", "etcd_password_file", "etcd_cache_file", "etcd_dial_timeout", "etcd_follow_interval",
		"envoy_admin", "signals_interval", "console_interval", "rollout_publish_interval", "rollout_leader_ttl",
	}
}

// configKey is the flag and environment key of the file path; it has no
// file counterpart.
const configKey = "config"

// flagName maps a settings key to its flag: grpc_addr -> --grpc-addr.
func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// EnvName maps a settings key to its environment variable: grpc_addr ->
// SPLITTER_GRPC_ADDR.
func EnvName(key string) string { return EnvPrefix + strings.ToUpper(key) }

// BindFlags declares one flag per process setting (--config, --grpc-addr,
// ..., --reload-poll-interval) on fs.
func BindFlags(fs *pflag.FlagSet) {
	d := Defaults()
	fs.String(flagName(configKey), "", "configuration file (env "+EnvName(configKey)+"; default: the built-in configuration)")
	fs.String(flagName("grpc_addr"), d.GRPCAddr, "gRPC listen address for ext_proc, ext_authz and health (host:port)")
	fs.String(flagName("admin_addr"), d.AdminAddr, "admin HTTP listen address (host:port)")
	fs.String(flagName("admin_token"), "", "bearer token required by mutating admin calls (prefer --admin-token-file)")
	fs.String(flagName("admin_token_file"), "", "file holding the admin bearer token, re-read on every admin request")
	fs.String(flagName("route_header"), d.RouteHeader, "request header that carries the chosen version")
	fs.String(flagName("reason_header"), d.ReasonHeader, `request header that carries the reason ("" disables it)`)
	fs.String(flagName("mirror_header"), d.MirrorHeader, "request header that names the version a mirrored request is copied to (Envoy's routes mirror on it)")
	fs.String(flagName("state_file"), "", "file where admin overrides persist across restarts (\"\": not persisted)")
	fs.String(flagName("log_level"), d.LogLevel, "log level: debug, info, warn, error")
	fs.String(flagName("log_format"), d.LogFormat, "log format: text or json")
	fs.Duration(flagName("shutdown_timeout"), d.ShutdownTimeout, "how long open streams may take to finish on SIGTERM, after the drain delay")
	fs.Duration(flagName("drain_delay"), d.DrainDelay, "how long new requests are still decided after SIGTERM (health NOT_SERVING) before streams are refused; 0 disables")
	fs.Duration(flagName("reload_debounce"), d.ReloadDebounce, "quiet period after a file event before reloading")
	fs.Duration(flagName("reload_poll_interval"), d.ReloadPollInterval, "how often the file is checked even without events")
	fs.String(flagName("gc_percent"), "", fmt.Sprintf(`garbage collector target percent, or "off" (default: GOGC if set, else %d)`, DefaultGCPercent))
	fs.Bool(flagName("pprof"), false, "serve net/http/pprof on the admin port under /debug/pprof/ (guarded like mutations)")
	fs.String(flagName("etcd_endpoints"), "", "comma-separated etcd client URLs; set, the routing configuration and overrides come from etcd (fleet mode)")
	fs.String(flagName("etcd_prefix"), d.EtcdPrefix, "etcd key prefix of the fleet (ends with /)")
	fs.String(flagName("node_id"), "", "this replica's name in the fleet (default: the host name)")
	fs.String(flagName("etcd_ca_file"), "", "CA bundle to verify etcd's server certificate (TLS)")
	fs.String(flagName("etcd_cert_file"), "", "client certificate for etcd (TLS client auth; with --etcd-key-file)")
	fs.String(flagName("etcd_key_file"), "", "client key for etcd (with --etcd-cert-file)")
	fs.String(flagName("etcd_username"), "", "etcd user (with --etcd-password-file)")
	fs.String(flagName("etcd_password_file"), "", "file holding the etcd user's password")
	fs.String(flagName("etcd_cache_file"), "", "file keeping the last applied fleet state, to start from while etcd is down (\"\": none)")
	fs.Duration(flagName("etcd_dial_timeout"), d.EtcdDialTimeout, "how long one attempt to reach etcd may take at start (then the cache file is used)")
	fs.Duration(flagName("etcd_follow_interval"), d.EtcdFollowInterval, "how often a replica asks etcd to prove its watch is caught up (its stall bound is twice this, its revision probe four times); raise it for fleets of many hundreds")
	fs.String(flagName("envoy_admin"), d.EnvoyAdmin, `Envoy's admin address, where rollouts read per-cluster statistics ("": no rollouts)`)
	fs.Duration(flagName("signals_interval"), d.SignalsInterval, "how often an active rollout's signals are read and judged")
	fs.Duration(flagName("console_interval"), d.ConsoleInterval, "how often the operator console (/ui/) samples per-version traffic: one bucket of its 60")
	fs.Duration(flagName("rollout_publish_interval"), d.RolloutPublishInterval, "fleet mode: how often a replica publishes its counts of an active rollout to etcd for the leader")
	fs.Duration(flagName("rollout_leader_ttl"), d.RolloutLeaderTTL, "fleet mode: lease of the rollout leader and of the published counts (whole seconds): a dead leader is replaced within it")
}

// Load resolves the settings with a fresh viper instance: a flag that was
// set beats the environment (looked up through env, normally
// os.LookupEnv), which beats the file's top-level scalars, which beat the
// defaults. The routing part of the file is not looked at here (viper would
// lower-case its names); it goes through Parse. Every error names its key.
func Load(fs *pflag.FlagSet, env func(string) (string, bool)) (Settings, error) {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	path := ""
	if f := fs.Lookup(flagName(configKey)); f != nil && f.Changed {
		path = f.Value.String()
	} else if p, ok := env(EnvName(configKey)); ok {
		path = p
	}

	v := viper.New()
	v.SetConfigType("yaml")
	d := Defaults()
	defaults := map[string]string{
		"grpc_addr": d.GRPCAddr, "admin_addr": d.AdminAddr, "admin_token": "", "admin_token_file": "",
		"route_header": d.RouteHeader, "reason_header": d.ReasonHeader, "mirror_header": d.MirrorHeader, "state_file": "",
		"log_level": d.LogLevel, "log_format": d.LogFormat,
		"shutdown_timeout": d.ShutdownTimeout.String(), "drain_delay": d.DrainDelay.String(), "reload_debounce": d.ReloadDebounce.String(),
		"reload_poll_interval": d.ReloadPollInterval.String(), "pprof": "false",
		"etcd_endpoints": "", "etcd_prefix": d.EtcdPrefix, "node_id": "", "etcd_ca_file": "", "etcd_cert_file": "",
		"etcd_key_file": "", "etcd_username": "", "etcd_password_file": "", "etcd_cache_file": "",
		"etcd_dial_timeout": d.EtcdDialTimeout.String(), "etcd_follow_interval": d.EtcdFollowInterval.String(),
		"envoy_admin": d.EnvoyAdmin, "signals_interval": d.SignalsInterval.String(),
		"console_interval":         d.ConsoleInterval.String(),
		"rollout_publish_interval": d.RolloutPublishInterval.String(), "rollout_leader_ttl": d.RolloutLeaderTTL.String(),
	}
	for _, k := range Keys() {
		// gc_percent has no default here: whether it was set at all
		// decides between it, GOGC and DefaultGCPercent.
		if k != "gc_percent" {
			v.SetDefault(k, defaults[k])
		}
	}

	if path != "" {
		data, err := fsutil.ReadCapped(path, split.MaxConfigBytes)
		if err != nil {
			return Settings{}, fmt.Errorf("config: %w", err)
		}
		// The scalars are checked on their own first: viper would happily
		// return a map's string form for grpc_addr.
		if _, err := FileSettings(data); err != nil {
			return Settings{}, fmt.Errorf("%s: %w", path, err)
		}
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return Settings{}, fmt.Errorf("%s: %w", path, err)
		}
	}

	// Environment values are merged over the file's layer rather than
	// bound with BindEnv, so that the lookup is injectable and an empty
	// value (SPLITTER_REASON_HEADER= to disable) counts as set. Flags still
	// win because viper consults changed flags before the file layer.
	overlay := map[string]any{}
	for _, k := range Keys() {
		if val, ok := env(EnvName(k)); ok {
			overlay[k] = val
		}
	}
	if len(overlay) > 0 {
		if err := v.MergeConfigMap(overlay); err != nil {
			return Settings{}, fmt.Errorf("environment: %w", err)
		}
	}
	for _, k := range Keys() {
		if f := fs.Lookup(flagName(k)); f != nil {
			if err := v.BindPFlag(k, f); err != nil {
				return Settings{}, fmt.Errorf("%s: %w", k, err)
			}
		}
	}

	var errs []error
	dur := func(key string) time.Duration {
		s := v.GetString(key)
		d, err := time.ParseDuration(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration such as 10s or 200ms", key, s))
			return 0
		}
		return d
	}
	s := Settings{
		ConfigPath:     path,
		GRPCAddr:       v.GetString("grpc_addr"),
		AdminAddr:      v.GetString("admin_addr"),
		AdminToken:     v.GetString("admin_token"),
		AdminTokenFile: v.GetString("admin_token_file"),
		// Header names are case-insensitive; Envoy carries them lower-cased.
		RouteHeader:        strings.ToLower(v.GetString("route_header")),
		ReasonHeader:       strings.ToLower(v.GetString("reason_header")),
		MirrorHeader:       strings.ToLower(v.GetString("mirror_header")),
		StateFile:          v.GetString("state_file"),
		LogLevel:           strings.ToLower(v.GetString("log_level")),
		LogFormat:          strings.ToLower(v.GetString("log_format")),
		ShutdownTimeout:    dur("shutdown_timeout"),
		DrainDelay:         dur("drain_delay"),
		ReloadDebounce:     dur("reload_debounce"),
		ReloadPollInterval: dur("reload_poll_interval"),
		EtcdEndpoints:      splitList(v.GetString("etcd_endpoints")),
		EtcdPrefix:         v.GetString("etcd_prefix"),
		NodeID:             v.GetString("node_id"),
		EtcdCAFile:         v.GetString("etcd_ca_file"),
		EtcdCertFile:       v.GetString("etcd_cert_file"),
		EtcdKeyFile:        v.GetString("etcd_key_file"),
		EtcdUsername:       v.GetString("etcd_username"),
		EtcdPasswordFile:   v.GetString("etcd_password_file"),
		EtcdCacheFile:      v.GetString("etcd_cache_file"),
		EtcdDialTimeout:    dur("etcd_dial_timeout"),
		EtcdFollowInterval: dur("etcd_follow_interval"),
		EnvoyAdmin:         v.GetString("envoy_admin"),
		SignalsInterval:    dur("signals_interval"),
		ConsoleInterval:    dur("console_interval"),

		RolloutPublishInterval: dur("rollout_publish_interval"),
		RolloutLeaderTTL:       dur("rollout_leader_ttl"),
	}
	if s.FleetMode() && s.NodeID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			errs = append(errs, fmt.Errorf("node_id: not set and the host name is unknown (%v); set --node-id", err))
		}
		s.NodeID = host
	}
	var err error
	if s.GCPercent, s.GCPercentSource, err = gcPercent(v.GetString("gc_percent"), env); err != nil {
		errs = append(errs, fmt.Errorf("gc_percent: %w", err))
	}
	if s.Pprof, err = strconv.ParseBool(v.GetString("pprof")); err != nil {
		errs = append(errs, fmt.Errorf("pprof: %q is not true or false", v.GetString("pprof")))
	}
	if len(errs) > 0 {
		return Settings{}, errors.Join(errs...)
	}
	if err := s.Validate(); err != nil {
		return Settings{}, err
	}
	if s.AdminTokenFile != "" {
		if _, err := readToken(s.AdminTokenFile); err != nil {
			return Settings{}, fmt.Errorf("admin_token_file: %w", err)
		}
	}
	return s, nil
}

// Validate checks every setting and reports all problems, each naming its
// key.
func (s Settings) Validate() error {
	var errs []error
	add := func(key string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	add("grpc_addr", checkAddr(s.GRPCAddr))
	add("admin_addr", checkAddr(s.AdminAddr))
	if h, err := adapter.NewHeaders(s.RouteHeader, s.ReasonHeader); err != nil {
		errs = append(errs, err)
	} else if _, err := h.WithMirror(s.MirrorHeader); err != nil {
		errs = append(errs, err)
	}
	if s.AdminToken != "" && s.AdminTokenFile != "" {
		add("admin_token", errors.New("set either admin_token or admin_token_file, not both"))
	}
	if strings.TrimSpace(s.AdminToken) != s.AdminToken {
		add("admin_token", errors.New("has leading or trailing white space"))
	}
	switch s.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log_level", fmt.Errorf("%q is not one of debug, info, warn, error", s.LogLevel))
	}
	switch s.LogFormat {
	case "text", "json":
	default:
		add("log_format", fmt.Errorf("%q is not one of text, json", s.LogFormat))
	}
	for _, d := range []struct {
		key string
		val time.Duration
	}{
		{"shutdown_timeout", s.ShutdownTimeout},
		{"reload_debounce", s.ReloadDebounce},
		{"reload_poll_interval", s.ReloadPollInterval},
	} {
		if d.val <= 0 {
			add(d.key, fmt.Errorf("%s must be positive", d.val))
		}
	}
	if s.DrainDelay < 0 {
		add("drain_delay", fmt.Errorf("%s must not be negative", s.DrainDelay))
	}
	errs = append(errs, s.validateFleet()...)
	if s.EnvoyAdmin != "" {
		add("envoy_admin", checkAddr(s.EnvoyAdmin))
	}
	if s.SignalsInterval < 10*time.Millisecond || s.SignalsInterval > 10*time.Second {
		add("signals_interval", fmt.Errorf("%s must be between 10ms and 10s", s.SignalsInterval))
	}
	if s.ConsoleInterval < 100*time.Millisecond || s.ConsoleInterval > time.Minute {
		add("console_interval", fmt.Errorf("%s must be between 100ms and 1m", s.ConsoleInterval))
	}
	return errors.Join(errs...)
}

// validateFleet checks the etcd settings; they are only looked at when
// etcd_endpoints is set, except that they must not be set without it
// (a forgotten etcd_endpoints would silently run on the file).
func (s Settings) validateFleet() []error {
	var errs []error
	add := func(key string, err error) { errs = append(errs, fmt.Errorf("%s: %w", key, err)) }
	if !s.FleetMode() {
		for _, kv := range [][2]string{
			{"etcd_ca_file", s.EtcdCAFile}, {"etcd_cert_file", s.EtcdCertFile}, {"etcd_key_file", s.EtcdKeyFile},
			{"etcd_username", s.EtcdUsername}, {"etcd_password_file", s.EtcdPasswordFile}, {"etcd_cache_file", s.EtcdCacheFile},
		} {
			if kv[1] != "" {
				add(kv[0], errors.New("set without etcd_endpoints (fleet mode is off)"))
			}
		}
		return errs
	}
	for _, ep := range s.EtcdEndpoints {
		host := ep
		if scheme, rest, ok := strings.Cut(ep, "://"); ok {
			if scheme != "http" && scheme != "https" {
				add("etcd_endpoints", fmt.Errorf("%q: scheme must be http or https", ep))
				continue
			}
			host = rest
		}
		if err := checkAddr(strings.TrimSuffix(host, "/")); err != nil {
			add("etcd_endpoints", err)
		}
	}
	if !strings.HasPrefix(s.EtcdPrefix, "/") || !strings.HasSuffix(s.EtcdPrefix, "/") {
		add("etcd_prefix", fmt.Errorf("%q must start and end with / (such as /splitter/)", s.EtcdPrefix))
	}
	if s.NodeID == "" || strings.ContainsAny(s.NodeID, "/ \t\r\n") || len(s.NodeID) > 253 {
		add("node_id", fmt.Errorf("%q must be 1 to 253 characters without / or white space", s.NodeID))
	}
	if (s.EtcdCertFile == "") != (s.EtcdKeyFile == "") {
		add("etcd_cert_file", errors.New("etcd_cert_file and etcd_key_file go together"))
	}
	if (s.EtcdUsername == "") != (s.EtcdPasswordFile == "") {
		add("etcd_username", errors.New("etcd_username and etcd_password_file go together"))
	}
	if s.StateFile != "" {
		add("state_file", errors.New("not used with etcd_endpoints: overrides live in etcd (etcd_cache_file keeps a local copy)"))
	}
	if s.EtcdDialTimeout <= 0 {
		add("etcd_dial_timeout", fmt.Errorf("%s must be positive", s.EtcdDialTimeout))
	}
	if s.EtcdFollowInterval < 100*time.Millisecond || s.EtcdFollowInterval > 10*time.Second {
		add("etcd_follow_interval", fmt.Errorf("%s must be between 100ms and 10s", s.EtcdFollowInterval))
	}
	if s.RolloutPublishInterval < 10*time.Millisecond || s.RolloutPublishInterval > time.Minute {
		add("rollout_publish_interval", fmt.Errorf("%s must be between 10ms and 1m", s.RolloutPublishInterval))
	}
	if s.RolloutLeaderTTL < 2*time.Second || s.RolloutLeaderTTL > time.Minute || s.RolloutLeaderTTL%time.Second != 0 {
		add("rollout_leader_ttl", fmt.Errorf("%s must be whole seconds between 2s and 1m (an etcd lease)", s.RolloutLeaderTTL))
	}
	return errs
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// EtcdPassword reads etcd_password_file (trimmed, like a token file).
func (s Settings) EtcdPassword() (string, error) {
	if s.EtcdPasswordFile == "" {
		return "", nil
	}
	pw, err := readToken(s.EtcdPasswordFile)
	if err != nil {
		return "", fmt.Errorf("etcd_password_file: %w", err)
	}
	return pw, nil
}

// gcPercent resolves the GC target from the gc_percent setting (empty:
// not set), then GOGC, then the default.
func gcPercent(setting string, env func(string) (string, bool)) (int, string, error) {
	setting = strings.TrimSpace(setting)
	if setting != "" {
		if strings.EqualFold(setting, "off") {
			return -1, GCSourceSetting, nil
		}
		n, err := strconv.Atoi(setting)
		if err != nil || n <= 0 {
			return 0, "", fmt.Errorf(`%q is not a positive integer or "off"`, setting)
		}
		return n, GCSourceSetting, nil
	}
	if g, ok := env("GOGC"); ok && g != "" {
		return runtimeGOGC(g), GCSourceGOGC, nil
	}
	return DefaultGCPercent, GCSourceDefault, nil
}

// runtimeGOGC reads GOGC the way the Go runtime does ("off", an integer,
// anything else 100), so that re-applying it changes nothing.
func runtimeGOGC(s string) int {
	if s == "off" {
		return -1
	}
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		return int(n)
	}
	return 100
}

func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}

// FileSettings returns the process keys present at the top level of a
// configuration file, as strings. It fails when one of them is not a
// scalar. The reloader compares these across reloads to warn that a
// changed process setting needs a restart.
func FileSettings(data []byte) (map[string]string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	out := map[string]string{}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return out, nil // empty: the routing parser reports it
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return out, nil // not a mapping: the routing parser reports it
	}
	keys := map[string]bool{}
	for _, k := range Keys() {
		keys[k] = true
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, val := root.Content[i], root.Content[i+1]
		if !keys[k.Value] {
			continue
		}
		if val.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s: must be a scalar (line %d)", k.Value, val.Line)
		}
		if val.Tag == "!!null" {
			out[k.Value] = ""
			continue
		}
		out[k.Value] = val.Value
	}
	return out, nil
}

// maxTokenBytes bounds a token file; a token is a short secret, anything
// bigger is a mistake (a wrong path).
const maxTokenBytes = 4096

func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxTokenBytes {
		return "", fmt.Errorf("%s: more than %d bytes", path, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("%s: empty", path)
	}
	return tok, nil
}

// TokenSource returns the function the admin API calls on every request to
// get the current token. With admin_token_file the file is re-read each
// time, so rotating the Secret takes effect without a restart; if a later
// read fails (file briefly missing during a swap, or emptied), the last good
// token stays in force rather than disabling authentication, and the
// failure is logged. The file must be readable now.
func (s Settings) TokenSource(logger *slog.Logger) (func() string, error) {
	if s.AdminTokenFile == "" {
		tok := s.AdminToken
		return func() string { return tok }, nil
	}
	first, err := readToken(s.AdminTokenFile)
	if err != nil {
		return nil, fmt.Errorf("admin_token_file: %w", err)
	}
	var (
		mu   sync.Mutex
		last = first
	)
	path := s.AdminTokenFile
	return func() string {
		tok, err := readToken(path)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			logger.Warn("admin token file unreadable; keeping the previous token", "admin_token_file", path, "error", err)
			return last
		}
		last = tok
		return tok
	}, nil
}

// NewLogger builds the process logger described by LogLevel and LogFormat.
func (s Settings) NewLogger(w io.Writer) *slog.Logger {
	var level slog.Level
	switch s.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if s.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Headers returns the route, reason and mirror header names, lower-cased
// (the settings were validated by Load).
func (s Settings) Headers() adapter.Headers {
	h, err := adapter.NewHeaders(s.RouteHeader, s.ReasonHeader)
	if err != nil {
		return adapter.DefaultHeaders()
	}
	if s.MirrorHeader == "" {
		return h
	}
	if hm, err := h.WithMirror(s.MirrorHeader); err == nil {
		return hm
	}
	return h
}

// FileHeaders returns the route, reason and mirror headers a
// configuration file sets for itself (route_header, reason_header,
// mirror_header), or the defaults: what `splitter validate` checks
// experiments against, where no flags or environment apply.
func FileHeaders(data []byte) (adapter.Headers, error) {
	d := Defaults()
	route, reason, mirror := d.RouteHeader, d.ReasonHeader, d.MirrorHeader
	if fs, err := FileSettings(data); err == nil {
		if v, ok := fs["route_header"]; ok {
			route = v
		}
		if v, ok := fs["reason_header"]; ok {
			reason = v
		}
		if v, ok := fs["mirror_header"]; ok {
			mirror = v
		}
	}
	h, err := adapter.NewHeaders(route, reason)
	if err != nil {
		return h, err
	}
	return h.WithMirror(mirror)
}
