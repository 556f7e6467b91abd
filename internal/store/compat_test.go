package store_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// A state file a newer build wrote, with fields this one does not know
// (at the top and inside a route), is read: its overrides and routes
// apply, and the unknown top-level fields are named once in the log. A
// field this build knows is still checked. (Forward compatibility: the
// next release's state file must not stop this one, after a rollback.)
func TestStateFileFromANewerBuild(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	doc := `{"file_sha256": "sha", "overrides": {"api": {"v1": 50, "v2": 50}}, "file_weights": {"api": {"v1": 80, "v2": 20}},
	  "routes": {"api": [{"name": "testers", "when": [{"header": "x-canary", "exact": "1"}], "version": "v2", "expires_at": "2030-01-01T00:00:00Z"}]},
	  "schedules": {"api": [{"at": "2030-01-01T00:00:00Z", "weights": {"v1": 0, "v2": 100}}]}, "zone": "eu"}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	s, logs := newStore(t, store.Options{StateFile: path})
	snap := mustApply(t, s, twoServices(nil, nil), "sha")
	if got := effective(t, snap, "api"); !got.Equal(weights("v1", 5000, "v2", 5000)) {
		t.Fatalf("api's weights %v, want the state file's 50/50", got)
	}
	if len(snap.Routes["api"]) != 1 {
		t.Fatalf("runtime routes %v, want the state file's one", snap.Routes)
	}
	if n := strings.Count(logs.String(), "does not know"); n != 1 || !strings.Contains(logs.String(), "fields=\"[schedules zone]\"") {
		t.Fatalf("want one line naming [schedules zone]:\n%s", logs.String())
	}

	bad := `{"overrides": {"api": {"v1": "half", "v2": 50}}, "zone": "eu"}`
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.New(store.Options{StateFile: path}); err == nil || !strings.Contains(err.Error(), "overrides.api") {
		t.Fatalf("a malformed known field beside an unknown one: %v, want an error naming overrides.api", err)
	}
}

// With no runtime mirror, route, mirror route or owned weights in use,
// the state file has exactly the fields the previous release reads
// (file_sha256, overrides, file_weights, rollouts; it refuses any other):
// a rollback to it starts on this file.
func TestStateFileWithoutNewFeaturesHasOnlyOldFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, s, twoServices(nil, nil), "sha")
	if _, err := s.SetCanary(t.Context(), "api", 3000, "t"); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRollout("api", json.RawMessage(`{"phase":"paused"}`)); err != nil {
		t.Fatal(err)
	}
	// A mirror set and cleared, a route put and removed: nothing left.
	if _, err := s.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 1000}, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClearMirror(t.Context(), "api", "t"); err != nil {
		t.Fatal(err)
	}
	r := store.Route{Name: "testers", When: []split.Condition{{Header: "x-canary", Exact: ptr("1")}}, Version: "v2"}
	if _, err := s.PutRoute(t.Context(), "api", r, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteRoute(t.Context(), "api", "testers", "", "t"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatal(err)
	}
	old := []string{"file_sha256", "file_weights", "overrides", "rollouts"}
	for k := range top {
		if !slices.Contains(old, k) {
			t.Errorf("the state file has %q, which the previous release refuses:\n%s", k, data)
		}
	}
}

func ptr[T any](v T) *T { return &v }
