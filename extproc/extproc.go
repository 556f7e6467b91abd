// Package extproc answers Envoy's ext_proc stream
// (envoy.service.ext_proc.v3.ExternalProcessor/Process): one stream per
// HTTP request, decided on request_headers by the split engine and answered
// with a header mutation that sets the route header and clears Envoy's route
// cache. Every other phase gets its matching empty answer, so an Envoy
// configured to send more than request headers never stalls; a stream reset
// by Envoy ends quietly.
package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trafficsplit/splitter/internal/envoyhdr"
	"github.com/trafficsplit/splitter/internal/fastcodec"
	"github.com/trafficsplit/splitter/split"
)

// API is the api label this package reports to its Recorder.
const API = "ext_proc"

// DefaultRouteHeader is the request header the decided version is written to.
const DefaultRouteHeader = envoyhdr.DefaultRouteHeader

// Stream results reported to Recorder.StreamEnded.
const (
	ResultOK       = "ok"        // answered and ended by the peer
	ResultCanceled = "canceled"  // ended by the peer before anything was answered
	ResultError    = "error"     // Recv or Send failed
	ResultPanic    = "panic"     // the handler panicked and recovered
	ResultNoConfig = "no_config" // request_headers arrived before any table was loaded
)

// Phases reported to Recorder.PhaseUnexpected.
const (
	PhaseRequestBody             = "request_body"
	PhaseRequestTrailers         = "request_trailers"
	PhaseResponseHeaders         = "response_headers"
	PhaseResponseBody            = "response_body"
	PhaseResponseTrailers        = "response_trailers"
	PhaseUnknown                 = "unknown"
	PhaseDuplicateRequestHeaders = "duplicate_request_headers"
)

// TableSource gives the current compiled snapshot (nil before the first load).
type TableSource interface{ Table() *split.Table }

// Recorder receives metrics events; the metrics package implements it. Must
// be cheap: it is called on every request. If it also has a Panic() method,
// that is called once per recovered panic.
type Recorder interface {
	Decided(api string, d *split.Decision) // api: "ext_proc" | "ext_authz"
	StreamStarted(api string)
	StreamEnded(api string, result string) // one of the Result* constants
	PhaseUnexpected(api string, phase string)
}

// Options configures a Server.
type Options struct {
	RouteHeader  string // default "x-route-version"
	ReasonHeader string // "" disables
	Logger       *slog.Logger
	Recorder     Recorder // nil: no metrics
}

// Server implements extprocv3.ExternalProcessorServer.
type Server struct {
	src   TableSource
	rec   Recorder
	log   *slog.Logger
	route string
	// reason is "" when the reason header is disabled or invalid.
	reason string

	empty     emptyResponses
	unmatched *fastcodec.Encoded
	cache     envoyhdr.Cache[*fastcodec.Encoded]
	pool      envoyhdr.Pool
	requests  fastcodec.RequestPool
}

// emptyResponses are the constant "continue unchanged" answers, one per
// phase. Like every answer here they are encoded once and shared by all
// streams; nothing ever modifies them.
type emptyResponses struct {
	requestHeaders, responseHeaders   *fastcodec.Encoded
	requestBody, responseBody         *fastcodec.Encoded
	requestTrailers, responseTrailers *fastcodec.Encoded
}

// New returns a Server deciding from src. Header names are expected to be
// validated by the caller; an invalid reason header is disabled and an
// invalid route header replaced by the default, with an error logged.
func New(src TableSource, opts Options) *Server {
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
	s.empty = emptyResponses{
		requestHeaders: fastcodec.Encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{}}}),
		responseHeaders: fastcodec.Encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{}}}),
		requestBody: fastcodec.Encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{}}}),
		responseBody: fastcodec.Encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{}}}),
		requestTrailers: fastcodec.Encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}),
		responseTrailers: fastcodec.Encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}),
	}
	s.unmatched = s.buildUnmatched()
	return s
}

// streamState is what one stream (one HTTP request) remembers between
// messages. It lives on the handler goroutine's stack.
type streamState struct {
	table      *split.Table
	loaded     bool // table was read (it may be nil)
	sawHeaders bool // a request_headers message was handled
	answered   bool // at least one message was handled to the end
	result     string
	// pending is the message being handled, so a panic can still answer it.
	pending *extprocv3.ProcessingRequest
}

// Process handles one ext_proc stream.
//
// Messages are received into a pooled fastcodec.Request, which the
// sidecar's codec decodes without allocating; any other codec decodes it
// as the plain ProcessingRequest it embeds. Header values point into the
// Request's storage, so nothing taken from a message may outlive the
// stream: the Request goes back to the pool when Process returns (after
// the panic handler, which may still answer the pending message).
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) (err error) {
	in := s.requests.Get()
	defer s.requests.Put(in)
	s.rec.StreamStarted(API)
	st := streamState{result: ResultOK}
	defer func() {
		if r := recover(); r != nil {
			err = s.recovered(stream, &st, r)
		}
		s.rec.StreamEnded(API, st.result)
	}()
	for {
		rerr := stream.RecvMsg(in)
		if rerr != nil {
			if isStreamEnd(rerr) {
				if !st.answered && st.result == ResultOK {
					st.result = ResultCanceled
				}
				return nil
			}
			st.result = ResultError
			s.log.Debug("ext_proc receive failed", "error", rerr)
			return rerr
		}
		req := &in.ProcessingRequest
		st.pending = req
		resp := s.respond(stream.Context(), &st, req)
		if resp == nil {
			// An empty oneof: nothing we know how to answer. Closing with
			// OK lets Envoy carry on without us for this request.
			s.rec.PhaseUnexpected(API, PhaseUnknown)
			st.pending = nil
			return nil
		}
		if !req.GetObservabilityMode() {
			// In observability mode Envoy ignores replies and counts them
			// as spurious, so we decide (for metrics) but stay silent.
			if serr := stream.SendMsg(resp); serr != nil {
				st.pending = nil
				st.result = ResultError
				s.log.Debug("ext_proc send failed", "error", serr)
				return serr
			}
		}
		st.pending = nil
		st.answered = true
	}
}

// isStreamEnd reports whether a Recv error is the peer ending the stream:
// a half-close (io.EOF) or, as Envoy normally does, a reset (Canceled).
func isStreamEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled
}

// respond returns the answer to req, or nil for an empty oneof.
func (s *Server) respond(ctx context.Context, st *streamState, req *extprocv3.ProcessingRequest) *fastcodec.Encoded {
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		if st.sawHeaders {
			s.rec.PhaseUnexpected(API, PhaseDuplicateRequestHeaders)
			return s.empty.requestHeaders
		}
		st.sawHeaders = true
		return s.decide(ctx, st, r.RequestHeaders.GetHeaders())
	case *extprocv3.ProcessingRequest_RequestBody:
		s.rec.PhaseUnexpected(API, PhaseRequestBody)
		return s.empty.requestBody
	case *extprocv3.ProcessingRequest_RequestTrailers:
		s.rec.PhaseUnexpected(API, PhaseRequestTrailers)
		return s.empty.requestTrailers
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		s.rec.PhaseUnexpected(API, PhaseResponseHeaders)
		return s.empty.responseHeaders
	case *extprocv3.ProcessingRequest_ResponseBody:
		s.rec.PhaseUnexpected(API, PhaseResponseBody)
		return s.empty.responseBody
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		s.rec.PhaseUnexpected(API, PhaseResponseTrailers)
		return s.empty.responseTrailers
	default:
		return nil
	}
}

// emptyFor returns the "continue unchanged" answer for req's phase.
func (s *Server) emptyFor(req *extprocv3.ProcessingRequest) *fastcodec.Encoded {
	switch req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return s.empty.requestHeaders
	case *extprocv3.ProcessingRequest_RequestBody:
		return s.empty.requestBody
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return s.empty.requestTrailers
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return s.empty.responseHeaders
	case *extprocv3.ProcessingRequest_ResponseBody:
		return s.empty.responseBody
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return s.empty.responseTrailers
	default:
		return nil
	}
}

// decide routes the request and returns its mutation. The table is read
// once per stream, so a reload never splits one request across snapshots.
func (s *Server) decide(ctx context.Context, st *streamState, hm *corev3.HeaderMap) *fastcodec.Encoded {
	if !st.loaded {
		st.table = s.src.Table()
		st.loaded = true
	}
	if st.table == nil {
		st.result = ResultNoConfig
		return s.unmatched
	}
	sc := s.pool.Get()
	defer s.pool.Put(sc)
	envoyhdr.FromHeaderMap(&sc.Req, hm)
	st.table.Decide(&sc.Req, &sc.Dec)
	s.rec.Decided(API, &sc.Dec)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "decided", "api", API, "authority", sc.Req.Authority,
			"service", sc.Dec.Service, "version", sc.Dec.Version, "reason", sc.Dec.Reason.String(), "rule", sc.Dec.Rule)
	}
	if sc.Dec.Version == "" {
		return s.unmatched
	}
	sc.Key = envoyhdr.AppendKey(sc.Key[:0], &sc.Dec)
	if resp, ok := s.cache.Get(sc.Key); ok {
		return resp
	}
	resp := s.buildMatched(&sc.Dec)
	s.cache.Put(sc.Key, resp)
	return resp
}

// recovered turns a panic into the least disruptive answer: the pending
// phase's empty response if it can still be sent (Envoy then continues
// unchanged), else codes.Internal (Envoy applies its failure mode).
func (s *Server) recovered(stream extprocv3.ExternalProcessor_ProcessServer, st *streamState, r any) (err error) {
	st.result = ResultPanic
	s.log.Error("ext_proc handler panic recovered", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	if p, ok := s.rec.(interface{ Panic() }); ok {
		p.Panic()
	}
	internal := status.Error(codes.Internal, "ext_proc: internal error")
	req := st.pending
	if req == nil || req.GetObservabilityMode() {
		return internal
	}
	resp := s.emptyFor(req)
	if resp == nil {
		return internal
	}
	defer func() {
		// A Send that panics too must not take the process down.
		if recover() != nil {
			err = internal
		}
	}()
	if stream.SendMsg(resp) != nil {
		return internal
	}
	return nil
}

type nopRecorder struct{}

func (nopRecorder) Decided(string, *split.Decision) {}
func (nopRecorder) StreamStarted(string)            {}
func (nopRecorder) StreamEnded(string, string)      {}
func (nopRecorder) PhaseUnexpected(string, string)  {}
