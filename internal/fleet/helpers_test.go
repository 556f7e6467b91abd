package fleet_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/internal/testbed"
	"github.com/trafficsplit/splitter/split"
)

// One etcd server is shared by the tests that do not stop it (each uses
// its own prefix); fault tests start their own. It is a real server
// process (tools/etcd), never a fake: see docs/fleet.md.
var shared struct {
	once sync.Once
	bed  *testbed.Bed
	etcd *testbed.Etcd
	err  error
}

var prefixSeq atomic.Int64

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.bed != nil {
		shared.bed.Close()
		os.RemoveAll(shared.bed.Dir)
	}
	os.Exit(code)
}

// sharedEtcd returns the package's etcd, starting it on first use.
func sharedEtcd(t *testing.T) *testbed.Etcd {
	t.Helper()
	bin := testbed.RequireEtcd(t)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "fleet-etcd-")
		if err != nil {
			shared.err = err
			return
		}
		shared.bed = testbed.New(dir, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shared.etcd, shared.err = shared.bed.StartEtcd(ctx, bin, testbed.EtcdOptions{})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.etcd
}

// ownEtcd starts an etcd for one test (faults stop it).
func ownEtcd(t *testing.T) *testbed.Etcd {
	t.Helper()
	bin := testbed.RequireEtcd(t)
	b := testbed.ForTest(t)
	e, err := b.StartEtcd(t.Context(), bin, testbed.EtcdOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// newPrefix returns a prefix no other test uses.
func newPrefix(t *testing.T) string {
	return fmt.Sprintf("/test-%d-%s/", prefixSeq.Add(1), strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-"))
}

func newClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := fleet.NewClient(fleet.ClientOptions{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const baseConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id}
  - name: web
    hosts: ["web.example.com"]
    weights: {a: 50, b: 30, c: 20}
`

func push(t *testing.T, c *clientv3.Client, prefix, doc string) int64 {
	t.Helper()
	res, err := fleet.PushConfig(t.Context(), c, fleet.Keys{Prefix: prefix}, []byte(doc), -1)
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision
}

// replica is one in-process Source with its store, as a splitter process
// runs it.
type replica struct {
	src   *fleet.Source
	store *store.Store
	stop  func()
}

type replicaOpts struct {
	cacheFile string
	node      string
	noRun     bool
}

// startReplica builds, starts and runs a replica; a start error fails the
// test.
func startReplica(t *testing.T, endpoint, prefix string, o replicaOpts) *replica {
	t.Helper()
	r, err := tryReplica(t, endpoint, prefix, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func tryReplica(t *testing.T, endpoint, prefix string, o replicaOpts) (*replica, error) {
	t.Helper()
	st, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if o.node == "" {
		o.node = "node-" + fmt.Sprint(prefixSeq.Add(1))
	}
	logs := &syncBuilder{}
	src := fleet.New(fleet.Options{
		Client:    fleet.ClientOptions{Endpoints: strings.Split(endpoint, ","), DialTimeout: 2 * time.Second},
		Prefix:    prefix,
		NodeID:    o.node,
		CacheFile: o.cacheFile,
		Store:     st,
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:   fleet.NewMetrics(nil),
	})
	r := &replica{src: src, store: st}
	if err := src.Start(t.Context()); err != nil {
		src.Close()
		return nil, err
	}
	if o.noRun {
		t.Cleanup(func() { src.Close() })
		return r, nil
	}
	r.run(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- replica %s log:\n%s", o.node, logs.String())
		}
	})
	return r, nil
}

// run runs the replica's loops until stop or the test's end.
func (r *replica) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.src.Run(ctx)
	}()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(func() {
		r.stop()
		r.src.Close()
	})
}

type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// weights returns service's effective weights on r ("" when none).
func (r *replica) weights(service string) string {
	t := r.store.Table()
	if t == nil {
		return ""
	}
	svc, ok := t.Service(service)
	if !ok {
		return ""
	}
	return svc.Weights.String()
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustWeights(t *testing.T, s string) split.Weights {
	t.Helper()
	w, err := split.ParseWeightsJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func writeCacheDir(t *testing.T) string {
	return filepath.Join(t.TempDir(), "fleet-cache.json")
}
