//go:build vtprotobuf

package fastcodec

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// With the build tag, the responses the sidecar sends take the vtprotobuf
// path; without it this file is not compiled and proto.Marshal is used.
func TestVTProtobufInUse(t *testing.T) {
	for name, m := range map[string]any{
		"ext_proc response":  new(extprocv3.ProcessingResponse),
		"ext_authz response": new(authv3.CheckResponse),
	} {
		t.Run(name, func(t *testing.T) {
			if _, ok := m.(vtMarshaler); !ok {
				t.Errorf("%T has no vtprotobuf marshaller", m)
			}
		})
	}
}
