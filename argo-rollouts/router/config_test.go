package router

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, raw string
		want      Config
		err       string // substring; "" for none
	}{
		{"minimal", `{"service": "api", "adminURL": "http://splitter:9002"}`, Config{Service: "api", AdminURL: "http://splitter:9002"}, ""},
		{"with token", `{"service": "api", "adminURL": "https://s.mesh:9002/", "tokenFile": "/t"}`, Config{Service: "api", AdminURL: "https://s.mesh:9002/", TokenFile: "/t"}, ""},
		{"missing", ``, Config{}, `plugins["trafficsplit/splitter"]: missing`},
		{"null", `null`, Config{}, "missing"},
		{"no service", `{"adminURL": "http://s:1"}`, Config{}, ".service: required"},
		{"no admin URL", `{"service": "api"}`, Config{}, ".adminURL: required"},
		{"not http", `{"service": "api", "adminURL": "tcp://s:1"}`, Config{}, "must be an http:// or https:// URL"},
		{"no host", `{"service": "api", "adminURL": "http:///v1"}`, Config{}, "with a host"},
		{"query", `{"service": "api", "adminURL": "http://s:1/?a=b"}`, Config{}, "query or fragment"},
		{"service with a slash", `{"service": "a/b", "adminURL": "http://s:1"}`, Config{}, "not a service name"},
		{"unknown field", `{"service": "api", "adminURL": "http://s:1", "canary": "v2"}`, Config{}, `unknown field "canary" (known: service, adminURL, tokenFile)`},
		{"wrong type", `{"service": 3, "adminURL": "http://s:1"}`, Config{}, ".service: must be a string"},
		{"trailing", `{"service": "api", "adminURL": "http://s:1"} {}`, Config{}, "unexpected data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.raw))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			case tc.err == "" && got != tc.want:
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestConditions(t *testing.T) {
	tests := []struct {
		name    string
		matches []HeaderMatch
		want    string // JSON
		err     string
	}{
		{"exact", []HeaderMatch{{Header: "X-Canary", Value: &StringMatch{Exact: "1"}}}, `[{"header":"X-Canary","exact":"1"}]`, ""},
		{"prefix and regex", []HeaderMatch{{Header: "a", Value: &StringMatch{Prefix: "p"}}, {Header: "b", Value: &StringMatch{Regex: "r.*"}}},
			`[{"header":"a","prefix":"p"},{"header":"b","regex":"r.*"}]`, ""},
		{"no value", []HeaderMatch{{Header: "a"}}, "", "match[0].headerValue: required"},
		{"empty value", []HeaderMatch{{Header: "a", Value: &StringMatch{}}}, "", "set one of exact, prefix, regex"},
		{"two operators", []HeaderMatch{{Header: "a", Value: &StringMatch{Exact: "1", Regex: "1"}}}, "", "set only one"},
		{"no header", []HeaderMatch{{Value: &StringMatch{Exact: "1"}}}, "", "match[0].headerName: required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := conditions(tc.matches)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			b, _ := json.Marshal(got)
			if err != nil || string(b) != tc.want {
				t.Fatalf("got %s (%v), want %s", b, err, tc.want)
			}
		})
	}
}

func TestWeights(t *testing.T) {
	tests := []struct {
		desired, max int32
		bp           int
		text         string
	}{
		{0, 100, 0, "0"}, {30, 100, 3000, "30"}, {100, 100, 10000, "100"},
		{1, 1000, 10, "0.1"}, {125, 1000, 1250, "12.5"}, {1, 3, 3333, "33.33"}, {2, 3, 6667, "66.67"},
	}
	for _, tc := range tests {
		bp, err := basisPoints(tc.desired, tc.max)
		if err != nil || bp != tc.bp || percentText(bp) != tc.text {
			t.Errorf("%d of %d: %d %q (%v), want %d %q", tc.desired, tc.max, bp, percentText(bp), err, tc.bp, tc.text)
		}
	}
	if _, err := basisPoints(101, 100); err == nil {
		t.Error("101 of 100: want an error")
	}
	if got := (Rollout{Namespace: "shop", Name: "api"}).Owner(); got != "argo-rollouts:shop/api" {
		t.Errorf("Owner = %q", got)
	}
}

// The token file is read on every call, so a rotated token is used at
// once; an empty file is an error rather than an anonymous call.
func TestTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	a := adminClient{tokenFile: path}
	if _, err := a.token(); err == nil || !strings.Contains(err.Error(), "tokenFile") {
		t.Fatalf("missing file: %v", err)
	}
	for _, tok := range []string{"first\n", "second"} {
		if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := a.token(); err != nil || got != strings.TrimSpace(tok) {
			t.Fatalf("token %q (%v), want %q", got, err, tok)
		}
	}
	if err := os.WriteFile(path, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.token(); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty file: %v", err)
	}
}
