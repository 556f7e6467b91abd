package store_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// TestExportStateHandsOver: what one store exports (ExportState) is the
// whole runtime state: another store started on it (InitialState) has
// the same overrides, runtime mirror, runtime route, mirror route and
// rollout states
// after the same configuration, and writes them to its own state file; a
// store that follows (ApplyState) gets them without writing anything. An
// override set against other file weights than the receiver's
// configuration has is dropped by the usual survival rule.
func TestExportStateHandsOver(t *testing.T) {
	from, _ := newStore(t, store.Options{})
	mustApply(t, from, twoServices(nil, nil), "a")
	if _, err := from.SetCanary(t.Context(), "api", 3500, "tester"); err != nil {
		t.Fatal(err)
	}
	if _, err := from.SetMirror(t.Context(), "api", split.Mirror{Version: "v2", Percent: 1000}, "tester"); err != nil {
		t.Fatal(err)
	}
	if _, err := from.SetWeights(t.Context(), "web", weights("a", 1000, "b", 9000), "tester"); err != nil {
		t.Fatal(err)
	}
	if err := from.SaveRollout("api", json.RawMessage(`{"phase":"paused"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := from.PutRoute(t.Context(), "api", route("canary", "x-canary", "1", "v2", "o"), "tester"); err != nil {
		t.Fatal(err)
	}
	if _, err := from.PutMirrorRoute(t.Context(), "api", mirrorRoute("dark", "x-dark", "1", "v2", 5000, "o"), "tester"); err != nil {
		t.Fatal(err)
	}
	doc, err := from.ExportState()
	if err != nil {
		t.Fatal(err)
	}

	stateFile := filepath.Join(t.TempDir(), "state.json")
	to, _ := newStore(t, store.Options{InitialState: doc, StateFile: stateFile})
	// web's file weights changed meanwhile: its override does not survive.
	snap := mustApply(t, to, twoServices(nil, weights("a", 6000, "b", 4000)), "a2")
	if got := effective(t, snap, "api"); !got.Equal(weights("v1", 6500, "v2", 3500)) {
		t.Errorf("api after the handover: %v", got)
	}
	if got := effective(t, snap, "web"); !got.Equal(weights("a", 6000, "b", 4000)) {
		t.Errorf("web after the handover (its file weights changed): %v", got)
	}
	if m := store.EffectiveMirror(snap, "api"); m == nil || m.Percent != 1000 {
		t.Errorf("api's runtime mirror after the handover: %v", m)
	}
	if r := compact(t, to.Rollouts()["api"]); r != `{"phase":"paused"}` {
		t.Errorf("api's rollout state after the handover: %s", r)
	}
	if rs := snap.Routes["api"]; len(rs) != 1 || rs[0].Name != "canary" || rs[0].Owner != "o" {
		t.Errorf("api's runtime routes after the handover: %+v", rs)
	}
	if rs := snap.MirrorRoutes["api"]; len(rs) != 1 || rs[0].Name != "dark" || rs[0].Owner != "o" || rs[0].Percent != 5000 {
		t.Errorf("api's mirror routes after the handover: %+v", rs)
	}
	// The receiver persists what it took over.
	again, _ := newStore(t, store.Options{StateFile: stateFile})
	snap = mustApply(t, again, twoServices(nil, weights("a", 6000, "b", 4000)), "a2")
	if got := effective(t, snap, "api"); !got.Equal(weights("v1", 6500, "v2", 3500)) {
		t.Errorf("api from the receiver's state file: %v", got)
	}

	// A follower applies the exported state on its configuration, writing
	// no state file of its own.
	followerFile := filepath.Join(t.TempDir(), "follower-state.json")
	follower, _ := newStore(t, store.Options{StateFile: followerFile})
	mustApply(t, follower, twoServices(nil, nil), "a")
	if err := follower.ApplyState(twoServices(nil, nil), "a", "test.yaml", doc); err != nil {
		t.Fatal(err)
	}
	snap = follower.Load()
	if got := effective(t, snap, "web"); !got.Equal(weights("a", 1000, "b", 9000)) {
		t.Errorf("web on the follower: %v", got)
	}
	if m := store.EffectiveMirror(snap, "api"); m == nil || m.Percent != 1000 {
		t.Errorf("api's mirror on the follower: %v", m)
	}
	if r := compact(t, follower.Rollouts()["api"]); r != `{"phase":"paused"}` {
		t.Errorf("api's rollout state on the follower: %s", r)
	}
	if rs := snap.Routes["api"]; len(rs) != 1 || rs[0].Name != "canary" {
		t.Errorf("api's runtime routes on the follower: %+v", rs)
	}
	if rs := snap.MirrorRoutes["api"]; len(rs) != 1 || rs[0].Name != "dark" {
		t.Errorf("api's mirror routes on the follower: %+v", rs)
	}
	if fresh, _ := newStore(t, store.Options{StateFile: followerFile}); len(fresh.Rollouts()) != 0 {
		t.Errorf("the follower wrote its state file: %v", fresh.Rollouts())
	}
}

func compact(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return b.String()
}
