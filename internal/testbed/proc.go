// Package testbed starts and stops the pieces of a real deployment on
// loopback (Envoy, the splitter binary, example backends) for the end-to-end
// tests, the demo and the benchmarks. Every process listens on 127.0.0.1,
// logs to a file in the bed's directory, and is killed when the bed closes
// (and, on Linux, when the parent process dies).
package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bed owns a directory and everything started through it.
type Bed struct {
	Dir string
	log *slog.Logger

	mu      sync.Mutex
	procs   []*Proc
	closers []func()
	seq     int
	closed  bool
}

// New returns a bed that keeps its files in dir. Call Close when done.
func New(dir string, log *slog.Logger) *Bed {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Bed{Dir: dir, log: log}
}

// ForTest returns a bed in a fresh t.TempDir that is closed by t.Cleanup;
// when the test failed, the tail of every process's output is logged.
func ForTest(tb testing.TB) *Bed {
	tb.Helper()
	b := New(tb.TempDir(), slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, p := range b.Procs() {
				tb.Logf("---- %s output (%s), last lines:\n%s", p.Name, p.LogPath, p.Tail(40))
			}
		}
		b.Close()
	})
	return b
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Procs returns the processes started so far.
func (b *Bed) Procs() []*Proc {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*Proc(nil), b.procs...)
}

// Close kills every process and stops every in-process server. It is safe
// to call more than once.
func (b *Bed) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	procs, closers := b.procs, b.closers
	b.mu.Unlock()
	for _, p := range procs {
		if err := p.Kill(); err != nil {
			b.log.Warn("kill", "proc", p.Name, "err", err)
		}
	}
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
}

// OnClose runs f when the bed closes, after its processes are killed (in
// the reverse order of registration).
func (b *Bed) OnClose(f func()) { b.onClose(f) }

func (b *Bed) onClose(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closers = append(b.closers, f)
}

// path returns a fresh file name in the bed's directory.
func (b *Bed) path(prefix, suffix string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	return filepath.Join(b.Dir, fmt.Sprintf("%s-%d%s", prefix, b.seq, suffix))
}

// Proc is one child process. Its arguments are kept so that it can be
// restarted with the same ones.
type Proc struct {
	Name    string
	Bin     string
	Args    []string
	Env     []string // added to the parent's environment
	LogPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current run has been reaped
	err  error         // the current run's Wait result
}

// newProc registers a process with the bed without starting it.
func (b *Bed) newProc(name, bin string, args ...string) (*Proc, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, errors.New("testbed: bed is closed")
	}
	p := &Proc{Name: name, Bin: bin, Args: args, LogPath: b.path(name, ".log")}
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p, nil
}

// Start runs the process; its output is appended to LogPath. The context
// only bounds the start itself: the process lives until Kill, Stop or the
// bed's Close.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !closedChan(p.done) {
		return fmt.Errorf("%s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	out, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	fmt.Fprintf(out, "==== %s start %s %s\n", time.Now().Format(time.TimeOnly), p.Bin, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("%s: start %s: %w", p.Name, p.Bin, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		out.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func closedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Running reports whether the process has been started and not yet reaped.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !closedChan(p.done)
}

// Exited returns a channel closed when the current run ends (nil if never started).
func (p *Proc) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitErr is the result of the last run's Wait (nil while running).
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Pid is the current run's process id (0 if never started).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *Proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closedChan(p.done) {
		return fmt.Errorf("%s: not running", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL and waits until the process is reaped. Killing a
// process that is not running is not an error.
func (p *Proc) Kill() error {
	done := p.Exited()
	if done == nil || closedChan(done) {
		return nil
	}
	// A stopped process still dies of SIGKILL; no SIGCONT needed.
	if err := p.signal(syscall.SIGKILL); err != nil && p.Running() {
		return err
	}
	<-done
	return nil
}

// Terminate sends SIGTERM and returns at once; Exited tells when the
// process is gone.
func (p *Proc) Terminate() error {
	_ = p.signal(syscall.SIGCONT) // a paused process cannot handle SIGTERM
	return p.signal(syscall.SIGTERM)
}

// Stop sends SIGTERM and waits for the exit; when ctx ends first, it kills.
// It returns the exit error of a process that did not exit cleanly.
func (p *Proc) Stop(ctx context.Context) error {
	done := p.Exited()
	if done == nil || closedChan(done) {
		return nil
	}
	_ = p.signal(syscall.SIGCONT) // a paused process cannot handle SIGTERM
	if err := p.signal(syscall.SIGTERM); err != nil && p.Running() {
		return err
	}
	select {
	case <-done:
		return p.ExitErr()
	case <-ctx.Done():
		_ = p.Kill()
		return fmt.Errorf("%s: did not exit after SIGTERM: %w", p.Name, ctx.Err())
	}
}

// Pause stops the process with SIGSTOP (it keeps its sockets, but answers
// nothing): a stall, as opposed to a crash. It returns once the kernel
// reports the process stopped, since signal delivery is asynchronous.
func (p *Proc) Pause() error {
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.poll(ctx, "the process to stop", func() error { return stopped(p.Pid()) })
}

// Resume continues a paused process.
func (p *Proc) Resume() error { return p.signal(syscall.SIGCONT) }

// Tail returns the last n lines of the process's output.
func (p *Proc) Tail(n int) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return "(no output: " + err.Error() + ")"
	}
	defer f.Close()
	const maxTail = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxTail {
		_, _ = f.Seek(st.Size()-maxTail, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// errExited is returned by waits that saw the process die.
func (p *Proc) errExited() error {
	return fmt.Errorf("%s exited (%v); last output:\n%s", p.Name, p.ExitErr(), p.Tail(20))
}

// poll calls f every 20 ms until it returns nil, the process exits, or
// ctx ends; f's last error is reported with the timeout.
func (p *Proc) poll(ctx context.Context, what string, f func() error) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		last := f()
		if last == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return p.errExited()
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%s: waiting for %s: %w (last: %v)", p.Name, what, ctx.Err(), last)
			}
			return fmt.Errorf("%s: waiting for %s: %w", p.Name, what, ctx.Err())
		case <-tick.C:
		}
	}
}
