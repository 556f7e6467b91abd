package e2e

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// allOn sends n requests with h and requires every one to reach version.
func allOn(t *testing.T, b *bed, n int, version string, h http.Header) {
	t.Helper()
	counts, err := b.client.Count(t.Context(), n, 2, func(int) http.Header { return h })
	if err != nil {
		t.Fatalf("after %v: %v", counts, err)
	}
	if counts[version] != n {
		t.Fatalf("%d requests: %v, want all on %s", n, counts, version)
	}
}

func TestConfigFileRewriteChangesSplit(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) { testConfigFileRewrite(t, mode) })
	}
}

func testConfigFileRewrite(t *testing.T, mode envoy.Mode) {
	b := newBed(t, mode, baseConfig)
	envoyPid := b.envoy.Pid()
	assertExactSplit(t, b, 100, 80, nil)

	steps := []struct {
		name   string
		v1, v2 int
	}{
		{"all to canary", 0, 100},
		{"back to a 5% canary", 95, 5},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			start := time.Now()
			writeFile(t, b.cfgPath, splitConfig(st.v1, st.v2))
			// The reload is asynchronous (watch + debounce): poll until the
			// file's weights show, then require them exactly.
			waitFor(t, 15*time.Second, "the new weights to be served", func() bool {
				var svc struct {
					Weights map[string]float64 `json:"weights"`
				}
				err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &svc)
				return err == nil && svc.Weights["v2"] == float64(st.v2)
			})
			t.Logf("reload took %v", time.Since(start).Round(time.Millisecond))
			assertExactSplit(t, b, 100, st.v1, nil)
		})
	}
	if b.envoy.Pid() != envoyPid || !b.envoy.Running() {
		t.Fatal("Envoy was restarted; a config change must not need that")
	}
}

func TestAdminCanaryChange(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) { testAdminCanaryChange(t, mode) })
	}
}

func testAdminCanaryChange(t *testing.T, mode envoy.Mode) {
	b := newBed(t, mode, baseConfig)
	envoyPid := b.envoy.Pid()
	for _, tc := range []struct {
		name    string
		percent float64
		check   func(t *testing.T)
	}{
		{"canary 0", 0, func(t *testing.T) { allOn(t, b, 50, "v1", nil) }},
		{"canary 100", 100, func(t *testing.T) { allOn(t, b, 50, "v2", nil) }},
		{"canary 50", 50, func(t *testing.T) { assertExactSplit(t, b, 100, 50, nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An admin change is applied before the PUT answers: no polling.
			if err := b.admin.SetCanary(t.Context(), "api", tc.percent); err != nil {
				t.Fatal(err)
			}
			tc.check(t)
		})
	}
	if b.envoy.Pid() != envoyPid || !b.envoy.Running() {
		t.Fatal("Envoy was restarted; an admin change must not need that")
	}
}

// startTraffic sends requests through c from workers goroutines until the
// test ends or the run is halted.
func startTraffic(t *testing.T, c *testbed.Client, workers int) *testbed.Traffic {
	tr := c.StartTraffic(t.Context(), workers)
	t.Cleanup(tr.Halt)
	return tr
}

// TestSplitterKilledUnderLoad: SIGKILL the splitter while requests flow.
// Every request must still succeed, on the stable version while it is
// down; after a restart on the same port the split resumes.
func TestSplitterKilledUnderLoad(t *testing.T) {
	b := newBed(t, envoy.ModeExtProc, baseConfig)
	tr := startTraffic(t, b.client, 2)
	t0 := time.Now()
	waitFor(t, 10*time.Second, "v2 answers before the kill", func() bool {
		c, _ := testbed.Tally(tr.Since(t0))
		return c["v2"] >= 5
	})

	if err := b.splitter.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, 20*time.Second, "100 requests while the splitter is down", func() bool {
		return len(tr.Since(killed)) >= 100
	})
	// While it is down, a client-sent route header must not pick v2 either.
	allOn(t, b, 20, "v1", hdr("x-route-version", "v2"))

	restart := time.Now()
	if err := b.splitter.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	var firstV2 time.Time
	waitFor(t, 10*time.Second, "v2 answers after the restart", func() bool {
		for _, o := range tr.Since(restart) {
			if o.Err == nil && o.Version == "v2" {
				firstV2 = o.End
				return true
			}
		}
		return false
	})
	waitFor(t, 20*time.Second, "200 requests after the restart", func() bool {
		return len(tr.Since(ready)) >= 200
	})
	tr.Halt()

	before, errsBefore := testbed.Tally(tr.Since(t0))
	down := tr.Between(killed, restart)
	downCounts, _ := testbed.Tally(down)
	after, _ := testbed.Tally(tr.Since(firstV2))
	if len(errsBefore) > 0 {
		t.Errorf("%d of %d requests failed, first: %v", len(errsBefore), before.Total()+len(errsBefore), errsBefore[0])
	}
	if downCounts["v1"] != len(down) {
		t.Errorf("while the splitter was down: %v, want all on v1", downCounts)
	}
	if after["v1"] == 0 || after["v2"] == 0 {
		t.Errorf("after the restart: %v, want both versions", after)
	}
	t.Logf("requests: %d total, %d while down (%v), %d after recovery (%v)", before.Total(), len(down), downCounts, after.Total(), after)
	// "ready" is when the harness saw the ready file and /readyz (polled
	// every 20 ms), so Envoy may route to v2 before it.
	t.Logf("recovery: restart -> first v2 answer %v (restart -> ready seen %v)",
		firstV2.Sub(restart).Round(time.Millisecond), ready.Sub(restart).Round(time.Millisecond))
}

// TestSplitterDownFailsOpen: killed (connection refused) or stalled
// (SIGSTOP: Envoy's message timeout fires), every request is answered by
// the stable version, whatever route header the client sends.
func TestSplitterDownFailsOpen(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz} {
		for _, fault := range []string{"killed", "stalled"} {
			t.Run(string(mode)+"/"+fault, func(t *testing.T) {
				b := newBed(t, mode, baseConfig)
				// Up, the splitter decides: the beta header pins v2.
				allOn(t, b, 5, "v2", hdr("x-beta", "true"))
				switch fault {
				case "killed":
					if err := b.splitter.Kill(); err != nil {
						t.Fatal(err)
					}
				case "stalled":
					if err := b.splitter.Pause(); err != nil {
						t.Fatal(err)
					}
				}
				for _, h := range []http.Header{
					hdr("x-beta", "true"),
					hdr("x-route-version", "v2"),
					hdr("X-Route-Version", "v2", "x-route-reason", "header_match"),
				} {
					allOn(t, b, 4, "v1", h)
				}
				stats, err := b.envoy.Stats(t.Context(), "")
				if err != nil {
					t.Fatal(err)
				}
				var failedOpen uint64
				for name, v := range stats {
					if mode == envoy.ModeExtProc && name == "http.ingress_http.ext_proc.failure_mode_allowed" ||
						mode == envoy.ModeExtAuthz && name == "http.ingress_http.ext_authz.failure_mode_allowed" {
						failedOpen = v
					}
				}
				if failedOpen < 12 {
					t.Errorf("Envoy counted %d fail-open requests, want at least 12", failedOpen)
				}
				if fault == "stalled" {
					if err := b.splitter.Resume(); err != nil {
						t.Fatal(err)
					}
					waitFor(t, 10*time.Second, "the resumed splitter to decide again", func() bool {
						v, _ := b.get(t, hdr("x-beta", "true"))
						return v == "v2"
					})
				}
			})
		}
	}
}

// TestSpoofNegativeControl removes the early header mutation from the
// bootstrap and shows that a client-sent route header then does pick v2
// while the splitter is down: the strip is what makes the route header
// unforgeable, and the spoofing checks above can fail.
func TestSpoofNegativeControl(t *testing.T) {
	requireEnvoy(t)
	b := testbed.ForTest(t)
	backends, err := b.StartBackends("v1", "v2")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfg, baseConfig)
	s, err := b.StartSplitter(t.Context(), found.splitterBin, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := testbed.LoopbackParams(envoy.ModeExtProc, s.GRPCAddr, backends...)
	if err != nil {
		t.Fatal(err)
	}
	e, err := b.StartEnvoy(t.Context(), found.envoyBin, p, testbed.EnvoyOptions{Edit: withoutEarlyMutation})
	if err != nil {
		t.Fatal(err)
	}
	c := e.Client()
	defer c.Close()
	spoof := hdr("x-route-version", "v2")

	// Up, the splitter's overwrite still protects the split.
	counts, err := c.Count(t.Context(), 100, 2, func(int) http.Header { return spoof })
	if err != nil || counts["v1"] != 80 || counts["v2"] != 20 {
		t.Fatalf("splitter up, spoofed: %v, %v; want v1=80 v2=20", counts, err)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	counts, err = c.Count(t.Context(), 20, 2, func(int) http.Header { return spoof })
	if err != nil || counts["v2"] != 20 {
		t.Fatalf("splitter down, no early strip, spoofed: %v, %v; want all on v2 (the spoof working)", counts, err)
	}
}

// withoutEarlyMutation drops the connection manager's
// early_header_mutation_extensions block from a rendered bootstrap.
func withoutEarlyMutation(in []byte) ([]byte, error) {
	var out []string
	skip := false
	for line := range strings.Lines(string(in)) {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "early_header_mutation_extensions:"):
			skip = true
			continue
		case skip && strings.HasPrefix(trimmed, "route_config:"):
			skip = false
		}
		if !skip {
			out = append(out, line)
		}
	}
	res := strings.Join(out, "")
	if strings.Contains(res, "early_header_mutation") || !strings.Contains(string(in), "early_header_mutation") {
		return nil, errors.New("early_header_mutation_extensions block not found where expected")
	}
	return []byte(res), nil
}
