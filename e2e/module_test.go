package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// TestModuleAgreesWithExtProc: 10,000 generated requests, many with a
// sticky, rule or cookie header on two lines, sent in the same order
// through Envoy with ext_proc and through Envoy with the module, get the
// same version, reason and variant. The module reads only the headers the
// table needs, one get_header call per value; ext_proc gets them all.
func TestModuleAgreesWithExtProc(t *testing.T) {
	requireModule(t)
	// A generous message timeout: a request that failed open on a busy
	// machine would be no decision to compare (and would move the
	// round-robin of the ones after it).
	extProc := startBed(t, envoy.ModeExtProc, parityConfig, nil, false, func(p *envoy.Params) { p.MessageTimeout = 5 * time.Second })
	mod := newBed(t, envoy.ModeModule, parityConfig)
	reqs := parityRequests(10000)
	// Both beds are driven at once, each by one client in request order (so
	// that unkeyed requests meet the same round-robin position).
	got := map[envoy.Mode][]seen{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for mode, b := range map[envoy.Mode]*bed{envoy.ModeExtProc: extProc, envoy.ModeModule: mod} {
		wg.Go(func() {
			out := make([]seen, len(reqs))
			for i, h := range reqs {
				rep, err := b.client.Get(t.Context(), "/", h)
				if err != nil {
					t.Errorf("%s request %d: %v", mode, i, err)
					return
				}
				out[i] = seen{rep.Version, rep.Headers["x-route-reason"], rep.Headers["x-variant"]}
			}
			mu.Lock()
			got[mode] = out
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	requireAgreement(t, [2]string{"ext_proc", "the module"}, reqs, [2][]seen{got[envoy.ModeExtProc], got[envoy.ModeModule]}, 2500)
}

// TestModuleConfigErrorSendsToStable: the module starts on a configuration
// that does not parse. Envoy serves, every request goes to the stable
// version with no route header and reason unmatched, and the module's
// admin API says why; fixing the file brings the split back without
// restarting Envoy.
func TestModuleConfigErrorSendsToStable(t *testing.T) {
	b := newBed(t, envoy.ModeModule, "services:\n  - name: api\n    weights: {v1: 80, v2: 30}\n")
	pid := b.envoy.Pid()
	for range 20 {
		v, got := b.get(t, hdr("x-beta", "true", "x-route-version", "v2"))
		if v != "v1" || got["x-route-reason"] != "unmatched" {
			t.Fatalf("request went to %s with reason %q, want v1 and unmatched", v, got["x-route-reason"])
		}
		if rv, ok := got["x-route-version"]; ok {
			t.Fatalf("the backend saw x-route-version %q; it must be removed", rv)
		}
	}
	err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "sum") {
		t.Fatalf("GET /v1/services: %v; want 503 saying why (the weights sum to 110)", err)
	}
	writeFile(t, b.cfgPath, baseConfig)
	waitFor(t, 15*time.Second, "the fixed configuration", func() bool {
		return b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, nil) == nil
	})
	assertExactSplit(t, b, 100, 80, nil)
	if b.envoy.Pid() != pid {
		t.Fatal("Envoy restarted")
	}
}

// faultLib is libsplitter.so built with -tags splitter_fault: a request
// carrying x-splitter-fault panics inside the decision.
var faultLib struct {
	once sync.Once
	dir  string
	err  error
}

// TestModulePanicKeepsEnvoyServing: a decision that panics (the fault
// build) is recovered inside Envoy: the request is answered from the stable
// version without the client's route header, the panic is counted, and
// Envoy goes on deciding the others.
func TestModulePanicKeepsEnvoyServing(t *testing.T) {
	requireModule(t)
	faultLib.once.Do(func() {
		faultLib.dir, faultLib.err = os.MkdirTemp("", "splitter-e2e-fault-")
		if faultLib.err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			_, faultLib.err = testbed.BuildModule(ctx, found.root, faultLib.dir, "splitter_fault")
		}
	})
	if faultLib.err != nil {
		t.Fatal(faultLib.err)
	}
	t.Cleanup(func() { os.RemoveAll(faultLib.dir) })
	b := startModuleBed(t, faultLib.dir, baseConfig, nil)
	pid := b.envoy.Pid()
	for i := range 30 {
		v, got := b.get(t, hdr("x-splitter-fault", "1", "x-beta", "true", "x-route-version", "v2"))
		if v != "v1" || got["x-route-reason"] != "unmatched" || got["x-route-version"] != "" {
			t.Fatalf("faulty request %d: %s, reason %q, route header %q; want v1, unmatched, none", i, v, got["x-route-reason"], got["x-route-version"])
		}
	}
	assertExactSplit(t, b, 100, 80, nil)
	allOn(t, b, 10, "v2", hdr("x-beta", "true"))
	if b.envoy.Pid() != pid || !b.envoy.Running() {
		t.Fatal("Envoy did not survive the panics")
	}
	waitFor(t, 5*time.Second, "the panics in the metrics", func() bool {
		body := metricsBody(t, b)
		return strings.Contains(body, "splitter_panics_total 30\n") &&
			strings.Contains(body, `splitter_stream_results_total{api="module",result="panic"} 30`+"\n")
	})
}

// metricsBody returns the module's /metrics.
func metricsBody(t *testing.T, b *bed) string {
	t.Helper()
	resp, err := http.Get(b.admin.AdminURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestModuleCountsResponsesPerVersion: the module counts every response
// by the version that served it and its status class, in C; the counts
// are in its metrics (and are what the rollout guard reads).
func TestModuleCountsResponsesPerVersion(t *testing.T) {
	b := newBed(t, envoy.ModeModule, baseConfig)
	if err := b.admin.SetCanary(t.Context(), "api", 0); err != nil {
		t.Fatal(err)
	}
	b.backends[1].Fail(100)
	for range 100 {
		if v, _ := b.get(t, nil); v != "v1" {
			t.Fatalf("an unkeyed request went to %s at canary 0", v)
		}
		if _, err := b.client.Get(t.Context(), "/", hdr("x-beta", "true")); err == nil || !strings.Contains(err.Error(), "500") {
			t.Fatalf("a request pinned to the failing v2: %v, want a 500", err)
		}
	}
	want := map[string]string{
		`splitter_responses_total{api="module",class="2xx",service="api",version="v1"}`: "100",
		`splitter_responses_total{api="module",class="5xx",service="api",version="v2"}`: "100",
	}
	var lines string
	waitFor(t, 5*time.Second, "every response in the metrics", func() bool {
		lines = grepLines(metricsBody(t, b), "splitter_responses_total{")
		got := map[string]string{}
		for l := range strings.Lines(lines) {
			if k, v, ok := strings.Cut(strings.TrimSpace(l), " "); ok {
				got[k] = v
			}
		}
		return fmt.Sprint(got) == fmt.Sprint(want)
	})
	t.Logf("%s", lines)
}

func grepLines(body, word string) string {
	var out []string
	for l := range strings.Lines(body) {
		if strings.Contains(l, word) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}

// TestModuleFleetMode: the module follows etcd (etcd_endpoints in
// filter_config): the document pushed before Envoy starts, an admin change
// made on the module (written through to etcd), and a document pushed
// later, each applied without restarting Envoy.
func TestModuleFleetMode(t *testing.T) {
	requireEtcd(t)
	requireModule(t)
	fb := &fleetBed{Bed: testbed.ForTest(t)}
	var err error
	if fb.etcd, err = fb.StartEtcd(t.Context(), found.etcdBin, testbed.EtcdOptions{}); err != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf("%s/fleet.yaml", t.TempDir())
	writeFile(t, doc, fleetConfig)
	if out, err := fb.cli(t, "config", "push", doc); err != nil {
		t.Fatalf("config push: %v\n%s", err, out)
	}
	b := startModuleBed(t, found.moduleDir, "", map[string]any{
		"etcd_endpoints": []string{fb.etcd.Endpoint}, "node_id": "module-a",
		"etcd_cache_file": fmt.Sprintf("%s/cache.json", t.TempDir()),
	})
	pid := b.envoy.Pid()
	assertSplitVia(t, b.client, 100, map[string]int{"v1": 80, "v2": 20}, "from etcd")

	if err := b.admin.SetCanary(t.Context(), "api", 50); err != nil {
		t.Fatal(err)
	}
	assertSplitVia(t, b.client, 100, map[string]int{"v1": 50, "v2": 50}, "after the admin change")

	writeFile(t, doc, strings.Replace(fleetConfig, "{v1: 80, v2: 20}", "{v1: 10, v2: 90}", 1))
	if out, err := fb.cli(t, "config", "push", doc); err != nil {
		t.Fatalf("config push: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "the pushed weights", func() bool {
		var svc struct {
			Weights map[string]float64 `json:"weights"`
		}
		err := b.admin.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &svc)
		return err == nil && svc.Weights["v2"] == 90
	})
	assertSplitVia(t, b.client, 100, map[string]int{"v1": 10, "v2": 90}, "after the push")
	if b.envoy.Pid() != pid {
		t.Fatal("Envoy restarted")
	}
}
