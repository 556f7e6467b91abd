// Package extproc answers Envoy's ext_proc stream
// (envoy.service.ext_proc.v3.ExternalProcessor/Process): one stream per
// HTTP request, decided on request_headers by the split engine and answered
// with a header mutation that sets the route header and clears Envoy's route
// cache. A request given a fresh sticky key (sticky.assign) also asks
// Envoy, through the reply's mode_override, for its response headers, and
// the answer to those adds the key's Set-Cookie. Every other phase gets its
// matching empty answer, so an Envoy configured to send more than request
// headers never stalls; a stream reset by Envoy ends quietly.
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

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/envoypb"
	"github.com/trafficsplit/splitter/internal/fastcodec"
	"github.com/trafficsplit/splitter/split"
)

// API is the api label this package reports to its Recorder.
const API = adapter.APIExtProc

// Options configures a Server.
type Options struct {
	Headers  adapter.Headers // zero value: the defaults
	Logger   *slog.Logger
	Recorder adapter.Recorder // nil: no metrics
}

// Server implements extprocv3.ExternalProcessorServer.
type Server struct {
	src     adapter.TableSource
	rec     adapter.Recorder
	log     *slog.Logger
	headers adapter.Headers

	empty     emptyResponses
	unrouted  *fastcodec.Encoded
	responses *adapter.Responses[fastcodec.Encoded]
	pool      adapter.Pool
	requests  fastcodec.RequestPool
	// cookies follows whether Envoy sends the response phase assigned
	// requests ask for (cookie.go); cookieRec counts the lost ones.
	cookies   cookieWatch
	cookieRec adapter.CookieRecorder
}

// emptyResponses are the constant "continue unchanged" answers, one per
// phase. Like every answer here they are encoded once and shared by all
// streams; nothing ever modifies them.
type emptyResponses struct {
	requestHeaders, responseHeaders   *fastcodec.Encoded
	requestBody, responseBody         *fastcodec.Encoded
	requestTrailers, responseTrailers *fastcodec.Encoded
}

// New returns a Server deciding from src. The header names are expected
// to come from adapter.NewHeaders.
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
	s.cookieRec, _ = rec.(adapter.CookieRecorder)
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
	var p adapter.Plan
	s.headers.PlanFor(nil, &p)
	s.unrouted = s.build(&p)
	s.responses = adapter.NewResponses(src, s.headers, s.build)
	return s
}

// CacheStats reports the response cache's hits and misses.
func (s *Server) CacheStats() (hits, misses uint64) { return s.responses.Stats() }

// streamState is what one stream (one HTTP request) remembers between
// messages. It lives on the handler goroutine's stack.
type streamState struct {
	table      *split.Table
	loaded     bool // table was read (it may be nil)
	sawHeaders bool // a request_headers message was handled
	answered   bool // at least one message was handled to the end
	result     string
	// setCookie is the Set-Cookie value of a request given a fresh key,
	// added to its response headers (which its mode_override asked for);
	// nil for every other request.
	setCookie []byte
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
	st := streamState{result: adapter.ResultOK}
	defer func() {
		if r := recover(); r != nil {
			err = s.recovered(stream, &st, r)
		}
		if st.setCookie != nil {
			s.cookieLost()
		}
		s.rec.StreamEnded(API, st.result)
	}()
	for {
		rerr := stream.RecvMsg(in)
		if rerr != nil {
			if isStreamEnd(rerr) {
				if !st.answered && st.result == adapter.ResultOK {
					st.result = adapter.ResultCanceled
				}
				return nil
			}
			st.result = adapter.ResultError
			s.log.Debug("ext_proc receive failed", "error", rerr)
			return rerr
		}
		req := &in.ProcessingRequest
		st.pending = req
		resp := s.respond(stream.Context(), &st, req)
		if resp == nil {
			// An empty oneof: nothing we know how to answer. Closing with
			// OK lets Envoy carry on without us for this request.
			s.rec.PhaseUnexpected(API, adapter.PhaseUnknown)
			st.pending = nil
			return nil
		}
		if !req.GetObservabilityMode() {
			// In observability mode Envoy ignores replies and counts them
			// as spurious, so we decide (for metrics) but stay silent.
			if serr := stream.SendMsg(resp); serr != nil {
				st.pending = nil
				st.result = adapter.ResultError
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
			s.rec.PhaseUnexpected(API, adapter.PhaseDuplicateRequestHeaders)
			return s.empty.requestHeaders
		}
		st.sawHeaders = true
		return s.decide(ctx, st, r.RequestHeaders.GetHeaders())
	case *extprocv3.ProcessingRequest_RequestBody:
		s.rec.PhaseUnexpected(API, adapter.PhaseRequestBody)
		return s.empty.requestBody
	case *extprocv3.ProcessingRequest_RequestTrailers:
		s.rec.PhaseUnexpected(API, adapter.PhaseRequestTrailers)
		return s.empty.requestTrailers
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		if st.setCookie != nil {
			// Asked for by the assigned request's mode_override.
			resp := fastcodec.Encode(setCookie(st.setCookie))
			st.setCookie = nil
			s.cookieSet()
			return resp
		}
		s.rec.PhaseUnexpected(API, adapter.PhaseResponseHeaders)
		return s.empty.responseHeaders
	case *extprocv3.ProcessingRequest_ResponseBody:
		s.rec.PhaseUnexpected(API, adapter.PhaseResponseBody)
		return s.empty.responseBody
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		s.rec.PhaseUnexpected(API, adapter.PhaseResponseTrailers)
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
		st.result = adapter.ResultNoConfig
		return s.unrouted
	}
	sc := s.pool.Get()
	defer s.pool.Put(sc)
	envoypb.FromHeaders(&sc.Req, hm.GetHeaders())
	st.table.Decide(&sc.Req, &sc.Dec)
	s.rec.Decided(API, &sc.Dec)
	if sc.Dec.Assigned() {
		st.setCookie = sc.Dec.AppendSetCookie(make([]byte, 0, 128))
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "decided", "api", API, "authority", sc.Req.Authority,
			"service", sc.Dec.Service, "version", sc.Dec.Version, "reason", sc.Dec.Reason.String(), "rule", sc.Dec.Rule)
	}
	return s.responses.Get(st.table, &sc.Dec)
}

// recovered turns a panic into the least disruptive answer: the pending
// phase's empty response if it can still be sent (Envoy then continues
// unchanged), else codes.Internal (Envoy applies its failure mode).
func (s *Server) recovered(stream extprocv3.ExternalProcessor_ProcessServer, st *streamState, r any) (err error) {
	st.result = adapter.ResultPanic
	s.log.Error("ext_proc handler panic recovered", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	s.rec.Panic(API)
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
