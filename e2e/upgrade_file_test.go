package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// fileRolloutConfig is a routing file both releases read.
const fileRolloutConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    rollout:
      steps: [10, 50, 100]
      hold: 1h
      guard: {window: 1s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2}
`

// File mode, the rollback of an upgrade: the previous release starting on
// the state_file this release wrote. Without a runtime mirror, route or
// mirror route in use it starts, with the override and a paused rollout
// as they were (the hold too); with one, it refuses to start, with its
// own words, until the feature is cleared on this release (what
// docs/upgrading.md says a downgrade needs). The upgrade itself (this
// release on the previous one's file) keeps everything.
func TestUpgradeStateFileRollback(t *testing.T) {
	rel := previousRelease(t)
	b := testbed.ForTest(t)
	dir := t.TempDir()
	cfg, state := filepath.Join(dir, "routing.yaml"), filepath.Join(dir, "state.json")
	writeFile(t, cfg, fileRolloutConfig)
	args := []string{"--state-file", state}
	run := func(bin string) (*testbed.Splitter, error) {
		return b.StartSplitter(t.Context(), bin, cfg, args...)
	}
	must := func(s *testbed.Splitter, err error) *testbed.Splitter {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	stop := func(s *testbed.Splitter) {
		t.Helper()
		if err := s.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	// The upgrade: the previous release writes, this one reads.
	old := must(run(rel.Splitter))
	if err := old.SetCanary(t.Context(), "api", 30); err != nil {
		t.Fatal(err)
	}
	stop(old)
	cur := must(run(found.splitterBin))
	if w := service(t, cur).Weights; w["v2"] != 30 {
		t.Fatalf("this release on the previous one's state file: %v, want the override's 70/30", w)
	}

	// This release writes an override and a rollout paused a second into
	// its first step (the hold it carries), and nothing new.
	actOn(t, cur, rollout.Start)
	time.Sleep(time.Second)
	paused := actOn(t, cur, rollout.Pause)
	stop(cur)

	old = must(run(rel.Splitter))
	st := rolloutOf(t, old)
	if st.State != rollout.Paused || st.Step != 1 || st.Held != paused.Held {
		t.Fatalf("the previous release on this one's state file: %+v, want paused at step 1 held %v", st, paused.Held.D())
	}
	if w := service(t, old).Weights; w["v2"] != 10 {
		t.Fatalf("the previous release serves %v, want the paused step's 90/10", w)
	}
	stop(old)

	// A runtime mirror, a runtime route, a mirror route: the previous
	// release refuses the file, naming the field, until it is cleared.
	for _, f := range []struct {
		field, put, del string
		body            any
	}{
		{"mirrors", "/v1/services/api/mirror", "/v1/services/api/mirror", map[string]any{"version": "v2", "percent": 10}},
		{"routes", "/v1/services/api/routes/testers", "/v1/services/api/routes/testers", map[string]any{"when": []any{map[string]any{"header": "x-canary", "exact": "1"}}, "version": "v2"}},
		{"mirror_routes", "/v1/services/api/mirror-routes/copy", "/v1/services/api/mirror-routes/copy", map[string]any{"when": []any{map[string]any{"header": "x-canary", "exact": "1"}}, "version": "v2", "percent": 50}},
	} {
		cur = must(run(found.splitterBin))
		if err := cur.Admin(t.Context(), http.MethodPut, f.put, f.body, nil); err != nil {
			t.Fatal(err)
		}
		stop(cur)
		_, err := run(rel.Splitter)
		want := `state file ` + state + `: json: unknown field "` + f.field + `"`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("the previous release with %s in the state file: %v, want its exit saying %q", f.field, err, want)
		}
		cur = must(run(found.splitterBin))
		if err := cur.Admin(t.Context(), http.MethodDelete, f.del, nil, nil); err != nil {
			t.Fatal(err)
		}
		stop(cur)
		old = must(run(rel.Splitter))
		if st := rolloutOf(t, old); st.State != rollout.Paused || st.Held != paused.Held {
			t.Fatalf("after clearing %s: %+v", f.field, st)
		}
		stop(old)
	}
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the state file the previous release last wrote:\n%s", data)
}
