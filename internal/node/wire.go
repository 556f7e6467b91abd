package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/trafficsplit/splitter/split"
)

// Error codes of the seed protocol.
const (
	CodeNotSupported       = 10 // unknown message type
	CodeMalformedRequest   = 12 // not JSON, missing or invalid fields
	CodeNotFound           = 20 // no such service or experiment
	CodePreconditionFailed = 22 // e.g. update_canary on a service without exactly two versions
)

// protoError is a request that cannot be answered; it becomes an error reply.
type protoError struct {
	code int
	text string
}

func (e *protoError) Error() string { return e.text }

func malformed(format string, args ...any) *protoError {
	// Joined errors (several configuration problems) read as one line.
	text := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", "; ")
	return &protoError{code: CodeMalformedRequest, text: text}
}

// fields is a JSON object whose keys are written in the order given, so
// that replies match the seed's examples byte for byte.
type fields []field

type field struct {
	key   string
	value any // string, int, json.RawMessage (already valid and compact) or fields
}

func (f fields) add(key string, value any) fields { return append(f, field{key, value}) }

func (f fields) appendJSON(b []byte) []byte {
	b = append(b, '{')
	for i, kv := range f {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, kv.key)
		b = append(b, ':')
		switch v := kv.value.(type) {
		case string:
			b = appendString(b, v)
		case int:
			b = strconv.AppendInt(b, int64(v), 10)
		case json.RawMessage:
			b = append(b, v...)
		case fields:
			b = v.appendJSON(b)
		default:
			// Only the types above are ever stored; null keeps the
			// reply valid JSON should that change by mistake.
			b = append(b, "null"...)
		}
	}
	return append(b, '}')
}

// appendString appends s as a JSON string. Unlike json.Marshal it leaves
// <, > and & alone (replies are not embedded in HTML); invalid UTF-8 becomes
// U+FFFD so the reply is always valid JSON.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, r := range s { // a range over a string yields U+FFFD for bad bytes
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\n':
			b = append(b, '\\', 'n')
		case r == '\r':
			b = append(b, '\\', 'r')
		case r == '\t':
			b = append(b, '\\', 't')
		case r < 0x20 || r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

// object is a decoded JSON object that keeps its members' order and raw
// values.
type object []member

type member struct {
	key   string
	value json.RawMessage
}

// decodeObject decodes raw as a JSON object; path names it in errors.
// Duplicate keys are an error: which one wins would otherwise be a guess.
func decodeObject(raw json.RawMessage, path string) (object, *protoError) {
	if firstByte(raw) != '{' {
		return nil, malformed("%s: must be a JSON object", path)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil, malformed("%s: %v", path, err)
	}
	var obj object
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed("%s: %v", path, err)
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, malformed("%s.%s: %v", path, key, err)
		}
		if _, dup := obj.get(key); dup {
			return nil, malformed("%s.%s: duplicate key", path, key)
		}
		obj = append(obj, member{key, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, malformed("%s: %v", path, err)
	}
	return obj, nil
}

func (o object) get(key string) (json.RawMessage, bool) {
	for _, m := range o {
		if m.key == key {
			return m.value, true
		}
	}
	return nil, false
}

// str returns the string member key; absent and null both give ok=false.
func (o object) str(key string) (s string, ok bool, perr *protoError) {
	raw, found := o.get(key)
	if !found || isNull(raw) {
		return "", false, nil
	}
	if firstByte(raw) != '"' {
		return "", false, malformed("%s: must be a string", key)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, malformed("%s: %v", key, err)
	}
	return s, true, nil
}

func firstByte(raw []byte) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func isNumber(raw json.RawMessage) bool {
	c := firstByte(raw)
	return c == '-' || (c >= '0' && c <= '9')
}

// msgID validates a msg_id and returns it compact, ready to be echoed as
// in_reply_to.
func msgID(raw json.RawMessage) (json.RawMessage, *protoError) {
	s := string(bytes.TrimSpace(raw))
	if _, err := strconv.ParseInt(s, 10, 64); err != nil {
		return nil, malformed("msg_id: must be an integer")
	}
	return json.RawMessage(s), nil
}

// percent parses a JSON number (0..100, at most two decimals) into basis
// points. path names the value in errors, e.g. "percentage".
func percent(raw json.RawMessage, path string) (int, *protoError) {
	if !isNumber(raw) {
		return 0, malformed("%s: must be a number", path)
	}
	s := string(bytes.TrimSpace(raw))
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f > 100 {
		return 0, malformed("%s: must be between 0 and 100", path)
	}
	// ParsePercent reads plain decimals: 1e1 is a valid JSON 10, -0 is 0.
	switch {
	case f == 0:
		s = "0"
	case strings.ContainsAny(s, "eE"):
		s = strconv.FormatFloat(f, 'f', -1, 64)
	}
	if _, frac, ok := strings.Cut(s, "."); ok && len(strings.TrimRight(frac, "0")) > 2 {
		return 0, malformed("%s: must have at most two decimals", path)
	}
	bp, err := split.ParsePercent(s)
	if err != nil {
		return 0, malformed("%s: %v", path, err)
	}
	return bp, nil
}

// percentValue renders basis points as a JSON number: 50, 99.95, 0.05.
func percentValue(bp int) json.RawMessage { return json.RawMessage(split.FormatPercent(bp)) }
