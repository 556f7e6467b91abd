package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// EtcdCluster is a real etcd cluster of several members on loopback, each
// a process with its own data directory and ports, so that a test can
// kill, restart or stop (SIGSTOP) one member while the others keep a
// majority.
type EtcdCluster struct {
	Members []*Etcd
}

// Endpoints are the members' client URLs, in member order.
func (c *EtcdCluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.Endpoint
	}
	return out
}

// StartEtcdCluster runs bin as an n-member cluster on free loopback ports
// and waits until every member says it is healthy. Like StartEtcd it
// retries on "address already in use".
func (b *Bed) StartEtcdCluster(ctx context.Context, bin string, n int, o EtcdOptions) (*EtcdCluster, error) {
	if n < 1 {
		return nil, errors.New("etcd cluster: at least one member")
	}
	c := &EtcdCluster{}
	for i := range n {
		p, err := b.newProc(fmt.Sprintf("etcd-m%d", i), bin)
		if err != nil {
			return nil, err
		}
		e := &Etcd{Proc: p, DataDir: b.path(fmt.Sprintf("etcd-m%d-data", i), ""), opts: o, http: &http.Client{Timeout: 2 * time.Second}}
		b.onClose(e.http.CloseIdleConnections)
		c.Members = append(c.Members, e)
	}
	var last error
	for range etcdStartAttempts {
		ports, err := freePorts(2 * n)
		if err != nil {
			return nil, err
		}
		var peers []string
		for i, e := range c.Members {
			e.Name = fmt.Sprintf("m%d", i)
			e.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])
			e.PeerURL = fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
			peers = append(peers, e.Name+"="+e.PeerURL)
		}
		if last = c.launch(ctx, strings.Join(peers, ",")); last == nil {
			return c, nil
		}
		for _, e := range c.Members {
			_ = e.Kill()
		}
		if !strings.Contains(last.Error(), "address already in use") {
			return nil, last
		}
		b.log.Warn("etcd cluster: port taken, retrying on others", "err", last)
	}
	return nil, last
}

func (c *EtcdCluster) launch(ctx context.Context, cluster string) error {
	for _, e := range c.Members {
		e.cluster = cluster
		if err := os.RemoveAll(e.DataDir); err != nil {
			return err
		}
		if err := e.launch(); err != nil {
			return err
		}
	}
	var errs []error
	for _, e := range c.Members {
		if err := e.waitHealthy(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name, err))
		}
	}
	return errors.Join(errs...)
}
