package module

import (
	"encoding/binary"
	"errors"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/split"
)

// MaxPlanBytes bounds an encoded plan: the C side's per-thread buffer
// (module/abi's SP_PLAN_MAX). Validated names and values stay far below.
const MaxPlanBytes = 8192

// Plan operations. C sets the header for opSet and removes it for any
// other operation; opRemoveMirror tells the mirror header's removal apart
// from the route header's for DecodePlan's callers.
const (
	opRemove       byte = 0
	opSet          byte = 1
	opRemoveMirror byte = 2
)

// EncodePlan writes p in the form C applies without parsing anything
// else: one byte of count, then per header one byte of operation (0
// remove, 1 set, 2 remove the mirror header), the name's and the value's
// lengths (2 bytes each, little endian) and their bytes. The removals come
// first, then the sets in the plan's order.
func EncodePlan(p *adapter.Plan) []byte {
	var b []byte
	n := len(p.Set())
	if p.Remove != "" {
		n++
	}
	if p.RemoveMirror != "" {
		n++
	}
	b = append(b, byte(n))
	if p.Remove != "" {
		b = appendOp(b, opRemove, p.Remove, "")
	}
	if p.RemoveMirror != "" {
		b = appendOp(b, opRemoveMirror, p.RemoveMirror, "")
	}
	for _, h := range p.Set() {
		b = appendOp(b, opSet, h.Name, h.Value)
	}
	return b
}

func appendOp(b []byte, op byte, name, value string) []byte {
	b = append(b, op)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(value)))
	b = append(b, name...)
	return append(b, value...)
}

// DecodePlan reads an encoded plan back: the route header removed ("" for
// none) and the headers set, in order. The mirror header's removal is
// MirrorRemoved's.
func DecodePlan(b []byte) (remove string, set []split.Header, err error) {
	remove, _, set, err = decodePlan(b)
	return remove, set, err
}

// MirrorRemoved returns the mirror header an encoded plan removes ("" for
// none: the request is mirrored, or the plan is not valid).
func MirrorRemoved(b []byte) string {
	_, m, _, _ := decodePlan(b)
	return m
}

func decodePlan(b []byte) (remove, removeMirror string, set []split.Header, err error) {
	if len(b) == 0 {
		return "", "", nil, errors.New("plan: empty")
	}
	n := int(b[0])
	b = b[1:]
	for range n {
		if len(b) < 5 {
			return "", "", nil, errors.New("plan: truncated header")
		}
		op := b[0]
		nl, vl := int(binary.LittleEndian.Uint16(b[1:])), int(binary.LittleEndian.Uint16(b[3:]))
		b = b[5:]
		if len(b) < nl+vl {
			return "", "", nil, errors.New("plan: truncated name or value")
		}
		name, value := string(b[:nl]), string(b[nl:nl+vl])
		b = b[nl+vl:]
		switch op {
		case opRemove:
			remove = name
		case opRemoveMirror:
			removeMirror = name
		case opSet:
			set = append(set, split.Header{Name: name, Value: value})
		default:
			return "", "", nil, errors.New("plan: unknown operation")
		}
	}
	if len(b) != 0 {
		return "", "", nil, errors.New("plan: trailing bytes")
	}
	return remove, removeMirror, set, nil
}
