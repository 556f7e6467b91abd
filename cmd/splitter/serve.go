package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/trafficsplit/splitter/internal/serve"
	"github.com/trafficsplit/splitter/internal/settings"
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the sidecar: ext_proc, ext_authz and health on gRPC, and the admin API",
		Long: `Run the sidecar.

Settings come from flags, then SPLITTER_* environment variables
(SPLITTER_GRPC_ADDR, SPLITTER_CONFIG, ...), then the configuration file's
top-level keys, then defaults. They are read once: a reload (file change,
SIGHUP, POST /v1/reload) swaps only the routing part (services and
experiments); a changed grpc_addr or other process setting needs a restart.

SIGTERM or SIGINT drains: health goes NOT_SERVING and /readyz fails, new
requests are still decided for --drain-delay, then open streams get
--shutdown-timeout, and the process exits 0. SIGHUP reloads the
configuration file.`,
		Args: rejectArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := settings.Load(cmd.Flags(), os.LookupEnv)
			if err != nil {
				return err
			}
			readyFile, err := cmd.Flags().GetString("ready-file")
			if err != nil {
				return err
			}
			logger := s.NewLogger(cmd.ErrOrStderr())
			return serve.Run(cmd.Context(), s, logger, serve.WithReadyFile(readyFile))
		},
	}
	settings.BindFlags(cmd.Flags())
	cmd.Flags().String("ready-file", "", `once listening, write {"grpc_addr":...,"admin_addr":...} to this file (atomically)`)
	return cmd
}
