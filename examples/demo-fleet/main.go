// Command demo-fleet shows the fleet on loopback: a real etcd, three
// Envoy + splitter pairs (each splitter in fleet mode) and two backends.
// It pushes the routing document with `splitter config push`, draws every
// Envoy's split as bars, makes ONE admin call on pair A and draws the bars
// again: all three move, nothing restarted. /v1/fleet then shows the
// replicas converged. Everything is stopped and removed at the end, also
// on Ctrl-C; it exits non-zero when anything looks wrong.
//
//	make demo-fleet   (or: go run ./examples/demo-fleet --splitter bin/splitter --envoy .venv/bin/envoy --etcd .venv/bin/etcd)
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
	"os/exec"
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
	etcdBin := flag.String("etcd", "", "the etcd binary (default: $ETCD_BIN, .venv/bin/etcd, PATH)")
	requests := flag.Int("requests", 200, "requests per Envoy per measurement")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *splitterBin, *envoyBin, *etcdBin, *requests); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted")
		}
		fmt.Fprintln(os.Stderr, "demo-fleet:", err)
		stop()
		os.Exit(1)
	}
}

const document = `# The fleet's routing document: every replica applies it from etcd.
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 90, v2: 10}
    sticky: {header: x-user-id}
`

type pair struct {
	name     string
	splitter *testbed.Splitter
	envoy    *testbed.Envoy
	client   *testbed.Client
}

func run(ctx context.Context, out io.Writer, splitterBin, envoyBin, etcdBin string, n int) (err error) {
	root, err := testbed.RepoRoot()
	if err != nil {
		return err
	}
	if envoyBin == "" {
		if envoyBin, err = testbed.FindEnvoy(root); err != nil {
			return err
		}
	}
	if etcdBin == "" {
		if etcdBin, err = testbed.FindEtcd(root); err != nil {
			return err
		}
	}
	if splitterBin, err = filepath.Abs(splitterBin); err != nil {
		return err
	}
	if _, err := os.Stat(splitterBin); err != nil {
		return fmt.Errorf("splitter binary: %w (run `make build`)", err)
	}
	dir, err := os.MkdirTemp("", "splitter-demo-fleet-")
	if err != nil {
		return err
	}
	bed := testbed.New(dir, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	var pairs []*pair
	defer func() {
		for _, p := range pairs {
			if p.client != nil {
				p.client.Close()
			}
		}
		bed.Close()
		if rmErr := os.RemoveAll(dir); rmErr != nil && err == nil {
			err = rmErr
		}
		fmt.Fprintf(out, "\nStopped etcd, the three pairs and both backends; removed %s.\n", dir)
	}()
	defer func() {
		if err != nil && ctx.Err() == nil {
			for _, p := range bed.Procs() {
				fmt.Fprintf(os.Stderr, "---- %s (last lines)\n%s\n", p.Name, p.Tail(15))
			}
		}
	}()

	etcd, err := bed.StartEtcd(ctx, etcdBin, testbed.EtcdOptions{Fsync: true})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "etcd %s (a real server, data in %s)\n", etcd.Endpoint, etcd.DataDir)
	docPath := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(docPath, []byte(document), 0o644); err != nil {
		return err
	}
	push := exec.CommandContext(ctx, splitterBin, "config", "push", "--etcd-endpoints", etcd.Endpoint, docPath)
	msg, err := push.CombinedOutput()
	if err != nil {
		return fmt.Errorf("splitter config push: %w\n%s", err, msg)
	}
	fmt.Fprintf(out, "$ splitter config push %s\n  %s", filepath.Base(docPath), msg)

	backends, err := bed.StartBackends("v1", "v2")
	if err != nil {
		return err
	}
	for i, name := range []string{"A", "B", "C"} {
		s, err := bed.StartSplitter(ctx, splitterBin, "", "--log-level", "warn",
			"--etcd-endpoints", etcd.Endpoint, "--node-id", "pair-"+strings.ToLower(name),
			"--etcd-cache-file", filepath.Join(dir, fmt.Sprintf("cache-%d.json", i)))
		if err != nil {
			return err
		}
		params, err := testbed.LoopbackParams(envoy.ModeExtProc, s.GRPCAddr, backends...)
		if err != nil {
			return err
		}
		e, err := bed.StartEnvoy(ctx, envoyBin, params, testbed.EnvoyOptions{Concurrency: 1})
		if err != nil {
			return err
		}
		p := &pair{name: name, splitter: s, envoy: e, client: e.Client()}
		pairs = append(pairs, p)
		fmt.Fprintf(out, "pair %s: client -> Envoy %s -> splitter %s (admin %s)\n", name, e.ListenAddr, s.GRPCAddr, s.AdminAddr)
	}
	fmt.Fprintf(out, "backends: v1 %s | v2 %s\n", backends[0].Addr, backends[1].Addr)

	fmt.Fprintf(out, "\n1. The pushed document, 90/10, on every pair (%d unkeyed requests through each Envoy)\n", n)
	if err := measureAll(ctx, out, pairs, n, 10); err != nil {
		return err
	}

	a := pairs[0]
	fmt.Fprintf(out, "\n2. ONE admin call, on pair A only: PUT %s {\"percentage\": 50}\n", a.splitter.AdminURL("/v1/services/api/canary"))
	start := time.Now()
	var ans map[string]any
	if err := a.splitter.Admin(ctx, http.MethodPut, "/v1/services/api/canary", map[string]float64{"percentage": 50}, &ans); err != nil {
		return err
	}
	fmt.Fprintf(out, "  answer %v (after the commit, applied on A)\n", ans)
	for _, p := range pairs {
		if err := waitV2(ctx, p.splitter, 50); err != nil {
			return fmt.Errorf("pair %s: %w", p.name, err)
		}
	}
	fmt.Fprintf(out, "  applied by all three splitters in %v; no Envoy or splitter restarted\n", time.Since(start).Round(time.Millisecond))
	if err := measureAll(ctx, out, pairs, n, 50); err != nil {
		return err
	}

	fmt.Fprintln(out, "\n3. GET /v1/fleet on pair C")
	var fl struct {
		Revision int64 `json:"revision"`
		Replicas []struct {
			NodeID      string `json:"node_id"`
			Revision    int64  `json:"revision"`
			StateSHA256 string `json:"state_sha256"`
		} `json:"replicas"`
	}
	if err := waitConverged(ctx, pairs[2].splitter, &fl); err != nil {
		return err
	}
	for _, r := range fl.Replicas {
		fmt.Fprintf(out, "  %-7s revision %d  state %s\n", r.NodeID, r.Revision, r.StateSHA256[:12])
	}
	fmt.Fprintln(out, "  ✓ three replicas, one state")
	fmt.Fprintln(out, "\nAll checks passed.")
	return nil
}

// measureAll sends n requests through each pair's Envoy and draws the
// split; each splitter's round-robin is exact, so v2 must be pct% ±1.
func measureAll(ctx context.Context, out io.Writer, pairs []*pair, n, pct int) error {
	for _, p := range pairs {
		counts, err := p.client.Count(ctx, n, 8, func(int) http.Header { return nil })
		if err != nil {
			return err
		}
		const width = 40
		var b strings.Builder
		for _, v := range []string{"v1", "v2"} {
			c := counts[v]
			full := (c*width + counts.Total()/2) / counts.Total()
			fmt.Fprintf(&b, "  %s %s%s %4d", v, strings.Repeat("█", full), strings.Repeat("░", width-full), c)
		}
		fmt.Fprintf(out, "  Envoy %s%s\n", p.name, b.String())
		want := n * pct / 100
		if d := counts["v2"] - want; d < -1 || d > 1 || counts.Total() != n {
			return fmt.Errorf("pair %s: split %v, want v2=%d (±1) of %d", p.name, counts, want, n)
		}
	}
	fmt.Fprintf(out, "  ✓ every Envoy at %d/%d\n", 100-pct, pct)
	return nil
}

func waitV2(ctx context.Context, s *testbed.Splitter, pct float64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		var svc struct {
			Weights map[string]float64 `json:"weights"`
		}
		if err := s.Admin(ctx, http.MethodGet, "/v1/services/api", nil, &svc); err == nil && svc.Weights["v2"] == pct {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("did not apply v2=%v: %w", pct, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func waitConverged(ctx context.Context, s *testbed.Splitter, fl any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		var v struct {
			Replicas []struct {
				StateSHA256 string `json:"state_sha256"`
			} `json:"replicas"`
		}
		if err := s.Admin(ctx, http.MethodGet, "/v1/fleet", nil, &v); err == nil && len(v.Replicas) == 3 &&
			v.Replicas[0].StateSHA256 == v.Replicas[1].StateSHA256 && v.Replicas[1].StateSHA256 == v.Replicas[2].StateSHA256 {
			return s.Admin(ctx, http.MethodGet, "/v1/fleet", nil, fl)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("/v1/fleet did not converge: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
