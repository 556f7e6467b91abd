// Command gen writes the committed Envoy bootstraps (envoy.Generated) into
// the envoy/ directory. It is run by `go generate ./envoy/...`.
package main

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/trafficsplit/splitter/envoy"
)

func main() {
	dir := flag.String("dir", ".", "directory to write the bootstraps into")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "envoy/gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files := envoy.Generated()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		out, err := envoy.Render(files[name])
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), out, 0o644); err != nil {
			return err
		}
	}
	return nil
}
