// Command splitter is the traffic-splitting sidecar for Envoy.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "splitter:", err)
		os.Exit(exitCode(err))
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "splitter",
		Short:         "Traffic-splitting sidecar for Envoy (ext_proc and ext_authz)",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Without Args and RunE cobra reports an unknown command before
		// any hook runs, as a plain error (exit 1, not 2).
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: err}
	})
	root.AddCommand(newServeCmd(), newNodeCmd(), newValidateCmd(), newExplainCmd(), newConfigCmd(), newRolloutCmd(), newVersionCmd())
	return root
}
