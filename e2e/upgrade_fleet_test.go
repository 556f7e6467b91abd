package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/testbed"
)

// mixedConfig is a document both releases read.
const mixedConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id}
    rollout:
      steps: [10, 50, 100]
      hold: 1h
      guard: {window: 1s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2}
`

// mixedFleet is one etcd and splitter replicas in fleet mode (no Envoy),
// of either release.
type mixedFleet struct {
	*testbed.Bed
	etcd *testbed.Etcd
	c    *clientv3.Client
	rel  *testbed.Release
}

func newMixedFleet(t *testing.T, doc string) *mixedFleet {
	t.Helper()
	requireEtcd(t)
	mf := &mixedFleet{Bed: testbed.ForTest(t), rel: previousRelease(t)}
	var err error
	if mf.etcd, err = mf.StartEtcd(t.Context(), found.etcdBin, testbed.EtcdOptions{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	writeFile(t, path, doc)
	if out, err := testbedCLI(t, mf.etcd, "config", "push", path); err != nil {
		t.Fatalf("config push: %v\n%s", err, out)
	}
	mf.c = (&fleetBed{etcd: mf.etcd}).etcdClient(t)
	return mf
}

// start runs binary as replica node, with its cache file and extra
// arguments.
func (mf *mixedFleet) start(t *testing.T, binary, node string, extra ...string) *testbed.Splitter {
	t.Helper()
	args := append([]string{"--etcd-endpoints", mf.etcd.Endpoint, "--node-id", node,
		"--etcd-cache-file", filepath.Join(mf.Dir, node+"-cache.json")}, extra...)
	s, err := mf.StartSplitter(t.Context(), binary, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (mf *mixedFleet) put(t *testing.T, key, val string) {
	t.Helper()
	if _, err := mf.c.Put(t.Context(), "/splitter/"+key, val); err != nil {
		t.Fatal(err)
	}
}

func (mf *mixedFleet) del(t *testing.T, key string) {
	t.Helper()
	if _, err := mf.c.Delete(t.Context(), "/splitter/"+key); err != nil {
		t.Fatal(err)
	}
}

// record is what a replica wrote under replicas/.
func (mf *mixedFleet) record(t *testing.T, node string) map[string]any {
	t.Helper()
	resp, err := mf.c.Get(t.Context(), "/splitter/replicas/"+node)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("replicas/%s: %v (%d keys)", node, err, len(resp.Kvs))
	}
	var r map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// rawService is GET /v1/services/api as JSON fields.
func rawService(t *testing.T, s *testbed.Splitter) map[string]any {
	t.Helper()
	var v map[string]any
	if err := s.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// The previous release beside this one on one etcd: first, by experiment,
// what it does with each key and field this release writes (they are put
// straight into etcd, as this release would have before the older replica
// joined); then what this release does while that replica holds a lease:
// it refuses to write them (409, naming it), writes what it reads, and
// writes them once it left.
func TestUpgradeOlderReplicaMeetsNewState(t *testing.T) {
	mf := newMixedFleet(t, mixedConfig)
	old := mf.start(t, mf.rel.Splitter, "old-a")
	cur := mf.start(t, found.splitterBin, "new-b")
	waitFor(t, 10*time.Second, "both records", func() bool {
		return len(fleetOf(t, cur).Replicas) == 2
	})
	if _, ok := mf.record(t, "old-a")["features"]; ok {
		t.Fatalf("the previous release's record lists features: %v", mf.record(t, "old-a"))
	}

	// 1. Runtime mirrors, routes and mirror routes: inside the range the
	// older replica watches, ignored without a word (it serves on
	// without them: its state hash does not move, it reports no error).
	mf.put(t, "mirrors/api", `{"mirror":{"version":"v2","percent":10},"against":null,"set_at":"2026-01-02T03:04:05Z"}`)
	mf.put(t, "live-routes/api/testers", `{"when":[{"header":"x-canary","exact":"1"}],"version":"v2","set_at":"2026-01-02T03:04:05Z"}`)
	mf.put(t, "live-mirror-routes/api/copy", `{"when":[{"header":"x-canary","exact":"1"}],"version":"v2","percent":50,"set_at":"2026-01-02T03:04:05Z"}`)
	rev := canary(t, cur, 30) // a change it does apply, after them
	waitFor(t, 10*time.Second, "the older replica at the canary's revision", func() bool {
		v := service(t, old)
		return v.Config.Revision >= rev && v.Weights["v2"] == 30
	})
	if v := rawService(t, old); v["rules"] == nil || len(v["rules"].([]any)) != 0 || v["mirror"] != nil {
		t.Fatalf("the previous release applied a runtime route or mirror: %v", v)
	}
	if v := rawService(t, cur); len(v["rules"].([]any)) != 1 || v["mirror"] == nil {
		t.Fatalf("this release does not apply them: %v", v)
	}
	waitFor(t, 10*time.Second, "the records at the canary's revision", func() bool {
		return mf.record(t, "old-a")["revision"].(float64) >= float64(rev) && mf.record(t, "new-b")["revision"].(float64) >= float64(rev)
	})
	if o, n := mf.record(t, "old-a"), mf.record(t, "new-b"); o["state_sha256"] == n["state_sha256"] || o["error"] != nil {
		t.Fatalf("the replicas should disagree on the state (one ignores the new keys) with no error said: old %v new %v", o, n)
	}
	v := fleetOfRaw(t, cur)
	if got := v.NotAppliedByOlder; !slices.Equal(got, []string{"live-mirror-routes/api/copy", "live-routes/api/testers", "mirrors/api"}) {
		t.Fatalf("GET /v1/fleet on this release: not_applied_by_older %v", got)
	}
	if len(v.OlderReplicas) != 1 || v.OlderReplicas[0].NodeID != "old-a" {
		t.Fatalf("GET /v1/fleet: older_replicas %+v", v.OlderReplicas)
	}
	for _, k := range []string{"mirrors/api", "live-routes/api/testers", "live-mirror-routes/api/copy"} {
		mf.del(t, k)
	}

	// 2. An override with an owner: the older replica refuses the record
	// (it says so) and serves the document's weights.
	mf.put(t, "overrides/api", `{"weights":{"v1":60,"v2":40},"against":{"v1":80,"v2":20},"set_at":"2026-01-02T03:04:05Z","owner":"argo-rollouts:default/api"}`)
	waitFor(t, 10*time.Second, "this release to apply the owned weights", func() bool { return service(t, cur).Weights["v2"] == 40 })
	waitFor(t, 10*time.Second, "the older replica's refusal", func() bool {
		return strings.Contains(old.Tail(50), `invalid override record: json: unknown field \"owner\"`)
	})
	if w := service(t, old).Weights; w["v2"] != 20 {
		t.Fatalf("the previous release serves %v with an owned override, want the document's 80/20", w)
	}
	mf.del(t, "overrides/api")

	// 3. This release, while the older replica holds a lease: each of
	// those is refused with 409 naming it; plain weights go through.
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{http.MethodPut, "/v1/services/api/mirror", map[string]any{"version": "v2", "percent": 10}},
		{http.MethodPut, "/v1/services/api/routes/testers", map[string]any{"when": []any{map[string]any{"header": "x-canary", "exact": "1"}}, "version": "v2"}},
		{http.MethodPut, "/v1/services/api/mirror-routes/copy", map[string]any{"when": []any{map[string]any{"header": "x-canary", "exact": "1"}}, "version": "v2", "percent": 50}},
		{http.MethodPut, "/v1/services/api/canary", map[string]any{"percentage": 40, "owner": "argo-rollouts:default/api"}},
	} {
		err := cur.Admin(t.Context(), c.method, c.path, c.body, nil)
		if err == nil || !strings.Contains(err.Error(), ": 409 ") || !strings.Contains(err.Error(), "old-a (version ") ||
			!strings.Contains(err.Error(), "docs/upgrading.md") {
			t.Fatalf("%s %s with an older replica: %v, want 409 naming old-a and what to do", c.method, c.path, err)
		}
	}
	if rev := canary(t, cur, 50); rev == 0 {
		t.Fatal("no revision")
	}
	waitFor(t, 10*time.Second, "the older replica to apply plain weights", func() bool { return service(t, old).Weights["v2"] == 50 })

	// 4. A rollout state in the phase waiting: the older replica cannot
	// read it; it goes on with what it had, and cannot start at all.
	mf.put(t, "rollouts/api", `{"service":"api","phase":"waiting","canary":"v2","stable":"v1","step":0,"weight":0,"since":"2026-01-02T03:04:05Z","wait":{"step":1,"weight":10},"history":[]}`)
	waitFor(t, 10*time.Second, "the older replica to refuse the state", func() bool {
		return strings.Contains(old.Tail(50), `unknown phase \"waiting\"`)
	})
	err := old.Restart(t.Context())
	if err == nil || !strings.Contains(err.Error(), `etcd rollout states: etcd /splitter/rollouts/api: unknown phase "waiting"`) {
		t.Fatalf("the previous release's start with a waiting rollout: %v, want its exit naming the state", err)
	}
	mf.del(t, "rollouts/api")
	if err := old.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}

	// 5. Once the older replica left, every change is made.
	if err := old.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the older replica's record to go", func() bool { return len(fleetOfRaw(t, cur).OlderReplicas) == 0 })
	if err := cur.Admin(t.Context(), http.MethodPut, "/v1/services/api/mirror", map[string]any{"version": "v2", "percent": 10}, nil); err != nil {
		t.Fatalf("a runtime mirror once the fleet is all new: %v", err)
	}
}

// fleetAnswer is GET /v1/fleet with the upgrade's fields.
type fleetAnswer struct {
	Replicas []struct {
		NodeID   string   `json:"node_id"`
		Version  string   `json:"version"`
		Features []string `json:"features"`
	} `json:"replicas"`
	RolloutLeader string `json:"rollout_leader"`
	OlderReplicas []struct {
		NodeID string   `json:"node_id"`
		Lacks  []string `json:"lacks"`
	} `json:"older_replicas"`
	NotAppliedByOlder []string `json:"not_applied_by_older"`
}

func fleetOfRaw(t *testing.T, s *testbed.Splitter) fleetAnswer {
	t.Helper()
	var v fleetAnswer
	if err := s.Admin(t.Context(), http.MethodGet, "/v1/fleet", nil, &v); err != nil {
		t.Fatal(err)
	}
	return v
}
