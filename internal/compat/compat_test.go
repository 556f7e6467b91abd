package compat

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Promoted string `json:"promoted"`
}

type record struct {
	inner
	Weights map[string]int `json:"weights"`
	SetAt   time.Time      `json:"set_at"`
	Plain   string
	Skipped string `json:"-"`
}

func TestDecodeObject(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		unknown    []string
		err        string
	}{
		{name: "known only", data: `{"weights":{"v1":1},"set_at":"2026-01-02T03:04:05Z","plain":"x","promoted":"p"}`},
		{name: "case-insensitive like encoding/json", data: `{"Weights":{"v1":1},"PLAIN":"x"}`},
		{name: "newer fields are named", data: `{"weights":{"v1":1},"owner":"o","zone":{"a":1}}`, unknown: []string{"owner", "zone"}},
		{name: "a tag-skipped name is unknown", data: `{"-":1,"Skipped":"s","hidden":"h"}`, unknown: []string{"-", "Skipped", "hidden"}},
		{name: "a known field of the wrong type", data: `{"weights":"all","owner":"o"}`, err: "cannot unmarshal"},
		{name: "a malformed time", data: `{"set_at":"yesterday"}`, err: "cannot parse"},
		{name: "trailing data", data: `{"weights":{}} {}`, err: "trailing data"},
		{name: "not an object", data: `[1]`, err: "cannot unmarshal array"},
		{name: "truncated", data: `{"weights":`, err: "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r record
			unknown, err := DecodeObject([]byte(tc.data), &r)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(unknown, tc.unknown) {
				t.Fatalf("unknown = %q, want %q", unknown, tc.unknown)
			}
		})
	}
}

func TestNotesLogOncePerFieldSet(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var n Notes
	n.Note(log, "override record", "k1", nil)
	n.Note(log, "override record", "k1", []string{"owner"})
	n.Note(log, "override record", "k1", []string{"owner"})
	n.Note(log, "override record", "k2", []string{"owner"})
	n.Note(log, "override record", "k1", []string{"owner", "zone"})
	if got := strings.Count(buf.String(), "does not know"); got != 3 {
		t.Fatalf("%d lines, want 3 (once per key and field set):\n%s", got, buf.String())
	}
	if !strings.Contains(buf.String(), "fields=\"[owner zone]\"") {
		t.Fatalf("the fields are not named:\n%s", buf.String())
	}
}
