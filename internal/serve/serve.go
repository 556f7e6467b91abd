// Package serve runs the sidecar: it loads the configuration, serves
// ext_proc, ext_authz and gRPC health on one port and the admin API on
// another, keeps the configuration in step with its file (watcher, poll,
// SIGHUP, POST /v1/reload) and drains in order when its context ends.
//
// Shutdown order: gRPC health goes NOT_SERVING and /readyz answers 503 at
// once; open gRPC streams get ShutdownTimeout to finish before they are cut;
// then the admin server stops. Run returns nil after a clean drain, so the
// process exits 0 on SIGTERM.
package serve

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
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trafficsplit/splitter/extauthz"
	"github.com/trafficsplit/splitter/extproc"
	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/grpcserver"
	"github.com/trafficsplit/splitter/internal/metrics"
	"github.com/trafficsplit/splitter/internal/reload"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// BuiltinSource is the snapshot source reported when no file is given.
const BuiltinSource = "built-in default"

// adminShutdownTimeout bounds the admin server's own shutdown, after the
// gRPC drain: its requests are short.
const adminShutdownTimeout = 2 * time.Second

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
func Run(ctx context.Context, s config.Settings, logger *slog.Logger, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	cfg, sha, source, fileSettings, err := initialConfig(s, logger)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	defer applyGCPercent(s, logger, m)()

	st, err := store.New(store.Options{
		Logger: logger, StateFile: s.StateFile, OnSwap: m.ObserveSnapshot,
		Check: func(c *split.Config) error { return config.CheckHeaders(c, s.RouteHeader, s.ReasonHeader) },
	})
	if err != nil {
		return fmt.Errorf("state_file: %w", err)
	}
	snap, err := st.ApplyFile(cfg, sha, source)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	logger.Info("configuration loaded", "source", source, "sha256", snap.SHA256, "services", len(cfg.Services))

	token, err := s.TokenSource(logger)
	if err != nil {
		return err
	}
	if err := admin.CheckBindAddress(s.AdminAddr, token()); err != nil {
		return err
	}

	glis, err := net.Listen("tcp", s.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc_addr: %w", err)
	}
	alis, err := net.Listen("tcp", s.AdminAddr)
	if err != nil {
		glis.Close()
		return fmt.Errorf("admin_addr: %w", err)
	}

	rl := reload.New(reload.Options{
		Path:         s.ConfigPath,
		Store:        st,
		Logger:       logger,
		Metrics:      m,
		Debounce:     s.ReloadDebounce,
		PollInterval: s.ReloadPollInterval,
		FileSettings: fileSettings,
	})

	health := grpcserver.NewHealth()
	gs := grpcserver.New(grpcserver.Options{Logger: logger, OnPanic: m.Panic})
	extprocv3.RegisterExternalProcessorServer(gs, extproc.New(st, extproc.Options{
		RouteHeader: s.RouteHeader, ReasonHeader: s.ReasonHeader, Logger: logger, Recorder: m,
	}))
	authv3.RegisterAuthorizationServer(gs, extauthz.New(st, extauthz.Options{
		RouteHeader: s.RouteHeader, ReasonHeader: s.ReasonHeader, Logger: logger, Recorder: m,
	}))
	health.Register(gs)
	health.SetServing()

	var draining atomic.Bool
	hs := admin.NewServer(alis.Addr().String(), admin.New(admin.Options{
		Store: st,
		Reload: func(ctx context.Context) error {
			_, err := rl.Reload(ctx)
			return err
		},
		Token:    token,
		Metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Ready:    func() bool { return !draining.Load() && st.Load() != nil },
		Logger:   logger,
		Audit:    logger.With("log", "audit"),
		Recorder: m,
		Pprof:    s.Pprof,
	}))

	// SIGHUP is taken over only while Run runs; outside, its default
	// (terminate) applies again.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	grpcCtx, stopGRPC := context.WithCancel(context.WithoutCancel(ctx))
	defer stopGRPC()
	bgCtx, stopBG := context.WithCancel(ctx)
	defer stopBG()

	var wg sync.WaitGroup
	grpcDone := make(chan error, 1)
	adminDone := make(chan error, 1)
	wg.Go(func() { grpcDone <- grpcserver.Serve(grpcCtx, glis, gs, health, s.ShutdownTimeout) })
	wg.Go(func() { adminDone <- hs.Serve(alis) })
	wg.Go(func() { _ = rl.Run(bgCtx) })
	wg.Go(func() { handleHUP(bgCtx, hup, rl, logger) })

	addrs := Addrs{GRPC: glis.Addr().String(), Admin: alis.Addr().String()}
	logger.Info("grpc listening on "+addrs.GRPC, "addr", addrs.GRPC)
	logger.Info("admin listening on "+addrs.Admin, "addr", addrs.Admin)
	if source == BuiltinSource {
		logger.Warn("running on the built-in default configuration; pass --config FILE or set SPLITTER_CONFIG to use your own")
	}

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
	var grpcErr, adminErr error
	grpcOver, adminOver := false, false
	if runErr == nil {
		select {
		case <-ctx.Done():
			logger.Info("shutting down: draining gRPC streams", "timeout", s.ShutdownTimeout)
		case grpcErr = <-grpcDone:
			grpcOver = true
			runErr = fmt.Errorf("grpc server stopped unexpectedly: %w", orStopped(grpcErr))
		case adminErr = <-adminDone:
			adminOver = true
			runErr = fmt.Errorf("admin server stopped unexpectedly: %w", orStopped(adminErr))
		}
	}

	// Drain: not ready anywhere first, then the streams, then admin.
	draining.Store(true)
	health.Drain()
	stopBG()
	stopGRPC()
	if !grpcOver {
		if err := <-grpcDone; err != nil && runErr == nil {
			runErr = err
		}
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), adminShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(actx); err != nil {
		logger.Warn("admin server did not stop in time; closing it", "error", err)
		hs.Close()
	}
	if !adminOver {
		if err := <-adminDone; err != nil && !errors.Is(err, http.ErrServerClosed) && runErr == nil {
			runErr = fmt.Errorf("admin server: %w", err)
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

// initialConfig reads the file named by s (or takes the built-in default).
// The routing part is parsed here and compiled by the store; any problem
// is fatal at startup, since there is no last good configuration yet.
func initialConfig(s config.Settings, logger *slog.Logger) (cfg *split.Config, sha, source string, fileSettings map[string]string, err error) {
	if s.ConfigPath == "" {
		cfg = split.Default()
		// The built-in configuration has no bytes; hash its JSON form so
		// that the reported sha256 still identifies it.
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, "", "", nil, fmt.Errorf("built-in default: %w", err)
		}
		sum := sha256.Sum256(b)
		return cfg, hex.EncodeToString(sum[:]), BuiltinSource, nil, nil
	}
	l, err := config.ReadFile(s.ConfigPath)
	if err != nil {
		return nil, "", "", nil, fmt.Errorf("configuration: %w", err)
	}
	fs, err := config.FileSettings(l.Bytes)
	if err != nil {
		return nil, "", "", nil, fmt.Errorf("%s: %w", s.ConfigPath, err)
	}
	return l.Config, l.SHA256, s.ConfigPath, fs, nil
}

// applyGCPercent sets the collector's target for the whole process and
// returns the function that restores the previous one (Run may be called
// more than once in a process, as tests do). With GOGC as the source this
// re-applies what the runtime already read, so the log line and the gauge
// are right whichever way the value came. A zero GCPercent (Settings not
// built by config.Load or Defaults) leaves the runtime alone.
func applyGCPercent(s config.Settings, logger *slog.Logger, m *metrics.Metrics) (restore func()) {
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
func handleHUP(ctx context.Context, hup <-chan os.Signal, rl *reload.Reloader, logger *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			res, err := rl.Reload(ctx)
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
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ready-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
