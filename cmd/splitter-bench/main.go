// Command splitter-bench measures the splitter: an Envoy-like ext_proc load
// generator, the no-op baseline server, the pinned side-by-side comparison,
// the Go micro-benchmarks, the runs through a real Envoy, and BENCH.md.
//
//	splitter-bench all --splitter bin/splitter      # everything, writes BENCH.md
//	splitter-bench extproc --splitter bin/splitter  # the ext_proc comparison only
//	splitter-bench load --addr 127.0.0.1:9001       # one run against any server
//	splitter-bench noop                              # the baseline server
//	splitter-bench fleet --splitter bin/splitter --etcd .venv/bin/etcd  # fleet propagation
//	splitter-bench rollout --splitter bin/splitter  # the rollout guard's rollback time
//	splitter-bench gateway --splitter bin/splitter  # through Envoy Gateway's Envoy (make gateway)
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "splitter-bench:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "splitter-bench",
		Short:         "Benchmarks for the splitter (ext_proc load generator, baseline, BENCH.md)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newNoopCmd(), newLoadCmd(), newExtProcCmd(), newMicroCmd(), newEnvoyCmd(), newGatewayCmd(), newReportCmd(), newAllCmd(), newFleetCmd(), newRolloutCmd(), newAssignCmd())
	return root
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
