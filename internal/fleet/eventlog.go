package fleet

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Event is one entry of a replica's own log of what it applied and of its
// connection to etcd, in the order it happened (GET /v1/fleet/log). It is
// what an operator reads to see when a replica took a change and when it
// stopped following, and what the fault tests check histories against:
// the replica's own account, not a sample of polls.
type Event struct {
	Seq  uint64    `json:"seq"`
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // applied, connected, disconnected, watch
	// applied: the revision now in force, the document's sha256 (the last
	// good one when etcd's is rejected), the state hash and the overrides
	// in force (service -> weights), and why etcd's document is rejected.
	Revision    int64             `json:"revision,omitempty"`
	SHA256      string            `json:"sha256,omitempty"`
	StateSHA256 string            `json:"state_sha256,omitempty"`
	Overrides   map[string]string `json:"overrides,omitempty"`
	Rejected    string            `json:"rejected,omitempty"`
	// watch: a watch started (from Revision) on Member, or was given up
	// for Reason; connected/disconnected: Reason is the cause.
	Member string `json:"member,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// EventLog is GET /v1/fleet/log.
type EventLog struct {
	NodeID string `json:"node_id"`
	// FirstSeq is the oldest entry kept; entries before it were dropped
	// (the log keeps the last eventLogSize). NextSeq is the next entry's.
	FirstSeq uint64  `json:"first_seq"`
	NextSeq  uint64  `json:"next_seq"`
	Events   []Event `json:"events"`
}

// eventLogSize is how many entries a replica keeps.
const eventLogSize = 4096

// maxLogWait bounds a long poll of the log.
const maxLogWait = 30 * time.Second

type eventLog struct {
	mu      sync.Mutex
	ring    []Event
	next    uint64 // seq of the next entry; the first is 1
	changed chan struct{}
}

func newEventLog() *eventLog {
	return &eventLog{next: 1, changed: make(chan struct{})}
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Seq = l.next
	l.next++
	if len(l.ring) < eventLogSize {
		l.ring = append(l.ring, e)
	} else {
		l.ring[(e.Seq-1)%eventLogSize] = e
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// after returns the entries after seq, in order.
func (l *eventLog) after(seq uint64) (events []Event, first, next uint64, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	first = 1
	if l.next > eventLogSize {
		first = l.next - eventLogSize
	}
	for s := max(seq+1, first); s < l.next; s++ {
		events = append(events, l.ring[(s-1)%eventLogSize])
	}
	return events, first, l.next, l.changed
}

// Log returns the entries after seq, waiting up to wait for one when
// there is none yet.
func (s *Source) Log(ctx context.Context, seq uint64, wait time.Duration) EventLog {
	t := time.NewTimer(min(wait, maxLogWait))
	defer t.Stop()
	for {
		events, first, next, changed := s.events.after(seq)
		if len(events) > 0 || wait <= 0 {
			return EventLog{NodeID: s.opts.NodeID, FirstSeq: first, NextSeq: next, Events: orEmpty(events)}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return EventLog{NodeID: s.opts.NodeID, FirstSeq: first, NextSeq: next, Events: []Event{}}
		case <-t.C:
			wait = 0
		}
	}
}

func orEmpty(e []Event) []Event {
	if e == nil {
		return []Event{}
	}
	return e
}

// LogHandler serves GET /v1/fleet/log?after=SEQ&wait=DURATION: the
// entries after SEQ (default 0: all kept), waiting up to DURATION (at most
// 30s, default 0) for one when there is none yet, so that a reader
// follows the log with one request per batch of entries.
func (s *Source) LogHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var seq uint64
		var wait time.Duration
		var err error
		if v := q.Get("after"); v != "" {
			if seq, err = strconv.ParseUint(v, 10, 64); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "after: not a sequence number: " + v, "field": "after"})
				return
			}
		}
		if v := q.Get("wait"); v != "" {
			if wait, err = time.ParseDuration(v); err != nil || wait < 0 || wait > maxLogWait {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "wait: a duration from 0s to 30s, not " + v, "field": "wait"})
				return
			}
		}
		writeJSON(w, http.StatusOK, s.Log(r.Context(), seq, wait))
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		code, data = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}
