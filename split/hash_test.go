package split_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

var update = flag.Bool("update", false, "rewrite testdata/golden_assignments.txt")

func TestBucketVectors(t *testing.T) {
	// Independently computed FNV-1a-32 values (see doc.go for the Python).
	tests := []struct {
		name, key string
		want      int
	}{
		{"default", "user-123", 338}, // 1760370338
		{"api", "user-123", 1301},    // 4014441301
		{"api", "user-1", 5918},      // 216645918
		{"default", "user-1", 4949},  // 1889764949
		{"", "", 8253},               // 0x3f0cb86d = FNV-1a-32(":")
	}
	for _, tt := range tests {
		if got := split.Bucket(tt.name, tt.key); got != tt.want {
			t.Errorf("Bucket(%q, %q) = %d, want %d", tt.name, tt.key, got, tt.want)
		}
	}
}

func TestSeedAssignVariant(t *testing.T) {
	tb := mustCompile(t, split.Default())
	v, err := tb.Assign("", "user-123")
	if err != nil {
		t.Fatal(err)
	}
	if v.Variant != "A" || v.Bucket != 338 || v.Experiment != "default" || v.Header != "x-variant" {
		t.Errorf("assign_variant(user-123) = %+v, want A in bucket 338", v)
	}
}

// TestGoldenAssignments pins bucketing across processes and machines: the
// sticky version and the variant of 200 keys under the default table. Any
// change to the hash or the range layout fails here. Run with -update
// only for a deliberate, documented change.
func TestGoldenAssignments(t *testing.T) {
	tb := mustCompile(t, split.Default())
	var b bytes.Buffer
	b.WriteString("# name\tkey\tbucket\tversion or variant (split.Default(); regenerate with go test -run Golden -update)\n")
	for i := range 100 {
		key := fmt.Sprintf("user-%d", i)
		d := decide(tb, split.Request{Headers: headers("x-user-id", key)})
		fmt.Fprintf(&b, "api\t%s\t%d\t%s\n", key, d.Bucket, d.Version)
	}
	for i := range 100 {
		key := fmt.Sprintf("u%08x", uint32(i)*2654435761)
		v, err := tb.Assign("default", key)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "default\t%s\t%d\t%s\n", key, v.Bucket, v.Variant)
	}
	const file = "testdata/golden_assignments.txt"
	if *update {
		if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		gotLines, wantLines := bytes.Split(b.Bytes(), []byte("\n")), bytes.Split(want, []byte("\n"))
		for i := range min(len(gotLines), len(wantLines)) {
			if !bytes.Equal(gotLines[i], wantLines[i]) {
				t.Fatalf("assignments changed at line %d:\n got  %s\n want %s\nThe bucketing function is a compatibility contract: users would move.", i+1, gotLines[i], wantLines[i])
			}
		}
		t.Fatalf("assignments changed: %d lines, want %d", len(gotLines), len(wantLines))
	}
}
