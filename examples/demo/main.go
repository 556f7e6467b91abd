// Command demo shows the whole loop from nothing: it starts two example
// backends, the splitter and a real Envoy on loopback, sends traffic
// through Envoy and draws the split as it changes (admin API, config file
// edit, a guarded rollout stepping up, a failing canary rolled back,
// anonymous clients keeping their version as the canary grows, a slow
// canary rolled back). Everything is stopped and the temporary directory removed at
// the end, also on Ctrl-C. It exits non-zero when anything looks wrong.
//
//	make demo   (or: go run ./examples/demo --splitter bin/splitter --envoy .venv/bin/envoy)
//	make demo MODE=module   (the splitter inside Envoy: --mode module --module-dir bin)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

func main() {
	splitterBin := flag.String("splitter", "bin/splitter", "the splitter binary (make build)")
	envoyBin := flag.String("envoy", "", "the Envoy binary (default: $ENVOY_BIN, .venv/bin/envoy, PATH)")
	requests := flag.Int("requests", 500, "requests per split measurement")
	mode := flag.String("mode", string(envoy.ModeExtProc), "ext_proc (the splitter as a sidecar) or module (inside Envoy)")
	moduleDir := flag.String("module-dir", "bin", "the directory holding libsplitter.so (make module), for --mode module")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Stdout, options{splitterBin: *splitterBin, envoyBin: *envoyBin, n: *requests,
		mode: envoy.Mode(*mode), moduleDir: *moduleDir})
	if err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted")
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		stop()
		os.Exit(1)
	}
}

// options are the command line's.
type options struct {
	splitterBin, envoyBin string
	n                     int
	mode                  envoy.Mode
	moduleDir             string
}

// demo carries the running bed and where to print.
type demo struct {
	out      io.Writer
	bed      *testbed.Bed
	admin    *testbed.AdminClient // the sidecar's or the module's admin API
	envoy    *testbed.Envoy
	backends []*testbed.Backend
	client   *testbed.Client
	cfgPath  string
	n        int
}

func run(ctx context.Context, out io.Writer, o options) (err error) {
	root, err := testbed.RepoRoot()
	if err != nil {
		return err
	}
	if o.envoyBin == "" {
		if o.envoyBin, err = testbed.FindEnvoy(root); err != nil {
			return err
		}
	}
	switch o.mode {
	case envoy.ModeExtProc:
		if o.splitterBin, err = filepath.Abs(o.splitterBin); err != nil {
			return err
		}
		if _, err := os.Stat(o.splitterBin); err != nil {
			return fmt.Errorf("splitter binary: %w (run `make build`)", err)
		}
	case envoy.ModeModule:
		if o.moduleDir, err = filepath.Abs(o.moduleDir); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(o.moduleDir, "libsplitter.so")); err != nil {
			return fmt.Errorf("module: %w (run `make module`)", err)
		}
	default:
		return fmt.Errorf("--mode %q: want ext_proc or module", o.mode)
	}
	seed, err := os.ReadFile(filepath.Join(root, "examples", "config", "canary.yaml"))
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "splitter-demo-")
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d := &demo{out: out, bed: testbed.New(dir, log), cfgPath: filepath.Join(dir, "config.yaml"), n: o.n}
	defer func() {
		d.bed.Close()
		if d.client != nil {
			d.client.Close()
		}
		if rmErr := os.RemoveAll(dir); rmErr != nil && err == nil {
			err = rmErr
		}
		fmt.Fprintf(out, "\nStopped Envoy, the splitter and both backends; removed %s.\n", dir)
	}()
	defer func() {
		// On failure the processes' own words are the best clue.
		if err != nil && ctx.Err() == nil {
			for _, p := range d.bed.Procs() {
				fmt.Fprintf(os.Stderr, "---- %s (last lines)\n%s\n", p.Name, p.Tail(15))
			}
		}
	}()

	if err := os.WriteFile(d.cfgPath, seed, 0o644); err != nil {
		return err
	}
	if o.mode == envoy.ModeModule {
		err = d.startModule(ctx, o.envoyBin, o.moduleDir)
	} else {
		err = d.start(ctx, o.splitterBin, o.envoyBin)
	}
	if err != nil {
		return err
	}
	for _, step := range []func(context.Context) error{
		d.weighted, d.beta, d.sticky, d.spoof, d.adminCanary, d.fileEdit, d.rollout, d.badCanary, d.anonymous, d.slowCanary,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "\nAll checks passed.")
	return nil
}

func (d *demo) start(ctx context.Context, splitterBin, envoyBin string) error {
	backends, err := d.bed.StartBackends("v1", "v2")
	if err != nil {
		return err
	}
	d.backends = backends
	// Envoy's admin port is chosen first: the splitter reads the rollout
	// guard's signals there.
	adminPort, err := testbed.FreePort()
	if err != nil {
		return err
	}
	sp, err := d.bed.StartSplitter(ctx, splitterBin, d.cfgPath, "--log-level", "warn",
		"--envoy-admin", fmt.Sprintf("127.0.0.1:%d", adminPort), "--signals-interval", "100ms")
	if err != nil {
		return err
	}
	d.admin = sp.AdminClient
	p, err := testbed.LoopbackParams(envoy.ModeExtProc, sp.GRPCAddr, backends...)
	if err != nil {
		return err
	}
	p.Admin.Port = adminPort
	d.envoy, err = d.bed.StartEnvoy(ctx, envoyBin, p, testbed.EnvoyOptions{Concurrency: 1})
	if err != nil {
		return err
	}
	d.client = d.envoy.Client()
	fmt.Fprintf(d.out, "client -> Envoy %s -> ext_proc splitter %s -> v1 %s | v2 %s\n",
		d.envoy.ListenAddr, sp.GRPCAddr, backends[0].Addr, backends[1].Addr)
	fmt.Fprintf(d.out, "config: %s (a copy of examples/config/canary.yaml)\n", d.cfgPath)
	return nil
}

// startModule runs the splitter inside Envoy (libsplitter.so from dir);
// the rollout guard reads the module's own response counters.
func (d *demo) startModule(ctx context.Context, envoyBin, dir string) error {
	backends, err := d.bed.StartBackends("v1", "v2")
	if err != nil {
		return err
	}
	d.backends = backends
	p, err := testbed.LoopbackParams(envoy.ModeModule, "", backends...)
	if err != nil {
		return err
	}
	settings := map[string]any{"config": d.cfgPath, "log_level": "warn", "signals_interval": "100ms"}
	e, m, err := d.bed.StartEnvoyModule(ctx, envoyBin, dir, p, settings, testbed.EnvoyOptions{Concurrency: 1})
	if err != nil {
		return err
	}
	d.envoy, d.admin = e, m.AdminClient
	d.client = d.envoy.Client()
	fmt.Fprintf(d.out, "client -> Envoy %s with the splitter inside (libsplitter.so, admin %s) -> v1 %s | v2 %s\n",
		d.envoy.ListenAddr, m.AdminAddr, backends[0].Addr, backends[1].Addr)
	fmt.Fprintf(d.out, "config: %s (a copy of examples/config/canary.yaml)\n", d.cfgPath)
	return nil
}

// measure sends d.n requests with h and draws the split.
func (d *demo) measure(ctx context.Context, h http.Header) (testbed.Counts, error) {
	counts, err := d.client.Count(ctx, d.n, 8, func(int) http.Header { return h })
	if err != nil {
		return counts, err
	}
	d.bars(counts)
	return counts, nil
}

// bars draws one bar per version.
func (d *demo) bars(counts testbed.Counts) {
	for _, v := range []string{"v1", "v2"} {
		c := counts[v]
		const width = 40
		full := (c*width + counts.Total()/2) / max(counts.Total(), 1)
		fmt.Fprintf(d.out, "  %s %s%s %4d  %5.1f%%\n", v, strings.Repeat("█", full), strings.Repeat("░", width-full), c, 100*float64(c)/float64(max(counts.Total(), 1)))
	}
}

// expectSplit checks v1:v2 against p1:100-p1 within one request.
func (d *demo) expectSplit(counts testbed.Counts, p1 int) error {
	want1 := counts.Total() * p1 / 100
	if diff := counts["v1"] - want1; diff < -1 || diff > 1 || counts["v1"]+counts["v2"] != counts.Total() {
		return fmt.Errorf("split %v, want v1=%d (±1) of %d", counts, want1, counts.Total())
	}
	fmt.Fprintf(d.out, "  ✓ exactly %d/%d\n", p1, 100-p1)
	return nil
}

func (d *demo) weighted(ctx context.Context) error {
	fmt.Fprintf(d.out, "\n1. Weighted canary 80/20, %d unkeyed requests\n", d.n)
	counts, err := d.measure(ctx, nil)
	if err != nil {
		return err
	}
	return d.expectSplit(counts, 80)
}

func (d *demo) beta(ctx context.Context) error {
	fmt.Fprintln(d.out, "\n2. Header rule: x-beta: true")
	for range 10 {
		rep, err := d.client.Get(ctx, "/", hdr("x-beta", "true"))
		if err != nil {
			return err
		}
		if rep.Version != "v2" || rep.Headers["x-route-reason"] != "header_match" {
			return fmt.Errorf("x-beta request went to %s (reason %q), want v2 (header_match)", rep.Version, rep.Headers["x-route-reason"])
		}
	}
	fmt.Fprintln(d.out, "  ✓ 10 of 10 on v2, reason header_match")
	return nil
}

func (d *demo) sticky(ctx context.Context) error {
	fmt.Fprintln(d.out, "\n3. Sticky user: x-user-id: user-123, 20 requests")
	first := ""
	variant := ""
	for i := range 20 {
		rep, err := d.client.Get(ctx, "/", hdr("x-user-id", "user-123"))
		if err != nil {
			return err
		}
		if i == 0 {
			first, variant = rep.Version, rep.Headers["x-variant"]
			continue
		}
		if rep.Version != first || rep.Headers["x-variant"] != variant {
			return fmt.Errorf("user-123 moved from %s/%s to %s/%s", first, variant, rep.Version, rep.Headers["x-variant"])
		}
	}
	fmt.Fprintf(d.out, "  ✓ 20 of 20 on %s, experiment variant x-variant: %s\n", first, variant)
	return nil
}

func (d *demo) spoof(ctx context.Context) error {
	fmt.Fprintf(d.out, "\n4. Clients send x-route-version: v2 (ignored), %d requests\n", d.n)
	counts, err := d.measure(ctx, hdr("x-route-version", "v2"))
	if err != nil {
		return err
	}
	return d.expectSplit(counts, 80)
}

func (d *demo) adminCanary(ctx context.Context) error {
	fmt.Fprintf(d.out, "\n5. Admin API: PUT %s {\"percentage\": 50}\n", d.admin.AdminURL("/v1/services/api/canary"))
	if err := d.admin.SetCanary(ctx, "api", 50); err != nil {
		return err
	}
	counts, err := d.measure(ctx, nil)
	if err != nil {
		return err
	}
	return d.expectSplit(counts, 50)
}

func (d *demo) fileEdit(ctx context.Context) error {
	for i, w := range []struct{ v1, v2 int }{{0, 100}, {95, 5}} {
		fmt.Fprintf(d.out, "\n%d. Config file edit: weights {v1: %d, v2: %d}\n", 6+i, w.v1, w.v2)
		data, err := os.ReadFile(d.cfgPath)
		if err != nil {
			return err
		}
		next, n := replaceWeights(string(data), w.v1, w.v2)
		if n != 1 {
			return errors.New("config file: no weights line to edit")
		}
		start := time.Now()
		// Write and rename, as editors do; the splitter sees one complete file.
		if err := os.WriteFile(d.cfgPath+".tmp", []byte(next), 0o644); err != nil {
			return err
		}
		if err := os.Rename(d.cfgPath+".tmp", d.cfgPath); err != nil {
			return err
		}
		if err := d.waitWeights(ctx, w.v2); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "  reloaded in %v, Envoy untouched\n", time.Since(start).Round(time.Millisecond))
		counts, err := d.measure(ctx, nil)
		if err != nil {
			return err
		}
		if err := d.expectSplit(counts, w.v1); err != nil {
			return err
		}
	}
	return nil
}

// waitWeights polls the admin API until the service serves v2 at percent.
func (d *demo) waitWeights(ctx context.Context, v2 int) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		var svc struct {
			Weights map[string]float64 `json:"weights"`
		}
		err := d.admin.Admin(ctx, http.MethodGet, "/v1/services/api", nil, &svc)
		if err == nil && svc.Weights["v2"] == float64(v2) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the splitter did not pick up the edited file: %w (last: %v %v)", ctx.Err(), svc.Weights, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// replaceWeights rewrites the first "weights: {...}" of the api service.
func replaceWeights(cfg string, v1, v2 int) (string, int) {
	lines := strings.Split(cfg, "\n")
	for i, l := range lines {
		if j := strings.Index(l, "weights: {"); j >= 0 {
			end := strings.Index(l[j:], "}")
			if end < 0 {
				return cfg, 0
			}
			lines[i] = l[:j] + fmt.Sprintf("weights: {v1: %d, v2: %d}", v1, v2) + l[j+end+1:]
			return strings.Join(lines, "\n"), 1
		}
	}
	return cfg, 0
}

func hdr(k, v string) http.Header {
	h := http.Header{}
	h.Set(k, v)
	return h
}
