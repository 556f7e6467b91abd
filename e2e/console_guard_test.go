package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/rollout"
)

// TestConsoleShowsGateAndLatency: a rollout judged on latency waits on a
// confirm_step hook answering 403; the page shows the waiting state, the
// hook it waits on with its last answer, and the verdict's latency
// figures, live.
func TestConsoleShowsGateAndLatency(t *testing.T) {
	requireChromium(t)
	gate := newHookReceiver(t, http.StatusForbidden, nil)
	b := startBed(t, envoy.ModeExtProc, fmt.Sprintf(`
services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 100, v2: 0}
    rollout:
      steps: [25, 50, 100]
      hold: 1s
      guard: {window: 1s, min_requests: 10, max_error_rate: 1, max_error_ratio: 2, max_latency_ms: 500, max_latency_ratio: 5}
      webhooks:
        - {name: approve, type: confirm_step, url: %q, poll: 300ms}
`, gate.srv.URL+"/approve"), []string{"--console-interval", "500ms", "--signals-interval", "100ms"}, true, nil)
	startTraffic(t, b.client, 2)
	p := openConsole(t, b.splitter.AdminURL(""))
	b.act(t, rollout.Start)
	s := b.waitRollout(t, 30*time.Second, "the wait", func(s rollout.Status) bool { return s.State == rollout.Waiting && s.Waiting.Asked > 0 })
	p.waitJS(5*time.Second, "the waiting state", `document.querySelector('article[data-service="api"] [data-role="rollout-state"]').getAttribute('data-state')==='waiting'`)
	p.waitJS(5*time.Second, "the hook and its answer", `((document.querySelector('article[data-service="api"] [data-role="waiting-answer"]')||{}).textContent||'').indexOf('403 Forbidden')>=0`)
	if h := p.text(svc(`[data-role="waiting-hook"]`)); h != "approve" {
		t.Errorf("waiting hook on the page %q", h)
	}
	p.waitJS(5*time.Second, "the latency figures", `/Latency p99: canary v2 [0-9.]+ ms \([0-9,]+ timed\), stable v1 [0-9.]+ ms/.test((document.querySelector('article[data-service="api"] [data-role="latency"]')||{}).textContent||'')`)
	if w := p.text(svc(`[data-role="waiting"]`)); !strings.Contains(w, "Waiting before step 2 (50 %) on hook approve") {
		t.Errorf("waiting box %q (status %+v)", w, s.Waiting)
	}
	p.screenshot("console-waiting.png", desktopWidth, desktopHeight, false)
	p.onlyLocal()
}
