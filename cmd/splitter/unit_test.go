package main

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

func TestParseHeaderFlag(t *testing.T) {
	tests := []struct {
		name, in    string
		key, value  string
		wantErrText string
	}{
		{name: "plain", in: "X-Beta: true", key: "x-beta", value: "true"},
		{name: "no blank", in: "x-beta:true", key: "x-beta", value: "true"},
		{name: "colon in value", in: "x-url: http://a:8080/", key: "x-url", value: "http://a:8080/"},
		{name: "empty value", in: "x-empty:", key: "x-empty", value: ""},
		{name: "pseudo-header", in: ":authority: api.example.com", key: ":authority", value: "api.example.com"},
		{name: "no colon", in: "x-beta", wantErrText: `-H "x-beta": want 'name: value'`},
		{name: "empty name", in: ": v", wantErrText: "want 'name: value'"},
		{name: "blank in name", in: "x beta: v", wantErrText: "want 'name: value'"},
		{name: "empty", in: "", wantErrText: "want 'name: value'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, v, err := parseHeaderFlag(tc.in)
			if tc.wantErrText != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrText) || exitCode(err) != exitUsage {
					t.Errorf("parseHeaderFlag(%q) = %q, %q, %v; want usage error %q", tc.in, k, v, err, tc.wantErrText)
				}
				return
			}
			if err != nil || k != tc.key || v != tc.value {
				t.Errorf("parseHeaderFlag(%q) = %q, %q, %v; want %q, %q", tc.in, k, v, err, tc.key, tc.value)
			}
		})
	}
}

func TestExplainRequest(t *testing.T) {
	tests := []struct {
		name    string
		flags   explainFlags
		want    *split.Request
		wantErr string
	}{
		{
			name:  "headers and cookies",
			flags: explainFlags{path: "/a?b=c", method: "POST", headers: []string{"X-Beta: true"}, cookies: []string{"session=abc", " theme = dark"}},
			want: &split.Request{Path: "/a?b=c", Method: "POST", Headers: []split.Header{
				{Name: "x-beta", Value: "true"}, {Name: "cookie", Value: "session=abc; theme=dark"},
			}},
		},
		{
			name:  "host header stands for the authority",
			flags: explainFlags{headers: []string{"Host: web.example.com"}},
			want:  &split.Request{Authority: "web.example.com", Headers: []split.Header{{Name: "host", Value: "web.example.com"}}},
		},
		{
			name:  "authority flag wins over the host header",
			flags: explainFlags{authority: "api.example.com", headers: []string{"host: web.example.com"}},
			want:  &split.Request{Authority: "api.example.com", Headers: []split.Header{{Name: "host", Value: "web.example.com"}}},
		},
		{name: "cookie without =", flags: explainFlags{cookies: []string{"abc"}}, wantErr: `--cookie "abc": want name=value`},
		{name: "cookie with ;", flags: explainFlags{cookies: []string{"a=b; c=d"}}, wantErr: "want name=value"},
		{name: "bad header", flags: explainFlags{headers: []string{"nocolon"}}, wantErr: "want 'name: value'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := explainRequest(tc.flags)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || exitCode(err) != exitUsage {
					t.Errorf("explainRequest = %+v, %v; want usage error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{name: "plain error", err: errors.New("boom"), want: 1},
		{name: "usage error", err: usageErrorf("bad"), want: 2},
		{name: "wrapped usage error", err: fmt.Errorf("ctx: %w", usageErrorf("bad")), want: 2},
		{name: "explicit failure", err: &exitError{code: exitFailure, err: errors.New("1 of 2 files invalid")}, want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestPrintVersion(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		name    string
		version string
		info    *debug.BuildInfo
		want    string
	}{
		{name: "no build info", want: "splitter devel\ngo " + runtime.Version() + " " + platform + "\n"},
		{
			name:    "ldflags version wins",
			version: "v9.9.9",
			info:    &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.0.0"}},
			want:    "splitter v9.9.9\ngo go1.26.0 " + platform + "\n",
		},
		{
			name: "module version and revision",
			info: &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"},
			}},
			want: "splitter v1.2.3\ngo go1.26.0 " + platform + "\ncommit abc123 (modified)\n",
		},
		{
			name: "devel build",
			info: &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}},
			want: "splitter devel\ngo go1.26.0 " + platform + "\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := printVersion(&b, tc.version, tc.info); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("printVersion =\n%q\nwant\n%q", b.String(), tc.want)
			}
		})
	}
}
