package extproc

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/fastcodec"
)

// build encodes a plan as a request_headers answer. It runs once per
// header outcome of a table; the result is shared by every stream that gets
// it, so it is never modified afterwards.
//
// Values go in raw_value only: Envoy 1.27-1.31 fails the request when both
// fields are set, and 1.32+ reads raw_value only. append stays unset
// (ext_proc replaces then); append_action records the same intent should
// Envoy start honouring it. The route cache is always cleared: Envoy
// ignores a clear without a header mutation, and there always is one.
func (s *Server) build(p *adapter.Plan) *fastcodec.Encoded {
	if p.Skipped > 0 {
		s.log.Error("experiment headers not written: invalid or clashing name or value", "skipped", p.Skipped)
	}
	m := &extprocv3.HeaderMutation{}
	if p.Remove != "" {
		m.RemoveHeaders = []string{p.Remove}
	}
	for _, h := range p.Set() {
		m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Name, RawValue: []byte(h.Value)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return fastcodec.Encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation:  m,
			ClearRouteCache: true,
		}},
	}})
}
