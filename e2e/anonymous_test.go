package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/examples/backend/echo"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// anonymousConfig assigns a key to every request that carries none.
const anonymousConfig = `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    sticky:
      header: x-user-id
      assign: {cookie: splitter-id, max_age: 720h, secure: true}
`

// cookieRE is the Set-Cookie the configuration above asks for.
var cookieRE = regexp.MustCompile(`^splitter-id=([A-Za-z0-9_-]{22}); Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax; Secure$`)

// answer is one response through Envoy: the version that served it, the
// headers the backend saw and the Set-Cookie headers the client got.
type answer struct {
	version    string
	seen       map[string]string
	setCookies []string
}

// send sends GET / with h through b's Envoy and requires a 200 from a
// backend.
func send(ctx context.Context, b *bed, h http.Header) (answer, error) {
	return sendTo(ctx, b.client, h)
}

// anonymousClient is one cookie-less client: its first request through c
// must be given a key (reason sticky_assigned, one cookie of the configured
// form), and each of the follow requests it then sends with that cookie
// must be answered by the same version (reason sticky_routing, no new
// cookie). It returns the key and the version.
func anonymousClient(ctx context.Context, c *testbed.Client, follow int) (key, version string, err error) {
	a, err := sendTo(ctx, c, nil)
	if err != nil {
		return "", "", err
	}
	m := cookieRE.FindStringSubmatch(strings.Join(a.setCookies, "\n"))
	if a.seen["x-route-reason"] != "sticky_assigned" || len(a.setCookies) != 1 || m == nil {
		return "", "", fmt.Errorf("first request: reason %q, Set-Cookie %q: want sticky_assigned and one cookie of the configured form",
			a.seen["x-route-reason"], a.setCookies)
	}
	key, version = m[1], a.version
	for n := range follow {
		a, err := sendTo(ctx, c, hdr("Cookie", "theme=dark; splitter-id="+key))
		if err != nil {
			return "", "", err
		}
		if a.version != version || a.seen["x-route-reason"] != "sticky_routing" || len(a.setCookies) != 0 {
			return "", "", fmt.Errorf("request %d with the cookie: %s (%s, Set-Cookie %q), first %s",
				n+2, a.version, a.seen["x-route-reason"], a.setCookies, version)
		}
	}
	return key, version, nil
}

// onV2 requires every client's key to be its own and returns how many
// clients were first answered by v2.
func onV2(t *testing.T, keys, first []string) int {
	t.Helper()
	distinct := map[string]bool{}
	v2 := 0
	for i := range keys {
		distinct[keys[i]] = true
		if first[i] == "v2" {
			v2++
		}
	}
	if len(distinct) != len(keys) {
		t.Fatalf("%d distinct keys for %d clients", len(distinct), len(keys))
	}
	return v2
}

// sendTo is send through the listener c speaks to.
func sendTo(ctx context.Context, c *testbed.Client, h http.Header) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/", nil)
	if err != nil {
		return answer{}, err
	}
	for k, vs := range h {
		req.Header[http.CanonicalHeaderKey(k)] = vs
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return answer{}, err
	}
	var rep echo.Reply
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &rep) != nil {
		return answer{}, fmt.Errorf("%d %q", resp.StatusCode, body)
	}
	return answer{version: rep.Version, seen: rep.Headers, setCookies: resp.Header.Values("Set-Cookie")}, nil
}

// ourKey returns the key of the splitter's Set-Cookie among cs, "" if none,
// and fails when there is more than one or one of another form.
func ourKey(t *testing.T, cs []string) string {
	t.Helper()
	key := ""
	for _, c := range cs {
		if !strings.HasPrefix(c, "splitter-id=") {
			continue
		}
		m := cookieRE.FindStringSubmatch(c)
		if m == nil {
			t.Fatalf("Set-Cookie %q does not carry the configured attributes", c)
		}
		if key != "" {
			t.Fatalf("two splitter cookies: %q", cs)
		}
		key = m[1]
	}
	return key
}

// parallel runs f(i) for i in [0, n) on 8 goroutines and fails at the
// first error.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("client %d: %w", i, err))
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d failures, the first: %v", len(errs), errs[0])
	}
}

// TestAnonymousClientsStayPut: 1,000 clients without a key each get one in
// a cookie and send five more requests with it: all six are answered by the
// same version, about 20 % of the clients are on v2 at 80/20, and raising
// the canary to 50 % moves clients only from v1 to v2. Keyed requests get
// no cookie, a backend's own Set-Cookie survives beside ours, and a
// malformed or oversized cookie is no key: a new one is given.
func TestAnonymousClientsStayPut(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) {
			b := newBed(t, mode, anonymousConfig)
			ctx := t.Context()
			const clients = 1000
			keys := make([]string, clients)
			first := make([]string, clients)
			parallel(t, clients, func(i int) (err error) {
				keys[i], first[i], err = anonymousClient(ctx, b.client, 5)
				return err
			})
			v2 := onV2(t, keys, first)
			if share := float64(v2) / clients * 100; share < 16 || share > 24 {
				t.Fatalf("%.1f %% of the clients on v2 at 80/20, want 20 ± 4", share)
			}
			t.Logf("80/20: %d of %d clients on v2", v2, clients)

			if err := b.admin.SetCanary(ctx, "api", 50); err != nil {
				t.Fatal(err)
			}
			moved := make([]string, clients)
			parallel(t, clients, func(i int) error {
				a, err := send(ctx, b, hdr("Cookie", "splitter-id="+keys[i]))
				if err != nil {
					return err
				}
				if first[i] == "v2" && a.version != "v2" {
					return fmt.Errorf("moved from v2 to %s when the canary grew", a.version)
				}
				moved[i] = a.version
				return nil
			})
			v2 = 0
			for _, v := range moved {
				if v == "v2" {
					v2++
				}
			}
			if share := float64(v2) / clients * 100; share < 45 || share > 55 {
				t.Fatalf("%.1f %% of the clients on v2 at 50/50, want 50 ± 5", share)
			}
			t.Logf("50/50: %d of %d clients on v2, none moved back", v2, clients)

			t.Run("keyed requests get no cookie", func(t *testing.T) {
				for i := range 20 {
					a, err := send(ctx, b, hdr("x-user-id", fmt.Sprint("user-", i)))
					if err != nil {
						t.Fatal(err)
					}
					if len(a.setCookies) != 0 || a.seen["x-route-reason"] != "sticky_routing" {
						t.Fatalf("keyed: Set-Cookie %q, reason %q", a.setCookies, a.seen["x-route-reason"])
					}
				}
			})
			t.Run("the backend's Set-Cookie survives beside ours", func(t *testing.T) {
				a, err := send(ctx, b, hdr(echo.SetCookieHeader, "cart=42; Path=/shop"))
				if err != nil {
					t.Fatal(err)
				}
				if len(a.setCookies) != 2 || ourKey(t, a.setCookies) == "" ||
					(a.setCookies[0] != "cart=42; Path=/shop" && a.setCookies[1] != "cart=42; Path=/shop") {
					t.Fatalf("Set-Cookie %q: want the backend's and ours, as two headers", a.setCookies)
				}
				// A keyed request keeps the backend's and gets none of ours.
				a, err = send(ctx, b, hdr(echo.SetCookieHeader, "cart=42; Path=/shop", "Cookie", "splitter-id="+keys[0]))
				if err != nil {
					t.Fatal(err)
				}
				if len(a.setCookies) != 1 || a.setCookies[0] != "cart=42; Path=/shop" {
					t.Fatalf("keyed: Set-Cookie %q, want only the backend's", a.setCookies)
				}
			})
			t.Run("malformed or oversized cookies are no key", func(t *testing.T) {
				for _, bad := range []string{
					"short",
					"not*a*key*at*all*not*a*key",
					strings.Repeat("A", 65),
					strings.Repeat("x", 6000),
					keys[0] + "%00",
				} {
					a, err := send(ctx, b, hdr("Cookie", "splitter-id="+bad))
					if err != nil {
						t.Fatalf("cookie %.20q: %v", bad, err)
					}
					key := ourKey(t, a.setCookies)
					if a.seen["x-route-reason"] != "sticky_assigned" || key == "" || key == bad {
						t.Fatalf("cookie %.20q: reason %q, Set-Cookie %q: want a new key", bad, a.seen["x-route-reason"], a.setCookies)
					}
				}
			})
		})
	}
}

// mirrorConfig copies 10 % of the requests of a service that v1 serves
// alone to v2.
const mirrorConfig = `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    sticky: {header: x-user-id}
    mirror: {version: v2, percent: 10}
`

// TestMirrorCopiesAShare: at v1 100 with 10 % mirrored to v2, 1,000 unkeyed
// requests are all answered by v1 and v2 receives exactly 100 copies
// (counted at its backend); a client cannot ask for a copy; removing the
// mirror stops the copies at once.
func TestMirrorCopiesAShare(t *testing.T) {
	for _, mode := range []envoy.Mode{envoy.ModeExtProc, envoy.ModeExtAuthz, envoy.ModeModule} {
		t.Run(string(mode), func(t *testing.T) {
			b := newBed(t, mode, mirrorConfig)
			ctx := t.Context()
			v2 := b.backends[1]
			copiesAtLeast := func(n int64) func() bool {
				return func() bool { all, _ := v2.Requests(); return all >= n }
			}

			counts, err := b.client.Count(ctx, 1000, 4, nil)
			if err != nil || counts["v1"] != 1000 {
				t.Fatalf("answers %v (%v): want v1=1000", counts, err)
			}
			// Copies are sent beside the request and not waited for:
			// wait for them, then make sure no more arrive.
			waitFor(t, 30*time.Second, "100 copies at v2", copiesAtLeast(100))
			time.Sleep(500 * time.Millisecond)
			if all, shadow := v2.Requests(); all != 100 || shadow != 100 {
				t.Fatalf("v2 received %d requests (%d marked as Envoy's shadow copies), want exactly 100", all, shadow)
			}
			if mode != envoy.ModeModule {
				// Envoy counts the copies on v2's cluster: what the rollout
				// guard reads in a shadow step.
				stats, err := b.envoy.Stats(ctx, "cluster.v2.upstream_rq_completed")
				if err != nil {
					t.Fatal(err)
				}
				if stats["cluster.v2.upstream_rq_completed"] != 100 {
					t.Errorf("Envoy's cluster.v2.upstream_rq_completed = %v, want 100", stats)
				}
			}

			// A client cannot ask for copies: its mirror header is stripped
			// before the route is picked and never kept by the splitter.
			before, _ := v2.Requests()
			cfgOff := strings.Replace(mirrorConfig, "percent: 10", "percent: 0", 1)
			writeFile(t, b.cfgPath, cfgOff)
			waitFor(t, 30*time.Second, "the 0 % mirror in force", func() bool {
				var svc struct {
					Mirror *struct {
						Percent float64 `json:"percent"`
					} `json:"mirror"`
				}
				return b.admin.Admin(ctx, http.MethodGet, "/v1/services/api", nil, &svc) == nil && svc.Mirror != nil && svc.Mirror.Percent == 0
			})
			if _, err := b.client.Count(ctx, 200, 4, func(int) http.Header { return hdr("x-mirror-version", "v2") }); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
			if after, _ := v2.Requests(); after != before {
				t.Fatalf("v2 received %d requests from clients asking for a mirror", after-before)
			}

			// Mirror again, then remove the block: no copy after the reload.
			writeFile(t, b.cfgPath, mirrorConfig)
			waitFor(t, 30*time.Second, "copies again", func() bool {
				if _, err := b.client.Count(ctx, 20, 2, nil); err != nil {
					t.Fatal(err)
				}
				all, _ := v2.Requests()
				return all > before
			})
			writeFile(t, b.cfgPath, strings.Replace(mirrorConfig, "    mirror: {version: v2, percent: 10}\n", "", 1))
			waitFor(t, 30*time.Second, "the mirror removed", func() bool {
				var svc map[string]any
				return b.admin.Admin(ctx, http.MethodGet, "/v1/services/api", nil, &svc) == nil && svc["mirror"] == nil
			})
			time.Sleep(500 * time.Millisecond)
			stopped, _ := v2.Requests()
			if _, err := b.client.Count(ctx, 300, 4, nil); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
			if all, _ := v2.Requests(); all != stopped {
				t.Fatalf("v2 received %d copies after the mirror was removed", all-stopped)
			}
		})
	}
}
