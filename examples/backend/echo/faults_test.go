package echo_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/examples/backend/echo"
)

func TestFaults(t *testing.T) {
	var f echo.Faults
	h := f.Wrap(echo.Handler("v2"))
	get := func(path string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code
	}
	for _, tc := range []struct {
		percent   float64
		n, failed int
	}{{0, 100, 0}, {50, 100, 50}, {25, 100, 25}, {12.5, 80, 10}, {100, 10, 10}} {
		f.Set(tc.percent, false)
		failed := 0
		for range tc.n {
			if get("/") == http.StatusInternalServerError {
				failed++
			}
		}
		first, counted := f.FirstFailure()
		if failed != tc.failed || counted != tc.failed || (tc.failed > 0) == first.IsZero() {
			t.Errorf("%v%%: %d of %d failed (counted %d, first %v), want %d", tc.percent, failed, tc.n, counted, first, tc.failed)
		}
	}
	f.Set(100, false)
	if code := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz fails too: %d", code)
	}
}

// SetDelay slows every request but /healthz, and FirstSlow says when the
// first slowed one arrived.
func TestDelay(t *testing.T) {
	var f echo.Faults
	h := f.Wrap(echo.Handler("v2"))
	took := func(path string) time.Duration {
		start := time.Now()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
		return time.Since(start)
	}
	if !f.FirstSlow().IsZero() {
		t.Fatal("slow before any delay")
	}
	f.SetDelay(50 * time.Millisecond)
	before := time.Now()
	if d := took("/"); d < 50*time.Millisecond {
		t.Errorf("a delayed request took %v", d)
	}
	if first := f.FirstSlow(); first.Before(before) || first.IsZero() {
		t.Errorf("first slow %v", first)
	}
	if d := took("/healthz"); d >= 50*time.Millisecond {
		t.Errorf("/healthz delayed: %v", d)
	}
	f.SetDelay(0)
	if !f.FirstSlow().IsZero() {
		t.Error("FirstSlow not reset")
	}
}
