package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// mirrored decides n unkeyed requests of api and counts those copied.
func mirrored(snap *store.Snapshot, n int) int {
	c := 0
	for range n {
		var d split.Decision
		snap.Table.Decide(&split.Request{}, &d)
		if d.Mirror() != "" {
			c++
		}
	}
	return c
}

func withMirror(cfg *split.Config, m *split.Mirror) *split.Config {
	cfg.Services[0].Mirror = m
	return cfg
}

func TestSetAndClearMirror(t *testing.T) {
	s, logs := newStore(t, store.Options{})
	mustApply(t, s, twoServices(weights("v1", 10000, "v2", 0), nil), "a")
	ch, err := s.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 1000}, "tester")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Old != nil || !ch.New.Equal(&split.Mirror{Version: "v2", Percent: 1000}) || ch.Snapshot != s.Load() {
		t.Fatalf("change %+v", ch)
	}
	if got := mirrored(s.Load(), 1000); got != 100 {
		t.Errorf("%d of 1000 mirrored, want 100", got)
	}
	if m := s.Load().Mirrors["api"]; m.Version != "v2" || !strings.Contains(logs.String(), "runtime mirror set") {
		t.Errorf("Mirrors %v; logs %s", s.Load().Mirrors, logs)
	}
	// A weights override keeps the mirror, and so does clearing it.
	if _, err := s.SetCanary(t.Context(), "api", 2000, "tester"); err != nil {
		t.Fatal(err)
	}
	if m := store.EffectiveMirror(s.Load(), "api"); m == nil || m.Percent != 1000 {
		t.Fatalf("after a canary change the mirror is %v", m)
	}
	if _, err := s.ClearOverride(t.Context(), "api", "tester"); err != nil {
		t.Fatal(err)
	}
	if m := store.EffectiveMirror(s.Load(), "api"); m == nil {
		t.Fatal("clearing the weights override removed the mirror")
	}
	ch, err = s.ClearMirror(t.Context(), "api", "tester")
	if err != nil || ch.New != nil || s.Load().Mirrors != nil {
		t.Fatalf("clear: %+v %v", ch, err)
	}
	if got := mirrored(s.Load(), 100); got != 0 {
		t.Errorf("%d mirrored after the clear", got)
	}
	// Clearing again changes nothing.
	gen := s.Load().Generation
	if _, err := s.ClearMirror(t.Context(), "api", "tester"); err != nil || s.Load().Generation != gen {
		t.Errorf("second clear: %v, generation %d -> %d", err, gen, s.Load().Generation)
	}
}

func TestSetMirrorRefusesBadInput(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	if _, err := s.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 10}, "t"); !errors.Is(err, store.ErrNoConfig) {
		t.Errorf("before a configuration: %v", err)
	}
	mustApply(t, s, twoServices(nil, nil), "a")
	for _, c := range []struct {
		name    string
		service string
		m       split.Mirror
		want    string
	}{
		{"unknown service", "nope", split.Mirror{Version: "v2", Percent: 10}, "unknown service"},
		{"unknown version", "api", split.Mirror{Version: "v9", Percent: 10}, `mirror.version: unknown version "v9" (the service has v1, v2)`},
		{"percent over 100", "api", split.Mirror{Version: "v2", Percent: 10001}, "mirror.percent: must be between 0 and 100"},
		{"negative percent", "api", split.Mirror{Version: "v2", Percent: -1}, "mirror.percent"},
	} {
		t.Run(c.name, func(t *testing.T) {
			gen := s.Load().Generation
			_, err := s.SetMirror(t.Context(), c.service, c.m, "t")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
			if c.name == "unknown service" && !errors.Is(err, split.ErrUnknownService) {
				t.Errorf("%v does not wrap ErrUnknownService", err)
			}
			if s.Load().Generation != gen {
				t.Error("a refused mirror published a snapshot")
			}
		})
	}
}

// TestMirrorSurvivesOnlyTheSameFileMirror: a runtime mirror outlives a
// reload that leaves the file's mirror alone, and the file wins when it
// changes (or removes) it.
func TestMirrorSurvivesOnlyTheSameFileMirror(t *testing.T) {
	file := &split.Mirror{Version: "v2", Percent: 500}
	for _, c := range []struct {
		name   string
		reload *split.Mirror
		weight split.Weights
		keep   bool
	}{
		{"weights change, mirror unchanged", file, weights("v1", 5000, "v2", 5000), true},
		{"file mirror changed", &split.Mirror{Version: "v2", Percent: 700}, nil, false},
		{"file mirror removed", nil, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, logs := newStore(t, store.Options{})
			mustApply(t, s, withMirror(twoServices(nil, nil), file), "a")
			if _, err := s.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 10000}, "t"); err != nil {
				t.Fatal(err)
			}
			snap := mustApply(t, s, withMirror(twoServices(c.weight, nil), c.reload), "b")
			got := store.EffectiveMirror(snap, "api")
			if c.keep != (got != nil && got.Percent == 10000) {
				t.Fatalf("after the reload the mirror is %v (keep %v)", got, c.keep)
			}
			if !c.keep && (!c.reload.Equal(got) || !strings.Contains(logs.String(), "runtime mirror cleared by the configuration")) {
				t.Errorf("mirror %v, want the file's %v; logs:\n%s", got, c.reload, logs)
			}
		})
	}
	t.Run("the service removed", func(t *testing.T) {
		s, _ := newStore(t, store.Options{})
		mustApply(t, s, twoServices(nil, nil), "a")
		if _, err := s.SetMirror(t.Context(), "web", split.Mirror{Version: "b", Percent: 100}, "t"); err != nil {
			t.Fatal(err)
		}
		cfg := twoServices(nil, nil)
		cfg.Services = cfg.Services[:1]
		if snap := mustApply(t, s, cfg, "b"); snap.Mirrors != nil {
			t.Fatalf("Mirrors %v", snap.Mirrors)
		}
	})
}

func TestMirrorPersistsInTheStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, s, twoServices(nil, nil), "a")
	if _, err := s.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 1250}, "t"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"mirrors"`) || !strings.Contains(string(data), `"percent": 12.5`) {
		t.Fatalf("state file lacks the mirror:\n%s", data)
	}
	// A restart applies it again; another file's mirror would drop it.
	s2, _ := newStore(t, store.Options{StateFile: path})
	snap := mustApply(t, s2, twoServices(nil, nil), "a")
	if m := store.EffectiveMirror(snap, "api"); m == nil || m.Percent != 1250 {
		t.Fatalf("after a restart: %v", m)
	}
	s3, _ := newStore(t, store.Options{StateFile: path})
	snap = mustApply(t, s3, withMirror(twoServices(nil, nil), &split.Mirror{Version: "v2", Percent: 1}), "c")
	if m := store.EffectiveMirror(snap, "api"); m == nil || m.Percent != 1 {
		t.Fatalf("a file with another mirror: %v, want the file's", m)
	}
	// Clearing rewrites the file without it.
	s4, _ := newStore(t, store.Options{StateFile: filepath.Join(t.TempDir(), "s.json")})
	mustApply(t, s4, twoServices(nil, nil), "a")
	if _, err := s4.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 1}, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := s4.ClearMirror(t.Context(), "api", "t"); err != nil {
		t.Fatal(err)
	}
}

func TestApplySharedMirrors(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	cfg := withMirror(twoServices(nil, nil), &split.Mirror{Version: "v2", Percent: 100})
	snap, _, dropped, err := s.ApplySharedMirrors(cfg, "a", "etcd", store.Revisions{State: 7}, nil, map[string]store.MirrorOverride{
		"api": {Mirror: split.Mirror{Version: "v2", Percent: 5000}, Against: &split.Mirror{Version: "v2", Percent: 100}},
		"web": {Mirror: split.Mirror{Version: "b", Percent: 5000}, Against: &split.Mirror{Version: "b", Percent: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if m := store.EffectiveMirror(snap, "api"); m == nil || m.Percent != 5000 {
		t.Errorf("api mirror %v", m)
	}
	if m := store.EffectiveMirror(snap, "web"); m != nil || !strings.Contains(dropped["web"], "changed the service's mirror") {
		t.Errorf("web mirror %v, dropped %v", m, dropped)
	}
	if !store.MirrorsEqual(map[string]store.MirrorOverride{"x": {Mirror: split.Mirror{Version: "a"}}},
		map[string]store.MirrorOverride{"x": {Mirror: split.Mirror{Version: "a"}}}) {
		t.Error("MirrorsEqual")
	}
}
