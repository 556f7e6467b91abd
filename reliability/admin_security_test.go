package reliability

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/settings"
)

// consoleState is the part of GET /v1/console/state these tests read.
type consoleState struct {
	Audit    []auditEvent `json:"audit"`
	Refusals struct {
		Count  uint64       `json:"count"`
		Recent []auditEvent `json:"recent"`
	} `json:"refusals"`
}

type auditEvent struct {
	Message string `json:"message"`
	Attrs   []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"attrs"`
}

func (e auditEvent) attr(key string) string {
	for _, a := range e.Attrs {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

// consoleState reads the console's document anonymously, as any page or
// script that reaches the admin port can.
func (st *stack) consoleState(t *testing.T) (consoleState, string) {
	t.Helper()
	r := st.do(t, request{method: http.MethodGet, path: "/v1/console/state", noAuth: true})
	if r.code != http.StatusOK {
		t.Fatalf("GET /v1/console/state = %d %s", r.code, r.body)
	}
	var s consoleState
	if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatalf("GET /v1/console/state: %v", err)
	}
	return s, string(r.body)
}

// offlineFingerprints are what an unkeyed digest of token would show:
// hex prefixes of its sha256 from 4 bytes up (the old fingerprint was 6).
func offlineFingerprints(token string) []string {
	sum := sha256.Sum256([]byte(token))
	full := hex.EncodeToString(sum[:])
	var out []string
	for n := 8; n <= len(full); n += 2 {
		out = append(out, full[:n])
	}
	return out
}

var fingerprintRE = regexp.MustCompile(`^token:[0-9a-f]{12}$`)

// TestTokenFingerprintIsKeyed (issue 16, item 10): the fingerprint that
// names a token in the audit log and in the anonymous console state and
// rollout views cannot be checked offline against a guessed token: it is
// keyed with a secret of the process. It still tells changes made with the
// same token apart from changes made after a rotation.
func TestTokenFingerprintIsKeyed(t *testing.T) {
	tokenPath := filepath.Join(t.TempDir(), "token")
	writeToken := func(tok string) {
		t.Helper()
		if err := writeAtomic(tokenPath, []byte(tok+"\n")); err != nil {
			t.Fatal(err)
		}
	}
	writeToken("changeme")
	st := startStack(t, baseConfig(t), func(s *settings.Settings) { s.AdminTokenFile = tokenPath })
	change := func(tok string, pct int) string {
		t.Helper()
		r := st.do(t, request{method: http.MethodPut, path: "/v1/services/api/canary",
			body: []byte(`{"percentage": ` + strconv.Itoa(pct) + `}`), header: map[string]string{"Authorization": "Bearer " + tok}})
		if r.code != http.StatusOK {
			t.Fatalf("PUT canary with the token = %d %s", r.code, r.body)
		}
		s, _ := st.consoleState(t)
		if len(s.Audit) == 0 || s.Audit[0].attr("result") != "success" {
			t.Fatalf("the console's newest audit event is not the change: %+v", s.Audit)
		}
		return s.Audit[0].attr("actor")
	}

	first := change("changeme", 30)
	if !fingerprintRE.MatchString(first) {
		t.Fatalf("actor %q, want token:<12 hex digits>", first)
	}
	if again := change("changeme", 35); again != first {
		t.Errorf("the same token in the same process is named %q, then %q", first, again)
	}
	writeToken("changeme-rotated")
	rotated := change("changeme-rotated", 40)
	if rotated == first || !fingerprintRE.MatchString(rotated) {
		t.Errorf("after rotation the actor is %q (before: %q), want another fingerprint", rotated, first)
	}

	// Nothing an anonymous reader or the log shows can be matched with a
	// digest of a guessed token.
	_, state := st.consoleState(t)
	services := st.do(t, request{method: http.MethodGet, path: "/v1/services", noAuth: true})
	views := map[string]string{"GET /v1/console/state": state, "GET /v1/services": string(services.body), "the log": st.logs.String()}
	for _, tok := range []string{"changeme", "changeme-rotated"} {
		for where, text := range views {
			for _, fp := range offlineFingerprints(tok) {
				if strings.Contains(text, fp) {
					t.Errorf("%s holds %s, a prefix of sha256(%q)", where, fp, tok)
					break
				}
			}
			if strings.Contains(text, tok) {
				t.Errorf("%s holds the token %q", where, tok)
			}
		}
	}

	// The key belongs to the process: another process names the same
	// token differently.
	writeToken("changeme")
	other := startStack(t, baseConfig(t), func(s *settings.Settings) { s.AdminTokenFile = tokenPath })
	r := other.do(t, request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 30}`),
		header: map[string]string{"Authorization": "Bearer changeme"}})
	if r.code != http.StatusOK {
		t.Fatalf("PUT canary on the second process = %d %s", r.code, r.body)
	}
	s, _ := other.consoleState(t)
	if got := s.Audit[0].attr("actor"); got == first || !fingerprintRE.MatchString(got) {
		t.Errorf("a second process names the token %q, the first %q: want a per-process key", got, first)
	}
}

// TestRefusalsKeptApartFromChanges (issue 16, item 11): anonymous attempts
// refused at the door (no token, a wrong one, a mutation method on a read
// route) do not push the real changes out of the console's recent
// changes; they are counted and the last few shown apart.
func TestRefusalsKeptApartFromChanges(t *testing.T) {
	st := startStack(t, baseConfig(t), func(s *settings.Settings) { s.AdminToken = testToken })
	if r := st.do(t, canary(`{"percentage": 30}`)); r.code != http.StatusOK {
		t.Fatalf("the real change = %d %s", r.code, r.body)
	}
	if r := st.do(t, canary(`{"percentage": 140}`)); r.code != http.StatusBadRequest {
		t.Fatalf("the operator's bad change = %d %s", r.code, r.body)
	}
	const anonymous = 120 // more than the 50 recent changes the console keeps
	for i := range anonymous {
		req := request{method: http.MethodPut, path: "/v1/services/api/canary", body: []byte(`{"percentage": 99}`), noAuth: true}
		switch i % 3 {
		case 1:
			req.header = map[string]string{"Authorization": "Bearer guess-" + strconv.Itoa(i)}
		case 2:
			req = request{method: http.MethodPost, path: "/v1/services/api/canary", body: []byte(`{}`), noAuth: true}
		}
		if r := st.do(t, req); r.code != http.StatusUnauthorized {
			t.Fatalf("anonymous attempt %d (%s %s) = %d %s, want 401", i, req.method, req.path, r.code, r.body)
		}
	}

	s, _ := st.consoleState(t)
	var changes, refused int
	for _, ev := range s.Audit {
		switch ev.attr("result") {
		case "success":
			changes++
		case "unauthorized", "forbidden":
			refused++
		}
	}
	if changes != 1 || refused != 0 {
		t.Errorf("recent changes hold %d successes and %d refusals, want the real change and no refusal: %+v", changes, refused, s.Audit)
	}
	if len(s.Audit) != 2 || s.Audit[0].attr("result") != "rejected" || s.Audit[1].attr("new") == "" {
		t.Errorf("recent changes %+v, want the operator's rejected change and the real one, newest first", s.Audit)
	}
	if s.Refusals.Count != anonymous {
		t.Errorf("refusals counted %d, want %d", s.Refusals.Count, anonymous)
	}
	if n := len(s.Refusals.Recent); n == 0 || n > 10 {
		t.Errorf("%d recent refusals shown, want a few (1 to 10)", n)
	}
	for _, ev := range s.Refusals.Recent {
		if ev.attr("result") != "unauthorized" || ev.attr("remote") == "" {
			t.Errorf("recent refusal %+v, want result unauthorized with the peer", ev)
		}
	}
	if v, _ := st.metric(t, `splitter_admin_mutations_total{result="unauthorized"}`); v != anonymous {
		t.Errorf("splitter_admin_mutations_total{result=\"unauthorized\"} = %v, want %d", v, anonymous)
	}
}

// crossSiteCase is one browser (or CLI) context a request comes from.
type crossSiteCase struct {
	name    string
	site    string // Sec-Fetch-Site; "" for none
	origin  string // Origin; "" for none, "self" for the admin port's own
	refused bool
}

func crossSiteCases(adminAddr string) []crossSiteCase {
	_, port, _ := strings.Cut(adminAddr, ":")
	return []crossSiteCase{
		{name: "CLI (no Sec-Fetch-Site, no Origin)"},
		{name: "same-origin (the console page)", site: "same-origin", origin: "self"},
		{name: "same-origin GET without Origin", site: "same-origin"},
		{name: "none (typed in the address bar)", site: "none"},
		{name: "same-origin behind a proxy that rewrites Host", site: "same-origin", origin: "http://splitter.internal"},
		{name: "cross-site", site: "cross-site", refused: true},
		{name: "cross-site with an Origin", site: "cross-site", origin: "http://evil.example", refused: true},
		{name: "cross-site claiming the own Origin", site: "cross-site", origin: "self", refused: true},
		{name: "same-site (another port on this host)", site: "same-site", origin: "http://127.0.0.1:1", refused: true},
		{name: "unknown Sec-Fetch-Site value", site: "cross-origin", refused: true},
		{name: "old browser, own Origin", origin: "self"},
		{name: "old browser, own host over https (TLS proxy)", origin: "https://" + adminAddr},
		{name: "old browser, foreign Origin", origin: "http://evil.example", refused: true},
		{name: "old browser, Origin null (sandboxed frame, file://)", origin: "null", refused: true},
		{name: "old browser, another port on loopback", origin: "http://127.0.0.1:1", refused: true},
		{name: "old browser, localhost for 127.0.0.1", origin: "http://localhost:" + port, refused: true},
		{name: "old browser, unparsable Origin", origin: "http://%zz", refused: true},
	}
}

// crossSiteTarget is one endpoint the cross-site rule guards (or not).
type crossSiteTarget struct {
	name    string
	req     request
	guarded bool // refused cross-site; else always answered
	ok      int  // the status when allowed
	stream  bool // read the headers only
}

func crossSiteTargets() []crossSiteTarget {
	return []crossSiteTarget{
		{name: "pprof cmdline", req: request{method: http.MethodGet, path: "/debug/pprof/cmdline"}, guarded: true, ok: 200},
		{name: "pprof heap", req: request{method: http.MethodGet, path: "/debug/pprof/heap?debug=1"}, guarded: true, ok: 200},
		{name: "PUT canary", req: canary(`{"percentage": 35}`), guarded: true, ok: 200},
		{name: "DELETE override", req: request{method: http.MethodDelete, path: "/v1/services/api/override"}, guarded: true, ok: 200},
		{name: "POST reload", req: request{method: http.MethodPost, path: "/v1/reload", body: []byte(`{}`)}, guarded: true, ok: 200},
		{name: "console event stream", req: request{method: http.MethodGet, path: "/v1/console/events"}, guarded: true, ok: 200, stream: true},
		{name: "console page (a link from a runbook)", req: request{method: http.MethodGet, path: "/ui/"}, ok: 200},
		{name: "console state", req: request{method: http.MethodGet, path: "/v1/console/state"}, ok: 200},
		{name: "services", req: request{method: http.MethodGet, path: "/v1/services"}, ok: 200},
	}
}

// send makes one request from context c and returns its status and error
// message; a stream's body is not read.
func (st *stack) send(t *testing.T, c crossSiteCase, tg crossSiteTarget) (int, string) {
	t.Helper()
	req := tg.req
	req.header = map[string]string{}
	if c.site != "" {
		req.header["Sec-Fetch-Site"] = c.site
	}
	switch c.origin {
	case "":
	case "self":
		req.header["Origin"] = "http://" + st.addrs.Admin
	default:
		req.header["Origin"] = c.origin
	}
	if !tg.stream {
		r := st.do(t, req)
		return r.code, r.err.Error
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, req.method, "http://"+st.addrs.Admin+req.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range req.header {
		hr.Header.Set(k, v)
	}
	resp, err := st.http.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", req.method, req.path, err)
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	if resp.StatusCode >= 400 {
		_ = json.NewDecoder(resp.Body).Decode(&e)
	}
	return resp.StatusCode, e.Error
}

// TestCrossSiteRefused (issue 16, item 12): a request a browser marks as
// coming from another site (Sec-Fetch-Site), or whose Origin is not the
// admin port's own, is refused on pprof, on every mutation and on the
// console's event stream, with or without a token; the CLI (no such
// headers), the console page's own requests and reads keep working.
func TestCrossSiteRefused(t *testing.T) {
	for _, withToken := range []bool{false, true} {
		name := "no token, loopback Host"
		if withToken {
			name = "with the token"
		}
		t.Run(name, func(t *testing.T) {
			st := startStack(t, baseConfig(t), func(s *settings.Settings) {
				s.Pprof = true
				if withToken {
					s.AdminToken = testToken
				}
			})
			for _, tg := range crossSiteTargets() {
				t.Run(tg.name, func(t *testing.T) {
					for _, c := range crossSiteCases(st.addrs.Admin) {
						t.Run(c.name, func(t *testing.T) {
							refusals := len(st.auditLines())
							code, msg := st.send(t, c, tg)
							if !c.refused || !tg.guarded {
								if code != tg.ok {
									t.Fatalf("status %d (%s), want %d", code, msg, tg.ok)
								}
								return
							}
							if code != http.StatusForbidden || !strings.Contains(msg, "cross-site") {
								t.Fatalf("status %d (%q), want 403 naming the cross-site request", code, msg)
							}
							if tg.req.method != http.MethodGet {
								got := st.auditLines()[refusals:]
								if len(got) != 1 || got[0]["result"] != "forbidden" {
									t.Errorf("audit lines %v, want one with result forbidden", got)
								}
							}
						})
					}
				})
			}
			// What the refused mutations tried never happened: the
			// canary the allowed ones set is the one in force, and no
			// refused change reached the recent changes.
			s, _ := st.consoleState(t)
			for _, ev := range s.Audit {
				if r := ev.attr("result"); r == "forbidden" || r == "unauthorized" {
					t.Errorf("a refusal in the recent changes: %+v", ev)
				}
			}
			if s.Refusals.Count == 0 {
				t.Error("no refusal counted")
			}
		})
	}
}
