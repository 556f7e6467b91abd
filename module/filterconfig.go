package module

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/trafficsplit/splitter/internal/fsutil"
	"github.com/trafficsplit/splitter/internal/settings"
	"github.com/trafficsplit/splitter/split"
)

// FilterConfig is what one filter_config says: the process settings (the
// same keys as the sidecar's, read by settings.Load) plus the module's own.
type FilterConfig struct {
	Settings settings.Settings
	// ReadyFile, when set, receives {"admin_addr": "host:port"} once the
	// admin API listens (tests and scripts give admin_addr port 0).
	ReadyFile string
}

// readyFileKey is the one key filter_config has beyond the settings.
const readyFileKey = "ready_file"

// unusedKeys are settings the module has no use for: there is no gRPC
// server to address, drain or stop. Naming one is an error rather than
// silently ignored.
func unusedKeys() map[string]string {
	return map[string]string{
		"grpc_addr":        "the module answers inside Envoy, not over gRPC",
		"drain_delay":      "the module decides for as long as Envoy runs",
		"shutdown_timeout": "the module stops with Envoy",
	}
}

// envoyAdminKey is optional in the module: without it (the default, unlike
// the sidecar's) rollouts read the module's own response counters; with
// it, Envoy's cluster statistics, which also count the requests Envoy
// mirrors (a rollout's shadow step needs them: the module never sees the
// answers to mirrored requests).
const envoyAdminKey = "envoy_admin"

// ParseFilterConfig reads filter_config: a JSON object whose keys are the
// settings keys ("config", "admin_addr", "etcd_endpoints", "route_header",
// ...) plus "ready_file". Values may be strings, numbers, booleans or, for
// lists such as etcd_endpoints, arrays of strings. An unknown key, a key the
// module does not use or an invalid value is an error naming it. Nothing
// else is read: not the process's SPLITTER_* variables (Envoy's environment
// belongs to Envoy), except GOGC, which the Go runtime reads anyway. An
// empty filter_config means every default (the built-in configuration).
func ParseFilterConfig(raw []byte) (FilterConfig, error) {
	return parseFilterConfig(raw, true)
}

// GivenSettings is what filter_config says by itself: ParseFilterConfig
// without the configuration file's top-level scalars. Two filter
// configurations are the same when their GivenSettings are equal (however
// the JSON is written), whatever the file says now: the file is read
// again by every parse, and an edit of one of its scalars (log_level, say)
// must not make an unchanged filter_config look different.
func GivenSettings(raw []byte) (FilterConfig, error) {
	return parseFilterConfig(raw, false)
}

// parseFilterConfig is ParseFilterConfig; withFile false leaves the
// configuration file's scalars out (GivenSettings).
func parseFilterConfig(raw []byte, withFile bool) (FilterConfig, error) {
	values := map[string]string{}
	if len(bytes.TrimSpace(raw)) > 0 {
		var err error
		if values, err = jsonStrings(raw); err != nil {
			return FilterConfig{}, fmt.Errorf("filter_config: %w", err)
		}
	}
	known := map[string]bool{"config": true, readyFileKey: true}
	for _, k := range settings.Keys() {
		known[k] = true
	}
	unused := unusedKeys()
	var errs []error
	for _, k := range sortedKeys(values) {
		switch {
		case unused[k] != "":
			errs = append(errs, fmt.Errorf("filter_config: %s: not used by the module (%s)", k, unused[k]))
		case !known[k]:
			errs = append(errs, fmt.Errorf("filter_config: %s: unknown key (known: config, %s, %s)",
				k, strings.Join(moduleKeys(), ", "), readyFileKey))
		}
	}
	if len(errs) > 0 {
		return FilterConfig{}, errors.Join(errs...)
	}
	// The configuration file's top-level scalars are settings too (below
	// filter_config's), but only a file that can be read and parsed has
	// any: a missing or broken one must not reject the filter (the module
	// then starts on no configuration, and the admin API says why).
	path, hasPath := values["config"]
	usable := withFile && hasPath && path != "" && fileSettingsReadable(path)
	env := func(name string) (string, bool) {
		if name == "GOGC" {
			return os.LookupEnv(name)
		}
		k, ok := strings.CutPrefix(name, settings.EnvPrefix)
		if !ok || (k == "CONFIG" && !usable) {
			return "", false
		}
		v, ok := values[strings.ToLower(k)]
		return v, ok
	}
	s, err := settings.Load(pflag.NewFlagSet("filter_config", pflag.ContinueOnError), env)
	if err != nil {
		return FilterConfig{}, fmt.Errorf("filter_config: %w", err)
	}
	s.ConfigPath = path
	if _, set := values[envoyAdminKey]; !set && !(usable && fileSets(path, envoyAdminKey)) {
		s.EnvoyAdmin = ""
	}
	return FilterConfig{Settings: s, ReadyFile: values[readyFileKey]}, nil
}

// fileSets reports whether the configuration file at path sets the
// top-level settings key.
func fileSets(path, key string) bool {
	data, err := fsutil.ReadCapped(path, split.MaxConfigBytes)
	if err != nil {
		return false
	}
	fs, err := settings.FileSettings(data)
	_, ok := fs[key]
	return err == nil && ok
}

// fileSettingsReadable reports whether path can be read and its settings
// scalars parsed.
func fileSettingsReadable(path string) bool {
	data, err := fsutil.ReadCapped(path, split.MaxConfigBytes)
	if err != nil {
		return false
	}
	_, err = settings.FileSettings(data)
	return err == nil
}

// moduleKeys are the settings keys filter_config accepts.
func moduleKeys() []string {
	unused := unusedKeys()
	return slices.DeleteFunc(settings.Keys(), func(k string) bool { return unused[k] != "" })
}

// jsonStrings decodes a JSON object into key -> the value as the settings
// read it: strings as they are, numbers and booleans as written, null as
// "", an array of strings joined with commas.
func jsonStrings(raw []byte) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if obj == nil {
		return nil, errors.New("not a JSON object: null")
	}
	if dec.More() {
		return nil, errors.New("not one JSON object: data after it")
	}
	out := make(map[string]string, len(obj))
	var errs []error
	for _, k := range sortedKeys(obj) {
		switch v := obj[k].(type) {
		case string:
			out[k] = v
		case json.Number:
			out[k] = v.String()
		case bool:
			out[k] = fmt.Sprint(v)
		case nil:
			out[k] = ""
		case []any:
			parts := make([]string, 0, len(v))
			for i, x := range v {
				s, ok := x.(string)
				if !ok {
					errs = append(errs, fmt.Errorf("%s[%d]: %v is not a string", k, i, x))
					continue
				}
				parts = append(parts, s)
			}
			out[k] = strings.Join(parts, ",")
		default:
			errs = append(errs, fmt.Errorf("%s: must be a string, number, boolean or list of strings", k))
		}
	}
	return out, errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
