package reload_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"

	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/reload"
	"github.com/trafficsplit/splitter/internal/settings"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// routing returns a valid configuration whose canary share is canary %.
func routing(canary int) string {
	return fmt.Sprintf(`services:
  - name: api
    hosts: ["*"]
    weights: {v1: %d, v2: %d}
    sticky: {header: x-user-id}
`, 100-canary, canary)
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// countingMetrics records reload results.
type countingMetrics struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *countingMetrics) ReloadResult(r string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == nil {
		m.n = map[string]int{}
	}
	m.n[r]++
}

func (m *countingMetrics) count(r string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[r]
}

// syncBuffer is a log sink safe for the reloader's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	path    string
	store   *store.Store
	metrics *countingMetrics
	logs    *syncBuffer
	rl      *reload.Reloader
}

type fixtureOpts struct {
	poll       time.Duration
	newWatcher func() (*fsnotify.Watcher, error)
	noRun      bool
}

// start loads path into a fresh store (as serve does) and runs a Reloader
// on it until the test ends.
func start(t *testing.T, path string, o fixtureOpts) *fixture {
	t.Helper()
	st, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := config.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApplyFile(l.Config, l.SHA256, path); err != nil {
		t.Fatal(err)
	}
	fs, err := settings.FileSettings(l.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if o.poll == 0 {
		o.poll = time.Hour // the watcher alone must do it
	}
	f := &fixture{path: path, store: st, metrics: &countingMetrics{}, logs: &syncBuffer{}}
	f.rl = reload.New(reload.Options{
		Path:         path,
		Store:        st,
		Logger:       slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:      f.metrics,
		Debounce:     20 * time.Millisecond,
		PollInterval: o.poll,
		FileSettings: fs,
		NewWatcher:   o.newWatcher,
	})
	if o.noRun {
		return f
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.rl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Run adds its watch asynchronously; an event before that would be
	// missed, so wait until the reloader has seen a probe file.
	if o.newWatcher == nil {
		probe := filepath.Join(filepath.Dir(path), ".probe")
		waitFor(t, "watcher to see a probe event", func() bool {
			if err := os.WriteFile(probe, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return strings.Contains(f.logs.String(), ".probe")
		})
		waitFor(t, "the probe's reload to settle", func() bool { return f.metrics.count(reload.ResultUnchanged) > 0 })
	}
	return f
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fixture) waitSHA(t *testing.T, content string) {
	t.Helper()
	want := sha(content)
	waitFor(t, "sha "+want[:8], func() bool { return f.store.Load().SHA256 == want })
}

func (f *fixture) waitError(t *testing.T) string {
	t.Helper()
	var msg string
	waitFor(t, "a recorded reload error", func() bool {
		msg, _ = f.store.LastReloadError()
		return msg != ""
	})
	return msg
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic replaces path through a rename, so no reader ever sees a
// half-written file.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	write(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newConfigFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "splitter.yaml")
	write(t, path, content)
	return path
}

func TestWatchedChanges(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path, content string)
	}{
		{
			name:   "rewrite in place",
			change: func(t *testing.T, path, content string) { write(t, path, content) },
		},
		{
			name: "write and rename",
			change: func(t *testing.T, path, content string) {
				tmp := path + ".tmp"
				write(t, tmp, content)
				if err := os.Rename(tmp, path); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "two-step write",
			change: func(t *testing.T, path, content string) {
				f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
				if err != nil {
					t.Fatal(err)
				}
				half := len(content) / 2
				if _, err := f.WriteString(content[:half]); err != nil {
					t.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteString(content[half:]); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := newConfigFile(t, routing(20))
			f := start(t, path, fixtureOpts{})
			gen := f.store.Load().Generation
			for i, canary := range []int{30, 40} {
				tc.change(t, path, routing(canary))
				f.waitSHA(t, routing(canary))
				if got, want := f.store.Load().Generation, gen+uint64(i)+1; got < want {
					t.Errorf("generation = %d, want >= %d", got, want)
				}
			}
			if msg, _ := f.store.LastReloadError(); msg != "" {
				t.Errorf("reload error recorded: %s", msg)
			}
		})
	}
}

// kubeletSwap updates a ConfigMap-style directory the way the kubelet's
// atomic writer does: a new timestamped directory, a ..data_tmp symlink to
// it renamed over ..data, then the old directory removed.
func kubeletSwap(t *testing.T, dir, stamp, content string) {
	t.Helper()
	ts := filepath.Join(dir, stamp)
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(ts, "config.yaml"), content)
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(stamp, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConfigMapSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	kubeletSwap(t, dir, "..2026_01_01_00_00_00.000000001", routing(20))
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
		t.Fatal(err)
	}
	f := start(t, path, fixtureOpts{})

	for i, canary := range []int{50, 5, 100} {
		kubeletSwap(t, dir, fmt.Sprintf("..2026_01_01_00_00_0%d.000000001", i+1), routing(canary))
		f.waitSHA(t, routing(canary))
	}
	if msg, _ := f.store.LastReloadError(); msg != "" {
		t.Errorf("reload error recorded: %s", msg)
	}
}

func TestRemoveAndRecreate(t *testing.T) {
	path := newConfigFile(t, routing(20))
	f := start(t, path, fixtureOpts{})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	msg := f.waitError(t)
	if !strings.Contains(msg, path) {
		t.Errorf("error %q does not name %s", msg, path)
	}
	if got := f.store.Load().SHA256; got != sha(routing(20)) {
		t.Errorf("serving sha %s after the file vanished, want the old one", got[:8])
	}
	write(t, path, routing(60))
	f.waitSHA(t, routing(60))
	if msg, _ := f.store.LastReloadError(); msg != "" {
		t.Errorf("error still recorded after recovery: %s", msg)
	}
	// The watch survived: a further edit is seen too.
	write(t, path, routing(70))
	f.waitSHA(t, routing(70))
}

func TestBadFileKeepsLastGood(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string // substring of the recorded error
	}{
		{name: "empty", content: "", want: "empty"},
		{name: "white space only", content: "\n  \n", want: "empty"},
		{name: "weights do not sum to 100", content: strings.Replace(routing(20), "v2: 20", "v2: 30", 1), want: "weights"},
		{name: "syntax error", content: "services: [\n", want: "splitter.yaml"},
		{name: "unknown key", content: routing(20) + "experimentz: []\n", want: "experimentz"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := newConfigFile(t, routing(20))
			f := start(t, path, fixtureOpts{})
			before := f.store.Load()

			writeAtomic(t, path, tc.content)
			msg := f.waitError(t)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("recorded error %q does not contain %q", msg, tc.want)
			}
			if got := f.store.Load(); got != before {
				t.Errorf("snapshot replaced (generation %d -> %d) by a bad file", before.Generation, got.Generation)
			}
			// The store records before the metric counts: wait for both.
			waitFor(t, "an error counted", func() bool { return f.metrics.count(reload.ResultError) > 0 })
			if f.metrics.count(reload.ResultSuccess) != 0 {
				t.Errorf("%d successes counted", f.metrics.count(reload.ResultSuccess))
			}

			// A later good file recovers and clears the error.
			write(t, path, routing(35))
			f.waitSHA(t, routing(35))
			if msg, _ := f.store.LastReloadError(); msg != "" {
				t.Errorf("error still recorded after recovery: %s", msg)
			}
		})
	}
}

func TestRevertedBadEditClearsError(t *testing.T) {
	path := newConfigFile(t, routing(20))
	f := start(t, path, fixtureOpts{noRun: true})
	ctx := t.Context()
	write(t, path, "services: []\n")
	if res, err := f.rl.Reload(ctx); res != reload.ResultError || err == nil {
		t.Fatalf("Reload = %s, %v; want error", res, err)
	}
	write(t, path, routing(20))
	res, err := f.rl.Reload(ctx)
	if res != reload.ResultUnchanged || err != nil {
		t.Fatalf("Reload = %s, %v; want unchanged", res, err)
	}
	if msg, _ := f.store.LastReloadError(); msg != "" {
		t.Errorf("error still recorded with the serving file back in place: %s", msg)
	}
}

func TestIdenticalRewriteIsUnchanged(t *testing.T) {
	path := newConfigFile(t, routing(20))
	f := start(t, path, fixtureOpts{})
	before := f.store.Load()
	unchanged := f.metrics.count(reload.ResultUnchanged)

	write(t, path, routing(20))
	waitFor(t, "an unchanged result", func() bool { return f.metrics.count(reload.ResultUnchanged) > unchanged })
	if now := time.Now(); os.Chtimes(path, now, now) != nil {
		t.Fatal("touch failed")
	}
	waitFor(t, "a second unchanged result", func() bool { return f.metrics.count(reload.ResultUnchanged) > unchanged+1 })
	if got := f.store.Load(); got != before {
		t.Errorf("snapshot replaced (generation %d -> %d)", before.Generation, got.Generation)
	}
	if n := f.metrics.count(reload.ResultSuccess); n != 0 {
		t.Errorf("%d successes counted for identical bytes", n)
	}
}

func TestBurstOfWrites(t *testing.T) {
	path := newConfigFile(t, routing(0))
	f := start(t, path, fixtureOpts{})
	const writes = 100
	for i := 1; i <= writes; i++ {
		write(t, path, routing(i))
	}
	f.waitSHA(t, routing(writes))
	// Debounced: far fewer reloads than writes (each write is two events).
	if n := f.metrics.count(reload.ResultSuccess); n >= writes/2 {
		t.Errorf("%d successful reloads for %d writes; debounce not effective", n, writes)
	}
	// Whatever half-written states were seen, none is serving.
	if got := f.store.Load().Table.Config().Services[0].Weights; got[1].BasisPoints != writes*100 {
		t.Errorf("serving weights %v, want the last write", got)
	}
}

func TestPollingOnlyWhenWatcherUnavailable(t *testing.T) {
	path := newConfigFile(t, routing(20))
	f := start(t, path, fixtureOpts{
		poll:       10 * time.Millisecond,
		newWatcher: func() (*fsnotify.Watcher, error) { return nil, errors.New("inotify: too many open files") },
	})
	writeAtomic(t, path, routing(45))
	f.waitSHA(t, routing(45))
	if !strings.Contains(f.logs.String(), "polling only") {
		t.Errorf("log does not say the reloader fell back to polling:\n%s", f.logs.String())
	}

	// The poll does not re-report a broken file it already reported.
	writeAtomic(t, path, "services: [\n")
	f.waitError(t)
	waitFor(t, "the error counted", func() bool { return f.metrics.count(reload.ResultError) > 0 })
	// Let several polls see the same broken file before fixing it.
	seen := strings.Count(f.logs.String(), "poll: nothing new")
	waitFor(t, "more polls", func() bool { return strings.Count(f.logs.String(), "poll: nothing new") >= seen+3 })
	writeAtomic(t, path, routing(46))
	f.waitSHA(t, routing(46))
	if n := f.metrics.count(reload.ResultError); n != 1 {
		t.Errorf("the same broken file was counted %d times", n)
	}
}

func TestReloadDirect(t *testing.T) {
	path := newConfigFile(t, routing(20))
	f := start(t, path, fixtureOpts{noRun: true})
	ctx := t.Context()
	steps := []struct {
		name    string
		content string
		want    string
	}{
		{name: "same bytes", content: routing(20), want: reload.ResultUnchanged},
		{name: "new weights", content: routing(25), want: reload.ResultSuccess},
		{name: "broken", content: "services:\n  - name: api\n", want: reload.ResultError},
		{name: "fixed", content: routing(30), want: reload.ResultSuccess},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			write(t, path, st.content)
			got, err := f.rl.Reload(ctx)
			if got != st.want {
				t.Errorf("Reload = %q (%v), want %q", got, err, st.want)
			}
			if (err != nil) != (st.want == reload.ResultError) {
				t.Errorf("err = %v for result %q", err, got)
			}
		})
	}
}

func TestReloadWithoutFile(t *testing.T) {
	st, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rl := reload.New(reload.Options{Store: st})
	if res, err := rl.Reload(t.Context()); res != reload.ResultError || !errors.Is(err, reload.ErrNoFile) {
		t.Errorf("Reload = %q, %v; want error ErrNoFile", res, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := rl.Run(ctx); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestChangedProcessSettingIsWarned(t *testing.T) {
	path := newConfigFile(t, "grpc_addr: 127.0.0.1:9001\nadmin_token: old-secret\n"+routing(20))
	f := start(t, path, fixtureOpts{})
	next := "grpc_addr: 127.0.0.1:9999\nadmin_token: new-secret\n" + routing(30)
	write(t, path, next)
	f.waitSHA(t, next)
	// The warning is logged right after the new snapshot is published, so
	// wait for it rather than read the log at once.
	warned := func() bool {
		logs := f.logs.String()
		return strings.Contains(logs, "restart") && strings.Contains(logs, "grpc_addr") && strings.Contains(logs, "admin_token")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !warned() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	logs := f.logs.String()
	if !warned() {
		t.Errorf("no restart warning naming grpc_addr and admin_token:\n%s", logs)
	}
	if strings.Contains(logs, "secret") {
		t.Errorf("the admin token leaked into the log:\n%s", logs)
	}
}

// Decisions keep flowing, each from one whole snapshot, while the file
// changes under them; run with -race.
func TestReloadDuringTraffic(t *testing.T) {
	path := newConfigFile(t, routing(20))
	f := start(t, path, fixtureOpts{})

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	bad := make(chan string, 1)
	for g := range 4 {
		wg.Go(func() {
			var d split.Decision
			req := split.Request{Authority: "api.example.com", Method: "GET", Path: "/",
				Headers: []split.Header{{Name: "x-user-id", Value: fmt.Sprintf("user-%d", g)}}}
			for ctx.Err() == nil {
				f.store.Table().Decide(&req, &d)
				if d.Version != "v1" && d.Version != "v2" {
					select {
					case bad <- d.Version:
					default:
					}
				}
			}
		})
	}
	for _, canary := range []int{30, 40, 50, 60} {
		write(t, path, routing(canary))
		f.waitSHA(t, routing(canary))
	}
	cancel()
	wg.Wait()
	select {
	case v := <-bad:
		t.Errorf("decision chose version %q", v)
	default:
	}
}

// BenchmarkReload measures one applied reload (read, hash, parse, compile,
// swap) without the debounce.
func BenchmarkReload(b *testing.B) {
	path := filepath.Join(b.TempDir(), "splitter.yaml")
	if err := os.WriteFile(path, []byte(routing(20)), 0o644); err != nil {
		b.Fatal(err)
	}
	st, err := store.New(store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	rl := reload.New(reload.Options{Path: path, Store: st})
	ctx := b.Context()
	i := 0
	for b.Loop() {
		i++
		b.StopTimer()
		if err := os.WriteFile(path, []byte(routing(i%100)), 0o644); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if res, err := rl.Reload(ctx); res == reload.ResultError {
			b.Fatal(err)
		}
	}
}
