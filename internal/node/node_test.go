package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/trafficsplit/splitter/internal/node"
	"github.com/trafficsplit/splitter/split"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newNode(t testing.TB, cfg *split.Config) *node.Node {
	t.Helper()
	n, err := node.New(cfg, nil)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	return n
}

func handle(n *node.Node, line string) string { return string(n.Handle([]byte(line))) }

// bucket is the documented sticky/experiment hash: FNV-1a-32 of
// "name:key", modulo 10000.
func bucket(name, key string) int {
	h := fnv.New32a()
	h.Write([]byte(name + ":" + key))
	return int(h.Sum32() % split.Buckets)
}

func pct(p float64) int { return int(p*100 + 0.5) }

func weights(kv ...any) split.Weights {
	var w split.Weights
	for i := 0; i < len(kv); i += 2 {
		w = append(w, split.Weight{Version: kv[i].(string), BasisPoints: pct(kv[i+1].(float64))})
	}
	return w
}

func str(s string) *string { return &s }

// multiConfig has the seed's api service on "*", a three-version service
// on web.example.com and a cookie-sticky service on shop.example.com.
func multiConfig() *split.Config {
	cfg := split.Default()
	cfg.Services = append(cfg.Services,
		split.Service{
			Name:    "web",
			Hosts:   []string{"web.example.com"},
			Stable:  "v1",
			Weights: weights("v1", 50.0, "v2", 30.0, "v3", 20.0),
		},
		split.Service{
			Name:    "shop",
			Hosts:   []string{"shop.example.com"},
			Stable:  "blue",
			Weights: weights("blue", 90.0, "green", 10.0),
			Sticky:  &split.Key{Cookie: "session"},
		},
	)
	return cfg
}

// noStarConfig has one service on an exact host and no "*" service.
func noStarConfig() *split.Config {
	return &split.Config{Services: []split.Service{{
		Name:    "api",
		Hosts:   []string{"api.example.com"},
		Stable:  "v1",
		Weights: weights("v1", 80.0, "v2", 20.0),
	}}}
}

// TestSeedExamples runs the seed's sample messages, in the seed's order,
// against a fresh node with the built-in configuration.
func TestSeedExamples(t *testing.T) {
	n := newNode(t, nil)
	steps := []struct {
		in   string
		seed string // the seed's reply body: required fields, byte for byte
		want string // the whole reply line
	}{
		{
			in:   `{"src":"c1","dest":"n1","body":{"type":"init","msg_id":1,"node_id":"n1","node_ids":["n1"]}}`,
			seed: `{"type":"init_ok","in_reply_to":1}`,
			want: `{"src":"n1","dest":"c1","body":{"type":"init_ok","in_reply_to":1}}`,
		},
		{
			in:   `{"src":"c1","dest":"n1","body":{"type":"route","msg_id":1},"traffic_split":{"v1":80,"v2":20}}`,
			seed: `{"type":"routed","in_reply_to":1,"version":"v1","reason":"weighted_routing"}`,
			want: `{"src":"n1","dest":"c1","body":{"type":"routed","in_reply_to":1,"version":"v1","reason":"weighted_routing","service":"api"}}`,
		},
		{
			in:   `{"src":"c1","dest":"n1","body":{"type":"route","msg_id":2,"headers":{"x-beta":"true"}}}`,
			seed: `{"type":"routed","in_reply_to":2,"version":"v2","reason":"header_match"}`,
			want: `{"src":"n1","dest":"c1","body":{"type":"routed","in_reply_to":2,"version":"v2","reason":"header_match","service":"api","rule":"beta-testers"}}`,
		},
		{
			in:   `{"src":"c1","dest":"n1","body":{"type":"update_canary","msg_id":3,"service":"api","percentage":50}}`,
			seed: `{"type":"canary_updated","in_reply_to":3,"service":"api","v1":50,"v2":50}`,
			want: `{"src":"n1","dest":"c1","body":{"type":"canary_updated","in_reply_to":3,"service":"api","v1":50,"v2":50}}`,
		},
		{
			in:   `{"src":"c1","dest":"n1","body":{"type":"assign_variant","msg_id":4,"user_id":"user-123"}}`,
			seed: `{"type":"variant_assigned","in_reply_to":4,"user_id":"user-123","variant":"A"}`,
			want: `{"src":"n1","dest":"c1","body":{"type":"variant_assigned","in_reply_to":4,"user_id":"user-123","variant":"A","experiment":"default"}}`,
		},
	}
	for _, s := range steps {
		got := handle(n, s.in)
		if got != s.want {
			t.Errorf("Handle(%s)\n got %s\nwant %s", s.in, got, s.want)
		}
		assertSeedFields(t, got, s.seed)
	}
}

// assertSeedFields checks that the reply's body starts with the seed's
// fields, in the seed's order and spelling; fields after them are extras.
func assertSeedFields(t *testing.T, reply, seed string) {
	t.Helper()
	var env struct{ Body json.RawMessage }
	if err := json.Unmarshal([]byte(reply), &env); err != nil {
		t.Fatalf("reply %s: %v", reply, err)
	}
	body := string(env.Body)
	prefix := strings.TrimSuffix(seed, "}")
	if !strings.HasPrefix(body, prefix) || (body[len(prefix)] != '}' && body[len(prefix)] != ',') {
		t.Errorf("reply body %s does not start with the seed's %s", body, seed)
	}
}

func TestHandle(t *testing.T) {
	userBucket := bucket("api", "user-123") // 1301: in v2's [0, 2000)
	aliceBucket := bucket("api", "alice")   // 8529: v1
	tests := []struct {
		name string
		cfg  *split.Config // nil: the built-in default
		in   string
		want string
	}{
		{
			name: "bare body init",
			in:   `{"type":"init","msg_id":5,"node_id":"n1","node_ids":["n1","n2"]}`,
			want: `{"type":"init_ok","in_reply_to":5}`,
		},
		{
			name: "init without msg_id",
			in:   `{"type":"init"}`,
			want: `{"type":"init_ok"}`,
		},
		{
			name: "envelope without src and dest",
			in:   `{"body":{"type":"init","msg_id":1}}`,
			want: `{"body":{"type":"init_ok","in_reply_to":1}}`,
		},
		{
			name: "envelope with spaces and unknown fields",
			in:   ` { "src" : "c9", "dest" : "n1", "id": 4, "body" : { "type" : "init", "msg_id" : 12, "extra": [1, 2] } } `,
			want: `{"src":"n1","dest":"c9","body":{"type":"init_ok","in_reply_to":12}}`,
		},
		{
			name: "route unkeyed goes to the largest weight first",
			in:   `{"type":"route","msg_id":1}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v1","reason":"weighted_routing","service":"api"}`,
		},
		{
			name: "route traffic_split inside a bare body",
			in:   `{"type":"route","msg_id":1,"traffic_split":{"v1":10,"v2":90}}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v2","reason":"weighted_routing","service":"api"}`,
		},
		{
			name: "route traffic_split inside the body wins over the one beside it",
			in:   `{"body":{"type":"route","msg_id":1,"traffic_split":{"v1":10,"v2":90}},"traffic_split":{"v1":90,"v2":10}}`,
			want: `{"body":{"type":"routed","in_reply_to":1,"version":"v2","reason":"weighted_routing","service":"api"}}`,
		},
		{
			name: "route traffic_split may name new versions, the others get 0",
			in:   `{"type":"route","msg_id":1,"traffic_split":{"v3":100}}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v3","reason":"weighted_routing","service":"api"}`,
		},
		{
			name: "route traffic_split keeps the rules",
			in:   `{"type":"route","msg_id":1,"traffic_split":{"v1":100},"headers":{"X-Beta":"true"}}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v2","reason":"header_match","service":"api","rule":"beta-testers"}`,
		},
		{
			name: "route header rule with a multi-valued header",
			in:   `{"type":"route","msg_id":2,"headers":{"x-beta":["false","true"]}}`,
			want: `{"type":"routed","in_reply_to":2,"version":"v2","reason":"header_match","service":"api","rule":"beta-testers"}`,
		},
		{
			name: "route user_id is the sticky key and the experiment key",
			in:   `{"type":"route","msg_id":3,"user_id":"user-123"}`,
			want: fmt.Sprintf(`{"type":"routed","in_reply_to":3,"version":"v2","reason":"sticky_routing","service":"api","bucket":%d,"variants":{"default":"A"}}`, userBucket),
		},
		{
			name: "route user_id replaces the sticky header",
			in:   `{"type":"route","msg_id":3,"user_id":"alice","headers":{"x-user-id":"user-123"}}`,
			want: fmt.Sprintf(`{"type":"routed","in_reply_to":3,"version":"v1","reason":"sticky_routing","service":"api","bucket":%d,"variants":{"default":"A"}}`, aliceBucket),
		},
		{
			name: "route sticky header sent as a header",
			in:   `{"type":"route","msg_id":3,"headers":{"x-user-id":"carol"}}`,
			want: fmt.Sprintf(`{"type":"routed","in_reply_to":3,"version":"v1","reason":"sticky_routing","service":"api","bucket":%d,"variants":{"default":"B"}}`, bucket("api", "carol")),
		},
		{
			name: "route sticky with traffic_split uses the split's weights",
			in:   `{"type":"route","msg_id":3,"user_id":"alice","traffic_split":{"v1":10,"v2":90}}`,
			want: fmt.Sprintf(`{"type":"routed","in_reply_to":3,"version":"v2","reason":"sticky_routing","service":"api","bucket":%d,"variants":{"default":"A"}}`, aliceBucket),
		},
		{
			name: "route by authority",
			cfg:  multiConfig(),
			in:   `{"type":"route","msg_id":1,"authority":"WEB.example.com:8443"}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v1","reason":"weighted_routing","service":"web"}`,
		},
		{
			name: "route by host header",
			cfg:  multiConfig(),
			in:   `{"type":"route","msg_id":1,"headers":{"host":"web.example.com"}}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v1","reason":"weighted_routing","service":"web"}`,
		},
		{
			name: "route by authority falls back to the star service",
			cfg:  multiConfig(),
			in:   `{"type":"route","msg_id":1,"authority":"other.example.com","headers":{"x-beta":"true"}}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v2","reason":"header_match","service":"api","rule":"beta-testers"}`,
		},
		{
			name: "route service beats authority",
			cfg:  multiConfig(),
			in:   `{"type":"route","msg_id":1,"service":"web","authority":"api.example.com","traffic_split":{"v2":100}}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v2","reason":"weighted_routing","service":"web"}`,
		},
		{
			name: "route cookie sticky key from user_id",
			cfg:  multiConfig(),
			in:   `{"type":"route","msg_id":1,"service":"shop","user_id":"alice"}`,
			want: fmt.Sprintf(`{"type":"routed","in_reply_to":1,"version":"blue","reason":"sticky_routing","service":"shop","bucket":%d,"variants":{"default":"A"}}`, bucket("shop", "alice")),
		},
		{
			name: "route authority matching no service is unmatched",
			cfg:  noStarConfig(),
			in:   `{"type":"route","msg_id":1,"authority":"other.example.com"}`,
			want: `{"type":"routed","in_reply_to":1,"reason":"unmatched"}`,
		},
		{
			name: "route without authority uses the first service",
			cfg:  noStarConfig(),
			in:   `{"type":"route","msg_id":1}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v1","reason":"weighted_routing","service":"api"}`,
		},
		{
			name: "update_canary two decimals",
			in:   `{"type":"update_canary","msg_id":3,"service":"api","percentage":0.05}`,
			want: `{"type":"canary_updated","in_reply_to":3,"service":"api","v1":99.95,"v2":0.05}`,
		},
		{
			name: "update_canary to 100",
			in:   `{"type":"update_canary","msg_id":3,"service":"api","percentage":100}`,
			want: `{"type":"canary_updated","in_reply_to":3,"service":"api","v1":0,"v2":100}`,
		},
		{
			name: "update_canary to 0",
			in:   `{"type":"update_canary","msg_id":3,"service":"api","percentage":0.0}`,
			want: `{"type":"canary_updated","in_reply_to":3,"service":"api","v1":100,"v2":0}`,
		},
		{
			name: "update_canary exponent form",
			in:   `{"type":"update_canary","msg_id":3,"service":"api","percentage":1.25e1}`,
			want: `{"type":"canary_updated","in_reply_to":3,"service":"api","v1":87.5,"v2":12.5}`,
		},
		{
			name: "update_canary trailing zeros",
			in:   `{"type":"update_canary","msg_id":3,"service":"api","percentage":12.500}`,
			want: `{"type":"canary_updated","in_reply_to":3,"service":"api","v1":87.5,"v2":12.5}`,
		},
		{
			name: "update_canary small exponent",
			in:   `{"type":"update_canary","msg_id":3,"service":"api","percentage":1.5e-1}`,
			want: `{"type":"canary_updated","in_reply_to":3,"service":"api","v1":99.85,"v2":0.15}`,
		},
		{
			name: "route split with negative zero",
			in:   `{"type":"route","msg_id":1,"traffic_split":{"v1":-0,"v2":100}}`,
			want: `{"type":"routed","in_reply_to":1,"version":"v2","reason":"weighted_routing","service":"api"}`,
		},
		{
			name: "reply strings are escaped for JSON only",
			in:   `{"src":"<c&1>","dest":"n\u00e9","body":{"type":"init","msg_id":1}}`,
			want: `{"src":"n\u00e9","dest":"<c&1>","body":{"type":"init_ok","in_reply_to":1}}`,
		},
		{
			name: "update_canary canary is the non-stable version",
			cfg: &split.Config{Services: []split.Service{{
				Name: "api", Hosts: []string{"*"}, Stable: "v2", Weights: weights("v1", 20.0, "v2", 80.0),
			}}},
			in:   `{"type":"update_canary","msg_id":3,"service":"api","percentage":30}`,
			want: `{"type":"canary_updated","in_reply_to":3,"service":"api","v1":30,"v2":70}`,
		},
		{
			name: "assign_variant named experiment",
			in:   `{"type":"assign_variant","msg_id":4,"user_id":"carol","experiment":"default"}`,
			want: `{"type":"variant_assigned","in_reply_to":4,"user_id":"carol","variant":"B","experiment":"default"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.cfg)
			if got := handle(n, tc.in); got != tc.want {
				t.Errorf("Handle(%s)\n got %s\nwant %s", tc.in, got, tc.want)
			}
		})
	}
}

type errorReply struct {
	Type      string          `json:"type"`
	InReplyTo json.RawMessage `json:"in_reply_to"`
	Code      int             `json:"code"`
	Text      string          `json:"text"`
}

func TestHandleErrors(t *testing.T) {
	tests := []struct {
		name      string
		cfg       *split.Config
		in        string
		code      int
		inReplyTo string // "" when the reply must not carry one
		text      string // a substring of the error text
	}{
		{name: "not JSON", in: `hello`, code: 12, text: "not JSON"},
		{name: "truncated JSON", in: `{"type":"init"`, code: 12, text: "not JSON"},
		{name: "trailing garbage", in: `{"type":"init"} x`, code: 12, text: "not JSON"},
		{name: "empty line", in: ``, code: 12, text: "not JSON"},
		{name: "array", in: `[1,2]`, code: 12, text: "message: must be a JSON object"},
		{name: "null", in: `null`, code: 12, text: "message: must be a JSON object"},
		{name: "number", in: `42`, code: 12, text: "message: must be a JSON object"},
		{name: "missing type", in: `{"msg_id":1}`, code: 12, inReplyTo: "1", text: "type: required"},
		{name: "type not a string", in: `{"type":5,"msg_id":1}`, code: 12, inReplyTo: "1", text: "type: must be a string"},
		{name: "unknown type", in: `{"type":"echo","msg_id":7}`, code: 10, inReplyTo: "7", text: `type: "echo" is not supported`},
		{name: "unknown type in envelope", in: `{"src":"c1","dest":"n1","body":{"type":"topology","msg_id":7}}`, code: 10, inReplyTo: "7", text: "not supported"},
		{name: "body not an object", in: `{"src":"c1","body":"route"}`, code: 12, text: "body: must be a JSON object"},
		{name: "src not a string", in: `{"src":1,"body":{"type":"init"}}`, code: 12, text: "src: must be a string"},
		{name: "msg_id not an integer", in: `{"type":"init","msg_id":"1"}`, code: 12, text: "msg_id: must be an integer"},
		{name: "msg_id fractional", in: `{"type":"init","msg_id":1.5}`, code: 12, text: "msg_id: must be an integer"},
		{name: "duplicate key", in: `{"type":"init","type":"route","msg_id":1}`, code: 12, text: "message.type: duplicate key"},
		{name: "init node_id not a string", in: `{"type":"init","msg_id":1,"node_id":3}`, code: 12, inReplyTo: "1", text: "node_id: must be a string"},
		{name: "init node_ids not a list", in: `{"type":"init","msg_id":1,"node_ids":"n1"}`, code: 12, inReplyTo: "1", text: "node_ids: must be a list of strings"},
		{name: "route unknown service", in: `{"type":"route","msg_id":1,"service":"nope"}`, code: 20, inReplyTo: "1", text: `service: no such service "nope"`},
		{name: "route service not a string", in: `{"type":"route","msg_id":1,"service":1}`, code: 12, inReplyTo: "1", text: "service: must be a string"},
		{name: "route user_id not a string", in: `{"type":"route","msg_id":1,"user_id":123}`, code: 12, inReplyTo: "1", text: "user_id: must be a string"},
		{name: "route headers not an object", in: `{"type":"route","msg_id":1,"headers":["x-beta"]}`, code: 12, inReplyTo: "1", text: "headers: must be a JSON object"},
		{name: "route header value a number", in: `{"type":"route","msg_id":1,"headers":{"x-beta":1}}`, code: 12, inReplyTo: "1", text: "headers.x-beta: must be a string or a list of strings"},
		{name: "route header list of numbers", in: `{"type":"route","msg_id":1,"headers":{"x-beta":[1]}}`, code: 12, inReplyTo: "1", text: "headers.x-beta: must be a string or a list of strings"},
		{name: "split not an object", in: `{"type":"route","msg_id":1,"traffic_split":[80,20]}`, code: 12, inReplyTo: "1", text: "traffic_split: must be a JSON object"},
		{name: "split empty", in: `{"type":"route","msg_id":1,"traffic_split":{}}`, code: 12, inReplyTo: "1", text: "traffic_split: must name at least one version"},
		{name: "split string weight", in: `{"type":"route","msg_id":1,"traffic_split":{"v1":"80","v2":20}}`, code: 12, inReplyTo: "1", text: "traffic_split.v1: must be a number"},
		{name: "split three decimals", in: `{"type":"route","msg_id":1,"traffic_split":{"v1":79.995,"v2":20.005}}`, code: 12, inReplyTo: "1", text: "traffic_split.v1:"},
		{name: "split negative", in: `{"type":"route","msg_id":1,"traffic_split":{"v1":120,"v2":-20}}`, code: 12, inReplyTo: "1", text: "traffic_split.v1: must be between 0 and 100"},
		{name: "split sum", in: `{"type":"route","msg_id":1,"traffic_split":{"v1":80,"v2":10}}`, code: 12, inReplyTo: "1", text: "traffic_split: weights sum to 90, want 100"},
		{name: "split duplicate version", in: `{"type":"route","msg_id":1,"traffic_split":{"v1":50,"v1":50}}`, code: 12, inReplyTo: "1", text: "traffic_split.v1: duplicate key"},
		{name: "split empty version name", in: `{"type":"route","msg_id":1,"traffic_split":{"":100}}`, code: 12, inReplyTo: "1", text: "traffic_split: empty version name"},
		{name: "split beside body not an object", in: `{"body":{"type":"route","msg_id":1},"traffic_split":"80/20"}`, code: 12, inReplyTo: "1", text: "traffic_split: must be a JSON object"},
		{name: "canary missing service", in: `{"type":"update_canary","msg_id":3,"percentage":50}`, code: 12, inReplyTo: "3", text: "service: required"},
		{name: "canary missing percentage", in: `{"type":"update_canary","msg_id":3,"service":"api"}`, code: 12, inReplyTo: "3", text: "percentage: required"},
		{name: "canary percentage string", in: `{"type":"update_canary","msg_id":3,"service":"api","percentage":"50"}`, code: 12, inReplyTo: "3", text: "percentage: must be a number"},
		{name: "canary percentage above 100", in: `{"type":"update_canary","msg_id":3,"service":"api","percentage":100.01}`, code: 12, inReplyTo: "3", text: "percentage: must be between 0 and 100"},
		{name: "canary percentage negative", in: `{"type":"update_canary","msg_id":3,"service":"api","percentage":-1}`, code: 12, inReplyTo: "3", text: "percentage: must be between 0 and 100"},
		{name: "canary percentage huge", in: `{"type":"update_canary","msg_id":3,"service":"api","percentage":1e400}`, code: 12, inReplyTo: "3", text: "percentage: must be between 0 and 100"},
		{name: "canary percentage three decimals", in: `{"type":"update_canary","msg_id":3,"service":"api","percentage":12.345}`, code: 12, inReplyTo: "3", text: "percentage:"},
		{name: "canary percentage small exponent", in: `{"type":"update_canary","msg_id":3,"service":"api","percentage":1.234e-1}`, code: 12, inReplyTo: "3", text: "percentage: must have at most two decimals"},
		{name: "unknown type with odd characters", in: "{\"type\":\"a\\\"b\\n\xff<&>\",\"msg_id\":1}", code: 10, inReplyTo: "1", text: "type: \"a\\\"b\\n\ufffd<&>\" is not supported"},
		{name: "canary percentage boolean", in: `{"type":"update_canary","msg_id":3,"service":"api","percentage":true}`, code: 12, inReplyTo: "3", text: "percentage: must be a number"},
		{name: "canary unknown service", in: `{"type":"update_canary","msg_id":3,"service":"nope","percentage":50}`, code: 20, inReplyTo: "3", text: `no such service "nope"`},
		{name: "canary three versions", cfg: multiConfig(), in: `{"type":"update_canary","msg_id":3,"service":"web","percentage":50}`, code: 22, inReplyTo: "3", text: "web does not have exactly two versions"},
		{name: "assign missing user_id", in: `{"type":"assign_variant","msg_id":4}`, code: 12, inReplyTo: "4", text: "user_id: required"},
		{name: "assign empty user_id", in: `{"type":"assign_variant","msg_id":4,"user_id":""}`, code: 12, inReplyTo: "4", text: "user_id: required"},
		{name: "assign unknown experiment", in: `{"type":"assign_variant","msg_id":4,"user_id":"u","experiment":"nope"}`, code: 20, inReplyTo: "4", text: `no such experiment "nope"`},
		{name: "assign without experiments", cfg: noStarConfig(), in: `{"type":"assign_variant","msg_id":4,"user_id":"u"}`, code: 20, inReplyTo: "4", text: "no experiments configured"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.cfg)
			reply := n.Handle([]byte(tc.in))
			var env struct{ Body json.RawMessage }
			if err := json.Unmarshal(reply, &env); err != nil {
				t.Fatalf("reply %s is not JSON: %v", reply, err)
			}
			raw := reply
			if env.Body != nil {
				raw = env.Body
			}
			var got errorReply
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("reply %s: %v", reply, err)
			}
			if got.Type != "error" || got.Code != tc.code || string(got.InReplyTo) != tc.inReplyTo || !strings.Contains(got.Text, tc.text) {
				t.Errorf("Handle(%s) = %s\nwant code %d, in_reply_to %q, text containing %q", tc.in, reply, tc.code, tc.inReplyTo, tc.text)
			}
			if !bytes.HasPrefix(raw, []byte(`{"type":"error",`)) {
				t.Errorf("error body %s does not start with the type", raw)
			}
		})
	}
}

func TestErrorKeepsEnvelope(t *testing.T) {
	n := newNode(t, nil)
	got := handle(n, `{"src":"c1","dest":"n1","body":{"type":"route","msg_id":9,"service":"nope"}}`)
	want := `{"src":"n1","dest":"c1","body":{"type":"error","in_reply_to":9,"code":20,"text":"service: no such service \"nope\""}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// routeVersions sends count routes (each the line built by msg for its
// msg_id) and returns the versions in order.
func routeVersions(t *testing.T, n *node.Node, count int, msg func(id int) string) []string {
	t.Helper()
	versions := make([]string, 0, count)
	for i := range count {
		reply := n.Handle([]byte(msg(i)))
		var body struct {
			Type, Version string
			Body          json.RawMessage
		}
		err := json.Unmarshal(reply, &body)
		if err == nil && body.Body != nil {
			err = json.Unmarshal(body.Body, &body)
		}
		if err != nil || body.Type != "routed" {
			t.Fatalf("route %d: reply %s (%v)", i, reply, err)
		}
		versions = append(versions, body.Version)
	}
	return versions
}

func count(versions []string) map[string]int {
	c := map[string]int{}
	for _, v := range versions {
		c[v]++
	}
	return c
}

func TestRouteProportionsAreExact(t *testing.T) {
	tests := []struct {
		name  string
		setup string // a line handled first, "" for none
		msg   string // %d is the msg_id
		n     int
		want  map[string]int
	}{
		{
			name: "seed traffic_split 80/20",
			msg:  `{"src":"c1","dest":"n1","body":{"type":"route","msg_id":%d},"traffic_split":{"v1":80,"v2":20}}`,
			n:    100, want: map[string]int{"v1": 80, "v2": 20},
		},
		{
			name: "configured weights",
			msg:  `{"type":"route","msg_id":%d}`,
			n:    100, want: map[string]int{"v1": 80, "v2": 20},
		},
		{
			name: "two-decimal split",
			msg:  `{"type":"route","msg_id":%d,"traffic_split":{"v1":99.95,"v2":0.05}}`,
			n:    10000, want: map[string]int{"v1": 9995, "v2": 5},
		},
		{
			name:  "after update_canary",
			setup: `{"type":"update_canary","msg_id":0,"service":"api","percentage":25}`,
			msg:   `{"type":"route","msg_id":%d}`,
			n:     100, want: map[string]int{"v1": 75, "v2": 25},
		},
		{
			name: "three-version split",
			msg:  `{"type":"route","msg_id":%d,"traffic_split":{"v1":50,"v2":30,"v3":20}}`,
			n:    100, want: map[string]int{"v1": 50, "v2": 30, "v3": 20},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, nil)
			if tc.setup != "" {
				handle(n, tc.setup)
			}
			got := count(routeVersions(t, n, tc.n, func(id int) string { return fmt.Sprintf(tc.msg, id+1) }))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("counts over %d routes = %v, want %v", tc.n, got, tc.want)
			}
		})
	}
}

func TestSplitsKeepSeparateState(t *testing.T) {
	a := `{"type":"route","msg_id":%d,"traffic_split":{"v1":80,"v2":20}}`
	aReordered := `{"type":"route","msg_id":%d,"traffic_split":{"v2":20.00,"v1":80}}`
	b := `{"type":"route","msg_id":%d,"traffic_split":{"v1":50,"v2":50}}`

	// The reference sequences, each on a fresh node.
	const runs = 100
	seqA := routeVersions(t, newNode(t, nil), runs, func(id int) string { return fmt.Sprintf(a, id) })
	seqB := routeVersions(t, newNode(t, nil), runs, func(id int) string { return fmt.Sprintf(b, id) })
	if c := count(seqA); c["v1"] != 80 || c["v2"] != 20 {
		t.Fatalf("80/20 split counts %v", c)
	}

	t.Run("interleaved splits", func(t *testing.T) {
		n := newNode(t, nil)
		var gotA, gotB []string
		for i := range runs {
			gotA = append(gotA, routeVersions(t, n, 1, func(int) string { return fmt.Sprintf(a, i) })...)
			// Plain routes in between use the service's own state.
			routeVersions(t, n, 1, func(int) string { return fmt.Sprintf(`{"type":"route","msg_id":%d}`, i) })
			gotB = append(gotB, routeVersions(t, n, 1, func(int) string { return fmt.Sprintf(b, i) })...)
		}
		if fmt.Sprint(gotA) != fmt.Sprint(seqA) {
			t.Errorf("80/20 interleaved\n got %v\nwant %v", gotA, seqA)
		}
		if fmt.Sprint(gotB) != fmt.Sprint(seqB) {
			t.Errorf("50/50 interleaved\n got %v\nwant %v", gotB, seqB)
		}
	})
	t.Run("key order and spelling share one state", func(t *testing.T) {
		n := newNode(t, nil)
		got := routeVersions(t, n, runs, func(id int) string {
			if id%2 == 1 {
				return fmt.Sprintf(aReordered, id)
			}
			return fmt.Sprintf(a, id)
		})
		if fmt.Sprint(got) != fmt.Sprint(seqA) {
			t.Errorf("alternating key order\n got %v\nwant %v", got, seqA)
		}
	})
	t.Run("per service", func(t *testing.T) {
		n := newNode(t, multiConfig())
		// The same split on two services: each service has its own state.
		web := `{"type":"route","msg_id":%d,"service":"web","traffic_split":{"v1":80,"v2":20}}`
		var gotAPI, gotWeb []string
		for i := range runs {
			gotAPI = append(gotAPI, routeVersions(t, n, 1, func(int) string { return fmt.Sprintf(a, i) })...)
			gotWeb = append(gotWeb, routeVersions(t, n, 1, func(int) string { return fmt.Sprintf(web, i) })...)
		}
		if fmt.Sprint(gotAPI) != fmt.Sprint(seqA) || fmt.Sprint(gotWeb) != fmt.Sprint(seqA) {
			t.Errorf("api %v\nweb %v\nwant %v for both", gotAPI, gotWeb, seqA)
		}
	})
}

func TestServiceStateIsSharedAcrossNamings(t *testing.T) {
	// Naming the service, giving its host, or neither all use one state.
	ref := routeVersions(t, newNode(t, nil), 30, func(id int) string { return fmt.Sprintf(`{"type":"route","msg_id":%d}`, id) })
	forms := []string{
		`{"type":"route","msg_id":%d}`,
		`{"type":"route","msg_id":%d,"service":"api"}`,
		`{"type":"route","msg_id":%d,"authority":"anything.example.com"}`,
	}
	got := routeVersions(t, newNode(t, nil), 30, func(id int) string { return fmt.Sprintf(forms[id%len(forms)], id) })
	if fmt.Sprint(got) != fmt.Sprint(ref) {
		t.Errorf("mixed namings\n got %v\nwant %v", got, ref)
	}
}

func TestUpdateCanaryLeavesOtherServicesAlone(t *testing.T) {
	n := newNode(t, multiConfig())
	handle(n, `{"type":"update_canary","msg_id":1,"service":"shop","percentage":100}`)
	got := handle(n, `{"type":"route","msg_id":2,"service":"shop"}`)
	want := `{"type":"routed","in_reply_to":2,"version":"green","reason":"weighted_routing","service":"shop"}`
	if got != want {
		t.Errorf("shop after canary 100\n got %s\nwant %s", got, want)
	}
	got = handle(n, `{"type":"update_canary","msg_id":3,"service":"api","percentage":0}`)
	if want := `{"type":"canary_updated","in_reply_to":3,"service":"api","v1":100,"v2":0}`; got != want {
		t.Errorf("api canary\n got %s\nwant %s", got, want)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  *split.Config
	}{
		{name: "no services", cfg: &split.Config{}},
		{name: "weights not summing to 100", cfg: &split.Config{Services: []split.Service{{
			Name: "api", Hosts: []string{"*"}, Weights: weights("v1", 80.0, "v2", 10.0),
		}}}},
		{name: "bad regex", cfg: &split.Config{Services: []split.Service{{
			Name: "api", Hosts: []string{"*"}, Weights: weights("v1", 100.0),
			Rules: []split.Rule{{Name: "r", Version: "v1", When: []split.Condition{{Header: "x", Regex: str("(")}}}},
		}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := node.New(tc.cfg, nil); err == nil {
				t.Error("New accepted an invalid configuration")
			}
		})
	}
}

func BenchmarkHandle(b *testing.B) {
	for _, bc := range []struct{ name, line string }{
		{"route", `{"src":"c1","dest":"n1","body":{"type":"route","msg_id":1,"headers":{"x-beta":"false"}}}`},
		{"route_split", `{"src":"c1","dest":"n1","body":{"type":"route","msg_id":1},"traffic_split":{"v1":80,"v2":20}}`},
		{"route_user", `{"type":"route","msg_id":1,"user_id":"user-123"}`},
		{"assign_variant", `{"type":"assign_variant","msg_id":4,"user_id":"user-123"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			n := newNode(b, nil)
			line := []byte(bc.line)
			b.ReportAllocs()
			for b.Loop() {
				n.Handle(line)
			}
		})
	}
}
