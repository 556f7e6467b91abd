package fleet

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/peer"
)

// A member that hangs without closing its sockets (SIGSTOP, a blackholing
// network, a frozen VM) keeps its gRPC connection READY: round robin keeps
// sending it a share of the requests and any stream that sits on it (a
// watch, the lease keep-alives) receives nothing. gRPC's keepalive is the
// only thing that would drop the connection, and grpc-go raises any
// keepalive time under 10 s to 10 s, so that takes 13 s or more. members
// notices sooner and drops the connection itself: every connection the
// client opens goes through its dialer; a request or a watch that gets no
// answer within its own short bound makes its member suspect; a suspect
// member is asked a serializable read on a connection of its own, and if
// that gets no answer within checkTimeout, every connection to it is
// closed. Its streams then fail over to the other members (the etcd client
// resumes watches from their last revision and restarts the keep-alive
// stream), and gRPC reconnects to it in the background: the new connection
// becomes ready only when the member answers its handshake again.
type members struct {
	opts ClientOptions
	log  *slog.Logger
	m    *Metrics
	// byAddr maps a dialled address to the endpoint it came from, for the
	// liveness check's own client.
	byAddr map[string]string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	conns    map[string]*trackedConn // by local address (what gRPC's peer names)
	checking map[string]bool         // dialled addresses being checked
	checkers map[string]*clientv3.Client
	closed   bool
}

// checkTimeout bounds the liveness check of a suspect member: a live
// member answers a serializable read from its own store in milliseconds,
// with or without a leader.
const checkTimeout = 500 * time.Millisecond

// Reconnection: a member that was killed and restarted, or that comes back
// from a stall, is reached again within about a second. gRPC's defaults
// (backoff up to 120 s, 20 s per connection attempt) would leave a replica
// on fewer members, or none, for minutes after a long outage.
var connectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: 5 * time.Second,
}

func newMembers(o ClientOptions, log *slog.Logger, m *Metrics) *members {
	ctx, cancel := context.WithCancel(context.Background())
	ms := &members{
		opts: o, log: log, m: m, byAddr: map[string]string{},
		ctx: ctx, cancel: cancel,
		conns: map[string]*trackedConn{}, checking: map[string]bool{}, checkers: map[string]*clientv3.Client{},
	}
	for _, ep := range o.Endpoints {
		ms.byAddr[dialAddress(ep)] = ep
	}
	return ms
}

// dialOptions route the client's connections through ms and note which
// member each call used.
func (ms *members) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithContextDialer(ms.dial),
		grpc.WithConnectParams(connectParams),
		grpc.WithChainUnaryInterceptor(ms.unary),
		grpc.WithChainStreamInterceptor(ms.stream),
	}
}

// dialAddress is what gRPC dials for an endpoint (as the etcd client's
// resolver writes it).
func dialAddress(ep string) string {
	switch {
	case strings.HasPrefix(ep, "unix://"), strings.HasPrefix(ep, "unixs://"):
		_, p, _ := strings.Cut(ep, "://")
		if strings.HasPrefix(p, "/") {
			return "unix://" + p
		}
		return "unix:" + p
	case strings.HasPrefix(ep, "unix:"), strings.HasPrefix(ep, "unixs:"):
		_, p, _ := strings.Cut(ep, ":")
		return "unix:" + p
	}
	if _, rest, ok := strings.Cut(ep, "://"); ok {
		host, _, _ := strings.Cut(rest, "/")
		return host
	}
	return ep
}

func (ms *members) dial(ctx context.Context, addr string) (net.Conn, error) {
	network, target := "tcp", addr
	switch {
	case strings.HasPrefix(addr, "unix://"):
		network, target = "unix", strings.TrimPrefix(addr, "unix://")
	case strings.HasPrefix(addr, "unix:"):
		network, target = "unix", strings.TrimPrefix(addr, "unix:")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, target)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, ms: ms, addr: addr, local: c.LocalAddr().String()}
	ms.mu.Lock()
	if ms.closed {
		ms.mu.Unlock()
		c.Close()
		return nil, errors.New("etcd client closed")
	}
	ms.conns[tc.local] = tc
	ms.mu.Unlock()
	return tc, nil
}

// trackedConn is a connection to one member that members can close.
type trackedConn struct {
	net.Conn
	ms    *members
	addr  string // as dialled: the member
	local string
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.ms.mu.Lock()
		if c.ms.conns[c.local] == c {
			delete(c.ms.conns, c.local)
		}
		c.ms.mu.Unlock()
	})
	return c.Conn.Close()
}

// callNote receives the member a call used; put one in a call's context
// with withNote.
type callNote struct{ local atomic.Pointer[string] }

type noteKey struct{}

func withNote(ctx context.Context, n *callNote) context.Context {
	return context.WithValue(ctx, noteKey{}, n)
}

func (n *callNote) set(p *peer.Peer) {
	if n == nil || p == nil || p.LocalAddr == nil {
		return
	}
	s := p.LocalAddr.String()
	n.local.Store(&s)
}

// member returns the dialled address of the member the call used, "" when
// unknown.
func (ms *members) member(n *callNote) string {
	if n == nil {
		return ""
	}
	l := n.local.Load()
	if l == nil {
		return ""
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if c := ms.conns[*l]; c != nil {
		return c.addr
	}
	return ""
}

func (ms *members) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	n, _ := ctx.Value(noteKey{}).(*callNote)
	if n == nil {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	n.set(&p)
	return err
}

func (ms *members) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if n, _ := ctx.Value(noteKey{}).(*callNote); n != nil && err == nil {
		p, _ := peer.FromContext(cs.Context())
		n.set(p)
	}
	return cs, err
}

// suspect checks member in the background (at most one check at a time
// per member) and drops its connections if it does not answer; done, if
// not nil, is called with the verdict.
func (ms *members) suspect(member, why string) {
	if member == "" {
		return
	}
	ms.mu.Lock()
	if ms.closed || ms.checking[member] {
		ms.mu.Unlock()
		return
	}
	ms.checking[member] = true
	ms.wg.Add(1)
	ms.mu.Unlock()
	go func() {
		defer ms.wg.Done()
		defer func() {
			ms.mu.Lock()
			delete(ms.checking, member)
			ms.mu.Unlock()
		}()
		if err := ms.check(member); err != nil {
			n := ms.sever(member)
			ms.m.severed.Inc()
			ms.log.Warn("etcd member does not answer: dropped its connections; its requests and watches go to the other members",
				"member", member, "suspected_because", why, "check", err.Error(), "connections", n)
		}
	}()
}

// check asks member a serializable read on a connection of its own; an
// error means it did not answer in time (an answer that is an error, such
// as a refusal, proves it alive).
func (ms *members) check(member string) error {
	c, err := ms.checker(member)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ms.ctx, checkTimeout)
	defer cancel()
	_, err = c.Get(ctx, "\x00", clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err == nil || ctx.Err() == nil && !isUnavailable(err) {
		return nil
	}
	if ms.ctx.Err() != nil {
		return nil
	}
	return err
}

// checker returns the member's own client (one connection), made on its
// first suspicion.
func (ms *members) checker(member string) (*clientv3.Client, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if c := ms.checkers[member]; c != nil {
		return c, nil
	}
	ep := ms.byAddr[member]
	if ep == "" {
		ep = member
	}
	o := ms.opts
	o.Endpoints = []string{ep}
	cfg, err := o.Config()
	if err != nil {
		return nil, err
	}
	// No authentication round trip at creation: the check is a read that
	// only needs the member to answer (a refusal counts as an answer).
	cfg.Username, cfg.Password = "", ""
	cfg.DialTimeout = 0
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	ms.checkers[member] = c
	return c, nil
}

// sever closes every connection to member and says how many.
func (ms *members) sever(member string) int {
	ms.mu.Lock()
	var victims []*trackedConn
	for _, c := range ms.conns {
		if c.addr == member {
			victims = append(victims, c)
		}
	}
	ms.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
	return len(victims)
}

// close stops the checks and closes their clients.
func (ms *members) close() {
	ms.mu.Lock()
	ms.closed = true
	checkers := ms.checkers
	ms.checkers = map[string]*clientv3.Client{}
	ms.mu.Unlock()
	ms.cancel()
	ms.wg.Wait()
	for _, c := range checkers {
		c.Close()
	}
}
