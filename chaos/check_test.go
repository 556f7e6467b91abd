package chaos

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/rollout"
)

// The checker is checked on hand-made histories: a consistent one holds
// every check, and each defect the issue names (a lost write, a replica
// going back a revision, two leaders writing) and the others the checker
// claims to catch is reported, by the check that owns it, with the part
// of the history that shows it.

var t0 = time.Date(2026, 1, 2, 15, 4, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func overrideRecord(canary int, node, actor string) []byte {
	return []byte(fmt.Sprintf(`{"weights":{"v1":%d,"v2":%d},"against":{"v1":90,"v2":10},"set_at":"2026-01-02T15:04:00Z","node":%q,"actor":%q}`,
		100-canary, canary, node, actor))
}

func weights(canary int) string { return fmt.Sprintf("v1: %d, v2: %d", 100-canary, canary) }

func applied(seq uint64, ms int, rev int64, canary int) fleet.Event {
	e := fleet.Event{Seq: seq, At: at(ms), Kind: "applied", Revision: rev, SHA256: "good", StateSHA256: "s"}
	if canary > 0 {
		e.Overrides = map[string]string{"api": weights(canary)}
	}
	return e
}

// consistent is a history that holds every check: three writes through
// two replicas while member m1 is stopped, one after it resumes; the
// recorder's reads see them in order; both replicas apply each within
// 100 ms and say connected throughout.
func consistent() *History {
	h := &History{
		Prefix: "/c/", Start: t0, End: at(6000), Stable: map[string]string{"api": "v1"},
		Bounds: DefaultBounds(), Invalid: map[string]string{"bad": "weights sum to 70"},
		Gaps: map[string]int{},
		Etcd: []KV{
			{Rev: 2, Key: "/c/config", Value: []byte("services: …"), CreateRev: 2, Seen: at(10)},
			{Rev: 5, Key: "/c/overrides/api", Value: overrideRecord(10, "r0", "t"), CreateRev: 5, Seen: at(1060)},
			{Rev: 7, Key: "/c/overrides/api", Value: overrideRecord(20, "r1", "t"), CreateRev: 5, Seen: at(1560)},
			{Rev: 9, Key: "/c/overrides/api", Value: overrideRecord(30, "r0", "t"), CreateRev: 5, Seen: at(2060)},
			{Rev: 11, Key: "/c/overrides/api", Value: overrideRecord(40, "r1", "t"), CreateRev: 5, Seen: at(2860)},
		},
		Writes: []Write{
			{ID: 1, Client: "w0", Replica: "r0", Service: "api", Percent: 10, Call: at(1000), Return: at(1100), Status: 200, Revision: 5, Applied: true},
			{ID: 2, Client: "w1", Replica: "r1", Service: "api", Percent: 20, Call: at(1500), Return: at(1600), Status: 200, Revision: 7, Applied: true},
			{ID: 3, Client: "w0", Replica: "r0", Service: "api", Percent: 30, Call: at(2000), Return: at(2100), Status: 200, Revision: 9, Applied: true},
			{ID: 4, Client: "w1", Replica: "r1", Service: "api", Percent: 40, Call: at(2800), Return: at(2900), Status: 200, Revision: 11, Applied: true},
		},
		Reads: []Read{
			{Call: at(500), Return: at(520), Key: "/c/overrides/api"},
			{Call: at(1200), Return: at(1250), Key: "/c/overrides/api", Value: "10.00", Rev: 5},
			{Call: at(2200), Return: at(2250), Key: "/c/overrides/api", Value: "30.00", Rev: 9},
			{Call: at(3000), Return: at(3050), Key: "/c/overrides/api", Value: "40.00", Rev: 11},
		},
		Logs: map[string][]fleet.Event{},
		Faults: []Fault{
			{Name: "member m1 stopped", Kind: MemberFault, Target: "m1", Start: at(900), Heal: at(2500)},
		},
		Traffic: Traffic{Total: 1000, ByEnvoy: map[string]int{"e0": 500, "e1": 500}},
	}
	for i, r := range []string{"r0", "r1"} {
		d := 20 * i
		h.Logs[r] = []fleet.Event{
			{Seq: 1, At: at(400), Kind: "connected"},
			applied(2, 400, 2, 0),
			applied(3, 1050+d, 5, 10),
			applied(4, 1550+d, 7, 20),
			applied(5, 2050+d, 9, 30),
			applied(6, 2850+d, 11, 40),
		}
	}
	for ms := 500; ms < 6000; ms += 500 {
		for _, r := range []string{"r0", "r1"} {
			h.Looks = append(h.Looks, Look{Replica: r, At: at(ms), Connected: true, Applied: h.appliedAt(r, at(ms))})
		}
	}
	return h
}

// results runs the checks and indexes them by name.
func results(t *testing.T, h *History) map[string]Result {
	t.Helper()
	rs, _ := Check(h, "")
	out := map[string]Result{}
	for _, r := range rs {
		out[r.Name] = r
	}
	return out
}

// failing returns the names of the checks that failed.
func failing(rs map[string]Result) []string {
	var out []string
	for name, r := range rs {
		if !r.Held {
			out = append(out, name)
		}
	}
	return out
}

func TestConsistentHistoryHolds(t *testing.T) {
	rs := results(t, consistent())
	for name, r := range rs {
		if !r.Held {
			t.Errorf("%s failed on a consistent history: %+v", name, r.Violations)
		}
	}
	if len(rs) < 12 {
		t.Fatalf("only %d checks ran", len(rs))
	}
}

// A leadership handed over (the first leader's key deleted, as when its
// lease expires) and each leader writing during its own term holds.
func TestFencedHandoverHolds(t *testing.T) {
	h := consistent()
	h.Initial = append(h.Initial, KV{Rev: 1, Key: "/c/rollout-leader/a1", Value: []byte("r0"), CreateRev: 1, Seen: at(0)})
	h.Etcd = append(h.Etcd,
		KV{Rev: 12, Key: "/c/overrides/shop", Value: overrideRecord(20, "r0", rollout.Actor), CreateRev: 12, Seen: at(3000)},
		KV{Rev: 13, Key: "/c/rollout-leader/b2", Value: []byte("r1"), CreateRev: 13, Seen: at(3100)},
		KV{Rev: 14, Key: "/c/rollout-leader/a1", Deleted: true, Seen: at(3200)},
		KV{Rev: 15, Key: "/c/overrides/shop", Value: overrideRecord(0, "r1", rollout.Actor), CreateRev: 12, Seen: at(3500)},
	)
	r := results(t, h)["at most one rollout leader's writes accepted at a time (fenced)"]
	if !r.Held || r.Summary != "2 writes of the leader's loop, 2 leaderships" {
		t.Fatalf("%+v", r)
	}
}

// An operator's start taken by r1 (not the leader): r1 writes the state,
// then the weights (actor "rollout", as every rollout weight); that is
// not a leader's write. The same weights from a third replica are.
func TestFencedOperatorWeights(t *testing.T) {
	st := rollout.State{Service: "shop", Phase: rollout.Progressing, History: []rollout.Transition{
		{At: at(3000), From: rollout.Idle, To: rollout.Progressing, Actor: "anonymous", Node: "r1", Reason: "started"}}}
	data, _ := json.Marshal(st)
	for _, tc := range []struct {
		writer string
		held   bool
	}{{"r1", true}, {"r0", true}, {"r2", false}} {
		h := consistent()
		h.Initial = append(h.Initial, KV{Rev: 1, Key: "/c/rollout-leader/a1", Value: []byte("r0"), CreateRev: 1, Seen: at(0)})
		h.Etcd = append(h.Etcd,
			KV{Rev: 12, Key: "/c/rollouts/shop", Value: data, CreateRev: 12, Seen: at(3000)},
			KV{Rev: 13, Key: "/c/overrides/shop", Value: overrideRecord(20, tc.writer, rollout.Actor), CreateRev: 13, Seen: at(3010)},
		)
		r := results(t, h)["at most one rollout leader's writes accepted at a time (fenced)"]
		if r.Held != tc.held {
			t.Fatalf("weights by %s: held %v, want %v: %+v", tc.writer, r.Held, tc.held, r)
		}
	}
}

func TestCheckerCatches(t *testing.T) {
	tests := []struct {
		name string
		// edit breaks the consistent history.
		edit func(h *History)
		// check must fail (by name prefix), with a violation and an
		// excerpt containing every string of shows.
		check string
		shows []string
	}{
		{
			name: "a lost write: acknowledged, never in etcd",
			edit: func(h *History) {
				// Write #3 was answered at revision 9, but etcd never
				// had it; the reads after it still see write #2's.
				h.Etcd = append(h.Etcd[:3], h.Etcd[4:]...)
				h.Reads[2] = Read{Call: at(2200), Return: at(2250), Key: "/c/overrides/api", Value: "20.00", Rev: 7}
				for r, log := range h.Logs {
					log[4].Overrides = map[string]string{"api": weights(20)}
					h.Logs[r] = log
				}
			},
			check: "every acknowledged write is in etcd",
			shows: []string{"write #3", "revision 9"},
		},
		{
			name: "a lost write is not linearizable",
			edit: func(h *History) {
				h.Reads[2] = Read{Call: at(2200), Return: at(2250), Key: "/c/overrides/api", Value: "20.00", Rev: 7}
			},
			check: "acknowledged writes linearizable",
			shows: []string{"cannot be placed next"},
		},
		{
			name:  "a write answered at a revision older than one already read",
			edit:  func(h *History) { h.Writes[3].Revision = 8 },
			check: "acknowledged writes linearizable",
			shows: []string{"write #4"},
		},
		{
			name: "a replica going back a revision",
			edit: func(h *History) {
				log := h.Logs["r1"]
				// After revision 9, r1 applies revision 7 again.
				back := applied(6, 2300, 7, 20)
				log = append(log[:5], back, applied(7, 2870, 11, 40))
				h.Logs["r1"] = log
			},
			check: "each replica's applied revision only grows",
			shows: []string{"r1 applied revision 7 after 9", "r1 log #6"},
		},
		{
			name: "a replica reporting a lower applied revision",
			edit: func(h *History) {
				h.Looks = append(h.Looks, Look{Replica: "r0", At: at(5900), Connected: true, Applied: 5})
			},
			check: "each replica's applied revision only grows",
			shows: []string{"r0 reported applied revision 5 after 11"},
		},
		{
			name: "a replica applying a state etcd never had",
			edit: func(h *History) {
				h.Logs["r0"][3].Overrides = map[string]string{"api": weights(25)}
			},
			check: "each replica's applied revision only grows",
			shows: []string{"etcd had", "revision 7"},
		},
		{
			name: "two leaders writing",
			edit: func(h *History) {
				// r0 holds the election; r1 writes weights and a
				// transition as the guard anyway.
				st := rollout.State{Service: "shop", Phase: rollout.RolledBack, History: []rollout.Transition{
					{At: at(3500), From: rollout.Progressing, To: rollout.RolledBack, Actor: rollout.Actor, Node: "r1", Reason: "failing"}}}
				data, _ := json.Marshal(st)
				// r0 was elected before the recording started.
				h.Initial = append(h.Initial, KV{Rev: 1, Key: "/c/rollout-leader/a1", Value: []byte("r0"), CreateRev: 1, Seen: at(0)})
				h.Etcd = append(h.Etcd,
					KV{Rev: 13, Key: "/c/rollout-leader/b2", Value: []byte("r1"), CreateRev: 13, Seen: at(3100)},
					KV{Rev: 14, Key: "/c/overrides/shop", Value: overrideRecord(25, "r0", rollout.Actor), CreateRev: 14, Seen: at(3200)},
					KV{Rev: 15, Key: "/c/overrides/shop", Value: overrideRecord(0, "r1", rollout.Actor), CreateRev: 14, Seen: at(3500)},
					KV{Rev: 16, Key: "/c/rollouts/shop", Value: data, CreateRev: 16, Seen: at(3510)},
				)
			},
			check: "at most one rollout leader's writes",
			shows: []string{"revision 15: r1 wrote as rollout leader", "while the leader was \"r0\"", "revision 16: r1", "rollout-leader/b2"},
		},
		{
			name: "a replica behind while a member is stopped",
			edit: func(h *History) {
				// r1 applies write #2 2.5 s after its answer.
				log := h.Logs["r1"]
				log[3].At, log[4].At = at(4100), at(4150)
				log[4].Revision = 9
				h.Logs["r1"] = []fleet.Event{log[0], log[1], log[2], log[3], log[4], log[5]}
				h.Logs["r1"][5].At = at(4200)
				h.Logs["r1"][3].Revision = 7
			},
			check: "no replica more than 2s behind",
			shows: []string{"r1 applied revision 7 only 2.5s after the answer", "write #2"},
		},
		{
			name: "writes not acknowledged for 4 s while a member is stopped",
			edit: func(h *History) {
				h.Faults[0].Heal = at(5500)
				h.Writes = append(h.Writes, Write{ID: 5, Client: "w0", Replica: "r0", Service: "api", Percent: 50, Call: at(3000), Return: at(6000), Status: 503, Error: "etcd: unavailable"})
			},
			check: "writes keep being acknowledged",
			shows: []string{"no write acknowledged after its heal"},
		},
		{
			name: "an acknowledgement gap inside the fault",
			edit: func(h *History) {
				h.Faults[0].Heal = at(2950)
				h.Writes[1].Status, h.Writes[1].Error = 503, "etcd: unavailable"
				h.Writes[2].Status, h.Writes[2].Error = 503, "etcd: unavailable"
				h.Writes[3].Call, h.Writes[3].Return = at(4500), at(4600)
				h.Faults[0].Heal = at(4700)
			},
			check: "writes keep being acknowledged",
			shows: []string{"no write acknowledged from", "(3.5s)", "write #2"},
		},
		{
			name: "connected while not following",
			edit: func(h *History) {
				// r1 stops applying after revision 7 but keeps saying
				// connected.
				log := h.Logs["r1"][:4]
				h.Logs["r1"] = append(log, applied(5, 5800, 11, 40))
				for i, l := range h.Looks {
					if l.Replica == "r1" {
						h.Looks[i].Applied = h.appliedAt("r1", l.At)
					}
				}
			},
			check: "connected only while following",
			shows: []string{"r1 said connected", "behind a write acknowledged", "write #3"},
		},
		{
			name: "slow convergence after a heal",
			edit: func(h *History) {
				h.Logs["r1"][5].At = at(4500) // revision 11, acknowledged at 2.9 s
				h.Faults = append(h.Faults, Fault{Name: "r1 cut off", Kind: ReplicaFault, Target: "r1", Start: at(2950), Heal: at(3000)})
			},
			check: "after healing every replica reaches the last revision",
			shows: []string{"r1 cut off healed", "1.5s later"},
		},
		{
			name: "an invalid document applied",
			edit: func(h *History) {
				h.Logs["r0"][5].SHA256 = "bad"
			},
			check: "no replica ever applies an invalid document",
			shows: []string{"r0 applied an invalid document (weights sum to 70)"},
		},
		{
			name: "a write applied twice",
			edit: func(h *History) {
				h.Etcd = append(h.Etcd, KV{Rev: 13, Key: "/c/overrides/api", Value: overrideRecord(30, "r0", "t"), CreateRev: 5, Seen: at(3500)})
			},
			check: "no write applied twice",
			shows: []string{"write #3 applied 2 times (revisions [9 13])"},
		},
		{
			name: "a write no call made",
			edit: func(h *History) {
				h.Etcd = append(h.Etcd, KV{Rev: 13, Key: "/c/overrides/api", Value: overrideRecord(77, "r0", "t"), CreateRev: 5, Seen: at(3500)})
			},
			check: "no write applied twice",
			shows: []string{"no write made", "77.00"},
		},
		{
			name: "a request failed through Envoy",
			edit: func(h *History) {
				h.Traffic.Failed = append(h.Traffic.Failed, Request{Envoy: "e1", Host: "api.example.com", At: at(1000), Status: 503, Error: "no healthy upstream"})
			},
			check: "0 requests failed",
			shows: []string{"via e1", "503 no healthy upstream"},
		},
		{
			name: "a log with a gap",
			edit: func(h *History) {
				h.Gaps["r0"] = 3
			},
			check: "replica logs and etcd history complete",
			shows: []string{"r0 dropped 3 log entries"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := consistent()
			tc.edit(h)
			rs := results(t, h)
			var got *Result
			for name, r := range rs {
				if strings.HasPrefix(name, tc.check) {
					got = &r
				}
			}
			if got == nil {
				t.Fatalf("no check named %q", tc.check)
			}
			if got.Held || len(got.Violations) == 0 {
				t.Fatalf("%q held; failing: %v", tc.check, failing(rs))
			}
			var text strings.Builder
			for _, v := range got.Violations {
				text.WriteString(v.What + "\n" + strings.Join(v.Excerpt, "\n") + "\n")
			}
			for _, s := range tc.shows {
				if !strings.Contains(text.String(), s) {
					t.Errorf("the violation does not show %q:\n%s", s, text.String())
				}
			}
		})
	}
}

// A replica whose process is stopped says nothing: its log's last
// "connected" is not a claim about the moments of the stop. Once it runs
// again, the same log is a claim, and checked.
func TestFollowingFrozenReplica(t *testing.T) {
	const check = "connected only while following"
	for _, tc := range []struct {
		name string
		heal int // ms: the end of r1's stop
		held bool
	}{
		{name: "behind only while stopped", heal: 6000, held: true},
		{name: "still behind after it resumed", heal: 4000, held: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := consistent()
			// r1 stops at 2.4 s, before it applies revisions 9 and 11,
			// and applies them at 5.8 s; its log still says connected.
			log := h.Logs["r1"][:4]
			h.Logs["r1"] = append(log, applied(5, 5800, 9, 30), applied(6, 5810, 11, 40))
			h.Faults = append(h.Faults, Fault{Name: "r1 stopped (SIGSTOP)", Kind: ReplicaFault, Target: "r1", Start: at(2400), Heal: at(tc.heal), Frozen: true})
			// Nobody reads a stopped process: no look of r1 meanwhile.
			looks := h.Looks[:0]
			for _, l := range h.Looks {
				if l.Replica == "r1" && !l.At.Before(at(2400)) && !l.At.After(at(5800)) {
					continue
				}
				looks = append(looks, l)
			}
			h.Looks = looks
			var got Result
			for name, r := range results(t, h) {
				if strings.HasPrefix(name, check) {
					got = r
				}
			}
			if got.Held != tc.held {
				t.Fatalf("held = %v, want %v: %+v", got.Held, tc.held, got.Violations)
			}
			if !tc.held && !strings.Contains(got.Violations[0].What, "r1's log says connected") {
				t.Fatalf("violation: %+v", got.Violations[0])
			}
		})
	}
}
