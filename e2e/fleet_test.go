package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// fleetConfig is the document the fleet tests push: 80/20, sticky.
const fleetConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id}
`

// fleetBed is one etcd, n splitter processes in fleet mode (each with its
// cache file) and, when asked, one Envoy in front of each splitter, all
// sharing backends v1 and v2.
type fleetBed struct {
	*testbed.Bed
	etcd *testbed.Etcd
	// proxy sits between replica B and etcd, to partition B alone.
	proxy    *testbed.Proxy
	replicas []*testbed.Splitter
	envoys   []*testbed.Envoy
	clients  []*testbed.Client
}

func requireEtcd(t *testing.T) {
	t.Helper()
	if found.etcdErr == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%v (CI is set, so this is a failure; run `make etcd`)", found.etcdErr)
	}
	t.Skipf("%v", found.etcdErr)
}

func newFleet(t *testing.T, n int, withEnvoy bool) *fleetBed {
	t.Helper()
	requireEtcd(t)
	if withEnvoy {
		requireEnvoy(t)
	}
	fb := &fleetBed{Bed: testbed.ForTest(t)}
	var err error
	if fb.etcd, err = fb.StartEtcd(t.Context(), found.etcdBin, testbed.EtcdOptions{}); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "fleet.yaml")
	writeFile(t, doc, fleetConfig)
	if out, err := fb.cli(t, "config", "push", doc); err != nil {
		t.Fatalf("config push: %v\n%s", err, out)
	}
	var backends []*testbed.Backend
	if withEnvoy {
		if backends, err = fb.StartBackends("v1", "v2"); err != nil {
			t.Fatal(err)
		}
	}
	if fb.proxy, err = fb.StartProxy(strings.TrimPrefix(fb.etcd.Endpoint, "http://")); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		endpoint := fb.etcd.Endpoint
		if i == 1 {
			endpoint = "http://" + fb.proxy.Addr
		}
		s, err := fb.StartSplitter(t.Context(), found.splitterBin, "",
			"--etcd-endpoints", endpoint, "--node-id", fmt.Sprintf("replica-%c", 'a'+i),
			"--etcd-cache-file", filepath.Join(fb.Dir, fmt.Sprintf("cache-%d.json", i)))
		if err != nil {
			t.Fatal(err)
		}
		fb.replicas = append(fb.replicas, s)
		if !withEnvoy {
			continue
		}
		p, err := testbed.LoopbackParams(envoy.ModeExtProc, s.GRPCAddr, backends...)
		if err != nil {
			t.Fatal(err)
		}
		e, err := fb.StartEnvoy(t.Context(), found.envoyBin, p, testbed.EnvoyOptions{Concurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		c := e.Client()
		t.Cleanup(c.Close)
		fb.envoys, fb.clients = append(fb.envoys, e), append(fb.clients, c)
	}
	return fb
}

// cli runs the splitter binary with the bed's etcd.
func (fb *fleetBed) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	args = append(args, "--etcd-endpoints", fb.etcd.Endpoint)
	out, err := exec.CommandContext(t.Context(), found.splitterBin, args...).CombinedOutput()
	return string(out), err
}

func (fb *fleetBed) etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{fb.etcd.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serviceView is what the fleet tests read of GET /v1/services/{name}.
type serviceView struct {
	Weights  map[string]float64 `json:"weights"`
	Override bool               `json:"override"`
	Config   struct {
		SHA256          string  `json:"sha256"`
		Revision        int64   `json:"revision"`
		LastReloadError *string `json:"last_reload_error"`
		Fleet           struct {
			NodeID            string     `json:"node_id"`
			Connected         bool       `json:"connected"`
			DisconnectedSince *time.Time `json:"disconnected_since"`
			AppliedRevision   int64      `json:"applied_revision"`
			StartedFrom       string     `json:"started_from"`
		} `json:"fleet"`
	} `json:"config"`
}

func service(t *testing.T, s *testbed.Splitter) serviceView {
	t.Helper()
	var v serviceView
	if err := s.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

type fleetView struct {
	Revision int64 `json:"revision"`
	Replicas []struct {
		NodeID      string `json:"node_id"`
		Revision    int64  `json:"revision"`
		SHA256      string `json:"sha256"`
		StateSHA256 string `json:"state_sha256"`
		Error       string `json:"error"`
	} `json:"replicas"`
}

func fleetOf(t *testing.T, s *testbed.Splitter) fleetView {
	t.Helper()
	var v fleetView
	if err := s.Admin(t.Context(), http.MethodGet, "/v1/fleet", nil, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// canary sets api's canary on s and returns the commit's revision.
func canary(t *testing.T, s *testbed.Splitter, percent float64) int64 {
	t.Helper()
	var ans weightsAnswer
	if err := s.Admin(t.Context(), http.MethodPut, "/v1/services/api/canary", map[string]float64{"percentage": percent}, &ans); err != nil {
		t.Fatal(err)
	}
	if ans.Revision == 0 || ans.V2 != percent {
		t.Fatalf("canary answer %+v: want v2=%v and a revision", ans, percent)
	}
	return ans.Revision
}

// weightsAnswer is a canary answer in fleet mode.
type weightsAnswer struct {
	Service  string  `json:"service"`
	V1       float64 `json:"v1"`
	V2       float64 `json:"v2"`
	Revision int64   `json:"revision"`
}

// waitWeights waits until every replica applied api at v2 = percent.
func (fb *fleetBed) waitWeights(t *testing.T, percent float64, rev int64) {
	t.Helper()
	for _, s := range fb.replicas {
		waitFor(t, 5*time.Second, s.Name+" to apply the change", func() bool {
			v := service(t, s)
			return v.Weights["v2"] == percent && v.Config.Revision >= rev
		})
	}
}

// explainVersion asks s which version the sticky key gets.
func explainVersion(ctx context.Context, s *testbed.Splitter, user string) (version string, weights string, err error) {
	var ex struct {
		Version string          `json:"version"`
		Weights json.RawMessage `json:"weights"`
	}
	body := map[string]any{"authority": "api.example.com", "headers": map[string]string{"x-user-id": user}}
	if err := s.Admin(ctx, http.MethodPost, "/v1/explain", body, &ex); err != nil {
		return "", "", err
	}
	return ex.Version, string(ex.Weights), nil
}

// metric reads one unlabelled sample from s's /metrics.
func metric(t *testing.T, s *testbed.Splitter, name string) float64 {
	t.Helper()
	resp, err := http.Get(s.AdminURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("%s: no metric %s", s.Name, name)
	return 0
}

// Three Envoy + splitter pairs on one etcd. One admin call on replica A:
// B and C apply it (their admin API and explain say so), every Envoy's
// split, counted at the backends, moves without restarting anything,
// every replica gives 10,000 sticky keys the same version, and /v1/fleet
// shows the three converged.
func TestFleetCanaryThroughEnvoy(t *testing.T) {
	fb := newFleet(t, 3, true)
	a := fb.replicas[0]
	for i, c := range fb.clients {
		assertSplitVia(t, c, 100, map[string]int{"v1": 80, "v2": 20}, fmt.Sprintf("envoy %d before", i))
	}

	rev := canary(t, a, 50)
	fb.waitWeights(t, 50, rev)
	for _, s := range fb.replicas[1:] {
		v := service(t, s)
		if !v.Override || v.Config.LastReloadError != nil || !v.Config.Fleet.Connected {
			t.Fatalf("%s: %+v", s.Name, v)
		}
		if _, w, err := explainVersion(t.Context(), s, "someone"); err != nil || !strings.Contains(w, `"v2":50`) {
			t.Fatalf("%s explain weights %s (%v)", s.Name, w, err)
		}
	}
	for i, c := range fb.clients {
		assertSplitVia(t, c, 100, map[string]int{"v1": 50, "v2": 50}, fmt.Sprintf("envoy %d after", i))
	}
	for _, s := range fb.replicas {
		if n := metric(t, s, "splitter_etcd_propagation_seconds_count"); n < 1 {
			t.Fatalf("%s: propagation not measured (%v)", s.Name, n)
		}
	}

	// The same sticky answer everywhere, for 10,000 keys.
	const keys = 10000
	answers := make([][]string, len(fb.replicas))
	var wg sync.WaitGroup
	for r, s := range fb.replicas {
		answers[r] = make([]string, keys)
		for w := range 4 {
			wg.Go(func() {
				for k := w; k < keys; k += 4 {
					v, _, err := explainVersion(t.Context(), s, "user-"+strconv.Itoa(k))
					if err != nil {
						t.Error(err)
						return
					}
					answers[r][k] = v
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	onV2 := 0
	for k := range keys {
		if answers[0][k] != answers[1][k] || answers[0][k] != answers[2][k] {
			t.Fatalf("user-%d: %s, %s, %s", k, answers[0][k], answers[1][k], answers[2][k])
		}
		if answers[0][k] == "v2" {
			onV2++
		}
	}
	if onV2 < 4700 || onV2 > 5300 {
		t.Fatalf("%d of %d sticky keys on v2 at 50%%", onV2, keys)
	}

	waitFor(t, 5*time.Second, "/v1/fleet to show three converged replicas", func() bool {
		v := fleetOf(t, fb.replicas[2])
		if len(v.Replicas) != 3 {
			return false
		}
		for _, r := range v.Replicas {
			if r.Revision < rev || r.StateSHA256 != v.Replicas[0].StateSHA256 || r.Error != "" {
				return false
			}
		}
		return true
	})
}

// assertSplitVia sends n unkeyed requests through c and wants exactly the
// given counts (the round-robin is exact per splitter).
func assertSplitVia(t *testing.T, c *testbed.Client, n int, want map[string]int, what string) {
	t.Helper()
	got := testbed.Counts{}
	for range n {
		rep, err := c.Get(t.Context(), "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		got[rep.Version]++
	}
	for v, w := range want {
		if got[v] != w {
			t.Fatalf("%s: %s, want %v", what, got, want)
		}
	}
}

// Two replicas changed at once, many times: the three end agreeing on the
// change committed last.
func TestFleetConcurrentChangesConverge(t *testing.T) {
	fb := newFleet(t, 3, false)
	type answer struct {
		rev int64
		v2  float64
	}
	var mu sync.Mutex
	var answers []answer
	var wg sync.WaitGroup
	for i, s := range fb.replicas[:2] {
		wg.Go(func() {
			for j := range 10 {
				pct := float64(1 + i*50 + j)
				var ans weightsAnswer
				if err := s.Admin(t.Context(), http.MethodPut, "/v1/services/api/canary", map[string]float64{"percentage": pct}, &ans); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				answers = append(answers, answer{ans.Revision, ans.V2})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	last := slices.MaxFunc(answers, func(x, y answer) int { return int(x.rev - y.rev) })
	fb.waitWeights(t, last.v2, last.rev)
	waitFor(t, 5*time.Second, "one state everywhere", func() bool {
		v := fleetOf(t, fb.replicas[0])
		return len(v.Replicas) == 3 && v.Replicas[0].StateSHA256 == v.Replicas[1].StateSHA256 &&
			v.Replicas[1].StateSHA256 == v.Replicas[2].StateSHA256
	})
}

// Faults under traffic through Envoy in front of replica A: etcd stopped
// (no failed decision, last good kept, ready, "disconnected since"), a
// replica restarted during the outage (from its cache file), etcd back (a
// later change reaches everyone), a compaction past the revision of a
// replica partitioned from etcd (it recovers when the network heals), and an invalid document put straight into etcd
// (rejected everywhere, visible in /v1/fleet and the metrics, the last
// good still serving).
func TestFleetFaults(t *testing.T) {
	fb := newFleet(t, 3, true)
	a, b, c := fb.replicas[0], fb.replicas[1], fb.replicas[2]
	rev := canary(t, a, 30)
	fb.waitWeights(t, 30, rev)
	tr := startTraffic(t, fb.clients[0], 2)
	allowedBefore := failureModeAllowed(t, fb.envoys[0])

	t.Log("etcd stopped under traffic")
	if err := fb.etcd.Stop(t.Context()); err != nil {
		t.Logf("etcd stop: %v", err)
	}
	down := time.Now()
	for _, s := range fb.replicas {
		waitFor(t, 10*time.Second, s.Name+" to report the disconnection", func() bool {
			v := service(t, s)
			return !v.Config.Fleet.Connected && v.Config.Fleet.DisconnectedSince != nil
		})
		if err := s.Admin(t.Context(), http.MethodGet, "/readyz", nil, nil); err != nil {
			t.Fatalf("%s not ready while etcd is down: %v", s.Name, err)
		}
		if metric(t, s, "splitter_etcd_connected") != 0 {
			t.Fatalf("%s: splitter_etcd_connected not 0", s.Name)
		}
	}
	err := a.Admin(t.Context(), http.MethodPut, "/v1/services/api/canary", map[string]float64{"percentage": 90}, nil)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("a change while etcd is down: %v, want 503", err)
	}

	t.Log("replica C restarted while etcd is down")
	if err := c.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v := service(t, c); v.Weights["v2"] != 30 || v.Config.Fleet.StartedFrom != "cache" {
		t.Fatalf("C after its restart: %+v", v)
	}
	time.Sleep(time.Second) // traffic keeps flowing during the outage
	outage := tr.Between(down, time.Now())

	t.Log("etcd back")
	if err := fb.etcd.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, s := range fb.replicas {
		waitFor(t, 15*time.Second, s.Name+" to reconnect", func() bool { return service(t, s).Config.Fleet.Connected })
	}
	rev = canary(t, a, 40)
	fb.waitWeights(t, 40, rev)

	t.Log("compaction past the revision of a replica cut off from etcd")
	fb.proxy.Cut()
	waitFor(t, 10*time.Second, "B to notice the partition", func() bool { return !service(t, b).Config.Fleet.Connected })
	for _, p := range []float64{41, 42, 43} {
		rev = canary(t, a, p)
	}
	ec := fb.etcdClient(t)
	if _, err := ec.Compact(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	if v := service(t, b); v.Weights["v2"] != 40 {
		t.Fatalf("B while cut off: %+v", v)
	}
	fb.proxy.Restore()
	fb.waitWeights(t, 43, rev)

	t.Log("an invalid document straight into etcd")
	if _, err := ec.Put(t.Context(), "/splitter/config", strings.Replace(fleetConfig, "v2: 20", "v2: 25", 1)); err != nil {
		t.Fatal(err)
	}
	for _, s := range fb.replicas {
		waitFor(t, 5*time.Second, s.Name+" to reject it", func() bool {
			v := service(t, s)
			return v.Config.LastReloadError != nil && strings.Contains(*v.Config.LastReloadError, "not 100")
		})
		if v := service(t, s); v.Weights["v2"] != 43 {
			t.Fatalf("%s no longer serves the last good state: %+v", s.Name, v)
		}
		if metric(t, s, "splitter_etcd_config_rejected") != 1 || metric(t, s, "splitter_etcd_rejected_documents_total") < 1 {
			t.Fatalf("%s: rejection not in the metrics", s.Name)
		}
	}
	waitFor(t, 5*time.Second, "/v1/fleet to show the rejection on every replica", func() bool {
		v := fleetOf(t, a)
		if len(v.Replicas) != 3 {
			return false
		}
		for _, r := range v.Replicas {
			if !strings.Contains(r.Error, "not 100") {
				return false
			}
		}
		return true
	})
	if metric(t, b, "splitter_etcd_watch_compacted_total") < 1 {
		t.Error("B: the compaction is not counted")
	}

	tr.Halt()
	total, errs := testbed.Tally(tr.Since(time.Time{}))
	if len(errs) > 0 {
		t.Fatalf("%d failed requests, first: %v", len(errs), errs[0])
	}
	if n := failureModeAllowed(t, fb.envoys[0]) - allowedBefore; n != 0 {
		t.Fatalf("%d requests went on without a decision", n)
	}
	during, _ := testbed.Tally(outage)
	if during["v2"] == 0 || during.Total() < 20 {
		t.Fatalf("during the outage: %s; want the split to go on", during)
	}
	t.Logf("requests: %s in all, %s while etcd was down", total, during)
}

func failureModeAllowed(t *testing.T, e *testbed.Envoy) uint64 {
	t.Helper()
	stats, err := e.Stats(t.Context(), "failure_mode_allowed")
	if err != nil {
		t.Fatal(err)
	}
	return stats["http.ingress_http.ext_proc.failure_mode_allowed"]
}

// Without etcd_endpoints there is no fleet: /v1/fleet says so.
func TestFleetEndpointInFileMode(t *testing.T) {
	requireEnvoy(t)
	b := testbed.ForTest(t)
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, cfg, fleetConfig)
	s, err := b.StartSplitter(t.Context(), found.splitterBin, cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Admin(t.Context(), http.MethodGet, "/v1/fleet", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "not in fleet mode") {
		t.Fatalf("GET /v1/fleet in file mode: %v", err)
	}
}

// splitter config push and get, as an operator runs them.
func TestFleetConfigCLI(t *testing.T) {
	fb := newFleet(t, 0, false) // etcd with the document pushed by newFleet
	dir := t.TempDir()
	exitCode := func(err error) int {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}

	cmd := exec.CommandContext(t.Context(), found.splitterBin, "config", "get", "--etcd-endpoints", fb.etcd.Endpoint)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("config get: %v\n%s", err, stderr.String())
	}
	var rev int64
	if _, err := fmt.Sscanf(stderr.String(), "revision %d", &rev); err != nil || stdout.String() != fleetConfig {
		t.Fatalf("config get: stdout %q stderr %q", stdout.String(), stderr.String())
	}

	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, strings.Replace(fleetConfig, "v2: 20", "v2: 30", 1))
	out, err := fb.cli(t, "config", "push", bad)
	if exitCode(err) != 1 || !strings.Contains(out, "not 100") || !strings.Contains(out, "nothing written") {
		t.Fatalf("push of an invalid file: %v\n%s", err, out)
	}

	next := filepath.Join(dir, "next.yaml")
	writeFile(t, next, strings.Replace(fleetConfig, "{v1: 80, v2: 20}", "{v1: 70, v2: 30}", 1))
	out, err = fb.cli(t, "config", "push", "--expect-revision", strconv.FormatInt(rev+100, 10), next)
	if exitCode(err) != 1 || !strings.Contains(out, "not the expected one") {
		t.Fatalf("push with a stale revision: %v\n%s", err, out)
	}
	out, err = fb.cli(t, "config", "push", "--expect-revision", strconv.FormatInt(rev, 10), next)
	if err != nil || !strings.Contains(out, "written to /splitter/config at revision") {
		t.Fatalf("push with the right revision: %v\n%s", err, out)
	}

	raw, err := exec.CommandContext(t.Context(), found.splitterBin, "config", "get").CombinedOutput()
	if exitCode(err) != 2 || !strings.Contains(string(raw), "etcd_endpoints is not set") {
		t.Fatalf("get without endpoints: %v\n%s", err, raw)
	}
}
