// Package envoypb reads Envoy's protobuf header lists (ext_proc's
// HeaderMap, ext_authz's header_map) into a split.Request without copying
// header values.
package envoypb

import (
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/split"
)

// Value returns a header's value: raw_value (what Envoy 1.27+ sends), else
// value (older Envoy). The result aliases the message's bytes, so it must
// not outlive the message, and the message must not be modified while the
// result is in use.
func Value(h *corev3.HeaderValue) string {
	if b := h.GetRawValue(); len(b) > 0 {
		// Zero-copy: the bytes belong to a freshly unmarshalled message that
		// nobody writes to, and the string is dropped with the request
		// (Decide copies nothing out of the request into the Decision).
		return unsafe.String(unsafe.SliceData(b), len(b))
	}
	return h.GetValue()
}

// FromHeaders fills req from an Envoy header list, one entry per header
// line (repeated headers stay separate). The authority is :authority, else
// host. A nil list gives an empty request.
func FromHeaders(req *split.Request, hs []*corev3.HeaderValue) {
	adapter.ResetRequest(req)
	for _, h := range hs {
		adapter.AddHeader(req, h.GetKey(), Value(h))
	}
	adapter.FinishRequest(req)
}
