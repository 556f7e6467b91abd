package main

// Placeholder owned by the CLI helper: replaced by node.go, validate.go,
// explain.go, version.go.

import "github.com/spf13/cobra"

func newNodeCmd() *cobra.Command     { return &cobra.Command{Use: "node"} }
func newValidateCmd() *cobra.Command { return &cobra.Command{Use: "validate"} }
func newExplainCmd() *cobra.Command  { return &cobra.Command{Use: "explain"} }
func newVersionCmd() *cobra.Command  { return &cobra.Command{Use: "version"} }

// exitCode maps an error to the process exit code.
func exitCode(error) int { return 1 }
