package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
)

// The operator console (/ui/) in a real headless Chromium, against a real
// splitter in front of a real Envoy.

// consoleConfig: api at 80/20 with a rollout that steps 25, 50, 100 and
// holds each step for an hour (only the guard moves it in these tests),
// judged over 1s windows.
const consoleConfig = `
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    rollout:
      steps: [25, 50, 100]
      hold: 1h
      guard: {window: 1s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2}
`

// Desktop and phone viewports.
const (
	desktopWidth, desktopHeight = 1280, 900
	phoneWidth, phoneHeight     = 390, 844
)

// requireChromium skips (or, under CI, fails) a test that needs Chromium
// when none is installed.
func requireChromium(t *testing.T) {
	t.Helper()
	if found.chromiumErr == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%v (CI is set, so this is a failure; run `make chromium`)", found.chromiumErr)
	}
	t.Skipf("%v", found.chromiumErr)
}

// page is one browser tab on the console, with every URL the tab asked for.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string // http://admin-addr

	mu   sync.Mutex
	urls []string
}

// openConsole starts a headless Chromium (its own profile, no background
// networking) and opens base/ui/ at the desktop width.
func openConsole(t *testing.T, base string) *page {
	t.Helper()
	requireChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(found.chromiumBin),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(desktopWidth, desktopHeight),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { _ = chromedp.Cancel(ctx); cancelTab() })
	p := &page{t: t, ctx: ctx, base: base}
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			p.mu.Lock()
			p.urls = append(p.urls, e.Request.URL)
			p.mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("starting Chromium (%s): %v", found.chromiumBin, err)
	}
	p.do(chromedp.EmulateViewport(desktopWidth, desktopHeight), chromedp.Navigate(base+"/ui/"))
	p.waitJS(10*time.Second, "the api service on the page", `document.querySelector('article[data-service="api"] td[data-role="weight"]') !== null`)
	// A reload would lose this; the live-update checks look for it.
	p.do(chromedp.Evaluate[chromedp.Void](`window.__sameDocument = true`))
	return p
}

// do runs actions, each call bounded so that a stuck browser fails the
// test instead of hanging it.
func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatal(err)
	}
}

// js evaluates expr and decodes its value into T.
func js[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitJS waits (bounded) until expr is truthy on the page.
func (p *page) waitJS(timeout time.Duration, what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		p.t.Fatalf("waiting %v for %s on the page: %v\npage text:\n%s", timeout, what, err, js[string](p, `document.body.innerText`))
	}
}

// text is the text of the first element matching the CSS selector, "" if none.
func (p *page) text(sel string) string {
	p.t.Helper()
	return js[string](p, fmt.Sprintf(`(function(){var e=document.querySelector(%q);return e?e.textContent:""})()`, sel))
}

// typeInto empties the field matching the CSS selector, focuses it and
// types text on the keyboard.
func (p *page) typeInto(sel, text string) {
	p.t.Helper()
	p.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(function(){var e=document.querySelector(%q);e.value='';e.dispatchEvent(new Event('input'));e.focus()})()`, sel)))
	if text != "" {
		p.do(chromedp.KeyEvent(text))
	}
}

// screenshot writes a full-page PNG at the viewport's width into the
// screenshot directory and returns its path.
func (p *page) screenshot(name string, width, height int64, mobile bool) string {
	p.t.Helper()
	opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(1)}
	if mobile {
		opts = append(opts, chromedp.EmulateMobile)
	}
	p.do(chromedp.EmulateViewport(width, height, opts...), chromedp.Sleep(300*time.Millisecond))
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(screenshotDir(p.t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot (%dpx wide): %s", width, path)
	return path
}

// screenshotDir is $SPLITTER_SCREENSHOTS, else .cache/console-screenshots
// under the repository (gitignored), created if needed.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SPLITTER_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(found.root, ".cache", "console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// onlyLocal fails the test if the tab asked for anything but the admin
// port (or an inline data: URL).
func (p *page) onlyLocal() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.urls) == 0 {
		p.t.Fatal("no request seen: the network listener is not working")
	}
	for _, u := range p.urls {
		if !strings.HasPrefix(u, p.base+"/") && !strings.HasPrefix(u, "data:") {
			p.t.Errorf("the page requested %s, outside the admin port %s", u, p.base)
		}
	}
}

// svc prefixes a selector with the api service's card.
func svc(sel string) string { return `article[data-service="api"] ` + sel }

// weights reads a service's effective weights from the admin API.
func (b *bed) weights(t *testing.T, service string) map[string]float64 {
	t.Helper()
	var v struct {
		Weights map[string]float64 `json:"weights"`
	}
	if err := b.splitter.Admin(t.Context(), http.MethodGet, "/v1/services/"+service, nil, &v); err != nil {
		t.Fatal(err)
	}
	return v.Weights
}

// pageWeights reads the "in force" column of the api card.
func (p *page) pageWeights() map[string]float64 {
	p.t.Helper()
	raw := js[map[string]string](p, `(function(){var o={};document.querySelectorAll('article[data-service="api"] tr[data-version]').forEach(function(r){o[r.getAttribute('data-version')]=r.querySelector('[data-role="weight"]').textContent});return o})()`)
	out := map[string]float64{}
	for v, s := range raw {
		f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, "%")), 64)
		if err != nil {
			p.t.Fatalf("weight of %s on the page: %q", v, s)
		}
		out[v] = f
	}
	return out
}

// checkAccessible: every control has a label (its own text for buttons),
// every piece of text has a contrast of at least 4.5:1 against what is
// behind it, and nothing is wider than the viewport.
func (p *page) checkAccessible(viewport string) {
	p.t.Helper()
	unlabelled := js[[]string](p, `(function(){
		var bad=[];
		document.querySelectorAll('input,button,select,textarea,progress').forEach(function(e){
			if(e.offsetParent===null&&e.type!=='hidden')return;
			var named=(e.labels&&e.labels.length>0)||e.getAttribute('aria-label')||e.getAttribute('aria-labelledby')||
				(e.tagName==='BUTTON'&&e.textContent.trim()!=='');
			if(!named)bad.push(e.outerHTML.slice(0,120));
		});
		return bad})()`)
	for _, e := range unlabelled {
		p.t.Errorf("%s: control without a label: %s", viewport, e)
	}
	lowContrast := js[[]string](p, `(function(){
		function rgb(s){var m=s.match(/rgba?\(([^)]+)\)/);if(!m)return null;var a=m[1].split(',').map(Number);return{r:a[0],g:a[1],b:a[2],a:a.length>3?a[3]:1}}
		function lum(c){function ch(v){v/=255;return v<=0.03928?v/12.92:Math.pow((v+0.055)/1.055,2.4)}return 0.2126*ch(c.r)+0.7152*ch(c.g)+0.0722*ch(c.b)}
		function bg(e){for(;e;e=e.parentElement){var c=rgb(getComputedStyle(e).backgroundColor);if(c&&c.a>0.5)return c}return{r:255,g:255,b:255,a:1}}
		var bad=[];
		var walker=document.createTreeWalker(document.body,NodeFilter.SHOW_TEXT);
		for(var n=walker.nextNode();n;n=walker.nextNode()){
			if(!n.textContent.trim())continue;
			var e=n.parentElement;if(!e||e.offsetParent===null&&getComputedStyle(e).position!=='fixed')continue;
			var r=e.getBoundingClientRect();if(r.width===0||r.height===0||r.right<0)continue;
			var fg=rgb(getComputedStyle(e).color),b=bg(e);
			var l1=lum(fg),l2=lum(b),ratio=(Math.max(l1,l2)+0.05)/(Math.min(l1,l2)+0.05);
			if(ratio<4.5)bad.push(ratio.toFixed(2)+': '+n.textContent.trim().slice(0,40)+' ('+getComputedStyle(e).color+' on '+JSON.stringify(b)+')');
		}
		return bad})()`)
	for _, e := range lowContrast {
		p.t.Errorf("%s: text below 4.5:1 contrast: %s", viewport, e)
	}
	if w := js[[]int](p, `[document.documentElement.scrollWidth, window.innerWidth]`); w[0] > w[1] {
		p.t.Errorf("%s: the page is %dpx wide in a %dpx viewport (horizontal scrolling)", viewport, w[0], w[1])
	}
}

// TestConsoleShowsAndMovesTheSplit: the page shows the service and the
// weights the admin API reports; moving the canary control with the
// keyboard changes the split the admin API reports and the traffic Envoy
// sends, and the page shows the per-version traffic Envoy counted and the
// decision reasons. Screenshots at desktop and phone width.
func TestConsoleShowsAndMovesTheSplit(t *testing.T) {
	requireChromium(t)
	b := startBed(t, envoy.ModeExtProc, consoleConfig, []string{"--console-interval", "500ms"}, true, nil)
	p := openConsole(t, b.splitter.AdminURL(""))

	if got, want := p.pageWeights(), b.weights(t, "api"); !mapsEqual(got, want) || want["v2"] != 20 {
		t.Fatalf("the page shows %v, the admin API %v (want v1 80, v2 20)", got, want)
	}
	if s := p.text(`#config-dl`); !strings.Contains(s, b.cfgPath) {
		t.Errorf("configuration section %q does not name the file %s", s, b.cfgPath)
	}
	p.waitJS(5*time.Second, "the idle rollout", `document.querySelector('article[data-service="api"] [data-role="rollout-state"]').getAttribute('data-state')==='idle'`)

	// Keyboard only: focus the slider, PageUp three times (10 points
	// each), Enter. Live updates (one a second or more: the sampler's
	// time moves) must leave the focus where it is.
	p.do(chromedp.Focus(svc(`input[data-role="canary-range"]`)), chromedp.Sleep(1500*time.Millisecond))
	if !js[bool](p, `document.activeElement === document.querySelector('article[data-service="api"] input[data-role="canary-range"]')`) {
		t.Fatal("live updates took the focus off the canary slider")
	}
	p.do(chromedp.KeyEvent(kb.PageUp), chromedp.KeyEvent(kb.PageUp), chromedp.KeyEvent(kb.PageUp))
	if v := js[string](p, `document.querySelector('article[data-service="api"] input[data-role="canary-number"]').value`); v != "50" {
		t.Fatalf("after PageUp x3 the percentage field says %q, want 50", v)
	}
	p.do(chromedp.KeyEvent(kb.Enter))
	p.waitJS(5*time.Second, "the canary change confirmed", `document.querySelector('article[data-service="api"] [data-role="canary-msg"]').textContent.indexOf('Done')===0`)
	if w := b.weights(t, "api"); w["v1"] != 50 || w["v2"] != 50 {
		t.Fatalf("after the page's change the admin API reports %v, want v1 50, v2 50", w)
	}
	assertExactSplit(t, b, 200, 50, nil)
	p.waitJS(3*time.Second, "50 % in force and the override badge", `document.querySelector('article[data-service="api"] tr[data-version="v2"] [data-role="weight"]').textContent==='50 %' && document.querySelector('article[data-service="api"] [data-role="override"]')!==null`)

	// Envoy's per-cluster counters, sampled every 500ms, reach the page;
	// so do the decisions' reasons.
	p.waitJS(10*time.Second, "v2's request rate", `parseFloat(document.querySelector('article[data-service="api"] .traffic-row[data-version="v2"] [data-role="rate"]').textContent)>0`)
	if e := p.text(svc(`[data-role="traffic-error"]`)); e != "" {
		t.Errorf("traffic error on the page: %s", e)
	}
	p.waitJS(5*time.Second, "weighted decisions in the mix", `/weighted \(weighted_routing\): [1-9]/.test(document.querySelector('article[data-service="api"] li[data-reason="weighted_routing"]').textContent)`)
	p.waitJS(3*time.Second, "the change in the audit list", `/admin mutation.*canary.*success/.test(document.getElementById('audit-list').textContent)`)

	// A runtime mirror (a dark launch) shows its share on the card.
	if err := b.admin.Admin(t.Context(), http.MethodPut, "/v1/services/api/mirror", map[string]any{"version": "v2", "percent": 10}, nil); err != nil {
		t.Fatal(err)
	}
	p.waitJS(3*time.Second, "the mirror badge", `(document.querySelector('article[data-service="api"] [data-role="mirror"]')||{}).textContent==='mirror 10 % \u2192 v2 (runtime)'`)
	// So does a mirror route, with its conditions and owner in its title.
	mirrorRoute := map[string]any{"when": []map[string]string{{"header": "x-canary", "exact": "true"}}, "version": "v2", "percent": 50, "owner": "argo-rollouts:shop/api"}
	if err := b.admin.Admin(t.Context(), http.MethodPut, "/v1/services/api/mirror-routes/canary-mirror", mirrorRoute, nil); err != nil {
		t.Fatal(err)
	}
	p.waitJS(3*time.Second, "the mirror route badge", `(function(){var e=document.querySelector('article[data-service="api"] [data-role="mirror-route"][data-name="canary-mirror"]');`+
		`return !!e && e.textContent==='mirror 50 % \u2192 v2 (canary-mirror)' && e.title.indexOf('header x-canary exact "true"')>0 && e.title.indexOf('argo-rollouts:shop/api')>0})()`)
	if !js[bool](p, `window.__sameDocument === true`) {
		t.Error("the page was reloaded")
	}

	p.checkAccessible("desktop")
	p.screenshot("console-desktop.png", desktopWidth, desktopHeight, false)
	p.screenshot("console-phone.png", phoneWidth, phoneHeight, true)
	p.checkAccessible("phone")
	p.do(chromedp.EmulateViewport(360, 740, chromedp.EmulateScale(1), chromedp.EmulateMobile), chromedp.Sleep(200*time.Millisecond))
	if w := js[[]int](p, `[document.documentElement.scrollWidth, window.innerWidth]`); w[0] > w[1] {
		t.Errorf("at 360px the page is %dpx wide (horizontal scrolling)", w[0])
	}
	if c := js[string](p, `document.cookie`); c != "" {
		t.Errorf("document.cookie = %q, want none", c)
	}
	p.onlyLocal()
}

// TestConsoleShowsRollbackLive: a rollout started from the page's button
// progresses; when the canary starts failing the guard rolls it back, and
// the page shows it within 2 s of the admin API reporting it, without a
// reload.
func TestConsoleShowsRollbackLive(t *testing.T) {
	requireChromium(t)
	b := startBed(t, envoy.ModeExtProc, consoleConfig, []string{"--console-interval", "500ms", "--signals-interval", "100ms"}, true, nil)
	startTraffic(t, b.client, 2)
	p := openConsole(t, b.splitter.AdminURL(""))

	p.do(chromedp.Click(svc(`button[data-action="start"]`)))
	p.waitJS(5*time.Second, "the rollout progressing", `document.querySelector('article[data-service="api"] [data-role="rollout-state"]').getAttribute('data-state')==='progressing'`)
	if s := b.rollout(t); s.State != rollout.Progressing || s.Step != 1 {
		t.Fatalf("after the page's Start the admin API reports %s at step %d", s.State, s.Step)
	}
	p.waitJS(10*time.Second, "a healthy verdict", `(document.querySelector('article[data-service="api"] [data-role="verdict"]')||{}).textContent==='healthy'`)

	b.backends[1].Fail(50)
	s := b.waitRollout(t, 30*time.Second, "the rollback", func(s rollout.Status) bool { return s.State != rollout.Progressing })
	if s.State != rollout.RolledBack {
		t.Fatalf("after v2 started failing: %s, want rolled_back", s.State)
	}
	seen := time.Now()
	p.waitJS(2*time.Second, "the rollback (within 2 s of the admin API)", `document.querySelector('article[data-service="api"] [data-role="rollout-state"]').getAttribute('data-state')==='rolled_back'`)
	t.Logf("the page showed the rollback %v after the admin API reported it", time.Since(seen).Round(10*time.Millisecond))
	if !js[bool](p, `window.__sameDocument === true`) {
		t.Fatal("the page was reloaded")
	}
	if v := p.text(svc(`[data-role="verdict"]`)); v != "failing" {
		t.Errorf("verdict on the page %q, want failing", v)
	}
	p.waitJS(3*time.Second, "the transition in the audit list", `/rollout transition.*rolled_back/.test(document.getElementById('audit-list').textContent)`)
	p.waitJS(5*time.Second, "v2's errors in the traffic panel", `parseFloat(document.querySelector('article[data-service="api"] .traffic-row[data-version="v2"] [data-role="error-rate"]').textContent)>0`)
	p.screenshot("console-rollback.png", desktopWidth, desktopHeight, false)
	p.onlyLocal()
}

// TestConsoleTokenErrors: with an admin token set, a change from the page
// without the token or with a wrong one shows the refusal in words next
// to the control and changes nothing, and the page counts the attempts
// under "Refused attempts", not in the recent changes; with the right
// token it works. The token is sent as a bearer header and never lands in
// a cookie.
func TestConsoleTokenErrors(t *testing.T) {
	requireChromium(t)
	const token = "console-test-token"
	b := startBed(t, envoy.ModeExtProc, consoleConfig, []string{"--admin-token", token}, true, nil)
	b.splitter.Token = token
	p := openConsole(t, b.splitter.AdminURL(""))
	p.waitJS(3*time.Second, "the token requirement", `document.getElementById('auth-note').textContent.indexOf('requires the admin token')>=0`)

	setCanary := func(pct string) {
		p.typeInto(svc(`input[data-role="canary-number"]`), pct)
		p.do(chromedp.Click(svc(`button[data-role="canary-set"]`)))
	}
	for _, tc := range []struct {
		name, typed, want string
	}{
		{name: "no token", typed: "", want: "the admin token is missing (401)"},
		{name: "wrong token", typed: "not-the-token", want: "the admin token is wrong (401)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.t = t
			p.typeInto(`#token`, tc.typed)
			setCanary("40")
			p.waitJS(3*time.Second, "the refusal", fmt.Sprintf(`document.querySelector('article[data-service="api"] [data-role="canary-msg"]').textContent.indexOf(%q)>=0`, tc.want))
			if cls := js[string](p, `document.querySelector('article[data-service="api"] [data-role="canary-msg"]').className`); !strings.Contains(cls, "error") {
				t.Errorf("the refusal is not shown as an error (class %q)", cls)
			}
			if w := b.weights(t, "api"); w["v2"] != 20 {
				t.Errorf("a refused change moved the split: %v", w)
			}
			p.do(chromedp.Click(svc(`button[data-action="start"]`)))
			p.waitJS(3*time.Second, "the refused rollout action", fmt.Sprintf(`document.querySelector('article[data-service="api"] [data-role="rollout-msg"]').textContent.indexOf(%q)>=0`, tc.want))
			if s := b.rollout(t); s.State != rollout.Idle {
				t.Errorf("a refused start moved the rollout to %s", s.State)
			}
			p.screenshot("console-token-"+strings.ReplaceAll(tc.name, " ", "-")+".png", phoneWidth, phoneHeight, true)
		})
	}
	p.t = t
	// Two refused changes and two refused starts: counted apart, listed
	// apart, and none of them among the recent changes.
	p.waitJS(5*time.Second, "the refusals counted apart from the changes",
		`/^4 attempts refused/.test(document.getElementById('refusals-count').textContent) && `+
			`document.querySelectorAll('#refusals-list li[data-result="unauthorized"]').length===4 && `+
			`document.querySelectorAll('#audit-list li[data-result="unauthorized"]').length===0`)

	p.typeInto(`#token`, token)
	setCanary("40")
	p.waitJS(3*time.Second, "the accepted change", `document.querySelector('article[data-service="api"] [data-role="canary-msg"]').textContent.indexOf('Done')===0`)
	p.waitJS(3*time.Second, "the accepted change in the recent changes", `document.querySelectorAll('#audit-list li[data-result="success"]').length===1`)
	if w := b.weights(t, "api"); w["v1"] != 60 || w["v2"] != 40 {
		t.Fatalf("with the right token the admin API reports %v, want v1 60, v2 40", w)
	}
	if got := js[[]string](p, `[document.cookie, String(localStorage.length), String(sessionStorage.length)]`); got[0] != "" || got[1] != "0" || got[2] != "0" {
		t.Errorf("cookie %q, localStorage %s items, sessionStorage %s items: the token must stay in the page unless kept for the tab", got[0], got[1], got[2])
	}
	// Kept for the tab: in sessionStorage, still not in a cookie.
	p.do(chromedp.Click(`#token-keep`))
	if got := js[[]string](p, `[document.cookie, sessionStorage.getItem('splitter.console.token')||'']`); got[0] != "" || got[1] != token {
		t.Errorf("kept for the tab: cookie %q, sessionStorage %q", got[0], got[1])
	}
	p.onlyLocal()
}

// TestConsoleCrossSitePageRefused: a page on another site (localhost, for
// a console on 127.0.0.1: another host, so another site) that makes the
// operator's browser ask the admin port for a profile, a reload and the
// event stream is refused: the splitter counts a 403 for each, none is
// served, and the console (same-origin) still works and lists the refused
// reload under "Refused attempts". No token is set: the loopback Host the
// browser sends is the only other check.
func TestConsoleCrossSitePageRefused(t *testing.T) {
	requireChromium(t)
	b := startBed(t, envoy.ModeExtProc, consoleConfig, []string{"--pprof"}, false, nil)
	base := b.splitter.AdminURL("")
	p := openConsole(t, base)

	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>elsewhere</title><script>
var admin = %q;
fetch(admin + '/debug/pprof/cmdline', {mode: 'no-cors'}).catch(function () {});
fetch(admin + '/v1/reload', {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: '{}'}).catch(function () {});
new EventSource(admin + '/v1/console/events');
</script>`, base)
	}))
	t.Cleanup(elsewhere.Close)
	_, port, _ := strings.Cut(strings.TrimPrefix(elsewhere.URL, "http://"), ":")
	p.do(chromedp.Navigate("http://localhost:" + port + "/"))

	refused := []string{
		`splitter_admin_requests_total{code="403",endpoint="GET /debug/pprof/cmdline"}`,
		`splitter_admin_requests_total{code="403",endpoint="POST /v1/reload"}`,
		`splitter_admin_requests_total{code="403",endpoint="GET /v1/console/events"}`,
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		series := adminSeries(t, b.splitter.AdminURL("/metrics"))
		var missing []string
		for _, k := range refused {
			if series[k] < 1 {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			if v := series[`splitter_admin_requests_total{code="200",endpoint="GET /debug/pprof/cmdline"}`]; v != 0 {
				t.Errorf("pprof served %v times", v)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s the splitter has not refused %v", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}

	p.do(chromedp.Navigate(base + "/ui/"))
	p.waitJS(10*time.Second, "the refused reload under Refused attempts",
		`/^1 attempt refused/.test(document.getElementById('refusals-count').textContent) && `+
			`/POST \/v1\/reload.*forbidden/.test(document.getElementById('refusals-list').textContent)`)
	p.waitJS(5*time.Second, "the live stream on the console's own page", `document.getElementById('conn').getAttribute('data-conn')==='live'`)
}

// adminSeries reads every sample of the splitter_admin_ families at url.
func adminSeries(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, "splitter_admin_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// TestConsoleFleet: in etcd mode the page lists every replica with the
// revision it applied, as GET /v1/fleet does, and follows a change made
// on another replica.
func TestConsoleFleet(t *testing.T) {
	requireChromium(t)
	fb := newFleet(t, 2, false)
	a, other := fb.replicas[0], fb.replicas[1]
	p := openConsole(t, a.AdminURL(""))
	p.waitJS(5*time.Second, "both replicas", `document.querySelectorAll('#fleet tr[data-node]').length===2 && !document.getElementById('fleet').hidden`)

	if err := other.SetCanary(t.Context(), "api", 35); err != nil {
		t.Fatal(err)
	}
	var fleet struct {
		Replicas []struct {
			NodeID   string `json:"node_id"`
			Revision int64  `json:"revision"`
		} `json:"replicas"`
	}
	waitFor(t, 5*time.Second, "both replicas to apply the change", func() bool {
		if err := a.Admin(t.Context(), http.MethodGet, "/v1/fleet", nil, &fleet); err != nil {
			t.Fatal(err)
		}
		return len(fleet.Replicas) == 2 && fleet.Replicas[0].Revision == fleet.Replicas[1].Revision && fleet.Replicas[0].Revision > 0 &&
			a.Admin(t.Context(), http.MethodGet, "/v1/services/api", nil, nil) == nil
	})
	for _, r := range fleet.Replicas {
		p.waitJS(3*time.Second, fmt.Sprintf("%s at revision %d", r.NodeID, r.Revision),
			fmt.Sprintf(`(document.querySelector('#fleet tr[data-node=%q] [data-role="revision"]')||{}).textContent===%q`, r.NodeID, strconv.FormatInt(r.Revision, 10)))
	}
	p.waitJS(3*time.Second, "35 % in force on replica a", `document.querySelector('article[data-service="api"] tr[data-version="v2"] [data-role="weight"]').textContent==='35 %'`)
	if !js[bool](p, `window.__sameDocument === true`) {
		t.Error("the page was reloaded")
	}
	p.screenshot("console-fleet.png", desktopWidth, desktopHeight, false)
	p.onlyLocal()
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
