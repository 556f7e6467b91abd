package reliability

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/split"
)

// configCase is one bad configuration file. Exactly one of fixture, gen
// and prepare says what the file becomes.
type configCase struct {
	name    string
	fixture string              // under testdata/config
	gen     func([]byte) []byte // from the base configuration
	prepare func(t *testing.T, path string)
	// want are substrings of the error: the place (path, key or line) and
	// the reason.
	want []string
	// bug marks a case that documents a defect in another package; the
	// report names it. The case fails until that package is fixed.
	bug string
}

func configCases() []configCase {
	return []configCase{
		{name: "empty file", fixture: "empty.yaml", want: []string{"file is empty"}},
		{name: "comments only", fixture: "comments-only.yaml", want: []string{"no services", "empty"}},
		{name: "null document", fixture: "null.yaml", want: []string{"no services", "null", "line 1"}},
		{name: "syntax error", fixture: "syntax-error.yaml", want: []string{"invalid YAML", "line 2"}},
		{name: "tab indentation", fixture: "tab-indent.yaml", want: []string{"invalid YAML", "line 2"}},
		{
			name: "invalid UTF-8", fixture: "invalid-utf8.yaml", want: []string{"UTF-8", "line 2"},
			bug: "split.Parse reports yaml's \"invalid leading UTF-8 octet\" with no line or offset",
		},
		{name: "root is a list", fixture: "root-list.yaml", want: []string{"must be a mapping", "not a list", "line 1"}},
		{name: "root is a scalar", fixture: "root-scalar.yaml", want: []string{"must be a mapping", `"just a string"`, "line 1"}},
		{name: "multi-document", fixture: "multi-document.yaml", want: []string{"more than one YAML document", "line 19"}},
		{name: "alias bomb", fixture: "alias-bomb.yaml", want: []string{"anchors (&a)", "aliases (*a)", "line 1"}},
		{name: "over 1 MiB", gen: oversized, want: []string{fmt.Sprintf("more than the %d-byte limit", split.MaxConfigBytes)}},
		{name: "deeply nested", fixture: "deeply-nested.yaml", want: []string{"services[0].hosts[0]", "must be a string", "line 4"}},
		{name: "unknown key", fixture: "unknown-key.yaml", want: []string{"services[0].stickey", "unknown key", `did you mean "sticky"`, "line 6"}},
		{name: "case-only duplicate key", fixture: "case-duplicate-key.yaml", want: []string{"services[0].Weights", "differs only in case", "line 6"}},
		{name: "exact duplicate key", fixture: "exact-duplicate-key.yaml", want: []string{"services[0].weights", "duplicate key", "line 6"}},
		{name: "weight -1", fixture: "weight-negative.yaml", want: []string{"services[0].weights.v2", "negative", "-1"}},
		{name: "weight 101", fixture: "weight-101.yaml", want: []string{"services[0].weights.v1", "between 0 and 100", "101"}},
		{name: "weight 12.345", fixture: "weight-three-decimals.yaml", want: []string{"services[0].weights.v2", "more than two decimals", "12.345"}},
		{name: `weight "50%"`, fixture: "weight-percent-string.yaml", want: []string{"services[0].weights.v2", `not the string "50%"`}},
		{name: `weight "30" string`, fixture: "weight-numeric-string.yaml", want: []string{"services[0].weights.v2", `not the string "30"`}},
		{name: "weight .nan", fixture: "weight-nan.yaml", want: []string{"services[0].weights.v2", "NaN", ".nan"}},
		{name: "weight .inf", fixture: "weight-inf.yaml", want: []string{"services[0].weights.v2", "infinities", ".inf"}},
		{name: "weight 1e20", fixture: "weight-1e20.yaml", want: []string{"services[0].weights.v2", "plain decimal", "1e20"}},
		{name: "weight 356 (uint8 wrap)", fixture: "weight-356-uint8-wrap.yaml", want: []string{"services[0].weights.v2", "between 0 and 100", "356"}},
		{name: "weight 4294967346 (int32 wrap)", fixture: "weight-int32-wrap.yaml", want: []string{"services[0].weights.v2", "between 0 and 100", "4294967346"}},
		{name: "weights sum to 105", fixture: "weights-sum-not-100.yaml", want: []string{"services[0].weights", "sum to 105, not 100"}},
		{name: "duplicate version in different case", fixture: "duplicate-version-case.yaml", want: []string{"services[0].weights.V1", "differs only in case"}},
		{name: "rule to unknown version", fixture: "rule-unknown-version.yaml", want: []string{"services[0].rules[0].version", `unknown version "v9"`}},
		{name: "stable unknown", fixture: "stable-unknown.yaml", want: []string{"services[0].stable", `unknown version "v7"`}},
		{name: "bad regex", fixture: "bad-regex.yaml", want: []string{"services[0].rules[0].when[0].regex", "invalid regular expression"}},
		{name: "empty header name", fixture: "empty-header-name.yaml", want: []string{"services[0].rules[0].when[0].header", "header name is empty"}},
		{name: "illegal header characters", fixture: "illegal-header-chars.yaml", want: []string{"services[0].rules[0].when[0].header", "not allowed in HTTP header names"}},
		{name: "two * services", fixture: "two-star-services.yaml", want: []string{"services[1].hosts[0]", `second service on "*"`}},
		{name: "duplicate service names", fixture: "duplicate-service-names.yaml", want: []string{"services[1].name", `duplicate service name "api"`}},
		{name: "experiment variants sum to 90", fixture: "experiment-variants-sum.yaml", want: []string{"experiments[0].variants", "sum to 90, not 100"}},
		{name: "too many rules", gen: tooManyRules, want: []string{"services[0].rules", "too many rules (1001, at most 1000)"}},
		{name: "file removed", prepare: func(t *testing.T, path string) { remove(t, path) }, want: []string{"config.yaml", "no such file"}},
		{name: "directory instead of file", prepare: func(t *testing.T, path string) {
			remove(t, path)
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"config.yaml", "is a directory"}},
		{name: "symlink loop", prepare: func(t *testing.T, path string) {
			remove(t, path)
			if err := os.Symlink(filepath.Base(path), path); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"config.yaml", "too many levels of symbolic links"}},
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// oversized is the base configuration padded with comments past the cap.
func oversized(base []byte) []byte {
	var b bytes.Buffer
	b.Write(base)
	line := "# " + strings.Repeat("x", 77) + "\n"
	for b.Len() <= split.MaxConfigBytes {
		b.WriteString(line)
	}
	return b.Bytes()
}

// tooManyRules gives the first service one rule more than the cap.
func tooManyRules(base []byte) []byte {
	var rules strings.Builder
	rules.WriteString("    rules:\n")
	for i := range 1001 {
		fmt.Fprintf(&rules, "      - {name: r%d, when: [{header: x-r%d, present: true}], version: v2}\n", i, i)
	}
	s := string(base)
	start := strings.Index(s, "    rules:\n")
	end := strings.Index(s, "  - name: web")
	return []byte(s[:start] + rules.String() + s[end:])
}

func (c configCase) content(t *testing.T, base []byte) []byte {
	t.Helper()
	if c.gen != nil {
		return c.gen(base)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "config", c.fixture))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBadConfigFile rewrites the served file with each bad input and
// reloads it through the watcher's path: the error names the place and the
// reason, and nothing that is served moves.
func TestBadConfigFile(t *testing.T) {
	base := baseConfig(t)
	st := startStack(t, base, nil)
	before := st.serving(t)

	for _, tc := range configCases() {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prepare != nil {
				tc.prepare(t, st.path)
				t.Cleanup(func() {
					os.RemoveAll(st.path)
					st.writeConfig(t, base)
				})
			} else {
				st.writeConfig(t, tc.content(t, base))
			}
			start := time.Now()
			r := st.reload(t)
			took := time.Since(start)
			if r.code != http.StatusUnprocessableEntity {
				t.Fatalf("POST /v1/reload = %d %s, want 422", r.code, r.body)
			}
			if m := missing(r.err.Error, append([]string{st.path}, tc.want...)...); len(m) > 0 {
				if tc.bug != "" {
					t.Errorf("KNOWN BUG (%s): error %q lacks %q", tc.bug, r.err.Error, m)
				} else {
					t.Errorf("error %q lacks %q", r.err.Error, m)
				}
			}
			// The error stays visible until a later reload succeeds.
			if got := st.lastReloadError(t); got != r.err.Error {
				t.Errorf("last_reload_error = %q, want %q", got, r.err.Error)
			}
			st.assertServing(t, before)
			t.Logf("rejected in %v: %s", took.Round(time.Microsecond), firstLine(r.err.Error))
		})
	}

	t.Run("UTF-8 BOM is accepted", func(t *testing.T) {
		bom := append([]byte("\xef\xbb\xbf"), base...)
		st.writeConfig(t, bom)
		if r := st.reload(t); r.code != http.StatusOK {
			t.Fatalf("POST /v1/reload = %d %s", r.code, r.body)
		}
		want := before
		sum := sha256.Sum256(bom)
		want.SHA256 = hex.EncodeToString(sum[:])
		want.Generation = before.Generation + 1
		st.assertServing(t, want)
		if got := st.lastReloadError(t); got != "" {
			t.Errorf("last_reload_error = %q after a good reload", got)
		}

		// Rewriting the same bytes (touch, chmod, an identical save) is
		// "unchanged": no new generation.
		st.writeConfig(t, bom)
		r := st.reload(t)
		var ans struct {
			Result string `json:"result"`
		}
		if err := json.Unmarshal(r.body, &ans); err != nil || r.code != http.StatusOK || ans.Result != "unchanged" {
			t.Errorf("reload of identical bytes = %d %s, want 200 unchanged", r.code, r.body)
		}
		st.assertServing(t, want)
	})
}

func (st *stack) lastReloadError(t *testing.T) string {
	t.Helper()
	r := st.do(t, request{method: http.MethodGet, path: "/v1/services"})
	var v struct {
		Config struct {
			LastReloadError *string `json:"last_reload_error"`
		} `json:"config"`
	}
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatal(err)
	}
	if v.Config.LastReloadError == nil {
		return ""
	}
	return *v.Config.LastReloadError
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
