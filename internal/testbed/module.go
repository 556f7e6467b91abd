package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/trafficsplit/splitter/envoy"
)

// Module is the splitter running inside an Envoy as its dynamic module:
// its admin API, on the port the module reported in its ready file.
type Module struct {
	*AdminClient
	// FilterConfig is the filter_config Envoy handed the module.
	FilterConfig string
}

// ModuleSearchPath is the environment variable naming the one directory
// where Envoy looks for lib<name>.so.
const ModuleSearchPath = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH"

// BuildModule builds ./cmd/libsplitter of the module at root into
// dir/libsplitter.so with -buildmode=c-shared (as `make module` does, plus
// any build tags) and returns dir.
func BuildModule(ctx context.Context, root, dir string, tags ...string) (string, error) {
	args := []string{"build", "-trimpath", "-buildmode=c-shared", "-o", filepath.Join(dir, "libsplitter.so")}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/libsplitter")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -buildmode=c-shared ./cmd/libsplitter: %w\n%s", err, msg)
	}
	return dir, nil
}

// StartEnvoyModule runs Envoy on p in module mode with the library from
// libDir. settings become filter_config, with admin_addr on a free
// loopback port and a ready file unless settings set them; it returns once
// Envoy is LIVE and the module has reported its admin address.
func (b *Bed) StartEnvoyModule(ctx context.Context, bin, libDir string, p envoy.Params, settings map[string]any, o EnvoyOptions) (*Envoy, *Module, error) {
	fc := maps.Clone(settings)
	if fc == nil {
		fc = map[string]any{}
	}
	if _, ok := fc["admin_addr"]; !ok {
		fc["admin_addr"] = "127.0.0.1:0"
	}
	ready, hasReady := fc["ready_file"].(string)
	if !hasReady {
		ready = b.path("module-ready", ".json")
		fc["ready_file"] = ready
	}
	raw, err := json.Marshal(fc)
	if err != nil {
		return nil, nil, err
	}
	p.Mode = envoy.ModeModule
	p.Module.Config = string(raw)
	o.Env = append(o.Env, ModuleSearchPath+"="+libDir)
	e, err := b.StartEnvoy(ctx, bin, p, o)
	if err != nil {
		return nil, nil, err
	}
	m := &Module{AdminClient: newAdminClient(b), FilterConfig: string(raw)}
	ctx, cancel := context.WithTimeout(ctx, StartupTimeout)
	defer cancel()
	err = e.poll(ctx, "module ready file", func() error {
		data, err := os.ReadFile(ready)
		if err != nil {
			return err
		}
		var info struct {
			AdminAddr string `json:"admin_addr"`
		}
		if err := json.Unmarshal(data, &info); err != nil {
			return err
		}
		if info.AdminAddr == "" {
			return fmt.Errorf("ready file %s lacks admin_addr: %s", ready, data)
		}
		m.AdminAddr = info.AdminAddr
		return nil
	})
	if err != nil {
		_ = e.Kill()
		return nil, nil, err
	}
	return e, m, nil
}
