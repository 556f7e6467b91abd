package reliability

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/node"
)

type nodeCase struct {
	name      string
	line      string
	code      int
	inReplyTo string // "" when the reply cannot name the request
	want      []string
}

func nodeCases() []nodeCase {
	canary := func(pct string) string {
		return `{"type":"update_canary","msg_id":3,"service":"api","percentage":` + pct + `}`
	}
	return []nodeCase{
		{name: "not JSON", line: `hello`, code: 12, want: []string{"message", "not JSON"}},
		{name: "truncated JSON", line: `{"type":"route","msg_id":1`, code: 12, want: []string{"message", "not JSON"}},
		{name: "JSON array", line: `[1,2]`, code: 12, want: []string{"message", "must be a JSON object"}},
		{name: "missing type", line: `{"msg_id":1}`, code: 12, inReplyTo: "1", want: []string{"type", "required"}},
		{name: "type not a string", line: `{"type":5,"msg_id":6}`, code: 12, inReplyTo: "6", want: []string{"type", "must be a string"}},
		{name: "unknown type", line: `{"type":"explode","msg_id":2}`, code: 10, inReplyTo: "2", want: []string{"type", `"explode"`, "not supported"}},
		{name: "msg_id string", line: `{"type":"init","msg_id":"abc"}`, code: 12, want: []string{"msg_id", "integer"}},
		{name: "duplicate key", line: `{"type":"route","type":"init","msg_id":7}`, code: 12, want: []string{"type", "duplicate key"}},
		{name: "envelope body not an object", line: `{"src":"c","dest":"n","body":[1]}`, code: 12, want: []string{"body", "must be a JSON object"}},
		{name: "percentage -1", line: canary("-1"), code: 12, inReplyTo: "3", want: []string{"percentage", "between 0 and 100"}},
		{name: "percentage 101", line: canary("101"), code: 12, inReplyTo: "3", want: []string{"percentage", "between 0 and 100"}},
		{name: "percentage 3 decimals", line: canary("12.345"), code: 12, inReplyTo: "3", want: []string{"percentage", "two decimals"}},
		{name: "percentage string", line: canary(`"50"`), code: 12, inReplyTo: "3", want: []string{"percentage", "must be a number"}},
		{name: "percentage null", line: canary("null"), code: 12, inReplyTo: "3", want: []string{"percentage", "required"}},
		{name: "percentage 1e309", line: canary("1e309"), code: 12, inReplyTo: "3", want: []string{"percentage"}},
		{name: "unknown service", line: `{"type":"update_canary","msg_id":3,"service":"nope","percentage":5}`, code: 20, inReplyTo: "3", want: []string{"service", `"nope"`}},
		{name: "update_canary on a 3-version service", line: `{"type":"update_canary","msg_id":3,"service":"web","percentage":5}`, code: 22, inReplyTo: "3", want: []string{"service", "exactly two versions"}},
		{name: "traffic_split not summing to 100", line: `{"type":"route","msg_id":4,"traffic_split":{"v1":80,"v2":30}}`, code: 12, inReplyTo: "4", want: []string{"traffic_split", "110"}},
		{name: "route to unknown service", line: `{"type":"route","msg_id":11,"service":"nope"}`, code: 20, inReplyTo: "11", want: []string{"service", `"nope"`}},
		{name: "headers not an object", line: `{"type":"route","msg_id":8,"headers":[1]}`, code: 12, inReplyTo: "8", want: []string{"headers", "JSON object"}},
		{name: "header value a number", line: `{"type":"route","msg_id":12,"headers":{"x-beta":5}}`, code: 12, inReplyTo: "12", want: []string{"headers.x-beta"}},
		{name: "assign_variant without user_id", line: `{"type":"assign_variant","msg_id":9}`, code: 12, inReplyTo: "9", want: []string{"user_id", "required"}},
	}
}

// nodeReply is the body of a seed-protocol reply.
type nodeReply struct {
	Type      string          `json:"type"`
	InReplyTo json.RawMessage `json:"in_reply_to"`
	Code      int             `json:"code"`
	Text      string          `json:"text"`
}

func parseReply(t *testing.T, b []byte) nodeReply {
	t.Helper()
	var r nodeReply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("reply %q: %v", b, err)
	}
	if r.Type == "" { // an envelope
		var env struct {
			Body nodeReply `json:"body"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatalf("reply %q: %v", b, err)
		}
		r = env.Body
	}
	return r
}

// TestBadSeedLine feeds each bad line to a node: one error reply with the
// right code, naming the field; the node's routing is unchanged.
func TestBadSeedLine(t *testing.T) {
	cfg, err := config.Parse(baseConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The sticky user's version depends on the api weights, so it shows
	// whether a refused update_canary changed them.
	probe := []byte(`{"type":"route","msg_id":100,"user_id":"user-fixed"}`)
	before := string(n.Handle(probe))

	for _, tc := range nodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			raw := n.Handle([]byte(tc.line))
			if bytes.ContainsAny(raw, "\r\n") {
				t.Errorf("reply spans lines: %q", raw)
			}
			r := parseReply(t, raw)
			if r.Type != "error" || r.Code != tc.code {
				t.Fatalf("reply %s, want an error with code %d", raw, tc.code)
			}
			if string(r.InReplyTo) != tc.inReplyTo {
				t.Errorf("in_reply_to = %s, want %q", r.InReplyTo, tc.inReplyTo)
			}
			if m := missing(r.Text, tc.want...); len(m) > 0 {
				t.Errorf("text %q lacks %q", r.Text, m)
			}
			if got := string(n.Handle(probe)); got != before {
				t.Errorf("routing changed: %s, was %s", got, before)
			}
		})
	}

	t.Run("line over the limit", func(t *testing.T) {
		in := strings.Repeat("x", node.MaxLineBytes+10) + "\n" + string(probe) + "\n"
		var out bytes.Buffer
		if err := n.Run(t.Context(), strings.NewReader(in), &out); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("%d reply lines, want 2: %.300q", len(lines), out.String())
		}
		if r := parseReply(t, []byte(lines[0])); r.Code != 12 || !strings.Contains(r.Text, "longer than") {
			t.Errorf("first reply %s, want code 12 naming the limit", lines[0])
		}
		if lines[1] != before {
			t.Errorf("the node did not carry on: %s, want %s", lines[1], before)
		}
	})
}
