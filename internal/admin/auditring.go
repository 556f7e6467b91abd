package admin

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// Bounds on one remembered audit event, so that the ring's memory is fixed
// whatever a log line carries.
const (
	maxAuditAttrs    = 24
	maxAuditValueLen = 512
)

// DefaultAuditEvents is how many audit events an AuditRing keeps when
// asked for none.
const DefaultAuditEvents = 50

// RefusalEvents is how many refusals at the door (results unauthorized
// and forbidden) an AuditRing keeps, apart from the other events: anyone
// who reaches the admin port can cause one, so they must not push the
// changes out.
const RefusalEvents = 10

// AuditEvent is one audit log line, as the operator console shows it.
type AuditEvent struct {
	Time    time.Time   `json:"time"`
	Level   string      `json:"level"`
	Message string      `json:"message"`
	Attrs   []AuditAttr `json:"attrs"`
}

// AuditAttr is one key and value of an audit line, in the line's order.
type AuditAttr struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// AuditRing keeps the last few audit events in memory (fixed-size rings):
// every admin mutation attempt and every rollout transition, whatever
// logger wrote them, when the audit logger's handler is wrapped with Tee.
// Refusals at the door (an audit line whose result is unauthorized or
// forbidden) go to a ring of their own and a count, so that anonymous
// attempts cannot crowd the changes out. It is safe for concurrent use.
type AuditRing struct {
	onAppend func()

	mu       sync.Mutex
	changes  eventRing
	refusals eventRing
	refused  uint64 // refusals since the ring was made
}

// eventRing is one fixed-size ring of events.
type eventRing struct {
	events []AuditEvent // storage, len == capacity
	next   int          // where the next event goes
	n      int          // events held, at most len(events)
}

func (e *eventRing) add(ev AuditEvent) {
	e.events[e.next] = ev
	e.next = (e.next + 1) % len(e.events)
	e.n = min(e.n+1, len(e.events))
}

func (e *eventRing) recent() []AuditEvent {
	out := make([]AuditEvent, 0, e.n)
	for i := 1; i <= e.n; i++ {
		out = append(out, e.events[(e.next-i+len(e.events))%len(e.events)])
	}
	return out
}

// NewAuditRing keeps the last size events (DefaultAuditEvents when size <=
// 0) and the last RefusalEvents refusals; onAppend, if not nil, is called
// after every event but a refusal is added (it must not block: the console
// uses it to push the change; a flood of refusals must not drive pushes,
// the console's periodic push shows their count).
func NewAuditRing(size int, onAppend func()) *AuditRing {
	if size <= 0 {
		size = DefaultAuditEvents
	}
	return &AuditRing{
		changes:  eventRing{events: make([]AuditEvent, size)},
		refusals: eventRing{events: make([]AuditEvent, RefusalEvents)},
		onAppend: onAppend,
	}
}

// Add remembers ev, in the refusals when its result is one (see Refusal),
// forgetting the oldest event of its ring when that ring is full.
func (r *AuditRing) Add(ev AuditEvent) {
	refusal := false
	for _, a := range ev.Attrs {
		if a.Key == "result" {
			refusal = Refusal(a.Value)
			break
		}
	}
	r.mu.Lock()
	if refusal {
		r.refusals.add(ev)
		r.refused++
	} else {
		r.changes.add(ev)
	}
	r.mu.Unlock()
	if r.onAppend != nil && !refusal {
		r.onAppend()
	}
}

// Recent returns the events held but refusals, newest first.
func (r *AuditRing) Recent() []AuditEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changes.recent()
}

// Refusals returns how many refusals were added since the ring was made
// and the last RefusalEvents of them, newest first.
func (r *AuditRing) Refusals() (count uint64, recent []AuditEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused, r.refusals.recent()
}

// Tee returns a handler that passes every record to next and remembers it
// in the ring.
func (r *AuditRing) Tee(next slog.Handler) slog.Handler {
	return &teeHandler{ring: r, next: next}
}

type teeHandler struct {
	ring  *AuditRing
	next  slog.Handler
	attrs []AuditAttr // from WithAttrs, group prefixes applied
	group string      // "a.b." prefix from WithGroup
}

// Enabled: the ring keeps every audit line at Info or above, even when
// the log's level drops it (log_level warn still shows changes on the
// console).
func (h *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *teeHandler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelInfo {
		h.remember(rec)
	}
	if !h.next.Enabled(ctx, rec.Level) {
		return nil
	}
	return h.next.Handle(ctx, rec)
}

func (h *teeHandler) remember(rec slog.Record) {
	ev := AuditEvent{Time: rec.Time, Level: rec.Level.String(), Message: rec.Message, Attrs: slices.Clone(h.attrs)}
	rec.Attrs(func(a slog.Attr) bool {
		ev.Attrs = appendAttr(ev.Attrs, h.group, a)
		return len(ev.Attrs) < maxAuditAttrs
	})
	if len(ev.Attrs) > maxAuditAttrs {
		ev.Attrs = ev.Attrs[:maxAuditAttrs]
	}
	h.ring.Add(ev)
}

func (h *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := *h
	out.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		out.attrs = appendAttr(out.attrs, h.group, a)
	}
	if len(out.attrs) > maxAuditAttrs {
		out.attrs = out.attrs[:maxAuditAttrs]
	}
	out.next = h.next.WithAttrs(as)
	return &out
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	out := *h
	out.group = h.group + name + "."
	out.next = h.next.WithGroup(name)
	return &out
}

// appendAttr flattens a (groups become "group.key") into dst, dropping the
// "log" marker every audit line carries and empty attributes.
func appendAttr(dst []AuditAttr, prefix string, a slog.Attr) []AuditAttr {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) || (prefix == "" && a.Key == "log") {
		return dst
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			dst = appendAttr(dst, p, g)
		}
		return dst
	}
	v := a.Value.String()
	if len(v) > maxAuditValueLen {
		n := maxAuditValueLen
		for n > 0 && !utf8.RuneStart(v[n]) {
			n--
		}
		v = v[:n] + "…"
	}
	return append(dst, AuditAttr{Key: prefix + a.Key, Value: v})
}
