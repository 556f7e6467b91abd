package config

import (
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

func TestCheckHeaders(t *testing.T) {
	cases := []struct {
		name    string
		header  string
		file    string
		wantErr string
	}{
		{name: "distinct header", header: "x-variant"},
		{name: "route header", header: "x-route-version", wantErr: `experiments[0].header: "x-route-version" is the route header`},
		{name: "reason header", header: "x-route-reason", wantErr: `experiments[0].header: "x-route-reason" is the reason header`},
		{name: "file renames route header", header: "x-route-version", file: "route_header: x-version\n"},
		{name: "file route header clashes", header: "x-version", file: "route_header: x-version\n", wantErr: "is the route header"},
		{name: "reason header disabled", header: "x-route-reason", file: "reason_header: \"\"\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := split.Default()
			cfg.Experiments[0].Header = tc.header
			err := CheckFileHeaders(cfg, []byte(tc.file))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
