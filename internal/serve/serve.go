// Package serve runs the sidecar: a control.Plane (configuration, reload,
// overrides, metrics, admin API) with ext_proc, ext_authz and gRPC health
// on one gRPC port in front of it, SIGHUP for reloads, and an orderly
// drain when its context ends.
//
// Shutdown order: gRPC health goes NOT_SERVING and /readyz answers 503 at
// once, while new requests are still decided for DrainDelay (time for
// Envoy to stop sending, or to be stopped first); then open gRPC streams
// get ShutdownTimeout to finish before they are cut; then the admin server
// stops. Run returns nil after a clean drain, so the process exits 0 on
// SIGTERM.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/extauthz"
	"github.com/trafficsplit/splitter/extproc"
	"github.com/trafficsplit/splitter/internal/control"
	"github.com/trafficsplit/splitter/internal/fsutil"
	"github.com/trafficsplit/splitter/internal/grpcserver"
	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/internal/reload"
	"github.com/trafficsplit/splitter/internal/settings"
)

// BuiltinSource is the snapshot source reported when no file is given.
const BuiltinSource = control.BuiltinSource

// Addrs are the addresses actually bound (useful with port 0).
type Addrs struct {
	GRPC  string `json:"grpc_addr"`
	Admin string `json:"admin_addr"`
}

// Option adds to what Settings say.
type Option func(*options)

type options struct {
	readyFile string
	onReady   func(Addrs)
}

// WithReadyFile makes Run write {"grpc_addr": ..., "admin_addr": ...} to
// path, atomically, once both ports listen and the configuration is
// loaded; scripts wait for the file instead of parsing logs.
func WithReadyFile(path string) Option { return func(o *options) { o.readyFile = path } }

// WithOnReady calls fn with the bound addresses once Run is serving.
func WithOnReady(fn func(Addrs)) Option { return func(o *options) { o.onReady = fn } }

// Run serves until ctx ends, then drains and returns nil. It returns an
// error without serving if the initial configuration is invalid (the error
// names the file), a port cannot be bound, or the admin address is not
// loopback and no token is set; and an error after draining if a server
// fails on its own.
func Run(ctx context.Context, s settings.Settings, logger *slog.Logger, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	plane, err := control.New(s, control.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer applyGCPercent(s, logger, plane.Metrics())()

	glis, err := net.Listen("tcp", s.GRPCAddr)
	if err != nil {
		plane.Close()
		return fmt.Errorf("grpc_addr: %w", err)
	}

	health := grpcserver.NewHealth()
	gs := grpcserver.New(grpcserver.Options{Logger: logger, OnPanic: func() { plane.Metrics().Panic("") }})
	ep := extproc.New(plane, extproc.Options{Headers: plane.Headers(), Logger: logger, Recorder: plane.Recorder()})
	ea := extauthz.New(plane, extauthz.Options{Headers: plane.Headers(), Logger: logger, Recorder: plane.Recorder()})
	plane.AddWarning(ep.CookieWarning)
	extprocv3.RegisterExternalProcessorServer(gs, ep)
	ea.Register(gs)
	plane.Metrics().Register(
		metrics.NewCacheCollector(adapter.APIExtProc, ep.CacheStats),
		metrics.NewCacheCollector(adapter.APIExtAuthz, ea.CacheStats),
	)
	health.Register(gs)
	health.SetServing()

	// SIGHUP is taken over only while Run runs; outside, its default
	// (terminate) applies again.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	grpcCtx, stopGRPC := context.WithCancel(context.WithoutCancel(ctx))
	defer stopGRPC()
	planeCtx, stopPlane := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPlane()
	bgCtx, stopBG := context.WithCancel(ctx)
	defer stopBG()

	var wg sync.WaitGroup
	grpcDone := make(chan error, 1)
	planeDone := make(chan error, 1)
	wg.Go(func() { grpcDone <- grpcserver.Serve(grpcCtx, glis, gs, health, s.ShutdownTimeout) })
	wg.Go(func() { planeDone <- plane.Run(planeCtx) })
	wg.Go(func() { handleHUP(bgCtx, hup, plane, logger) })

	addrs := Addrs{GRPC: glis.Addr().String(), Admin: plane.AdminAddr()}
	logger.Info("grpc listening on "+addrs.GRPC, "addr", addrs.GRPC)
	logger.Info("admin listening on "+addrs.Admin, "addr", addrs.Admin)

	var runErr error
	if o.readyFile != "" {
		if err := writeReadyFile(o.readyFile, addrs); err != nil {
			runErr = fmt.Errorf("ready file: %w", err)
		}
	}
	if runErr == nil && o.onReady != nil {
		o.onReady(addrs)
	}

	// Each server's result is taken from its channel exactly once.
	var grpcErr, planeErr error
	grpcOver, planeOver := false, false
	if runErr == nil {
		select {
		case <-ctx.Done():
			logger.Info("shutting down: health NOT_SERVING, still deciding during the drain delay",
				"drain_delay", s.DrainDelay, "shutdown_timeout", s.ShutdownTimeout)
		case grpcErr = <-grpcDone:
			grpcOver = true
			runErr = fmt.Errorf("grpc server stopped unexpectedly: %w", orStopped(grpcErr))
		case planeErr = <-planeDone:
			planeOver = true
			runErr = orStopped(planeErr)
		}
	}

	// Drain: not ready anywhere first; keep deciding new requests for the
	// drain delay, so the tail of traffic is decided rather than failed
	// open; then the streams; then admin.
	plane.Drain()
	health.Drain()
	if runErr == nil && s.DrainDelay > 0 {
		select {
		case <-time.After(s.DrainDelay):
		case grpcErr = <-grpcDone:
			grpcOver = true
			runErr = fmt.Errorf("grpc server stopped unexpectedly: %w", orStopped(grpcErr))
		}
	}
	logger.Info("draining gRPC streams", "timeout", s.ShutdownTimeout)
	stopBG()
	stopGRPC()
	if !grpcOver {
		if err := <-grpcDone; err != nil && runErr == nil {
			runErr = err
		}
	}
	stopPlane()
	if !planeOver {
		if err := <-planeDone; err != nil && runErr == nil {
			runErr = err
		}
	}
	wg.Wait()
	if o.readyFile != "" {
		os.Remove(o.readyFile)
	}
	if runErr == nil {
		logger.Info("stopped")
	}
	return runErr
}

// applyGCPercent sets the collector's target for the whole process and
// returns the function that restores the previous one (Run may be called
// more than once in a process, as tests do). With GOGC as the source this
// re-applies what the runtime already read, so the log line and the gauge
// are right whichever way the value came. A zero GCPercent (Settings not
// built by settings.Load or Defaults) leaves the runtime alone.
func applyGCPercent(s settings.Settings, logger *slog.Logger, m *metrics.Metrics) (restore func()) {
	if s.GCPercent == 0 {
		cur := debug.SetGCPercent(100)
		debug.SetGCPercent(cur)
		m.GCPercent(cur)
		logger.Info("garbage collector target", "gc_percent", cur, "source", "runtime")
		return func() {}
	}
	prev := debug.SetGCPercent(s.GCPercent)
	m.GCPercent(s.GCPercent)
	logger.Info("garbage collector target", "gc_percent", s.GCPercent, "source", s.GCPercentSource)
	return func() { debug.SetGCPercent(prev) }
}

func orStopped(err error) error {
	if err == nil {
		return errors.New("stopped")
	}
	return err
}

// handleHUP reloads on every SIGHUP until ctx ends.
func handleHUP(ctx context.Context, hup <-chan os.Signal, plane *control.Plane, logger *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			res, err := plane.Reload(ctx)
			if errors.Is(err, reload.ErrNoFile) {
				logger.Warn("SIGHUP: nothing to reload", "error", err)
				continue
			}
			// A failure is logged by the reloader itself.
			logger.Info("SIGHUP: reload done", "result", res)
		}
	}
}

// writeReadyFile writes the bound addresses through a rename, so a reader
// never sees a partial file.
func writeReadyFile(path string, a Addrs) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return fsutil.WriteAtomic(path, append(b, '\n'), 0o644, nil)
}
