package fastcodec

import (
	"sync"
	"unicode/utf8"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the messages the fast decoder reads
// (envoy/service/ext_proc/v3/external_processor.proto and
// envoy/config/core/v3/base.proto).
const (
	fieldRequestHeaders    = 2  // ProcessingRequest.request_headers
	fieldMetadataContext   = 8  // ProcessingRequest.metadata_context
	fieldObservabilityMode = 10 // ProcessingRequest.observability_mode
	fieldProtocolConfig    = 11 // ProcessingRequest.protocol_config

	fieldHTTPHeaders = 1 // HttpHeaders.headers
	fieldEndOfStream = 3 // HttpHeaders.end_of_stream

	fieldHeaderMapHeaders = 1 // HeaderMap.headers

	fieldKey      = 1 // HeaderValue.key
	fieldValue    = 2 // HeaderValue.value
	fieldRawValue = 3 // HeaderValue.raw_value

	fieldRequestBodyMode  = 1 // ProtocolConfiguration.request_body_mode
	fieldResponseBodyMode = 2 // ProtocolConfiguration.response_body_mode
	fieldSendBodyEarly    = 3 // ProtocolConfiguration.send_body_without_waiting_for_header_response
)

// storage is everything a decoded request_headers message points into.
// The messages the ProcessingRequest refers to live here by value, so a
// decode costs a handful of allocations whatever the number of headers
// (proto.Unmarshal makes three per header), and none at all when the
// storage is reused through a Request.
type storage struct {
	oneof  extprocv3.ProcessingRequest_RequestHeaders
	hh     extprocv3.HttpHeaders
	hm     corev3.HeaderMap
	pc     extprocv3.ProtocolConfiguration
	md     corev3.Metadata
	values []corev3.HeaderValue
	ptrs   []*corev3.HeaderValue
	// arena holds a copy of every key, value and raw_value: gRPC frees the
	// received buffer as soon as Unmarshal returns (CodecV2 contract), so
	// nothing may alias it. Keys and values are strings over the arena;
	// the arena is written only while decoding into this storage.
	arena []byte
}

// Limits on what a pooled Request keeps between streams, so that one huge
// request does not pin its storage for the life of the process.
const (
	maxPooledHeaders    = 256
	maxPooledArenaBytes = 64 << 10
)

// Request is an ext_proc ProcessingRequest that brings its own storage for
// the fast decoder. It is a proto.Message (the embedded request's methods
// are promoted), so any codec can decode into it; this package's Codec
// decodes request_headers into the storage, reusing it from one message to
// the next. Receive into it with stream.RecvMsg(r) and read
// &r.ProcessingRequest.
//
// Strings and byte slices in the decoded message point into the storage:
// they stay valid until the next decode into r or until r goes back to its
// pool, and must not be kept beyond that.
type Request struct {
	extprocv3.ProcessingRequest
	s storage
}

// RequestPool recycles Requests. The zero value is ready to use.
type RequestPool struct{ p sync.Pool }

// Get returns a Request (its content is overwritten by the next decode).
func (p *RequestPool) Get() *Request {
	if r, ok := p.p.Get().(*Request); ok {
		return r
	}
	return new(Request)
}

// Put returns r to the pool; nothing may use r or anything decoded into it
// afterwards.
func (p *RequestPool) Put(r *Request) {
	r.ProcessingRequest.Reset()
	if cap(r.s.values) > maxPooledHeaders || cap(r.s.arena) > maxPooledArenaBytes {
		r.s = storage{}
	}
	p.p.Put(r)
}

// scan is what the first pass learns about a request_headers message.
type scan struct {
	headers      []byte // the HttpHeaders bytes
	hasHeaderMap bool
	headerMap    []byte
	endOfStream  bool
	observe      bool
	hasMetadata  bool
	hasProtocol  bool
	reqBodyMode  int32
	respBodyMode int32
	sendEarly    bool
	count        int // HeaderValue entries
	bytes        int // key, value and raw_value bytes, all occurrences
}

// decodeRequest decodes b into m if b is a request_headers message made
// only of the fields the sidecar reads (headers, end_of_stream,
// observability_mode, protocol_config, an empty metadata_context), every
// one at most once where proto3 would merge. It reports false, leaving m
// and s untouched, for anything else (another phase, attributes, unknown
// fields, invalid UTF-8 in a string, malformed wire data): the caller then
// uses proto.Unmarshal, which gives the same result for everything this
// accepts. A nil s means a new storage, allocated only if b is accepted.
func decodeRequest(b []byte, m *extprocv3.ProcessingRequest, s *storage) bool {
	var sc scan
	if !scanRequest(b, &sc) {
		return false
	}
	if s == nil {
		s = new(storage)
	}
	s.fill(&sc)
	m.Reset()
	m.Request = &s.oneof
	m.ObservabilityMode = sc.observe
	if sc.hasMetadata {
		m.MetadataContext = &s.md
	}
	if sc.hasProtocol {
		m.ProtocolConfig = &s.pc
	}
	return true
}

// scanRequest is the first pass: it checks everything and counts what the
// second pass needs, without writing anywhere but sc.
func scanRequest(b []byte, sc *scan) bool {
	seenHeaders := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == fieldRequestHeaders && typ == protowire.BytesType && !seenHeaders:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			seenHeaders = true
			sc.headers = v
		case num == fieldObservabilityMode && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			sc.observe = protowire.DecodeBool(v)
		case num == fieldProtocolConfig && typ == protowire.BytesType && !sc.hasProtocol:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !scanProtocolConfig(v, sc) {
				return false
			}
			b = b[n:]
			sc.hasProtocol = true
		case num == fieldMetadataContext && typ == protowire.BytesType && !sc.hasMetadata:
			// Only the empty message: anything in it goes the slow way.
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(v) != 0 {
				return false
			}
			b = b[n:]
			sc.hasMetadata = true
		default:
			return false
		}
	}
	return seenHeaders && scanHTTPHeaders(sc.headers, sc)
}

func scanHTTPHeaders(b []byte, sc *scan) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == fieldHTTPHeaders && typ == protowire.BytesType && !sc.hasHeaderMap:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			sc.hasHeaderMap = true
			sc.headerMap = v
		case num == fieldEndOfStream && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			sc.endOfStream = protowire.DecodeBool(v)
		default:
			return false
		}
	}
	return !sc.hasHeaderMap || scanHeaderMap(sc.headerMap, sc)
}

func scanHeaderMap(b []byte, sc *scan) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != fieldHeaderMapHeaders || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 || !scanHeaderValue(v, sc) {
			return false
		}
		b = b[n:]
		sc.count++
	}
	return true
}

func scanHeaderValue(b []byte, sc *scan) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case fieldKey, fieldValue:
			// proto3 strings must be UTF-8; proto.Unmarshal rejects the
			// message otherwise, so leave that (and its error) to it.
			if !utf8.Valid(v) {
				return false
			}
		case fieldRawValue:
		default:
			return false
		}
		sc.bytes += len(v)
	}
	return true
}

func scanProtocolConfig(b []byte, sc *scan) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.VarintType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case fieldRequestBodyMode:
			sc.reqBodyMode = int32(v)
		case fieldResponseBodyMode:
			sc.respBodyMode = int32(v)
		case fieldSendBodyEarly:
			sc.sendEarly = protowire.DecodeBool(v)
		default:
			return false
		}
	}
	return true
}

// fill is the second pass: sc has been checked, so nothing here can fail.
func (s *storage) fill(sc *scan) {
	s.hh.Reset()
	s.hh.EndOfStream = sc.endOfStream
	s.oneof.RequestHeaders = &s.hh
	if sc.hasProtocol {
		s.pc.Reset()
		// Kept as decoded even when the enum does not name the number,
		// as proto.Unmarshal does.
		s.pc.RequestBodyMode = filterv3.ProcessingMode_BodySendMode(sc.reqBodyMode)
		s.pc.ResponseBodyMode = filterv3.ProcessingMode_BodySendMode(sc.respBodyMode)
		s.pc.SendBodyWithoutWaitingForHeaderResponse = sc.sendEarly
	}
	if sc.hasMetadata {
		s.md.Reset()
	}
	if !sc.hasHeaderMap {
		return
	}
	s.hm.Reset()
	s.hh.Headers = &s.hm
	if sc.count == 0 {
		return
	}
	if cap(s.values) < sc.count {
		s.values = make([]corev3.HeaderValue, sc.count)
		s.ptrs = make([]*corev3.HeaderValue, sc.count)
	}
	s.values, s.ptrs = s.values[:sc.count], s.ptrs[:sc.count]
	if cap(s.arena) < sc.bytes {
		s.arena = make([]byte, 0, sc.bytes)
	}
	arena := s.arena[:0]
	b := sc.headerMap
	for i := range sc.count {
		_, _, n := protowire.ConsumeTag(b)
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		b = b[n:]
		hv := &s.values[i]
		// A composite literal also clears the size cache and unknown
		// fields left by a previous decode into the same storage.
		*hv = corev3.HeaderValue{}
		arena = fillHeaderValue(v, hv, arena)
		s.ptrs[i] = hv
	}
	s.hm.Headers = s.ptrs
}

// fillHeaderValue copies one HeaderValue's fields into the arena and
// points hv at the copies. A repeated field replaces the earlier one, as
// in proto3; an empty raw_value stays nil, as proto.Unmarshal leaves it.
func fillHeaderValue(b []byte, hv *corev3.HeaderValue, arena []byte) []byte {
	for len(b) > 0 {
		num, _, n := protowire.ConsumeTag(b)
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		b = b[n:]
		start := len(arena)
		arena = append(arena, v...)
		c := arena[start:len(arena):len(arena)]
		switch num {
		case fieldKey:
			hv.Key = unsafe.String(unsafe.SliceData(c), len(c))
		case fieldValue:
			hv.Value = unsafe.String(unsafe.SliceData(c), len(c))
		case fieldRawValue:
			if len(c) == 0 {
				c = nil
			}
			hv.RawValue = c
		}
	}
	return arena
}
