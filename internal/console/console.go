// Package console is splitter's operator console: one page on the admin
// port (GET /ui/, its assets embedded in the binary), the state it shows
// (GET /v1/console/state) and a server-sent event stream that pushes that
// state about once a second and on every change (GET /v1/console/events).
//
// The state is built from what the process already has: the store's
// snapshot (weights, overrides, configuration source, sha256, generation,
// last reload error), the rollout manager's status, the fleet's replicas
// in etcd mode, the admin package's ring of recent audit events, and a
// sampler of its own that reads the signal source (Envoy's per-cluster
// statistics, or the in-process module's counters) and the decision
// counters of the metrics registry every interval into fixed-size rings.
// Nothing is added to the request path.
//
// The page changes nothing by itself: its controls call the admin API's
// mutation endpoints with the token the operator typed (a bearer header,
// never a cookie). Reads need no token, like every admin read.
package console

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/store"
)

// Defaults of Options.
const (
	DefaultInterval   = 5 * time.Second
	DefaultMaxClients = 16
	DefaultPush       = time.Second
	DefaultHeartbeat  = 15 * time.Second
)

// Rollouts is what the console reads of the rollout manager;
// *rollout.Manager implements it.
type Rollouts interface {
	Status(service string) (rollout.Status, error)
}

// Options configures a Console.
type Options struct {
	Store    *store.Store // required
	Rollouts Rollouts     // nil: no rollout shown
	// Signals is read every Interval for each version's requests and
	// errors; nil: the page says there is no traffic source.
	Signals signals.Source
	// SignalsName names the source for people ("Envoy admin at
	// 127.0.0.1:9901").
	SignalsName string
	// Gatherer is the process's metrics registry: the decision-reason mix
	// is read from its splitter_decisions_total.
	Gatherer prometheus.Gatherer
	// Audit holds the recent audit events shown on the page.
	Audit *admin.AuditRing
	// Fleet lists the replicas in fleet mode (nil otherwise), and
	// FleetStatus is this replica's connection to etcd.
	Fleet       func(ctx context.Context) (any, error)
	FleetStatus func() any
	// TokenRequired says whether mutations need the admin token now.
	TokenRequired func() bool
	// Changes receives a value whenever something the page shows changed
	// (a snapshot swap, an audit event): the state is pushed at once.
	Changes <-chan struct{}

	Interval   time.Duration // sampling interval, one bucket; default DefaultInterval
	MaxClients int           // event streams at once; more answer 503; default DefaultMaxClients
	Push       time.Duration // how often the state is rebuilt and pushed if it changed; default DefaultPush
	Heartbeat  time.Duration // a ping event when nothing else was sent for this long; default DefaultHeartbeat
	// WriteTimeout bounds one write to a stream: a client that does not
	// read for this long is dropped. Default 10s.
	WriteTimeout time.Duration
	Logger       *slog.Logger // nil: discard
	Now          func() time.Time
}

// Console serves the page, the state and the event stream. Build it with
// New, mount Handlers on the admin API, and run it with Run.
type Console struct {
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	sampler *sampler
	hub     *hub
	assets  *assets
}

// New returns a console; nothing runs until Run.
func New(opts Options) *Console {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = DefaultMaxClients
	}
	if opts.Push <= 0 {
		opts.Push = DefaultPush
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	c := &Console{opts: opts, log: opts.Logger, now: opts.Now, hub: newHub(opts.MaxClients), assets: newAssets()}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.sampler = newSampler(opts.Signals, opts.SignalsName, opts.Gatherer, opts.Store, opts.Interval)
	return c
}

// Handlers are the console's routes, for admin.Options.Extra. The event
// stream refuses cross-site requests: a page elsewhere cannot read it (no
// CORS grant), but it could keep the few stream slots busy until a write
// fails.
func (c *Console) Handlers() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /ui":                http.RedirectHandler("/ui/", http.StatusMovedPermanently),
		"GET /ui/":               c.assets,
		"GET /v1/console/state":  http.HandlerFunc(c.serveState),
		"GET /v1/console/events": admin.RefuseCrossSite(http.HandlerFunc(c.serveEvents)),
	}
}

// Run samples and pushes until ctx ends, then closes every event stream
// and returns nil. Call it once.
func (c *Console) Run(ctx context.Context) error {
	defer c.hub.close()
	var wg sync.WaitGroup
	wg.Go(func() { c.sampler.run(ctx, c.now) })
	wg.Go(func() { c.broadcast(ctx) })
	wg.Wait()
	return nil
}

// Drain closes every event stream and refuses new ones (503), so that a
// draining process is not held up by open pages; the page and the state
// are still served.
func (c *Console) Drain() { c.hub.close() }

// Sample takes one sample now (tests; Run samples by itself).
func (c *Console) Sample(ctx context.Context) { c.sampler.sample(ctx, c.now()) }
