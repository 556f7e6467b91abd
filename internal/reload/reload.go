// Package reload keeps the routing configuration in step with its file.
//
// It does not use viper's WatchConfig (see docs/live-changes.md: it races,
// stops for good after a remove, exits the process when inotify is
// exhausted and cannot be stopped). Instead a Reloader watches the file's
// parent directory with fsnotify and treats any event there as "maybe
// changed", waits for a quiet period, then reads the file once, hashes it
// and, if the bytes differ from what is serving, parses and compiles them
// into a fresh table that the store swaps in atomically. A periodic
// stat-and-hash poll backs the watcher up (lost events, network file
// systems, a watcher that died or could not be created).
//
// Every reload, whether from the watcher, the poll, SIGHUP or POST
// /v1/reload, goes through Reload, one at a time. A file that cannot be
// read, parsed or compiled (an empty or half-written file included) never
// takes effect: the last good snapshot keeps serving and the error is
// logged, counted and recorded in the store until a later reload succeeds.
package reload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/settings"
	"github.com/trafficsplit/splitter/internal/store"
)

// Results of a reload, as counted by the reload metric.
const (
	ResultSuccess   = "success"
	ResultUnchanged = "unchanged"
	ResultError     = "error"
)

// ErrNoFile is returned by Reload when splitter runs on the built-in
// default configuration: there is nothing to re-read.
var ErrNoFile = errors.New("no configuration file to reload (running on the built-in default; pass --config)")

// Metrics receives one call per reload with its result.
type Metrics interface {
	ReloadResult(result string)
}

// Options configures a Reloader.
type Options struct {
	// Path is the configuration file as given by the operator. It is
	// re-resolved on every read, so symlink swaps are followed.
	Path    string
	Store   *store.Store
	Logger  *slog.Logger // nil: discard
	Metrics Metrics      // nil: none

	Debounce     time.Duration // quiet period after the last event; default 200ms
	PollInterval time.Duration // backstop check; default 30s

	// FileSettings are the process settings the file held at startup
	// (settings.FileSettings). A reload that finds them changed logs a
	// warning: they only apply at the next restart.
	FileSettings map[string]string

	// NewWatcher creates the file watcher; nil means fsnotify.NewWatcher.
	// When it fails the reloader runs on polling alone.
	NewWatcher func() (*fsnotify.Watcher, error)
}

// Reloader re-reads one configuration file into a store. Its methods are
// safe for concurrent use.
type Reloader struct {
	path         string
	store        *store.Store
	log          *slog.Logger
	metrics      Metrics
	debounce     time.Duration
	pollInterval time.Duration
	fileSettings map[string]string
	newWatcher   func() (*fsnotify.Watcher, error)

	// sem serialises reloads; a channel rather than a mutex so a waiting
	// caller can give up when its context ends.
	sem chan struct{}
	// lastFailed identifies the last failed read (hash, or the read error)
	// so the poll does not re-report the same broken file every interval.
	// Guarded by sem.
	lastFailed string
}

// New returns a Reloader; it does nothing until Run or Reload is called.
func New(opts Options) *Reloader {
	r := &Reloader{
		path:         opts.Path,
		store:        opts.Store,
		log:          opts.Logger,
		metrics:      opts.Metrics,
		debounce:     opts.Debounce,
		pollInterval: opts.PollInterval,
		fileSettings: opts.FileSettings,
		newWatcher:   opts.NewWatcher,
		sem:          make(chan struct{}, 1),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.debounce <= 0 {
		r.debounce = 200 * time.Millisecond
	}
	if r.pollInterval <= 0 {
		r.pollInterval = 30 * time.Second
	}
	if r.newWatcher == nil {
		r.newWatcher = fsnotify.NewWatcher
	}
	return r
}

// Reload re-reads the file now and applies it if its bytes changed. It
// returns ResultSuccess, ResultUnchanged or ResultError (with the error).
// Calls are serialised; a caller waiting for another reload to finish gives
// up when ctx ends.
func (r *Reloader) Reload(ctx context.Context) (string, error) {
	return r.reload(ctx, "request", false)
}

// reload is the single reload path. With quiet set (the poll), a file whose
// bytes are the ones serving, or the ones that already failed, is left
// alone: nothing is counted and nothing logged above debug.
func (r *Reloader) reload(ctx context.Context, trigger string, quiet bool) (string, error) {
	if r.path == "" {
		return ResultError, ErrNoFile
	}
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return ResultError, ctx.Err()
	}
	defer func() { <-r.sem }()

	result, counted, err := r.apply(trigger, quiet)
	if counted && r.metrics != nil {
		r.metrics.ReloadResult(result)
	}
	return result, err
}

// apply does one reload; r.sem is held. counted is false when a quiet
// check found nothing worth reporting.
func (r *Reloader) apply(trigger string, quiet bool) (result string, counted bool, err error) {
	cur := r.store.Load()
	loaded, readErr := config.ReadFile(r.path)
	if loaded == nil {
		// Not even read: missing, unreadable, a directory, a symlink loop.
		key := "read:" + readErr.Error()
		if quiet && key == r.lastFailed {
			r.log.Debug("poll: nothing new", "path", r.path)
			return ResultUnchanged, false, nil
		}
		return r.fail(key, trigger, readErr), true, readErr
	}
	if cur != nil && loaded.SHA256 == cur.SHA256 && cur.Source == r.path {
		if quiet {
			if msg, _ := r.store.LastReloadError(); msg == "" {
				r.log.Debug("poll: nothing new", "path", r.path)
				return ResultUnchanged, false, nil
			}
		}
		// The file holds what is serving, so a recorded error (say, from a
		// broken edit since reverted) no longer describes it.
		r.store.RecordReloadError(nil)
		r.lastFailed = ""
		r.log.Debug("configuration unchanged", "path", r.path, "sha256", loaded.SHA256, "trigger", trigger)
		return ResultUnchanged, true, nil
	}
	if quiet && loaded.SHA256 == r.lastFailed {
		r.log.Debug("poll: nothing new", "path", r.path)
		return ResultUnchanged, false, nil
	}
	err = readErr
	if len(bytes.TrimSpace(loaded.Bytes)) == 0 {
		// What a truncate-then-write looks like halfway; never apply it,
		// and say so plainly rather than "no services".
		err = fmt.Errorf("%s: file is empty", r.path)
	}
	if err != nil {
		return r.fail(loaded.SHA256, trigger, err), true, err
	}
	snap, err := r.store.ApplyFile(loaded.Config, loaded.SHA256, r.path)
	if err != nil {
		err = fmt.Errorf("%s: %w", r.path, err)
		return r.fail(loaded.SHA256, trigger, err), true, err
	}
	r.lastFailed = ""
	r.log.Info("configuration reloaded", "path", r.path, "sha256", snap.SHA256,
		"generation", snap.Generation, "trigger", trigger)
	r.warnProcessSettings(loaded.Bytes)
	return ResultSuccess, true, nil
}

func (r *Reloader) fail(key, trigger string, err error) string {
	r.lastFailed = key
	r.store.RecordReloadError(err)
	r.log.Error("configuration reload failed; the last good configuration keeps serving",
		"path", r.path, "trigger", trigger, "error", err)
	return ResultError
}

// warnProcessSettings tells the operator that process settings changed in
// the file do not apply until a restart. Values are not logged: one of the
// keys is the admin token.
func (r *Reloader) warnProcessSettings(data []byte) {
	now, err := settings.FileSettings(data)
	if err != nil {
		return
	}
	var changed []string
	for _, k := range settings.Keys() {
		if now[k] != r.fileSettings[k] {
			changed = append(changed, k)
		}
	}
	if len(changed) > 0 {
		r.log.Warn("process settings in the file differ from those at startup; they apply only after a restart",
			"keys", changed, "path", r.path)
	}
}

// Run watches and polls the file until ctx ends, then returns nil after
// releasing the watcher. With no file (built-in default) it just waits for
// ctx.
func (r *Reloader) Run(ctx context.Context) error {
	if r.path == "" {
		<-ctx.Done()
		return nil
	}
	w := r.startWatcher()
	defer func() {
		if w != nil {
			w.Close()
		}
	}()

	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	poll := time.NewTicker(r.pollInterval)
	defer poll.Stop()

	for {
		var events <-chan fsnotify.Event
		var errs <-chan error
		if w != nil {
			events, errs = w.Events, w.Errors
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				r.log.Warn("file watcher stopped; relying on polling", "path", r.path, "poll_interval", r.pollInterval)
				w.Close()
				w = nil
				continue
			}
			r.log.Debug("file event", "event", ev.String())
			// Every event in the directory may be the change: ConfigMap
			// swaps name ..data or a timestamped directory, not the file.
			debounce.Reset(r.debounce)
		case err, ok := <-errs:
			if !ok {
				continue // Events closes too; handled there
			}
			r.log.Warn("file watcher error; re-adding the watch", "path", r.path, "error", err)
			r.rewatch(w, true)
			// Events may have been lost (overflow): look at the file anyway.
			debounce.Reset(r.debounce)
		case <-debounce.C:
			r.reload(ctx, "watch", false)
			r.rewatch(w, false)
		case <-poll.C:
			if w == nil {
				w = r.startWatcher()
			} else {
				r.rewatch(w, false)
			}
			r.reload(ctx, "poll", true)
		}
	}
}

// startWatcher creates the watcher and adds the directories, or returns
// nil (polling only) if inotify is unavailable.
func (r *Reloader) startWatcher() *fsnotify.Watcher {
	w, err := r.newWatcher()
	if err != nil {
		r.log.Warn("cannot watch the configuration file; polling only", "path", r.path,
			"poll_interval", r.pollInterval, "error", err)
		return nil
	}
	r.rewatch(w, false)
	return w
}

// watchDirs are the directories whose events may mean a change: the
// parent of the path as given (file replaced, ConfigMap ..data swap) and
// the parent of the file it resolves to now (an edit through a symlink that
// points elsewhere).
func (r *Reloader) watchDirs() []string {
	abs, err := filepath.Abs(r.path)
	if err != nil {
		abs = r.path
	}
	dirs := []string{filepath.Dir(abs)}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		if d := filepath.Dir(real); d != dirs[0] {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// rewatch makes the watch list match watchDirs; with force it removes and
// re-adds every directory (after an error the kernel may have dropped
// them). A directory that cannot be added now (it is being replaced) is
// retried at the next poll.
func (r *Reloader) rewatch(w *fsnotify.Watcher, force bool) {
	if w == nil {
		return
	}
	want := r.watchDirs()
	have := w.WatchList()
	for _, d := range have {
		if force || !slices.Contains(want, d) {
			_ = w.Remove(d) // it may already be gone with its directory
		}
	}
	for _, d := range want {
		if !force && slices.Contains(have, d) {
			continue
		}
		if err := w.Add(d); err != nil {
			r.log.Warn("cannot watch directory; will retry", "dir", d, "error", err)
		}
	}
}
