package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func serveRouting(canary int) string {
	return fmt.Sprintf(`services:
  - name: api
    hosts: ["*"]
    weights: {v1: %d, v2: %d}
`, 100-canary, canary)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// lockedBuffer collects a child's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pollUntil retries cond until it holds; the deadline only guards against
// a hang.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestServeBinary runs the built binary as an operator would: it becomes
// ready, reloads on SIGHUP and exits 0 on SIGTERM.
func TestServeBinary(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "splitter.yaml")
	if err := os.WriteFile(cfg, []byte(serveRouting(20)), 0o644); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "ready.json")
	// A long debounce and poll keep the watcher out of the way: only
	// SIGHUP can make the edit below take effect.
	cmd := exec.Command(buildSplitter(t), "serve", "--config", cfg,
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--ready-file", ready,
		"--reload-debounce", "1h", "--reload-poll-interval", "1h")
	cmd.Env = append(os.Environ(), "SPLITTER_CONFIG=")
	var stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	var addrs struct {
		GRPC  string `json:"grpc_addr"`
		Admin string `json:"admin_addr"`
	}
	pollUntil(t, "the ready file", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("splitter exited early: %v\n%s", err, stderr.String())
		default:
		}
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, &addrs) == nil
	})
	if !strings.Contains(stderr.String(), "grpc listening on "+addrs.GRPC) {
		t.Errorf("log does not name the bound gRPC address %s:\n%s", addrs.GRPC, stderr.String())
	}
	admin := "http://" + addrs.Admin
	if code, body := httpGet(t, admin+"/readyz"); code != http.StatusOK {
		t.Fatalf("GET /readyz = %d %s", code, body)
	}

	servingSHA := func() string {
		_, body := httpGet(t, admin+"/v1/services")
		var v struct {
			Config struct {
				SHA256 string `json:"sha256"`
			} `json:"config"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("GET /v1/services: %v: %s", err, body)
		}
		return v.Config.SHA256
	}
	if got := servingSHA(); got != sha256Hex(serveRouting(20)) {
		t.Fatalf("serving sha %s, want the file's", got)
	}
	if err := os.WriteFile(cfg, []byte(serveRouting(50)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "the SIGHUP reload", func() bool { return servingSHA() == sha256Hex(serveRouting(50)) })

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("splitter did not exit after SIGTERM\n%s", stderr.String())
	}
	logs := stderr.String()
	if strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "msg=stopped") {
		t.Errorf("unclean shutdown log:\n%s", logs)
	}
	if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ready file left behind: %v", err)
	}
}

func TestServeInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(serveRouting(20), "v2: 20", "v2: 30", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "weights do not sum to 100", args: []string{"--config", bad}, want: bad},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "none.yaml")}, want: "none.yaml"},
		{name: "bad setting", args: []string{"--grpc-addr", "nowhere"}, want: "grpc_addr"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, tc.args...)
			res := runSplitter(t, "", nil, args...)
			if res.code == 0 {
				t.Fatalf("exit 0, want non-zero; stderr:\n%s", res.stderr)
			}
			if !strings.Contains(res.stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, res.stderr)
			}
		})
	}
}
