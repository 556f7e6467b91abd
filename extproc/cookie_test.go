package extproc

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/trafficsplit/splitter/adapter"
)

// cookieRecorder is a recorder that counts lost cookies too.
type cookieRecorder struct {
	*recorder
	mu   sync.Mutex
	lost int
}

func (r *cookieRecorder) CookieLost(api string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost++
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An Envoy whose ext_proc filter lacks allow_mode_override (a bootstrap
// rendered before sticky.assign) ends every assigned stream without the
// response headers its reply asked for: the cookie is never set. Each one
// is counted, and a run of them is reported once (a log line, the
// warning) until a cookie is set again; a stream ended early now and then
// (a client gone) does not make a run.
func TestAssignedCookieLostIsReported(t *testing.T) {
	tb := loadTable(t, assignConfig)
	rec := &cookieRecorder{recorder: newRecorder()}
	logs := &syncBuf{}
	s := New(fixedSource{tb}, Options{Headers: adapter.Headers{Route: routeHdr, Reason: reasonHdr},
		Recorder: rec, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	assigned := func(withResponse bool) {
		t.Helper()
		script := []step{{req: reqHeaders(raw(envoyHeaders()...))}}
		if withResponse {
			script = append(script, step{req: respHeaders(":status", "200")})
		}
		if err := s.Process(newFakeStream(t.Context(), script...)); err != nil {
			t.Fatal(err)
		}
	}
	// A bootstrap that allows it, with a client now and then gone before
	// its answer: nothing to report.
	for i := range 3 * cookieLostRun {
		assigned(i%4 != 0)
	}
	if w := s.CookieWarning(); w != "" {
		t.Fatalf("warning with cookies set: %s", w)
	}
	// The old bootstrap: every assigned stream ends after its request
	// headers.
	for range cookieLostRun - 1 {
		assigned(false)
	}
	if w := s.CookieWarning(); w != "" {
		t.Fatalf("warning before a full run: %s", w)
	}
	for range 5 {
		assigned(false)
	}
	w := s.CookieWarning()
	if !strings.Contains(w, "allow_mode_override: true") || !strings.Contains(w, "docs/upgrading.md") {
		t.Fatalf("warning %q does not say what to do", w)
	}
	if n := strings.Count(logs.String(), "allow_mode_override"); n != 1 {
		t.Fatalf("%d log lines about it, want 1:\n%s", n, logs.String())
	}
	if want := 3*cookieLostRun/4 + cookieLostRun + 4; rec.lost != want {
		t.Fatalf("%d lost cookies counted, want %d", rec.lost, want)
	}
	// Envoy's bootstrap upgraded: the next cookie set ends the warning.
	assigned(true)
	if w := s.CookieWarning(); w != "" || !strings.Contains(logs.String(), "their cookies are set") {
		t.Fatalf("warning after a cookie was set: %q\n%s", w, logs.String())
	}
}
