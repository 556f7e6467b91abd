package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// Exit codes: 1 for failures (an invalid file, a server error), 2 for
// usage errors (bad flags or arguments), as most Unix tools do.
const (
	exitFailure = 1
	exitUsage   = 2
)

// exitError is an error that carries the process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErrorf reports a bad command line (exit code 2).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// exitCode maps an error returned by a command to the process exit code.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitFailure
}

// rejectArgs is a cobra.PositionalArgs for commands that take none.
func rejectArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
