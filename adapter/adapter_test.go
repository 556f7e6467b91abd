package adapter_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/split"
)

func TestNewHeaders(t *testing.T) {
	for _, c := range []struct {
		name, route, reason string
		want                adapter.Headers
		wantErr             string
	}{
		{name: "defaults", route: "x-route-version", reason: "x-route-reason", want: adapter.DefaultHeaders()},
		{name: "reason disabled", route: "x-version", want: adapter.Headers{Route: "x-version", Mirror: "x-mirror-version"}},
		{name: "upper case is lower-cased", route: "X-Version", reason: "X-Why", want: adapter.Headers{Route: "x-version", Reason: "x-why", Mirror: "x-mirror-version"}},
		{name: "route is the mirror header", route: "x-mirror-version", wantErr: "mirror_header: must differ from route_header"},
		{name: "empty route", reason: "x-why", wantErr: "route_header: must not be empty"},
		{name: "bad route", route: "x bad", wantErr: "route_header: \"x bad\" is not a valid header name"},
		{name: "pseudo-header", route: ":path", wantErr: "route_header"},
		{name: "bad reason", route: "x-v", reason: "x-why\r\n", wantErr: "reason_header"},
		{name: "reason equals route in another case", route: "x-v", reason: "X-V", wantErr: "reason_header: must differ from route_header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := adapter.NewHeaders(c.route, c.reason)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestWithMirror(t *testing.T) {
	h := adapter.DefaultHeaders()
	for _, c := range []struct {
		name, mirror, want, wantErr string
	}{
		{name: "lower-cased", mirror: "X-Shadow", want: "x-shadow"},
		{name: "empty", mirror: "", wantErr: "mirror_header: must not be empty"},
		{name: "bad", mirror: "x shadow", wantErr: "mirror_header: \"x shadow\" is not a valid header name"},
		{name: "route header", mirror: "X-Route-Version", wantErr: "mirror_header: must differ from route_header"},
		{name: "reason header", mirror: "x-route-reason", wantErr: "mirror_header: must differ from reason_header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := h.WithMirror(c.mirror)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got.Mirror != c.want || got.Route != h.Route || got.Reason != h.Reason {
				t.Fatalf("got %+v, %v; want mirror %q", got, err, c.want)
			}
		})
	}
}

func TestCheckConfigIgnoresCase(t *testing.T) {
	h := adapter.DefaultHeaders()
	for _, c := range []struct {
		header, wantErr string
	}{
		{"x-variant", ""},
		{"x-route-version", `experiments[0].header: "x-route-version" is the route header`},
		{"X-Route-Version", `experiments[0].header: "X-Route-Version" is the route header`},
		{"X-ROUTE-REASON", `experiments[0].header: "X-ROUTE-REASON" is the reason header`},
		{"X-Mirror-Version", `experiments[0].header: "X-Mirror-Version" is the mirror header`},
	} {
		t.Run(c.header, func(t *testing.T) {
			cfg := split.Default()
			cfg.Experiments[0].Header = c.header
			err := h.CheckConfig(cfg)
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
		})
	}
	// A disabled reason header clashes with nothing.
	cfg := split.Default()
	cfg.Experiments[0].Header = "x-route-reason"
	if err := (adapter.Headers{Route: "x-route-version"}).CheckConfig(cfg); err != nil {
		t.Errorf("reason header disabled: %v", err)
	}
}

func TestValidHeaderValueAndName(t *testing.T) {
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
	} {
		t.Run(fmt.Sprintf("%q", c.s), func(t *testing.T) {
			if got := adapter.ValidHeaderValue(c.s); got != c.value {
				t.Errorf("ValidHeaderValue = %v, want %v", got, c.value)
			}
			if got := adapter.ValidHeaderName(c.s); got != c.name {
				t.Errorf("ValidHeaderName = %v, want %v", got, c.name)
			}
		})
	}
}

const planConfig = `services:
  - name: api
    hosts: [api]
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id}
    rules: [{name: beta, when: [{header: x-beta, exact: "true"}], version: v2}]
experiments:
  - {name: default, key: {header: x-user-id}, variants: {A: 50, B: 50}, header: x-variant}
  - {name: color, key: {header: x-user-id}, variants: {red: 50, blue: 50}, header: x-color}
`

func load(t testing.TB, y string) *split.Table {
	t.Helper()
	tb, err := split.Load([]byte(y), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func decide(tb *split.Table, authority string, kv ...string) *split.Decision {
	req := &split.Request{Authority: authority}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Headers = append(req.Headers, split.Header{Name: kv[i], Value: kv[i+1]})
	}
	d := new(split.Decision)
	tb.Decide(req, d)
	return d
}

func TestPlanFor(t *testing.T) {
	tb := load(t, planConfig)
	type plan struct {
		Remove, RemoveMirror string
		Set                  []split.Header
		Unrouted, Assigned   bool
	}
	mt := load(t, `services:
  - name: api
    weights: {v1: 100, v2: 0}
    sticky: {assign: {cookie: sid}}
    mirror: {version: v2, percent: 100}
`)
	assigned := &split.Decision{}
	mt.Decide(&split.Request{NewKey: func() (k [split.KeyBytes]byte) { return k }}, assigned)
	for _, c := range []struct {
		name string
		h    adapter.Headers
		d    *split.Decision
		want plan
	}{
		{
			name: "rule match with variants", h: adapter.DefaultHeaders(),
			d: decide(tb, "api", "x-beta", "true", "x-user-id", "user-123"),
			want: plan{RemoveMirror: "x-mirror-version", Set: []split.Header{
				{Name: "x-route-version", Value: "v2"}, {Name: "x-route-reason", Value: "header_match"},
				{Name: "x-variant", Value: "A"}, {Name: "x-color", Value: "red"},
			}},
		},
		{
			name: "reason disabled", h: adapter.Headers{Route: "x-v"},
			d:    decide(tb, "api", "x-beta", "true"),
			want: plan{RemoveMirror: "x-mirror-version", Set: []split.Header{{Name: "x-v", Value: "v2"}}},
		},
		{
			name: "unmatched removes the route header, sets no variant", h: adapter.DefaultHeaders(),
			d: decide(tb, "nowhere", "x-user-id", "user-123"),
			want: plan{Remove: "x-route-version", RemoveMirror: "x-mirror-version", Unrouted: true,
				Set: []split.Header{{Name: "x-route-reason", Value: "unmatched"}}},
		},
		{
			name: "no decision (no config, panic)", h: adapter.DefaultHeaders(), d: nil,
			want: plan{Remove: "x-route-version", RemoveMirror: "x-mirror-version", Unrouted: true,
				Set: []split.Header{{Name: "x-route-reason", Value: "unmatched"}}},
		},
		{
			name: "zero Headers mean the defaults", h: adapter.Headers{}, d: nil,
			want: plan{Remove: "x-route-version", RemoveMirror: "x-mirror-version", Unrouted: true,
				Set: []split.Header{{Name: "x-route-reason", Value: "unmatched"}}},
		},
		{
			name: "assigned and mirrored", h: adapter.Headers{Route: "x-v", Mirror: "x-shadow"}, d: assigned,
			want: plan{Assigned: true, Set: []split.Header{{Name: "x-v", Value: "v1"}, {Name: "x-shadow", Value: "v2"}}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var p adapter.Plan
			c.h.PlanFor(c.d, &p)
			got := plan{Remove: p.Remove, RemoveMirror: p.RemoveMirror, Set: p.Set(), Unrouted: p.Unrouted, Assigned: p.Assigned}
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	t.Run("clashing experiment header is skipped whatever its case", func(t *testing.T) {
		d := decide(tb, "api", "x-user-id", "user-123")
		var p adapter.Plan
		adapter.Headers{Route: "x-color", Reason: "x-route-reason"}.PlanFor(d, &p)
		for _, h := range p.Set() {
			if h.Name == "x-color" && h.Value != d.Version {
				t.Errorf("the experiment overwrote the route header: %v", p.Set())
			}
		}
		if p.Skipped != 1 {
			t.Errorf("Skipped = %d, want 1", p.Skipped)
		}
	})
	t.Run("does not allocate", func(t *testing.T) {
		d := decide(tb, "api", "x-user-id", "user-123")
		h := adapter.DefaultHeaders()
		var p adapter.Plan
		if n := testing.AllocsPerRun(100, func() { h.PlanFor(d, &p) }); n != 0 {
			t.Errorf("%v allocations per PlanFor", n)
		}
	})
}

// source serves whatever table it holds.
type source struct{ t atomic.Pointer[split.Table] }

func (s *source) Table() *split.Table { return s.t.Load() }

type answer struct{ plan []split.Header }

func TestResponsesBuildsEachOutcomeOnce(t *testing.T) {
	src := &source{}
	tb := load(t, planConfig)
	src.t.Store(tb)
	var builds atomic.Int64
	r := adapter.NewResponses(src, adapter.DefaultHeaders(), func(p *adapter.Plan) *answer {
		builds.Add(1)
		return &answer{plan: append([]split.Header(nil), p.Set()...)}
	})
	check := func(d *split.Decision, got *answer) {
		t.Helper()
		var p adapter.Plan
		adapter.DefaultHeaders().PlanFor(d, &p)
		if diff := cmp.Diff(p.Set(), got.plan); diff != "" {
			t.Fatalf("answer for %+v is not its plan (-want +got):\n%s", d, diff)
		}
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				d := decide(tb, []string{"api", "nowhere"}[i%2], "x-user-id", fmt.Sprint("u", w, i%97), "x-beta", fmt.Sprint(i%3 == 0))
				check(d, r.Get(tb, d))
			}
		})
	}
	wg.Wait()
	hits, misses := r.Stats()
	if hits+misses != 8000 {
		t.Fatalf("hits %d + misses %d != 8000", hits, misses)
	}
	// Each outcome is built at most a few times (racing first requests),
	// never per request.
	if misses > uint64(4*tb.Outcomes()) || builds.Load() != int64(misses) {
		t.Errorf("%d misses, %d builds for %d outcomes", misses, builds.Load(), tb.Outcomes())
	}

	// A new table starts a new cache; a request still holding the old one is
	// answered uncached and does not bring the old cache back.
	next := load(t, strings.Replace(planConfig, "v1: 80, v2: 20", "v1: 50, v2: 50", 1))
	src.t.Store(next)
	d := decide(next, "api", "x-user-id", "u1")
	check(d, r.Get(next, d))
	_, m0 := r.Stats()
	old := decide(tb, "api", "x-user-id", "u1")
	check(old, r.Get(tb, old))
	check(old, r.Get(tb, old))
	check(d, r.Get(next, d))
	if _, m1 := r.Stats(); m1 != m0+2 {
		t.Errorf("misses went from %d to %d; want two uncached answers for the old table and a hit for the new one", m0, m1)
	}
}

func TestResponsesWithoutNumberedOutcomes(t *testing.T) {
	y := "services:\n  - name: api\n    weights: {v1: 50, v2: 50}\nexperiments:\n"
	for i := range 10 {
		y += fmt.Sprintf("  - {name: e%d, key: {header: x-k%d}, variants: {a: 25, b: 25, c: 25, d: 25}, header: x-e%d}\n", i, i, i)
	}
	tb := load(t, y)
	if tb.Outcomes() != 0 {
		t.Fatalf("Outcomes = %d; the test needs a table without numbered outcomes", tb.Outcomes())
	}
	src := &source{}
	src.t.Store(tb)
	r := adapter.NewResponses(src, adapter.DefaultHeaders(), func(p *adapter.Plan) *answer {
		return &answer{plan: append([]split.Header(nil), p.Set()...)}
	})
	for range 3 {
		for i := range 20 {
			d := decide(tb, "any", "x-k1", fmt.Sprint("u", i), "x-k7", fmt.Sprint("w", i))
			var p adapter.Plan
			adapter.DefaultHeaders().PlanFor(d, &p)
			if diff := cmp.Diff(p.Set(), r.Get(tb, d).plan); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		}
	}
	if hits, misses := r.Stats(); misses > 20*2 || hits < 40 {
		t.Errorf("hits %d, misses %d: the map fallback does not cache", hits, misses)
	}
}

func TestPoolClearsScratch(t *testing.T) {
	var p adapter.Pool
	s := p.Get()
	s.Req.Headers = append(s.Req.Headers, split.Header{Name: "a", Value: "b"})
	s.Req.Authority = "x"
	p.Put(s)
	// The pool may or may not hand back the same value; either way it is clean.
	s = p.Get()
	if len(s.Req.Headers) != 0 || s.Req.Authority != "" || s.Dec.Version != "" {
		t.Errorf("scratch not cleared: %+v", s)
	}
}
