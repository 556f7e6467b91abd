package extproc

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

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
		m.RemoveHeaders = append(m.RemoveHeaders, p.Remove)
	}
	if p.RemoveMirror != "" {
		m.RemoveHeaders = append(m.RemoveHeaders, p.RemoveMirror)
	}
	for _, h := range p.Set() {
		m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Name, RawValue: []byte(h.Value)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation:  m,
			ClearRouteCache: true,
		}},
	}}
	if p.Assigned {
		resp.ModeOverride = assignedMode
	}
	return fastcodec.Encode(resp)
}

// assignedMode is the mode_override of a request given a fresh key: Envoy
// sends its response headers too (the reply adds the key's cookie), and
// nothing else changes. Header and trailer modes left DEFAULT mean
// "unchanged"; body modes are taken literally, and NONE is what the
// filter is configured with. Envoy honours it only with
// allow_mode_override: true (the bootstraps set it).
var assignedMode = &extprocv3v3.ProcessingMode{
	ResponseHeaderMode: extprocv3v3.ProcessingMode_SEND,
	RequestBodyMode:    extprocv3v3.ProcessingMode_NONE,
	ResponseBodyMode:   extprocv3v3.ProcessingMode_NONE,
}

// setCookie answers the response headers of a request given a fresh key:
// it adds the key's Set-Cookie beside any the backend set (append: true
// makes Envoy add an entry, never replace one). Built per request: the
// key is the request's own.
func setCookie(value []byte) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: adapter.SetCookieHeader, RawValue: value},
				Append:       wrapperspb.Bool(true),
				AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
			}}},
		}},
	}}
}
