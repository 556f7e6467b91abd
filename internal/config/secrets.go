package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/trafficsplit/splitter/internal/fsutil"
	"github.com/trafficsplit/splitter/split"
)

// MaxSecretBytes caps a webhook secret file.
const MaxSecretBytes = 64 << 10

// CheckFiles checks the files cfg names, which the engine cannot (it does
// no I/O): every webhook secret_file must be readable and hold a key. A
// problem is a *split.FieldError naming the place and its line, so that a
// configuration with a missing secret is refused like any other bad one,
// and the last good one keeps serving.
func CheckFiles(cfg *split.Config) error {
	var errs []error
	for _, f := range cfg.SecretFiles() {
		if _, err := ReadSecret(f.File); err != nil {
			errs = append(errs, &split.FieldError{Path: f.Path, Reason: err.Error(), Line: f.Line})
		}
	}
	return errors.Join(errs...)
}

// ReadSecret reads a webhook's secret file: its content without the
// whitespace around it (a trailing newline is not part of the key). An
// empty key is an error.
func ReadSecret(path string) ([]byte, error) {
	data, err := fsutil.ReadCapped(path, MaxSecretBytes)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("secret file %s does not exist", path)
		}
		return nil, fmt.Errorf("secret file: %w", err)
	}
	key := strings.TrimSpace(string(data))
	if key == "" {
		return nil, fmt.Errorf("secret file %s is empty: a signing key is needed", path)
	}
	return []byte(key), nil
}
