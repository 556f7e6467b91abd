// Package adapter is what every Envoy adapter of splitter shares: ext_proc,
// ext_authz and the in-process module each translate Envoy's wire format to
// a split.Request and back, and nothing else. Everything between the two
// lives here, once:
//
//   - the header names the adapters write (Headers, with their defaults and
//     validation; header names are case-insensitive everywhere),
//   - the Plan that turns a decision into header mutations,
//   - a cache of prebuilt wire answers per header outcome of the table in
//     force (Responses),
//   - the Recorder the adapters report to, and the closed sets of its
//     label values (APIs, stream results, phases).
//
// No adapter imports another.
package adapter

import (
	"github.com/trafficsplit/splitter/split"
)

// API names, as reported to the Recorder.
const (
	APIExtProc  = "ext_proc"
	APIExtAuthz = "ext_authz"
	APIModule   = "module"
)

// APIs returns every API name, in a fixed order.
func APIs() []string { return []string{APIExtProc, APIExtAuthz, APIModule} }

// Stream results reported to Recorder.StreamEnded. For ext_authz and the
// module every request counts as a stream of its own.
const (
	ResultOK       = "ok"        // answered (and, for ext_proc, ended by the peer)
	ResultCanceled = "canceled"  // ended by the peer before anything was answered
	ResultError    = "error"     // the transport failed
	ResultPanic    = "panic"     // a panic was recovered; the request went on to the stable route
	ResultNoConfig = "no_config" // no configuration loaded: the request went on to the stable route
)

// Results returns every stream result.
func Results() []string {
	return []string{ResultOK, ResultCanceled, ResultError, ResultPanic, ResultNoConfig}
}

// Phases reported to Recorder.PhaseUnexpected: messages for phases splitter
// does not ask Envoy for, answered with "continue unchanged".
const (
	PhaseRequestBody             = "request_body"
	PhaseRequestTrailers         = "request_trailers"
	PhaseResponseHeaders         = "response_headers"
	PhaseResponseBody            = "response_body"
	PhaseResponseTrailers        = "response_trailers"
	PhaseUnknown                 = "unknown"
	PhaseDuplicateRequestHeaders = "duplicate_request_headers"
)

// Phases returns every phase.
func Phases() []string {
	return []string{
		PhaseRequestBody, PhaseRequestTrailers, PhaseResponseHeaders, PhaseResponseBody,
		PhaseResponseTrailers, PhaseUnknown, PhaseDuplicateRequestHeaders,
	}
}

// Recorder receives the adapters' events; the metrics package implements
// it. It is called on every request, so it must be cheap.
type Recorder interface {
	Decided(api string, d *split.Decision)
	StreamStarted(api string)
	StreamEnded(api string, result string) // one of Results()
	PhaseUnexpected(api string, phase string)
	Panic(api string) // once per recovered panic
}

// CookieRecorder is a Recorder that is also told of every request given a
// sticky key whose cookie could not be set (ext_proc: Envoy never sent its
// response headers, which allow_mode_override lets it ask for). The
// metrics package implements it; an adapter checks for it once.
type CookieRecorder interface {
	CookieLost(api string)
}

// TableSource gives the compiled table in force (nil before the first
// load). Adapters read it once per request.
type TableSource interface{ Table() *split.Table }

// NopRecorder records nothing.
type NopRecorder struct{}

func (NopRecorder) Decided(string, *split.Decision) {}
func (NopRecorder) StreamStarted(string)            {}
func (NopRecorder) StreamEnded(string, string)      {}
func (NopRecorder) PhaseUnexpected(string, string)  {}
func (NopRecorder) Panic(string)                    {}
