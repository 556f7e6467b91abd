package fleet

import (
	"bytes"
	"encoding/json"
	"testing"
)

// Whatever is written into a mirror route key (etcd accepts any bytes),
// the decoder returns a record or an error; a record has conditions, a
// version and a percent from 0 to 100, and survives a round trip.
func FuzzDecodeMirrorRoute(f *testing.F) {
	f.Add([]byte(`{"when":[{"header":"x-canary","exact":"true"},{"request":"path","prefix":"/"}],"version":"canary","percent":50,"owner":"argo-rollouts:shop/api","set_at":"2026-01-02T03:04:05Z","node":"a","actor":"op"}`))
	f.Add([]byte(`{"when":[{"request":"method","regex":"P.*"}],"version":"v2","percent":0.05}`))
	f.Add([]byte(`{"when":[],"version":"v2","percent":10}`))
	f.Add([]byte(`{"when":[{"header":"x"}],"version":"v2","percent":100.01}`))
	f.Add([]byte(`{"when":[{"header":"x"}],"version":"v2","percent":1,"owner":"a b"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decodeMirrorRoute(data)
		if err != nil {
			return
		}
		if len(rec.When) == 0 || rec.Version == "" || rec.Percent < 0 || rec.Percent > 10000 {
			t.Fatalf("decoded an invalid record %+v", rec)
		}
		out, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("encode of a decoded record: %v", err)
		}
		again, err := decodeMirrorRoute(out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		out2, _ := json.Marshal(again)
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed %s into %s", out, out2)
		}
	})
}
