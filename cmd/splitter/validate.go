package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/settings"
	"github.com/trafficsplit/splitter/split"
)

func newValidateCmd() *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check configuration files as serve would load them",
		Long: `validate reads, parses and compiles each FILE with the same checks serve
applies on start and on reload. For a valid file it prints
"FILE: ok (N services, M experiments, sha256 HEX)" on stdout; for an invalid
one every problem on stderr, one per line, each prefixed with the file.

Exit status: 0 when every file is valid, 1 when any is not, 2 on usage errors.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("%s needs at least one FILE", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, files []string) error {
			bad := 0
			for _, f := range files {
				if !validateFile(cmd.OutOrStdout(), cmd.ErrOrStderr(), f, quiet) {
					bad++
				}
			}
			if bad > 0 {
				return &exitError{code: exitFailure, err: fmt.Errorf("%d of %d files invalid", bad, len(files))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing for valid files")
	return cmd
}

// validateFile checks one file, reports on out or errOut and says whether
// it is valid.
func validateFile(out, errOut io.Writer, path string, quiet bool) bool {
	l, err := config.ReadFile(path)
	if err == nil {
		_, err = split.Compile(l.Config)
	}
	if err == nil {
		var h adapter.Headers
		if h, err = settings.FileHeaders(l.Bytes); err == nil {
			err = h.CheckConfig(l.Config)
		}
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, path+": ") {
				line = path + ": " + line
			}
			fmt.Fprintln(errOut, line)
		}
		return false
	}
	if !quiet {
		fmt.Fprintf(out, "%s: ok (%s, %s, sha256 %s)\n", path,
			plural(len(l.Config.Services), "service"), plural(len(l.Config.Experiments), "experiment"), l.SHA256)
	}
	return true
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
