package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/testbed"
)

// The Envoy Gateway tests run Envoy Gateway v1.9.1 (`make gateway`) in
// standalone mode on the recipe in examples/envoy-gateway/ as shipped: the
// test reads those files and substitutes only paths and ports, then checks
// every behaviour users rely on through the Envoy that Envoy Gateway
// starts, with the splitter over ext_proc and inside Envoy as the module.
// Envoy Gateway binds fixed ports, so its beds are serialised (a lock
// across processes) and each stops everything it started.

// gatewayEnvoyVersion is the version examples/envoy-gateway names in its
// EnvoyProxy resources; the PyPI Envoy is linked under it.
const gatewayEnvoyVersion = "1.40.0"

// gwBed is Envoy Gateway, its Envoy, the backends and the splitter.
type gwBed struct {
	*testbed.Bed
	mode     string // "ext_proc" or "module"
	cfgPath  string
	gateway  *testbed.Gateway
	envoy    *testbed.GatewayEnvoy
	splitter *testbed.Splitter // ext_proc only
	admin    *testbed.AdminClient
	client   *testbed.Client
	backends []*testbed.Backend
	// envoyAdmin is Envoy's admin address, fixed by the EnvoyProxy's
	// bootstrap (port substituted): the ext_proc splitter's envoy_admin.
	envoyAdmin string
}

// substitution replaces every occurrence of old in one example file by
// new, and requires exactly n of them: if the example changes, the test
// says so instead of running something else.
type substitution struct {
	old, new string
	n        int
}

// shipped reads examples/envoy-gateway/name, applies subs (and edit, a
// negative control's change, if set), writes the result into dir and
// returns its path.
func shipped(t *testing.T, dir, name string, edit func(name, content string) string, subs ...substitution) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(found.root, "examples", "envoy-gateway", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, sub := range subs {
		if got := strings.Count(s, sub.old); got != sub.n {
			t.Fatalf("examples/envoy-gateway/%s: %q occurs %d times, the test substitutes %d (did the example change?)", name, sub.old, got, sub.n)
		}
		s = strings.ReplaceAll(s, sub.old, sub.new)
	}
	if edit != nil {
		s = edit(name, s)
	}
	out := filepath.Join(dir, name)
	if err := os.WriteFile(out, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("address %q has no port", addr)
	}
	return addr[i+1:]
}

// newGatewayBed starts the backends, the splitter (ext_proc) or nothing
// (module: it runs inside Envoy), and Envoy Gateway on the shipped recipe;
// it returns once a beta tester's request is decided through it.
func newGatewayBed(t *testing.T, mode string) *gwBed {
	t.Helper()
	return startGatewayBed(t, mode, nil, true)
}

// startGatewayBed is newGatewayBed with edit applied to each recipe file
// (negative controls), and, unless decided, returning once requests are
// answered and the splitter's filter is in Envoy's configuration.
func startGatewayBed(t *testing.T, mode string, edit func(name, content string) string, decided bool) *gwBed {
	t.Helper()
	bin := testbed.RequireGateway(t)
	requireEnvoy(t)
	if mode == "module" {
		requireModule(t)
	}
	b := &gwBed{Bed: testbed.ForTest(t), mode: mode}
	var err error
	if b.backends, err = b.StartBackends("v1", "v2"); err != nil {
		t.Fatal(err)
	}
	res := t.TempDir()
	b.cfgPath = filepath.Join(res, "config.yaml")
	writeFile(t, b.cfgPath, baseConfig)
	dirs, err := b.NewGatewayDirs()
	if err != nil {
		t.Fatal(err)
	}
	listen, err := testbed.FreeAnyPort()
	if err != nil {
		t.Fatal(err)
	}
	gatewayFile := shipped(t, res, "gateway.yaml", edit,
		substitution{"port: 10080", "port: " + strconv.Itoa(listen), 1},
		substitution{"port: 9101}", "port: " + portOf(t, b.backends[0].Addr) + "}", 1},
		substitution{"port: 9102}", "port: " + portOf(t, b.backends[1].Addr) + "}", 1})
	// Envoy's admin port, which the EnvoyProxy's bootstrap fixes (9901 in
	// the recipe; host mode would pick a random one).
	envoyAdminPort, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b.envoyAdmin = "127.0.0.1:" + strconv.Itoa(envoyAdminPort)
	adminSub := substitution{"port_value: 9901}", "port_value: " + strconv.Itoa(envoyAdminPort) + "}", 1}
	var pathFile string
	switch mode {
	case "ext_proc":
		// The recipe's envoy_admin is the splitter's default, 9901; the
		// guard reads Envoy's counters every 100ms (rollouts held seconds).
		b.splitter, err = b.StartSplitter(t.Context(), found.splitterBin, b.cfgPath,
			"--envoy-admin", b.envoyAdmin, "--signals-interval", "100ms")
		if err != nil {
			t.Fatal(err)
		}
		b.admin = b.splitter.AdminClient
		pathFile = shipped(t, res, "ext-proc.yaml", edit, adminSub,
			substitution{"port: 9001}", "port: " + portOf(t, b.splitter.GRPCAddr) + "}", 1})
	case "module":
		adminPort, err := testbed.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		adminAddr := "127.0.0.1:" + strconv.Itoa(adminPort)
		b.admin = b.AdminAt(adminAddr)
		pathFile = shipped(t, res, "module.yaml", edit, adminSub,
			substitution{"/usr/local/lib/splitter/libsplitter.so", filepath.Join(found.moduleDir, "libsplitter.so"), 1},
			substitution{"config: /etc/splitter/config.yaml", "config: " + b.cfgPath, 1},
			substitution{"admin_addr: 127.0.0.1:9002", "admin_addr: " + adminAddr, 1})
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	egFile := shipped(t, res, "envoy-gateway.yaml", edit,
		substitution{"/etc/splitter/envoy-gateway/gateway.yaml", gatewayFile, 1},
		// The example lists ext-proc.yaml; module.yaml takes its place.
		substitution{"/etc/splitter/envoy-gateway/ext-proc.yaml", pathFile, 1},
		substitution{"configHome: /var/lib/envoy-gateway/config", "configHome: " + dirs.ConfigHome, 1},
		substitution{"dataHome: /var/lib/envoy-gateway/data", "dataHome: " + dirs.DataHome, 1},
		substitution{"stateHome: /var/lib/envoy-gateway/state", "stateHome: " + dirs.StateHome, 1},
		substitution{"runtimeDir: /run/envoy-gateway", "runtimeDir: " + dirs.RuntimeDir, 1})
	b.gateway, err = b.StartGateway(t.Context(), bin, testbed.GatewayOptions{
		ConfigPath: egFile, Dirs: dirs, Envoy: found.envoyBin, EnvoyVersion: gatewayEnvoyVersion, CPU: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.envoy, err = b.gateway.WaitEnvoy(t.Context(), listen); err != nil {
		t.Fatal(err)
	}
	// The bootstrap merge took: Envoy's admin is where the splitter looks.
	if b.envoy.AdminAddr != b.envoyAdmin {
		t.Fatalf("Envoy Gateway's Envoy has its admin interface at %s, want %s (the EnvoyProxy's bootstrap)", b.envoy.AdminAddr, b.envoyAdmin)
	}
	b.client = testbed.ClientFor("127.0.0.1:" + strconv.Itoa(listen))
	t.Cleanup(b.client.Close)
	// Envoy Gateway pushes the routes and the filter after the listener:
	// ready when a beta tester is decided (pinned to v2).
	if !decided {
		waitFor(t, 60*time.Second, "answers and the splitter's filter in Envoy's configuration", func() bool {
			_, err := b.client.Get(t.Context(), "/", nil)
			dump, derr := b.envoy.ConfigDump(t.Context(), "?resource=dynamic_listeners")
			return err == nil && derr == nil && strings.Contains(dump, "envoy.filters.http.ext_proc/")
		})
		return b
	}
	waitFor(t, 60*time.Second, "a decided request through Envoy Gateway's Envoy", func() bool {
		rep, err := b.client.Get(t.Context(), "/", hdr("x-beta", "true"))
		return err == nil && rep.Version == "v2" && rep.Headers["x-route-reason"] == "header_match"
	})
	if mode == "module" {
		waitFor(t, 30*time.Second, "the module's admin API", func() bool {
			return b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, nil) == nil
		})
	}
	return b
}

func (b *gwBed) get(t *testing.T, h http.Header) (string, map[string]string) {
	t.Helper()
	rep, err := b.client.Get(t.Context(), "/", h)
	if err != nil {
		t.Fatal(err)
	}
	return rep.Version, rep.Headers
}

// failedOpen is Envoy's count of requests that went on without the
// splitter's answer (ext_proc fail-open), over every ext_proc filter.
func (b *gwBed) failedOpen(t *testing.T) uint64 {
	t.Helper()
	stats, err := b.envoy.Stats(t.Context(), "failure_mode_allowed")
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for name, v := range stats {
		if strings.Contains(name, "ext_proc") {
			n += v
		}
	}
	return n
}

// exactSplit sends n requests with h and requires exactly n*p1/100 on v1,
// the rest on v2, none failed open.
func (b *gwBed) exactSplit(t *testing.T, n, p1 int, h http.Header) {
	t.Helper()
	before := b.failedOpen(t)
	counts, err := b.client.Count(t.Context(), n, 4, func(int) http.Header { return h })
	if err != nil {
		t.Fatalf("after %v: %v", counts, err)
	}
	want1 := n * p1 / 100
	if counts["v1"] != want1 || counts["v2"] != n-want1 || counts.Total() != n {
		t.Fatalf("split over %d requests = %v, want exactly v1=%d v2=%d", n, counts, want1, n-want1)
	}
	if d := b.failedOpen(t) - before; d != 0 {
		t.Fatalf("%d requests failed open during the split", d)
	}
	t.Logf("split over %d requests: %v", n, counts)
}

func (b *gwBed) allOn(t *testing.T, n int, version string, h http.Header) {
	t.Helper()
	counts, err := b.client.Count(t.Context(), n, 2, func(int) http.Header { return h })
	if err != nil {
		t.Fatalf("after %v: %v", counts, err)
	}
	if counts[version] != n {
		t.Fatalf("%d requests: %v, want all on %s", n, counts, version)
	}
}

// TestEnvoyGateway: through Envoy Gateway's Envoy, in ext_proc mode and in
// module mode, the exact split, a header rule, a sticky user, a spoofed
// route header, a canary change through the admin API and through the
// file, with nothing restarted; in ext_proc mode the splitter killed under
// traffic fails no request.
func TestEnvoyGateway(t *testing.T) {
	for _, mode := range []string{"ext_proc", "module"} {
		t.Run(mode, func(t *testing.T) { testEnvoyGateway(t, mode) })
	}
}

func testEnvoyGateway(t *testing.T, mode string) {
	b := newGatewayBed(t, mode)
	gwPid, envoyPid := b.gateway.Pid(), b.envoy.PID
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"the filter is enabled on every route", b.filterOnEveryRoute},
		{"exact 80/20 over 1000 unkeyed requests", func(t *testing.T) { b.exactSplit(t, 1000, 80, nil) }},
		{"a header rule pins", func(t *testing.T) {
			for range 20 {
				v, got := b.get(t, hdr("x-beta", "true"))
				if v != "v2" || got["x-route-reason"] != "header_match" || got["x-route-version"] != "v2" {
					t.Fatalf("beta tester on %s, backend saw x-route-version=%q x-route-reason=%q", v, got["x-route-version"], got["x-route-reason"])
				}
			}
		}},
		{"a sticky user stays", func(t *testing.T) {
			seen := testbed.Counts{}
			for u := range 30 {
				user := fmt.Sprintf("user-%d", u)
				first, _ := b.get(t, hdr("x-user-id", user))
				for range 4 {
					v, got := b.get(t, hdr("x-user-id", user))
					if v != first || got["x-route-reason"] != "sticky_routing" {
						t.Fatalf("%s moved from %s to %s (reason %q)", user, first, v, got["x-route-reason"])
					}
				}
				seen[first]++
			}
			if seen["v1"] == 0 || seen["v2"] == 0 {
				t.Fatalf("30 sticky users all on one version: %v", seen)
			}
			t.Logf("30 sticky users: %v", seen)
		}},
		{"a client-sent x-route-version is not honoured", func(t *testing.T) {
			b.exactSplit(t, 100, 80, hdr("x-route-version", "v2", "x-route-reason", "header_match"))
		}},
		{"a canary change through the admin API", func(t *testing.T) {
			for _, c := range []struct {
				percent float64
				p1      int
			}{{0, 100}, {100, 0}, {50, 50}} {
				if err := b.admin.SetCanary(t.Context(), "api", c.percent); err != nil {
					t.Fatal(err)
				}
				b.exactSplit(t, 100, c.p1, nil)
			}
		}},
		{"a file edit", func(t *testing.T) {
			writeFile(t, b.cfgPath, splitConfig(95, 5))
			waitFor(t, 20*time.Second, "the file's weights to be served", func() bool {
				var svc struct {
					Weights map[string]float64 `json:"weights"`
				}
				err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &svc)
				return err == nil && svc.Weights["v2"] == 5
			})
			b.exactSplit(t, 100, 95, nil)
		}},
		{"anonymous clients are given a cookie and stay on one version", b.anonymousClients},
		{"a 10 % mirror copies exactly 100 of 1,000 requests; a client's x-mirror-version none", b.mirrorCopiesAShare},
		{"a guarded rollout of a failing canary is rolled back", b.rollbackOnErrors},
		{"a guarded rollout of a slow canary is rolled back", b.rollbackOnLatency},
	}
	type step = struct {
		name string
		run  func(t *testing.T)
	}
	if mode == "ext_proc" {
		steps = append(steps,
			step{"a failing canary is rolled back from the shadow step", b.rollbackFromShadow},
			step{"without clusters the guard finds no Envoy Gateway cluster", b.noClusterNoVerdict})
	}
	steps = append(steps,
		step{"a guarded rollout of a healthy canary is promoted", b.promoteHealthy},
		step{"back to a plain split", b.plainSplit})
	if mode == "ext_proc" {
		steps = append(steps, step{"the splitter killed under traffic", b.killUnderTraffic})
	}
	for _, st := range steps {
		if !t.Run(st.name, st.run) {
			return
		}
	}
	if b.gateway.Pid() != gwPid || !b.gateway.Running() || b.envoy.PID != envoyPid || !b.envoy.Running() {
		t.Fatal("Envoy Gateway or its Envoy was restarted; nothing above may need that")
	}
}

// filterOnEveryRoute reads Envoy's route configuration: Envoy Gateway puts
// the splitter's filter on the listener disabled and enables it per route;
// every route of the Gateway must enable it, or a request whose first
// route lacks it would never be split.
func (b *gwBed) filterOnEveryRoute(t *testing.T) {
	prefix := "envoy.filters.http.ext_proc/"
	if b.mode == "module" {
		prefix = "envoy.filters.http.dynamic_modules/"
	}
	body, err := b.envoy.ConfigDump(t.Context(), "?resource=dynamic_route_configs")
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Configs []struct {
			RouteConfig struct {
				Name         string `json:"name"`
				VirtualHosts []struct {
					Routes []struct {
						Name  string                     `json:"name"`
						Typed map[string]json.RawMessage `json:"typed_per_filter_config"`
					} `json:"routes"`
				} `json:"virtual_hosts"`
			} `json:"route_config"`
		} `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("config_dump: %v", err)
	}
	routes := 0
	for _, c := range dump.Configs {
		for _, vh := range c.RouteConfig.VirtualHosts {
			for _, r := range vh.Routes {
				routes++
				enabled := false
				for name := range r.Typed {
					enabled = enabled || strings.HasPrefix(name, prefix)
				}
				if !enabled {
					t.Errorf("route %q of %q does not enable %s*: %v", r.Name, c.RouteConfig.Name, prefix, r.Typed)
				}
			}
		}
	}
	if routes < 2 {
		t.Fatalf("config_dump has %d routes, want the HTTPRoute's two rules:\n%s", routes, body)
	}
	t.Logf("%d routes, each enabling %s*", routes, prefix)
}

// killUnderTraffic: SIGKILL the splitter while requests flow through
// Envoy Gateway's Envoy. No request fails; while the splitter is down every
// request is answered by the stable version (a spoofed route header too);
// after a restart on the same port the split resumes.
func (b *gwBed) killUnderTraffic(t *testing.T) {
	if err := b.admin.SetCanary(t.Context(), "api", 20); err != nil {
		t.Fatal(err)
	}
	tr := startTraffic(t, b.client, 2)
	t0 := time.Now()
	waitFor(t, 20*time.Second, "v2 answers before the kill", func() bool {
		c, _ := testbed.Tally(tr.Since(t0))
		return c["v2"] >= 5
	})
	if err := b.splitter.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, 30*time.Second, "100 requests while the splitter is down", func() bool {
		return len(tr.Since(killed)) >= 100
	})
	b.allOn(t, 20, "v1", hdr("x-route-version", "v2"))
	// Nor can a client ask for a copy while nothing decides: both headers
	// of a mirror rule are stripped before the route is chosen.
	copies, _ := b.backends[1].Requests()
	b.allOn(t, 20, "v1", hdr("x-route-version", "v1", "x-mirror-version", "v2"))
	time.Sleep(300 * time.Millisecond)
	if now, _ := b.backends[1].Requests(); now != copies {
		t.Errorf("v2 received %d requests while the splitter was down, after clients sent x-route-version v1 and x-mirror-version v2", now-copies)
	}
	restart := time.Now()
	if err := b.splitter.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "v2 answers after the restart", func() bool {
		c, _ := testbed.Tally(tr.Since(restart))
		return c["v2"] > 0
	})
	tr.Halt()
	all, errs := testbed.Tally(tr.Since(t0))
	if len(errs) > 0 {
		t.Errorf("%d of %d requests failed, first: %v", len(errs), all.Total()+len(errs), errs[0])
	}
	down, _ := testbed.Tally(tr.Between(killed, restart))
	if down["v2"] != 0 || down["v1"] == 0 {
		t.Errorf("while the splitter was down: %v, want all on v1", down)
	}
	if fo := b.failedOpen(t); fo == 0 {
		t.Error("Envoy counted no fail-open request while the splitter was down")
	}
	t.Logf("%d requests, 0 failed; %d while the splitter was down (%v)", all.Total(), down.Total(), down)
}

// TestEnvoyGatewayNegativeControls removes, one at a time, two settings of
// the ext_proc recipe and shows what breaks without them, so the checks
// above can fail and the recipe's comments are true.
func TestEnvoyGatewayNegativeControls(t *testing.T) {
	t.Run("without processingMode the splitter is never asked", func(t *testing.T) {
		b := startGatewayBed(t, "ext_proc", func(name, s string) string {
			if name != "ext-proc.yaml" {
				return s
			}
			out := strings.Replace(s, "      processingMode:\n        request: {}\n        allowModeOverride: true\n", "", 1)
			if out == s {
				t.Fatal("ext-proc.yaml has no processingMode block to remove")
			}
			return out
		}, false)
		b.allOn(t, 20, "v1", hdr("x-beta", "true"))
		stats, err := b.envoy.Stats(t.Context(), "ext_proc")
		if err != nil {
			t.Fatal(err)
		}
		for name, v := range stats {
			if strings.HasSuffix(name, ".streams_started") && v != 0 {
				t.Fatalf("%s = %d: the splitter was asked", name, v)
			}
		}
	})
	t.Run("without the ClientTrafficPolicy spoofed headers pick v2 and ask for copies while the splitter is down, without allowModeOverride no cookie", func(t *testing.T) {
		const strip = "remove: [x-route-version, x-route-reason, x-mirror-version, x-variant]\n---\n"
		b := startGatewayBed(t, "ext_proc", func(name, s string) string {
			switch name {
			case "gateway.yaml":
				start := strings.Index(s, "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: ClientTrafficPolicy")
				end := strings.Index(s, strip)
				if start < 0 || end < start {
					t.Fatal("gateway.yaml has no ClientTrafficPolicy to remove")
				}
				return s[:start] + s[end+len(strip):]
			case "ext-proc.yaml":
				out := strings.Replace(s, "        allowModeOverride: true\n", "", 1)
				if out == s {
					t.Fatal("ext-proc.yaml has no allowModeOverride to remove")
				}
				return out
			}
			return s
		}, true)
		// Without allowModeOverride Envoy ignores the splitter's ask for
		// the response headers: an anonymous client is decided by its new
		// key but never gets the cookie.
		b.useConfig(t, anonymousConfig)
		for range 10 {
			a, err := sendTo(t.Context(), b.client, nil)
			if err != nil {
				t.Fatal(err)
			}
			if a.seen["x-route-reason"] != "sticky_assigned" || len(a.setCookies) != 0 {
				t.Fatalf("without allowModeOverride: reason %q, Set-Cookie %q; want sticky_assigned and no cookie", a.seen["x-route-reason"], a.setCookies)
			}
		}
		b.useConfig(t, baseConfig)
		// Up, the splitter overwrites the client's header: still split.
		b.exactSplit(t, 100, 80, hdr("x-route-version", "v2"))
		if err := b.splitter.Kill(); err != nil {
			t.Fatal(err)
		}
		// Down, nothing picks the route again: the client's headers win.
		b.allOn(t, 10, "v2", hdr("x-route-version", "v2"))
		before, _ := b.backends[1].Requests()
		b.allOn(t, 10, "v1", hdr("x-route-version", "v1", "x-mirror-version", "v2"))
		waitFor(t, 10*time.Second, "the 10 copies a client asked for", func() bool {
			all, _ := b.backends[1].Requests()
			return all-before == 10
		})
	})
}
