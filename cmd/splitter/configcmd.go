package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/settings"
	"github.com/trafficsplit/splitter/split"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Read or write the fleet's routing configuration in etcd",
		Long: `config push and config get work on the fleet's routing document in etcd
(the key <etcd_prefix>config), with the same etcd settings as serve: flags,
SPLITTER_ETCD_* variables, or the etcd_* keys of the --config settings file.`,
		Args: rejectArgs,
	}
	cmd.AddCommand(newConfigPushCmd(), newConfigGetCmd())
	return cmd
}

// bindEtcdFlags declares the process settings' flags on fs and hides those
// that are not about etcd, so that settings.Load reads the etcd ones the
// way serve does.
func bindEtcdFlags(fs *pflag.FlagSet) {
	settings.BindFlags(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "config" && !strings.HasPrefix(f.Name, "etcd-") && f.Name != "node-id" {
			_ = fs.MarkHidden(f.Name)
		}
	})
}

// etcdClient loads the settings and connects; fleet mode must be on.
func etcdClient(cmd *cobra.Command) (*clientv3.Client, fleet.Keys, settings.Settings, error) {
	s, err := settings.Load(cmd.Flags(), os.LookupEnv)
	if err != nil {
		return nil, fleet.Keys{}, s, err
	}
	if !s.FleetMode() {
		return nil, fleet.Keys{}, s, usageErrorf("etcd_endpoints is not set (--etcd-endpoints, SPLITTER_ETCD_ENDPOINTS or the settings file)")
	}
	co, err := fleet.ClientOptionsFrom(s)
	if err != nil {
		return nil, fleet.Keys{}, s, err
	}
	c, err := fleet.NewClient(co)
	if err != nil {
		return nil, fleet.Keys{}, s, err
	}
	return c, fleet.Keys{Prefix: s.EtcdPrefix}, s, nil
}

func newConfigPushCmd() *cobra.Command {
	var expect int64
	cmd := &cobra.Command{
		Use:   "push FILE",
		Short: "Validate FILE as `validate` does, then write it to etcd",
		Long: `push validates FILE with the same checks as validate and, if it is valid,
writes it to <etcd_prefix>config; every replica applies it from its watch.
Overrides the new document makes stale (it changes their service's weights,
or drops the service) are deleted in the same transaction, as a file reload
drops them. With --expect-revision N the write happens only if the
document's current revision is N (0: no document yet), a compare-and-swap;
config get prints the revision.

Exit status: 0 written, 1 invalid file, etcd error or revision mismatch,
2 usage errors.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErrorf("%s needs exactly one FILE", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if !validateFile(cmd.OutOrStdout(), cmd.ErrOrStderr(), path, true) {
				return &exitError{code: exitFailure, err: fmt.Errorf("%s is invalid; nothing written", path)}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if len(data) > split.MaxConfigBytes {
				return fmt.Errorf("%s: more than the %d-byte limit", path, split.MaxConfigBytes)
			}
			c, keys, s, err := etcdClient(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), s.EtcdDialTimeout+10*time.Second)
			defer cancel()
			want := int64(-1)
			if cmd.Flags().Changed("expect-revision") {
				want = expect
			}
			res, err := fleet.PushConfig(ctx, c, keys, data, want)
			if err != nil {
				if errors.Is(err, fleet.ErrRevisionMismatch) {
					return &exitError{code: exitFailure, err: err}
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: written to %s at revision %d\n", path, keys.Config(), res.Revision)
			for _, svc := range res.Cleared {
				fmt.Fprintf(cmd.OutOrStdout(), "override of %s cleared: the new document changes its weights\n", svc)
			}
			return nil
		},
	}
	bindEtcdFlags(cmd.Flags())
	cmd.Flags().Int64Var(&expect, "expect-revision", 0, "write only if the document's current revision is this one (0: none yet)")
	return cmd
}

func newConfigGetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get",
		Short: "Print the fleet's routing document from etcd, and its revision on stderr",
		Long: `get prints <etcd_prefix>config on stdout, exactly as stored, and
"revision N sha256 HEX" on stderr: N is what push --expect-revision takes.`,
		Args: rejectArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, keys, s, err := etcdClient(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), s.EtcdDialTimeout+10*time.Second)
			defer cancel()
			doc, err := fleet.GetConfig(ctx, c, keys)
			if err != nil {
				return err
			}
			if _, err := cmd.OutOrStdout().Write(doc.Data); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "revision %d sha256 %s\n", doc.Revision, doc.SHA256)
			return nil
		},
	}
	bindEtcdFlags(cmd.Flags())
	return cmd
}
