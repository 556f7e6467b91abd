package fleet

import (
	"bytes"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/split"
)

// decodeOverride reads what encode writes.
func TestOverrideRecordRoundTrip(t *testing.T) {
	rec := overrideRecord{
		Weights: split.Weights{{Version: "v1", BasisPoints: 6667}, {Version: "v2", BasisPoints: 3333}},
		Against: split.Weights{{Version: "v1", BasisPoints: 8000}, {Version: "v2", BasisPoints: 2000}},
		SetAt:   time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Node: "pod-a", Actor: "token:abc",
	}
	data, err := rec.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeOverride(data)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Weights.Equal(rec.Weights) || !got.Against.Equal(rec.Against) || !got.SetAt.Equal(rec.SetAt) || got.Node != "pod-a" {
		t.Fatalf("got %+v", got)
	}
	for name, bad := range map[string]string{
		"not json":   `{`,
		"no weights": `{"against":{"v1":100}}`,
		"bad weight": `{"weights":{"v1":"x"}}`,
		"trailing":   `{"weights":{"v1":100}} {}`,
	} {
		if _, err := decodeOverride([]byte(bad)); err == nil {
			t.Errorf("%s: accepted %s", name, bad)
		}
	}
}

// Whatever is written into an override key (etcd accepts any bytes), the
// decoder returns a record or an error, and a record survives a round trip.
func FuzzDecodeOverride(f *testing.F) {
	f.Add([]byte(`{"weights":{"v1":50,"v2":50},"against":{"v1":80,"v2":20},"set_at":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"weights":{"a":33.33,"b":66.67}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decodeOverride(data)
		if err != nil {
			return
		}
		out, err := rec.encode()
		if err != nil {
			t.Fatalf("encode of a decoded record: %v", err)
		}
		again, err := decodeOverride(out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		out2, _ := again.encode()
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed %s into %s", out, out2)
		}
	})
}
