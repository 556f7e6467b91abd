package fleet

import (
	"slices"
	"strings"
	"testing"
)

// Records a newer build wrote, with fields this one does not know, are
// read (the fields are named, for the log), while a field this build
// knows is still checked: forward compatibility for the next upgrade.
func TestRecordsToleratePlusFields(t *testing.T) {
	type decoded struct {
		unknown []string
		err     error
	}
	decode := map[string]func([]byte) decoded{
		"override": func(b []byte) decoded { r, err := decodeOverride(b); return decoded{r.unknown, err} },
		"mirror":   func(b []byte) decoded { r, err := decodeMirror(b); return decoded{r.unknown, err} },
		"route":    func(b []byte) decoded { r, err := decodeRoute(b); return decoded{r.unknown, err} },
		"mirror route": func(b []byte) decoded {
			r, err := decodeMirrorRoute(b)
			return decoded{r.unknown, err}
		},
	}
	for _, tc := range []struct {
		kind, newer, malformed, err string
	}{
		{kind: "override",
			newer:     `{"weights":{"v1":60,"v2":40},"against":{"v1":80,"v2":20},"set_at":"2026-01-02T03:04:05Z","owner":"o","zone":"eu","expires_at":"2027-01-01T00:00:00Z"}`,
			malformed: `{"weights":{"v1":60,"v2":40},"zone":"eu","set_at":"soon"}`, err: "cannot parse"},
		{kind: "mirror",
			newer:     `{"mirror":{"version":"v2","percent":10},"against":null,"set_at":"2026-01-02T03:04:05Z","zone":"eu","expires_at":"2027-01-01T00:00:00Z"}`,
			malformed: `{"mirror":{"version":"v2","percent":"ten"},"zone":"eu"}`, err: "percent"},
		{kind: "route",
			newer:     `{"when":[{"header":"x-canary","exact":"1"}],"version":"v2","zone":"eu","expires_at":"2027-01-01T00:00:00Z"}`,
			malformed: `{"when":"x-canary","version":"v2","zone":"eu"}`, err: "cannot unmarshal"},
		{kind: "mirror route",
			newer:     `{"when":[{"header":"x-canary","exact":"1"}],"version":"v2","percent":50,"zone":"eu","expires_at":"2027-01-01T00:00:00Z"}`,
			malformed: `{"when":[{"header":"x-canary","exact":"1"}],"version":"v2","percent":500,"zone":"eu"}`, err: "percent"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			d := decode[tc.kind]([]byte(tc.newer))
			if d.err != nil {
				t.Fatalf("a newer build's record refused: %v", d.err)
			}
			if want := []string{"expires_at", "zone"}; !slices.Equal(d.unknown, want) {
				t.Fatalf("unknown fields %q, want %q", d.unknown, want)
			}
			d = decode[tc.kind]([]byte(tc.malformed))
			if d.err == nil || !strings.Contains(d.err.Error(), tc.err) {
				t.Fatalf("a malformed known field: err %v, want one containing %q", d.err, tc.err)
			}
		})
	}
}
