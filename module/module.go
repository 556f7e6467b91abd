// Package module is the splitter as an Envoy dynamic module, without the
// cgo: the decision glue between Envoy's request-headers hook and the split
// engine, and the one control plane a process runs however many filter
// configurations use the module. Package module/abi holds every line of
// cgo (the hooks, written in C, and the few exported Go functions they
// call) and implements Host; this package is tested with -race without it.
//
// Per request, C reads the headers the table in force needs (Reads), makes
// one call into Go, which decides and answers with an encoded Plan (the
// same headers ext_proc writes, from adapter.Headers.PlanFor) and the
// counter pair of the version; C writes the headers, clears the route
// cache, and counts the response per pair in its own memory.
package module

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/control"
	"github.com/trafficsplit/splitter/internal/fsutil"
	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/split"
)

// API is the api label this adapter reports to its Recorder.
const API = adapter.APIModule

// Host is what the module needs from the C side of the library: package
// module/abi implements it over Envoy's callbacks and C memory, tests with
// a fake.
type Host interface {
	// SetReads makes names the request headers read before each decision
	// from now on, under id (ids only grow). Requests that read an older
	// set are asked to read again (StatusRetry).
	SetReads(id uint32, names []string)
	// SetFallback is the plan C applies when Go could not answer at all.
	SetFallback(plan []byte)
	// Concurrency is Envoy's worker count.
	Concurrency() int
	// Counts returns the responses counted so far for pair, by class
	// (ClassOf).
	Counts(pair int32) [NumClasses]uint64
	// Log writes one line into Envoy's log.
	Log(level slog.Level, msg string)
	// ValidationMode reports whether Envoy only validates its
	// configuration (--mode validate): then nothing is started. Called on
	// Envoy's main thread (the config hook) only.
	ValidationMode() bool
}

// LatencyHost is a Host that times each response per pair (module/abi:
// in C, from the request headers to the end of the stream, in the buckets
// of signals.Histogram), for the rollout guard's latency bounds.
type LatencyHost interface {
	// SetLatencyBounds gives the buckets' bounds in nanoseconds, before
	// the first request.
	SetLatencyBounds(ns []uint64)
	// Latency returns the responses of pair timed so far, by bucket.
	Latency(pair int32) [signals.LatencyBuckets]uint64
}

// Process is the module's state in one Envoy process: the control plane
// (configuration, reload or fleet, overrides, rollouts, metrics, admin
// API), started by the first filter configuration and shared by every
// later one with the same settings.
type Process struct {
	host Host

	mu  sync.Mutex // guards everything below it and config changes
	cfg *FilterConfig
	// given is what the first filter_config said by itself (GivenSettings):
	// every later one is compared with it, not with settings that include
	// the configuration file as it is now.
	given   *FilterConfig
	configs map[uint64]bool
	nextID  uint64
	// validating: Envoy runs --mode validate; nothing was started.
	validating bool
	// plane is the control plane: running (roleLeader), or stopped after
	// it was handed over to the next Envoy epoch (roleFollower), when its
	// store follows the new epoch's (handover.go).
	plane      *control.Plane
	role       role
	stop       context.CancelFunc
	done       chan struct{}
	handoverLn net.Listener       // the handover socket, while leader
	followStop context.CancelFunc // the follower, while following
	log        *slog.Logger

	// Per request: read without locks.
	run       atomic.Pointer[running]
	cur       atomic.Pointer[tableState]
	installMu sync.Mutex
	readsID   uint32 // last published, under installMu
	reads     []string
	pairs     pairs
	scratch   [MaxThreads]scratch
	pool      sync.Pool
	results   [MaxThreads + 1]resultCounts
	// faultHeader makes a request carrying it panic inside the decision
	// (tests and the splitter_fault build only; "" otherwise).
	faultHeader string
}

// role is what a process's module does with the control plane.
type role int

const (
	roleNone     role = iota // not started (validation mode, or before the first configuration)
	roleLeader               // runs it: admin API, reload or fleet, rollouts
	roleFollower             // handed it to the next Envoy epoch: follows that one's state
)

// MaxThreads is how many Envoy worker threads get their own scratch space
// and counters; more share a pool.
const MaxThreads = 256

// scratch is one worker thread's request space. A hook never re-enters on
// its thread, so a slot needs no lock.
type scratch struct {
	req split.Request
	dec split.Decision
	// cookie holds the Set-Cookie value of a request given a fresh key
	// (Result.Cookie), reused from one such request to the next.
	cookie []byte
	_      [64]byte // keep two threads' slots off one cache line
}

// NewProcess returns the module's process state over host. Nothing runs
// until the first NewConfig.
func NewProcess(host Host) *Process {
	p := &Process{host: host, configs: map[uint64]bool{}, faultHeader: faultHeader}
	for i := range p.scratch {
		p.scratch[i].req.NewKey = adapter.RandomKey
	}
	p.pool.New = func() any { return &scratch{req: split.Request{NewKey: adapter.RandomKey}} }
	return p
}

// NewConfig is Envoy's filter config hook: it parses filter_config and
// returns a handle for the filter configuration. The first one starts the
// control plane with its settings (a missing or invalid routing
// configuration is tolerated: every request goes to the stable route and
// the admin API says why). A later one with the same settings shares it;
// one with other settings is an error (Envoy rejects that configuration):
// the settings are the process's, fixed by the first filter_config until
// Envoy restarts. "The same" is judged on what Envoy gave (GivenSettings),
// never on the configuration file's scalars as they are now: a file edit
// must not make Envoy reject an unchanged filter configuration.
func (p *Process) NewConfig(name string, raw []byte) (handle uint64, err error) {
	given, err := GivenSettings(raw)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.given == nil {
		fc, err := ParseFilterConfig(raw)
		if err != nil {
			return 0, err
		}
		if p.host.ValidationMode() {
			// --mode validate: the filter_config is checked (the same
			// rejections as when serving), nothing is started: no admin
			// port, no file watch, no etcd, no goroutine.
			p.validating = true
			p.host.Log(slog.LevelInfo, "splitter module: validation mode: filter_config checked, nothing started")
		} else if err := p.start(fc); err != nil {
			return 0, err
		}
		p.cfg, p.given = &fc, &given
	} else if !reflect.DeepEqual(*p.given, given) {
		return 0, fmt.Errorf("filter_config of %q differs from the one the module started with: "+
			"the settings belong to the Envoy process (one control plane, one admin port); "+
			"use the same filter_config everywhere and restart Envoy to change it", name)
	}
	p.nextID++
	p.configs[p.nextID] = true
	if p.log != nil {
		p.log.Info("filter configuration added", "filter_name", name, "handle", p.nextID, "configs", len(p.configs))
	}
	return p.nextID, nil
}

// DestroyConfig is Envoy's filter config destroy hook. The control plane
// keeps running when the last configuration goes (a listener update may
// bring the next one), and so does the admin API.
func (p *Process) DestroyConfig(handle uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.configs, handle)
	if p.log != nil {
		p.log.Info("filter configuration removed", "handle", handle, "configs", len(p.configs))
	}
}

// start builds and runs the control plane; p.mu is held. The admin port
// is taken over from the previous Envoy epoch's module when that one holds
// it (a hot restart, handover.go), with its runtime state.
func (p *Process) start(fc FilterConfig) error {
	s := fc.Settings
	log := slog.New(newLogHandler(p.host, s)).With("component", "splitter-module")
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		// A C thread that keeps calling into Go holds its P; with one P the
		// runtime's own threads and every goroutine compete with the
		// workers for it (docs/module.md, threads).
		runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), 2, p.host.Concurrency()+1))
	}
	lis, handover, err := takeAdmin(s.AdminAddr, log)
	if err != nil {
		return err
	}
	var state []byte
	if handover != nil {
		state = handover.state
	}
	p.cfg, p.log = &fc, log
	if err := p.runPlaneLocked(fc, lis, state); err != nil {
		handover.abort()
		return err
	}
	handover.ack()
	p.role = roleLeader
	p.listenHandoversLocked()
	if s.GCPercent != 0 {
		debug.SetGCPercent(s.GCPercent)
		p.plane.Metrics().GCPercent(s.GCPercent)
	}
	log.Info("module started", "admin_addr", p.plane.AdminAddr(), "gomaxprocs", runtime.GOMAXPROCS(0),
		"envoy_workers", p.host.Concurrency(), "fleet", s.FleetMode(), "handed_over", handover != nil)
	if fc.ReadyFile != "" {
		b, _ := json.Marshal(map[string]string{"admin_addr": p.plane.AdminAddr()})
		if err := fsutil.WriteAtomic(fc.ReadyFile, append(b, '\n'), 0o644, nil); err != nil {
			log.Error("ready_file not written", "ready_file", fc.ReadyFile, "error", err)
		}
	}
	return nil
}

// runPlaneLocked builds a control plane with fc's settings on lis (nil:
// bound by control.New) and state (nil: the state file's), publishes it to
// the request path and runs it; p.mu is held.
func (p *Process) runPlaneLocked(fc FilterConfig, lis net.Listener, state []byte) error {
	log := p.log
	opts := control.Options{Logger: log, TolerateBadConfig: true, Signals: &p.pairs,
		AdminListener: lis, InitialState: state}
	if fc.Settings.EnvoyAdmin != "" {
		// Envoy's cluster statistics, which count mirrored requests too
		// (filterconfig.go, envoy_admin).
		opts.Signals = nil
	}
	plane, err := control.New(fc.Settings, opts)
	if err != nil {
		return err
	}
	p.plane = plane
	var latency func(pair int32) [signals.LatencyBuckets]uint64
	if lh, ok := p.host.(LatencyHost); ok {
		lh.SetLatencyBounds(signals.LatencyBoundsNs())
		latency = lh.Latency
	}
	p.pairs.setSources(p.host.Counts, latency)
	r := &running{plane: plane, rec: plane.Recorder(), headers: plane.Headers(), log: log}
	var plan adapter.Plan
	r.headers.PlanFor(nil, &plan)
	r.unrouted = EncodePlan(&plan)
	p.host.SetFallback(r.unrouted)
	r.answers = adapter.NewResponses(plane, r.headers, func(pl *adapter.Plan) *[]byte {
		b := EncodePlan(pl)
		if len(b) > MaxPlanBytes {
			log.Error("answer too large for the module's buffer: sending the request to the stable route",
				"bytes", len(b), "max", MaxPlanBytes)
			b = r.unrouted
		}
		return &b
	})
	plane.Metrics().Register(
		metrics.NewCacheCollector(API, r.answers.Stats),
		metrics.NewResponsesCollector(API, p.pairs.responses),
	)
	p.run.Store(r)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.stop, p.done = stop, done
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Go(func() { p.flushResults(ctx, plane) })
		if err := plane.Run(ctx); err != nil {
			log.Error("control plane stopped", "error", err)
		}
		wg.Wait()
	}()
	return nil
}

// stopPlaneLocked stops the running control plane and waits for it: the
// admin API has finished its requests and closed its port, nothing writes
// the store any more; decisions go on from it. p.mu is held.
func (p *Process) stopPlaneLocked() {
	if p.stop == nil {
		return
	}
	p.plane.Drain()
	p.stop()
	<-p.done
	p.stop = nil
	if p.handoverLn != nil {
		p.handoverLn.Close()
		p.handoverLn = nil
	}
}

// restartLocked runs a new control plane (the same settings) after the
// current one was stopped, on lis (nil: bound anew) and state (nil: the
// state file's), and leads again. p.mu is held.
func (p *Process) restartLocked(lis net.Listener, state []byte) error {
	if p.followStop != nil {
		p.followStop()
		p.followStop = nil
	}
	if err := p.runPlaneLocked(*p.cfg, lis, state); err != nil {
		return err
	}
	p.role = roleLeader
	p.listenHandoversLocked()
	return nil
}

// listenHandoversLocked opens the handover socket for the next Envoy
// epoch (and its followers), when admin_addr names a fixed port; p.mu is
// held. Without it a hot restart cannot take the admin port over: said in
// the log, not fatal.
func (p *Process) listenHandoversLocked() {
	addr := p.cfg.Settings.AdminAddr
	if !fixedPort(addr) {
		return
	}
	// The previous epoch closed it before it answered; the kernel may lag.
	deadline := time.Now().Add(adminBindTimeout)
	for {
		ln, err := listenHandover(addr)
		if err == nil {
			p.handoverLn = ln
			go p.serveHandovers(ln, addr, p.log)
			return
		}
		if errors.Is(err, errHandoverUnsupported) || time.Now().After(deadline) {
			p.log.Warn("hot restart handover unavailable: a new Envoy epoch will not be able to take the admin port over",
				"admin_addr", addr, "error", err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Plane returns the control plane, nil before the first NewConfig.
func (p *Process) Plane() *control.Plane {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.plane
}

// Close stops the control plane (or the follower) and waits for it
// (tests; inside Envoy it runs until the process exits).
func (p *Process) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.followStop != nil {
		p.followStop()
		p.followStop = nil
		return nil
	}
	if p.stop == nil {
		return errors.New("module: not started")
	}
	p.stop()
	<-p.done
	p.stop = nil
	if p.handoverLn != nil {
		p.handoverLn.Close()
		p.handoverLn = nil
	}
	return nil
}

// running is what a request needs of the started module; it never
// changes once published.
type running struct {
	plane    *control.Plane
	rec      adapter.Recorder
	headers  adapter.Headers
	log      *slog.Logger
	unrouted []byte
	answers  *adapter.Responses[[]byte]
}

// tableState is what the module keeps per table in force: the headers its
// decisions read (under an id C hands back) and the counter pair of each
// of its versions.
type tableState struct {
	table   *split.Table
	readsID uint32
	pairs   [][]int32 // [service][version]
}

// flushInterval is how often the request results counted per thread reach
// the metrics.
const flushInterval = time.Second

func (p *Process) flushResults(ctx context.Context, plane *control.Plane) {
	var last [numResults]uint64
	flush := func() {
		var now [numResults]uint64
		for i := range p.results {
			for r := range now {
				now[r] += p.results[i].n[r].Load()
			}
		}
		for r := range now {
			plane.Metrics().StreamsEnded(API, resultNames[r], now[r]-last[r])
		}
		last = now
	}
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			flush()
			return
		case <-t.C:
			flush()
		}
	}
}
