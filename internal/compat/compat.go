// Package compat reads what other builds of splitter wrote: records in
// etcd, the state file, the cache file, the module's handover messages.
// During a rolling upgrade (or after a rollback) a newer build may have
// written fields this one does not know. They are ignored, and named once
// in the log, so the next upgrade never stops a replica on a record it
// could read; fields this build knows are still checked as strictly as
// before (a malformed value is an error). What people write (the
// configuration file, admin request bodies) stays strict: that is not
// read here (docs/upgrading.md).
package compat

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// DecodeObject decodes the one JSON object in data into v, a pointer to a
// struct, ignoring the fields v does not have, and returns their names
// (sorted; nil when there are none). A field v has with a value of the
// wrong type, anything after the object, or data that is not an object is
// an error.
func DecodeObject(data []byte, v any) (unknown []string, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	return Unknown(data, v), nil
}

// Unknown returns the top-level keys of the JSON object data that the
// struct v (or *v) does not have, sorted, matched as encoding/json matches
// them (by JSON name, case-insensitively); nil when there are none, or
// when data is not an object.
func Unknown(data []byte, v any) []string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil || len(obj) == 0 {
		return nil
	}
	known := fieldNames(reflect.TypeOf(v))
	var out []string
	for k := range obj {
		if !known[strings.ToLower(k)] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// names caches the JSON field names of struct types.
var names sync.Map // reflect.Type -> map[string]bool

// fieldNames is t's JSON field names, lower-cased (embedded structs'
// promoted fields included).
func fieldNames(t reflect.Type) map[string]bool {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return map[string]bool{}
	}
	if m, ok := names.Load(t); ok {
		return m.(map[string]bool)
	}
	m := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			for k := range fieldNames(f.Type) {
				m[k] = true
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[strings.ToLower(name)] = true
	}
	names.Store(t, m)
	return m
}

// maxNotes bounds what Notes remembers; past it, it starts over (a field
// is then logged once more).
const maxNotes = 4096

// Notes logs each record's unknown fields once: again only when the set
// of fields changes. The zero value is ready to use.
type Notes struct {
	mu   sync.Mutex
	seen map[string]string
}

// Note logs, at most once per where and set of fields, that the record at
// where (a key, a file) carries fields this build does not know. Nothing
// is logged for none.
func (n *Notes) Note(log *slog.Logger, what, where string, fields []string) {
	if len(fields) == 0 || log == nil {
		return
	}
	joined := strings.Join(fields, ",")
	n.mu.Lock()
	if n.seen == nil || len(n.seen) >= maxNotes {
		n.seen = map[string]string{}
	}
	if n.seen[where] == joined {
		n.mu.Unlock()
		return
	}
	n.seen[where] = joined
	n.mu.Unlock()
	log.Warn(what+" carries fields this version does not know (written by a newer splitter?); they are ignored",
		"at", where, "fields", fields)
}
