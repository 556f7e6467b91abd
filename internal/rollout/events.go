package rollout

import (
	"context"
	"sync"
	"time"

	"github.com/trafficsplit/splitter/split"
)

// EventQueue bounds the transitions waiting to be told to one event hook;
// beyond it they are dropped (and counted), so that a hook that is down or
// hangs never holds anything back.
const EventQueue = 256

// eventKey names one event hook of one service.
type eventKey struct{ service, hook string }

type eventItem struct {
	hook split.Webhook
	p    Payload
}

// events tells event hooks of every transition, each hook from its own
// queue and goroutine: enqueuing never blocks, and a hook that is slow,
// down or hanging delays only its own deliveries.
type events struct {
	client *hookClient
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	queues map[eventKey]chan eventItem
	wg     sync.WaitGroup
	closed bool
}

func newEvents(c *hookClient) *events {
	ctx, cancel := context.WithCancel(context.Background())
	return &events{client: c, ctx: ctx, cancel: cancel, queues: map[eventKey]chan eventItem{}}
}

// publish queues a transition for each of hooks (the service's event
// hooks); a full queue drops it.
func (e *events) publish(service string, hooks []split.Webhook, p Payload) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	for _, h := range hooks {
		k := eventKey{service, h.Name}
		q := e.queues[k]
		if q == nil {
			q = make(chan eventItem, EventQueue)
			e.queues[k] = q
			e.wg.Go(func() { e.deliver(k, q) })
		}
		select {
		case q <- eventItem{hook: h, p: p}:
		default:
			e.client.stats.event(service, h.Name, eventDropped)
			e.client.log.Warn("rollout event hook queue full: transition dropped", "service", service, "hook", h.Name,
				"queue", EventQueue, "to", p.State, "step", p.Step)
		}
	}
}

// deliver sends k's queued transitions in order, each tried 1+Retries
// times with a growing pause between attempts.
func (e *events) deliver(k eventKey, q chan eventItem) {
	for {
		select {
		case <-e.ctx.Done():
			return
		case it := <-q:
			e.send(k, it)
		}
	}
}

func (e *events) send(k eventKey, it eventItem) {
	h := it.hook
	var answer string
	for attempt := 0; attempt <= h.Retries; attempt++ {
		if attempt > 0 {
			select {
			case <-e.ctx.Done():
				return
			case <-time.After(retryBackoff(attempt - 1)):
			}
		}
		var ok bool
		if answer, ok = e.client.call(e.ctx, k.service, h, it.p); ok {
			e.client.stats.event(k.service, k.hook, eventDelivered)
			return
		}
		if e.ctx.Err() != nil {
			return
		}
	}
	e.client.stats.event(k.service, k.hook, eventFailed)
	e.client.log.Warn("rollout event hook failed: transition not delivered", "service", k.service, "hook", h.Name,
		"to", it.p.State, "step", it.p.Step, "attempts", h.Retries+1, "answer", answer)
}

// close stops every delivery (queued transitions are dropped uncounted:
// the process is stopping) and waits for the goroutines.
func (e *events) close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
}
