package split_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

func TestWithWeights(t *testing.T) {
	base := mustLoad(t, `services:
  - name: api
    hosts: [api]
    weights: {v1: 80, v2: 20}
    rules: [{name: pin, when: [{header: x-pin, present: true}], version: v2}]
  - name: web
    hosts: [web]
    weights: {v1: 50, v2: 50}
`)
	t.Run("valid", func(t *testing.T) {
		next, err := base.WithWeights("api", weights("v1", 7000, "v2", 2000, "v3", 1000))
		if err != nil {
			t.Fatal(err)
		}
		s, _ := next.Service("api")
		if got := s.Weights.String(); got != "v1: 70, v2: 20, v3: 10" {
			t.Errorf("weights = %s", got)
		}
		if old, _ := base.Service("api"); old.Weights.String() != "v1: 80, v2: 20" {
			t.Errorf("the original table changed: %s", old.Weights)
		}
	})
	tests := []struct {
		name    string
		service string
		w       split.Weights
		want    string
		is      error
	}{
		{name: "unknown service", service: "nope", w: weights("v1", 10000), want: `unknown service "nope"`, is: split.ErrUnknownService},
		{name: "sum", service: "api", w: weights("v1", 7000, "v2", 2000), want: "weights: the versions' shares sum to 90, not 100"},
		{name: "range", service: "api", w: weights("v1", 10001, "v2", -1), want: "weights.v1: must be between 0 and 100"},
		{name: "empty name", service: "api", w: weights("v1", 10000, "", 0), want: "weights[1]: version name is empty"},
		{name: "duplicate", service: "api", w: weights("v1", 5000, "v1", 5000), want: "weights.v1: duplicate version"},
		{name: "case duplicate", service: "api", w: weights("v1", 5000, "V1", 5000), want: "weights.V1: version name differs only in case"},
		{name: "stable removed", service: "web", w: weights("v2", 10000), want: `stable: unknown version "v1"`},
		{name: "rule target removed", service: "api", w: weights("v1", 10000), want: `rules[0].version: unknown version "v2"`},
		{name: "empty", service: "api", w: nil, want: "weights: no versions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := base.WithWeights(tt.service, tt.w)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			if strings.Contains(err.Error(), "services[") {
				t.Errorf("paths should be relative to the service: %v", err)
			}
		})
	}
}

// TestWithWeightsCarriesCounters: the untouched service continues its
// round-robin sequence; the changed one starts afresh (largest first).
func TestWithWeightsCarriesCounters(t *testing.T) {
	base := mustLoad(t, `services:
  - name: api
    hosts: [api]
    weights: {v1: 50, v2: 50}
  - name: web
    hosts: [web]
    weights: {v1: 50, v2: 50}
`)
	api, web := split.Request{Authority: "api"}, split.Request{Authority: "web"}
	if d := decide(base, web); d.Version != "v1" {
		t.Fatalf("first web request -> %s", d.Version)
	}
	decide(base, api)
	next, err := base.WithWeights("api", weights("v1", 2500, "v2", 7500))
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(next, web); d.Version != "v2" {
		t.Errorf("web after WithWeights -> %s, want v2 (its sequence continues)", d.Version)
	}
	if d := decide(next, api); d.Version != "v2" {
		t.Errorf("api after WithWeights -> %s, want v2 (a fresh sequence starts with the largest)", d.Version)
	}
	// Same weights again: the service counts as untouched.
	same, err := next.WithWeights("api", weights("v1", 2500, "v2", 7500))
	if err != nil {
		t.Fatal(err)
	}
	// 25/75 runs v2 v1 v2 v2; one request was made, so v1 comes next.
	if d := decide(same, api); d.Version != "v1" {
		t.Errorf("api after a no-op WithWeights -> %s, want the continuing sequence (v1)", d.Version)
	}
	if d := decide(same, api); d.Version != "v2" {
		t.Errorf("api 3rd request -> %s, want v2", d.Version)
	}
}

func TestCompileNextAndLoadNext(t *testing.T) {
	yaml := "services:\n  - name: api\n    weights: {v1: 50, v2: 50}\n"
	prev := mustLoad(t, yaml)
	decide(prev, split.Request{})
	next, err := split.LoadNext(prev, []byte(yaml), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(next, split.Request{}); d.Version != "v2" {
		t.Errorf("reload with unchanged weights restarted the sequence: %s", d.Version)
	}
	changed, err := split.CompileNext(next, oneService(weights("v1", 5000, "v2", 5000)))
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(changed, split.Request{}); d.Version != "v1" {
		t.Errorf("a different service name (svc) must start afresh: %s", d.Version)
	}
}

func TestCanaryWeights(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: api
    hosts: [api]
    weights: {canary: 20, main: 80}
    stable: main
  - name: three
    hosts: [three]
    weights: {v1: 80, v2: 10, v3: 10}
`)
	w, err := tb.CanaryWeights("api", 5)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(weights("canary", 5, "main", 9995), w); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := tb.CanaryWeights("three", 5000); !errors.Is(err, split.ErrNotTwoVersions) {
		t.Errorf("three versions: %v", err)
	}
	if _, err := tb.CanaryWeights("nope", 5000); !errors.Is(err, split.ErrUnknownService) {
		t.Errorf("unknown: %v", err)
	}
	for _, bp := range []int{-1, 10001} {
		var fe *split.FieldError
		if _, err := tb.CanaryWeights("api", bp); !errors.As(err, &fe) || fe.Path != "percentage" {
			t.Errorf("CanaryWeights(%d) = %v", bp, err)
		}
	}
}

func TestAssign(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: api
    weights: {v1: 100}
experiments:
  - {name: first, key: {header: u}, variants: {X: 100}, header: x-first}
  - {name: default, key: {cookie: u}, variants: {A: 50, B: 50}, header: x-variant}
`)
	tests := []struct {
		experiment, key string
		want            string
		err             error
	}{
		{"", "user-123", "A", nil},
		{"default", "user-123", "A", nil},
		{"first", "user-123", "X", nil},
		{"nope", "user-123", "", split.ErrUnknownExperiment},
		{"", "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.experiment+"/"+tt.key, func(t *testing.T) {
			v, err := tb.Assign(tt.experiment, tt.key)
			switch {
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Errorf("err = %v, want %v", err, tt.err)
				}
			case tt.key == "":
				if err == nil {
					t.Errorf("empty key assigned %+v", v)
				}
			case err != nil || v.Variant != tt.want:
				t.Errorf("got %+v, %v; want %s", v, err, tt.want)
			}
		})
	}
	// Without a "default" experiment the first one is the default.
	tb = mustLoad(t, "services: [{name: api, weights: {v1: 100}}]\nexperiments: [{name: e, key: {header: u}, variants: {Z: 100}, header: x-e}]\n")
	if v, err := tb.Assign("", "k"); err != nil || v.Experiment != "e" {
		t.Errorf("got %+v, %v", v, err)
	}
	tb = mustLoad(t, "services: [{name: api, weights: {v1: 100}}]\n")
	if _, err := tb.Assign("", "k"); !errors.Is(err, split.ErrUnknownExperiment) {
		t.Errorf("no experiments: %v", err)
	}
}

func TestConfigAndServiceAreCopiesWithDefaults(t *testing.T) {
	tb := mustLoad(t, `services:
  - name: Api
    hosts: [API.example.com]
    weights: {V2: 30, V1: 70}
    sticky: {header: X-User}
    rules: [{when: [{header: X-Beta, exact: "Yes"}], version: V2}]
experiments:
  - {name: e, key: {header: X-User}, variants: {A: 100}, header: X-Variant}
`)
	s, ok := tb.Service("Api")
	if !ok {
		t.Fatal("service Api not found")
	}
	want := split.Service{
		Name: "Api", Hosts: []string{"api.example.com"}, Stable: "V2",
		Weights: weights("V2", 3000, "V1", 7000),
		Sticky:  &split.Key{Header: "x-user"},
		Rules:   []split.Rule{{Name: "rules[0]", When: []split.Condition{{Header: "x-beta", Exact: ptr("Yes")}}, Version: "V2"}},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("Service (-want +got):\n%s", diff)
	}
	if _, ok := tb.Service("api"); ok {
		t.Error("service names are matched exactly")
	}
	// Mutating copies does not reach the table.
	s.Weights[0].BasisPoints = 1
	*s.Rules[0].When[0].Exact = "changed"
	s.Sticky.Header = "changed"
	cfg := tb.Config()
	cfg.Services[0].Hosts[0] = "changed"
	cfg.Experiments[0].Variants[0].Version = "changed"
	again, _ := tb.Service("Api")
	if diff := cmp.Diff(want, again); diff != "" {
		t.Errorf("table changed through a copy:\n%s", diff)
	}
	if got := tb.Config().Experiments[0]; got.Variants[0].Version != "A" || got.Header != "x-variant" || got.Key.Header != "x-user" {
		t.Errorf("experiment = %+v", got)
	}
	if d := decide(tb, split.Request{Authority: "api.example.com", Headers: headers("x-beta", "Yes")}); d.Version != "V2" {
		t.Errorf("decision = %+v", d)
	}
}

func TestCompileErrors(t *testing.T) {
	many := func(n int, f func(i int) split.Service) []split.Service {
		out := make([]split.Service, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	ok := weights("v1", 10000)
	tests := []struct {
		name string
		cfg  *split.Config
		want string
	}{
		{name: "nil", cfg: nil, want: "services: no services"},
		{name: "too many services", cfg: &split.Config{Services: many(split.MaxServices+1, func(i int) split.Service {
			return split.Service{Name: fmt.Sprint("s", i), Hosts: []string{fmt.Sprint("h", i)}, Weights: ok}
		})}, want: "services: too many services (1001, at most 1000)"},
		{name: "too many rules", cfg: &split.Config{Services: []split.Service{{Name: "a", Weights: ok, Rules: make([]split.Rule, split.MaxRules+1)}}},
			want: "services[0].rules: too many rules (1001, at most 1000)"},
		{name: "too many conditions", cfg: &split.Config{Services: []split.Service{{Name: "a", Weights: ok, Rules: []split.Rule{{Version: "v1", When: make([]split.Condition, split.MaxConditions+1)}}}}},
			want: "services[0].rules[0].when: too many conditions (101, at most 100)"},
		{name: "too many versions", cfg: oneService(func() split.Weights {
			w := split.Weights{}
			for i := range split.MaxVersions + 1 {
				w = append(w, split.Weight{Version: fmt.Sprint("v", i)})
			}
			return w
		}()), want: "services[0].weights: too many versions (101, at most 100)"},
		{name: "long name", cfg: oneService(weights(strings.Repeat("v", 129), 10000)), want: "is longer than 128 characters"},
		{name: "negative programmatic weight", cfg: oneService(weights("v1", 10001, "v2", -1)), want: "services[0].weights.v2: must be between 0 and 100 (got -0.01)"},
		{name: "case duplicate versions", cfg: oneService(weights("v1", 5000, "V1", 5000)), want: `services[0].weights.V1: version name differs only in case from "v1"`},
		{name: "header name with colon inside", cfg: &split.Config{Services: []split.Service{{Name: "a", Weights: ok, Rules: []split.Rule{{Version: "v1", When: []split.Condition{{Header: "a:b", Present: true}}}}}}},
			want: `services[0].rules[0].when[0].header: header name "a:b" has characters`},
		{name: "query and header", cfg: &split.Config{Services: []split.Service{{Name: "a", Weights: ok, Rules: []split.Rule{{Version: "v1", When: []split.Condition{{Header: "a", Query: "q", Present: true}}}}}}},
			want: "services[0].rules[0].when[0]: has both header and query"},
		{name: "regex and contains", cfg: &split.Config{Services: []split.Service{{Name: "a", Weights: ok, Rules: []split.Rule{{Version: "v1", When: []split.Condition{{Header: "a", Contains: ptr("x"), Regex: ptr("x")}}}}}}},
			want: "services[0].rules[0].when[0]: has both contains and regex"},
		{name: "huge regex", cfg: &split.Config{Services: []split.Service{{Name: "a", Weights: ok, Rules: []split.Rule{{Version: "v1", When: []split.Condition{{Header: "a", Regex: ptr("(a{1000}){1000}")}}}}}}},
			want: "services[0].rules[0].when[0].regex: invalid regular expression"},
		{name: "rule name with newline", cfg: &split.Config{Services: []split.Service{{Name: "a", Weights: ok, Rules: []split.Rule{{Name: "a\nb", Version: "v1", When: []split.Condition{{Header: "a", Present: true}}}}}}},
			want: "services[0].rules[0].name: rule name \"a\\nb\" contains control"},
		{name: "wildcard without domain", cfg: &split.Config{Services: []split.Service{{Name: "a", Hosts: []string{"*."}, Weights: ok}}}, want: `services[0].hosts[0]: host "*.": a wildcard needs a domain`},
		{name: "two unnamed-host services", cfg: &split.Config{Services: []split.Service{{Name: "a", Weights: ok}, {Name: "b", Weights: ok}}}, want: `services[1].hosts[0]: a second service on "*"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := split.Compile(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v\nwant %q", err, tt.want)
			}
			for _, fe := range split.FieldErrors(err) {
				if fe.Reason == "" {
					t.Errorf("empty reason in %v", fe)
				}
			}
		})
	}
}

func TestCompileReportsAllProblems(t *testing.T) {
	cfg := &split.Config{Services: []split.Service{
		{Name: "a", Weights: weights("v1", 9000), Stable: "v9"},
		{Name: "a", Hosts: []string{"x"}, Weights: weights("v1", 10000), Rules: []split.Rule{{Version: "v2"}}},
	}}
	_, err := split.Compile(cfg)
	var paths []string
	for _, fe := range split.FieldErrors(err) {
		paths = append(paths, fe.Path)
	}
	want := []string{"services[0].weights", "services[0].stable", "services[1].rules[0].version", "services[1].rules[0].when", "services[1].name"}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s\n%v", diff, err)
	}
}

func TestWeightsJSON(t *testing.T) {
	for _, tt := range []struct {
		w    split.Weights
		want string
	}{
		{weights("v1", 8000, "v2", 2000), `{"v1":80,"v2":20}`},
		{weights("v1", 9995, "v2", 5), `{"v1":99.95,"v2":0.05}`},
		{weights("z", 1250, "a", 8750), `{"z":12.5,"a":87.5}`},
		{weights(`q"<`, 10000), `{"q\"\u003c":100}`},
		{split.Weights{}, `{}`},
	} {
		got, err := json.Marshal(tt.w)
		if err != nil || string(got) != tt.want {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tt.w, got, err, tt.want)
		}
		back, err := split.ParseWeightsJSON(got)
		if err != nil || !back.Equal(tt.w) {
			t.Errorf("ParseWeightsJSON(%s) = %v, %v", got, back, err)
		}
	}
	// Inside a struct (as the admin API and Explanation use it).
	got, _ := json.Marshal(struct {
		W split.Weights `json:"weights"`
	}{weights("b", 5000, "a", 5000)})
	if string(got) != `{"weights":{"b":50,"a":50}}` {
		t.Errorf("nested: %s", got)
	}
	var decoded struct{ W split.Weights }
	if err := json.Unmarshal([]byte(`{"W": {"v2": 0.05, "v1": 99.95}}`), &decoded); err != nil || decoded.W.String() != "v2: 0.05, v1: 99.95" {
		t.Errorf("Unmarshal: %v, %v", decoded.W, err)
	}
}

func TestParseWeightsJSONErrors(t *testing.T) {
	tests := []struct {
		in, path, want string
	}{
		{in: `{"v1": 80, "v1": 20}`, path: "v1", want: "duplicate version"},
		{in: `{"v1": 80, "V1": 20}`, path: "V1", want: `differs only in case from "v1"`},
		{in: `{"v1": "80"}`, path: "v1", want: "must be a number, not a string"},
		{in: `{"v1": null}`, path: "v1", want: "must be a number, not null"},
		{in: `{"v1": true}`, path: "v1", want: "must be a number, not a boolean"},
		{in: `{"v1": {"a": 1}}`, path: "v1", want: "must be a number, not an object"},
		{in: `{"v1": 12.345}`, path: "v1", want: "more than two decimals"},
		{in: `{"v1": 101}`, path: "v1", want: "between 0 and 100"},
		{in: `{"v1": 4294967346}`, path: "v1", want: "between 0 and 100"},
		{in: `{"v1": -1}`, path: "v1", want: "negative"},
		{in: `{"v1": 1e2}`, path: "v1", want: "plain decimal"},
		{in: `{"v1": NaN}`, want: "invalid character"},
		{in: `[80, 20]`, want: "must be a JSON object"},
		{in: `{"v1": 100} {}`, want: "unexpected data after"},
		{in: `{"v1": 100`, want: "EOF"},
		{in: ``, want: "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := split.ParseWeightsJSON([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if tt.path != "" {
				var fe *split.FieldError
				if !errors.As(err, &fe) || fe.Path != tt.path {
					t.Errorf("got %#v, want a *FieldError with Path %q", err, tt.path)
				}
			}
		})
	}
}
