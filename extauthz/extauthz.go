// Package extauthz answers Envoy's ext_authz Check
// (envoy.service.auth.v3.Authorization/Check) with the same decision and
// the same headers as the other adapters. It never denies: every answer is
// OK, carrying the route header (in value, which is what ext_authz reads)
// or, for a request no service claims, the removal of a client-sent route
// header. A request given a fresh sticky key (sticky.assign) also gets the
// key's Set-Cookie in response_headers_to_add.
//
// Repeated headers: by default Envoy sends ext_authz a map of headers in
// which repeated ones are joined with commas, which would make a request
// carrying two x-user-id headers hash "a,b" here and "a" through ext_proc.
// The bootstraps therefore set encode_raw_headers: true, and Envoy sends
// header_map, one entry per header line, which this adapter reads exactly
// as ext_proc reads its headers. A request that arrives with only the
// joined map is still decided, from the joined values, and a warning is
// logged once.
package extauthz

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/envoypb"
	"github.com/trafficsplit/splitter/internal/fastcodec"
	"github.com/trafficsplit/splitter/split"
)

// API is the api label this package reports to its Recorder.
const API = adapter.APIExtAuthz

// Options configures a Server.
type Options struct {
	Headers  adapter.Headers // zero value: the defaults
	Logger   *slog.Logger
	Recorder adapter.Recorder // nil: no metrics
}

// Server implements authv3.AuthorizationServer. Register it with Register,
// which sends its prebuilt answers without marshalling them per call.
type Server struct {
	src     adapter.TableSource
	rec     adapter.Recorder
	log     *slog.Logger
	headers adapter.Headers

	unrouted   *fastcodec.Encoded
	responses  *adapter.Responses[fastcodec.Encoded]
	pool       adapter.Pool
	joinedOnce sync.Once
}

// New returns a Server deciding from src.
func New(src adapter.TableSource, opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec := opts.Recorder
	if rec == nil {
		rec = adapter.NopRecorder{}
	}
	s := &Server{src: src, rec: rec, log: log, headers: opts.Headers}
	var p adapter.Plan
	s.headers.PlanFor(nil, &p)
	s.unrouted = s.build(&p)
	s.responses = adapter.NewResponses(src, s.headers, s.build)
	return s
}

// CacheStats reports the response cache's hits and misses.
func (s *Server) CacheStats() (hits, misses uint64) { return s.responses.Stats() }

// Register adds the Authorization service to r. Its handler hands gRPC the
// prebuilt, already encoded answer (the codec sends its bytes as they are;
// any other codec marshals the CheckResponse it wraps).
func (s *Server) Register(r grpc.ServiceRegistrar) {
	r.RegisterService(&grpc.ServiceDesc{
		ServiceName: "envoy.service.auth.v3.Authorization",
		HandlerType: (*authv3.AuthorizationServer)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Check",
			Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
				in := new(authv3.CheckRequest)
				if err := dec(in); err != nil {
					return nil, err
				}
				if ic == nil {
					return s.check(ctx, in), nil
				}
				info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
				return ic(ctx, in, info, func(ctx context.Context, req any) (any, error) {
					return s.check(ctx, req.(*authv3.CheckRequest)), nil
				})
			},
		}},
		Metadata: "envoy/service/auth/v3/external_auth.proto",
	}, s)
}

// Check decides one request (authv3.AuthorizationServer).
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return s.check(ctx, req).Message.(*authv3.CheckResponse), nil
}

// check decides one request. Each call is reported to the Recorder as a
// stream of its own, so ext_proc and ext_authz read the same way.
func (s *Server) check(ctx context.Context, req *authv3.CheckRequest) (resp *fastcodec.Encoded) {
	s.rec.StreamStarted(API)
	result := adapter.ResultOK
	defer func() {
		if r := recover(); r != nil {
			// A panic must not become a gRPC error: with
			// failure_mode_allow false that would be a 403.
			result = adapter.ResultPanic
			s.log.Error("ext_authz handler panic recovered", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			s.rec.Panic(API)
			resp = s.unrouted
		}
		s.rec.StreamEnded(API, result)
	}()
	table := s.src.Table()
	if table == nil {
		result = adapter.ResultNoConfig
		return s.unrouted
	}
	sc := s.pool.Get()
	defer s.pool.Put(sc)
	s.fromCheck(&sc.Req, req.GetAttributes().GetRequest().GetHttp())
	table.Decide(&sc.Req, &sc.Dec)
	s.rec.Decided(API, &sc.Dec)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "decided", "api", API, "authority", sc.Req.Authority,
			"service", sc.Dec.Service, "version", sc.Dec.Version, "reason", sc.Dec.Reason.String(), "rule", sc.Dec.Rule)
	}
	if sc.Dec.Assigned() {
		return s.assigned(&sc.Dec)
	}
	return s.responses.Get(table, &sc.Dec)
}

// assigned answers a request given a fresh sticky key: its plan, plus the
// key's Set-Cookie in response_headers_to_add, which Envoy adds to the
// response sent downstream. APPEND_IF_EXISTS_OR_ADD adds an entry beside a
// Set-Cookie the backend sent, never replacing it. Built per request (the
// key is the request's own); every other answer is shared.
func (s *Server) assigned(d *split.Decision) *fastcodec.Encoded {
	var p adapter.Plan
	s.headers.PlanFor(d, &p)
	resp := s.message(&p)
	resp.GetOkResponse().ResponseHeadersToAdd = []*corev3.HeaderValueOption{{
		Header:       &corev3.HeaderValue{Key: adapter.SetCookieHeader, Value: string(d.AppendSetCookie(make([]byte, 0, 128)))},
		AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
	}}
	return fastcodec.Encode(resp)
}

// fromCheck fills req from ext_authz attributes: header_map (sent with
// encode_raw_headers: one entry per header line, as ext_proc gets them) or
// else the joined headers map. The dedicated host, path and method fields
// win over the pseudo-headers.
func (s *Server) fromCheck(req *split.Request, h *authv3.AttributeContext_HttpRequest) {
	if hm := h.GetHeaderMap().GetHeaders(); len(hm) > 0 {
		envoypb.FromHeaders(req, hm)
	} else {
		adapter.ResetRequest(req)
		for k, v := range h.GetHeaders() {
			adapter.AddHeader(req, k, v)
		}
		if len(h.GetHeaders()) > 0 {
			s.joinedOnce.Do(func() {
				s.log.Warn("ext_authz sends joined headers: repeated headers arrive comma-joined and may decide differently than through ext_proc; set encode_raw_headers: true on the ext_authz filter")
			})
		}
	}
	if v := h.GetHost(); v != "" {
		req.Authority = v
	}
	if v := h.GetPath(); v != "" {
		req.Path = v
	}
	if v := h.GetMethod(); v != "" {
		req.Method = v
	}
	adapter.FinishRequest(req)
}

// build encodes a plan as an OK answer. It runs once per header outcome of
// a table; the answer is shared, so it is never modified afterwards.
// ext_authz reads value (not raw_value), and an unset append_action would
// add a second copy next to the client's, which breaks an exact route
// match.
func (s *Server) build(p *adapter.Plan) *fastcodec.Encoded {
	if p.Skipped > 0 {
		s.log.Error("experiment headers not written: invalid or clashing name or value", "skipped", p.Skipped)
	}
	return fastcodec.Encode(s.message(p))
}

// message is the OK answer that applies p.
func (s *Server) message(p *adapter.Plan) *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{}
	if p.Remove != "" {
		ok.HeadersToRemove = append(ok.HeadersToRemove, p.Remove)
	}
	if p.RemoveMirror != "" {
		ok.HeadersToRemove = append(ok.HeadersToRemove, p.RemoveMirror)
	}
	for _, h := range p.Set() {
		ok.Headers = append(ok.Headers, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{}, // code 0: OK
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
}
