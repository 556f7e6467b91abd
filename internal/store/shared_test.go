package store_test

import (
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

func w(t *testing.T, s string) split.Weights {
	t.Helper()
	out, err := split.ParseWeightsJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ApplyShared applies exactly the overrides that still fit the
// configuration (same survival rule as the state file) and reports the
// others; an invalid configuration changes nothing.
func TestApplyShared(t *testing.T) {
	cfg := split.Default() // api: v1 80, v2 20
	tests := []struct {
		name        string
		overrides   map[string]store.Override
		wantAPI     string
		wantDropped string // substring of dropped["api"]; "" none
	}{
		{"none", nil, "v1: 80, v2: 20", ""},
		{"applies", map[string]store.Override{"api": {Weights: w(t, `{"v2": 40, "v1": 60}`), Against: w(t, `{"v1": 80, "v2": 20}`)}}, "v1: 60, v2: 40", ""},
		{"against in another order", map[string]store.Override{"api": {Weights: w(t, `{"v1": 60, "v2": 40}`), Against: w(t, `{"v2": 20, "v1": 80}`)}}, "v1: 60, v2: 40", ""},
		{"config changed the weights", map[string]store.Override{"api": {Weights: w(t, `{"v1": 60, "v2": 40}`), Against: w(t, `{"v1": 90, "v2": 10}`)}}, "v1: 80, v2: 20", "changed the service's weights"},
		{"against unknown", map[string]store.Override{"api": {Weights: w(t, `{"v1": 60, "v2": 40}`)}}, "v1: 80, v2: 20", "unknown"},
		{"unknown version", map[string]store.Override{"api": {Weights: w(t, `{"v1": 60, "v3": 40}`), Against: w(t, `{"v1": 80, "v2": 20}`)}}, "v1: 80, v2: 20", "v3"},
		{"sum", map[string]store.Override{"api": {Weights: w(t, `{"v1": 60, "v2": 30}`), Against: w(t, `{"v1": 80, "v2": 20}`)}}, "v1: 80, v2: 20", "not 100"},
		{"unknown service", map[string]store.Override{"gone": {Weights: w(t, `{"a": 100}`), Against: w(t, `{"a": 100}`)}}, "v1: 80, v2: 20", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.New(store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			snap, dropped, err := s.ApplyShared(cfg, "sha", "etcd /splitter/config", 7, tc.overrides)
			if err != nil {
				t.Fatal(err)
			}
			svc, _ := snap.Table.Service("api")
			if svc.Weights.String() != tc.wantAPI || snap.Revision != 7 {
				t.Fatalf("api = %s at revision %d, want %s", svc.Weights, snap.Revision, tc.wantAPI)
			}
			if got := dropped["api"]; (tc.wantDropped == "") != (got == "") || !strings.Contains(got, tc.wantDropped) {
				t.Fatalf("dropped[api] = %q, want %q", got, tc.wantDropped)
			}
			if tc.name == "unknown service" && dropped["gone"] == "" {
				t.Fatal("an override of an unknown service was not reported")
			}
			if _, ok := snap.Overrides["api"]; ok != (tc.wantAPI != "v1: 80, v2: 20") {
				t.Fatalf("overrides = %v", snap.Overrides)
			}
		})
	}
}

func TestApplySharedInvalidKeepsState(t *testing.T) {
	s, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ApplyShared(split.Default(), "good", "etcd", 3, nil); err != nil {
		t.Fatal(err)
	}
	bad := split.Default()
	bad.Services[0].Weights[0].BasisPoints = 9000 // sums to 110
	if _, _, err := s.ApplyShared(bad, "bad", "etcd", 4, nil); err == nil || !strings.Contains(err.Error(), "not 100") {
		t.Fatalf("err = %v", err)
	}
	if snap := s.Load(); snap.SHA256 != "good" || snap.Revision != 3 || snap.Generation != 1 {
		t.Fatalf("after a bad apply: %+v", snap)
	}
}
