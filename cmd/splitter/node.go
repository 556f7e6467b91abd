package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/node"
	"github.com/trafficsplit/splitter/split"
)

func newNodeCmd() *cobra.Command {
	v := viper.New()
	cmd := &cobra.Command{
		Use:   "node [--config FILE]",
		Short: "Answer the seed's JSON line protocol on stdin and stdout",
		Long: `node reads one JSON message per line on standard input and writes one reply
line per message on standard output, flushed at once; logs go to standard
error. Messages are envelopes {"src","dest","body"} or bare bodies; types
init, route, update_canary and assign_variant.

Without --config (or SPLITTER_CONFIG) the node runs on the built-in default
configuration.`,
		Example: `  echo '{"type":"route","msg_id":1,"headers":{"x-beta":"true"}}' | splitter node`,
		Args:    rejectArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := stderrLogger(cmd.ErrOrStderr(), v.GetString("log_level"))
			if err != nil {
				return err
			}
			cfg, source, err := loadRoutingConfig(v.GetString("config"))
			if err != nil {
				return err
			}
			n, err := node.New(cfg, logger)
			if err != nil {
				return fmt.Errorf("%s: %w", source, err)
			}
			logger.Info("node ready", "config", source)
			err = n.Run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
			if errors.Is(err, context.Canceled) {
				return nil // SIGINT or SIGTERM: a normal stop
			}
			return err
		},
	}
	f := cmd.Flags()
	f.String("config", "", "configuration file (default $SPLITTER_CONFIG, else the built-in configuration)")
	f.String("log-level", "info", "log level on stderr: debug, info, warn or error ($SPLITTER_LOG_LEVEL)")
	bindSettings(v, f.Lookup("config"), "config")
	bindSettings(v, f.Lookup("log-level"), "log_level")
	return cmd
}

// bindSettings makes key read the flag when set, else SPLITTER_<KEY>,
// else the flag's default.
func bindSettings(v *viper.Viper, flag *pflag.Flag, key string) {
	// Neither call can fail with a non-nil flag and a non-empty key.
	_ = v.BindPFlag(key, flag)
	_ = v.BindEnv(key, "SPLITTER_"+strings.ToUpper(key))
}

// loadRoutingConfig reads path (strictly, as serve does) or, for "", the
// built-in default. source describes where the configuration came from.
func loadRoutingConfig(path string) (cfg *split.Config, source string, err error) {
	if path == "" {
		return split.Default(), "built-in default", nil
	}
	l, err := config.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	return l.Config, fmt.Sprintf("%s (sha256 %s)", path, l.SHA256), nil
}

// stderrLogger returns a text logger at level ("debug", "info", "warn",
// "error").
func stderrLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
