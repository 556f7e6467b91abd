package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

// seedConfig is the built-in configuration written as a file, with one
// process setting that validate must accept.
const seedConfig = "grpc_addr: 127.0.0.1:9001\n" + split.DefaultYAML

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNodeSeedSession(t *testing.T) {
	in := strings.Join([]string{
		`{"src":"c1","dest":"n1","body":{"type":"init","msg_id":1,"node_id":"n1","node_ids":["n1"]}}`,
		`{"src":"c1","dest":"n1","body":{"type":"route","msg_id":1},"traffic_split":{"v1":80,"v2":20}}`,
		`{"src":"c1","dest":"n1","body":{"type":"route","msg_id":2,"headers":{"x-beta":"true"}}}`,
		`{"src":"c1","dest":"n1","body":{"type":"update_canary","msg_id":3,"service":"api","percentage":50}}`,
		`{"src":"c1","dest":"n1","body":{"type":"assign_variant","msg_id":4,"user_id":"user-123"}}`,
		`this is not JSON`,
		`{"src":"c1","dest":"n1","body":{"type":"echo","msg_id":5}}`,
	}, "\n") + "\n"
	// The seed's reply bodies: each reply body must start with these fields.
	seed := []string{
		`{"type":"init_ok","in_reply_to":1}`,
		`{"type":"routed","in_reply_to":1,"version":"v1","reason":"weighted_routing"}`,
		`{"type":"routed","in_reply_to":2,"version":"v2","reason":"header_match"}`,
		`{"type":"canary_updated","in_reply_to":3,"service":"api","v1":50,"v2":50}`,
		`{"type":"variant_assigned","in_reply_to":4,"user_id":"user-123","variant":"A"}`,
		`{"type":"error","code":12,`,
		`{"type":"error","in_reply_to":5,"code":10,`,
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "built-in configuration", args: []string{"node"}},
		{name: "configuration file", args: []string{"node", "--config", writeFile(t, "split.yaml", seedConfig)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runSplitter(t, in, nil, tc.args...)
			if res.code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", res.code, res.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(res.stdout, "\n"), "\n")
			if len(lines) != len(seed) {
				t.Fatalf("got %d reply lines, want %d:\n%s", len(lines), len(seed), res.stdout)
			}
			for i, line := range lines {
				body := line
				var env struct {
					Src, Dest string
					Body      json.RawMessage
				}
				if err := json.Unmarshal([]byte(line), &env); err != nil {
					t.Fatalf("reply %d %q: %v", i, line, err)
				}
				if env.Body != nil {
					if env.Src != "n1" || env.Dest != "c1" {
						t.Errorf("reply %d %s: src/dest not swapped", i, line)
					}
					body = string(env.Body)
				}
				// A complete seed body may be followed by extra fields.
				prefix, complete := strings.CutSuffix(seed[i], "}")
				if !strings.HasPrefix(body, prefix) || (complete && body[len(prefix)] != '}' && body[len(prefix)] != ',') {
					t.Errorf("reply %d = %s\nwant a body starting with %s", i, line, seed[i])
				}
			}
			if strings.Contains(res.stderr, "{\"type\"") {
				t.Errorf("replies leaked to stderr:\n%s", res.stderr)
			}
		})
	}
}

func TestNodeBadConfig(t *testing.T) {
	bad := writeFile(t, "bad.yaml", "services:\n  - name: api\n    weights: {v1: 80, v2: 10}\n")
	res := runSplitter(t, "", nil, "node", "--config", bad)
	if res.code != 1 || !strings.Contains(res.stderr, bad) || res.stdout != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and an error naming %s", res.code, res.stdout, res.stderr, bad)
	}
}

func TestNodeConfigFromEnvironment(t *testing.T) {
	cfg := writeFile(t, "split.yaml", strings.Replace(seedConfig, "{v1: 80, v2: 20}", "{v1: 10, v2: 90}", 1))
	res := runSplitter(t, `{"type":"route","msg_id":1}`+"\n", []string{"SPLITTER_CONFIG=" + cfg}, "node")
	want := `{"type":"routed","in_reply_to":1,"version":"v2","reason":"weighted_routing","service":"api"}` + "\n"
	if res.code != 0 || res.stdout != want {
		t.Errorf("exit %d, stdout %q, want %q; stderr:\n%s", res.code, res.stdout, want, res.stderr)
	}
}

func TestValidate(t *testing.T) {
	good := writeFile(t, "good.yaml", seedConfig)
	bad := writeFile(t, "bad.yaml", `services:
  - name: api
    weights: {v1: 80, v2: 10}
    rules:
      - name: r
        when: [{header: x-beta, regex: "("}]
        version: v3
`)
	typo := writeFile(t, "typo.yaml", "services:\n  - name: api\n    wieghts: {v1: 100}\n")
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	goodLine := regexp.MustCompile(`^` + regexp.QuoteMeta(good) + `: ok \(1 service, 1 experiment, sha256 [0-9a-f]{64}\)$`)

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     func(string) bool
		stderrHas  []string
		stderrNone bool
	}{
		{
			name:   "good file",
			args:   []string{"validate", good},
			stdout: func(s string) bool { return goodLine.MatchString(strings.TrimSuffix(s, "\n")) },
		},
		{
			name:   "good file quiet",
			args:   []string{"validate", "--quiet", good},
			stdout: func(s string) bool { return s == "" },
		},
		{
			name:      "bad file: every problem, one per line, prefixed",
			args:      []string{"validate", good, bad},
			code:      1,
			stdout:    func(s string) bool { return goodLine.MatchString(strings.TrimSuffix(s, "\n")) },
			stderrHas: []string{bad + ": services[0].weights", bad + ": services[0].rules[0]", "1 of 2 files invalid"},
		},
		{
			name:      "unknown key",
			args:      []string{"validate", typo},
			code:      1,
			stdout:    func(s string) bool { return s == "" },
			stderrHas: []string{typo + ": services[0].wieghts"},
		},
		{
			name:      "missing file",
			args:      []string{"validate", missing},
			code:      1,
			stdout:    func(s string) bool { return s == "" },
			stderrHas: []string{missing + ": ", "no such file"},
		},
		{
			name:      "no file is a usage error",
			args:      []string{"validate"},
			code:      2,
			stdout:    func(s string) bool { return s == "" },
			stderrHas: []string{"needs at least one FILE"},
		},
		{
			name:      "unknown flag is a usage error",
			args:      []string{"validate", "--bogus", good},
			code:      2,
			stdout:    func(s string) bool { return s == "" },
			stderrHas: []string{"unknown flag: --bogus"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := runSplitter(t, "", nil, tc.args...)
			if res.code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", res.code, tc.code, res.stderr)
			}
			if !tc.stdout(res.stdout) {
				t.Errorf("unexpected stdout:\n%s", res.stdout)
			}
			for _, s := range tc.stderrHas {
				if !strings.Contains(res.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, res.stderr)
				}
			}
			// Every error line names the file it is about.
			if tc.code == 1 {
				for _, line := range strings.Split(strings.TrimSpace(res.stderr), "\n") {
					if !strings.HasPrefix(line, bad+": ") && !strings.HasPrefix(line, typo+": ") &&
						!strings.HasPrefix(line, missing+": ") && !strings.HasPrefix(line, "splitter: ") {
						t.Errorf("stderr line %q does not name its file", line)
					}
				}
			}
		})
	}
}

func TestExplain(t *testing.T) {
	cfg := writeFile(t, "split.yaml", seedConfig)
	anon := writeFile(t, "anon.yaml", `services:
  - name: api
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id, assign: {cookie: sid, secure: true}}
    mirror: {version: v2, percent: 10}
`)
	tests := []struct {
		name       string
		args       []string
		code       int
		stdoutHas  []string
		stderrHas  []string
		defaultCfg bool
	}{
		{
			name:       "header rule on the built-in configuration",
			args:       []string{"explain", "-H", "X-Beta: true"},
			stdoutHas:  []string{"service  api", "version  v2", "reason   header_match", "rule     beta-testers", "weights  v1 80%, v2 20%", "beta-testers  matched"},
			stderrHas:  []string{"built-in default configuration"},
			defaultCfg: true,
		},
		{
			name:      "sticky with variants",
			args:      []string{"explain", "--config", cfg, "--authority", "api.example.com", "-H", "x-user-id: user-123"},
			stdoutHas: []string{"version  v2", "reason   sticky_routing", "bucket   1301", "variants:", "default  A  (bucket 338, header x-variant)", "no match"},
		},
		{
			name: "a key would be assigned",
			args: []string{"explain", "--config", anon},
			stdoutHas: []string{"version  (the fresh key's bucket decides)", "reason   sticky_assigned",
				"assign   a fresh key, in the response's Set-Cookie: sid=<key>; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax; Secure",
				"v2 [0, 2000), v1 [2000, 10000)", "10 % of keys are also copied to v2"},
		},
		{
			name:      "a keyed request and its mirror bucket",
			args:      []string{"explain", "--config", anon, "-H", "x-user-id: user-9"},
			stdoutHas: []string{"reason   sticky_routing", "mirror   not mirrored (the service mirrors 10%)", `FNV-1a-32("api:mirror:user-9") % 10000 = mirror bucket 1739`},
		},
		{
			name:      "bad header flag",
			args:      []string{"explain", "-H", "no-colon"},
			code:      2,
			stderrHas: []string{`-H "no-colon": want 'name: value'`},
		},
		{
			name:      "bad cookie flag",
			args:      []string{"explain", "--cookie", "novalue"},
			code:      2,
			stderrHas: []string{`--cookie "novalue": want name=value`},
		},
		{
			name:      "extra argument",
			args:      []string{"explain", "api.example.com"},
			code:      2,
			stderrHas: []string{"takes no arguments"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := runSplitter(t, "", nil, tc.args...)
			if res.code != tc.code {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", res.code, tc.code, res.stdout, res.stderr)
			}
			// Column widths depend on the longest label: compare with
			// blanks collapsed.
			for _, s := range tc.stdoutHas {
				if !strings.Contains(collapse(res.stdout), collapse(s)) {
					t.Errorf("stdout lacks %q:\n%s", s, res.stdout)
				}
			}
			for _, s := range tc.stderrHas {
				if !strings.Contains(res.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, res.stderr)
				}
			}
			if !tc.defaultCfg && strings.Contains(res.stderr, "built-in") {
				t.Errorf("unexpected note on stderr:\n%s", res.stderr)
			}
		})
	}
}

var blanks = regexp.MustCompile(`[ \t]+`)

func collapse(s string) string { return blanks.ReplaceAllString(s, " ") }

func TestExplainJSON(t *testing.T) {
	res := runSplitter(t, "", nil, "explain", "--json", "--cookie", "a=b", "-H", "x-user-id: alice")
	if res.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
	}
	var ex struct {
		Service, Version, Reason string
		Bucket                   *int
		Weights                  map[string]float64
	}
	if err := json.Unmarshal([]byte(res.stdout), &ex); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, res.stdout)
	}
	if ex.Service != "api" || ex.Version != "v1" || ex.Reason != "sticky_routing" || ex.Bucket == nil || *ex.Bucket != 8529 ||
		ex.Weights["v1"] != 80 || ex.Weights["v2"] != 20 {
		t.Errorf("explanation %+v\n%s", ex, res.stdout)
	}
}

func TestVersionAndUsage(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		code      int
		stdoutHas []string
		stderrHas []string
	}{
		{name: "version", args: []string{"version"}, stdoutHas: []string{"splitter " + testVersion + "\n", "go go1."}},
		{name: "version with an argument", args: []string{"version", "x"}, code: 2, stderrHas: []string{"takes no arguments"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderrHas: []string{`unknown command "frobnicate"`}},
		{name: "unknown root flag", args: []string{"--bogus"}, code: 2, stderrHas: []string{"unknown flag"}},
		{name: "no command prints help", args: nil, stdoutHas: []string{"Available Commands:", "validate"}},
		{name: "bad log level", args: []string{"node", "--log-level", "loud"}, code: 2, stderrHas: []string{`log level "loud"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := runSplitter(t, "", nil, tc.args...)
			if res.code != tc.code {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", res.code, tc.code, res.stdout, res.stderr)
			}
			for _, s := range tc.stdoutHas {
				if !strings.Contains(res.stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, res.stdout)
				}
			}
			for _, s := range tc.stderrHas {
				if !strings.Contains(res.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, res.stderr)
				}
			}
		})
	}
}

// TestNodeStopsOnSIGTERM checks that a node waiting for input exits 0 on
// SIGTERM instead of ignoring it (main catches the signal for its context).
func TestNodeStopsOnSIGTERM(t *testing.T) {
	cmd := exec.Command(buildSplitter(t), "node")
	cmd.Env = append(os.Environ(), "SPLITTER_CONFIG=")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, `{"type":"init","msg_id":1}`+"\n"); err != nil {
		t.Fatal(err)
	}
	// Once the reply is out, the node is running and the handler is in place.
	reply, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || reply != `{"type":"init_ok","in_reply_to":1}`+"\n" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("node after SIGTERM: %v, want exit 0", err)
	}
}
