package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// ErrNoEtcd says that no etcd binary was found; `make etcd` builds one.
var ErrNoEtcd = errors.New("no etcd binary: set ETCD_BIN, or run `make etcd` (builds etcd 3.7.3 from tools/etcd into .venv/bin/etcd)")

// FindEtcd returns the etcd server binary to use: $ETCD_BIN, else
// <root>/.venv/bin/etcd (scripts/etcd.sh), else `etcd` on PATH.
func FindEtcd(root string) (string, error) {
	return findServer(root, "ETCD_BIN", "etcd", ErrNoEtcd)
}

// EtcdOptions tune StartEtcd.
type EtcdOptions struct {
	// Fsync keeps etcd's fsync on every commit. Tests turn it off
	// (--unsafe-no-fsync: a killed process loses nothing, only a machine
	// crash would) so that a shared, slow disk does not set their pace;
	// the benchmark keeps it, as a production cluster does.
	Fsync bool
	// Args are appended to the command line (e.g. auth or TLS flags).
	Args []string
}

// Etcd is a real single-member etcd server on loopback: its own data
// directory and free ports, kept across Restart so that clients and
// replicas find it again with its data.
type Etcd struct {
	*Proc
	// Endpoint is the client URL, http://127.0.0.1:port.
	Endpoint string
	DataDir  string

	// Name is the member's name; PeerURL its peer URL.
	Name    string
	PeerURL string
	// cluster is --initial-cluster: every member's name=peerURL.
	cluster string
	opts    EtcdOptions
	http    *http.Client
}

// etcdStartAttempts bounds the retries on "address already in use": the
// free ports are found by binding port 0 and closing it, so another
// process may take one before etcd binds it.
const etcdStartAttempts = 5

// StartEtcd runs bin as a one-member cluster on free loopback ports with a
// fresh data directory in the bed, and waits until /health says true.
func (b *Bed) StartEtcd(ctx context.Context, bin string, o EtcdOptions) (*Etcd, error) {
	p, err := b.newProc("etcd", bin)
	if err != nil {
		return nil, err
	}
	e := &Etcd{Proc: p, DataDir: b.path("etcd-data", ""), opts: o, http: &http.Client{Timeout: 2 * time.Second}}
	b.onClose(e.http.CloseIdleConnections)
	var last error
	for range etcdStartAttempts {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		e.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		e.Name, e.PeerURL = "default", fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		e.cluster = e.Name + "=" + e.PeerURL
		if err := os.RemoveAll(e.DataDir); err != nil {
			return nil, err
		}
		if last = e.start(ctx); last == nil {
			return e, nil
		}
		if !strings.Contains(last.Error(), "address already in use") {
			return nil, last
		}
		b.log.Warn("etcd: port taken, retrying on others", "err", last)
	}
	return nil, last
}

func (e *Etcd) start(ctx context.Context) error {
	if err := e.launch(); err != nil {
		return err
	}
	return e.waitHealthy(ctx)
}

// launch starts the process without waiting for it to serve (the members
// of a new cluster only become healthy together).
func (e *Etcd) launch() error {
	e.Args = append([]string{
		"--name", e.Name,
		"--data-dir", e.DataDir,
		"--listen-client-urls", e.Endpoint,
		"--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", e.PeerURL,
		"--initial-advertise-peer-urls", e.PeerURL,
		"--initial-cluster", e.cluster,
		"--initial-cluster-state", "new",
		"--log-level", "warn",
	}, e.opts.Args...)
	if !e.opts.Fsync {
		e.Args = append(e.Args, "--unsafe-no-fsync")
	}
	return e.Proc.Start()
}

// waitHealthy waits until /health says true (the member has a leader and
// serves); a member that does not get there is killed.
func (e *Etcd) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, StartupTimeout)
	defer cancel()
	err := e.poll(ctx, "/health", func() error { return e.health(ctx) })
	if err != nil {
		_ = e.Kill()
		return fmt.Errorf("%w\n%s", err, e.Tail(20))
	}
	return nil
}

// health asks the member's /health endpoint (true once it has a leader
// and serves).
func (e *Etcd) health(ctx context.Context) error {
	url := e.Endpoint + "/health"
	if strings.HasPrefix(url, "https:") {
		// With TLS the test's own client checks readiness.
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("/health: %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// Restart starts a stopped or killed server again on the same ports and
// data directory (killing it first if it runs).
func (e *Etcd) Restart(ctx context.Context) error {
	if err := e.Kill(); err != nil {
		return err
	}
	return e.start(ctx)
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// RequireEtcd returns the etcd binary for a test: when there is none the
// test fails if CI is set (CI must run every fleet test) and is skipped
// otherwise.
func RequireEtcd(tb testing.TB) string {
	tb.Helper()
	root, _ := RepoRoot()
	bin, err := FindEtcd(root)
	if err == nil {
		return bin
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%v (CI is set, so this is a failure)", err)
	}
	tb.Skipf("%v", err)
	return ""
}
