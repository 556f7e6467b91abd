package module

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

const assignConfig = `services:
  - name: api
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id, assign: {cookie: sid, max_age: 10m}}
    mirror: {version: v2, percent: 100}
`

// TestDecideAssignsKeys: a request without a key is answered with its
// Set-Cookie (which C adds to the response headers), a keyed one is not,
// and the cookie brought back keys the next request.
func TestDecideAssignsKeys(t *testing.T) {
	s := start(t, assignConfig)
	res := s.decide(t, 0, []split.Header{{Name: ":authority", Value: "api"}})
	m := regexp.MustCompile(`^sid=([A-Za-z0-9_-]{22}); Path=/; Max-Age=600; HttpOnly; SameSite=Lax$`).FindSubmatch(res.Cookie)
	if res.Status != StatusOK || m == nil {
		t.Fatalf("status %d cookie %q", res.Status, res.Cookie)
	}
	_, set, err := DecodePlan(res.Plan)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, h := range set {
		got[h.Name] = h.Value
	}
	if got["x-route-reason"] != "sticky_assigned" {
		t.Fatalf("plan %v", set)
	}
	version := got["x-route-version"]
	// Mirrored at 100 % unless v2 serves it; otherwise a client's mirror
	// header is removed.
	switch mr := MirrorRemoved(res.Plan); {
	case version == "v1" && (got["x-mirror-version"] != "v2" || mr != ""):
		t.Errorf("v1: mirror header %q, removed %q", got["x-mirror-version"], mr)
	case version == "v2" && (got["x-mirror-version"] != "" || mr != "x-mirror-version"):
		t.Errorf("v2: mirror header %q, removed %q", got["x-mirror-version"], mr)
	}
	key := string(m[1])
	res = s.decide(t, 0, []split.Header{{Name: ":authority", Value: "api"}, {Name: "cookie", Value: "sid=" + key}})
	_, set, _ = DecodePlan(res.Plan)
	if res.Cookie != nil || set[0].Value != version || set[1].Value != "sticky_routing" {
		t.Fatalf("with the cookie: cookie %q plan %v, want %s sticky_routing", res.Cookie, set, version)
	}
	if len(res.Cookie) > MaxCookieBytes {
		t.Fatal("cookie longer than the C buffer")
	}
}

// TestAssignedDecisionAllocatesNothingInGo: the Set-Cookie is written into
// the thread's reused buffer. The key generator is a fixed one here: under
// the race detector crypto/rand allocates (without it, it does not:
// split's BenchmarkDecideAssigned measures it).
func TestAssignedDecisionAllocatesNothingInGo(t *testing.T) {
	s := start(t, assignConfig)
	s.p.scratch[3].req.NewKey = func() (k [split.KeyBytes]byte) { k[0]++; return k }
	hs := []split.Header{{Name: ":authority", Value: "a"}}
	s.decide(t, 3, hs)
	id, _ := s.host.current()
	s.quiesce(t)
	var res Result
	if n := testing.AllocsPerRun(1000, func() {
		r := s.p.Begin(3)
		for _, h := range hs {
			r.Add(h.Name, h.Value)
		}
		s.p.Decide(r, id, false, &res)
	}); n != 0 {
		t.Fatalf("%v allocations per assigned decision", n)
	}
	if res.Cookie == nil {
		t.Fatal("no cookie")
	}
}

// TestShadowStepNeedsEnvoyAdmin: without envoy_admin the module judges
// rollouts on its own counters, which never see mirrored requests, so a
// rollout with a shadow step is refused and says what to set.
func TestShadowStepNeedsEnvoyAdmin(t *testing.T) {
	s := start(t, `services:
  - name: api
    weights: {v1: 100, v2: 0}
    rollout: {shadow: {percent: 10, hold: 1s}}
`)
	resp, err := http.Post("http://"+s.admin+"/v1/services/api/rollout", "application/json", strings.NewReader(`{"action": "start"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "set envoy_admin") {
		t.Fatalf("start: %d %s", resp.StatusCode, body)
	}
}

// TestPooledSlotCookieIsItsOwn: a thread beyond MaxThreads decides with a
// pooled scratch, which returns to the pool before C copies the answer;
// its cookie must not be overwritten by the next request on that scratch.
func TestPooledSlotCookieIsItsOwn(t *testing.T) {
	s := start(t, assignConfig)
	hs := []split.Header{{Name: ":authority", Value: "a"}}
	first := s.decide(t, MaxThreads+1, hs)
	kept := string(first.Cookie)
	second := s.decide(t, MaxThreads+1, hs)
	if string(first.Cookie) != kept || string(second.Cookie) == kept {
		t.Fatalf("the first request's cookie changed to %q (second %q)", first.Cookie, second.Cookie)
	}
}
