package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/split"
)

// A webhook's secret file must exist and hold a key when the configuration
// is read; otherwise the configuration is refused with the place and line.
// ParseDocument (config push) leaves the files to the replicas.
func TestSecretFileChecked(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(good, []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte(" \n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := func(file string) []byte {
		return fmt.Appendf(nil, `services:
  - name: api
    weights: {v1: 100, v2: 0}
    rollout:
      webhooks:
        - name: chat
          type: event
          url: http://127.0.0.1:9/chat
          secret_file: %s
`, file)
	}
	for _, c := range []struct {
		name, file, want string
	}{
		{"readable", good, ""},
		{"missing", filepath.Join(dir, "nope"), "services[0].rollout.webhooks[0].secret_file: secret file " + filepath.Join(dir, "nope") + " does not exist (line 9)"},
		{"empty", empty, "services[0].rollout.webhooks[0].secret_file: secret file " + empty + " is empty: a signing key is needed (line 9)"},
		{"a directory", dir, "services[0].rollout.webhooks[0].secret_file: secret file: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse(doc(c.file))
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse: %v, want %q", err, c.want)
			}
			if fe := split.FieldErrors(err); len(fe) != 1 || fe[0].Line != 9 {
				t.Errorf("field errors %+v, want one at line 9", fe)
			}
			if _, err := config.ParseDocument(doc(c.file)); err != nil {
				t.Errorf("ParseDocument: %v, want the files left to the replicas", err)
			}
		})
	}
	key, err := config.ReadSecret(good)
	if err != nil || string(key) != "s3cret" {
		t.Fatalf("ReadSecret: %q, %v; want the key without the whitespace around it", key, err)
	}
}
