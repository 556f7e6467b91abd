// Package config reads splitter's configuration: the YAML file (routing
// part, strictly, through split.Parse) and the process settings (viper:
// file, SPLITTER_* environment variables, flags).
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/trafficsplit/splitter/split"
)

// MaxFileBytes caps a configuration file; a bigger one is refused before
// it is parsed.
const MaxFileBytes = 1 << 20

// ProcessKeys are the top-level scalar keys that hold process settings
// rather than routing configuration.
func ProcessKeys() []string {
	return []string{
		"grpc_addr", "admin_addr", "admin_token", "admin_token_file",
		"route_header", "reason_header", "state_file",
		"log_level", "log_format", "shutdown_timeout", "reload_debounce", "reload_poll_interval",
		"gc_percent", "pprof",
	}
}

// Loaded is one read of a configuration file.
type Loaded struct {
	Path   string
	Bytes  []byte
	SHA256 string // hex
	Config *split.Config
}

// Parse parses file bytes: the routing part strictly, process keys accepted.
func Parse(data []byte) (*split.Config, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("file is larger than the %d-byte limit", MaxFileBytes)
	}
	return split.Parse(data, split.ParseOptions{ExtraKeys: ProcessKeys()})
}

// ReadFile reads, hashes and parses path (it does not compile).
func ReadFile(path string) (*Loaded, error) {
	data, err := readCapped(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	l := &Loaded{Path: path, Bytes: data, SHA256: hex.EncodeToString(sum[:])}
	cfg, err := Parse(data)
	if err != nil {
		return l, fmt.Errorf("%s: %w", path, err)
	}
	l.Config = cfg
	return l, nil
}

// readCapped reads at most MaxFileBytes of path; a bigger file is an error
// that says how big it is.
func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		// Only limit+1 bytes were read: ask the file system for the size.
		if fi, err := f.Stat(); err == nil {
			return nil, fmt.Errorf("%s: file is %d bytes, more than the %d-byte limit", path, fi.Size(), MaxFileBytes)
		}
		return nil, fmt.Errorf("%s: file is larger than the %d-byte limit", path, MaxFileBytes)
	}
	return data, nil
}
