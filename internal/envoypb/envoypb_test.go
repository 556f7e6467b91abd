package envoypb

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

func TestFromHeaders(t *testing.T) {
	for _, c := range []struct {
		name string
		hs   []*corev3.HeaderValue
		want split.Request
	}{
		{"nil list", nil, split.Request{Headers: []split.Header{}}},
		{"raw_value preferred, value fallback, names lower-cased", []*corev3.HeaderValue{
			{Key: ":authority", RawValue: []byte("api.example.com:8080")},
			{Key: ":path", Value: "/a?b=c"},
			{Key: ":method", RawValue: []byte("GET"), Value: "POST"},
			{Key: "X-User-Id", RawValue: []byte("\xff\x00u")},
		}, split.Request{
			Authority: "api.example.com:8080", Path: "/a?b=c", Method: "GET",
			Headers: []split.Header{
				{Name: ":authority", Value: "api.example.com:8080"},
				{Name: ":path", Value: "/a?b=c"},
				{Name: ":method", Value: "GET"},
				{Name: "x-user-id", Value: "\xff\x00u"},
			},
		}},
		{"host when no :authority", []*corev3.HeaderValue{
			{Key: "host", Value: "h.example.com"},
		}, split.Request{Authority: "h.example.com", Headers: []split.Header{{Name: "host", Value: "h.example.com"}}}},
		{":authority beats an earlier host; first one wins", []*corev3.HeaderValue{
			{Key: "host", Value: "h"}, {Key: ":authority", Value: "a1"}, {Key: ":authority", Value: "a2"},
		}, split.Request{Authority: "a1", Headers: []split.Header{
			{Name: "host", Value: "h"}, {Name: ":authority", Value: "a1"}, {Name: ":authority", Value: "a2"},
		}}},
		{"duplicates stay separate", []*corev3.HeaderValue{
			{Key: "cookie", Value: "a=1"}, {Key: "cookie", Value: "b=2"},
		}, split.Request{Headers: []split.Header{{Name: "cookie", Value: "a=1"}, {Name: "cookie", Value: "b=2"}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Start from a used request: nothing may leak from it.
			req := split.Request{Authority: "stale", Path: "/stale", Method: "PUT", Headers: []split.Header{{Name: "stale", Value: "x"}}}
			FromHeaders(&req, c.hs)
			if d := cmp.Diff(c.want, req); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func FuzzFromHeaders(f *testing.F) {
	f.Add(":authority", "a.example.com", []byte(nil), "host", "b", []byte("c"))
	f.Add("X-Beta", "", []byte("true"), ":path", "/x", []byte(nil))
	f.Fuzz(func(t *testing.T, k1, v1 string, r1 []byte, k2, v2 string, r2 []byte) {
		hs := []*corev3.HeaderValue{{Key: k1, Value: v1, RawValue: r1}, {Key: k2, Value: v2, RawValue: r2}}
		var req split.Request
		FromHeaders(&req, hs)
		if len(req.Headers) != 2 {
			t.Fatalf("got %d headers, want 2", len(req.Headers))
		}
		for i, h := range hs {
			want := h.Value
			if len(h.RawValue) > 0 {
				want = string(h.RawValue)
			}
			if req.Headers[i].Value != want {
				t.Errorf("header %d value %q, want %q", i, req.Headers[i].Value, want)
			}
		}
	})
}
