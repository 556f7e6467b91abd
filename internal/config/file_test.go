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

// One size limit for a configuration document, wherever it comes from:
// a file at the limit is read and parsed, one byte more is refused with
// the limit named.
func TestReadFileSizeLimit(t *testing.T) {
	body := "services:\n  - name: api\n    weights: {v1: 80, v2: 20}\n"
	pad := func(n int) string {
		var b strings.Builder
		b.WriteString(body)
		for b.Len() < n {
			line := "# padding padding padding padding padding padding padding padding\n"
			if rest := n - b.Len(); rest < len(line) {
				line = "#" + strings.Repeat("x", rest-2) + "\n"
				if rest == 1 {
					line = "\n"
				}
			}
			b.WriteString(line)
		}
		return b.String()
	}
	dir := t.TempDir()
	for _, c := range []struct {
		name    string
		size    int
		wantErr string
	}{
		{"at the limit", split.MaxConfigBytes, ""},
		{"one byte over", split.MaxConfigBytes + 1, fmt.Sprintf("more than the %d-byte limit", split.MaxConfigBytes)},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := pad(c.size)
			if len(data) != c.size {
				t.Fatalf("built %d bytes, want %d", len(data), c.size)
			}
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := config.ReadFile(path)
			if c.wantErr == "" {
				if err != nil || l.Config == nil {
					t.Fatalf("ReadFile: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("ReadFile: %v, want an error naming %s and %q", err, path, c.wantErr)
			}
			if _, err := config.Parse([]byte(data)); err == nil || !strings.Contains(err.Error(), fmt.Sprint(split.MaxConfigBytes)) {
				t.Fatalf("Parse of the same bytes: %v, want the same limit", err)
			}
		})
	}
}
