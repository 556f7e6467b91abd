package chaos

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/split"
)

// History is everything one pass recorded, on one clock: this process's
// and the replicas' (they run on the same machine; their logs carry their
// own times).
type History struct {
	Prefix     string
	Start, End time.Time
	// Stable names the stable version of each service the writers write
	// (their override keys are the registers checked).
	Stable map[string]string
	// Writes are the admin writes, each with its call and return times and
	// its answer.
	Writes []Write
	// Reads are the recorder's own linearizable reads of override keys in
	// etcd (for the linearizability check).
	Reads []Read
	// Logs are the replicas' own logs (GET /v1/fleet/log), complete: Gaps
	// counts entries a replica dropped before they were read.
	Logs map[string][]fleet.Event
	Gaps map[string]int
	// Looks are the recorder's samples of each replica's status (what an
	// operator polling GET /v1/services sees).
	Looks []Look
	// Etcd is every change under the prefix, in revision order, from the
	// recorder's watches on every member; Seen is when it was first
	// received.
	Etcd []KV
	// Initial is the state under the prefix when the recording started,
	// which Etcd's changes apply to.
	Initial []KV
	// EtcdGaps are revisions after the start that no watch delivered (the
	// cluster is the bed's alone: every revision is under the prefix).
	EtcdGaps []int64
	// Faults are the faults injected, in order.
	Faults []Fault
	// Invalid maps the sha256 of each invalid document written straight
	// into etcd to what was wrong with it.
	Invalid map[string]string
	// Traffic is every request through Envoy: counted, the failures kept.
	Traffic Traffic
	// Rollout is what the rollout fault observed (the state the rollout
	// ended in and who moved it).
	Rollout []string
	Bounds  Bounds
}

// Bounds are the promises checked (docs/fleet.md, "Under faults").
type Bounds struct {
	// Behind: while a member is stopped or killed, no replica is more than
	// this behind an acknowledged write.
	Behind time.Duration
	// AckGap: while a member is stopped or killed (a majority up), no
	// longer than this without an acknowledged write.
	AckGap time.Duration
	// Follow: a replica that says connected at t has applied every write
	// acknowledged before t - Follow.
	Follow time.Duration
	// Converge: after a fault heals, every replica reaches the last
	// acknowledged revision within this.
	Converge time.Duration
}

// DefaultBounds are the issue's: 2 s behind, 3 s without an acknowledged
// write (an election), connected only while following (2 s), 1 s to
// converge after healing.
func DefaultBounds() Bounds {
	return Bounds{Behind: 2 * time.Second, AckGap: 3 * time.Second, Follow: 2 * time.Second, Converge: time.Second}
}

// Write is one admin write: PUT /v1/services/{Service}/canary.
type Write struct {
	ID      int
	Client  string // the writer
	Replica string // the replica that took the call
	Service string
	Percent float64 // the canary share asked: unique within a pass
	Call    time.Time
	Return  time.Time
	// Status is the HTTP status, 0 when there was no answer.
	Status   int
	Revision int64
	// Applied is false when the answer said "applied": false (202).
	Applied bool
	Error   string
}

// Acked says whether the write was acknowledged: committed, at Revision.
func (w Write) Acked() bool { return w.Status == 200 || w.Status == 202 }

// Value is the register value the write puts.
func (w Write) Value() string { return percentValue(w.Percent) }

func (w Write) String() string {
	out := fmt.Sprintf("write #%d %s via %s %s canary=%s call %s return %s: ", w.ID, w.Client, w.Replica, w.Service, w.Value(), clock(w.Call), clock(w.Return))
	switch {
	case w.Acked():
		out += fmt.Sprintf("%d revision %d", w.Status, w.Revision)
		if !w.Applied {
			out += " (applied: false)"
		}
	case w.Status == 0:
		out += "no answer: " + w.Error
	default:
		out += fmt.Sprintf("%d %s", w.Status, w.Error)
	}
	return out
}

// Read is a linearizable read of an override key in etcd.
type Read struct {
	Call, Return time.Time
	Key          string
	Value        string // the canary share the override holds; "" absent
	Rev          int64  // its mod revision; 0 absent
}

func (r Read) String() string {
	return fmt.Sprintf("read %s call %s return %s: %q at revision %d", r.Key, clock(r.Call), clock(r.Return), r.Value, r.Rev)
}

// Look is one sample of a replica's status.
type Look struct {
	Replica   string
	At        time.Time
	Connected bool
	Applied   int64
}

// KV is one change in etcd.
type KV struct {
	Rev       int64
	Key       string
	Deleted   bool
	Value     []byte
	CreateRev int64
	Lease     int64
	Seen      time.Time
}

func (kv KV) String() string {
	if kv.Deleted {
		return fmt.Sprintf("etcd revision %d: DELETE %s", kv.Rev, kv.Key)
	}
	v := string(kv.Value)
	if len(v) > 160 {
		v = v[:160] + "…"
	}
	return fmt.Sprintf("etcd revision %d: PUT %s = %s", kv.Rev, kv.Key, v)
}

// Fault kinds: which checks apply in their window.
const (
	// MemberFault: an etcd member killed or stopped; a majority is up.
	MemberFault = "member"
	// StoreFault: compaction, defragmentation, invalid documents.
	StoreFault = "store"
	// ReplicaFault: a splitter replica cut off from every member.
	ReplicaFault = "replica"
)

// Fault is one injected fault: from Start until Heal it is in force; the
// replicas must have converged within Bounds.Converge of Heal.
type Fault struct {
	Name   string
	Kind   string
	Target string // the member or replica
	Start  time.Time
	Heal   time.Time
	Notes  []string
	// Frozen: the target replica's process was stopped (SIGSTOP) from
	// Start to Heal. It said nothing meanwhile: its log's last word is not
	// a statement about those moments (a look would have waited for it to
	// resume, and been answered afresh).
	Frozen bool
}

// Traffic is every request sent through the Envoys.
type Traffic struct {
	Total    int
	ByEnvoy  map[string]int
	Injected int // answered by the injected fault of a failing canary (expected)
	Failed   []Request
}

// Request is a failed request through an Envoy.
type Request struct {
	Envoy  string
	Host   string
	At     time.Time
	Status int
	Error  string
}

func (r Request) String() string {
	return fmt.Sprintf("request via %s (%s) at %s: %d %s", r.Envoy, r.Host, clock(r.At), r.Status, r.Error)
}

// percentValue is a canary share as the register holds it.
func percentValue(p float64) string { return fmt.Sprintf("%.2f", p) }

// clock formats a time for excerpts.
func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("15:04:05.000")
}

// overrideKey is the override key of service.
func (h *History) overrideKey(service string) string { return h.Prefix + "overrides/" + service }

// record is what the checker reads of an override record.
type record struct {
	Weights split.Weights `json:"weights"`
	Node    string        `json:"node"`
	Actor   string        `json:"actor"`
}

// canaryOf returns the share of the version that is not stable in an
// override record: the register's value ("" when unreadable).
func canaryOf(raw []byte, stable string) string {
	var r record
	if err := json.Unmarshal(raw, &r); err != nil {
		return ""
	}
	for _, w := range r.Weights {
		if w.Version != stable {
			return percentValue(float64(w.BasisPoints) / 100)
		}
	}
	return ""
}

// weightsOf returns an override record's weights as a replica's log shows
// them ("" when unreadable).
func weightsOf(raw []byte) string {
	var r record
	if err := json.Unmarshal(raw, &r); err != nil || len(r.Weights) == 0 {
		return ""
	}
	return r.Weights.String()
}

// replicas returns the replicas' names, sorted.
func (h *History) replicas() []string {
	var out []string
	for r := range h.Logs {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// appliedAt returns the revision replica had in force at t (0 before its
// first entry in the history) from its own log.
func (h *History) appliedAt(replica string, t time.Time) int64 {
	var rev int64
	for _, e := range h.Logs[replica] {
		if e.At.After(t) {
			break
		}
		if e.Kind == "applied" {
			rev = e.Revision
		}
	}
	return rev
}

// reached returns when replica first had rev or later in force (zero if
// never).
func (h *History) reached(replica string, rev int64) time.Time {
	for _, e := range h.Logs[replica] {
		if e.Kind == "applied" && e.Revision >= rev {
			return e.At
		}
	}
	return time.Time{}
}

// connectedAt says whether replica said connected at t, from its log.
func (h *History) connectedAt(replica string, t time.Time) bool {
	up := false
	for _, e := range h.Logs[replica] {
		if e.At.After(t) {
			break
		}
		switch e.Kind {
		case "connected":
			up = true
		case "disconnected":
			up = false
		}
	}
	return up
}

// logAround returns replica's log entries from from to to, one line each.
func (h *History) logAround(replica string, from, to time.Time) []string {
	var out []string
	for _, e := range h.Logs[replica] {
		if e.At.Before(from) || e.At.After(to) {
			continue
		}
		out = append(out, eventLine(replica, e))
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("%s: no log entry from %s to %s", replica, clock(from), clock(to)))
	}
	return out
}

func eventLine(replica string, e fleet.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s log #%d %s %s", replica, e.Seq, clock(e.At), e.Kind)
	if e.Revision != 0 {
		fmt.Fprintf(&b, " revision %d", e.Revision)
	}
	if e.Kind == "applied" {
		fmt.Fprintf(&b, " sha256 %.12s", e.SHA256)
		if ov := e.Overrides; len(ov) > 0 {
			fmt.Fprintf(&b, " overrides %v", ov)
		}
		if e.Rejected != "" {
			fmt.Fprintf(&b, " rejected: %s", e.Rejected)
		}
	}
	if e.Member != "" {
		fmt.Fprintf(&b, " member %s", e.Member)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	return b.String()
}

// frozen says whether replica's process was stopped at t.
func (h *History) frozen(replica string, t time.Time) bool {
	for _, f := range h.Faults {
		if f.Frozen && f.Target == replica && !t.Before(f.Start) && !t.After(f.Heal) {
			return true
		}
	}
	return false
}

// cutOff says whether replica was cut off from etcd at t (a replica fault
// on it), or within settle after its heal.
func (h *History) cutOff(replica string, t time.Time, settle time.Duration) bool {
	for _, f := range h.Faults {
		if f.Kind == ReplicaFault && f.Target == replica && !t.Before(f.Start) && !t.After(f.Heal.Add(settle)) {
			return true
		}
	}
	return false
}
