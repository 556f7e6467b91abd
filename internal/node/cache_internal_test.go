package node

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

func TestSplitCacheEvictsOldest(t *testing.T) {
	tables := make([]*split.Table, 5)
	for i := range tables {
		tables[i] = new(split.Table)
	}
	c := newSplitCache(3)
	for i := range 5 {
		c.put(fmt.Sprint(i), tables[i])
	}
	for i, want := range []bool{false, false, true, true, true} {
		got, ok := c.get(fmt.Sprint(i))
		if ok != want || (ok && got != tables[i]) {
			t.Errorf("get(%d) = %p, %v; want present=%v (table %p)", i, got, ok, want, tables[i])
		}
	}
	if len(c.tables) != 3 {
		t.Errorf("cache holds %d tables, want 3", len(c.tables))
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: "v1", want: `"v1"`},
		{name: "quotes and backslash", in: `a"b\c`, want: `"a\"b\\c"`},
		{name: "controls", in: "a\nb\rc\td\x00e\x1f", want: `"a\nb\rc\td\u0000e\u001f"`},
		{name: "html characters kept", in: "<a&b>", want: `"<a&b>"`},
		{name: "line separators escaped", in: "a\u2028b\u2029c", want: `"a\u2028b\u2029c"`},
		{name: "invalid UTF-8 replaced", in: "a\xffb", want: "\"a\ufffdb\""},
		{name: "non-ASCII kept", in: "é日本", want: `"é日本"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendString(nil, tc.in))
			if got != tc.want {
				t.Errorf("appendString(%q) = %s, want %s", tc.in, got, tc.want)
			}
			var back string
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Errorf("%s is not a JSON string: %v", got, err)
			}
		})
	}
}
