package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// upgradeHold is each step's hold in the rolling upgrade test: long
// enough that a replica's restart rarely spans two steps.
const upgradeHold = 3 * time.Second

// upgradeRolloutConfig: twenty steps of 5 %, far more than the upgrade
// and its rollback take, so the rollout is in progress throughout.
var upgradeRolloutConfig = fmt.Sprintf(`services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100]
      hold: %s
      guard: {window: 1s, min_requests: 5, max_error_rate: 1, max_error_ratio: 2}
`, upgradeHold)

// sample is one replica's view at one instant: its rollout's status and
// the canary's share it decides with.
type sample struct {
	at      time.Time
	node    string
	release string
	state   rollout.Phase
	step    int
	weight  int // the rollout's, in basis points
	served  float64
}

// sampler records every replica's view four times a second.
type sampler struct {
	mu      sync.Mutex
	samples []sample
}

func (sp *sampler) run(ctx context.Context, t *testing.T, replicas []*testbed.Splitter, release func(i int) string) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, s := range replicas {
			var st rollout.Status
			var svc serviceView
			if s.Admin(ctx, http.MethodGet, "/v1/services/api/rollout", nil, &st) != nil ||
				s.Admin(ctx, http.MethodGet, "/v1/services/api", nil, &svc) != nil {
				continue // restarting
			}
			sp.mu.Lock()
			sp.samples = append(sp.samples, sample{at: time.Now(), node: s.Name, release: release(i),
				state: st.State, step: st.Step, weight: int(st.Weight), served: svc.Weights["v2"]})
			sp.mu.Unlock()
		}
	}
}

func (sp *sampler) all() []sample {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return append([]sample(nil), sp.samples...)
}

// A guarded rollout in progress while a three-replica fleet is upgraded
// one replica at a time from the previous release to this one, then
// rolled back the same way: old leader with new followers, all new, new
// leader with old followers, all old again. Operators pause and resume it
// on a replica of either release meanwhile, and a replica of this release
// publishes counts with latency histograms to the old leader. Over the
// whole run, recorded four times a second on every replica: the rollout
// never rolls back or aborts, no replica ever shows a lower step or
// serves a smaller canary share than it did before, a paused step shows
// the same hold on both releases, and every step the guard took had been
// held at least its hold (the stored history). The operator promotes it
// at the end, on a replica of the previous release.
func TestUpgradeRollingFleetRollout(t *testing.T) {
	requireEtcd(t)
	requireEnvoy(t)
	rel := previousRelease(t)
	b := testbed.ForTest(t)
	e, err := b.StartEtcd(t.Context(), found.etcdBin, testbed.EtcdOptions{})
	if err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "fleet.yaml")
	writeFile(t, doc, upgradeRolloutConfig)
	if out, err := testbedCLI(t, e, "config", "push", doc); err != nil {
		t.Fatalf("config push: %v\n%s", err, out)
	}
	backends, err := b.StartBackends("v1", "v2")
	if err != nil {
		t.Fatal(err)
	}
	etcd := (&fleetBed{etcd: e}).etcdClient(t)

	// Three pairs, every splitter of the previous release.
	var replicas []*testbed.Splitter
	releases := []string{"old", "old", "old"}
	var rmu sync.Mutex
	release := func(i int) string { rmu.Lock(); defer rmu.Unlock(); return releases[i] }
	for i := range 3 {
		adminPort, err := testbed.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.StartSplitter(t.Context(), rel.Splitter, "",
			"--etcd-endpoints", e.Endpoint, "--node-id", fmt.Sprintf("replica-%c", 'a'+i),
			"--etcd-cache-file", filepath.Join(b.Dir, fmt.Sprintf("cache-%d.json", i)),
			"--envoy-admin", fmt.Sprintf("127.0.0.1:%d", adminPort), "--signals-interval", "100ms",
			"--rollout-publish-interval", "200ms", "--rollout-leader-ttl", "2s")
		if err != nil {
			t.Fatal(err)
		}
		s.Name = fmt.Sprintf("replica-%c", 'a'+i)
		p, err := testbed.LoopbackParams(envoy.ModeExtProc, s.GRPCAddr, backends...)
		if err != nil {
			t.Fatal(err)
		}
		p.Admin.Port = adminPort
		en, err := b.StartEnvoy(t.Context(), found.envoyBin, p, testbed.EnvoyOptions{Concurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		c := en.Client()
		t.Cleanup(c.Close)
		startTraffic(t, c, 1)
		replicas = append(replicas, s)
	}
	a, bb, c := replicas[0], replicas[1], replicas[2]
	byName := map[string]*testbed.Splitter{a.Name: a, bb.Name: bb, c.Name: c}
	waitFor(t, 10*time.Second, "a rollout leader", func() bool { return leaderOf(t, a) == a.Name })

	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	sp := &sampler{}
	var wg sync.WaitGroup
	wg.Go(func() { sp.run(ctx, t, replicas, release) })

	// stored reads the state in etcd, as this release reads it.
	stored := func() rollout.State {
		t.Helper()
		resp, err := etcd.Get(t.Context(), "/splitter/rollouts/api")
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("rollouts/api: %v", err)
		}
		var st rollout.State
		if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	// guardStep waits for the guard's next step after the one in force.
	guardStep := func(what string) {
		t.Helper()
		from := stored().Step
		waitFor(t, 60*time.Second, what+": the guard's next step after step "+fmt.Sprint(from), func() bool {
			st := stored()
			if st.Phase == rollout.Promoted {
				t.Fatalf("%s: the rollout was promoted before the upgrade was done (a very slow machine?)", what)
			}
			return st.Step > from
		})
	}
	swap := func(i int, to string) {
		t.Helper()
		bin := rel.Splitter
		if to == "new" {
			bin = found.splitterBin
		}
		if err := replicas[i].RestartAs(t.Context(), bin); err != nil {
			t.Fatalf("%s to the %s release: %v", replicas[i].Name, to, err)
		}
		rmu.Lock()
		releases[i] = to
		rmu.Unlock()
	}
	// pauseResume pauses on one replica, checks that every replica shows
	// the same step and hold (each release reading the other's state),
	// and resumes on another.
	pauseResume := func(what string, on, resumeOn *testbed.Splitter) {
		t.Helper()
		time.Sleep(time.Second) // into the step, so there is a hold to carry
		st := actOn(t, on, rollout.Pause)
		if st.State != rollout.Paused {
			t.Fatalf("%s: pause on %s: %+v", what, on.Name, st)
		}
		for _, s := range replicas {
			waitFor(t, 10*time.Second, what+": "+s.Name+" paused", func() bool { return rolloutOf(t, s).State == rollout.Paused })
			if got := rolloutOf(t, s); got.Step != st.Step || got.Held != st.Held {
				t.Fatalf("%s: %s (%s release) shows step %d held %v; %s, which paused it, step %d held %v",
					what, s.Name, release(index(replicas, s)), got.Step, got.Held.D(), on.Name, st.Step, st.Held.D())
			}
		}
		if st.Held.D() < 500*time.Millisecond {
			t.Fatalf("%s: paused with nothing held: %+v", what, st)
		}
		time.Sleep(500 * time.Millisecond) // a pause that lasts
		actOn(t, resumeOn, rollout.Resume)
	}

	if s := actOn(t, a, rollout.Start); s.State != rollout.Progressing {
		t.Fatalf("start: %+v", s)
	}
	guardStep("all old")

	// Upgrade: C, then B (old leader A, new followers).
	swap(2, "new")
	guardStep("old leader a, new follower c")
	pauseResume("paused on new c, resumed on new c", c, c)
	swap(1, "new")
	guardStep("old leader a, new followers b and c")
	if l := leaderOf(t, c); l != a.Name {
		t.Fatalf("the leader is %q, want a (old)", l)
	}
	// The old leader judges on the new followers' counts too, and on
	// counts with latency histograms, as this release publishes them when
	// the guard judges latency.
	summed(t, a, bb.Name, c.Name)
	probeCounts(t, etcd, a)

	// A last: the leadership goes to a replica of this release.
	swap(0, "new")
	var leader string
	waitFor(t, 20*time.Second, "a new leader", func() bool { leader = leaderOf(t, bb); return leader != "" && leader != a.Name })
	guardStep("all new, " + leader + " leading")

	// Rollback: every follower first (new leader, old followers), then
	// the leader.
	var followers []int
	for i, s := range replicas {
		if s.Name != leader {
			followers = append(followers, i)
		}
	}
	swap(followers[0], "old")
	guardStep("new leader " + leader + ", old follower " + replicas[followers[0]].Name)
	pauseResume("paused on old "+replicas[followers[0]].Name+", resumed on old", replicas[followers[0]], replicas[followers[0]])
	swap(followers[1], "old")
	guardStep("new leader " + leader + ", old followers")
	summed(t, byName[leader], replicas[followers[0]].Name, replicas[followers[1]].Name)
	pauseResume("paused on new leader, resumed on old", byName[leader], replicas[followers[1]])
	swap(index(replicas, byName[leader]), "old")
	guardStep("all old again")
	if st := actOn(t, replicas[followers[0]], rollout.Promote); st.State != rollout.Promoted {
		t.Fatalf("promote on an old replica: %+v", st)
	}
	for _, s := range replicas {
		waitFor(t, 10*time.Second, s.Name+" serving the promoted canary", func() bool { return service(t, s).Weights["v2"] == 100 })
	}
	stop()
	wg.Wait()

	checkUpgradeHistory(t, stored(), sp.all())
}

// checkUpgradeHistory asserts the rolling upgrade test's histories: the
// stored transitions and every replica's samples.
func checkUpgradeHistory(t *testing.T, final rollout.State, samples []sample) {
	t.Helper()
	// The stored history: no rollback or abort; steps only go up; each
	// step the guard took was held at least the hold, pauses excluded.
	var held time.Duration
	var running time.Time
	step := 0
	var lines []string
	for _, tr := range final.History {
		lines = append(lines, fmt.Sprintf("%s %s->%s step %d by %s on %s: %s", tr.At.Format("15:04:05.000"), tr.From, tr.To, tr.Step, tr.Actor, tr.Node, tr.Reason))
	}
	history := strings.Join(lines, "\n")
	for _, tr := range final.History {
		switch {
		case tr.To == rollout.RolledBack || tr.To == rollout.Aborted:
			t.Fatalf("the rollout was %s during the upgrade:\n%s", tr.To, history)
		case tr.Step < step:
			t.Fatalf("the step went back from %d to %d:\n%s", step, tr.Step, history)
		}
		if tr.Actor == rollout.Actor && tr.Step > step && step > 0 {
			if got := held + tr.At.Sub(running); got < upgradeHold-50*time.Millisecond {
				t.Fatalf("step %d was taken after %v held, less than the hold %v:\n%s", tr.Step, got, upgradeHold, history)
			}
		}
		switch {
		case tr.Step != step:
			step, held, running = tr.Step, 0, tr.At
		case tr.To == rollout.Paused:
			held += tr.At.Sub(running)
		case tr.From == rollout.Paused && tr.To == rollout.Progressing:
			running = tr.At
		}
	}
	if final.Phase != rollout.Promoted || step < 5 {
		t.Fatalf("final state %s at step %d, want promoted after at least 5 steps:\n%s", final.Phase, step, history)
	}
	// Every replica, over time: never rolled back or aborted, never a
	// lower step or a smaller canary share than before, and it decides
	// with the share of its state once it settled.
	last := map[string]sample{}
	counts := map[string]int{}
	for _, s := range samples {
		counts[s.node+" "+s.release]++
		if s.state == rollout.RolledBack || s.state == rollout.Aborted {
			t.Fatalf("%s (%s release) showed the rollout %s at %s:\n%s", s.node, s.release, s.state, s.at.Format("15:04:05.000"), history)
		}
		if p, ok := last[s.node]; ok && (s.step < p.step || s.served < p.served) {
			t.Fatalf("%s went back: step %d serving %v%% at %s (%s release), after step %d serving %v%% at %s (%s release)",
				s.node, s.step, s.served, s.at.Format("15:04:05.000"), s.release, p.step, p.served, p.at.Format("15:04:05.000"), p.release)
		}
		last[s.node] = s
	}
	for _, node := range []string{"replica-a", "replica-b", "replica-c"} {
		for _, r := range []string{"old", "new"} {
			if counts[node+" "+r] == 0 {
				t.Fatalf("no sample of %s on the %s release: %v", node, r, counts)
			}
		}
	}
	t.Logf("stored history:\n%s\nsamples per replica and release: %v", history, counts)
}

func index(replicas []*testbed.Splitter, s *testbed.Splitter) int {
	for i, r := range replicas {
		if r == s {
			return i
		}
	}
	return -1
}

// summed waits until leader's verdict has summed the counts of nodes.
func summed(t *testing.T, leader *testbed.Splitter, nodes ...string) {
	t.Helper()
	waitFor(t, 30*time.Second, leader.Name+"'s verdict on the counts of "+strings.Join(nodes, ", "), func() bool {
		v := rolloutOf(t, leader).Verdict
		if v == nil {
			return false
		}
		for _, n := range nodes {
			if !slices.Contains(v.Replicas, n) {
				return false
			}
		}
		return true
	})
}

// probeCounts publishes, beside the followers' own, the counts of a
// replica "upgrade-probe" with the latency histograms this release adds
// when the guard judges latency (a copy of a follower's record, renewed
// as a replica would), and waits until leader (of the previous release)
// has summed them in a verdict: it reads the counts and ignores the
// histograms.
func probeCounts(t *testing.T, etcd *clientv3.Client, leader *testbed.Splitter) {
	t.Helper()
	const probe = "/splitter/rollout-counts/api/upgrade-probe"
	defer func() {
		if _, err := etcd.Delete(context.Background(), probe); err != nil {
			t.Error(err)
		}
	}()
	var h signals.Histogram
	for range 20 {
		h.Record(3 * time.Millisecond)
	}
	hist, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the old leader to sum counts with latency histograms", func() bool {
		resp, err := etcd.Get(t.Context(), "/splitter/rollout-counts/api/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		var rec map[string]json.RawMessage
		for _, kv := range resp.Kvs {
			if !strings.HasSuffix(string(kv.Key), "upgrade-probe") && json.Unmarshal(kv.Value, &rec) == nil && rec["error"] == nil {
				break
			}
			rec = nil
		}
		if rec == nil {
			return false
		}
		rec["node"], _ = json.Marshal("upgrade-probe")
		rec["stable_latency"], rec["canary_latency"] = hist, hist
		val, _ := json.Marshal(rec)
		if _, err := etcd.Put(t.Context(), probe, string(val)); err != nil {
			t.Fatal(err)
		}
		v := rolloutOf(t, leader).Verdict
		return v != nil && slices.Contains(v.Replicas, "upgrade-probe")
	})
}
