package split_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/split"
)

const latencyAndHooks = `services:
  - name: api
    weights: {v1: 100, v2: 0}
    rollout:
      guard:
        max_latency_ms: 500
        max_latency_ratio: 1.5
        latency_percentile: 99.9
        failing_for: 3s
      webhooks:
        - name: smoke
          type: pre_step
          url: http://127.0.0.1:8080/check
          timeout: 2s
          secret_file: /etc/splitter/hook-secret
        - {name: approve, type: confirm_step, url: "https://ci.example.com/approve", poll: 5s}
        - {name: release, type: confirm_promotion, url: "http://127.0.0.1:8080/release"}
        - {name: chat, type: event, url: "http://127.0.0.1:8080/chat", retries: 0}
`

// TestLatencyAndHooksParsed: the guard's latency keys are read exactly
// (99.9 is 9990 hundredths), hooks take their defaults by type (timeout
// 5s, retries 2 for pre_step and event, poll 1s for the confirm hooks),
// and the secret file is listed with its line for the caller that reads
// files.
func TestLatencyAndHooksParsed(t *testing.T) {
	tb, err := split.Load([]byte(latencyAndHooks), processKeys)
	if err != nil {
		t.Fatal(err)
	}
	api, _ := tb.Service("api")
	g := api.Rollout.Guard
	if g.MaxLatencyMs != 500 || g.MaxLatencyRatio != 150 || g.LatencyPercentile != 9990 || g.FailingFor.D() != 3*time.Second || !g.JudgesLatency() {
		t.Errorf("guard %+v", g)
	}
	want := []split.Webhook{
		{Name: "smoke", Type: "pre_step", URL: "http://127.0.0.1:8080/check", Timeout: split.Duration(2 * time.Second), Retries: 2,
			SecretFile: "/etc/splitter/hook-secret", SecretFileLine: 15},
		{Name: "approve", Type: "confirm_step", URL: "https://ci.example.com/approve", Timeout: split.Duration(5 * time.Second), Poll: split.Duration(5 * time.Second)},
		{Name: "release", Type: "confirm_promotion", URL: "http://127.0.0.1:8080/release", Timeout: split.Duration(5 * time.Second), Poll: split.Duration(time.Second)},
		{Name: "chat", Type: "event", URL: "http://127.0.0.1:8080/chat", Timeout: split.Duration(5 * time.Second)},
	}
	if diff := cmp.Diff(want, api.Rollout.Webhooks); diff != "" {
		t.Errorf("hooks (-want +got):\n%s", diff)
	}
	if got := tb.Config().SecretFiles(); len(got) != 1 || got[0] != (split.SecretFile{
		Path: "services[0].rollout.webhooks[0].secret_file", File: "/etc/splitter/hook-secret", Line: 15,
	}) {
		t.Errorf("secret files %+v", got)
	}
	if n := len(api.Rollout.HooksOf(split.HookEvent)); n != 1 {
		t.Errorf("%d event hooks", n)
	}
	b, err := json.Marshal(api.Rollout.Guard)
	if err != nil {
		t.Fatal(err)
	}
	const wantGuard = `{"window":"10s","min_requests":100,"max_error_rate":1,"max_error_ratio":2,"max_latency_ms":500,"max_latency_ratio":1.5,"latency_percentile":99.9,"failing_for":"3s"}`
	if string(b) != wantGuard {
		t.Errorf("guard JSON\n got %s\nwant %s", b, wantGuard)
	}
	// A client of the admin API reads the guard back exactly.
	var back split.Guard
	if err := json.Unmarshal(b, &back); err != nil || back != g {
		t.Errorf("guard read back as %+v (%v), want %+v", back, err, g)
	}
	// A clone shares no hooks with the original.
	c := api.Rollout.Clone()
	c.Webhooks[0].Name = "changed"
	if api.Rollout.Webhooks[0].Name != "smoke" {
		t.Error("Clone shares the hooks")
	}
}

// TestHooksCheckedInCode: a configuration built in code (not parsed) is
// checked alike, without lines.
func TestHooksCheckedInCode(t *testing.T) {
	cfg := &split.Config{Services: []split.Service{{
		Name: "api", Weights: split.Weights{{Version: "v1", BasisPoints: 10000}, {Version: "v2"}},
	}}}
	r := split.DefaultRollout()
	r.Guard.LatencyPercentile = 10000
	r.Guard.MaxLatencyRatio = 50
	r.Webhooks = []split.Webhook{
		{Name: "a", Type: "event", URL: "gopher://x", Timeout: split.Duration(time.Second)},
		{Name: "a", Type: "later", URL: "http://h/", Timeout: 0},
		{Name: "g", Type: "confirm_step", URL: "http://h/", Timeout: split.Duration(time.Second)},
	}
	cfg.Services[0].Rollout = &r
	_, err := split.Compile(cfg)
	for _, want := range []string{
		"services[0].rollout.guard.latency_percentile: must be between 50 and 99.9 (got 100)",
		"services[0].rollout.guard.max_latency_ratio: must be between 1 and 1000 (got 0.5)",
		`services[0].rollout.webhooks[0].url: "gopher://x": a hook URL must be http:// or https://`,
		`services[0].rollout.webhooks[1].name: hook name "a" is used twice`,
		`services[0].rollout.webhooks[1].type: unknown hook type "later"`,
		"services[0].rollout.webhooks[1].timeout: must be between 10ms and 1m0s (got 0s)",
		"services[0].rollout.webhooks[2].poll: must be between 100ms and 1h0m0s (got 0s)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Compile: %v\nwant it to contain %q", err, want)
		}
	}
}
