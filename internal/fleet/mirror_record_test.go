package fleet

import (
	"bytes"
	"encoding/json"
	"testing"
)

// Whatever is written into a mirror key (etcd accepts any bytes), the
// decoder returns a record or an error, and a record survives a round trip.
func FuzzDecodeMirror(f *testing.F) {
	f.Add([]byte(`{"mirror":{"version":"v2","percent":10},"against":null,"set_at":"2026-01-02T03:04:05Z","node":"a","actor":"op"}`))
	f.Add([]byte(`{"mirror":{"version":"v2","percent":0.05},"against":{"version":"v3","percent":100}}`))
	f.Add([]byte(`{"mirror":{"version":"","percent":10}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decodeMirror(data)
		if err != nil {
			return
		}
		out, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("encode of a decoded record: %v", err)
		}
		again, err := decodeMirror(out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		out2, _ := json.Marshal(again)
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed %s into %s", out, out2)
		}
	})
}
