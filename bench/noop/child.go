package noop

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// ChildMain runs the baseline on the flags `splitter serve` is started with
// by the benchmark (--grpc-addr, --admin-addr, --ready-file) until SIGTERM,
// and returns the exit code. Test binaries call it from TestMain to stand in
// for a server process.
func ChildMain(args []string) int {
	fs := flag.NewFlagSet("noop", flag.ContinueOnError)
	var opts Options
	fs.StringVar(&opts.GRPCAddr, "grpc-addr", "", "gRPC listen address")
	fs.StringVar(&opts.AdminAddr, "admin-addr", "", "admin listen address")
	fs.StringVar(&opts.ReadyFile, "ready-file", "", "ready file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := Serve(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
