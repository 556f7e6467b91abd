package testbed

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as a child process: with
// TESTBED_CHILD=1 it prints a line and sleeps until signalled.
func TestMain(m *testing.M) {
	if os.Getenv("TESTBED_CHILD") == "1" {
		fmt.Println("child up")
		time.Sleep(time.Minute)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func child(t *testing.T, b *Bed) *Proc {
	t.Helper()
	p, err := b.newProc("child", os.Args[0], "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	p.Env = []string{"TESTBED_CHILD=1"}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, p, "child up")
	return p
}

func waitOutput(t *testing.T, p *Proc, want string) {
	t.Helper()
	if err := p.poll(t.Context(), want, func() error {
		if !strings.Contains(p.Tail(5), want) {
			return fmt.Errorf("output %q", p.Tail(5))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestProcLifecycle(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, p *Proc)
	}{
		{"kill reaps", func(t *testing.T, p *Proc) {
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			if p.Running() {
				t.Fatal("still running after Kill")
			}
			if err := p.Kill(); err != nil {
				t.Fatalf("second Kill: %v", err)
			}
		}},
		{"stop sends SIGTERM", func(t *testing.T, p *Proc) {
			err := p.Stop(t.Context())
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
				t.Fatalf("Stop: %v, want death by SIGTERM", err)
			}
		}},
		{"pause then resume", func(t *testing.T, p *Proc) {
			if err := p.Pause(); err != nil {
				t.Fatal(err)
			}
			if err := stopped(p.Pid()); err != nil {
				t.Fatal(err)
			}
			if err := p.Resume(); err != nil {
				t.Fatal(err)
			}
			if err := p.poll(t.Context(), "running again", func() error {
				if stopped(p.Pid()) == nil {
					return fmt.Errorf("still stopped")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}},
		{"paused process still stops", func(t *testing.T, p *Proc) {
			if err := p.Pause(); err != nil {
				t.Fatal(err)
			}
			if err := p.Stop(t.Context()); err == nil {
				t.Fatal("Stop of the sleeping child returned nil, want its SIGTERM exit")
			}
			if p.Running() {
				t.Fatal("still running")
			}
		}},
		{"restart appends to the same log", func(t *testing.T, p *Proc) {
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			if err := p.poll(t.Context(), "second start", func() error {
				if n := strings.Count(p.Tail(20), "child up"); n != 2 {
					return fmt.Errorf("%d starts logged", n)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := ForTest(t)
			tc.run(t, child(t, b))
		})
	}
}

func TestBedCloseKillsEverything(t *testing.T) {
	b := New(t.TempDir(), nil)
	p := child(t, b)
	be, err := b.StartBackend("v9")
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if p.Running() {
		t.Fatal("child survived Close")
	}
	if _, err := http.Get("http://" + be.Addr + "/healthz"); err == nil {
		t.Fatal("backend still answers after Close")
	}
	if _, err := b.newProc("late", "true"); err == nil {
		t.Fatal("a closed bed accepted a new process")
	}
}

func TestClientCountsBackendVersions(t *testing.T) {
	b := ForTest(t)
	be, err := b.StartBackend("v7")
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{BaseURL: "http://" + be.Addr, HTTP: &http.Client{Timeout: 5 * time.Second}}
	defer c.Close()
	counts, err := c.Count(t.Context(), 40, 4, func(i int) http.Header { return http.Header{"X-N": {fmt.Sprint(i)}} })
	if err != nil || counts["v7"] != 40 || counts.String() != "v7=40" {
		t.Fatalf("counts %v, err %v", counts, err)
	}
	rep, err := c.Get(t.Context(), "/x?y=1", http.Header{"Host": {"api.example.com"}, "X-Beta": {"true"}})
	if err != nil || rep.Headers["host"] != "api.example.com" || rep.Headers["x-beta"] != "true" || rep.Path != "/x?y=1" {
		t.Fatalf("reply %+v, err %v", rep, err)
	}
	if _, err := c.Get(t.Context(), "/healthz", nil); err == nil {
		t.Fatal("a non-JSON answer was accepted as a backend reply")
	}
}
