package admin_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/store"
)

func TestAuditRing(t *testing.T) {
	tests := []struct {
		name string
		size int
		log  func(l *slog.Logger)
		// want is every remembered event as "message key=value ...",
		// newest first.
		want []string
	}{
		{
			name: "newest first, the oldest forgotten beyond the size",
			size: 3,
			log: func(l *slog.Logger) {
				for i := range 5 {
					l.Info("admin mutation", "n", i)
				}
			},
			want: []string{"admin mutation n=4", "admin mutation n=3", "admin mutation n=2"},
		},
		{
			name: "the log marker is dropped, With attrs and groups are flattened in order",
			size: 5,
			log: func(l *slog.Logger) {
				l.With("log", "audit", "service", "api").WithGroup("g").Info("rollout transition", "to", "rolled_back", slog.Group("v", "canary_errors", 3))
			},
			want: []string{"rollout transition service=api g.to=rolled_back g.v.canary_errors=3"},
		},
		{
			name: "debug lines are not remembered",
			size: 5,
			log: func(l *slog.Logger) {
				l.Debug("noise")
				l.Warn("rollout transition", "to", "rolled_back")
			},
			want: []string{"rollout transition to=rolled_back"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			appended := 0
			ring := admin.NewAuditRing(tc.size, func() { appended++ })
			var logged bytes.Buffer
			tc.log(slog.New(ring.Tee(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))))
			var got []string
			for _, ev := range ring.Recent() {
				parts := []string{ev.Message}
				for _, a := range ev.Attrs {
					parts = append(parts, a.Key+"="+a.Value)
				}
				got = append(got, strings.Join(parts, " "))
				if ev.Time.IsZero() || ev.Level == "" {
					t.Errorf("event without time or level: %+v", ev)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("remembered (-want +got):\n%s", diff)
			}
			if appended < len(tc.want) {
				t.Errorf("onAppend called %d times for %d events", appended, len(tc.want))
			}
			// The log still gets every line, the marker included.
			if !strings.Contains(logged.String(), "msg=") {
				t.Errorf("the next handler got nothing: %q", logged.String())
			}
		})
	}
}

// TestAuditRingKeepsRefusalsApart: audit lines whose result is a refusal
// at the door (unauthorized, forbidden) go to a small ring of their own
// and a count, never into the changes, and do not call onAppend.
func TestAuditRingKeepsRefusalsApart(t *testing.T) {
	appended := 0
	ring := admin.NewAuditRing(3, func() { appended++ })
	l := slog.New(ring.Tee(slog.DiscardHandler)).With("log", "audit")
	l.Info("admin mutation", "n", 0, "result", "success")
	l.Warn("rollout transition", "n", 1, "to", "rolled_back")
	l.Info("admin mutation", "n", 2, "result", "rejected")
	for i := range 15 {
		result := "unauthorized"
		if i%5 == 4 {
			result = "forbidden"
		}
		l.Info("admin mutation", "n", 100+i, "result", result)
	}
	render := func(evs []admin.AuditEvent) []string {
		var out []string
		for _, ev := range evs {
			parts := []string{ev.Message}
			for _, a := range ev.Attrs {
				parts = append(parts, a.Key+"="+a.Value)
			}
			out = append(out, strings.Join(parts, " "))
		}
		return out
	}
	if diff := cmp.Diff([]string{
		"admin mutation n=2 result=rejected", "rollout transition n=1 to=rolled_back", "admin mutation n=0 result=success",
	}, render(ring.Recent())); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	n, recent := ring.Refusals()
	var want []string
	for i := 14; i >= 15-admin.RefusalEvents; i-- {
		result := "unauthorized"
		if i%5 == 4 {
			result = "forbidden"
		}
		want = append(want, fmt.Sprintf("admin mutation n=%d result=%s", 100+i, result))
	}
	if diff := cmp.Diff(want, render(recent)); diff != "" || n != 15 {
		t.Errorf("refusals: count %d, want 15; recent (-want +got):\n%s", n, diff)
	}
	if appended != 3 {
		t.Errorf("onAppend called %d times, want 3 (not for refusals)", appended)
	}
}

// TestAuditRingKeepsChangesTheLogDrops: with the log at warn, audit lines
// at info still reach the ring (the console shows them) but not the log.
func TestAuditRingKeepsChangesTheLogDrops(t *testing.T) {
	ring := admin.NewAuditRing(4, nil)
	var logged bytes.Buffer
	l := slog.New(ring.Tee(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn})))
	l.Info("admin mutation", "result", "success")
	if n := len(ring.Recent()); n != 1 {
		t.Errorf("ring holds %d events, want 1", n)
	}
	if logged.Len() != 0 {
		t.Errorf("the warn-level log got an info line: %q", logged.String())
	}
}

func TestAuditRingBoundsValues(t *testing.T) {
	ring := admin.NewAuditRing(1, nil)
	var attrs []any
	for i := range 40 {
		attrs = append(attrs, fmt.Sprintf("k%d", i), strings.Repeat("é", 1000))
	}
	slog.New(ring.Tee(slog.DiscardHandler)).Info("big", attrs...)
	ev := ring.Recent()[0]
	if len(ev.Attrs) > 24 {
		t.Errorf("%d attributes kept, want at most 24", len(ev.Attrs))
	}
	for _, a := range ev.Attrs {
		if len(a.Value) > 520 || !utf8.ValidString(a.Value) {
			t.Errorf("value of %d bytes (valid UTF-8: %v), want at most ~512 and valid", len(a.Value), utf8.ValidString(a.Value))
		}
	}
}

// TestAuditRingSeesMutations: the admin API's audit line for a mutation,
// accepted or refused, reaches the ring with its service and result; a
// refusal at the door goes to the refusals, not the changes.
func TestAuditRingSeesMutations(t *testing.T) {
	s, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyFile(testConfig(), "sha-1", "config.yaml"); err != nil {
		t.Fatal(err)
	}
	ring := admin.NewAuditRing(10, nil)
	h := admin.New(admin.Options{
		Store: s, Token: func() string { return "secret" },
		Audit: slog.New(ring.Tee(slog.DiscardHandler)).With("log", "audit"),
	})
	for _, auth := range []string{"", "Bearer secret"} {
		r := httptest.NewRequest(http.MethodPut, "/v1/services/api/canary", strings.NewReader(`{"percentage": 30}`))
		r.Header.Set("Content-Type", "application/json")
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	got := ring.Recent()
	if len(got) != 1 {
		t.Fatalf("ring holds %d changes, want 1: %+v", len(got), got)
	}
	attr := func(ev admin.AuditEvent, key string) string {
		for _, a := range ev.Attrs {
			if a.Key == key {
				return a.Value
			}
		}
		return ""
	}
	if attr(got[0], "result") != "success" || attr(got[0], "service") != "api" || !strings.Contains(attr(got[0], "new"), "30") {
		t.Errorf("newest event %+v", got[0])
	}
	n, refusals := ring.Refusals()
	if n != 1 || len(refusals) != 1 || attr(refusals[0], "result") != "unauthorized" {
		t.Errorf("refusals %d %+v, want the unauthorized attempt", n, refusals)
	}
}

// TestExtraRoutes: extra routes are served beside the API and counted.
func TestExtraRoutes(t *testing.T) {
	rec := &recorder{}
	h := admin.New(admin.Options{Recorder: rec, Extra: map[string]http.Handler{
		"GET /ui/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("page")) }),
	}})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/ui/", nil))
	if w.Code != 200 || w.Body.String() != "page" {
		t.Fatalf("GET /ui/: %d %q", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/ui/", strings.NewReader("{}"))
	r.Host = "127.0.0.1:9002" // a mutation method passes the door first
	h.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %d, want 405", w.Code)
	}
	if !cmp.Equal(rec.requests[:1], []string{"GET /ui/ OK"}) {
		t.Errorf("counted %v", rec.requests)
	}
}
