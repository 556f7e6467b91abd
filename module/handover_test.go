package module

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/split"
)

func (p *Process) roleNow() role {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.role
}

// v2Share is the canary's share in p's table, in percent.
func (p *Process) v2Share() float64 {
	p.mu.Lock()
	plane := p.plane
	p.mu.Unlock()
	svc, ok := plane.Table().Service("api")
	if !ok {
		return -1
	}
	bp, _ := svc.Weights.Get("v2")
	return float64(bp) / 100
}

func putCanary(t *testing.T, addr string, pct float64) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/v1/services/api/canary",
		bytes.NewReader(fmt.Appendf(nil, `{"percentage": %v}`, pct)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT canary %v: %d", pct, resp.StatusCode)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHandoverBetweenEpochs plays a hot restart with two processes' module
// state in one test: the second takes the admin port and the control plane
// over with the first one's runtime state (an override, without a state
// file), the first follows what is changed on the second, and takes the
// control plane back when the second is gone.
func TestHandoverBetweenEpochs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the handover socket is Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	old := start(t, testConfig, fmt.Sprintf(`, "admin_addr": %q`, addr))
	putCanary(t, addr, 40)

	fc := fmt.Sprintf(`{"config": %q, "admin_addr": %q, "reload_debounce": "20ms"}`, old.cfgPath, addr)
	next := NewProcess(&fakeHost{counts: map[int32][NumClasses]uint64{}})
	if _, err := next.NewConfig("splitter", []byte(fc)); err != nil {
		t.Fatalf("the second process did not start beside the first: %v", err)
	}
	if r := old.p.roleNow(); r != roleFollower {
		t.Fatalf("the first process's role: %v, want follower", r)
	}
	if got := next.v2Share(); got != 40 {
		t.Fatalf("the second process's canary share: %v, want the 40 handed over", got)
	}
	// The admin port is the second's now; the first follows it.
	putCanary(t, addr, 70)
	waitUntil(t, "the follower to apply the new canary share", func() bool { return old.p.v2Share() == 70 })
	if res := old.decide(t, 0, []split.Header{{Name: "x-beta", Value: "true"}}); res.Status != StatusOK {
		t.Fatalf("a decision on the follower: %+v", res)
	}

	// The second goes away: the first takes the control plane back, with
	// the state it followed.
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the first process to lead again", func() bool { return old.p.roleNow() == roleLeader })
	status, body := old.get(t, "/v1/services/api")
	if status != http.StatusOK || !bytes.Contains([]byte(body), []byte(`"v2":70`)) {
		t.Fatalf("GET /v1/services/api after taking back: %d %s", status, body)
	}
	putCanary(t, addr, 10)
	if got := old.p.v2Share(); got != 10 {
		t.Fatalf("after a write on the taken-back admin port: %v", got)
	}
}

// TestHandoverRefusedWithoutHolder: an admin port held by something that
// is not a splitter module is an error naming both problems.
func TestHandoverRefusedWithoutHolder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(testConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	p := NewProcess(&fakeHost{counts: map[int32][NumClasses]uint64{}})
	_, err = p.NewConfig("splitter", fmt.Appendf(nil, `{"config": %q, "admin_addr": %q}`, cfg, ln.Addr()))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("address already in use")) ||
		!bytes.Contains([]byte(err.Error()), []byte("handed it over")) {
		t.Fatalf("NewConfig on a port another program holds: %v", err)
	}
}

// TestValidationModeStartsNothing: under `envoy --mode validate` the
// filter_config is checked as when serving, and nothing starts: the admin
// port (taken here) is not bound, no ready file is written, no control
// plane exists.
func TestValidationModeStartsNothing(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	dir := t.TempDir()
	cfg, ready := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "ready.json")
	if err := os.WriteFile(cfg, []byte(testConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	fc := fmt.Appendf(nil, `{"config": %q, "admin_addr": %q, "ready_file": %q, "etcd_endpoints": "http://127.0.0.1:1"}`,
		cfg, held.Addr(), ready)
	p := NewProcess(&fakeHost{counts: map[int32][NumClasses]uint64{}, validating: true})
	if _, err := p.NewConfig("splitter", fc); err != nil {
		t.Fatalf("validation: %v", err)
	}
	if _, err := p.NewConfig("again", fc); err != nil {
		t.Fatalf("validation, a second filter: %v", err)
	}
	if _, err := p.NewConfig("other", []byte(`{"admin_addr": "127.0.0.1:1"}`)); err == nil {
		t.Fatal("validation accepted a filter_config that differs")
	}
	if _, err := p.NewConfig("bad", []byte(`{"nope": 1}`)); err == nil {
		t.Fatal("validation accepted an unknown key")
	}
	if p.Plane() != nil {
		t.Fatal("a control plane was started")
	}
	if _, err := os.Stat(ready); !os.IsNotExist(err) {
		t.Fatalf("the ready file was written: %v", err)
	}
	var res Result
	p.Decide(p.Begin(0), 0, false, &res)
	if res.Status != StatusNoConfig {
		t.Fatalf("a decision in validation mode: %+v", res)
	}
}
