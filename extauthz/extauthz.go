// Package extauthz answers Envoy's ext_authz Check
// (envoy.service.auth.v3.Authorization/Check) with the same decision the
// ext_proc adapter makes. It never denies: every answer is OK, carrying the
// route header (in value, which is what ext_authz reads) or, for a request
// no service claims, the removal of a client-sent route header.
package extauthz

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/trafficsplit/splitter/extproc"
	"github.com/trafficsplit/splitter/internal/envoyhdr"
	"github.com/trafficsplit/splitter/split"
)

// API is the api label this package reports to its Recorder.
const API = "ext_authz"

// Options configures a Server; the fields mean what they mean for extproc.
type Options struct {
	RouteHeader  string // default "x-route-version"
	ReasonHeader string // "" disables
	Logger       *slog.Logger
	Recorder     extproc.Recorder // nil: no metrics
}

// Server implements authv3.AuthorizationServer.
type Server struct {
	src    extproc.TableSource
	rec    extproc.Recorder
	log    *slog.Logger
	route  string
	reason string

	unmatched *authv3.CheckResponse
	cache     envoyhdr.Cache[*authv3.CheckResponse]
	pool      envoyhdr.Pool
}

// New returns a Server deciding from src.
func New(src extproc.TableSource, opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec := opts.Recorder
	if rec == nil {
		rec = nopRecorder{}
	}
	route, reason := envoyhdr.HeaderNames(log, opts.RouteHeader, opts.ReasonHeader)
	s := &Server{src: src, rec: rec, log: log, route: route, reason: reason}
	s.unmatched = s.buildUnmatched()
	return s
}

// Check decides one request. Each call is reported to the Recorder as a
// stream of its own, so ext_proc and ext_authz read the same way.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, err error) {
	s.rec.StreamStarted(API)
	result := extproc.ResultOK
	defer func() {
		if r := recover(); r != nil {
			// A panic must not become a gRPC error: with
			// failure_mode_allow false that would be a 403.
			result = extproc.ResultPanic
			s.log.Error("ext_authz handler panic recovered", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			if p, ok := s.rec.(interface{ Panic() }); ok {
				p.Panic()
			}
			resp, err = s.unmatched, nil
		}
		s.rec.StreamEnded(API, result)
	}()
	table := s.src.Table()
	if table == nil {
		result = extproc.ResultNoConfig
		return s.unmatched, nil
	}
	sc := s.pool.Get()
	defer s.pool.Put(sc)
	fromCheck(&sc.Req, req.GetAttributes().GetRequest().GetHttp())
	table.Decide(&sc.Req, &sc.Dec)
	s.rec.Decided(API, &sc.Dec)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "decided", "api", API, "authority", sc.Req.Authority,
			"service", sc.Dec.Service, "version", sc.Dec.Version, "reason", sc.Dec.Reason.String(), "rule", sc.Dec.Rule)
	}
	if sc.Dec.Version == "" {
		return s.unmatched, nil
	}
	sc.Key = envoyhdr.AppendKey(sc.Key[:0], &sc.Dec)
	if r, ok := s.cache.Get(sc.Key); ok {
		return r, nil
	}
	r := s.buildMatched(&sc.Dec)
	s.cache.Put(sc.Key, r)
	return r, nil
}

// fromCheck fills req from ext_authz attributes: the headers map (Envoy's
// default; duplicates arrive comma-joined) or, with encode_raw_headers,
// header_map. The dedicated host, path and method fields win over the
// pseudo-headers.
func fromCheck(req *split.Request, h *authv3.AttributeContext_HttpRequest) {
	envoyhdr.Reset(req)
	req.Authority, req.Path, req.Method = h.GetHost(), h.GetPath(), h.GetMethod()
	if hm := h.GetHeaderMap(); len(hm.GetHeaders()) > 0 {
		for _, kv := range hm.GetHeaders() {
			envoyhdr.Add(req, kv.GetKey(), envoyhdr.Value(kv))
		}
	} else {
		for k, v := range h.GetHeaders() {
			envoyhdr.Add(req, k, v)
		}
	}
	envoyhdr.Finish(req)
}

// setHeader builds one header for ok_response. ext_authz reads value (not
// raw_value), and an unset append_action would add a second copy next to
// the client's, which breaks an exact route match.
func setHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// validValue also requires UTF-8: value is a proto string field, and an
// unmarshalable response would turn into a gRPC error, i.e. a denial.
func validValue(s string) bool { return envoyhdr.ValidValue(s) && utf8.ValidString(s) }

func okResponse(r *authv3.OkHttpResponse) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{}, // code 0: OK
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: r},
	}
}

func (s *Server) buildUnmatched() *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{HeadersToRemove: []string{s.route}}
	if r := split.ReasonUnmatched.String(); s.reason != "" && validValue(r) {
		ok.Headers = append(ok.Headers, setHeader(s.reason, r))
	}
	return okResponse(ok)
}

// buildMatched runs once per distinct decision shape; the result is cached
// and shared, so it is never modified afterwards.
func (s *Server) buildMatched(d *split.Decision) *authv3.CheckResponse {
	if !validValue(d.Version) {
		s.log.Error("decided version is not a valid header value; answering as unmatched",
			"service", d.Service, "version", d.Version)
		return s.unmatched
	}
	ok := &authv3.OkHttpResponse{Headers: make([]*corev3.HeaderValueOption, 0, 2+len(d.Variants()))}
	ok.Headers = append(ok.Headers, setHeader(s.route, d.Version))
	if r := d.Reason.String(); s.reason != "" && validValue(r) {
		ok.Headers = append(ok.Headers, setHeader(s.reason, r))
	}
	for _, v := range d.Variants() {
		if !envoyhdr.ValidName(v.Header) || !validValue(v.Variant) || v.Header == s.route || v.Header == s.reason {
			s.log.Error("experiment header not written: invalid or clashing name or value",
				"experiment", v.Experiment, "header", v.Header, "variant", v.Variant)
			continue
		}
		ok.Headers = append(ok.Headers, setHeader(v.Header, v.Variant))
	}
	return okResponse(ok)
}

type nopRecorder struct{}

func (nopRecorder) Decided(string, *split.Decision) {}
func (nopRecorder) StreamStarted(string)            {}
func (nopRecorder) StreamEnded(string, string)      {}
func (nopRecorder) PhaseUnexpected(string, string)  {}
