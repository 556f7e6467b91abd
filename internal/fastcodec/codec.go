// Package fastcodec is the sidecar's gRPC server codec. It does what the
// default proto codec does, cheaper where the sidecar spends its time:
//
//   - ext_proc request_headers messages are decoded by hand (decode.go)
//     into a few allocations, or none with a pooled Request, instead of
//     three per header; every other message, and any request_headers
//     message with something unusual in it, goes to proto.Unmarshal.
//   - Responses built once and sent many times (every ext_proc and
//     ext_authz answer) are marshalled once (Encoded) and their bytes
//     handed to gRPC as they are.
//
// Install it with grpc.ForceServerCodecV2(fastcodec.New()). It keeps the
// name "proto", so it serves every service on the server (ext_proc,
// ext_authz, grpc.health.v1) and delegates what it does not special-case
// to the registered proto codec.
//
// Buffer lifetime: gRPC frees the received buffers as soon as Unmarshal
// returns and reuses them for other streams, so decoded messages never
// alias them; the fast decoder copies keys and values into one arena per
// message. Encoded bytes are shared by every stream sending them: gRPC
// only reads the buffers it is given (mem.SliceBuffer; Free is a no-op),
// and they are never written after Encode.
package fastcodec

import (
	"errors"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Codec implements encoding.CodecV2. It is safe for concurrent use.
type Codec struct {
	fallback encoding.CodecV2
}

// New returns the codec. It panics if the proto codec is not registered,
// which cannot happen: importing grpc's encoding/proto registers it.
func New() *Codec {
	c := encoding.GetCodecV2(grpcproto.Name)
	if c == nil {
		panic("fastcodec: grpc proto codec not registered")
	}
	return &Codec{fallback: c}
}

// Name is the content-subtype served: the same as the default codec.
func (*Codec) Name() string { return grpcproto.Name }

// Unmarshal decodes data into v.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *Request:
		return withBytes(data, func(b []byte) error {
			if decodeRequest(b, &m.ProcessingRequest, &m.s) {
				return nil
			}
			return proto.Unmarshal(b, &m.ProcessingRequest)
		})
	case *extprocv3.ProcessingRequest:
		return withBytes(data, func(b []byte) error {
			// nil storage: a fresh one, which nothing else writes to.
			if decodeRequest(b, m, nil) {
				return nil
			}
			return proto.Unmarshal(b, m)
		})
	}
	return c.fallback.Unmarshal(data, v)
}

// withBytes calls fn with data as one contiguous slice, copying only when
// gRPC delivered the message in several buffers. The slice is valid only
// during fn.
func withBytes(data mem.BufferSlice, fn func([]byte) error) error {
	if len(data) == 1 {
		return fn(data[0].ReadOnlyData())
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return fn(buf.ReadOnlyData())
}

// Marshal encodes v.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *Encoded:
		if m.data != nil {
			return m.data, nil
		}
		if m.Message == nil {
			return nil, errors.New("fastcodec: marshal of an Encoded without a message")
		}
		return c.fallback.Marshal(m.Message)
	}
	return c.fallback.Marshal(v)
}

// Encoded is a message marshalled once, to be sent any number of times,
// from any number of streams, with SendMsg. It is a proto.Message (the
// wrapped message's ProtoReflect is promoted), so a server without this
// codec still sends it correctly, by marshalling it each time. The wrapped
// message must not be modified after Encode.
type Encoded struct {
	proto.Message
	data mem.BufferSlice // nil if marshalling failed
}

// Encode marshals m once, the way Codec.Marshal would. It does not fail:
// if m cannot be marshalled, the Encoded is marshalled again at each send,
// which reports the error there, where a stream can carry it.
func Encode(m proto.Message) *Encoded {
	e := &Encoded{Message: m}
	if m == nil {
		return e
	}
	b, err := proto.Marshal(m)
	if err == nil {
		e.data = mem.BufferSlice{mem.SliceBuffer(b)}
	}
	return e
}

// Bytes returns the wire form (nil if m could not be marshalled); it must
// not be modified.
func (e *Encoded) Bytes() []byte {
	if e.data == nil {
		return nil
	}
	return e.data[0].ReadOnlyData()
}
