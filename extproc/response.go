package extproc

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/trafficsplit/splitter/internal/envoyhdr"
	"github.com/trafficsplit/splitter/internal/fastcodec"
	"github.com/trafficsplit/splitter/split"
)

// setHeader builds one mutation entry. The value goes in raw_value only:
// Envoy 1.27-1.31 fails the request when both fields are set, and 1.32+
// reads raw_value only. append stays unset (ext_proc replaces then);
// append_action records the same intent should Envoy start honouring it.
func setHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, RawValue: []byte(value)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// headersResponse builds a request_headers answer, encoded once: it is
// shared by every stream that gets it.
func headersResponse(m *extprocv3.HeaderMutation) *fastcodec.Encoded {
	return fastcodec.Encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: m,
			// Envoy ignores a clear without a header mutation; there
			// always is one here.
			ClearRouteCache: true,
		}},
	}})
}

// buildUnmatched answers a request no service claims (or one that arrived
// before any configuration): the client's own route header is removed, so
// nobody can pin a version, and Envoy's default route applies.
func (s *Server) buildUnmatched() *fastcodec.Encoded {
	m := &extprocv3.HeaderMutation{RemoveHeaders: []string{s.route}}
	if r := split.ReasonUnmatched.String(); s.reason != "" && envoyhdr.ValidValue(r) {
		m.SetHeaders = append(m.SetHeaders, setHeader(s.reason, r))
	}
	return headersResponse(m)
}

// buildMatched builds the mutation for a decision with a version. It runs
// once per distinct (version, reason, variants) combination; the result is
// cached and shared, so it is never modified afterwards.
func (s *Server) buildMatched(d *split.Decision) *fastcodec.Encoded {
	if !envoyhdr.ValidValue(d.Version) {
		// Config validation should make this impossible; an invalid value
		// would make Envoy fail the request, so fall back to the default route.
		s.log.Error("decided version is not a valid header value; answering as unmatched",
			"service", d.Service, "version", d.Version)
		return s.unmatched
	}
	m := &extprocv3.HeaderMutation{SetHeaders: make([]*corev3.HeaderValueOption, 0, 2+len(d.Variants()))}
	m.SetHeaders = append(m.SetHeaders, setHeader(s.route, d.Version))
	if r := d.Reason.String(); s.reason != "" && envoyhdr.ValidValue(r) {
		m.SetHeaders = append(m.SetHeaders, setHeader(s.reason, r))
	}
	for _, v := range d.Variants() {
		if !s.variantOK(v) {
			continue
		}
		m.SetHeaders = append(m.SetHeaders, setHeader(v.Header, v.Variant))
	}
	return headersResponse(m)
}

// variantOK checks an experiment's header before it is written; a bad one
// is skipped (and logged: this runs only when a response is first built).
func (s *Server) variantOK(v split.Variant) bool {
	ok := envoyhdr.ValidName(v.Header) && envoyhdr.ValidValue(v.Variant) &&
		v.Header != s.route && v.Header != s.reason
	if !ok {
		s.log.Error("experiment header not written: invalid or clashing name or value",
			"experiment", v.Experiment, "header", v.Header, "variant", v.Variant)
	}
	return ok
}
