package node_test

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"testing"
)

// FuzzHandle checks that any line gets exactly one JSON object as reply,
// on one line, and that error replies carry a protocol code.
func FuzzHandle(f *testing.F) {
	for _, s := range []string{
		`{"type":"init","msg_id":1,"node_id":"n1","node_ids":["n1"]}`,
		`{"src":"c1","dest":"n1","body":{"type":"route","msg_id":1},"traffic_split":{"v1":80,"v2":20}}`,
		`{"type":"route","msg_id":2,"headers":{"x-beta":"true"},"user_id":"u"}`,
		`{"type":"update_canary","msg_id":3,"service":"api","percentage":50}`,
		`{"type":"assign_variant","msg_id":4,"user_id":"user-123"}`,
		`not json`,
	} {
		f.Add([]byte(s))
	}
	n := newNode(f, nil)
	f.Fuzz(func(t *testing.T, line []byte) {
		reply := n.Handle(line)
		if bytes.ContainsAny(reply, "\r\n") {
			t.Fatalf("reply spans lines: %q", reply)
		}
		dec := json.NewDecoder(bytes.NewReader(reply))
		var obj map[string]json.RawMessage
		if err := dec.Decode(&obj); err != nil || obj == nil {
			t.Fatalf("reply %q is not a JSON object: %v", reply, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			t.Fatalf("reply %q holds more than one JSON value", reply)
		}
		if raw, ok := obj["body"]; ok {
			obj = nil
			if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
				t.Fatalf("reply %q: body is not an object", reply)
			}
		}
		var typ string
		if err := json.Unmarshal(obj["type"], &typ); err != nil || typ == "" {
			t.Fatalf("reply %q has no type", reply)
		}
		if typ == "error" {
			var code int
			json.Unmarshal(obj["code"], &code)
			if !slices.Contains([]int{10, 12, 20, 22}, code) {
				t.Fatalf("reply %q: code %d is not a protocol code", reply, code)
			}
		}
	})
}
