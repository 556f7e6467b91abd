package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// when empty, the module version or VCS revision from the build info is
// used.
var version string

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the Go version it was built with",
		Args:  rejectArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, _ := debug.ReadBuildInfo()
			return printVersion(cmd.OutOrStdout(), version, info)
		},
	}
}

func printVersion(w io.Writer, v string, info *debug.BuildInfo) error {
	var revision, modified string
	if info != nil {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if v == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
	}
	if v == "" {
		v = "devel"
	}
	goVersion := runtime.Version()
	if info != nil && info.GoVersion != "" {
		goVersion = info.GoVersion
	}
	_, err := fmt.Fprintf(w, "splitter %s\ngo %s %s/%s\n", v, goVersion, runtime.GOOS, runtime.GOARCH)
	if err == nil && revision != "" {
		if modified == "true" {
			revision += " (modified)"
		}
		_, err = fmt.Fprintf(w, "commit %s\n", revision)
	}
	return err
}
