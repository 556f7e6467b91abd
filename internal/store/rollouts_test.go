package store_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/store"
)

// TestRolloutStatesPersist: a rollout state saved in one store is read back
// by the next one on the same state file, and writes of overrides keep it.
func TestRolloutStatesPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, s, twoServices(nil, nil), "x")
	doc := json.RawMessage(`{"phase":"progressing","step":1}`)
	if err := s.SaveRollout("api", doc); err != nil {
		t.Fatal(err)
	}
	// An override written afterwards rewrites the file: the state stays.
	if _, err := s.SetCanary(t.Context(), "api", 2500, "rollout"); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRollout("web", json.RawMessage(`{"phase":"idle"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRollout("web", nil); err != nil {
		t.Fatal(err)
	}

	next, _ := newStore(t, store.Options{StateFile: path})
	got := next.Rollouts()
	var compact bytes.Buffer
	if err := json.Compact(&compact, got["api"]); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || compact.String() != string(doc) {
		t.Fatalf("after a restart: %s, want only api's state", got)
	}
	// Before the first load a save keeps the overrides still to be judged.
	if err := next.SaveRollout("api", json.RawMessage(`{"phase":"paused"}`)); err != nil {
		t.Fatal(err)
	}
	snap := mustApply(t, next, twoServices(nil, nil), "x")
	if w := effective(t, snap, "api"); w.String() != "v1: 75, v2: 25" {
		t.Fatalf("override after a rollout save before the first load: %s", w)
	}
	if m := readStateFile(t, path); !strings.Contains(string(mustJSON(t, m["rollouts"])), `"paused"`) {
		t.Fatalf("state file rollouts: %v", m["rollouts"])
	}
}

func TestRolloutStatesWithoutStateFile(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	if err := s.SaveRollout("api", json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := s.Rollouts(); len(got) != 1 {
		t.Fatalf("kept in memory: %v", got)
	}
}

func TestRolloutStateUnwritable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "state.json")
	s, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, s, twoServices(nil, nil), "x")
	err := s.SaveRollout("api", json.RawMessage(`{}`))
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"api"`) {
		t.Fatalf("SaveRollout with an unwritable state file: %v, want an error naming the file and service", err)
	}
	if got := s.Rollouts(); len(got) != 0 {
		t.Fatalf("a state that could not be written is not kept: %v", got)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
