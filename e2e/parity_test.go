package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"

	"github.com/trafficsplit/splitter/envoy"
)

// parityConfig decides on everything a request can carry more than once:
// a sticky header, a rule header, a rule cookie, an experiment cookie.
const parityConfig = `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 70, v2: 30}
    sticky: {header: x-user-id}
    rules:
      - name: beta-testers
        when: [{header: x-beta, exact: "true"}]
        version: v2
      - name: internal-ring
        when: [{cookie: ring, exact: internal}]
        version: v2
experiments:
  - name: default
    key: {cookie: sid}
    variants: {A: 50, B: 50}
    header: x-variant
`

// seen is what a backend saw of a decision.
type seen struct{ version, reason, variant string }

func (o seen) String() string {
	return fmt.Sprintf("%s/%s variant=%q", o.version, o.reason, o.variant)
}

func (b *bed) decision(t *testing.T, h http.Header) seen {
	t.Helper()
	v, got := b.get(t, h)
	return seen{v, got["x-route-reason"], got["x-variant"]}
}

// parityRequests are generated requests, many with a header sent on two
// lines: two user ids, a beta flag false then true, two Cookie lines.
func parityRequests(n int) []http.Header {
	r := rand.New(rand.NewPCG(7, 11))
	reqs := make([]http.Header, n)
	for i := range reqs {
		h := http.Header{}
		if r.IntN(3) > 0 {
			h.Add("x-user-id", fmt.Sprintf("user-%d", r.IntN(1000)))
			if r.IntN(2) == 0 {
				h.Add("x-user-id", fmt.Sprintf("user-%d", r.IntN(1000)))
			}
		}
		switch r.IntN(4) {
		case 0:
			h.Add("x-beta", "true")
		case 1:
			h.Add("x-beta", "false")
			h.Add("x-beta", "true")
		}
		switch r.IntN(4) {
		case 0:
			h.Add("Cookie", fmt.Sprintf("sid=s%d", r.IntN(500)))
		case 1:
			h.Add("Cookie", fmt.Sprintf("sid=s%d", r.IntN(500)))
			h.Add("Cookie", "ring=internal")
		case 2:
			h.Add("Cookie", "theme=x")
			h.Add("Cookie", fmt.Sprintf("sid=s%d; ring=outer", r.IntN(500)))
		}
		reqs[i] = h
	}
	return reqs
}

// TestAdaptersAgreeOnRepeatedHeaders: the same requests, in the same order
// (so that unkeyed ones meet the same round-robin position), get the same
// version, reason and variants through ext_proc and ext_authz, also when a
// sticky, rule or cookie header is sent on two lines.
func TestAdaptersAgreeOnRepeatedHeaders(t *testing.T) {
	beds := map[envoy.Mode]*bed{}
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz} {
		beds[mode] = newBed(t, mode, parityConfig)
	}
	reqs := parityRequests(400)
	got := [2][]seen{}
	for i, h := range reqs {
		got[0] = append(got[0], beds[envoy.ModeExtProc].decision(t, h))
		got[1] = append(got[1], beds[envoy.ModeExtAuthz].decision(t, h))
		if got[0][i] != got[1][i] {
			t.Fatalf("request %d %v: ext_proc %v, ext_authz %v", i, h, got[0][i], got[1][i])
		}
	}
	requireAgreement(t, [2]string{"ext_proc", "ext_authz"}, reqs, got, 100)

	// What a repeated header means, pinned for both adapters: the first
	// user id is the sticky key, a rule matches when any line matches, and
	// cookies are read from every Cookie line.
	for mode, b := range beds {
		t.Run(string(mode), func(t *testing.T) {
			for _, c := range []struct {
				name     string
				repeated http.Header
				single   http.Header
			}{
				{"sticky key is the first line", hdr("x-user-id", "user-1", "x-user-id", "user-2"), hdr("x-user-id", "user-1")},
				{"rule holds on any line", hdr("x-beta", "false", "x-beta", "true"), hdr("x-beta", "true")},
				{"cookie from a later Cookie line", hdr("Cookie", "a=b", "Cookie", "ring=internal"), hdr("Cookie", "ring=internal")},
				{"experiment cookie from a later Cookie line", hdr("x-beta", "true", "Cookie", "a=b", "Cookie", "sid=s9"), hdr("x-beta", "true", "Cookie", "sid=s9")},
			} {
				if got, want := b.decision(t, c.repeated), b.decision(t, c.single); got != want {
					t.Errorf("%s: %v, want %v (as for %v)", c.name, got, want, c.single)
				}
			}
		})
	}
}

// requireAgreement requires two runs of the same requests (answers in
// request order) to have seen the same version, reason and variant for
// every request, and the requests to have exercised every path: at least
// minRepeated with a header on two lines, all three reasons, both variants.
func requireAgreement(t *testing.T, names [2]string, reqs []http.Header, got [2][]seen, minRepeated int) {
	t.Helper()
	if len(got[0]) != len(reqs) || len(got[1]) != len(reqs) {
		t.Fatalf("%d requests, but %d answers through %s and %d through %s", len(reqs), len(got[0]), names[0], len(got[1]), names[1])
	}
	reasons, variants, repeated := map[string]int{}, map[string]int{}, 0
	for i, h := range reqs {
		if got[0][i] != got[1][i] {
			t.Fatalf("request %d %v: %s %v, %s %v", i, h, names[0], got[0][i], names[1], got[1][i])
		}
		reasons[got[0][i].reason]++
		variants[got[0][i].variant]++
		for _, vs := range h {
			if len(vs) > 1 {
				repeated++
				break
			}
		}
	}
	if repeated < minRepeated || len(reasons) != 3 || variants["A"] == 0 || variants["B"] == 0 {
		t.Fatalf("%d of %d requests repeat a header, reasons %v, variants %v: the test does not exercise every path",
			repeated, len(reqs), reasons, variants)
	}
	t.Logf("%d requests agree through %s and %s (%d with a repeated header): reasons %v, variants %v",
		len(reqs), names[0], names[1], repeated, reasons, variants)
}
