package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// statusJSON is an answer of GET /v1/services/api/rollout.
const statusJSON = `{"service":"api","state":"progressing","canary":"v2","stable":"v1","step":2,"steps":4,"weight":25,
"since":"2026-01-02T03:04:05Z","held":"12s","hold":"1m0s","owns_weights":true,
"verdict":{"result":"healthy","at":"2026-01-02T03:04:17Z","covered":"10s","canary":{"requests":230,"errors":0},"stable":{"requests":700,"errors":1},
"canary_error_rate":0,"stable_error_rate":0.14,"reason":"canary error rate 0% (0 of 230) is not above max_error_rate 1%"},
"history":[{"at":"2026-01-02T03:03:05Z","from":"idle","to":"progressing","step":1,"weight":5,"actor":"token:abc","reason":"started"},
{"at":"2026-01-02T03:04:05Z","from":"progressing","to":"progressing","step":2,"weight":25,"actor":"rollout","reason":"healthy for 1m0s: next step"}],
"config":{"canary":"v2","steps":[5,25,50,100],"hold":"1m0s","guard":{"window":"10s","min_requests":100,"max_error_rate":1,"max_error_ratio":2},"on_failure":"rollback"}}`

type seen struct{ method, path, body, auth, contentType string }

func fakeAdmin(t *testing.T, status int, answer string) (addr string, got *seen) {
	t.Helper()
	got = &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		*got = seen{r.Method, r.URL.Path, string(b), r.Header.Get("Authorization"), r.Header.Get("Content-Type")}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(answer))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), got
}

func runRollout(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"rollout"}, args...))
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// waitingJSON is a waiting rollout judged on latency too.
const waitingJSON = `{"service":"api","state":"waiting","canary":"v2","stable":"v1","step":1,"steps":4,"weight":5,
"since":"2026-01-02T03:04:05Z","held":"70s","hold":"1m0s","owns_weights":true,
"verdict":{"result":"failing","at":"2026-01-02T03:05:15Z","covered":"10s","canary":{"requests":312,"errors":0},"stable":{"requests":900,"errors":0},
"canary_error_rate":0,"stable_error_rate":0,"reason":"canary p99 750 ms over 312 requests is above max_latency_ms 500 and above 1.5 x stable's 50 ms",
"latency":{"result":"failing","percentile":99,"canary":{"ms":750,"requests":312},"stable":{"ms":50,"requests":900},"reason":"…"},"failing_for":"1.25s"},
"waiting":{"next_step":2,"next_weight":25,"hook":"approve","type":"confirm_step","asked":7,"since":"2026-01-02T03:05:05Z",
"last_answer":"403 Forbidden: not yet","last_at":"2026-01-02T03:05:14Z","passed":["smoke"]},
"history":[],"config":{"canary":"v2","steps":[5,25,50,100],"hold":"1m0s","guard":{"window":"10s","min_requests":100,"max_error_rate":1,"max_error_ratio":2,"max_latency_ms":500,"latency_percentile":99,"failing_for":"3s"},"on_failure":"rollback"}}`

// The status of a waiting rollout names the hook and its last answer, and
// the verdict's latency figures and how long it has been failing.
func TestRolloutStatusWaiting(t *testing.T) {
	addr, _ := fakeAdmin(t, http.StatusOK, waitingJSON)
	out, err := runRollout(t, nil, "status", "api", "--admin-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"api: waiting, step 1 of 4",
		"held 1m10s of 1m0s",
		"waiting before step 2 (25%) on hook approve (confirm_step), asked 7 times since 03:05:05",
		"last answer (03:05:14): 403 Forbidden: not yet",
		"answered 2xx: smoke",
		"latency p99: canary 750 ms (312 timed), stable 50 ms (900 timed)",
		"failing for 1.25s of failing_for 3s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

func TestRolloutCommand(t *testing.T) {
	addr, got := fakeAdmin(t, http.StatusOK, statusJSON)
	out, err := runRollout(t, nil, "status", "api", "--admin-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got.method != http.MethodGet || got.path != "/v1/services/api/rollout" {
		t.Errorf("status sent %s %s", got.method, got.path)
	}
	for _, want := range []string{
		"api: progressing, step 2 of 4, canary v2 at 25% (stable v1)",
		"held 12s of 1m0s",
		"owns the weights",
		"verdict: healthy (03:04:17 over 10s): canary error rate 0% (0 of 230)",
		"idle -> progressing",
		"healthy for 1m0s: next step",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	out, err = runRollout(t, map[string]string{"SPLITTER_ADMIN_ADDR": addr, "SPLITTER_ADMIN_TOKEN": "s3cret"}, "pause", "api", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if got.method != http.MethodPost || got.body != `{"action":"pause"}` || got.auth != "Bearer s3cret" || got.contentType != "application/json" {
		t.Errorf("pause sent %+v", got)
	}
	if !strings.Contains(out, `"state": "progressing"`) {
		t.Errorf("--json output:\n%s", out)
	}
}

// In fleet mode the status names the leader and this replica, the
// replicas whose counts the verdict summed, and who made each transition.
func TestRolloutCommandFleet(t *testing.T) {
	answer := strings.Replace(statusJSON, `"owns_weights":true,`, `"owns_weights":true,"leader":"pod-a","node":"pod-b","revision":41,`, 1)
	answer = strings.Replace(answer, `"reason":"canary error rate 0% (0 of 230) is not above max_error_rate 1%"}`,
		`"reason":"canary error rate 0% (0 of 230) is not above max_error_rate 1%","replicas":["pod-a","pod-b","pod-c"]}`, 1)
	answer = strings.Replace(answer, `"actor":"rollout","reason"`, `"actor":"rollout","node":"pod-a","reason"`, 1)
	addr, _ := fakeAdmin(t, http.StatusOK, answer)
	out, err := runRollout(t, nil, "status", "api", "--admin-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"fleet: decided by pod-a (this replica: pod-b, state revision 41)",
		"counts of 3 replicas: pod-a, pod-b, pod-c",
		"rollout@pod-a",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "token:abc@") {
		t.Errorf("a transition without a node shows one:\n%s", out)
	}
}

func TestRolloutCommandErrors(t *testing.T) {
	addr, _ := fakeAdmin(t, http.StatusConflict, `{"error":"conflict: cannot resume a rollout that is idle","field":"action"}`)
	_, err := runRollout(t, nil, "resume", "api", "--admin-addr", addr)
	if err == nil || exitCode(err) != exitFailure || !strings.Contains(err.Error(), "409: conflict: cannot resume a rollout that is idle") {
		t.Errorf("a 409: %v", err)
	}
	for _, args := range [][]string{{"status"}, {"fly", "api"}, {"start", "api", "web"}} {
		if _, err := runRollout(t, nil, args...); err == nil || exitCode(err) != exitUsage {
			t.Errorf("rollout %q: %v, want a usage error", args, err)
		}
	}
}
