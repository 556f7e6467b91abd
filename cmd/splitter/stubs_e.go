package main

// Placeholder owned by the serve helper: replaced by serve.go.

import "github.com/spf13/cobra"

func newServeCmd() *cobra.Command { return &cobra.Command{Use: "serve"} }
