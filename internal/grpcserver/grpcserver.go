// Package grpcserver builds the sidecar's gRPC server with settings that fit
// a co-located Envoy (keepalive policy, message limits, stream limits,
// panic recovery), a health helper for grpc.health.v1, and Serve, which
// drains the server gracefully but within a deadline.
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/trafficsplit/splitter/internal/fastcodec"
)

// Defaults for Options.
const (
	DefaultMaxRecvMsgSize       = 1 << 20 // well above Envoy's 60 KiB request-header default
	DefaultMaxSendMsgSize       = 1 << 20
	DefaultMaxHeaderListSize    = 256 << 10
	DefaultMaxConcurrentStreams = 1 << 20
	// DefaultKeepaliveMinTime is the shortest client ping interval accepted.
	// Envoy's connection_keepalive may ping idle connections; a stricter
	// policy (grpc-go's default is 5 min) answers with GOAWAY too_many_pings.
	DefaultKeepaliveMinTime = 5 * time.Second
	// Server pings find half-dead Envoy connections.
	DefaultKeepaliveTime    = 30 * time.Second
	DefaultKeepaliveTimeout = 10 * time.Second
)

// Options configures New. Zero fields take the defaults above.
type Options struct {
	MaxRecvMsgSize    int
	MaxSendMsgSize    int
	MaxHeaderListSize uint32
	// MaxConcurrentStreams is per connection. Envoy ignores the advertised
	// limit and queues excess streams itself, which shows up as
	// message_timeout rather than back-pressure, so keep it generous.
	MaxConcurrentStreams uint32
	KeepaliveMinTime     time.Duration
	Logger               *slog.Logger
	// OnPanic is called once per panic recovered by the interceptors.
	OnPanic func()
	// Codec encodes and decodes every message; nil: fastcodec.New(), which
	// behaves as grpc-go's proto codec, only cheaper for ext_proc.
	Codec encoding.CodecV2
	// Extra is appended to the options New builds.
	Extra []grpc.ServerOption
}

// settings is Options with the defaults filled in.
type settings struct {
	maxRecv, maxSend int
	maxHeaderList    uint32
	maxStreams       uint32
	enforcement      keepalive.EnforcementPolicy
	params           keepalive.ServerParameters
}

func resolve(o Options) settings {
	s := settings{
		maxRecv:       o.MaxRecvMsgSize,
		maxSend:       o.MaxSendMsgSize,
		maxHeaderList: o.MaxHeaderListSize,
		maxStreams:    o.MaxConcurrentStreams,
		enforcement:   keepalive.EnforcementPolicy{MinTime: o.KeepaliveMinTime, PermitWithoutStream: true},
		params:        keepalive.ServerParameters{Time: DefaultKeepaliveTime, Timeout: DefaultKeepaliveTimeout},
	}
	if s.maxRecv <= 0 {
		s.maxRecv = DefaultMaxRecvMsgSize
	}
	if s.maxSend <= 0 {
		s.maxSend = DefaultMaxSendMsgSize
	}
	if s.maxHeaderList == 0 {
		s.maxHeaderList = DefaultMaxHeaderListSize
	}
	if s.maxStreams == 0 {
		s.maxStreams = DefaultMaxConcurrentStreams
	}
	if s.enforcement.MinTime <= 0 {
		s.enforcement.MinTime = DefaultKeepaliveMinTime
	}
	return s
}

// New returns a gRPC server configured for Envoy; register services on it.
func New(opts Options) *grpc.Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := resolve(opts)
	rec := recoverer{log: log, onPanic: opts.OnPanic}
	codec := opts.Codec
	if codec == nil {
		codec = fastcodec.New()
	}
	so := []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec),
		grpc.KeepaliveEnforcementPolicy(s.enforcement),
		grpc.KeepaliveParams(s.params),
		grpc.MaxRecvMsgSize(s.maxRecv),
		grpc.MaxSendMsgSize(s.maxSend),
		grpc.MaxHeaderListSize(s.maxHeaderList),
		grpc.MaxConcurrentStreams(s.maxStreams),
		grpc.ChainUnaryInterceptor(rec.unary),
		grpc.ChainStreamInterceptor(rec.stream),
		// Stop waits for handlers to return, so nothing outlives Serve.
		grpc.WaitForHandlers(true),
	}
	return grpc.NewServer(append(so, opts.Extra...)...)
}

// recoverer turns a handler panic into codes.Internal instead of a crash
// that would take every in-flight stream with it.
type recoverer struct {
	log     *slog.Logger
	onPanic func()
}

func (r recoverer) recovered(method string, p any) error {
	r.log.Error("grpc handler panic recovered", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	if r.onPanic != nil {
		r.onPanic()
	}
	return status.Error(codes.Internal, "internal error")
}

func (r recoverer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, r.recovered(info.FullMethod, p)
		}
	}()
	return h(ctx, req)
}

func (r recoverer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = r.recovered(info.FullMethod, p)
		}
	}()
	return h(srv, ss)
}

// Serve serves srv on lis until ctx is done, then drains: health goes
// NOT_SERVING, GracefulStop lets open streams finish, and Stop cuts the rest
// once drainTimeout has passed. It returns nil on a clean stop and the
// serve error if the server failed on its own. health may be nil.
func Serve(ctx context.Context, lis net.Listener, srv *grpc.Server, health *Health, drainTimeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	var serveErr error
	select {
	case serveErr = <-errc:
		// Serve failed by itself: still stop cleanly so no handler is left.
		health.Drain()
		srv.Stop()
		if serveErr == nil || errors.Is(serveErr, grpc.ErrServerStopped) {
			return nil
		}
		return fmt.Errorf("grpc serve on %s: %w", lis.Addr(), serveErr)
	case <-ctx.Done():
	}
	health.Drain()
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(drainTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		srv.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("grpc serve on %s: %w", lis.Addr(), err)
	}
	return nil
}
