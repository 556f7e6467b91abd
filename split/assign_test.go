package split_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

// seqKeys is a KeyGen drawing from a fixed seed, so tests reproduce.
func seqKeys(seed uint64) split.KeyGen {
	r := rand.New(rand.NewPCG(seed, seed+1))
	return func() (k [split.KeyBytes]byte) {
		binary.LittleEndian.PutUint64(k[:8], r.Uint64())
		binary.LittleEndian.PutUint64(k[8:], r.Uint64())
		return k
	}
}

const assignYAML = `services:
  - name: api
    weights: {v1: 80, v2: 20}
    sticky:
      header: x-user-id
      assign: {cookie: sid, max_age: 720h, secure: true}
`

func TestAssignParsesWithDefaults(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       split.Key
	}{
		{"every key", assignYAML, split.Key{Header: "x-user-id",
			Assign: &split.Assign{Cookie: "sid", MaxAge: split.Duration(720 * 3600e9), Secure: true}}},
		{"empty block", "services:\n  - {name: api, weights: {v1: 100}, sticky: {header: u, assign: {}}}\n",
			split.Key{Header: "u", Assign: &split.Assign{Cookie: "splitter-id", MaxAge: split.Duration(split.DefaultAssignMaxAge)}}},
		{"null block", "services:\n  - name: api\n    weights: {v1: 100}\n    sticky:\n      assign:\n",
			split.Key{Assign: &split.Assign{Cookie: "splitter-id", MaxAge: split.Duration(split.DefaultAssignMaxAge)}}},
		{"assign alone", "services:\n  - {name: api, weights: {v1: 100}, sticky: {assign: {cookie: k, max_age: 1h}}}\n",
			split.Key{Assign: &split.Assign{Cookie: "k", MaxAge: split.Duration(3600e9)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := mustLoad(t, tt.yaml)
			svc, _ := tb.Service("api")
			got := *svc.Sticky
			if got.Header != tt.want.Header || got.Cookie != tt.want.Cookie || *got.Assign != *tt.want.Assign {
				t.Fatalf("sticky = %+v assign %+v, want %+v assign %+v", got, *got.Assign, tt.want, *tt.want.Assign)
			}
		})
	}
}

func TestAssignAndMirrorValidation(t *testing.T) {
	svc := func(extra string) string {
		return "services:\n  - name: api\n    weights: {v1: 90, v2: 10}\n" + extra
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"max_age without unit", svc("    sticky: {assign: {max_age: 3600}}\n"),
			"services[0].sticky.assign.max_age: must be a duration with a unit"},
		{"max_age zero", svc("    sticky: {assign: {max_age: 0s}}\n"),
			"services[0].sticky.assign.max_age: must be between 1s and 9600h0m0s"},
		{"max_age over 400 days", svc("    sticky: {assign: {max_age: 9601h}}\n"),
			"services[0].sticky.assign.max_age: must be between 1s and 9600h0m0s"},
		{"max_age fraction of a second", svc("    sticky: {assign: {max_age: 1500ms}}\n"),
			"services[0].sticky.assign.max_age: must be whole seconds"},
		{"bad cookie name", svc("    sticky: {assign: {cookie: \"a b\"}}\n"),
			"services[0].sticky.assign.cookie: cookie name \"a b\" has characters not allowed"},
		{"secure not a bool", svc("    sticky: {assign: {secure: \"yes\"}}\n"),
			"services[0].sticky.assign.secure: must be true or false"},
		{"unknown assign key", svc("    sticky: {assign: {maxage: 1h}}\n"),
			"services[0].sticky.assign.maxage: unknown key (did you mean \"max_age\"?)"},
		{"assign in an experiment key", svc("experiments:\n  - {name: e, key: {header: u, assign: {}}, variants: {A: 100}, header: x-e}\n"),
			"experiments[0].key.assign: unknown key"},
		{"assign with header and cookie", svc("    sticky: {header: u, cookie: c, assign: {}}\n"),
			"services[0].sticky: names both a header and a cookie"},
		{"mirror unknown version", svc("    mirror: {version: v3, percent: 10}\n"),
			"services[0].mirror.version: unknown version \"v3\" (declared: v1, v2)"},
		{"mirror without version", svc("    mirror: {percent: 10}\n"),
			"services[0].mirror.version: missing"},
		{"mirror without percent", svc("    mirror: {version: v2}\n"),
			"services[0].mirror.percent: missing"},
		{"mirror three decimals", svc("    mirror: {version: v2, percent: 1.005}\n"),
			"services[0].mirror.percent: has more than two decimals"},
		{"mirror over 100", svc("    mirror: {version: v2, percent: 100.01}\n"),
			"services[0].mirror.percent: must be between 0 and 100"},
		{"mirror negative", svc("    mirror: {version: v2, percent: -1}\n"),
			"services[0].mirror.percent: must not be negative"},
		{"mirror percent a string", svc("    mirror: {version: v2, percent: \"10\"}\n"),
			"services[0].mirror.percent: must be a number from 0 to 100"},
		{"mirror unknown key", svc("    mirror: {version: v2, share: 10}\n"),
			"services[0].mirror.share: unknown key"},
		{"mirror not a mapping", svc("    mirror: v2\n"),
			"services[0].mirror: must be a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := split.Load([]byte(tt.yaml), split.ParseOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
	// Valid edges.
	for _, y := range []string{
		svc("    mirror: {version: v2, percent: 0}\n"),
		svc("    mirror: {version: v2, percent: 100}\n"),
		svc("    mirror: {version: v1, percent: 0.05}\n"),
		svc("    mirror:\n"),
		svc("    sticky: {assign: {max_age: 9600h}}\n"),
	} {
		if _, err := split.Load([]byte(y), split.ParseOptions{}); err != nil {
			t.Errorf("%s: %v", y, err)
		}
	}
}

func TestAssignDecides(t *testing.T) {
	tb := mustLoad(t, assignYAML)
	keys := seqKeys(7)
	req := func(h ...string) split.Request {
		return split.Request{Headers: headers(h...), NewKey: keys}
	}

	// No key: a fresh one decides, and it sets the cookie.
	d := decide(tb, req())
	if d.Reason != split.ReasonStickyAssigned || !d.Assigned() {
		t.Fatalf("no key: reason %v, assigned %v", d.Reason, d.Assigned())
	}
	key := d.AssignedKey()
	if len(key) != split.KeyLen || !split.ValidKey(key) {
		t.Fatalf("assigned key %q: want %d URL-safe characters", key, split.KeyLen)
	}
	if d.Bucket != split.Bucket("api", key) {
		t.Errorf("bucket %d, want Bucket(api, key) = %d", d.Bucket, split.Bucket("api", key))
	}
	wantCookie := "sid=" + key + "; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax; Secure"
	if got := string(d.AppendSetCookie(nil)); got != wantCookie {
		t.Errorf("Set-Cookie %q\nwant       %q", got, wantCookie)
	}

	// The cookie brought back is the key: same bucket, same version.
	back := decide(tb, req("cookie", "theme=dark; sid="+key))
	if back.Reason != split.ReasonStickyRouting || back.Version != d.Version || back.Bucket != d.Bucket || back.Assigned() {
		t.Fatalf("with the cookie: %v %s bucket %d assigned %v, want sticky_routing %s bucket %d",
			back.Reason, back.Version, back.Bucket, back.Assigned(), d.Version, d.Bucket)
	}
	if len(back.AppendSetCookie(nil)) != 0 {
		t.Error("a keyed request sets a cookie")
	}

	// The sticky header wins over the cookie; keyed requests get no cookie.
	h := decide(tb, req("x-user-id", "user-123", "cookie", "sid="+key))
	if h.Reason != split.ReasonStickyRouting || h.Bucket != split.Bucket("api", "user-123") || h.Assigned() {
		t.Errorf("header and cookie: %v bucket %d", h.Reason, h.Bucket)
	}

	// Malformed or oversized cookies are no key: a new one is assigned.
	for _, bad := range []string{
		"short",
		strings.Repeat("a", split.MaxKeyLen+1),
		"has spaces in it, so not a key",
		"abc.def.ghi.jkl.mno.pqr",
		"%2e%2e%2fetc%2fpasswd%2e%2e%2fetc",
		strings.Repeat("A", 4096),
	} {
		got := decide(tb, req("cookie", "sid="+bad))
		if got.Reason != split.ReasonStickyAssigned || got.AssignedKey() == bad {
			t.Errorf("cookie %.20q: reason %v, want a new key", bad, got.Reason)
		}
	}

	// Without a key generator (the seed node, explain) nothing is assigned.
	rr := decide(tb, split.Request{})
	if rr.Reason != split.ReasonWeightedRouting || rr.Assigned() {
		t.Errorf("no generator: %v", rr.Reason)
	}

	// Rules still win, and do not assign.
	tb2 := mustLoad(t, assignYAML+"    rules: [{name: beta, when: [{header: x-beta, present: true}], version: v2}]\n")
	if r := decide(tb2, req("x-beta", "1")); r.Reason != split.ReasonHeaderMatch || r.Assigned() {
		t.Errorf("rule: %v assigned %v", r.Reason, r.Assigned())
	}
}

// TestAssignedKeysBucketUniformly: fresh keys spread over the buckets like
// any keys, so the assigned share matches the weights.
func TestAssignedKeysBucketUniformly(t *testing.T) {
	tb := mustLoad(t, assignYAML)
	keys := seqKeys(11)
	const n = 100000
	counts := map[string]int{}
	var deciles [10]int
	for range n {
		d := decide(tb, split.Request{NewKey: keys})
		counts[d.Version]++
		deciles[d.Bucket/1000]++
	}
	if got := float64(counts["v2"]) / n * 100; abs(got-20) > 1 {
		t.Errorf("v2 got %.2f %% of assigned keys, want 20 ± 1", got)
	}
	for i, c := range deciles {
		if got := float64(c) / n * 100; abs(got-10) > 0.6 {
			t.Errorf("buckets [%d, %d): %.2f %% of keys, want 10 ± 0.6", i*1000, (i+1)*1000, got)
		}
	}
}

// TestAssignedKeysMonotone: clients that keep the cookie they were given
// only move from stable to canary as the canary grows.
func TestAssignedKeysMonotone(t *testing.T) {
	base := mustLoad(t, strings.Replace(assignYAML, "{v1: 80, v2: 20}", "{v1: 100, v2: 0}", 1))
	keys := seqKeys(3)
	cookies := make([]string, 5000)
	for i := range cookies {
		d := decide(base, split.Request{NewKey: keys})
		if d.Version != "v1" {
			t.Fatalf("canary 0: assigned to %s", d.Version)
		}
		cookies[i] = "sid=" + d.AssignedKey()
	}
	prev := make([]string, len(cookies))
	for bp := 500; bp <= 10000; bp += 500 {
		w, _ := base.CanaryWeights("api", bp)
		tb, err := base.WithWeights("api", w)
		if err != nil {
			t.Fatal(err)
		}
		v2 := 0
		for i, c := range cookies {
			d := decide(tb, split.Request{Headers: headers("cookie", c), NewKey: keys})
			if d.Reason != split.ReasonStickyRouting {
				t.Fatalf("cookie %q: reason %v", c, d.Reason)
			}
			if prev[i] == "v2" && d.Version != "v2" {
				t.Fatalf("canary %s: %q moved back to %s", split.FormatPercent(bp), c, d.Version)
			}
			prev[i] = d.Version
			if d.Version == "v2" {
				v2++
			}
		}
		if got := float64(v2) / float64(len(cookies)) * 100; abs(got-float64(bp)/100) > 2.5 {
			t.Errorf("canary %s: %.1f %% of clients on v2", split.FormatPercent(bp), got)
		}
	}
}

func TestEncodeKeyIsBase64URL(t *testing.T) {
	var k [split.KeyBytes]byte
	for i := range k {
		k[i] = byte(0xf0 + i)
	}
	tb := mustLoad(t, assignYAML)
	d := decide(tb, split.Request{NewKey: func() [split.KeyBytes]byte { return k }})
	// base64.RawURLEncoding of f0 f1 ... ff.
	if got, want := d.AssignedKey(), "8PHy8_T19vf4-fr7_P3-_w"; got != want {
		t.Fatalf("key %q, want %q", got, want)
	}
}

const mirrorYAML = `services:
  - name: api
    weights: {v1: 100, v2: 0}
    sticky: {header: x-user-id}
    mirror: {version: v2, percent: 10}
`

func TestMirrorUnkeyedIsExact(t *testing.T) {
	for _, pct := range []int{1000, 1, 3333, 5000, 10000, 0} {
		t.Run(split.FormatPercent(pct), func(t *testing.T) {
			tb := mustLoad(t, strings.Replace(mirrorYAML, "percent: 10", "percent: "+split.FormatPercent(pct), 1))
			n, mirrored := 0, 0
			for i := range 20000 {
				d := decide(tb, split.Request{})
				if d.Version != "v1" {
					t.Fatalf("request %d served by %s", i, d.Version)
				}
				n++
				if d.Mirror() == "v2" {
					mirrored++
				}
				// Within one request of the exact share over every prefix.
				if want := n * pct / split.Buckets; mirrored < want-1 || mirrored > want+1 {
					t.Fatalf("after %d requests %d mirrored, want %d ± 1", n, mirrored, want)
				}
			}
		})
	}
}

func TestMirrorKeyed(t *testing.T) {
	tb := mustLoad(t, mirrorYAML)
	keys := randomKeys(50000)
	mirrored := 0
	for _, k := range keys {
		d := decide(tb, split.Request{Headers: headers("x-user-id", k)})
		again := decide(tb, split.Request{Headers: headers("x-user-id", k)})
		if d.Mirror() != again.Mirror() {
			t.Fatalf("key %q mirrored %q then %q", k, d.Mirror(), again.Mirror())
		}
		if want := split.MirrorBucket("api", k) < 1000; (d.Mirror() == "v2") != want {
			t.Fatalf("key %q: mirror %q, mirror bucket %d", k, d.Mirror(), split.MirrorBucket("api", k))
		}
		if d.Mirror() != "" {
			mirrored++
		}
	}
	if got := float64(mirrored) / float64(len(keys)) * 100; abs(got-10) > 0.5 {
		t.Errorf("%.2f %% of keys mirrored, want 10 ± 0.5", got)
	}
	// Independent of the routing bucket: at 50/50 about half the mirrored
	// keys are v1's (v2's are not copied to v2).
	tb = mustLoad(t, strings.Replace(mirrorYAML, "{v1: 100, v2: 0}", "{v1: 50, v2: 50}", 1))
	on := map[string]int{}
	for _, k := range keys {
		d := decide(tb, split.Request{Headers: headers("x-user-id", k)})
		if d.Mirror() != "" {
			on[d.Version]++
		}
	}
	if on["v2"] != 0 {
		t.Errorf("%d requests served by v2 were copied to v2", on["v2"])
	}
	if got := float64(on["v1"]) / float64(len(keys)) * 100; abs(got-5) > 0.5 {
		t.Errorf("%.2f %% of keys mirrored at 50/50, want 5 ± 0.5", got)
	}
}

func TestMirrorOutcomesAndRules(t *testing.T) {
	tb := mustLoad(t, mirrorYAML+`    rules: [{name: pin, when: [{header: x-pin, present: true}], version: v1}]
  - name: web
    hosts: [web]
    weights: {a: 50, b: 50}
    mirror: {version: b, percent: 100}
`)
	// Two mirror versions (v2, b) + none.
	if got, want := tb.Outcomes(), (4+1)*5*3; got != want {
		t.Fatalf("Outcomes = %d, want %d", got, want)
	}
	seen := map[int]string{}
	check := func(d split.Decision) {
		shape := fmt.Sprintf("%s/%v/%s", d.Version, d.Reason, d.Mirror())
		if prev, ok := seen[d.Outcome()]; ok && prev != shape {
			t.Fatalf("outcome %d is both %s and %s", d.Outcome(), prev, shape)
		}
		seen[d.Outcome()] = shape
	}
	for i := range 200 {
		check(decide(tb, split.Request{Headers: headers("x-pin", "1")}))
		check(decide(tb, split.Request{}))
		check(decide(tb, split.Request{Authority: "web"}))
		check(decide(tb, split.Request{Headers: headers("x-user-id", fmt.Sprint(i))}))
	}
	// A rule-matched request is mirrored too (exactly, unkeyed).
	m := 0
	for range 1000 {
		if d := decide(tb, split.Request{Headers: headers("x-pin", "1")}); d.Mirror() != "" {
			m++
		}
	}
	if m < 99 || m > 101 {
		t.Errorf("rule-matched: %d of 1000 mirrored, want 100 ± 1", m)
	}
	// b serves half of web and is never copied to itself; a always is.
	for range 100 {
		d := decide(tb, split.Request{Authority: "web"})
		if (d.Version == "a") != (d.Mirror() == "b") {
			t.Fatalf("web: %s mirrored to %q", d.Version, d.Mirror())
		}
	}
}

// TestMirrorRemovedStopsAtOnce: a table without the mirror copies nothing.
func TestMirrorRemovedStopsAtOnce(t *testing.T) {
	tb := mustLoad(t, mirrorYAML)
	cfg := tb.Config()
	cfg.Services[0].Mirror = nil
	next, err := split.CompileNext(tb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if d := decide(next, split.Request{}); d.Mirror() != "" {
			t.Fatal("mirrored after the mirror was removed")
		}
	}
}

func TestExplainAssignAndMirror(t *testing.T) {
	tb := mustLoad(t, strings.Replace(assignYAML, "{v1: 80, v2: 20}\n", "{v1: 80, v2: 20}\n    mirror: {version: v2, percent: 10}\n", 1))
	e := tb.Explain(&split.Request{})
	if e.Reason != "sticky_assigned" || e.Assign == nil || !e.Assign.Assigned || e.Version != "" {
		t.Fatalf("unkeyed: %+v", e)
	}
	if want := "sid=<key>; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax; Secure"; e.Assign.SetCookie != want {
		t.Errorf("set_cookie %q, want %q", e.Assign.SetCookie, want)
	}
	if !strings.Contains(strings.Join(e.Notes, "\n"), "v2 [0, 2000), v1 [2000, 10000)") {
		t.Errorf("notes: %q", e.Notes)
	}
	// A keyed request: mirrored or not by its mirror bucket, and said so.
	var key string
	for _, k := range randomKeys(1000) {
		if split.MirrorBucket("api", k) < 1000 && split.Bucket("api", k) >= 2000 {
			key = k
			break
		}
	}
	e = tb.Explain(&split.Request{Headers: headers("x-user-id", key)})
	if e.Reason != "sticky_routing" || e.Mirror != "v2" || e.Assign == nil || e.Assign.Assigned || e.MirrorPercent == nil || *e.MirrorPercent != 1000 {
		t.Fatalf("keyed: %+v", e)
	}
	if !strings.Contains(strings.Join(e.Notes, "\n"), "mirrored to v2: FNV-1a-32") {
		t.Errorf("notes: %q", e.Notes)
	}
	// A malformed cookie is reported as no key.
	e = tb.Explain(&split.Request{Headers: headers("cookie", "sid=bad")})
	if !strings.Contains(strings.Join(e.Notes, "\n"), "cookie sid is malformed or oversized") {
		t.Errorf("notes: %q", e.Notes)
	}
}
