// Package control is everything one splitter process runs besides Envoy's
// wire format: the routing configuration and where it comes from (the
// file, watched and reloaded, or etcd in fleet mode: package fleet),
// runtime overrides and the state file, metrics, and the admin API. The sidecar (package serve) puts the gRPC
// adapters in front of a Plane; the in-process module puts Envoy's filter
// hooks in front of one. Both read decisions from Plane.Table and report
// to Plane.Recorder.
package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/console"
	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/internal/reload"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/settings"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// BuiltinSource is the snapshot source reported when no file is given.
const BuiltinSource = "built-in default"

// adminShutdownTimeout bounds the admin server's own shutdown: its
// requests are short.
const adminShutdownTimeout = 2 * time.Second

// Options tune a Plane beyond what Settings say.
type Options struct {
	// Logger receives every log line; nil discards.
	Logger *slog.Logger
	// TolerateBadConfig starts without a configuration when the initial one
	// is missing or invalid, instead of failing: Table stays nil (the
	// adapters then send everything to the stable route), the error is
	// recorded for the admin API, and a later reload can fix it. The
	// in-process module wants this: it must never take Envoy down.
	TolerateBadConfig bool
	// Signals is where rollouts read each version's requests and errors;
	// nil: Envoy's admin statistics at the envoy_admin setting (none when
	// it is ""). The in-process module passes the counters it keeps from
	// the responses it sees.
	Signals signals.Source
	// AdminListener, when set, is the admin API's listener, already bound
	// to the admin_addr setting by the caller (the module binds it itself
	// to take it over from the previous Envoy epoch); nil: New binds it.
	// It is closed by Run, or by New on error.
	AdminListener net.Listener
	// InitialState, when set, replaces what the state file holds at start:
	// a state document another process exported (store.ExportState), as
	// the module's hot restart hands it over. Unused in fleet mode, where
	// the state is etcd's.
	InitialState []byte
}

// Plane is one process's control state. Build it with New, serve it with
// Run.
type Plane struct {
	settings settings.Settings
	headers  adapter.Headers
	log      *slog.Logger

	store    *store.Store
	metrics  *metrics.Metrics
	registry *prometheus.Registry
	reloader *reload.Reloader
	fleet    *fleet.Source // fleet mode only; then reloader is nil
	rollouts *rollout.Manager
	console  *console.Console
	// fleetRollouts elects the rollout leader and keeps the rollout states
	// in etcd (fleet mode only).
	fleetRollouts *fleet.Rollouts
	admin         *http.Server
	adminLis      net.Listener
	draining      atomic.Bool
	// warnings are what AddWarning registered.
	wmu      sync.Mutex
	warnings []func() string
}

// AddWarning registers w, asked at every read of the admin views: a
// non-empty answer is shown in their config section's warnings (what
// works, but not as configured, such as an Envoy whose bootstrap predates
// a feature this splitter uses: docs/upgrading.md).
func (p *Plane) AddWarning(w func() string) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.warnings = append(p.warnings, w)
}

// Warnings are the registered warnings that apply now.
func (p *Plane) Warnings() []string {
	p.wmu.Lock()
	ws := slices.Clone(p.warnings)
	p.wmu.Unlock()
	var out []string
	for _, w := range ws {
		if msg := w(); msg != "" {
			out = append(out, msg)
		}
	}
	return out
}

// New loads the initial configuration (an error names the file, unless
// TolerateBadConfig), builds the store, metrics and reloader, and binds
// the admin listener (refusing a non-loopback address without a token).
// Nothing runs until Run.
func New(s settings.Settings, opts Options) (p *Plane, err error) {
	if opts.AdminListener != nil {
		defer func() {
			if err != nil {
				opts.AdminListener.Close()
			}
		}()
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	headers := s.Headers()
	p = &Plane{settings: s, headers: headers, log: logger, registry: prometheus.NewRegistry()}
	p.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p.metrics = metrics.New(p.registry)
	// changed tells the console that something it shows changed (a
	// snapshot swap, an audit line), so it pushes the state at once.
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}

	initial := opts.InitialState
	if s.FleetMode() {
		initial = nil
	}
	st, err := store.New(store.Options{
		Logger: logger, StateFile: s.StateFile,
		OnSwap:       func(snap *store.Snapshot) { p.metrics.ObserveSnapshot(snap); poke() },
		Check:        headers.CheckConfig,
		InitialState: initial,
	})
	if err != nil {
		return nil, fmt.Errorf("state_file: %w", err)
	}
	p.store = st

	var fileSettings map[string]string
	if s.FleetMode() {
		err = p.startFleet(opts)
	} else {
		fileSettings, err = p.loadInitial()
	}
	if err != nil {
		// Without a source (fleet settings unusable) there is nothing to
		// recover from, tolerated or not.
		if !opts.TolerateBadConfig || (s.FleetMode() && p.fleet == nil) {
			return nil, err
		}
		st.RecordReloadError(err)
		p.metrics.ReloadResult(reload.ResultError)
		logger.Error("no valid configuration: every request goes to the stable route until a reload succeeds", "error", err)
	}

	token, err := s.TokenSource(logger)
	if err != nil {
		return nil, err
	}
	if err := admin.CheckBindAddress(s.AdminAddr, token()); err != nil {
		return nil, err
	}

	// Every change of weights, the admin API's and the rollouts', goes
	// through one Mutator: the store, or in fleet mode etcd.
	var mutator admin.Mutator = st
	if p.fleet != nil {
		mutator = p.fleet
	}
	// The audit lines (admin mutations, rollout transitions) also go to a
	// ring of the last few, which the console shows.
	auditRing := admin.NewAuditRing(admin.DefaultAuditEvents, poke)
	audit := slog.New(auditRing.Tee(logger.Handler())).With("log", "audit")
	src, srcName := signalSource(s, opts)
	if ea, ok := src.(*signals.EnvoyAdmin); ok {
		// An Envoy on an older bootstrap: its histograms lag (said once,
		// and in the views while it lasts).
		ea.Logger = logger.With("component", "signals")
		p.AddWarning(ea.FlushWarning)
	}
	noShadow := ""
	if opts.Signals != nil {
		noShadow = "needs Envoy's cluster statistics: the responses counted in process never include the mirrored requests' (set envoy_admin)"
	}
	if p.rollouts, p.fleetRollouts, err = newRollouts(s, src, noShadow, st, mutator, p.fleet, p.registry, logger, audit); err != nil {
		p.closeFleet()
		return nil, err
	}
	p.metrics.Register(p.rollouts.Collector())
	p.metrics.Register(p.rollouts.HookCollector())
	adminOpts := admin.Options{
		LoopbackOnly: admin.LoopbackAddr(s.AdminAddr),
		Store:        st,
		Mutator:      mutator,
		Rollouts:     p.rollouts,
		Token:        token,
		Metrics:      promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{Registry: p.registry}),
		Ready:        func() bool { return !p.draining.Load() && st.Load() != nil },
		Logger:       logger,
		Audit:        audit,
		Recorder:     p.metrics,
		Pprof:        s.Pprof,
		Warnings:     p.Warnings,
	}
	consoleOpts := console.Options{
		Store: st, Rollouts: p.rollouts, Signals: src, SignalsName: srcName, Gatherer: p.registry,
		Audit: auditRing, TokenRequired: func() bool { return token() != "" }, Changes: changed,
		Interval: s.ConsoleInterval, Logger: logger.With("component", "console"),
	}
	if p.fleet != nil {
		adminOpts.Mirrors = p.fleet
		adminOpts.Reload = p.fleet.Reload
		adminOpts.Fleet = func(ctx context.Context) (any, error) { return p.fleet.Fleet(ctx) }
		adminOpts.FleetStatus = func() any { return p.fleet.Status() }
		consoleOpts.Fleet, consoleOpts.FleetStatus = adminOpts.Fleet, adminOpts.FleetStatus
	} else {
		p.reloader = reload.New(reload.Options{
			Path:         s.ConfigPath,
			Store:        st,
			Logger:       logger,
			Metrics:      p.metrics,
			Debounce:     s.ReloadDebounce,
			PollInterval: s.ReloadPollInterval,
			FileSettings: fileSettings,
		})
		adminOpts.Reload = p.reloader.Reload
	}
	p.console = console.New(consoleOpts)
	adminOpts.Extra = p.console.Handlers()
	if p.fleet != nil {
		// The replica's own log of what it applied and of its connection.
		adminOpts.Extra["GET /v1/fleet/log"] = p.fleet.LogHandler()
	}
	p.admin = admin.NewServer(s.AdminAddr, admin.New(adminOpts))
	lis := opts.AdminListener
	if lis == nil {
		if lis, err = net.Listen("tcp", s.AdminAddr); err != nil {
			p.closeFleet()
			return nil, fmt.Errorf("admin_addr: %w", err)
		}
	}
	p.adminLis = lis
	return p, nil
}

// envoyAdminTimeout bounds one read of Envoy's statistics.
const envoyAdminTimeout = time.Second

// signalSource is where each version's requests and errors are read: the
// options' source (the in-process module's counters), else Envoy's admin
// statistics at envoy_admin, else none. name describes it for people.
func signalSource(s settings.Settings, opts Options) (src signals.Source, name string) {
	switch {
	case opts.Signals != nil:
		return opts.Signals, "the responses counted in process"
	case s.EnvoyAdmin != "":
		return signals.NewEnvoyAdmin(s.EnvoyAdmin, envoyAdminTimeout), "Envoy's admin statistics at " + s.EnvoyAdmin
	}
	return nil, ""
}

// newRollouts builds the rollout manager on src; without one, rollouts
// exist but cannot be started. In fleet mode (fl set) the states live in
// etcd, one replica elected through etcd decides on the counts every
// replica publishes, and the others follow (fleet.Rollouts).
func newRollouts(s settings.Settings, src signals.Source, noShadow string, st *store.Store, mut admin.Mutator, fl *fleet.Source,
	reg prometheus.Registerer, logger, audit *slog.Logger) (*rollout.Manager, *fleet.Rollouts, error) {
	var local *rollout.Local
	ro := rollout.Options{Store: st, Mutator: mut, Interval: s.SignalsInterval, Logger: logger, Audit: audit, NoShadow: noShadow}
	if src != nil {
		local = rollout.NewLocal(src, s.SignalsInterval)
		ro.Evidence = local
	}
	var fr *fleet.Rollouts
	if fl != nil {
		fr = fleet.NewRollouts(fl, fleet.RolloutOptions{
			TTL: s.RolloutLeaderTTL, PublishInterval: s.RolloutPublishInterval, SignalsInterval: s.SignalsInterval,
			Local: local, Logger: logger.With("component", "rollouts"), Metrics: fleet.NewRolloutMetrics(reg),
		})
		// Evidence even without a local source: the leader judges on the
		// counts the other replicas publish.
		ro.States, ro.Elector, ro.Mutator, ro.Evidence, ro.NodeID = fr, fr, fr, fr, s.NodeID
	}
	m, err := rollout.New(context.Background(), ro)
	if err != nil {
		if fl != nil {
			return nil, nil, fmt.Errorf("etcd rollout states: %w", err)
		}
		return nil, nil, fmt.Errorf("state_file: %w", err)
	}
	if fr != nil {
		fr.Follow(m.Observe)
	}
	return m, fr, nil
}

// loadInitial reads the file named by the settings (or takes the built-in
// default) and applies it. There is no last good configuration yet, so any
// problem is returned.
func (p *Plane) loadInitial() (fileSettings map[string]string, err error) {
	s := p.settings
	if s.ConfigPath == "" {
		cfg := split.Default()
		// The built-in configuration has no bytes; hash its JSON form so
		// that the reported sha256 still identifies it.
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, fmt.Errorf("built-in default: %w", err)
		}
		sum := sha256.Sum256(b)
		if _, err := p.store.ApplyFile(cfg, hex.EncodeToString(sum[:]), BuiltinSource); err != nil {
			return nil, fmt.Errorf("%s: %w", BuiltinSource, err)
		}
		p.log.Warn("running on the built-in default configuration; pass --config FILE or set SPLITTER_CONFIG to use your own")
		return nil, nil
	}
	l, err := config.ReadFile(s.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	fileSettings, err = settings.FileSettings(l.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.ConfigPath, err)
	}
	snap, err := p.store.ApplyFile(l.Config, l.SHA256, s.ConfigPath)
	if err != nil {
		return fileSettings, fmt.Errorf("%s: %w", s.ConfigPath, err)
	}
	p.log.Info("configuration loaded", "source", s.ConfigPath, "sha256", snap.SHA256, "services", len(l.Config.Services))
	return fileSettings, nil
}

// Table returns the compiled table in force, nil when none is loaded.
func (p *Plane) Table() *split.Table { return p.store.Table() }

// Store returns the runtime state.
func (p *Plane) Store() *store.Store { return p.store }

// Recorder returns what the adapters report to.
func (p *Plane) Recorder() adapter.Recorder { return p.metrics }

// Metrics returns the process's metrics.
func (p *Plane) Metrics() *metrics.Metrics { return p.metrics }

// Headers returns the route and reason header names in force.
func (p *Plane) Headers() adapter.Headers { return p.headers }

// AdminAddr returns the address the admin API listens on.
func (p *Plane) AdminAddr() string { return p.adminLis.Addr().String() }

// Reload re-reads the configuration now (SIGHUP, tests): the file, or in
// fleet mode everything from etcd.
func (p *Plane) Reload(ctx context.Context) (string, error) {
	if p.fleet != nil {
		return p.fleet.Reload(ctx)
	}
	return p.reloader.Reload(ctx)
}

// Fleet returns the etcd source in fleet mode, else nil.
func (p *Plane) Fleet() *fleet.Source { return p.fleet }

// Rollouts returns the rollout manager.
func (p *Plane) Rollouts() *rollout.Manager { return p.rollouts }

// Drain makes /readyz answer 503 from now on and closes the console's
// event streams (so that they do not hold the admin server's shutdown
// up); decisions go on.
func (p *Plane) Drain() {
	p.draining.Store(true)
	p.console.Drain()
}

// Run serves the admin API and keeps the configuration in step with its
// file until ctx ends, then stops the admin server (after its in-flight
// requests, bounded), then everything else, and returns nil; it returns
// an error if the admin server fails on its own. Call it once.
func (p *Plane) Run(ctx context.Context) error {
	// The components outlive ctx until the admin server has finished its
	// requests: a mutation in flight when the process stops (or the module
	// hands over to the next Envoy epoch) completes and is answered
	// truthfully, with the file watch, etcd and rollouts still running.
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var wg sync.WaitGroup
	if p.fleet != nil {
		defer p.closeFleet()
		wg.Go(func() { _ = p.fleet.Run(bg) })
	} else {
		wg.Go(func() { _ = p.reloader.Run(bg) })
	}
	wg.Go(func() { _ = p.rollouts.Run(bg) })
	wg.Go(func() { _ = p.console.Run(bg) })
	if p.fleetRollouts != nil {
		wg.Go(func() { p.fleetRollouts.Run(bg) })
	}
	served := make(chan error, 1)
	go func() { served <- p.admin.Serve(p.adminLis) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("admin server stopped unexpectedly: %w", err)
	}
	p.Drain() // the console's event streams would hold the shutdown up
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), adminShutdownTimeout)
	defer cancel()
	if serr := p.admin.Shutdown(sctx); serr != nil {
		p.log.Warn("admin server did not stop in time; closing it", "error", serr)
		p.admin.Close()
	}
	stop()
	wg.Wait()
	if err == nil {
		if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = fmt.Errorf("admin server: %w", serr)
		}
	}
	return err
}

// Close releases what New acquired when Run is never called.
func (p *Plane) Close() error {
	p.closeFleet()
	return p.adminLis.Close()
}

// startFleet builds the etcd source and loads the first state from etcd
// or the cache file. The routing part of a configuration file is not used
// in fleet mode (the file may still hold process settings).
func (p *Plane) startFleet(opts Options) error {
	s := p.settings
	if s.ConfigPath != "" {
		if l, err := config.ReadFile(s.ConfigPath); err == nil && len(l.Config.Services) > 0 {
			p.log.Warn("fleet mode: the services in the configuration file are ignored; the routing configuration comes from etcd",
				"path", s.ConfigPath, "etcd_prefix", s.EtcdPrefix)
		}
	}
	co, err := fleet.ClientOptionsFrom(s)
	if err != nil {
		return err
	}
	p.fleet = fleet.New(fleet.Options{
		Client:    co,
		Prefix:    s.EtcdPrefix,
		NodeID:    s.NodeID,
		CacheFile: s.EtcdCacheFile,
		Store:     p.store,
		Logger:    p.log.With("component", "fleet"),
		Metrics:   fleet.NewMetrics(p.registry),
		// Liveness cadence (docs/fleet.md, "Large fleets").
		FollowInterval: s.EtcdFollowInterval,
	})
	if err := p.fleet.Start(context.Background()); err != nil {
		if !opts.TolerateBadConfig {
			p.closeFleet()
		}
		return err
	}
	snap := p.store.Load()
	p.log.Info("fleet configuration loaded", "node_id", s.NodeID, "revision", snap.Revision, "sha256", snap.SHA256,
		"services", len(snap.File.Services), "from", p.fleet.Status().StartedFrom)
	return nil
}

func (p *Plane) closeFleet() {
	if p.fleet != nil {
		p.fleet.Close()
	}
}
