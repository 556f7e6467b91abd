package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

// TestWriteStateFailedRename simulates a crash-free failure between the
// temporary file and the rename: the old state file must be intact, no
// temporary file left, and the mutation must not take effect.
func TestWriteStateFailedRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	s, err := New(Options{StateFile: path})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &split.Config{Services: []split.Service{{
		Name: "api", Hosts: []string{"*"},
		Weights: split.Weights{{Version: "v1", BasisPoints: 8000}, {Version: "v2", BasisPoints: 2000}},
	}}}
	if _, err := s.ApplyFile(cfg, "sha", "test.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCanary(t.Context(), "api", 1000, "t"); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before := s.Load()

	s.rename = func(string, string) error { return errors.New("injected rename failure") }
	if _, err := s.SetCanary(t.Context(), "api", 4000, "t"); err == nil {
		t.Fatal("SetCanary with a failing rename: want an error")
	}
	if s.Load() != before {
		t.Fatal("the mutation took effect although it was not persisted")
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(good) {
		t.Fatalf("state file changed:\nbefore %s\nafter  %s", good, after)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("temporary file left behind: %v", entries)
	}
}
