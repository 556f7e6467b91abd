package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// configMapDir lays a directory out the way the kubelet's atomic writer
// does for a mounted ConfigMap: the data in a timestamped directory,
// "..data" a symlink to it, and config.yaml a symlink through "..data".
type configMapDir struct {
	dir     string
	current string // the timestamped directory ..data points to
	n       int
}

func newConfigMapDir(t *testing.T, content string) *configMapDir {
	t.Helper()
	c := &configMapDir{dir: t.TempDir()}
	c.current = c.writeVersion(t, content)
	if err := os.Symlink(c.current, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), filepath.Join(c.dir, "config.yaml")); err != nil {
		t.Fatal(err)
	}
	return c
}

// path is what the splitter is given: dir/config.yaml.
func (c *configMapDir) path() string { return filepath.Join(c.dir, "config.yaml") }

func (c *configMapDir) writeVersion(t *testing.T, content string) string {
	t.Helper()
	c.n++
	name := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", c.n, 1000+c.n)
	if err := os.Mkdir(filepath.Join(c.dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, name, "config.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

// swap publishes content as the kubelet does: a new timestamped directory,
// a "..data_tmp" symlink to it renamed over "..data" (the one atomic
// step), then the old directory removed. It returns the time of the rename.
func (c *configMapDir) swap(t *testing.T, content string) time.Time {
	t.Helper()
	next := c.writeVersion(t, content)
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(next, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if err := os.RemoveAll(filepath.Join(c.dir, c.current)); err != nil {
		t.Fatal(err)
	}
	c.current = next
	return at
}

// bedAt is newBed with the splitter started on an existing config path.
func bedAt(t *testing.T, cfgPath string) *bed {
	t.Helper()
	requireEnvoy(t)
	b := &bed{Bed: testbed.ForTest(t), cfgPath: cfgPath}
	var err error
	b.backends, err = b.StartBackends("v1", "v2")
	if err != nil {
		t.Fatal(err)
	}
	b.splitter, err = b.StartSplitter(t.Context(), found.splitterBin, cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := testbed.LoopbackParams(envoy.ModeExtProc, b.splitter.GRPCAddr, b.backends...)
	if err != nil {
		t.Fatal(err)
	}
	b.envoy, err = b.StartEnvoy(t.Context(), found.envoyBin, p, testbed.EnvoyOptions{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.client = b.envoy.Client()
	t.Cleanup(b.client.Close)
	return b
}

// firstOn returns the end time of the first successful request started
// after t0 that reached version.
func firstOn(tr *testbed.Traffic, t0 time.Time, version string) (time.Time, bool) {
	for _, o := range tr.Since(t0) {
		if o.Err == nil && o.Version == version {
			return o.End, true
		}
	}
	return time.Time{}, false
}

// failures reports the failed requests among outcomes.
func failures(t *testing.T, what string, outs []testbed.Outcome) {
	t.Helper()
	counts, errs := testbed.Tally(outs)
	if len(errs) > 0 {
		t.Errorf("%s: %d of %d requests failed, first: %v", what, len(errs), len(outs), errs[0])
	}
	t.Logf("%s: %d requests %v, %d failed", what, len(outs), counts, len(errs))
}

// TestConfigMapSwapUnderLoad: the splitter runs on dir/config.yaml ->
// ..data/config.yaml; the directory is swapped as a ConfigMap update does,
// twice (the watch must survive the removal of the directory it resolved
// to), while requests flow through Envoy. No request fails and each new
// split takes over completely.
func TestConfigMapSwapUnderLoad(t *testing.T) {
	cm := newConfigMapDir(t, splitConfig(100, 0))
	b := bedAt(t, cm.path())
	tr := startTraffic(t, b.client, 4)
	t0 := time.Now()
	waitFor(t, 10*time.Second, "100 requests on the first split", func() bool { return len(tr.Since(t0)) >= 100 })

	for _, step := range []struct {
		v1, v2 int
		want   string // the only version the new split routes to
	}{{0, 100, "v2"}, {100, 0, "v1"}} {
		swapped := cm.swap(t, splitConfig(step.v1, step.v2))
		var first time.Time
		waitFor(t, 15*time.Second, "the first request on the new split", func() bool {
			var ok bool
			first, ok = firstOn(tr, swapped, step.want)
			return ok
		})
		waitFor(t, 20*time.Second, "200 requests on the new split", func() bool { return len(tr.Since(first)) >= 200 })
		// Requests that started once the new split answered must all use it.
		if c, _ := testbed.Tally(tr.Since(first)); c[step.want] != c.Total() {
			t.Errorf("after the swap to %s only: %v", step.want, c)
		}
		var svc struct {
			Weights map[string]float64 `json:"weights"`
		}
		if err := b.splitter.Admin(t.Context(), "GET", "/v1/services/api", nil, &svc); err != nil {
			t.Fatal(err)
		}
		if svc.Weights["v1"] != float64(step.v1) || svc.Weights["v2"] != float64(step.v2) {
			t.Errorf("admin API shows %v after the swap, want v1=%d v2=%d", svc.Weights, step.v1, step.v2)
		}
		t.Logf("recovery: ConfigMap swap to %s -> first request on the new split %v", step.want, first.Sub(swapped).Round(time.Millisecond))
	}
	tr.Halt()
	failures(t, "whole run", tr.Since(t0))
}

// TestStallPastMessageTimeoutUnderLoad: the splitter is stopped (SIGSTOP)
// for well past Envoy's message_timeout while requests flow. With
// failure_mode_allow every request is still answered, by the stable
// version; after SIGCONT the split resumes.
func TestStallPastMessageTimeoutUnderLoad(t *testing.T) {
	b := newBed(t, envoy.ModeExtProc, baseConfig)
	tr := startTraffic(t, b.client, 4)
	t0 := time.Now()
	waitFor(t, 10*time.Second, "v2 answers before the stall", func() bool {
		c, _ := testbed.Tally(tr.Since(t0))
		return c["v2"] >= 5
	})

	if err := b.splitter.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	// Ten message timeouts per worker at least.
	stall := 10 * envoy.DefaultMessageTimeout
	waitFor(t, 20*time.Second, "requests during the stall", func() bool {
		return time.Since(paused) >= stall && len(tr.Since(paused)) >= 20
	})
	// Taken before SIGCONT: a request the splitter answers right after it
	// can end before a timestamp taken afterwards.
	resumed := time.Now()
	if err := b.splitter.Resume(); err != nil {
		t.Fatal(err)
	}
	var first time.Time
	waitFor(t, 15*time.Second, "v2 answers after SIGCONT", func() bool {
		var ok bool
		first, ok = firstOn(tr, resumed, "v2")
		return ok
	})
	waitFor(t, 20*time.Second, "100 requests after recovery", func() bool { return len(tr.Since(first)) >= 100 })
	tr.Halt()

	failures(t, "whole run", tr.Since(t0))
	during := tr.Between(paused, resumed)
	c, _ := testbed.Tally(during)
	if c["v1"] != len(during) {
		t.Errorf("during the stall: %v, want every request on v1", c)
	}
	after, _ := testbed.Tally(tr.Since(first))
	if after["v1"] == 0 || after["v2"] == 0 {
		t.Errorf("after recovery: %v, want both versions", after)
	}
	stats, err := b.envoy.Stats(t.Context(), "ext_proc")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stall %v: %d requests answered during it %v; envoy ext_proc message_timeouts=%d failure_mode_allowed=%d",
		resumed.Sub(paused).Round(time.Millisecond), len(during), c,
		stats["http.ingress_http.ext_proc.message_timeouts"], stats["http.ingress_http.ext_proc.failure_mode_allowed"])
	t.Logf("recovery: SIGCONT -> first v2 answer %v", first.Sub(resumed).Round(time.Millisecond))
}

// TestKillRestartHeavyLoad: SIGKILL and restart with eight concurrent
// clients. No request fails; the time from the restart to the first canary
// answer is reported.
func TestKillRestartHeavyLoad(t *testing.T) {
	b := newBed(t, envoy.ModeExtProc, baseConfig)
	tr := startTraffic(t, b.client, 8)
	t0 := time.Now()
	waitFor(t, 10*time.Second, "200 requests before the kill", func() bool { return len(tr.Since(t0)) >= 200 })
	if err := b.splitter.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, 20*time.Second, "200 requests while down", func() bool { return len(tr.Since(killed)) >= 200 })
	restart := time.Now()
	if err := b.splitter.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	var first time.Time
	waitFor(t, 15*time.Second, "v2 answers after the restart", func() bool {
		var ok bool
		first, ok = firstOn(tr, restart, "v2")
		return ok
	})
	waitFor(t, 20*time.Second, "400 requests after recovery", func() bool { return len(tr.Since(first)) >= 400 })
	tr.Halt()

	failures(t, "whole run", tr.Since(t0))
	down := tr.Between(killed, restart)
	c, _ := testbed.Tally(down)
	if c["v1"] != len(down) {
		t.Errorf("while down: %v, want every request on v1", c)
	}
	t.Logf("recovery: restart -> first v2 answer %v (restart -> ready seen %v)",
		first.Sub(restart).Round(time.Millisecond), ready.Sub(restart).Round(time.Millisecond))
}
