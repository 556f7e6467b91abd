package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// coalesce is how long a change waits for the ones that come with it (a
// rollout's transition is a swap and an audit line) before the state is
// pushed.
const coalesce = 50 * time.Millisecond

// retryMillis is the reconnection delay the stream asks EventSource for.
const retryMillis = 2000

// Errors of hub.join.
var (
	errTooMany  = errors.New("too many console event streams are open; close another page or try again later")
	errDraining = errors.New("the process is shutting down; event streams are closed")
)

// hub is the set of open event streams. Each client has a queue of one
// frame that only ever holds the latest state: a slow client skips states
// instead of building a backlog.
type hub struct {
	max int

	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool
	done    chan struct{} // closed by close
}

type client struct {
	frames chan []byte // capacity 1: the latest frame not yet written
}

func newHub(max int) *hub {
	return &hub{max: max, clients: map[*client]struct{}{}, done: make(chan struct{})}
}

func (h *hub) join() (*client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errDraining
	}
	if len(h.clients) >= h.max {
		return nil, errTooMany
	}
	c := &client{frames: make(chan []byte, 1)}
	h.clients[c] = struct{}{}
	return c, nil
}

func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// send queues frame for every client, replacing a frame a client has not
// taken yet. Only the broadcaster sends, so a replace always succeeds.
func (h *hub) send(frame []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.frames <- frame:
		default:
			select {
			case <-c.frames:
			default:
			}
			select {
			case c.frames <- frame:
			default:
			}
		}
	}
}

// close ends every stream and refuses new ones; it may be called more
// than once.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
}

// broadcast rebuilds the state every Push, and soon after every change,
// while at least one stream is open, and sends it when it differs from
// the last one sent.
func (c *Console) broadcast(ctx context.Context) {
	t := time.NewTicker(c.opts.Push)
	defer t.Stop()
	var last []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.opts.Changes:
			select {
			case <-ctx.Done():
				return
			case <-time.After(coalesce):
			}
		}
		if c.hub.count() == 0 {
			last = nil
			continue
		}
		b, err := json.Marshal(c.state(ctx))
		if err != nil {
			c.log.Error("console: encoding the state", "error", err)
			continue
		}
		if bytes.Equal(b, last) {
			continue
		}
		last = b
		c.hub.send(frame("state", b))
	}
}

// frame is one server-sent event; data holds no newline (compact JSON).
func frame(event string, data []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(data) + len(event) + 16)
	b.WriteString("event: ")
	b.WriteString(event)
	b.WriteString("\ndata: ")
	b.Write(data)
	b.WriteString("\n\n")
	return b.Bytes()
}

// serveEvents is GET /v1/console/events: the state at once, then every
// change, a ping when nothing was sent for Heartbeat, until the client
// goes, the process drains or the console stops.
func (c *Console) serveEvents(w http.ResponseWriter, r *http.Request) {
	cl, err := c.hub.join()
	if err != nil {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	defer c.hub.leave(cl)
	rc := http.NewResponseController(w)
	// The stream outlives the admin server's read timeout, which would
	// otherwise end it; writes get a deadline each instead.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	first, err := json.Marshal(c.state(r.Context()))
	if err != nil {
		c.log.Error("console: encoding the state", "error", err)
		return
	}
	if !c.write(w, rc, append([]byte("retry: "+strconv.Itoa(retryMillis)+"\n\n"), frame("state", first)...)) {
		return
	}
	hb := time.NewTimer(c.opts.Heartbeat)
	defer hb.Stop()
	for {
		var out []byte
		select {
		case <-r.Context().Done():
			return
		case <-c.hub.done:
			c.write(w, rc, frame("bye", []byte(`{"reason":"draining"}`)))
			return
		case out = <-cl.frames:
		case <-hb.C:
			out = frame("ping", []byte(`{}`))
		}
		if !c.write(w, rc, out) {
			return
		}
		hb.Reset(c.opts.Heartbeat)
	}
}

// write sends b within WriteTimeout and flushes it; false means the
// client is gone or stalled.
func (c *Console) write(w http.ResponseWriter, rc *http.ResponseController, b []byte) bool {
	_ = rc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	if _, err := w.Write(b); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// serveState is GET /v1/console/state.
func (c *Console) serveState(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, c.state(r.Context()))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]string{"error": "encoding the answer: " + err.Error()})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
