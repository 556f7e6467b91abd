package chaos

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
)

// Result is one check over a history.
type Result struct {
	Name    string
	Held    bool
	Summary string // what was checked, with its figures
	// Violations show the part of the history that breaks the check.
	Violations []Violation
}

// Violation is one breach, with the lines of the history that show it.
type Violation struct {
	What    string
	Excerpt []string
}

// maxViolations bounds the violations a result keeps (the count is in
// the summary).
const maxViolations = 10

func (r *Result) add(v Violation) {
	r.Held = false
	if len(r.Violations) < maxViolations {
		r.Violations = append(r.Violations, v)
	}
}

// Convergence is how long after a fault healed the slowest replica
// reached the last revision.
type Convergence struct {
	Fault   string
	Target  int64
	Slowest string
	After   time.Duration
	// Missing: replicas that never reached it.
	Missing []string
}

// Check runs every check on h; dir (may be "") receives porcupine's
// visualization when linearizability fails.
func Check(h *History, dir string) ([]Result, []Convergence) {
	conv, convRes := h.checkConvergence()
	return []Result{
		h.checkLinearizable(dir),
		h.checkAckedInEtcd(),
		h.checkWrittenOnce(),
		h.checkLogs(),
		h.checkReplicaOrder(),
		h.checkLag(),
		h.checkAckGaps(),
		h.checkFollowing(),
		convRes,
		h.checkNoInvalid(),
		h.checkFenced(),
		h.checkTraffic(),
	}, conv
}

// overrideIndex maps each revision that changed a writer service's
// override key to its change.
func (h *History) overrideIndex() map[int64]KV {
	keys := map[string]bool{}
	for svc := range h.Stable {
		keys[h.overrideKey(svc)] = true
	}
	out := map[int64]KV{}
	for _, kv := range h.Etcd {
		if keys[kv.Key] {
			out[kv.Rev] = kv
		}
	}
	return out
}

// serviceOfKey returns the writer service whose override key is key.
func (h *History) serviceOfKey(key string) string {
	for svc := range h.Stable {
		if h.overrideKey(svc) == key {
			return svc
		}
	}
	return ""
}

// checkAckedInEtcd: every acknowledged write is in etcd, at the revision
// its answer named, with its value, written by the replica that answered.
func (h *History) checkAckedInEtcd() Result {
	res := Result{Name: "every acknowledged write is in etcd at its revision", Held: true}
	idx := h.overrideIndex()
	acked, bad := 0, 0
	for _, w := range h.Writes {
		if !w.Acked() {
			continue
		}
		acked++
		kv, ok := idx[w.Revision]
		var why string
		switch {
		case !ok:
			why = fmt.Sprintf("etcd's history has no change of %s at revision %d", h.overrideKey(w.Service), w.Revision)
		case kv.Key != h.overrideKey(w.Service) || kv.Deleted:
			why = "revision " + fmt.Sprint(w.Revision) + " changed something else"
		case canaryOf(kv.Value, h.Stable[w.Service]) != w.Value():
			why = fmt.Sprintf("revision %d holds canary %s, not %s", w.Revision, canaryOf(kv.Value, h.Stable[w.Service]), w.Value())
		default:
			var r record
			if json.Unmarshal(kv.Value, &r) == nil && r.Node != w.Replica {
				why = fmt.Sprintf("revision %d was written by %s, not by %s, which answered", w.Revision, r.Node, w.Replica)
			}
		}
		if why == "" {
			continue
		}
		bad++
		v := Violation{What: "acknowledged write lost: " + why, Excerpt: []string{w.String()}}
		v.Excerpt = append(v.Excerpt, h.etcdAround(h.overrideKey(w.Service), w.Revision, 3)...)
		res.add(v)
	}
	res.Summary = fmt.Sprintf("%d acknowledged writes, %d not in etcd as answered", acked, bad)
	return res
}

// etcdAround returns the changes of key around rev.
func (h *History) etcdAround(key string, rev int64, n int) []string {
	var on []KV
	for _, kv := range h.Etcd {
		if kv.Key == key {
			on = append(on, kv)
		}
	}
	i := sort.Search(len(on), func(i int) bool { return on[i].Rev >= rev })
	var out []string
	for j := max(i-n, 0); j < min(i+n, len(on)); j++ {
		out = append(out, on[j].String())
	}
	if len(out) == 0 {
		out = append(out, "etcd's history of "+key+" is empty")
	}
	return out
}

// checkWrittenOnce: each write's value is put at most once (no write is
// applied twice), and every value put on a writer's key comes from a
// write (nothing appears that no call made).
func (h *History) checkWrittenOnce() Result {
	res := Result{Name: "no write applied twice, none out of nowhere", Held: true}
	type put struct{ revs []int64 }
	puts := map[string]*put{} // key=value
	n := 0
	for _, kv := range h.Etcd {
		svc := h.serviceOfKey(kv.Key)
		if svc == "" || kv.Deleted {
			continue
		}
		n++
		k := kv.Key + "=" + canaryOf(kv.Value, h.Stable[svc])
		if puts[k] == nil {
			puts[k] = &put{}
		}
		puts[k].revs = append(puts[k].revs, kv.Rev)
	}
	made := map[string]Write{}
	for _, w := range h.Writes {
		made[h.overrideKey(w.Service)+"="+w.Value()] = w
	}
	var keys []string
	for k := range puts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := puts[k]
		key, _, _ := strings.Cut(k, "=")
		w, ok := made[k]
		switch {
		case !ok:
			res.add(Violation{What: "a value in etcd that no write made: " + k, Excerpt: h.etcdAround(key, p.revs[0], 2)})
		case len(p.revs) > 1:
			v := Violation{What: fmt.Sprintf("write #%d applied %d times (revisions %v)", w.ID, len(p.revs), p.revs), Excerpt: []string{w.String()}}
			for _, r := range p.revs {
				v.Excerpt = append(v.Excerpt, h.etcdAround(key, r, 1)...)
			}
			res.add(v)
		}
	}
	res.Summary = fmt.Sprintf("%d puts on the writers' keys, %d writes", n, len(h.Writes))
	return res
}

// checkLogs: every replica's log is complete (no entry dropped before it
// was read) and its sequence numbers follow each other.
func (h *History) checkLogs() Result {
	res := Result{Name: "replica logs and etcd history complete", Held: true}
	total := 0
	if n := len(h.EtcdGaps); n > 0 {
		res.add(Violation{What: fmt.Sprintf("%d revisions missing from the recorded etcd history: %v", n, h.EtcdGaps[:min(n, 20)])})
	}
	for _, r := range h.replicas() {
		if g := h.Gaps[r]; g > 0 {
			res.add(Violation{What: fmt.Sprintf("%s dropped %d log entries before they were read", r, g)})
		}
		log := h.Logs[r]
		total += len(log)
		for i := 1; i < len(log); i++ {
			if log[i].Seq != log[i-1].Seq+1 {
				res.add(Violation{What: fmt.Sprintf("%s: log entry %d follows %d", r, log[i].Seq, log[i-1].Seq),
					Excerpt: []string{eventLine(r, log[i-1]), eventLine(r, log[i])}})
			}
		}
	}
	res.Summary = fmt.Sprintf("%d entries from %d replicas", total, len(h.Logs))
	return res
}

// checkReplicaOrder: each replica applies strictly increasing revisions
// (none twice, none out of order, never back), every state it applies is
// the one etcd had at that revision (for the writers' keys), and its
// reported applied revision never goes back.
func (h *History) checkReplicaOrder() Result {
	res := Result{Name: "each replica's applied revision only grows; each state applied is etcd's", Held: true}
	applied := 0
	// The writers' keys' values over revisions.
	type change struct {
		rev     int64
		weights string // "" deleted
	}
	hist := map[string][]change{}
	for _, kv := range h.Etcd {
		if svc := h.serviceOfKey(kv.Key); svc != "" {
			c := change{rev: kv.Rev}
			if !kv.Deleted {
				c.weights = weightsOf(kv.Value)
			}
			hist[svc] = append(hist[svc], c)
		}
	}
	stateAt := func(svc string, rev int64) (string, bool) {
		cs := hist[svc]
		i := sort.Search(len(cs), func(i int) bool { return cs[i].rev > rev })
		if i == 0 {
			return "", false // before the recorded history: unknown
		}
		return cs[i-1].weights, true
	}
	first := int64(0)
	if len(h.Etcd) > 0 {
		first = h.Etcd[0].Rev
	}
	for _, r := range h.replicas() {
		last := -1
		log := h.Logs[r]
		for i, e := range log {
			if e.Kind != "applied" {
				continue
			}
			applied++
			if last >= 0 && e.Revision <= log[last].Revision {
				res.add(Violation{What: fmt.Sprintf("%s applied revision %d after %d", r, e.Revision, log[last].Revision),
					Excerpt: []string{eventLine(r, log[last]), eventLine(r, e)}})
			}
			last = i
			if e.Revision < first {
				continue
			}
			for svc := range h.Stable {
				want, known := stateAt(svc, e.Revision)
				if !known {
					continue
				}
				if got := e.Overrides[svc]; got != want {
					v := Violation{What: fmt.Sprintf("%s applied revision %d with %s override %q; etcd had %q", r, e.Revision, svc, got, want),
						Excerpt: []string{eventLine(r, e)}}
					v.Excerpt = append(v.Excerpt, h.etcdAround(h.overrideKey(svc), e.Revision, 2)...)
					res.add(v)
				}
			}
		}
	}
	prev := map[string]Look{}
	for _, l := range h.Looks {
		if p, ok := prev[l.Replica]; ok && l.Applied < p.Applied {
			res.add(Violation{What: fmt.Sprintf("%s reported applied revision %d after %d", l.Replica, l.Applied, p.Applied),
				Excerpt: []string{lookLine(p), lookLine(l)}})
		}
		prev[l.Replica] = l
	}
	res.Summary = fmt.Sprintf("%d applied entries, %d looks", applied, len(h.Looks))
	return res
}

func lookLine(l Look) string {
	return fmt.Sprintf("look at %s %s: connected %v, applied revision %d", l.Replica, clock(l.At), l.Connected, l.Applied)
}

// checkLag: while a member is stopped or killed, every replica (but one
// cut off from etcd by another fault) applies each acknowledged write
// within Bounds.Behind of its answer.
func (h *History) checkLag() Result {
	res := Result{Name: fmt.Sprintf("no replica more than %v behind an acknowledged write while a member is down", h.Bounds.Behind), Held: true}
	var worst time.Duration
	var worstWhat string
	checked := 0
	for _, f := range h.Faults {
		if f.Kind != MemberFault {
			continue
		}
		for _, w := range h.Writes {
			if !w.Acked() || w.Return.Before(f.Start) || w.Return.After(f.Heal) {
				continue
			}
			for _, r := range h.replicas() {
				if h.cutOff(r, w.Return, h.Bounds.Converge) {
					continue
				}
				checked++
				at := h.reached(r, w.Revision)
				lag := at.Sub(w.Return)
				if at.IsZero() {
					lag = h.End.Sub(w.Return)
				}
				if lag > worst {
					worst, worstWhat = lag, fmt.Sprintf("%s, write #%d", r, w.ID)
				}
				if at.IsZero() || lag > h.Bounds.Behind {
					v := Violation{What: fmt.Sprintf("%s: %s; %s applied revision %d only %v after the answer", f.Name, r, r, w.Revision, lag.Round(time.Millisecond)),
						Excerpt: []string{w.String()}}
					v.Excerpt = append(v.Excerpt, h.logAround(r, w.Return.Add(-time.Second), w.Return.Add(lag+time.Second))...)
					res.add(v)
				}
			}
		}
	}
	res.Summary = fmt.Sprintf("%d (write, replica) pairs during member faults; worst %v (%s)", checked, worst.Round(time.Millisecond), worstWhat)
	return res
}

// checkAckGaps: while a member is stopped or killed, writes keep being
// acknowledged: no gap longer than Bounds.AckGap between acknowledgements
// (from the last one before the fault to the first one after its heal).
func (h *History) checkAckGaps() Result {
	res := Result{Name: fmt.Sprintf("writes keep being acknowledged while a member is down (no gap over %v)", h.Bounds.AckGap), Held: true}
	var acks []time.Time
	for _, w := range h.Writes {
		if w.Acked() {
			acks = append(acks, w.Return)
		}
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i].Before(acks[j]) })
	var worst time.Duration
	for _, f := range h.Faults {
		if f.Kind != MemberFault {
			continue
		}
		// From the last acknowledgement before the fault (or its start)
		// to the first after its heal.
		points := []time.Time{f.Start}
		for _, t := range acks {
			switch {
			case t.Before(f.Start):
				points[0] = t
			case !t.After(f.Heal):
				points = append(points, t)
			}
		}
		after := sort.Search(len(acks), func(i int) bool { return acks[i].After(f.Heal) })
		if after == len(acks) {
			res.add(Violation{What: fmt.Sprintf("%s: no write acknowledged after its heal at %s", f.Name, clock(f.Heal))})
		} else {
			points = append(points, acks[after])
		}
		for k := 1; k < len(points); k++ {
			gap := points[k].Sub(points[k-1])
			worst = max(worst, gap)
			if gap <= h.Bounds.AckGap {
				continue
			}
			v := Violation{What: fmt.Sprintf("%s: no write acknowledged from %s to %s (%v)", f.Name, clock(points[k-1]), clock(points[k]), gap.Round(time.Millisecond))}
			for _, w := range h.Writes {
				if w.Return.After(points[k-1]) && !w.Call.After(points[k]) {
					v.Excerpt = append(v.Excerpt, w.String())
				}
			}
			res.add(v)
		}
	}
	res.Summary = fmt.Sprintf("%d acknowledgements; longest gap during a member fault %v", len(acks), worst.Round(time.Millisecond))
	return res
}

// checkFollowing: a replica says connected only while it follows: when it
// says so at t (its own log, and every look), it has applied every write
// acknowledged before t - Bounds.Follow. Its log speaks for it only while
// its process runs: not while it is stopped (Fault.Frozen).
func (h *History) checkFollowing() Result {
	res := Result{Name: fmt.Sprintf("connected only while following (everything acknowledged %v earlier applied)", h.Bounds.Follow), Held: true}
	type ack struct {
		at  time.Time
		rev int64
		w   Write
	}
	var acks []ack
	for _, w := range h.Writes {
		if w.Acked() {
			acks = append(acks, ack{w.Return, w.Revision, w})
		}
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i].at.Before(acks[j].at) })
	// best[i]: the acknowledgement with the highest revision among acks[:i+1].
	best := make([]int, len(acks))
	for i := range acks {
		best[i] = i
		if i > 0 && acks[best[i-1]].rev > acks[i].rev {
			best[i] = best[i-1]
		}
	}
	due := func(t time.Time) (ack, bool) {
		i := sort.Search(len(acks), func(i int) bool { return acks[i].at.After(t.Add(-h.Bounds.Follow)) })
		if i == 0 {
			return ack{}, false
		}
		return acks[best[i-1]], true
	}
	checked, bad := 0, 0
	for _, l := range h.Looks {
		if !l.Connected {
			continue
		}
		checked++
		if a, ok := due(l.At); ok && l.Applied < a.rev {
			bad++
			v := Violation{What: fmt.Sprintf("%s said connected at %s while at revision %d, behind a write acknowledged %v earlier at %d",
				l.Replica, clock(l.At), l.Applied, l.At.Sub(a.at).Round(time.Millisecond), a.rev), Excerpt: []string{a.w.String(), lookLine(l)}}
			v.Excerpt = append(v.Excerpt, h.logAround(l.Replica, a.at.Add(-time.Second), l.At)...)
			res.add(v)
		}
	}
	for _, r := range h.replicas() {
		for _, a := range acks {
			t := a.at.Add(h.Bounds.Follow)
			if t.After(h.End) || h.frozen(r, t) || !h.connectedAt(r, t) {
				continue
			}
			checked++
			if got := h.appliedAt(r, t); got < a.rev {
				bad++
				v := Violation{What: fmt.Sprintf("%s's log says connected at %s while at revision %d, behind a write acknowledged at %s at %d",
					r, clock(t), got, clock(a.at), a.rev), Excerpt: []string{a.w.String()}}
				v.Excerpt = append(v.Excerpt, h.logAround(r, a.at.Add(-time.Second), t)...)
				res.add(v)
			}
		}
	}
	looks, up := 0, 0
	for _, l := range h.Looks {
		looks++
		if l.Connected {
			up++
		}
	}
	res.Summary = fmt.Sprintf("%d moments checked (%d of %d looks said connected), %d while behind", checked, up, looks, bad)
	return res
}

// stateKey says whether key is in the range every replica applies.
func (h *History) stateKey(key string) bool {
	return key == h.Prefix+"config" || strings.HasPrefix(key, h.Prefix+"overrides/")
}

// checkConvergence: after each fault heals, every replica reaches the
// last revision of the state it applies (as committed at the heal) within
// Bounds.Converge.
func (h *History) checkConvergence() ([]Convergence, Result) {
	res := Result{Name: fmt.Sprintf("after healing every replica reaches the last revision within %v", h.Bounds.Converge), Held: true}
	var out []Convergence
	for _, f := range h.Faults {
		var target int64
		for _, kv := range h.Etcd {
			if h.stateKey(kv.Key) && !kv.Seen.After(f.Heal) && kv.Rev > target {
				target = kv.Rev
			}
		}
		for _, w := range h.Writes {
			if w.Acked() && !w.Return.After(f.Heal) && w.Revision > target {
				target = w.Revision
			}
		}
		c := Convergence{Fault: f.Name, Target: target}
		for _, r := range h.replicas() {
			at := h.reached(r, target)
			if at.IsZero() {
				c.Missing = append(c.Missing, r)
				res.add(Violation{What: fmt.Sprintf("%s: %s never reached revision %d", f.Name, r, target),
					Excerpt: h.logAround(r, f.Heal.Add(-time.Second), h.End)})
				continue
			}
			d := max(at.Sub(f.Heal), 0)
			if d >= c.After {
				c.After, c.Slowest = d, r
			}
			if d > h.Bounds.Converge {
				res.add(Violation{What: fmt.Sprintf("%s healed at %s; %s reached revision %d %v later", f.Name, clock(f.Heal), r, target, d.Round(time.Millisecond)),
					Excerpt: h.logAround(r, f.Heal.Add(-time.Second), at)})
			}
		}
		out = append(out, c)
	}
	var parts []string
	for _, c := range out {
		parts = append(parts, fmt.Sprintf("%s %v", c.Fault, c.After.Round(time.Millisecond)))
	}
	res.Summary = "slowest replica after each heal: " + strings.Join(parts, ", ")
	return out, res
}

// checkNoInvalid: no replica ever applies an invalid document.
func (h *History) checkNoInvalid() Result {
	res := Result{Name: "no replica ever applies an invalid document", Held: true}
	rejected := 0
	for _, r := range h.replicas() {
		for _, e := range h.Logs[r] {
			if e.Kind != "applied" {
				continue
			}
			if e.Rejected != "" {
				rejected++
			}
			if why, bad := h.Invalid[e.SHA256]; bad {
				res.add(Violation{What: fmt.Sprintf("%s applied an invalid document (%s)", r, why), Excerpt: []string{eventLine(r, e)}})
			}
		}
	}
	res.Summary = fmt.Sprintf("%d invalid documents written straight into etcd; %d applied entries kept the last good one and said why", len(h.Invalid), rejected)
	return res
}

// leaderWrite is a write the rollout leader's loop made.
type leaderWrite struct {
	rev  int64
	node string
	what string
}

// checkFenced: at most one rollout leader's writes are accepted at a
// time: every write of the guard's loop was made by the replica that held
// the election at that revision (the live key with the lowest create
// revision). The guard's writes are its transitions (a rollout state
// gaining one of actor "rollout") and the weights that follow them
// (override records of actor "rollout"). Weights that follow an
// operator's transition are written by the replica that took the call,
// or by the leader when that replica died before it could.
func (h *History) checkFenced() Result {
	res := Result{Name: "at most one rollout leader's writes accepted at a time (fenced)", Held: true}
	elect := h.Prefix + "rollout-leader/"
	type cand struct {
		create int64
		node   string
	}
	live := map[string]cand{}
	leader := func() (string, int64) {
		var best cand
		for _, c := range live {
			if best.create == 0 || c.create < best.create {
				best = c
			}
		}
		return best.node, best.create
	}
	for _, kv := range h.Initial {
		if strings.HasPrefix(kv.Key, elect) {
			live[kv.Key] = cand{create: kv.CreateRev, node: string(kv.Value)}
		}
	}
	lastTransition := map[string]string{}
	latest := map[string]rollout.Transition{} // per rollouts/ key
	for _, kv := range h.Initial {
		var st rollout.State
		if strings.HasPrefix(kv.Key, h.Prefix+"rollouts/") && json.Unmarshal(kv.Value, &st) == nil && len(st.History) > 0 {
			latest[kv.Key] = st.History[len(st.History)-1]
		}
	}
	writes, terms := 0, 0
	prevLeader, _ := leader()
	if prevLeader != "" {
		terms++
	}
	for _, kv := range h.Etcd {
		switch {
		case strings.HasPrefix(kv.Key, elect):
			if kv.Deleted {
				delete(live, kv.Key)
			} else {
				live[kv.Key] = cand{create: kv.CreateRev, node: string(kv.Value)}
			}
			if l, _ := leader(); l != prevLeader {
				terms++
				prevLeader = l
			}
			continue
		}
		var lw *leaderWrite
		switch {
		case strings.HasPrefix(kv.Key, h.Prefix+"overrides/") && !kv.Deleted:
			var r record
			if json.Unmarshal(kv.Value, &r) != nil || r.Actor != rollout.Actor {
				continue
			}
			svc := strings.TrimPrefix(kv.Key, h.Prefix+"overrides/")
			if tr, ok := latest[h.Prefix+"rollouts/"+svc]; ok && tr.Actor != rollout.Actor && tr.Node == r.Node {
				continue // the weights of an operator's transition, by the replica that took it
			}
			lw = &leaderWrite{kv.Rev, r.Node, "weights " + weightsOf(kv.Value) + " on " + kv.Key}
		case strings.HasPrefix(kv.Key, h.Prefix+"rollouts/") && !kv.Deleted:
			var st rollout.State
			if json.Unmarshal(kv.Value, &st) != nil || len(st.History) == 0 {
				continue
			}
			tr := st.History[len(st.History)-1]
			latest[kv.Key] = tr
			id := tr.At.String() + tr.Node + string(tr.To)
			if lastTransition[kv.Key] == id {
				continue
			}
			lastTransition[kv.Key] = id
			if tr.Actor == rollout.Actor {
				lw = &leaderWrite{kv.Rev, tr.Node, fmt.Sprintf("transition %s -> %s (%s) on %s", tr.From, tr.To, tr.Reason, kv.Key)}
			}
		}
		if lw == nil {
			continue
		}
		writes++
		l, create := leader()
		if l != lw.node {
			v := Violation{What: fmt.Sprintf("revision %d: %s wrote as rollout leader (%s) while the leader was %q (election key created at %d)", lw.rev, lw.node, lw.what, l, create)}
			v.Excerpt = h.etcdBetween(max(create, lw.rev-8), lw.rev, func(k string) bool {
				return strings.HasPrefix(k, elect) || strings.HasPrefix(k, h.Prefix+"rollouts/") || strings.HasPrefix(k, h.Prefix+"overrides/")
			})
			res.add(v)
		}
	}
	res.Summary = fmt.Sprintf("%d writes of the leader's loop, %d leaderships", writes, terms)
	return res
}

// etcdBetween returns the changes from revision from to to whose key
// matches.
func (h *History) etcdBetween(from, to int64, match func(string) bool) []string {
	var out []string
	for _, kv := range h.Etcd {
		if kv.Rev >= from && kv.Rev <= to && match(kv.Key) {
			out = append(out, kv.String())
		}
	}
	return out
}

// checkTraffic: no request through Envoy failed (the failing canary's own
// injected answers excepted: they are the fault).
func (h *History) checkTraffic() Result {
	res := Result{Name: "0 requests failed through Envoy", Held: true}
	for _, r := range h.Traffic.Failed {
		res.add(Violation{What: r.String()})
	}
	res.Summary = fmt.Sprintf("%d requests, %d failed, %d answered by the failing canary's injected fault", h.Traffic.Total, len(h.Traffic.Failed), h.Traffic.Injected)
	return res
}
