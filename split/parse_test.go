package split_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

// processKeys are the top-level settings the serve adapter owns.
var processKeys = split.ParseOptions{ExtraKeys: []string{
	"grpc_addr", "admin_addr", "admin_token", "route_header", "reason_header", "state_file",
}}

// TestInvalidFixtures loads every testdata/invalid/*.yaml and expects the
// error named by its first line, "# want: <substring>", path included.
func TestInvalidFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("only %d invalid fixtures", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok || want == "" {
				t.Fatalf("first line must be \"# want: <error substring>\", got %q", first)
			}
			tb, err := split.Load(data, processKeys)
			if err == nil {
				t.Fatalf("loaded (%d services), want error containing %q", len(tb.Config().Services), want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, want)
			}
			if len(split.FieldErrors(err)) == 0 {
				t.Errorf("error %v carries no *FieldError", err)
			}
		})
	}
}

func TestValidFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/valid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no valid fixtures")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := split.Load(data, processKeys); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParseKeepsNamesOrderAndExactNumbers(t *testing.T) {
	data, err := os.ReadFile("testdata/valid/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := split.Parse(data, processKeys)
	if err != nil {
		t.Fatal(err)
	}
	checkout := cfg.Services[0]
	if checkout.Name != "Checkout" || checkout.Stable != "Stable" {
		t.Errorf("names lost their case: %q stable %q", checkout.Name, checkout.Stable)
	}
	wantW := split.Weights{{Version: "Stable", BasisPoints: 9995}, {Version: "Canary", BasisPoints: 5}}
	if diff := cmp.Diff(wantW, checkout.Weights); diff != "" {
		t.Errorf("weights (-want +got):\n%s", diff)
	}
	catalog := cfg.Services[1]
	wantW = split.Weights{{Version: "v1", BasisPoints: 3334}, {Version: "v2", BasisPoints: 3333}, {Version: "v3", BasisPoints: 3333}}
	if diff := cmp.Diff(wantW, catalog.Weights); diff != "" {
		t.Errorf("weights (-want +got):\n%s", diff)
	}
	exp := cfg.Experiments[0]
	wantW = split.Weights{{Version: "red", BasisPoints: 1000}, {Version: "green", BasisPoints: 4550}, {Version: "blue", BasisPoints: 4450}}
	if diff := cmp.Diff(wantW, exp.Variants); diff != "" {
		t.Errorf("variants (-want +got):\n%s", diff)
	}
	if c := checkout.Rules[0].When[1]; c.Query != "debug" || c.Exact == nil || *c.Exact != "on" || !c.IgnoreCase {
		t.Errorf("condition parsed as %+v", c)
	}
}

func TestParseDefaultYAMLIsDefault(t *testing.T) {
	cfg, err := split.Parse([]byte(split.DefaultYAML), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(split.Default(), cfg); diff != "" {
		t.Errorf("Parse(DefaultYAML) differs from Default() (-Default +Parse):\n%s", diff)
	}
	fromYAML, err := split.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	builtin, err := split.Compile(split.Default())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(builtin.Config(), fromYAML.Config()); diff != "" {
		t.Errorf("compiled configurations differ:\n%s", diff)
	}
	fixture, err := os.ReadFile("testdata/valid/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := split.Parse(fixture, split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(split.Default(), fromFile); diff != "" {
		t.Errorf("testdata/valid/default.yaml drifted from Default():\n%s", diff)
	}
}

func TestParseEmptyInputs(t *testing.T) {
	for name, in := range map[string]string{
		"empty":         "",
		"blank lines":   "\n\n  \n",
		"comments only": "# a\n# b\n",
		"null":          "null",
		"tilde":         "~",
		"separator":     "---\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := split.Parse([]byte(in), split.ParseOptions{})
			if err == nil || !strings.Contains(err.Error(), "no services") {
				t.Errorf("Parse(%q) = %v, want a \"no services\" error", in, err)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	in := `services:
  - name: api
    weights: {v1: "80", v2: 20.001}
    rules:
      - wehn: []
`
	_, err := split.Parse([]byte(in), split.ParseOptions{})
	got := split.FieldErrors(err)
	want := []split.FieldError{
		{Path: "services[0].weights.v1", Line: 3},
		{Path: "services[0].weights.v2", Line: 3},
		{Path: "services[0].rules[0].wehn", Line: 5},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d: %v", len(got), len(want), err)
	}
	for i := range want {
		if got[i].Path != want[i].Path || got[i].Line != want[i].Line {
			t.Errorf("error %d = %q line %d, want %q line %d", i, got[i].Path, got[i].Line, want[i].Path, want[i].Line)
		}
	}
}

func TestLoadPutsLinesOnCompileErrors(t *testing.T) {
	in := `services:
  - name: api
    weights: {v1: 80, v2: 20}
    rules:
      - name: r
        when:
          - {header: x, regex: "("}
        version: v2
`
	_, err := split.Load([]byte(in), split.ParseOptions{})
	var fe *split.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Load = %v, want a *FieldError", err)
	}
	if fe.Path != "services[0].rules[0].when[0].regex" || fe.Line != 7 {
		t.Errorf("got path %q line %d, want services[0].rules[0].when[0].regex line 7", fe.Path, fe.Line)
	}
	// Compile alone knows no lines.
	cfg, err := split.Parse([]byte(in), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = split.Compile(cfg)
	if errs := split.FieldErrors(err); len(errs) != 1 || errs[0].Line != 0 {
		t.Errorf("Compile errors = %v", err)
	}
}

func TestParseExtraKeysAreTopLevelOnly(t *testing.T) {
	in := "services:\n  - name: api\n    grpc_addr: x\n    weights: {v1: 100}\ngrpc_addr: 127.0.0.1:9001\n"
	_, err := split.Parse([]byte(in), processKeys)
	if err == nil || !strings.Contains(err.Error(), "services[0].grpc_addr: unknown key") {
		t.Errorf("got %v, want services[0].grpc_addr: unknown key", err)
	}
	_, err = split.Parse([]byte("grpc_addr: x\nservices: []\n"), split.ParseOptions{})
	if err == nil || !strings.Contains(err.Error(), "grpc_addr: unknown key") {
		t.Errorf("without ExtraKeys got %v, want grpc_addr: unknown key", err)
	}
}

// TestParseAliasBombIsCheap checks that an alias bomb is rejected without
// being expanded, by counting allocations (not time): expanding it would
// take about a billion.
func TestParseAliasBombIsCheap(t *testing.T) {
	var b strings.Builder
	b.WriteString("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	prev := "a"
	for _, name := range []string{"b", "c", "d", "e", "f", "g", "h", "i", "j"} {
		b.WriteString(name + ": &" + name + " [")
		for i := 0; i < 10; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*" + prev)
		}
		b.WriteString("]\n")
		prev = name
	}
	b.WriteString("services: *j\n")
	data := []byte(b.String())
	allocs := testing.AllocsPerRun(3, func() {
		if _, err := split.Parse(data, split.ParseOptions{}); err == nil {
			t.Error("alias bomb parsed")
		}
	})
	if allocs > 20000 {
		t.Errorf("parsing the alias bomb took %.0f allocations; it must not be expanded", allocs)
	}
}

func TestParseRejectsOversizedInput(t *testing.T) {
	data := make([]byte, split.MaxConfigBytes+1)
	for i := range data {
		data[i] = '#'
	}
	_, err := split.Parse(data, split.ParseOptions{})
	if err == nil || !strings.Contains(err.Error(), "more than the limit") {
		t.Errorf("got %v", err)
	}
}

func TestParsePercent(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "100", want: 10000},
		{in: "20", want: 2000},
		{in: "12.5", want: 1250},
		{in: "0.05", want: 5},
		{in: "0.07", want: 7},
		{in: "33.33", want: 3333},
		{in: "99.99", want: 9999},
		{in: "12.500", want: 1250},
		{in: "100.00", want: 10000},
		{in: " 7 ", want: 700},
		{in: "+5", want: 500},
		{in: "5.", want: 500},
		{in: ".5", want: 50},
		{in: "0.001", wantErr: "more than two decimals"},
		{in: "12.705", wantErr: "more than two decimals"},
		{in: "100.01", wantErr: "between 0 and 100"},
		{in: "101", wantErr: "between 0 and 100"},
		{in: "356", wantErr: "between 0 and 100"},
		{in: "4294967346", wantErr: "between 0 and 100"},
		{in: "-1", wantErr: "negative"},
		{in: "-0.5", wantErr: "negative"},
		{in: "NaN", wantErr: "NaN"},
		{in: ".nan", wantErr: "NaN"},
		{in: "-.inf", wantErr: "infinities"},
		{in: "Infinity", wantErr: "infinities"},
		{in: "1e2", wantErr: "plain decimal"},
		{in: "1E-2", wantErr: "plain decimal"},
		{in: "0x10", wantErr: "plain decimal"},
		{in: "1_0", wantErr: "plain decimal"},
		{in: "50%", wantErr: "plain decimal"},
		{in: "", wantErr: "must be a number"},
		{in: ".", wantErr: "plain decimal"},
		{in: "012", wantErr: "leading zeros"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := split.ParsePercent(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParsePercent(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParsePercent(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestFormatPercent(t *testing.T) {
	for bp, want := range map[int]string{0: "0", 5: "0.05", 50: "0.5", 1250: "12.5", 2000: "20", 3333: "33.33", 9995: "99.95", 10000: "100", -5: "-0.05"} {
		if got := split.FormatPercent(bp); got != want {
			t.Errorf("FormatPercent(%d) = %q, want %q", bp, got, want)
		}
		if bp >= 0 {
			if back, err := split.ParsePercent(want); err != nil || back != bp {
				t.Errorf("ParsePercent(FormatPercent(%d)) = %d, %v", bp, back, err)
			}
		}
	}
}
