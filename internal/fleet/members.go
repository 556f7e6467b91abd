package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
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
// member is sent an HTTP/2 PING on a connection of its own, and if the
// PING is not acknowledged within checkTimeout, every connection to it is
// closed. Its streams then fail over to the other members (the etcd client
// resumes watches from their last revision and restarts the keep-alive
// stream), and gRPC reconnects to it in the background: the new connection
// becomes ready only when the member answers its handshake again.
//
// The check is a PING, not a request, because a member that is only slow
// (a loaded machine, a thousand clients) answers a PING at once, from its
// HTTP/2 transport, whatever its request queue: dropping the connections
// of a slow member would bring every client back to it at once and make it
// slower (a check by request did exactly that to a fleet of 700 replicas
// on a loaded 2-core machine: 2,114 members dropped in 40 s). A process
// that is stopped, or behind a network that drops its packets,
// acknowledges nothing.
type members struct {
	log *slog.Logger
	m   *Metrics
	// heardWithin: a member that sent bytes this recently is slow, not
	// hung (the cadence's followBound).
	heardWithin time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// tls is the client's TLS configuration (nil: plaintext), for the
	// check's own connection.
	tls *tls.Config

	mu       sync.Mutex
	conns    map[string]*trackedConn // by local address (what gRPC's peer names)
	checking map[string]bool         // dialled addresses being checked
	severed  map[string]time.Time    // when each member's connections were last dropped
	closed   bool
}

// severAgain is how soon a member's connections may be dropped again: the
// connections gRPC makes to a member that still hangs never become ready,
// so there is nothing more to drop, and a member that answers again is
// given a chance before a new verdict.
const severAgain = 10 * time.Second

// checkTimeout bounds the liveness check of a suspect member: a running
// member acknowledges an HTTP/2 PING from its transport in milliseconds,
// however busy its request handling is; the bound is generous so that a
// member (or a replica) starved of CPU for seconds is not taken for a
// stopped one (a thousand replicas on a loaded machine saw members miss a
// 2 s bound). Neither the watch nor requests wait for it: the watch moves
// to the next member on its own (Source.watchClient), and a request's
// first attempt goes to the watch's member; what waits is the rest of the
// client's traffic (lease keep-alives, the rollout watches).
const checkTimeout = 5 * time.Second

// Reconnection: a member that was killed and restarted, or that comes back
// from a stall, is reached again within about a second. gRPC's defaults
// (backoff up to 120 s, 20 s per connection attempt) would leave a replica
// on fewer members, or none, for minutes after a long outage.
var connectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: 5 * time.Second,
}

func newMembers(o ClientOptions, log *slog.Logger, m *Metrics, heardWithin time.Duration) *members {
	ctx, cancel := context.WithCancel(context.Background())
	ms := &members{
		log: log, m: m, ctx: ctx, cancel: cancel, heardWithin: heardWithin,
		conns: map[string]*trackedConn{}, checking: map[string]bool{}, severed: map[string]time.Time{},
	}
	if cfg, err := o.Config(); err == nil && cfg.TLS != nil {
		ms.tls = cfg.TLS.Clone()
		ms.tls.NextProtos = []string{"h2"}
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

// rawDial connects to a member as dialled by gRPC (tcp or unix).
func rawDial(ctx context.Context, addr string) (net.Conn, error) {
	network, target := "tcp", addr
	switch {
	case strings.HasPrefix(addr, "unix://"):
		network, target = "unix", strings.TrimPrefix(addr, "unix://")
	case strings.HasPrefix(addr, "unix:"):
		network, target = "unix", strings.TrimPrefix(addr, "unix:")
	}
	var d net.Dialer
	return d.DialContext(ctx, network, target)
}

func (ms *members) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := rawDial(ctx, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, ms: ms, addr: addr, local: c.LocalAddr().String()}
	tc.lastRead.Store(time.Now().UnixNano())
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
	// lastRead is when bytes last came from the member (UnixNano): a
	// stopped process, or a network that drops its packets, sends none;
	// a member that is only slow keeps answering something (another
	// request, a lease keep-alive, a progress notification).
	lastRead atomic.Int64
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
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
	if member == "" || ms.heard(member, ms.heardWithin) {
		// It sent bytes within the bound: slow, not hung.
		return
	}
	ms.mu.Lock()
	if ms.closed || ms.checking[member] || time.Since(ms.severed[member]) < severAgain {
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
			ms.mu.Lock()
			ms.severed[member] = time.Now()
			ms.mu.Unlock()
			n := ms.sever(member)
			ms.m.severed.Inc()
			ms.log.Warn("etcd member does not answer: dropped its connections; its requests and watches go to the other members",
				"member", member, "suspected_because", why, "check", err.Error(), "connections", n)
		}
	}()
}

// check sends member an HTTP/2 PING on a connection of its own and
// returns nil once it is acknowledged, or when the verdict is not clear.
// An error is the one clear sign of a member that hangs: the connection
// is accepted (by its kernel, or a network in between) and the PING is
// not acknowledged in time. A refused connection says the member is down,
// and its connections are dead already; a connection that cannot be made
// in time may as well be this replica's own trouble.
func (ms *members) check(member string) error {
	ctx, cancel := context.WithTimeout(ms.ctx, checkTimeout)
	defer cancel()
	conn, err := rawDial(ctx, member)
	if err != nil {
		return nil
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	stop := context.AfterFunc(ms.ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if ms.tls != nil {
		cfg := ms.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(member)
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		conn = tc
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		return err
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	data := [8]byte{'s', 'p', 'l', 'i', 't', 't', 'e', 'r'}
	if err := fr.WritePing(false, data); err != nil {
		return err
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if ms.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("no PING acknowledgement within %v: %w", checkTimeout, err)
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if f.IsAck() && f.Data == data {
				return nil
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			return fmt.Errorf("GOAWAY before the PING acknowledgement: %v", f.ErrCode)
		}
	}
}

// heard says whether member sent bytes on any of the client's
// connections within d.
func (ms *members) heard(member string, d time.Duration) bool {
	since := time.Now().Add(-d).UnixNano()
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, c := range ms.conns {
		if c.addr == member && c.lastRead.Load() >= since {
			return true
		}
	}
	return false
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

// close stops the checks.
func (ms *members) close() {
	ms.mu.Lock()
	ms.closed = true
	ms.mu.Unlock()
	ms.cancel()
	ms.wg.Wait()
}
