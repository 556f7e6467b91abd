package chaos

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability check models each override key as a register whose
// state is the canary share it holds and the revision that wrote it. A
// write's output is the revision it was acknowledged at: it may take
// effect only at a revision after the register's (a write acknowledged at
// a revision older than one already observed, or a read that sees a state
// no write explains, is not linearizable). Reads are the recorder's
// linearizable reads in etcd. A write that was not acknowledged may or
// may not have taken effect (porcupine's unknown return time): if etcd's
// history holds its value, it takes effect there, at some point after its
// call; if not, it is left out, as one that never happened.

type regInput struct {
	Key   string
	Write bool
	Value string // write: the share written
}

type regState struct {
	Value string // "" absent
	Rev   int64
}

var registerModel = porcupine.Model{
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(regState), input.(regInput), output.(regState)
		if in.Write {
			if out.Rev <= st.Rev {
				return false, st
			}
			return true, regState{Value: in.Value, Rev: out.Rev}
		}
		return out == st, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regState)
		if in.Write {
			return fmt.Sprintf("write(%s) -> revision %d", in.Value, out.Rev)
		}
		return fmt.Sprintf("read -> %q at revision %d", out.Value, out.Rev)
	},
	DescribeState: func(state any) string {
		st := state.(regState)
		return fmt.Sprintf("%q at revision %d", st.Value, st.Rev)
	},
}

// linearizeOps builds porcupine's history from the writes, the reads and
// etcd's history (for writes without an answer). labels describe each op.
func (h *History) linearizeOps() (ops []porcupine.Operation, labels []string) {
	at := func(t time.Time) int64 { return t.Sub(h.Start).Nanoseconds() }
	// Where etcd's history shows each write's value committed.
	committed := map[string]int64{} // key + value -> revision
	for _, kv := range h.Etcd {
		if kv.Deleted {
			continue
		}
		for svc, stable := range h.Stable {
			if kv.Key == h.overrideKey(svc) {
				committed[kv.Key+"="+canaryOf(kv.Value, stable)] = kv.Rev
			}
		}
	}
	for _, w := range h.Writes {
		key := h.overrideKey(w.Service)
		op := porcupine.Operation{ClientId: clientID(w.Client), Input: regInput{Key: key, Write: true, Value: w.Value()}, Call: at(w.Call)}
		switch {
		case w.Acked():
			op.Output, op.Return = regState{Value: w.Value(), Rev: w.Revision}, at(w.Return)
		case committed[key+"="+w.Value()] != 0:
			op.Output, op.Return = regState{Value: w.Value(), Rev: committed[key+"="+w.Value()]}, math.MaxInt64
		default:
			continue
		}
		ops = append(ops, op)
		labels = append(labels, w.String())
	}
	for _, r := range h.Reads {
		ops = append(ops, porcupine.Operation{ClientId: 100, Input: regInput{Key: r.Key}, Call: at(r.Call),
			Output: regState{Value: r.Value, Rev: r.Rev}, Return: at(r.Return)})
		labels = append(labels, r.String())
	}
	return ops, labels
}

func clientID(name string) int {
	var n int
	for _, c := range name {
		n = n*31 + int(c)
	}
	return 1 + (n&0x7fffffff)%90
}

// checkLinearizable runs porcupine, one register (override key) at a
// time; on a failure it shows where the longest linearization stops and
// what could not be placed after it, and writes porcupine's visualization
// beside the report when dir is set.
func (h *History) checkLinearizable(dir string) Result {
	res := Result{Name: "acknowledged writes linearizable (porcupine)"}
	ops, labels := h.linearizeOps()
	type part struct {
		ops    []porcupine.Operation
		labels []string
	}
	parts := map[string]*part{}
	var keys []string
	writes, reads := 0, 0
	for i, op := range ops {
		in := op.Input.(regInput)
		if in.Write {
			writes++
		} else {
			reads++
		}
		p := parts[in.Key]
		if p == nil {
			p = &part{}
			parts[in.Key] = p
			keys = append(keys, in.Key)
		}
		p.ops, p.labels = append(p.ops, op), append(p.labels, labels[i])
	}
	sort.Strings(keys)
	res.Summary = fmt.Sprintf("%d writes (acknowledged, or found in etcd without an answer), %d reads, %d keys", writes, reads, len(keys))
	res.Held = true
	for _, key := range keys {
		p := parts[key]
		verdict, info := porcupine.CheckOperationsVerbose(registerModel, p.ops, time.Minute)
		switch verdict {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			res.Held = false
			res.Violations = append(res.Violations, Violation{What: key + ": porcupine timed out (1 min): linearizability unknown"})
			continue
		}
		res.Held = false
		v := Violation{What: key + ": the history is not linearizable"}
		for _, lins := range info.PartialLinearizations() {
			var longest []int
			for _, l := range lins {
				if len(l) > len(longest) {
					longest = l
				}
			}
			placed := map[int]bool{}
			for _, i := range longest {
				placed[i] = true
			}
			for _, i := range longest[max(len(longest)-3, 0):] {
				v.Excerpt = append(v.Excerpt, "linearized: "+p.labels[i])
			}
			shown := 0
			for i := range p.ops {
				if !placed[i] && shown < 6 && nextUnplaced(p.ops, placed, i) {
					v.Excerpt = append(v.Excerpt, "cannot be placed next: "+p.labels[i])
					shown++
				}
			}
		}
		if dir != "" {
			path := filepath.Join(dir, "linearizability.html")
			if f, err := os.Create(path); err == nil {
				if err := porcupine.Visualize(registerModel, info, f); err == nil {
					v.Excerpt = append(v.Excerpt, "porcupine's visualization: "+path)
				}
				f.Close()
			}
		}
		res.Violations = append(res.Violations, v)
	}
	return res
}

// nextUnplaced says whether op i could come next after the placed ops: no
// other unplaced op returned before it was called.
func nextUnplaced(ops []porcupine.Operation, placed map[int]bool, i int) bool {
	for j := range ops {
		if !placed[j] && j != i && ops[j].Return < ops[i].Call {
			return false
		}
	}
	return true
}
