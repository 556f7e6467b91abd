package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// fleetMutator stands in for the etcd write-through (package fleet, tested
// against a real etcd there): it applies to the local store and reports a
// commit revision, or fails as an unreachable etcd does.
type fleetMutator struct {
	st   *store.Store
	rev  int64
	fail error
	// notApplied: committed, not yet applied by this replica.
	notApplied bool
}

func (m *fleetMutator) SetWeights(ctx context.Context, service string, w split.Weights, actor string) (store.Change, error) {
	if m.fail != nil {
		return store.Change{}, m.fail
	}
	ch, err := m.st.SetWeights(ctx, service, w, actor)
	ch.Revision, ch.NotApplied = m.rev, m.notApplied
	return ch, err
}

func (m *fleetMutator) SetCanary(ctx context.Context, service string, bp int, actor string) (store.Change, error) {
	if m.fail != nil {
		return store.Change{}, m.fail
	}
	ch, err := m.st.SetCanary(ctx, service, bp, actor)
	ch.Revision, ch.NotApplied = m.rev, m.notApplied
	return ch, err
}

func (m *fleetMutator) ClearOverride(ctx context.Context, service string, actor string) (store.Change, error) {
	ch, err := m.st.ClearOverride(ctx, service, actor)
	ch.Revision, ch.NotApplied = m.rev, m.notApplied
	return ch, err
}

func TestFleetRoutes(t *testing.T) {
	type fleetStatus struct {
		NodeID    string `json:"node_id"`
		Connected bool   `json:"connected"`
	}
	newHandler := func(t *testing.T, m *fleetMutator, fleet func(context.Context) (any, error)) (http.Handler, *bytes.Buffer) {
		st, err := store.New(store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.ApplyShared(testConfig(), "sha-f", "etcd /splitter/config", 17, nil); err != nil {
			t.Fatal(err)
		}
		m.st = st
		audit := &bytes.Buffer{}
		opts := admin.Options{Store: st, Mutator: m, Audit: slog.New(slog.NewJSONHandler(audit, nil)), Fleet: fleet}
		if fleet != nil {
			opts.FleetStatus = func() any { return fleetStatus{NodeID: "pod-a", Connected: true} }
		}
		return admin.New(opts), audit
	}
	serve := func(h http.Handler, method, path, body string) (int, map[string]any) {
		e := &env{t: t, h: h, audit: &bytes.Buffer{}}
		w := e.do(req{method: method, path: path, body: body})
		return w.Code, decode(t, w)
	}

	t.Run("file mode: 404", func(t *testing.T) {
		h, _ := newHandler(t, &fleetMutator{}, nil)
		code, m := serve(h, http.MethodGet, "/v1/fleet", "")
		if code != http.StatusNotFound || m["error"] != "not in fleet mode: etcd_endpoints is not set" {
			t.Fatalf("%d %v", code, m)
		}
	})
	t.Run("fleet view", func(t *testing.T) {
		h, _ := newHandler(t, &fleetMutator{}, func(context.Context) (any, error) {
			return map[string]any{"revision": 99, "replicas": []string{"pod-a"}}, nil
		})
		code, m := serve(h, http.MethodGet, "/v1/fleet", "")
		if code != http.StatusOK || m["revision"] != float64(99) {
			t.Fatalf("%d %v", code, m)
		}
		code, m = serve(h, http.MethodGet, "/v1/services", "")
		cfg, _ := m["config"].(map[string]any)
		fl, _ := cfg["fleet"].(map[string]any)
		if code != http.StatusOK || cfg["revision"] != float64(17) || fl["node_id"] != "pod-a" || fl["connected"] != true {
			t.Fatalf("%d config %v", code, cfg)
		}
	})
	t.Run("etcd unreachable: 503", func(t *testing.T) {
		h, _ := newHandler(t, &fleetMutator{}, func(context.Context) (any, error) {
			return nil, fmt.Errorf("etcd: read: %w", store.ErrUnavailable)
		})
		if code, m := serve(h, http.MethodGet, "/v1/fleet", ""); code != http.StatusServiceUnavailable {
			t.Fatalf("%d %v", code, m)
		}
		h, _ = newHandler(t, &fleetMutator{fail: fmt.Errorf("etcd: not connected: %w", store.ErrUnavailable)}, nil)
		code, m := serve(h, http.MethodPut, "/v1/services/api/canary", `{"percentage": 30}`)
		if msg, _ := m["error"].(string); code != http.StatusServiceUnavailable || !strings.Contains(msg, "not connected") {
			t.Fatalf("%d %v", code, m)
		}
	})
	t.Run("revision in the answer and the audit line", func(t *testing.T) {
		h, audit := newHandler(t, &fleetMutator{rev: 42}, nil)
		code, m := serve(h, http.MethodPut, "/v1/services/api/canary", `{"percentage": 30}`)
		if code != http.StatusOK || m["revision"] != float64(42) || m["v2"] != float64(30) || m["service"] != "api" {
			t.Fatalf("%d %v", code, m)
		}
		if !bytes.Contains(audit.Bytes(), []byte(`"revision":42`)) {
			t.Fatalf("audit: %s", audit)
		}
	})
	t.Run("committed, not applied here: 202, applied false", func(t *testing.T) {
		h, _ := newHandler(t, &fleetMutator{rev: 43, notApplied: true}, nil)
		for _, c := range []struct{ method, path, body string }{
			{http.MethodPut, "/v1/services/api/canary", `{"percentage": 30}`},
			{http.MethodPut, "/v1/services/api/weights", `{"v1": 60, "v2": 40}`},
			{http.MethodDelete, "/v1/services/api/override", ""},
		} {
			code, m := serve(h, c.method, c.path, c.body)
			if code != http.StatusAccepted || m["applied"] != false || m["revision"] != float64(43) {
				t.Fatalf("%s %s: %d %v", c.method, c.path, code, m)
			}
		}
		h, _ = newHandler(t, &fleetMutator{rev: 44}, nil)
		if code, m := serve(h, http.MethodPut, "/v1/services/api/canary", `{"percentage": 30}`); code != http.StatusOK || m["applied"] != nil {
			t.Fatalf("applied: %d %v", code, m)
		}
	})
	t.Run("no revision in file mode", func(t *testing.T) {
		h, _ := newHandler(t, &fleetMutator{}, nil)
		_, m := serve(h, http.MethodPut, "/v1/services/api/canary", `{"percentage": 30}`)
		if _, ok := m["revision"]; ok {
			t.Fatalf("answer %v has a revision", m)
		}
	})
}
