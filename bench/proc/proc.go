// Package proc starts the servers under test as separate processes pinned
// to one CPU, and measures them from outside: CPU time from
// /proc/<pid>/stat and allocations from the Go runtime counter on their
// admin /metrics. It also pins the benchmark's own process, so that client
// and server never compete for a core.
package proc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trafficsplit/splitter/bench/loadgen"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports; the kernel's internal
// HZ does not change it.
const clockTicks = 100

// Spec describes a server to start.
type Spec struct {
	Name string
	// Argv is the command; --grpc-addr, --admin-addr and --ready-file are
	// appended (both `splitter serve` and `splitter-bench noop` take them).
	Argv []string
	Env  []string // added to this process's environment
	CPU  int      // pin to this CPU; -1 leaves the process unpinned
	Dir  string   // ready file and log go here
}

// Server is a running server process.
type Server struct {
	Name      string
	PID       int
	GRPCAddr  string
	AdminAddr string
	LogPath   string

	cmd  *exec.Cmd
	done chan struct{}
	http *http.Client
}

// Start runs spec and waits until it has written its ready file.
func Start(ctx context.Context, spec Spec) (*Server, error) {
	if len(spec.Argv) == 0 {
		return nil, fmt.Errorf("proc %s: empty command", spec.Name)
	}
	ready := filepath.Join(spec.Dir, spec.Name+"-ready.json")
	logPath := filepath.Join(spec.Dir, spec.Name+".log")
	if err := os.Remove(ready); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("proc %s: %w", spec.Name, err)
	}
	argv := append(append([]string(nil), spec.Argv...),
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--ready-file", ready)
	if spec.CPU >= 0 {
		// taskset sets the mask before exec, so the Go runtime sizes
		// GOMAXPROCS from it and no thread ever runs elsewhere.
		ts, err := exec.LookPath("taskset")
		if err != nil {
			return nil, fmt.Errorf("proc %s: pinning needs taskset (util-linux): %w", spec.Name, err)
		}
		argv = append([]string{ts, "-c", strconv.Itoa(spec.CPU)}, argv...)
	}
	out, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("proc %s: %w", spec.Name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), spec.Env...)
	// A benchmark killed half-way must not leave servers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("proc %s: start %s: %w", spec.Name, argv[0], err)
	}
	s := &Server{
		Name: spec.Name, PID: cmd.Process.Pid, LogPath: logPath,
		cmd: cmd, done: make(chan struct{}),
		http: &http.Client{Timeout: 5 * time.Second},
	}
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(s.done)
	}()

	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		data, err := os.ReadFile(ready)
		var info struct {
			GRPCAddr  string `json:"grpc_addr"`
			AdminAddr string `json:"admin_addr"`
		}
		if err == nil && json.Unmarshal(data, &info) == nil && info.GRPCAddr != "" {
			s.GRPCAddr, s.AdminAddr = info.GRPCAddr, info.AdminAddr
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("proc %s exited before it was ready; output:\n%s", spec.Name, tail(logPath))
		case <-wctx.Done():
			s.Stop()
			return nil, fmt.Errorf("proc %s: no ready file %s: %w; output:\n%s", spec.Name, ready, wctx.Err(), tail(logPath))
		case <-tick.C:
		}
	}
}

// Attach measures a server this package did not start (Stop is a no-op
// for it). adminAddr may be empty: then only CPU is read.
func Attach(name string, pid int, adminAddr string) *Server {
	done := make(chan struct{})
	close(done)
	return &Server{Name: name, PID: pid, AdminAddr: adminAddr, done: done, http: &http.Client{Timeout: 5 * time.Second}}
}

// Stop sends SIGTERM, waits up to five seconds, then kills.
func (s *Server) Stop() {
	s.http.CloseIdleConnections()
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Sample implements loadgen.ServerProbe.
func (s *Server) Sample(ctx context.Context) (loadgen.ServerSample, error) {
	var smp loadgen.ServerSample
	cpu, err := CPUTime(s.PID)
	if err != nil {
		return smp, err
	}
	smp.CPU = cpu
	if s.AdminAddr == "" {
		return smp, nil
	}
	n, ok, err := s.mallocs(ctx)
	if err != nil {
		return smp, err
	}
	smp.Mallocs, smp.HasMallocs = n, ok
	return smp, nil
}

// mallocs scrapes go_memstats_mallocs_total; ok is false when the server
// does not export it.
func (s *Server) mallocs(ctx context.Context) (uint64, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.AdminAddr+"/metrics", nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("proc %s: metrics: %w", s.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, nil
	}
	return ParseCounter(resp.Body, "go_memstats_mallocs_total")
}

// ParseCounter finds an unlabelled sample named name in Prometheus text
// format.
func ParseCounter(r io.Reader, name string) (uint64, bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || !strings.HasPrefix(rest, " ") {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return 0, false, fmt.Errorf("metrics: %s: %w", name, err)
		}
		return uint64(f), true, nil
	}
	return 0, false, sc.Err()
}

// CPUTime is a process's user+system time (all threads) from
// /proc/<pid>/stat, at 10 ms resolution.
func CPUTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStat(string(data))
}

func parseStat(stat string) (time.Duration, error) {
	// The command name is in parentheses and may contain spaces; fields
	// are counted after the last ')'. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the name", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("proc stat: %w", err)
	}
	return time.Duration(ut+st) * (time.Second / clockTicks), nil
}

// PinSelf restricts every thread of this process to cpu and sets
// GOMAXPROCS to 1. Threads created later inherit the mask of the thread
// that creates them, so pinning all present threads pins the process.
func PinSelf(cpu int) error {
	runtime.GOMAXPROCS(1)
	// A second pass catches a thread started by one not yet pinned.
	if err := PinPID(os.Getpid(), cpu); err != nil {
		return err
	}
	return PinPID(os.Getpid(), cpu)
}

// PinPID restricts every present thread of pid to cpu.
func PinPID(pid, cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("pin %d: %w", pid, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread may exit between listing and pinning.
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pin %d thread %d to cpu %d: %w", pid, tid, cpu, err)
		}
	}
	return nil
}

func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > 4096 {
		data = data[len(data)-4096:]
	}
	return string(data)
}

// LoadAverage is the machine's load average over 1, 5 and 15 minutes
// (/proc/loadavg's first three fields), which every benchmark notes beside
// its figures; "unknown" if it cannot be read.
func LoadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
