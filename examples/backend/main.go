// Command backend is the example upstream service: it answers every request
// with {"version": NAME, "headers": {...}} (an echo of the request headers)
// and /healthz with "ok". Two copies with different --version stand behind
// Envoy as v1 and v2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/trafficsplit/splitter/examples/backend/echo"
)

func main() {
	addr := flag.String("addr", envOr("BACKEND_ADDR", "127.0.0.1:8080"), "listen address (env BACKEND_ADDR)")
	version := flag.String("version", envOr("BACKEND_VERSION", "v1"), "version name to report (env BACKEND_VERSION)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *addr, *version); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, addr, version string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: echo.Handler(version), ReadHeaderTimeout: 5 * time.Second}
	log.Info("backend listening", "addr", ln.Addr().String(), "version", version)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
