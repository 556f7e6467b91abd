// Package config reads splitter's routing configuration (services and
// experiments) from a file: capped, hashed and parsed strictly through
// split.Parse, with the process settings that may share the file (see
// package settings) accepted and ignored.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/trafficsplit/splitter/internal/fsutil"
	"github.com/trafficsplit/splitter/internal/settings"
	"github.com/trafficsplit/splitter/split"
)

// Loaded is one read of a configuration file.
type Loaded struct {
	Path   string
	Bytes  []byte
	SHA256 string // hex
	Config *split.Config
}

// Parse parses configuration bytes: the routing part strictly, the process
// settings' keys accepted; the files the configuration names (webhook
// secrets) must be readable and not empty (CheckFiles).
func Parse(data []byte) (*split.Config, error) {
	cfg, err := split.Parse(data, split.ParseOptions{ExtraKeys: settings.Keys()})
	if err != nil {
		return nil, err
	}
	if err := CheckFiles(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ParseDocument is Parse without CheckFiles: for a document checked where
// it is written, not where it is read (`config push` validates it on the
// operator's machine; every replica checks the files it names when it
// applies it).
func ParseDocument(data []byte) (*split.Config, error) {
	return split.Parse(data, split.ParseOptions{ExtraKeys: settings.Keys()})
}

// SHA256 returns the hex sha256 of data, the identity of a configuration.
func SHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// ReadFile reads (at most split.MaxConfigBytes), hashes and parses path;
// it does not compile. When the bytes were read but do not parse, the
// returned Loaded has no Config and the error names the file.
func ReadFile(path string) (*Loaded, error) {
	data, err := fsutil.ReadCapped(path, split.MaxConfigBytes)
	if err != nil {
		return nil, err
	}
	l := &Loaded{Path: path, Bytes: data, SHA256: SHA256(data)}
	cfg, err := Parse(data)
	if err != nil {
		return l, fmt.Errorf("%s: %w", path, err)
	}
	l.Config = cfg
	return l, nil
}
