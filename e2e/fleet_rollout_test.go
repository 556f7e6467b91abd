package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// fleetRolloutConfig: a rollout through 5, 25, 50 and 100 %, each step
// held for hold, judged over a 1s window (at least 10 canary requests,
// 1 % and 2 x stable).
func fleetRolloutConfig(hold string) string {
	return fmt.Sprintf(`services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 25, 50, 100]
      hold: %s
      guard: {window: 1s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2}
`, hold)
}

// rolloutFleet is one etcd and three Envoy + splitter pairs in fleet mode
// sharing backends v1 and v2; each splitter reads its own Envoy's
// statistics (every 100ms), publishes its counts every 200ms, and holds
// its rollout lease for 2s.
type rolloutFleet struct {
	*testbed.Bed
	etcd     *testbed.Etcd
	backends []*testbed.Backend
	replicas []*testbed.Splitter
	clients  []*testbed.Client
}

func newRolloutFleet(t *testing.T, hold string) *rolloutFleet {
	t.Helper()
	requireEtcd(t)
	requireEnvoy(t)
	rf := &rolloutFleet{Bed: testbed.ForTest(t)}
	var err error
	if rf.etcd, err = rf.StartEtcd(t.Context(), found.etcdBin, testbed.EtcdOptions{}); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "fleet.yaml")
	writeFile(t, doc, fleetRolloutConfig(hold))
	out, err := testbedCLI(t, rf.etcd, "config", "push", doc)
	if err != nil {
		t.Fatalf("config push: %v\n%s", err, out)
	}
	if rf.backends, err = rf.StartBackends("v1", "v2"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		adminPort, err := testbed.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		s, err := rf.StartSplitter(t.Context(), found.splitterBin, "",
			"--etcd-endpoints", rf.etcd.Endpoint, "--node-id", fmt.Sprintf("replica-%c", 'a'+i),
			"--etcd-cache-file", filepath.Join(rf.Dir, fmt.Sprintf("cache-%d.json", i)),
			"--envoy-admin", fmt.Sprintf("127.0.0.1:%d", adminPort), "--signals-interval", "100ms",
			"--rollout-publish-interval", "200ms", "--rollout-leader-ttl", "2s")
		if err != nil {
			t.Fatal(err)
		}
		p, err := testbed.LoopbackParams(envoy.ModeExtProc, s.GRPCAddr, rf.backends...)
		if err != nil {
			t.Fatal(err)
		}
		p.Admin.Port = adminPort
		e, err := rf.StartEnvoy(t.Context(), found.envoyBin, p, testbed.EnvoyOptions{Concurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		c := e.Client()
		t.Cleanup(c.Close)
		rf.replicas, rf.clients = append(rf.replicas, s), append(rf.clients, c)
	}
	return rf
}

func testbedCLI(t *testing.T, e *testbed.Etcd, args ...string) (string, error) {
	fb := &fleetBed{etcd: e}
	return fb.cli(t, args...)
}

func rolloutOf(t *testing.T, s *testbed.Splitter) rollout.Status {
	t.Helper()
	var st rollout.Status
	if err := s.Admin(t.Context(), http.MethodGet, "/v1/services/api/rollout", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func actOn(t *testing.T, s *testbed.Splitter, a rollout.Action) rollout.Status {
	t.Helper()
	var st rollout.Status
	if err := s.Admin(t.Context(), http.MethodPost, "/v1/services/api/rollout", map[string]rollout.Action{"action": a}, &st); err != nil {
		t.Fatalf("%s on %s: %v", a, s.Name, err)
	}
	return st
}

// waitEvery waits until cond holds for the rollout status of every
// replica given.
func waitEvery(t *testing.T, what string, cond func(rollout.Status) bool, replicas ...*testbed.Splitter) {
	t.Helper()
	for _, s := range replicas {
		waitFor(t, 30*time.Second, s.Name+": "+what, func() bool { return cond(rolloutOf(t, s)) })
	}
}

// leaderOf asks s's GET /v1/fleet who leads the rollouts.
func leaderOf(t *testing.T, s *testbed.Splitter) string {
	t.Helper()
	var v struct {
		RolloutLeader string `json:"rollout_leader"`
	}
	if err := s.Admin(t.Context(), http.MethodGet, "/v1/fleet", nil, &v); err != nil {
		t.Fatal(err)
	}
	return v.RolloutLeader
}

// guardMoves are the transitions the guard made.
func guardMoves(h []rollout.Transition) []rollout.Transition {
	var out []rollout.Transition
	for _, tr := range h {
		if tr.Actor == rollout.Actor {
			out = append(out, tr)
		}
	}
	return out
}

// Three Envoy + splitter pairs on one etcd: a rollout started on one
// replica steps on every pair, judged by the elected leader on the counts
// of all three Envoys; every replica shows the same state, refuses weight
// changes while it progresses, and every Envoy's split (counted at the
// backends) follows the steps.
func TestFleetRolloutStepsOnEveryPair(t *testing.T) {
	rf := newRolloutFleet(t, "2s")
	a, b, c := rf.replicas[0], rf.replicas[1], rf.replicas[2]
	var leader string
	waitFor(t, 10*time.Second, "a rollout leader", func() bool { leader = leaderOf(t, a); return leader != "" })
	for _, s := range rf.replicas {
		if got := leaderOf(t, s); got != leader {
			t.Fatalf("%s says %q leads, %s says %q", s.Name, got, a.Name, leader)
		}
	}
	leads := 0
	for _, s := range rf.replicas {
		leads += int(metric(t, s, "splitter_rollout_leader"))
	}
	if leads != 1 {
		t.Fatalf("%d replicas export splitter_rollout_leader 1, want one", leads)
	}

	var traffic []*testbed.Traffic
	for _, cl := range rf.clients {
		traffic = append(traffic, startTraffic(t, cl, 1))
	}
	if s := actOn(t, b, rollout.Start); s.State != rollout.Progressing || s.Step != 1 || s.Node != "replica-b" {
		t.Fatalf("start on b: %+v", s)
	}
	waitEvery(t, "step 2 (25%)", func(s rollout.Status) bool { return s.Step == 2 }, rf.replicas...)
	for _, s := range rf.replicas {
		err := s.Admin(t.Context(), http.MethodPut, "/v1/services/api/canary", map[string]float64{"percentage": 50}, nil)
		if err == nil || !strings.Contains(err.Error(), "409") {
			t.Fatalf("%s: canary call while the rollout progresses: %v, want 409", s.Name, err)
		}
	}
	actOn(t, c, rollout.Pause)
	waitEvery(t, "paused", func(s rollout.Status) bool { return s.State == rollout.Paused && s.Step == 2 }, rf.replicas...)
	for _, tr := range traffic {
		tr.Halt()
	}
	for i, cl := range rf.clients {
		assertSplitVia(t, cl, 100, map[string]int{"v1": 75, "v2": 25}, fmt.Sprintf("envoy %d at the 25%% step", i))
	}
	actOn(t, a, rollout.Resume)
	traffic = traffic[:0]
	for _, cl := range rf.clients {
		traffic = append(traffic, startTraffic(t, cl, 1))
	}
	waitEvery(t, "promotion", func(s rollout.Status) bool { return s.State == rollout.Promoted }, rf.replicas...)
	for _, tr := range traffic {
		tr.Halt()
	}
	for i, cl := range rf.clients {
		assertSplitVia(t, cl, 20, map[string]int{"v2": 20}, fmt.Sprintf("envoy %d after the promotion", i))
	}

	st := rolloutOf(t, c)
	moves := guardMoves(st.History)
	if len(moves) != 3 {
		t.Fatalf("%d guard moves, want 3 (to 25, 50, 100): %+v", len(moves), st.History)
	}
	for _, m := range moves {
		v := m.Verdict
		if m.Node != leader || v == nil || v.Result != rollout.Healthy || len(v.Replicas) != 3 {
			t.Fatalf("move to step %d by %q with verdict %+v: want healthy, by %s, on the three replicas' counts", m.Step, m.Node, v, leader)
		}
	}
	for _, s := range rf.replicas {
		if got := rolloutOf(t, s); got.Revision != st.Revision || got.State != st.State || len(got.History) != len(st.History) || got.Leader != leader {
			t.Fatalf("%s: %s rev %d (%d transitions, leader %q); %s: %s rev %d (%d)", s.Name, got.State, got.Revision,
				len(got.History), got.Leader, c.Name, st.State, st.Revision, len(st.History))
		}
	}
	t.Logf("moves by %s: %d", leader, len(moves))
}

// A canary that fails on every pair is rolled back by the leader, and
// every replica, and every Envoy, ends at 0 on the canary.
func TestFleetRolloutBadCanaryRolledBackEverywhere(t *testing.T) {
	rf := newRolloutFleet(t, "2s")
	for _, cl := range rf.clients {
		startTraffic(t, cl, 1)
	}
	actOn(t, rf.replicas[2], rollout.Start)
	waitEvery(t, "step 2 (25%)", func(s rollout.Status) bool { return s.Step == 2 }, rf.replicas...)
	rf.backends[1].Fail(50)
	waitEvery(t, "the rollback", func(s rollout.Status) bool { return s.State == rollout.RolledBack }, rf.replicas...)
	st := rolloutOf(t, rf.replicas[0])
	rb := st.History[len(st.History)-1]
	if rb.Verdict == nil || rb.Verdict.Result != rollout.Failing || rb.Verdict.Canary.Errors == 0 || rb.Node != st.Leader || len(rb.Verdict.Replicas) == 0 {
		t.Fatalf("rollback %+v, verdict %+v, leader %q: want failing on Envoy's 5xx, by the leader", rb, rb.Verdict, st.Leader)
	}
	time.Sleep(200 * time.Millisecond) // requests decided before the rollback may still be in flight
	for i, cl := range rf.clients {
		assertSplitVia(t, cl, 50, map[string]int{"v1": 50}, fmt.Sprintf("envoy %d after the rollback", i))
	}
	first, _ := rf.backends[1].Faults.FirstFailure()
	t.Logf("first bad answer -> rolled back by %s: %v; %s (replicas %v)", rb.Node, rb.At.Sub(first).Round(time.Millisecond), rb.Verdict.Reason, rb.Verdict.Replicas)
}

// The leader is killed (SIGKILL) and the canary starts failing at once:
// the leader's lease expires, another replica is elected, resumes from
// the stored state (no step restarted) and rolls the canary back on the
// counts the live replicas publish; every live Envoy, then the restarted
// replica and its Envoy, end at 0 on the canary.
func TestFleetRolloutLeaderKilledDuringBadCanary(t *testing.T) {
	rf := newRolloutFleet(t, "2s")
	traffic := make([]*testbed.Traffic, len(rf.clients))
	for i, cl := range rf.clients {
		traffic[i] = startTraffic(t, cl, 1)
	}
	actOn(t, rf.replicas[1], rollout.Start)
	waitEvery(t, "step 2 (25%)", func(s rollout.Status) bool { return s.Step == 2 }, rf.replicas...)
	leaderName := leaderOf(t, rf.replicas[0])
	li := nodeIndex(t, rf, leaderName)
	killed := rf.replicas[li]
	var live []*testbed.Splitter
	for i, s := range rf.replicas {
		if i != li {
			live = append(live, s)
		}
	}
	before := rolloutOf(t, live[0])

	traffic[li].Halt()
	if err := killed.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	rf.backends[1].Fail(50)
	waitEvery(t, "the rollback by a new leader", func(s rollout.Status) bool { return s.State == rollout.RolledBack }, live...)
	st := rolloutOf(t, live[0])
	rb := st.History[len(st.History)-1]
	if rb.Node == leaderName || rb.Node == "" || st.Leader != rb.Node || rb.Verdict == nil || rb.Verdict.Result != rollout.Failing {
		t.Fatalf("rollback by %q (leader now %q, killed %s), verdict %+v", rb.Node, st.Leader, leaderName, rb.Verdict)
	}
	if slices.Contains(rb.Verdict.Replicas, leaderName) || len(rb.Verdict.Replicas) != 2 {
		t.Fatalf("the verdict summed %v: want the two live replicas' counts", rb.Verdict.Replicas)
	}
	// No step restarted: the history before the kill is kept as it was,
	// and nothing after it started the rollout again.
	if len(st.History) <= len(before.History) || !slices.EqualFunc(st.History[:len(before.History)], before.History, func(x, y rollout.Transition) bool {
		return x.At.Equal(y.At) && x.To == y.To && x.Step == y.Step
	}) {
		t.Fatalf("history before the kill %+v, after %+v", before.History, st.History)
	}
	for _, tr := range st.History[len(before.History):] {
		if tr.To == rollout.Progressing && tr.Step <= before.Step {
			t.Fatalf("step %d entered again after the takeover: %+v", tr.Step, st.History)
		}
	}
	time.Sleep(200 * time.Millisecond)
	for i, s := range rf.replicas {
		if i != li {
			traffic[i].Halt()
			assertSplitVia(t, rf.clients[i], 50, map[string]int{"v1": 50}, s.Name+"'s envoy after the rollback")
		}
	}

	if err := killed.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitEvery(t, "the rollback, after the restart", func(s rollout.Status) bool {
		return s.State == rollout.RolledBack && s.Revision >= st.Revision && s.Leader == rb.Node
	}, killed)
	waitFor(t, 10*time.Second, "the restarted replica to apply the rollback", func() bool { return service(t, killed).Weights["v2"] == 0 })
	assertSplitVia(t, rf.clients[li], 50, map[string]int{"v1": 50}, killed.Name+"'s envoy after its restart")
	t.Logf("%s killed; %s took over and rolled back at step %d %v after the kill (lease TTL 2s): %s",
		leaderName, rb.Node, rb.Step, rb.At.Sub(killedAt).Round(time.Millisecond), rb.Verdict.Reason)
}

// nodeIndex finds the replica whose node id is name.
func nodeIndex(t *testing.T, rf *rolloutFleet, name string) int {
	t.Helper()
	for i, s := range rf.replicas {
		if service(t, s).Config.Fleet.NodeID == name {
			return i
		}
	}
	t.Fatalf("no replica %q", name)
	return -1
}

// A rollouts/<service> key that this build cannot read (an unknown phase,
// as a newer or older build may write during an upgrade) does not stop
// `splitter serve` from starting: the key is skipped and reported, the
// other services' rollouts are served, and an action on that service
// answers 409 naming the key until it is fixed or deleted.
func TestFleetReplicaStartsWithAnUnreadableRolloutKey(t *testing.T) {
	requireEtcd(t)
	b := testbed.ForTest(t)
	e, err := b.StartEtcd(t.Context(), found.etcdBin, testbed.EtcdOptions{})
	if err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "fleet.yaml")
	writeFile(t, doc, fleetRolloutConfig("2s")+`  - name: web
    hosts: ["web.example.com"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout: {}
`)
	if out, err := testbedCLI(t, e, "config", "push", doc); err != nil {
		t.Fatalf("config push: %v\n%s", err, out)
	}
	c := (&fleetBed{etcd: e}).etcdClient(t)
	if _, err := c.Put(t.Context(), "/splitter/rollouts/web", `{"service":"web","phase":"exploded","step":1,"history":[]}`); err != nil {
		t.Fatal(err)
	}
	s, err := b.StartSplitter(t.Context(), found.splitterBin, "", "--etcd-endpoints", e.Endpoint, "--node-id", "replica-a", "--envoy-admin", "")
	if err != nil {
		t.Fatalf("splitter serve with an unreadable rollouts/web: %v", err)
	}
	if st := rolloutOf(t, s); st.State != rollout.Idle {
		t.Fatalf("api: %+v", st)
	}
	err = s.Admin(t.Context(), http.MethodPost, "/v1/services/web/rollout", map[string]rollout.Action{"action": rollout.Abort}, nil)
	if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "rollouts/web") {
		t.Fatalf("an action on web: %v; want 409 naming the key", err)
	}
	if !strings.Contains(s.Tail(200), "rollouts/web") {
		t.Fatalf("the unreadable key is not reported in the log:\n%s", s.Tail(200))
	}
}
