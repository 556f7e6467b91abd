package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/trafficsplit/splitter/envoy"
	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// prefix is where the bed's fleet keeps its keys.
const prefix = "/splitter/"

// document is the routing configuration of the bed: api, which the
// writers change, and shop, whose rollout the leader-cut fault runs (a
// failing canary must be rolled back by a new leader).
const document = `services:
  - name: api
    hosts: ["api.example.com"]
    stable: v1
    weights: {v1: 90, v2: 10}
    sticky: {header: x-user-id}
  - name: shop
    hosts: ["shop.example.com"]
    stable: s1
    weights: {s1: 100, s2: 0}
    rollout:
      steps: [20, 50, 100]
      hold: 10m
      guard: {window: 2s, min_requests: 5, max_error_rate: 1, max_error_ratio: 2}
`

// invalidDocuments are written straight into etcd (no validation) by the
// store fault: every replica must reject them and keep serving.
var invalidDocuments = []struct{ doc, why string }{
	{"services:\n  - name: api\n    hosts: [\"api.example.com\"]\n    weights: {v1: 60, v2: 10}\n", "weights sum to 70"},
	{"services: [ {name: api, weights: {v1: 100}\n", "not YAML"},
	{"services:\n  - name: api\n    hosts: [\"api.example.com\"]\n    weights: {v1: 50, v2: 50}\n    rules:\n      - match: {header: {name: x-user-id, regex: \"([\"}}\n        version: v2\n", "a regex that does not compile"},
}

// Replica is one splitter process of the bed, with its Envoy and the
// proxies it reaches the etcd members through (one per member, so that it
// alone can be cut off).
type Replica struct {
	Name string
	*testbed.Splitter
	Proxies []*testbed.Proxy
	Envoy   *testbed.Envoy
}

// Bed is a 3-member etcd cluster, three splitter replicas in fleet mode
// (each given every member), an Envoy in front of each, and backends v1,
// v2 (api) and s1, s2 (shop).
type Bed struct {
	*testbed.Bed
	Cluster  *testbed.EtcdCluster
	Replicas []*Replica
	Backends map[string]*testbed.Backend
	// Members are one client per member (the recorder's: its watches and
	// reads follow every member on its own, so that a stopped one hides
	// nothing).
	Members []*clientv3.Client
	// Client reaches every member (faults: status, compaction).
	Client *clientv3.Client
}

// Binaries are the programs the bed runs.
type Binaries struct {
	Splitter, Etcd, Envoy string
}

// StartBed starts everything and waits until every replica follows etcd.
func StartBed(ctx context.Context, tb *testbed.Bed, bin Binaries) (*Bed, error) {
	b := &Bed{Bed: tb, Backends: map[string]*testbed.Backend{}}
	var err error
	if b.Cluster, err = tb.StartEtcdCluster(ctx, bin.Etcd, 3, testbed.EtcdOptions{}); err != nil {
		return nil, err
	}
	for _, ep := range b.Cluster.Endpoints() {
		c, err := newEtcdClient([]string{ep})
		if err != nil {
			return nil, err
		}
		tb.OnClose(func() { c.Close() })
		b.Members = append(b.Members, c)
	}
	if b.Client, err = newEtcdClient(b.Cluster.Endpoints()); err != nil {
		return nil, err
	}
	tb.OnClose(func() { b.Client.Close() })
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = fleet.PushConfig(pctx, b.Client, fleet.Keys{Prefix: prefix}, []byte(document), -1)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("config push: %w", err)
	}
	backends, err := tb.StartBackends("v1", "v2", "s1", "s2")
	if err != nil {
		return nil, err
	}
	for _, be := range backends {
		b.Backends[be.Version] = be
	}
	for i := range 3 {
		r := &Replica{Name: fmt.Sprintf("r%d", i)}
		var eps []string
		for _, m := range b.Cluster.Members {
			p, err := tb.StartProxy(strings.TrimPrefix(m.Endpoint, "http://"))
			if err != nil {
				return nil, err
			}
			r.Proxies = append(r.Proxies, p)
			eps = append(eps, "http://"+p.Addr)
		}
		adminPort, err := testbed.FreePort()
		if err != nil {
			return nil, err
		}
		r.Splitter, err = tb.StartSplitter(ctx, bin.Splitter, "",
			"--etcd-endpoints", strings.Join(eps, ","), "--node-id", r.Name,
			"--etcd-cache-file", filepath.Join(tb.Dir, r.Name+"-cache.json"),
			"--envoy-admin", fmt.Sprintf("127.0.0.1:%d", adminPort), "--signals-interval", "100ms",
			"--rollout-publish-interval", "200ms", "--rollout-leader-ttl", "2s", "--log-level", "info")
		if err != nil {
			return nil, err
		}
		p, err := testbed.LoopbackParams(envoy.ModeExtProc, r.GRPCAddr, backends...)
		if err != nil {
			return nil, err
		}
		p.Admin.Port = adminPort
		if r.Envoy, err = tb.StartEnvoy(ctx, bin.Envoy, p, testbed.EnvoyOptions{Concurrency: 1}); err != nil {
			return nil, err
		}
		b.Replicas = append(b.Replicas, r)
	}
	for _, r := range b.Replicas {
		if err := waitFor(ctx, 30*time.Second, r.Name+" to follow etcd", func() bool {
			st, err := r.status(ctx)
			return err == nil && st.Connected
		}); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func newEtcdClient(eps []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// fleetStatus is what the bed reads of a replica's config.fleet.
type fleetStatus struct {
	Connected       bool   `json:"connected"`
	AppliedRevision int64  `json:"applied_revision"`
	Watching        string `json:"watching"`
}

func (r *Replica) status(ctx context.Context) (fleetStatus, error) {
	var v struct {
		Config struct {
			Fleet fleetStatus `json:"fleet"`
		} `json:"config"`
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := r.Admin(ctx, http.MethodGet, "/v1/services/api", nil, &v)
	return v.Config.Fleet, err
}

// memberOf returns the index of the member a proxy address of r leads to.
func (r *Replica) memberOf(addr string) int {
	for i, p := range r.Proxies {
		if p.Addr == addr {
			return i
		}
	}
	return -1
}

// leader returns the index of the etcd member that leads.
func (b *Bed) leader(ctx context.Context) (int, error) {
	for i, m := range b.Cluster.Members {
		if !m.Running() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := b.Members[i].Status(sctx, m.Endpoint)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no etcd member says it leads")
}

// cut blackholes (or heals) every connection between r and etcd.
func (r *Replica) cut(on bool) {
	for _, p := range r.Proxies {
		if on {
			p.Blackhole()
		} else {
			p.Heal()
		}
	}
}

// rolloutStatus is what the bed reads of GET /v1/services/shop/rollout.
type rolloutStatus struct {
	State   string          `json:"state"`
	Leader  string          `json:"leader"`
	Verdict json.RawMessage `json:"verdict"`
	History []struct {
		To   string `json:"to"`
		Node string `json:"node"`
	} `json:"history"`
}

// lastNode is the replica that made the last transition.
func (st rolloutStatus) lastNode() string {
	if n := len(st.History); n > 0 {
		return st.History[n-1].Node
	}
	return ""
}

func (r *Replica) rollout(ctx context.Context) (rolloutStatus, error) {
	var st rolloutStatus
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := r.Admin(ctx, http.MethodGet, "/v1/services/shop/rollout", nil, &st)
	return st, err
}

// fleetLeader is the rollout leader r names.
func (r *Replica) fleetLeader(ctx context.Context) (string, error) {
	var v struct {
		RolloutLeader string `json:"rollout_leader"`
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := r.Admin(ctx, http.MethodGet, "/v1/fleet", nil, &v)
	return v.RolloutLeader, err
}

// replica returns the replica named name.
func (b *Bed) replica(name string) *Replica {
	for _, r := range b.Replicas {
		if r.Name == name {
			return r
		}
	}
	return nil
}
