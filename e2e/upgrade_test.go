package e2e

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/testbed"
)

// previous is the previous release (testbed.PreviousRelease), built from
// the repository's history at most once per test binary, by the first
// test that needs it; TestMain removes it.
var previous struct {
	once sync.Once
	dir  string
	rel  *testbed.Release
	err  error
}

// previousRelease returns the previous release's build, or fails the test:
// never a skip, with or without CI (the history is part of the
// repository; a clone without it cannot test upgrades, and says so).
func previousRelease(t *testing.T) *testbed.Release {
	t.Helper()
	previous.once.Do(func() {
		previous.dir, previous.err = os.MkdirTemp("", "splitter-previous-")
		if previous.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		previous.rel, previous.err = testbed.BuildRelease(ctx, found.root, testbed.PreviousRelease, previous.dir)
	})
	if previous.err != nil {
		t.Fatalf("building the previous release: %v", previous.err)
	}
	return previous.rel
}
