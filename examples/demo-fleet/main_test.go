package main

import (
	"os"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/testbed"
)

// The demo is also a test: its own checks (every Envoy's split before and
// after the one admin call, /v1/fleet converged) must pass.
func TestDemoFleet(t *testing.T) {
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	envoyBin, envoyErr := testbed.FindEnvoy(root)
	etcdBin, etcdErr := testbed.FindEtcd(root)
	for _, err := range []error{envoyErr, etcdErr} {
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal(err)
			}
			t.Skip(err)
		}
	}
	bin, err := testbed.BuildSplitter(t.Context(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := run(t.Context(), &out, bin, envoyBin, etcdBin, 100); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"every Envoy at 90/10", "every Envoy at 50/50", "three replicas, one state", "All checks passed."} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}
