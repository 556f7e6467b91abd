package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

func weights(pairs ...any) split.Weights {
	var w split.Weights
	for i := 0; i < len(pairs); i += 2 {
		w = append(w, split.Weight{Version: pairs[i].(string), BasisPoints: pairs[i+1].(int)})
	}
	return w
}

// twoServices is api on "*" (v1 80 / v2 20) and web on web.example.com
// (a 50 / b 50), with the weights of either replaced when given.
func twoServices(api, web split.Weights) *split.Config {
	if api == nil {
		api = weights("v1", 8000, "v2", 2000)
	}
	if web == nil {
		web = weights("a", 5000, "b", 5000)
	}
	return &split.Config{Services: []split.Service{
		{Name: "api", Hosts: []string{"*"}, Weights: api},
		{Name: "web", Hosts: []string{"web.example.com"}, Weights: web},
	}}
}

// stateFileRefused checks that a store does not start from the state
// file doc, with an error naming the file and containing want.
func stateFileRefused(t *testing.T, doc, want string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := store.New(store.Options{StateFile: path})
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want an error naming %s and %q", err, path, want)
	}
}

func newStore(t *testing.T, opts store.Options) (*store.Store, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	}
	s, err := store.New(opts)
	if err != nil {
		t.Fatalf("store.New: %v", err)
	}
	return s, &logs
}

func mustApply(t *testing.T, s *store.Store, cfg *split.Config, sha string) *store.Snapshot {
	t.Helper()
	snap, err := s.ApplyFile(cfg, sha, "test.yaml")
	if err != nil {
		t.Fatalf("ApplyFile(%s): %v", sha, err)
	}
	return snap
}

func effective(t *testing.T, snap *store.Snapshot, service string) split.Weights {
	t.Helper()
	svc, ok := snap.Table.Service(service)
	if !ok {
		t.Fatalf("service %q not in table", service)
	}
	return svc.Weights
}

func TestLoadBeforeApply(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	if s.Load() != nil || s.Table() != nil {
		t.Fatal("Load/Table before the first ApplyFile: want nil")
	}
	var nilStore *store.Store
	if nilStore.Table() != nil || nilStore.Load() != nil {
		t.Fatal("nil store: want nil table and snapshot")
	}
	_, err := s.SetCanary(t.Context(), "api", 5000, "test")
	if !errors.Is(err, store.ErrNoConfig) {
		t.Fatalf("SetCanary before load: got %v, want ErrNoConfig", err)
	}
}

func TestGenerationAndSwaps(t *testing.T) {
	var swapped []uint64
	s, _ := newStore(t, store.Options{OnSwap: func(snap *store.Snapshot) { swapped = append(swapped, snap.Generation) }})

	first := mustApply(t, s, split.Default(), "sha-1")
	if first.Generation != 1 || s.Load() != first || first.Source != "test.yaml" || first.SHA256 != "sha-1" {
		t.Fatalf("first snapshot: %+v", first)
	}
	if _, err := s.SetCanary(t.Context(), "api", 5000, "test"); err != nil {
		t.Fatal(err)
	}
	if got := s.Load().Generation; got != 2 {
		t.Fatalf("generation after SetCanary = %d, want 2", got)
	}
	same := mustApply(t, s, split.Default(), "sha-1")
	if same.Generation != 2 || same != s.Load() {
		t.Fatalf("re-applying the same sha: generation %d, want the current snapshot (2)", same.Generation)
	}
	next := mustApply(t, s, split.Default(), "sha-2")
	if next.Generation != 3 {
		t.Fatalf("generation after a new file = %d, want 3", next.Generation)
	}
	if diff := cmp.Diff([]uint64{1, 2, 3}, swapped); diff != "" {
		t.Fatalf("OnSwap generations (-want +got):\n%s", diff)
	}
}

func TestApplyFileErrorChangesNothing(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	good := mustApply(t, s, split.Default(), "good")
	bad := twoServices(weights("v1", 8000, "v2", 1000), nil) // sums to 90
	if _, err := s.ApplyFile(bad, "bad", "test.yaml"); err == nil {
		t.Fatal("ApplyFile of an invalid config: want an error")
	}
	if s.Load() != good {
		t.Fatal("an invalid config replaced the snapshot")
	}
	if _, err := s.ApplyFile(nil, "nil", "test.yaml"); err == nil {
		t.Fatal("ApplyFile(nil): want an error")
	}
}

func TestReloadError(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s, _ := newStore(t, store.Options{Now: func() time.Time { return now }})
	mustApply(t, s, split.Default(), "a")
	s.RecordReloadError(errors.New("services[0].weights: sum is 90"))
	msg, at := s.LastReloadError()
	if msg != "services[0].weights: sum is 90" || !at.Equal(now) {
		t.Fatalf("LastReloadError = %q, %v", msg, at)
	}
	mustApply(t, s, split.Default(), "b")
	if msg, at := s.LastReloadError(); msg != "" || !at.IsZero() {
		t.Fatalf("after a successful ApplyFile: LastReloadError = %q, %v, want cleared", msg, at)
	}
	s.RecordReloadError(errors.New("x"))
	s.RecordReloadError(nil)
	if msg, _ := s.LastReloadError(); msg != "" {
		t.Fatalf("RecordReloadError(nil) did not clear: %q", msg)
	}
}

func TestOverrideSurvival(t *testing.T) {
	override := weights("v1", 5000, "v2", 5000)
	tests := []struct {
		name     string
		next     *split.Config
		wantKept bool
		wantLog  string
	}{
		{
			name:     "another service's weights change",
			next:     twoServices(nil, weights("a", 9000, "b", 1000)),
			wantKept: true,
		},
		{
			name:     "same weights in a reordered file",
			next:     twoServices(weights("v2", 2000, "v1", 8000), nil),
			wantKept: true,
		},
		{
			name:    "file changes the service's weights",
			next:    twoServices(weights("v1", 7000, "v2", 3000), nil),
			wantLog: "file changed the service's weights",
		},
		{
			name:    "file renames a version",
			next:    twoServices(weights("v1", 8000, "v3", 2000), nil),
			wantLog: "file changed the service's weights",
		},
		{
			name:    "file adds a version",
			next:    twoServices(weights("v1", 8000, "v2", 2000, "v3", 0), nil),
			wantLog: "file changed the service's weights",
		},
		{
			name: "file removes the service",
			next: &split.Config{Services: []split.Service{
				{Name: "web", Hosts: []string{"*"}, Weights: weights("a", 5000, "b", 5000)},
			}},
			wantLog: "service no longer in the file",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := newStore(t, store.Options{})
			mustApply(t, s, twoServices(nil, nil), "first")
			if _, err := s.SetWeights(t.Context(), "api", override, "tester"); err != nil {
				t.Fatal(err)
			}
			snap := mustApply(t, s, tc.next, "second")
			_, kept := snap.Overrides["api"]
			if kept != tc.wantKept {
				t.Fatalf("override kept = %v, want %v (overrides %v)", kept, tc.wantKept, snap.Overrides)
			}
			if tc.wantKept {
				// Kept in the file's declared order.
				file, _ := snap.FileService("api")
				if got := effective(t, snap, "api"); !got.Equal(split.InDeclaredOrder(override, file.Weights)) {
					t.Fatalf("effective api weights = %v, want the override %v in the file's order", got, override)
				}
				if strings.Contains(logs.String(), "override cleared") {
					t.Fatalf("kept override logged as cleared:\n%s", logs)
				}
				return
			}
			if svc, ok := snap.Table.Service("api"); ok {
				want, _ := snap.FileService("api")
				if !svc.Weights.Equal(want.Weights) {
					t.Fatalf("effective api weights = %v, want the file's %v", svc.Weights, want.Weights)
				}
			}
			if !strings.Contains(logs.String(), "override cleared by the configuration file") || !strings.Contains(logs.String(), tc.wantLog) {
				t.Fatalf("log does not say the override was cleared (%q):\n%s", tc.wantLog, logs)
			}
		})
	}
}

func TestOverrideSurvivesTwoReloads(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	mustApply(t, s, twoServices(nil, nil), "1")
	if _, err := s.SetCanary(t.Context(), "api", 3000, "tester"); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, twoServices(nil, weights("a", 1000, "b", 9000)), "2")
	snap := mustApply(t, s, twoServices(nil, weights("a", 2000, "b", 8000)), "3")
	if got, want := effective(t, snap, "api"), weights("v1", 7000, "v2", 3000); !got.Equal(want) {
		t.Fatalf("after two unrelated reloads api = %v, want %v", got, want)
	}
}

func TestMutations(t *testing.T) {
	threeVersions := &split.Config{Services: []split.Service{
		{Name: "api", Hosts: []string{"*"}, Weights: weights("v1", 8000, "v2", 2000)},
		{Name: "three", Hosts: []string{"three.example.com"}, Weights: weights("a", 5000, "b", 3000, "c", 2000)},
	}}
	tests := []struct {
		name    string
		do      func(ctx context.Context, s *store.Store) error
		wantErr error // errors.Is target; nil with wantMsg for other errors
		wantMsg string
	}{
		{
			name: "canary on an unknown service",
			do: func(ctx context.Context, s *store.Store) error {
				_, err := s.SetCanary(ctx, "nope", 5000, "t")
				return err
			},
			wantErr: split.ErrUnknownService,
		},
		{
			name: "canary on a three-version service",
			do: func(ctx context.Context, s *store.Store) error {
				_, err := s.SetCanary(ctx, "three", 5000, "t")
				return err
			},
			wantErr: split.ErrNotTwoVersions,
		},
		{
			name: "weights on an unknown service",
			do: func(ctx context.Context, s *store.Store) error {
				_, err := s.SetWeights(ctx, "nope", weights("v1", 10000), "t")
				return err
			},
			wantErr: split.ErrUnknownService,
		},
		{
			name: "weights that do not sum to 100",
			do: func(ctx context.Context, s *store.Store) error {
				_, err := s.SetWeights(ctx, "api", weights("v1", 5000, "v2", 4000), "t")
				return err
			},
			wantMsg: "api",
		},
		{
			name: "weights naming an unknown version",
			do: func(ctx context.Context, s *store.Store) error {
				_, err := s.SetWeights(ctx, "api", weights("v1", 5000, "v9", 5000), "t")
				return err
			},
			wantMsg: "weights.v9: unknown version",
		},
		{
			name: "weights missing a version",
			do: func(ctx context.Context, s *store.Store) error {
				_, err := s.SetWeights(ctx, "api", weights("v1", 10000), "t")
				return err
			},
			wantMsg: "weights.v2: missing",
		},
		{
			name: "clear on an unknown service",
			do: func(ctx context.Context, s *store.Store) error {
				_, err := s.ClearOverride(ctx, "nope", "t")
				return err
			},
			wantErr: split.ErrUnknownService,
		},
		{
			name: "canceled context",
			do: func(ctx context.Context, s *store.Store) error {
				ctx, cancel := context.WithCancel(ctx)
				cancel()
				_, err := s.SetWeights(ctx, "api", weights("v1", 5000, "v2", 5000), "t")
				return err
			},
			wantErr: context.Canceled,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newStore(t, store.Options{})
			before := mustApply(t, s, threeVersions, "x")
			err := tc.do(t.Context(), s)
			if err == nil {
				t.Fatal("want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not mention %q", err, tc.wantMsg)
			}
			if s.Load() != before {
				t.Fatal("a failed mutation changed the snapshot")
			}
		})
	}
}

func TestSetAndClearOverride(t *testing.T) {
	s, logs := newStore(t, store.Options{})
	mustApply(t, s, twoServices(nil, nil), "x")

	ch, err := s.SetCanary(t.Context(), "api", 5, "alice")
	w, snap := ch.New, ch.Snapshot
	if err != nil {
		t.Fatal(err)
	}
	if want := weights("v1", 9995, "v2", 5); !w.Equal(want) || !effective(t, snap, "api").Equal(want) {
		t.Fatalf("SetCanary 0.05%%: weights %v, effective %v, want %v", w, effective(t, snap, "api"), want)
	}
	if !strings.Contains(logs.String(), "actor=alice") {
		t.Fatalf("override not logged with its actor:\n%s", logs)
	}

	ch, err = s.ClearOverride(t.Context(), "api", "alice")
	snap = ch.Snapshot
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Overrides) != 0 || !effective(t, snap, "api").Equal(weights("v1", 8000, "v2", 2000)) {
		t.Fatalf("after ClearOverride: overrides %v, api %v", snap.Overrides, effective(t, snap, "api"))
	}
	again, err := s.ClearOverride(t.Context(), "api", "alice")
	if err != nil || again.Snapshot != snap {
		t.Fatalf("clearing a service without override: %v, same snapshot %v", err, again.Snapshot == snap)
	}
}

func TestSetWeightsCopiesInput(t *testing.T) {
	s, _ := newStore(t, store.Options{})
	mustApply(t, s, twoServices(nil, nil), "x")
	w := weights("v1", 6000, "v2", 4000)
	ch, err := s.SetWeights(t.Context(), "api", w, "t")
	if err != nil {
		t.Fatal(err)
	}
	snap := ch.Snapshot
	w[0].BasisPoints = 1
	if got := snap.Overrides["api"]; got[0].BasisPoints != 6000 {
		t.Fatalf("snapshot shares the caller's slice: %v", got)
	}
}

func readStateFile(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("state file is not JSON: %v\n%s", err, data)
	}
	return doc
}

func TestStateFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")

	s1, _ := newStore(t, store.Options{StateFile: path})
	mustApply(t, s1, twoServices(nil, nil), "sha-1")
	if _, err := s1.SetCanary(t.Context(), "api", 1250, "t"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Fatalf("state file mode %v, want 0600", mode)
	}
	doc := readStateFile(t, path)
	wantDoc := map[string]any{
		"file_sha256":  "sha-1",
		"overrides":    map[string]any{"api": map[string]any{"v1": 87.5, "v2": 12.5}},
		"file_weights": map[string]any{"api": map[string]any{"v1": 80.0, "v2": 20.0}},
	}
	if diff := cmp.Diff(wantDoc, doc); diff != "" {
		t.Fatalf("state file (-want +got):\n%s", diff)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left beside the state file: %v", entries)
	}

	t.Run("restart with an unchanged file keeps the override", func(t *testing.T) {
		s2, _ := newStore(t, store.Options{StateFile: path})
		snap := mustApply(t, s2, twoServices(nil, nil), "sha-1")
		if got, want := effective(t, snap, "api"), weights("v1", 8750, "v2", 1250); !got.Equal(want) {
			t.Fatalf("after restart api = %v, want %v", got, want)
		}
	})
	t.Run("restart with an edited file elsewhere keeps the override", func(t *testing.T) {
		s2, _ := newStore(t, store.Options{StateFile: path})
		snap := mustApply(t, s2, twoServices(nil, weights("a", 1000, "b", 9000)), "sha-2")
		if _, ok := snap.Overrides["api"]; !ok {
			t.Fatalf("override lost: %v", snap.Overrides)
		}
		if got := readStateFile(t, path)["file_sha256"]; got != "sha-2" {
			t.Fatalf("state file sha = %v, want sha-2", got)
		}
	})
	t.Run("restart with changed weights drops it from the state file", func(t *testing.T) {
		s2, logs := newStore(t, store.Options{StateFile: path})
		snap := mustApply(t, s2, twoServices(weights("v1", 5000, "v2", 5000), nil), "sha-3")
		if len(snap.Overrides) != 0 {
			t.Fatalf("override survived changed file weights: %v", snap.Overrides)
		}
		if !strings.Contains(logs.String(), "override cleared") {
			t.Fatalf("drop not logged:\n%s", logs)
		}
		if got := readStateFile(t, path)["overrides"]; len(got.(map[string]any)) != 0 {
			t.Fatalf("state file still has overrides: %v", got)
		}
	})
}

func TestStateFileWithoutFileWeights(t *testing.T) {
	tests := []struct {
		name     string
		sha      string
		wantKept bool
	}{
		{name: "file sha matches", sha: "sha-hand", wantKept: true},
		{name: "file sha differs", sha: "other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			doc := `{"overrides": {"api": {"v1": 50, "v2": 50}}, "file_sha256": "sha-hand"}`
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			s, _ := newStore(t, store.Options{StateFile: path})
			snap := mustApply(t, s, twoServices(nil, nil), tc.sha)
			if _, kept := snap.Overrides["api"]; kept != tc.wantKept {
				t.Fatalf("override kept = %v, want %v", kept, tc.wantKept)
			}
		})
	}
}

func TestStateFileCorrupt(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{name: "not JSON", content: "{overrides", want: "invalid character"},
		{name: "truncated", content: `{"overrides": {"api": {"v1": 50`, want: "unexpected EOF"},
		{name: "string weight", content: `{"overrides": {"api": {"v1": "50", "v2": 50}}}`, want: "overrides.api"},
		{name: "three decimals", content: `{"overrides": {"api": {"v1": 50.125, "v2": 49.875}}}`, want: "overrides.api"},
		{name: "bad file weights", content: `{"overrides": {}, "file_weights": {"api": []}}`, want: "file_weights.api"},
		{name: "trailing data", content: `{"overrides": {}} {}`, want: "trailing data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := store.New(store.Options{StateFile: path})
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %s and %q", err, path, tc.want)
			}
		})
	}
}

func TestStateFileUnwritable(t *testing.T) {
	// The state file's directory does not exist: the mutation fails and
	// nothing changes, since the override could not be persisted.
	path := filepath.Join(t.TempDir(), "missing", "state.json")
	s, _ := newStore(t, store.Options{StateFile: path})
	before := mustApply(t, s, twoServices(nil, nil), "x")
	_, err := s.SetCanary(t.Context(), "api", 5000, "t")
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("SetCanary with an unwritable state file: %v, want an error naming it", err)
	}
	if s.Load() != before {
		t.Fatal("snapshot changed although the state file was not written")
	}
}

func TestConcurrentMutationsAndReads(t *testing.T) {
	s, _ := newStore(t, store.Options{StateFile: filepath.Join(t.TempDir(), "state.json")})
	mustApply(t, s, twoServices(nil, nil), "x")

	const writers, perWriter = 4, 10
	stop := make(chan struct{})
	var readers sync.WaitGroup
	errs := make(chan error, 8)
	for range 2 {
		readers.Go(func() {
			var last uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				snap := s.Load()
				if snap.Generation < last {
					errs <- errors.New("generation went backwards")
					return
				}
				last = snap.Generation
				svc, _ := snap.Table.Service("api")
				if svc.Weights.Sum() != split.Buckets {
					errs <- errors.New("torn weights: " + svc.Weights.String())
					return
				}
				if s.Table() == nil {
					errs <- errors.New("nil table after load")
					return
				}
				runtime.Gosched() // let the writers run on a small machine
			}
		})
	}
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range perWriter {
				if _, err := s.SetCanary(t.Context(), "api", (i*perWriter+j)*100, "t"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, want := s.Load().Generation, uint64(1+writers*perWriter); got != want {
		t.Fatalf("generation = %d, want %d (one per mutation)", got, want)
	}
}

func TestApplyFileCheckRejects(t *testing.T) {
	check := func(c *split.Config) error {
		if len(c.Services) > 1 {
			return errors.New("services: only one allowed here")
		}
		return nil
	}
	s, _ := newStore(t, store.Options{Check: check})
	good := mustApply(t, s, split.Default(), "good")
	_, err := s.ApplyFile(twoServices(nil, nil), "two", "test.yaml")
	if err == nil || !strings.Contains(err.Error(), "only one allowed") {
		t.Fatalf("ApplyFile with a failing Check: err = %v", err)
	}
	if s.Load() != good {
		t.Fatal("a config rejected by Check replaced the snapshot")
	}
}
