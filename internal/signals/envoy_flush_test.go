package signals_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/signals"
)

// Envoy 1.40's answers to /config_dump?mask=bootstrap.stats_flush_on_admin,
// with the bootstrap this release renders and with an older one.
const (
	dumpFlushOn  = `{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump","bootstrap":{"stats_flush_on_admin":true}},{"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump"}]}`
	dumpFlushOff = `{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump","bootstrap":{}},{"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump"}]}`
)

// An Envoy whose bootstrap does not flush its statistics at admin reads
// (one rendered before this release) gives latency histograms up to its
// flush interval behind the counts: the first latency reading finds out
// (once), logs it once, and FlushWarning says it until Envoy flushes
// again. Counts and histograms are read all the same.
func TestLatencyWithoutFlushOnAdminIsReported(t *testing.T) {
	var flushes atomic.Bool
	var dumps atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/config_dump":
			dumps.Add(1)
			if r.URL.Query().Get("mask") != "bootstrap.stats_flush_on_admin" {
				http.Error(w, "unexpected mask", http.StatusBadRequest)
				return
			}
			if flushes.Load() {
				_, _ = w.Write([]byte(dumpFlushOn))
			} else {
				_, _ = w.Write([]byte(dumpFlushOff))
			}
		case "/stats":
			_, _ = w.Write([]byte(envoyJSON))
		}
	}))
	defer srv.Close()
	var logs bytes.Buffer
	src := signals.NewEnvoyAdmin(strings.TrimPrefix(srv.URL, "http://"), time.Second)
	src.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	targets := []signals.Target{{Service: "api", Version: "v1", Cluster: "v1"}, {Service: "api", Version: "v2", Cluster: "v2"}}
	out, lat := make([]signals.Counts, 2), make([]signals.Histogram, 2)
	for range 3 {
		if err := src.ReadLatency(t.Context(), targets, out, lat); err != nil {
			t.Fatal(err)
		}
	}
	if lat[0].Total() != 30 || out[0].Requests != 39 {
		t.Fatalf("the readings: %+v, %d timed", out, lat[0].Total())
	}
	w := src.FlushWarning()
	if !strings.Contains(w, "stats_flush_on_admin") || !strings.Contains(w, "docs/upgrading.md") {
		t.Fatalf("warning %q", w)
	}
	if n := strings.Count(logs.String(), "stats_flush_on_admin"); n != 1 || dumps.Load() != 1 {
		t.Fatalf("%d log lines and %d checks for three readings, want 1 and 1:\n%s", n, dumps.Load(), logs.String())
	}
	if on, err := src.FlushesOnAdmin(t.Context()); err != nil || on {
		t.Fatalf("FlushesOnAdmin: %v %v", on, err)
	}
	flushes.Store(true)
	if on, err := src.FlushesOnAdmin(t.Context()); err != nil || !on {
		t.Fatalf("FlushesOnAdmin with the bootstrap of this release: %v %v", on, err)
	}
}
