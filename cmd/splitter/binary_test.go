package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testVersion is stamped into the test binary with -ldflags.
const testVersion = "v0.0.0-test"

// The binary is built once per test binary, lazily, into binDir (created
// and removed by TestMain), so every test that needs it shares one build.
var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "splitter-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "create build directory:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildSplitter returns the path of the splitter binary built from this
// package, building it on first use.
func buildSplitter(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("find the go tool: %w", err)
			return
		}
		out := filepath.Join(binDir, "splitter")
		cmd := exec.Command(goTool, "build", "-o", out, "-ldflags", "-X main.version="+testVersion, ".")
		if msg, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, msg)
			return
		}
		binPath = out
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// runSplitter runs the binary with args and stdin, waiting for it to exit.
func runSplitter(t *testing.T, stdin string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), buildSplitter(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	// A SPLITTER_CONFIG in the developer's environment must not leak in.
	cmd.Env = append(os.Environ(), "SPLITTER_CONFIG=")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run splitter %v: %v", args, err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}
