package envoyhdr

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

func TestFromHeaderMap(t *testing.T) {
	for _, c := range []struct {
		name string
		hm   *corev3.HeaderMap
		want split.Request
	}{
		{"nil map", nil, split.Request{Headers: []split.Header{}}},
		{"raw_value preferred, value fallback, names lower-cased", &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":authority", RawValue: []byte("api.example.com:8080")},
			{Key: ":path", Value: "/a?b=c"},
			{Key: ":method", RawValue: []byte("GET"), Value: "POST"},
			{Key: "X-User-Id", RawValue: []byte("\xff\x00u")},
		}}, split.Request{
			Authority: "api.example.com:8080", Path: "/a?b=c", Method: "GET",
			Headers: []split.Header{
				{Name: ":authority", Value: "api.example.com:8080"},
				{Name: ":path", Value: "/a?b=c"},
				{Name: ":method", Value: "GET"},
				{Name: "x-user-id", Value: "\xff\x00u"},
			},
		}},
		{"host when no :authority", &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "host", Value: "h.example.com"},
		}}, split.Request{Authority: "h.example.com", Headers: []split.Header{{Name: "host", Value: "h.example.com"}}}},
		{":authority beats an earlier host; first one wins", &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "host", Value: "h"}, {Key: ":authority", Value: "a1"}, {Key: ":authority", Value: "a2"},
		}}, split.Request{Authority: "a1", Headers: []split.Header{
			{Name: "host", Value: "h"}, {Name: ":authority", Value: "a1"}, {Name: ":authority", Value: "a2"},
		}}},
		{"duplicates stay separate", &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "cookie", Value: "a=1"}, {Key: "cookie", Value: "b=2"},
		}}, split.Request{Headers: []split.Header{{Name: "cookie", Value: "a=1"}, {Name: "cookie", Value: "b=2"}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Start from a used request: nothing may leak from it.
			req := split.Request{Authority: "stale", Path: "/stale", Method: "PUT", Headers: []split.Header{{Name: "stale", Value: "x"}}}
			FromHeaderMap(&req, c.hm)
			if d := cmp.Diff(c.want, req); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestValidValueAndName(t *testing.T) {
	for _, c := range []struct {
		s           string
		value, name bool
	}{
		{"v2", true, true},
		{"x-route-version", true, true},
		{"", false, false},
		{"a b", true, false},
		{"v2\r\n", false, false},
		{"v\x00", false, false},
		{"X-Upper", true, false},
		{":path", true, false},
		{"\xff", true, false},
	} {
		t.Run(fmt.Sprintf("%q", c.s), func(t *testing.T) {
			if got := ValidValue(c.s); got != c.value {
				t.Errorf("ValidValue = %v, want %v", got, c.value)
			}
			if got := ValidName(c.s); got != c.name {
				t.Errorf("ValidName = %v, want %v", got, c.name)
			}
		})
	}
}

func TestAppendKeyDistinguishesFieldBoundaries(t *testing.T) {
	// Only Version and Reason are settable from outside split; the length
	// prefix must keep "ab"+reason apart from "a"+other bytes.
	a := AppendKey(nil, &split.Decision{Version: "ab", Reason: split.ReasonHeaderMatch})
	b := AppendKey(nil, &split.Decision{Version: "a", Reason: split.ReasonHeaderMatch})
	c := AppendKey(nil, &split.Decision{Version: "ab", Reason: split.ReasonStickyRouting})
	if string(a) == string(b) || string(a) == string(c) {
		t.Errorf("keys collide: %q %q %q", a, b, c)
	}
	if again := AppendKey(nil, &split.Decision{Version: "ab", Reason: split.ReasonHeaderMatch}); string(again) != string(a) {
		t.Errorf("key not deterministic: %q vs %q", again, a)
	}
}

func TestCache(t *testing.T) {
	t.Run("get put and reset when full", func(t *testing.T) {
		c := Cache[int]{Max: 3}
		if _, ok := c.Get([]byte("a")); ok {
			t.Fatal("empty cache hit")
		}
		for i, k := range []string{"a", "b", "c"} {
			c.Put([]byte(k), i)
		}
		if v, ok := c.Get([]byte("b")); !ok || v != 1 {
			t.Fatalf("Get(b) = %d, %v", v, ok)
		}
		c.Put([]byte("d"), 3) // full: starts over
		if c.Len() != 1 {
			t.Errorf("Len = %d after overflow, want 1", c.Len())
		}
		if v, ok := c.Get([]byte("d")); !ok || v != 3 {
			t.Errorf("Get(d) = %d, %v", v, ok)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		var c Cache[string]
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 200 {
					k := []byte(fmt.Sprint(i % 50))
					if v, ok := c.Get(k); ok && v != string(k) {
						t.Errorf("worker %d: Get(%s) = %s", w, k, v)
						return
					}
					c.Put(k, string(k))
				}
			})
		}
		wg.Wait()
		if c.Len() != 50 {
			t.Errorf("Len = %d, want 50", c.Len())
		}
	})
}

func TestPoolClearsScratch(t *testing.T) {
	var p Pool
	s := p.Get()
	s.Req.Headers = append(s.Req.Headers, split.Header{Name: "a", Value: "b"})
	s.Req.Authority = "x"
	s.Key = append(s.Key, 1)
	p.Put(s)
	// The pool may or may not hand back the same value; either way it is clean.
	s = p.Get()
	if len(s.Req.Headers) != 0 || s.Req.Authority != "" || len(s.Key) != 0 || s.Dec.Version != "" {
		t.Errorf("scratch not cleared: %+v", s)
	}
}

func FuzzFromHeaderMap(f *testing.F) {
	f.Add(":authority", "a.example.com", []byte(nil), "host", "b", []byte("c"))
	f.Add("X-Beta", "", []byte("true"), ":path", "/x", []byte(nil))
	f.Fuzz(func(t *testing.T, k1, v1 string, r1 []byte, k2, v2 string, r2 []byte) {
		hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: k1, Value: v1, RawValue: r1}, {Key: k2, Value: v2, RawValue: r2},
		}}
		var req split.Request
		FromHeaderMap(&req, hm)
		if len(req.Headers) != 2 {
			t.Fatalf("got %d headers, want 2", len(req.Headers))
		}
		for i, h := range hm.Headers {
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

func TestCheckHeaderNames(t *testing.T) {
	for _, c := range []struct {
		name, route, reason, wantRoute, wantReason string
	}{
		{"defaults", "", "", DefaultRouteHeader, ""},
		{"custom", "x-version", "x-why", "x-version", "x-why"},
		{"invalid route falls back", "X Bad", "x-why", DefaultRouteHeader, "x-why"},
		{"invalid reason disabled", "x-version", "x-why\r\n", "x-version", ""},
		{"reason equal to route disabled", "x-version", "x-version", "x-version", ""},
		{"pseudo-header refused", ":path", "", DefaultRouteHeader, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			route, reason := HeaderNames(slog.New(slog.DiscardHandler), c.route, c.reason)
			if diff := cmp.Diff([2]string{c.wantRoute, c.wantReason}, [2]string{route, reason}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
