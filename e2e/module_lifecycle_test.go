package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// listenerFromFile returns a bootstrap edit that moves the static
// listeners into ldsPath (Envoy's LDS from a file, which it watches) and
// pins the ingress listener to port, so that rewriting ldsPath is a
// listener update, as a control plane would push.
func listenerFromFile(ldsPath string, port int) func([]byte) ([]byte, error) {
	return func(in []byte) ([]byte, error) {
		var boot map[string]any
		if err := yaml.Unmarshal(in, &boot); err != nil {
			return nil, err
		}
		static, _ := boot["static_resources"].(map[string]any)
		listeners, _ := static["listeners"].([]any)
		if len(listeners) != 1 {
			return nil, fmt.Errorf("want one static listener, found %d", len(listeners))
		}
		l := listeners[0].(map[string]any)
		l["address"] = map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": port}}
		if err := writeLDS(ldsPath, l); err != nil {
			return nil, err
		}
		delete(static, "listeners")
		boot["dynamic_resources"] = map[string]any{
			"lds_config": map[string]any{"path_config_source": map[string]any{"path": ldsPath}, "resource_api_version": "V3"},
		}
		return json.Marshal(boot)
	}
}

// writeLDS replaces the LDS file atomically (Envoy watches for the move).
func writeLDS(path string, listener map[string]any) error {
	l := map[string]any{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener"}
	for k, v := range listener {
		l[k] = v
	}
	b, err := json.Marshal(map[string]any{"resources": []any{l}})
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// lds reads the LDS file back as the ingress listener.
func lds(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Resources []map[string]any `json:"resources"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Resources) != 1 {
		t.Fatalf("LDS file %s: %v", path, err)
	}
	delete(doc.Resources[0], "@type")
	return doc.Resources[0]
}

// setStatPrefix sets the listener's HTTP connection manager stat_prefix:
// a change that leaves the module's filter_config as it is.
func setStatPrefix(t *testing.T, l map[string]any, prefix string) {
	t.Helper()
	chains, _ := l["filter_chains"].([]any)
	if len(chains) == 0 {
		t.Fatal("listener without filter chains")
	}
	filters, _ := chains[0].(map[string]any)["filters"].([]any)
	hcm, _ := filters[0].(map[string]any)["typed_config"].(map[string]any)
	if hcm == nil {
		t.Fatal("no http_connection_manager")
	}
	hcm["stat_prefix"] = prefix
}

// TestModuleListenerUpdateAfterFileSettingChange: the module compares each
// later filter configuration with the filter_config it started with (what
// Envoy gave), not with settings re-read from the routing file. After a
// top-level scalar of the routing file changes (log_level), a listener
// update whose filter_config is unchanged is accepted, and so is the next.
func TestModuleListenerUpdateAfterFileSettingChange(t *testing.T) {
	requireModule(t)
	b := startBackends(t, baseConfig)
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ldsPath := filepath.Join(t.TempDir(), "lds.yaml")
	p, err := testbed.LoopbackParams(envoy.ModeModule, "", b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	b.envoy, b.module, err = b.StartEnvoyModule(t.Context(), found.envoyBin, found.moduleDir, p,
		map[string]any{"config": b.cfgPath, "reload_debounce": "50ms"},
		testbed.EnvoyOptions{Concurrency: 1, LogLevel: "info", Edit: listenerFromFile(ldsPath, port)})
	if err != nil {
		t.Fatal(err)
	}
	b.admin = b.module.AdminClient
	b.client = b.envoy.Client()
	t.Cleanup(b.client.Close)
	assertExactSplit(t, b, 100, 80, nil)

	// A top-level scalar of the routing file changes; the module reloads
	// the file (the routing part is the same).
	writeFile(t, b.cfgPath, "log_level: debug\n"+baseConfig)
	waitFor(t, 30*time.Second, "the reload of the edited file", func() bool {
		return strings.Contains(b.envoy.Tail(200), "log_level")
	})

	for i, prefix := range []string{"ingress_update_1", "ingress_update_2"} {
		l := lds(t, ldsPath)
		setStatPrefix(t, l, prefix)
		if err := writeLDS(ldsPath, l); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("LDS update %d applied or rejected", i+1), func() bool {
			st, err := b.envoy.Stats(t.Context(), "listener_manager.lds.update_")
			return err == nil && st["listener_manager.lds.update_success"]+st["listener_manager.lds.update_rejected"] >= uint64(i+2)
		})
		st, err := b.envoy.Stats(t.Context(), "listener_manager.lds.update_")
		if err != nil {
			t.Fatal(err)
		}
		if st["listener_manager.lds.update_rejected"] != 0 {
			t.Fatalf("LDS update %d (stat_prefix %s, filter_config unchanged) rejected: %v\n%s",
				i+1, prefix, st, grepLines(b.envoy.Tail(200), "differs"))
		}
		// Requests go through the updated listener, still split by the module.
		waitFor(t, 30*time.Second, "the updated listener's statistics", func() bool {
			st, err := b.envoy.Stats(t.Context(), "http."+prefix+".downstream_rq_total")
			if err != nil {
				return false
			}
			if _, err := b.client.Get(t.Context(), "/", nil); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Logf("request: %v", err)
			}
			return st["http."+prefix+".downstream_rq_total"] > 0
		})
		assertExactSplit(t, b, 100, 80, nil)
	}
}

// hotRestartConfig has two services: api, split by weights (the admin API
// overrides them), and web (Host: web), with a rollout the test starts and
// pauses, so that both kinds of runtime state must cross a hot restart.
const hotRestartConfig = `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
  - name: web
    hosts: ["web"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [10, 50, 100]
      hold: 1h
      guard: {window: 10s, min_requests: 1000000, max_error_rate: 1, max_error_ratio: 2}
`

// writes is what canaryWriter did: the last value acknowledged, and the
// value it was still trying to write when stopped (0: none), whose last
// attempt failed without a definite answer (a refused or dropped
// connection, the client's timeout): that one may or may not be in force.
type writes struct{ acked, pending int }

// canaryWriter sets api's canary to 2, 3, 4, ... percent through the admin
// API, one after the other, each retried until it is acknowledged (through
// a hot restart the admin port may refuse or drop a request), until stop
// is closed.
func canaryWriter(t *testing.T, admin *testbed.AdminClient, stop <-chan struct{}) <-chan writes {
	out := make(chan writes, 1)
	go func() {
		var w writes
		defer func() { out <- w }()
		for v := 1; ; v++ {
			pct := v%98 + 2
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := admin.SetCanary(t.Context(), "api", float64(pct))
				if err == nil {
					w.acked, w.pending = pct, 0
					break
				}
				w.pending = pct
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return out
}

// oldConns are persistent HTTP/1.1 connections to an Envoy, opened
// before a hot restart: the old epoch keeps serving them while it drains.
type oldConns struct {
	conns []net.Conn
	rds   []*bufio.Reader
}

func openConns(t *testing.T, addr string, n int) *oldConns {
	t.Helper()
	oc := &oldConns{}
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		oc.conns, oc.rds = append(oc.conns, c), append(oc.rds, bufio.NewReader(c))
		if _, err := oc.get(len(oc.conns) - 1); err != nil {
			t.Fatalf("a request on a new connection: %v", err)
		}
	}
	return oc
}

// get sends one request on connection i and returns the version that
// answered.
func (oc *oldConns) get(i int) (string, error) {
	c, r := oc.conns[i], oc.rds[i]
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var rep struct {
		Version string `json:"version"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return "", err
	}
	if resp.Close {
		c.Close() // Envoy is draining this connection
	}
	return rep.Version, nil
}

// TestModuleHotRestart: Envoy's hot restart (a new epoch with
// --restart-epoch 1 and the same --base-id, started while the old one
// runs) with the module: the new epoch starts (the module does not fail on
// the admin port the old epoch holds), takes the admin port and the
// control plane over with every runtime change the old one had (an
// override, a paused rollout, and admin writes made all through the
// handover: the last one acknowledged is the one in force), and splits
// requests as they were. The old epoch, while it drains its connections,
// follows the changes made on the new one. After the old epoch has exited,
// the new one still answers the admin API. The same in fleet mode, where
// the state lives in etcd.
func TestModuleHotRestart(t *testing.T) {
	t.Run("file", func(t *testing.T) { testModuleHotRestart(t, false) })
	t.Run("fleet", func(t *testing.T) { testModuleHotRestart(t, true) })
}

func testModuleHotRestart(t *testing.T, fleet bool) {
	requireModule(t)
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := fmt.Sprintf("127.0.0.1:%d", port)
	settings := map[string]any{"admin_addr": adminAddr}
	var b *bed
	if fleet {
		requireEtcd(t)
		b = startBackends(t, "")
		e, err := b.StartEtcd(t.Context(), found.etcdBin, testbed.EtcdOptions{})
		if err != nil {
			t.Fatal(err)
		}
		doc := filepath.Join(t.TempDir(), "fleet.yaml")
		writeFile(t, doc, hotRestartConfig)
		if out, err := exec.CommandContext(t.Context(), found.splitterBin, "config", "push", doc,
			"--etcd-endpoints", e.Endpoint).CombinedOutput(); err != nil {
			t.Fatalf("config push: %v\n%s", err, out)
		}
		settings["etcd_endpoints"] = []string{e.Endpoint}
		settings["node_id"] = "edge-a"
		settings["etcd_cache_file"] = filepath.Join(t.TempDir(), "cache.json")
	} else {
		b = startBackends(t, hotRestartConfig)
		settings["config"] = b.cfgPath
	}
	p, err := testbed.LoopbackParams(envoy.ModeModule, "", b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	// A drain long enough for the old epoch to serve its connections a
	// while after the handover.
	opts := testbed.EnvoyOptions{Concurrency: 1, LogLevel: "info", HotRestart: true,
		DrainTime: 10 * time.Second, ParentShutdownTime: 12 * time.Second}
	parent, mod, err := b.StartEnvoyModule(t.Context(), found.envoyBin, found.moduleDir, p, settings, opts)
	if err != nil {
		t.Fatal(err)
	}
	b.envoy, b.module, b.admin = parent, mod, mod.AdminClient
	b.client = parent.Client()
	t.Cleanup(b.client.Close)

	// Runtime state in the old epoch: web's rollout started and paused at
	// 10 %, api's canary overridden.
	b.actOn(t, "web", rollout.Start)
	if s := b.actOn(t, "web", rollout.Pause); s.State != rollout.Paused || s.Weight != 1000 {
		t.Fatalf("web's rollout: %+v, want paused at 10%%", s)
	}
	if err := b.admin.SetCanary(t.Context(), "api", 35); err != nil {
		t.Fatal(err)
	}
	assertExactSplit(t, b, 100, 65, nil)
	old := openConns(t, parent.ListenAddr, 30)

	stop := make(chan struct{})
	last := canaryWriter(t, b.admin, stop)
	time.Sleep(200 * time.Millisecond) // some writes before the new epoch
	child, err := parent.HotRestart(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("old epoch:\n%s\nnew epoch:\n%s", logLines(t, parent.Proc, "splitter-module"), logLines(t, child.Proc, "splitter-module"))
		}
	})
	time.Sleep(200 * time.Millisecond) // and some after
	close(stop)
	w := <-last
	if w.acked == 0 {
		t.Fatal("no admin write was acknowledged")
	}

	// The new epoch decides with the state the old one had.
	check := func(when string, canary ...int) int {
		t.Helper()
		var svc struct {
			Weights map[string]float64 `json:"weights"`
		}
		if err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &svc); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		got := int(svc.Weights["v2"])
		if float64(got) != svc.Weights["v2"] || !slices.Contains(canary, got) {
			t.Fatalf("%s: api's weights %v, want v2 at one of %v%%", when, svc.Weights, canary)
		}
		if s := b.rolloutOf(t, "web"); s.State != rollout.Paused || s.Weight != 1000 || s.Step != 1 {
			t.Fatalf("%s: web's rollout %+v, want paused at step 1 (10%%)", when, s)
		}
		return got
	}
	// The last acknowledged write, or the one that was being retried
	// (its last answer was lost: it may have been made).
	candidates := []int{w.acked}
	if w.pending != 0 {
		candidates = append(candidates, w.pending)
	}
	want := check("right after the hot restart (the last acknowledged write)", candidates...)
	b.envoy = child
	b.client.Close()
	b.client = child.Client()
	// New connections may reach the old epoch for a moment yet (Envoy
	// closes its listeners once the new one runs), and the old epoch
	// applies the new one's changes a quarter of a second late: measure
	// until the split is the handed-over state's.
	waitFor(t, 30*time.Second, "the split of the handed-over state", func() bool {
		b.client.Close()
		counts, err := b.client.Count(t.Context(), 100, 4, nil)
		return err == nil && counts.Total() == 100 && abs(counts["v1"]-(100-want)) <= 1
	})
	assertExactSplit(t, b, 100, 100-want, nil)

	// A change on the new epoch reaches the old one's draining connections.
	if err := b.admin.SetCanary(t.Context(), "api", 100); err != nil {
		t.Fatal(err)
	}
	followed := false
	for i := 0; i < len(old.conns) && !followed; {
		v, err := old.get(i)
		switch {
		case err != nil: // closed by the drain: the next one
			i++
		case v == "v2":
			followed = true
		default:
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !followed {
		t.Fatal("the old epoch's connections never got the canary's 100 % set on the new epoch")
	}

	// The old epoch drains and exits; the new one answers alone.
	select {
	case <-parent.Exited():
	case <-time.After(60 * time.Second):
		t.Fatal("the old epoch did not exit")
	}
	check("after the old epoch exited", 100)
	if err := b.admin.SetCanary(t.Context(), "api", 50); err != nil {
		t.Fatalf("an admin write after the old epoch exited: %v", err)
	}
	assertExactSplit(t, b, 100, 50, nil)
	assertExactSplit(t, b, 100, 90, hdr("Host", "web"))
	if !child.Running() {
		t.Fatalf("the new epoch exited: %v", child.ExitErr())
	}
	t.Logf("writes during the handover: %+v, in force: %d%%\nold epoch:\n%s\nnew epoch:\n%s",
		w, want, logLines(t, parent.Proc, "hot restart"), logLines(t, child.Proc, "hot restart"))
}

// TestModuleHotRestartFailedEpochGivesBack: a new epoch that fails after
// its module took the control plane over (its bootstrap has a broken
// filter after the module's) leaves the old epoch running: the old one
// takes the admin port and the control plane back, with the state it had.
func TestModuleHotRestartFailedEpochGivesBack(t *testing.T) {
	requireModule(t)
	b := startBackends(t, hotRestartConfig)
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p, err := testbed.LoopbackParams(envoy.ModeModule, "", b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	opts := testbed.EnvoyOptions{Concurrency: 1, LogLevel: "info", HotRestart: true}
	parent, mod, err := b.StartEnvoyModule(t.Context(), found.envoyBin, found.moduleDir, p,
		map[string]any{"config": b.cfgPath, "admin_addr": fmt.Sprintf("127.0.0.1:%d", port)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b.envoy, b.module, b.admin = parent, mod, mod.AdminClient
	b.client = parent.Client()
	t.Cleanup(b.client.Close)
	b.actOn(t, "web", rollout.Start)
	b.actOn(t, "web", rollout.Pause)
	if err := b.admin.SetCanary(t.Context(), "api", 35); err != nil {
		t.Fatal(err)
	}

	// An HTTP filter Envoy cannot build, after the module's: the new
	// epoch's module starts (and takes over), then Envoy fails.
	broken := func(in []byte) ([]byte, error) {
		var boot map[string]any
		if err := yaml.Unmarshal(in, &boot); err != nil {
			return nil, err
		}
		l := boot["static_resources"].(map[string]any)["listeners"].([]any)[0].(map[string]any)
		f := l["filter_chains"].([]any)[0].(map[string]any)["filters"].([]any)[0].(map[string]any)
		hcm := f["typed_config"].(map[string]any)
		filters := hcm["http_filters"].([]any)
		bad := map[string]any{"name": "broken", "typed_config": map[string]any{"@type": "type.googleapis.com/google.protobuf.Empty"}}
		hcm["http_filters"] = append(append(filters[:len(filters)-1:len(filters)-1], bad), filters[len(filters)-1])
		return json.Marshal(boot)
	}
	// Envoy may report the new epoch live before it fails: wait for it to
	// exit either way.
	_, _ = parent.HotRestartEdited(t.Context(), broken)
	procs := b.Procs()
	next := procs[len(procs)-1]
	if !strings.Contains(strings.Join(next.Args, " "), "--restart-epoch 1") {
		t.Fatalf("not the new epoch's process: %v", next.Args)
	}
	select {
	case <-next.Exited():
	case <-time.After(60 * time.Second):
		t.Fatal("the broken epoch did not exit")
	}
	if l := logLines(t, next, "hot restart"); !strings.Contains(l, "handed over the control plane") {
		t.Fatalf("the broken epoch's module did not take the control plane over first:\n%s", l)
	}
	waitFor(t, 60*time.Second, "the old epoch's admin API again", func() bool {
		var svc struct {
			Weights map[string]float64 `json:"weights"`
		}
		err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &svc)
		return err == nil && svc.Weights["v2"] == 35
	})
	if s := b.rolloutOf(t, "web"); s.State != rollout.Paused || s.Weight != 1000 {
		t.Fatalf("web's rollout after taking back: %+v, want paused at 10%%", s)
	}
	if err := b.admin.SetCanary(t.Context(), "api", 60); err != nil {
		t.Fatal(err)
	}
	b.client.Close()
	assertExactSplit(t, b, 100, 40, nil)
	if !parent.Running() {
		t.Fatal("the old epoch exited")
	}
	t.Logf("old epoch:\n%s", logLines(t, parent.Proc, "hot restart"))
}

// TestModuleValidateModeStartsNothing: `envoy --mode validate` on a
// module bootstrap, on a host where the module's admin port is taken (a
// live Envoy has it), succeeds and starts nothing: the port's owner sees
// no connection handover, etcd (a listener standing in for it) sees no
// connection, and no ready file is written.
func TestModuleValidateModeStartsNothing(t *testing.T) {
	requireModule(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	etcd, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	dials := make(chan struct{}, 100)
	go func() {
		for {
			c, err := etcd.Accept()
			if err != nil {
				return
			}
			dials <- struct{}{}
			c.Close()
		}
	}()
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready.json")
	for _, fc := range []map[string]any{
		{"config": filepath.Join(dir, "config.yaml"), "admin_addr": held.Addr().String(), "ready_file": ready},
		{"etcd_endpoints": []string{"http://" + etcd.Addr().String()}, "node_id": "validate",
			"admin_addr": held.Addr().String(), "ready_file": ready},
	} {
		writeFile(t, filepath.Join(dir, "config.yaml"), baseConfig)
		raw, _ := json.Marshal(fc)
		p, err := testbed.LoopbackParams(envoy.ModeModule, "",
			&testbed.Backend{Version: "v1", Addr: "127.0.0.1:1"}, &testbed.Backend{Version: "v2", Addr: "127.0.0.1:2"})
		if err != nil {
			t.Fatal(err)
		}
		p.Module.Config = string(raw)
		boot, err := envoy.Render(p)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "envoy.yaml")
		writeFile(t, path, string(boot))
		if err := envoyValidate(t, path); err != nil {
			t.Fatalf("validate with %s: %v", raw, err)
		}
		if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("validate with %s wrote the ready file (%v): the module started", raw, err)
		}
	}
	select {
	case <-dials:
		t.Fatal("validation connected to etcd")
	default:
	}
}

// actOn takes a rollout action on service through the admin API.
func (b *bed) actOn(t *testing.T, service string, a rollout.Action) rollout.Status {
	t.Helper()
	var s rollout.Status
	if err := b.admin.Admin(t.Context(), http.MethodPost, "/v1/services/"+service+"/rollout", map[string]rollout.Action{"action": a}, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// rolloutOf returns service's rollout status.
func (b *bed) rolloutOf(t *testing.T, service string) rollout.Status {
	t.Helper()
	var s rollout.Status
	if err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/"+service+"/rollout", nil, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// logLines returns the lines of p's whole output that contain word.
func logLines(t *testing.T, p *testbed.Proc, word string) string {
	t.Helper()
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return grepLines(string(data), word)
}
