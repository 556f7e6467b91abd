package module

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"github.com/trafficsplit/splitter/internal/settings"
)

// logHandler formats records as the settings say (log_format, log_level)
// and hands each line to Envoy's log at the record's level, so the
// module's lines appear among Envoy's own ([dynamic_modules]).
type logHandler struct {
	inner slog.Handler
	out   *lineWriter
}

// lineWriter receives the one Write of each formatted record.
type lineWriter struct {
	host  Host
	mu    sync.Mutex // one record at a time; level is the current record's
	level slog.Level
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.host.Log(w.level, strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// newLogHandler formats as s.NewLogger does, into Envoy's log.
func newLogHandler(host Host, s settings.Settings) slog.Handler {
	w := &lineWriter{host: host}
	return &logHandler{inner: s.NewLogger(w).Handler(), out: w}
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.level = r.Level
	return h.inner.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHandler{inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{inner: h.inner.WithGroup(name), out: h.out}
}
