// Package node implements the seed protocol that `splitter node` speaks on
// stdin and stdout: one JSON message per line, one reply line per message.
//
// A message is an envelope {"src","dest","body"} and its reply is
// {"src": <dest>, "dest": <src>, "body": {...}} with in_reply_to set to the
// request's msg_id. A line holding a bare body (a JSON object with "type"
// and no "body") is accepted too and answered with a bare body, which is
// handy when typing messages by hand.
//
// Message types: init, route, update_canary and assign_variant. Errors are
// replies {"type":"error","in_reply_to":N,"code":C,"text":"..."} with the
// codes below; the node always carries on.
//
// A route uses the service named by "service", else the one whose hosts
// match "authority" (or a ":authority" or "host" header), else the first
// service. Each service has its own round-robin state. "user_id" is
// written to the service's sticky key and to every experiment's key
// (header or cookie), replacing a value sent in "headers".
//
// A "traffic_split" object (beside the body or inside it; inside wins)
// replaces the service's weights for that one request, keeping its rules
// and sticky key; versions of the service that the split leaves out get
// weight 0. Round-robin state is kept per distinct split (the split's
// versions sorted by name, so key order does not matter), for the 1024
// most recently introduced splits.
package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/trafficsplit/splitter/split"
)

const (
	// maxSplits bounds the cache of per-split tables; the oldest entry is
	// evicted first (its round-robin state starts afresh if it returns).
	maxSplits = 1024
	// maxSplitVersions bounds one traffic_split.
	maxSplitVersions = 100
)

// Node answers seed protocol messages from one reader. It is not safe for
// concurrent use: Run handles one line at a time.
type Node struct {
	logger      *slog.Logger
	services    []split.Service // own copy; Weights replaced on update_canary
	experiments []split.Experiment
	// table is the whole configuration: it resolves authorities, assigns
	// variants and computes canary weights.
	table *split.Table
	// perService holds a one-service table (hosts "*") per service that
	// has been routed, so that a service keeps one round-robin state
	// whichever way (service, authority, default) a route names it.
	perService map[string]*split.Table
	splits     splitCache
	nodeID     string
}

// New compiles cfg (nil: the built-in default) into a node.
func New(cfg *split.Config, logger *slog.Logger) (*Node, error) {
	if cfg == nil {
		cfg = split.Default()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	table, err := split.Compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("compile configuration: %w", err)
	}
	if len(cfg.Services) == 0 {
		return nil, errors.New("compile configuration: no services")
	}
	return &Node{
		logger:      logger,
		services:    slices.Clone(cfg.Services),
		experiments: slices.Clone(cfg.Experiments),
		table:       table,
		perService:  make(map[string]*split.Table),
		splits:      newSplitCache(maxSplits),
	}, nil
}

// message is one decoded line.
type message struct {
	envelope  bool
	src, dest json.RawMessage // compact; nil when absent
	body      object
	split     json.RawMessage // traffic_split beside the body
	msgID     json.RawMessage // compact integer; nil when absent
}

// Handle answers one line with one reply line (no trailing newline). It
// never fails: bad input gets an error reply.
func (n *Node) Handle(line []byte) []byte {
	msg, perr := decodeMessage(line)
	if perr != nil {
		n.logger.Debug("bad message", "code", perr.code, "error", perr.text)
		return msg.reply(errorBody(msg.msgID, perr))
	}
	typ, _, _ := msg.body.str("type")
	body, perr := n.dispatch(typ, msg)
	if perr != nil {
		n.logger.Debug("error reply", "type", typ, "code", perr.code, "error", perr.text)
		return msg.reply(errorBody(msg.msgID, perr))
	}
	return msg.reply(body)
}

// TooLong returns the reply to a line longer than limit bytes, whose
// content was not kept.
func TooLong(limit int) []byte {
	var m message
	return m.reply(errorBody(nil, malformed("message: line longer than %d bytes", limit)))
}

func decodeMessage(line []byte) (message, *protoError) {
	var msg message
	line = bytes.TrimSpace(line)
	if !json.Valid(line) {
		var v any
		err := json.Unmarshal(line, &v)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return msg, malformed("message: not JSON: %v", err)
	}
	top, perr := decodeObject(line, "message")
	if perr != nil {
		return msg, perr
	}
	msg.body = top
	if raw, ok := top.get("body"); ok {
		msg.envelope = true
		for _, p := range []struct {
			key string
			dst *json.RawMessage
		}{{"src", &msg.src}, {"dest", &msg.dest}} {
			v, ok := top.get(p.key)
			if !ok {
				continue
			}
			if firstByte(v) != '"' {
				return msg, malformed("%s: must be a string", p.key)
			}
			*p.dst = compact(v)
		}
		if s, ok := top.get("traffic_split"); ok {
			msg.split = s
		}
		body, perr := decodeObject(raw, "body")
		if perr != nil {
			return msg, perr
		}
		msg.body = body
	}
	if raw, ok := msg.body.get("msg_id"); ok && !isNull(raw) {
		id, perr := msgID(raw)
		if perr != nil {
			return msg, perr
		}
		msg.msgID = id
	}
	if _, ok, perr := msg.body.str("type"); perr != nil {
		return msg, perr
	} else if !ok {
		return msg, malformed("type: required")
	}
	return msg, nil
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return json.RawMessage(`null`)
	}
	return b.Bytes()
}

// reply wraps body the way the request came: in an envelope with src and
// dest swapped, or bare.
func (m message) reply(body fields) []byte {
	if !m.envelope {
		return body.appendJSON(nil)
	}
	var env fields
	if m.dest != nil {
		env = env.add("src", m.dest)
	}
	if m.src != nil {
		env = env.add("dest", m.src)
	}
	return env.add("body", body).appendJSON(nil)
}

func replyBody(typ string, inReplyTo json.RawMessage) fields {
	f := fields{{"type", typ}}
	if inReplyTo != nil {
		f = f.add("in_reply_to", inReplyTo)
	}
	return f
}

func errorBody(inReplyTo json.RawMessage, perr *protoError) fields {
	return replyBody("error", inReplyTo).add("code", perr.code).add("text", perr.text)
}

func (n *Node) dispatch(typ string, msg message) (fields, *protoError) {
	switch typ {
	case "init":
		return n.handleInit(msg)
	case "route":
		return n.route(msg)
	case "update_canary":
		return n.updateCanary(msg)
	case "assign_variant":
		return n.assignVariant(msg)
	default:
		return nil, &protoError{code: CodeNotSupported, text: fmt.Sprintf("type: %s is not supported", strconv.Quote(typ))}
	}
}

func (n *Node) handleInit(msg message) (fields, *protoError) {
	id, _, perr := msg.body.str("node_id")
	if perr != nil {
		return nil, perr
	}
	if raw, ok := msg.body.get("node_ids"); ok && !isNull(raw) {
		var ids []string
		if firstByte(raw) != '[' || json.Unmarshal(raw, &ids) != nil {
			return nil, malformed("node_ids: must be a list of strings")
		}
	}
	n.nodeID = id
	n.logger.Info("init", "node_id", id)
	return replyBody("init_ok", msg.msgID), nil
}

func (n *Node) route(msg message) (fields, *protoError) {
	b := msg.body
	var req split.Request
	svcName, named, perr := b.str("service")
	if perr != nil {
		return nil, perr
	}
	authority, hasAuthority, perr := b.str("authority")
	if perr != nil {
		return nil, perr
	}
	userID, _, perr := b.str("user_id")
	if perr != nil {
		return nil, perr
	}
	if req.Path, _, perr = b.str("path"); perr != nil {
		return nil, perr
	}
	if req.Method, _, perr = b.str("method"); perr != nil {
		return nil, perr
	}
	if raw, ok := b.get("headers"); ok && !isNull(raw) {
		if req.Headers, perr = decodeHeaders(raw); perr != nil {
			return nil, perr
		}
	}
	if !hasAuthority {
		authority = headerValue(req.Headers, ":authority")
		if authority == "" {
			authority = headerValue(req.Headers, "host")
		}
		hasAuthority = authority != ""
	}
	req.Authority = authority

	var svc split.Service
	switch {
	case named:
		var ok bool
		if svc, ok = n.service(svcName); !ok {
			return nil, &protoError{code: CodeNotFound, text: fmt.Sprintf("service: no such service %q", svcName)}
		}
	case hasAuthority:
		ex := n.table.Explain(&split.Request{Authority: authority})
		if ex.Service == "" {
			// The sidecar's answer: no service, Envoy's default route.
			return replyBody("routed", msg.msgID).add("reason", split.ReasonUnmatched.String()), nil
		}
		var ok bool
		if svc, ok = n.service(ex.Service); !ok {
			return nil, &protoError{code: CodeNotFound, text: fmt.Sprintf("authority: no such service %q", ex.Service)}
		}
	default:
		svc = n.services[0]
	}

	if userID != "" {
		req.Headers = n.withUserID(svc, req.Headers, userID)
	}

	table, perr := n.routeTable(svc, msg)
	if perr != nil {
		return nil, perr
	}
	var d split.Decision
	table.Decide(&req, &d)

	out := replyBody("routed", msg.msgID)
	if d.Version != "" {
		out = out.add("version", d.Version)
	}
	out = out.add("reason", d.Reason.String())
	if d.Service != "" {
		out = out.add("service", d.Service)
	}
	if d.Rule != "" {
		out = out.add("rule", d.Rule)
	}
	if d.Bucket >= 0 && d.Reason == split.ReasonStickyRouting {
		out = out.add("bucket", d.Bucket)
	}
	if vs := d.Variants(); len(vs) > 0 {
		var variants fields
		for _, v := range vs {
			variants = variants.add(v.Experiment, v.Variant)
		}
		out = out.add("variants", variants)
	}
	return out, nil
}

// routeTable returns the table a route for svc is decided against: the
// service's own, or the one for the message's traffic_split.
func (n *Node) routeTable(svc split.Service, msg message) (*split.Table, *protoError) {
	raw, ok := msg.body.get("traffic_split")
	if !ok || isNull(raw) {
		raw = msg.split
	}
	if raw == nil || isNull(raw) {
		return n.serviceTable(svc)
	}
	weights, canon, perr := parseSplit(raw, svc)
	if perr != nil {
		return nil, perr
	}
	key := svc.Name + "\x00" + canon
	if t, ok := n.splits.get(key); ok {
		return t, nil
	}
	// Compiled afresh rather than with WithWeights, which would share the
	// service's round-robin state when the split equals its weights.
	svc.Weights = weights
	t, err := n.compileService(svc)
	if err != nil {
		return nil, malformed("traffic_split: %s", strings.ReplaceAll(err.Error(), "services[0].", ""))
	}
	n.splits.put(key, t)
	return t, nil
}

func (n *Node) service(name string) (split.Service, bool) {
	for _, s := range n.services {
		if s.Name == name {
			return s, true
		}
	}
	return split.Service{}, false
}

func (n *Node) serviceTable(svc split.Service) (*split.Table, *protoError) {
	if t, ok := n.perService[svc.Name]; ok {
		return t, nil
	}
	t, err := n.compileService(svc)
	if err != nil {
		// Unexpected: the service compiled as part of the whole configuration.
		return nil, &protoError{code: CodePreconditionFailed, text: fmt.Sprintf("service %s: %v", svc.Name, err)}
	}
	n.perService[svc.Name] = t
	return t, nil
}

// compileService compiles svc alone, on every host, with the experiments:
// a table with its own round-robin state.
func (n *Node) compileService(svc split.Service) (*split.Table, error) {
	svc.Hosts = []string{"*"}
	return split.Compile(&split.Config{Services: []split.Service{svc}, Experiments: n.experiments})
}

// withUserID sets userID as the service's sticky key and every
// experiment's key, replacing whatever headers carried under those names.
func (n *Node) withUserID(svc split.Service, headers []split.Header, userID string) []split.Header {
	keys := make([]split.Key, 0, 1+len(n.experiments))
	if svc.Sticky != nil {
		keys = append(keys, *svc.Sticky)
	}
	for _, e := range n.experiments {
		keys = append(keys, e.Key)
	}
	var set []split.Header
	for _, k := range keys {
		var h split.Header
		switch {
		case k.Header != "":
			name := strings.ToLower(k.Header)
			h = split.Header{Name: name, Value: userID}
			headers = slices.DeleteFunc(headers, func(x split.Header) bool { return x.Name == name })
		case k.Cookie != "":
			h = split.Header{Name: "cookie", Value: k.Cookie + "=" + userID}
		default:
			continue
		}
		if !slices.Contains(set, h) {
			set = append(set, h)
		}
	}
	// Ours first: for a cookie the first value found wins.
	return append(set, headers...)
}

func (n *Node) updateCanary(msg message) (fields, *protoError) {
	name, ok, perr := msg.body.str("service")
	if perr != nil {
		return nil, perr
	}
	if !ok || name == "" {
		return nil, malformed("service: required")
	}
	raw, ok := msg.body.get("percentage")
	if !ok || isNull(raw) {
		return nil, malformed("percentage: required")
	}
	bp, perr := percent(raw, "percentage")
	if perr != nil {
		return nil, perr
	}
	w, err := n.table.CanaryWeights(name, bp)
	switch {
	case errors.Is(err, split.ErrUnknownService):
		return nil, &protoError{code: CodeNotFound, text: fmt.Sprintf("service: no such service %q", name)}
	case errors.Is(err, split.ErrNotTwoVersions):
		return nil, &protoError{code: CodePreconditionFailed, text: fmt.Sprintf("service: %s does not have exactly two versions", name)}
	case err != nil:
		return nil, malformed("percentage: %v", err)
	}
	table, err := n.table.WithWeights(name, w)
	if err != nil {
		return nil, malformed("percentage: %v", err)
	}
	n.table = table
	for i := range n.services {
		if n.services[i].Name == name {
			n.services[i].Weights = w
		}
	}
	// The service's round-robin starts afresh with its new weights.
	delete(n.perService, name)
	n.logger.Info("canary updated", "service", name, "percentage", split.FormatPercent(bp))

	out := replyBody("canary_updated", msg.msgID).add("service", name)
	for _, v := range w {
		out = out.add(v.Version, percentValue(v.BasisPoints))
	}
	return out, nil
}

func (n *Node) assignVariant(msg message) (fields, *protoError) {
	userID, ok, perr := msg.body.str("user_id")
	if perr != nil {
		return nil, perr
	}
	if !ok || userID == "" {
		return nil, malformed("user_id: required")
	}
	experiment, _, perr := msg.body.str("experiment")
	if perr != nil {
		return nil, perr
	}
	v, err := n.table.Assign(experiment, userID)
	switch {
	case errors.Is(err, split.ErrUnknownExperiment):
		what := "no such experiment " + strconv.Quote(experiment)
		if experiment == "" {
			what = "no experiments configured"
		}
		return nil, &protoError{code: CodeNotFound, text: "experiment: " + what}
	case err != nil:
		return nil, malformed("experiment: %v", err)
	}
	return replyBody("variant_assigned", msg.msgID).
		add("user_id", userID).
		add("variant", v.Variant).
		add("experiment", v.Experiment), nil
}

// decodeHeaders reads {"name": "value"} or {"name": ["v1", "v2"]}, keeping
// order and lower-casing names.
func decodeHeaders(raw json.RawMessage) ([]split.Header, *protoError) {
	obj, perr := decodeObject(raw, "headers")
	if perr != nil {
		return nil, perr
	}
	headers := make([]split.Header, 0, len(obj))
	for _, m := range obj {
		name := strings.ToLower(m.key)
		if name == "" {
			return nil, malformed("headers: empty header name")
		}
		switch firstByte(m.value) {
		case '"':
			var v string
			if err := json.Unmarshal(m.value, &v); err != nil {
				return nil, malformed("headers.%s: %v", m.key, err)
			}
			headers = append(headers, split.Header{Name: name, Value: v})
		case '[':
			var vs []string
			if err := json.Unmarshal(m.value, &vs); err != nil {
				return nil, malformed("headers.%s: must be a string or a list of strings", m.key)
			}
			for _, v := range vs {
				headers = append(headers, split.Header{Name: name, Value: v})
			}
		default:
			return nil, malformed("headers.%s: must be a string or a list of strings", m.key)
		}
	}
	return headers, nil
}

func headerValue(headers []split.Header, name string) string {
	for _, h := range headers {
		if h.Name == name && h.Value != "" {
			return h.Value
		}
	}
	return ""
}

// parseSplit reads a traffic_split for svc. It returns the weights to
// decide with (the split's versions sorted by name, then the service's
// other versions at 0 so its rules and stable version stay valid) and the
// split's canonical form, e.g. "v1=80,v2=20".
func parseSplit(raw json.RawMessage, svc split.Service) (split.Weights, string, *protoError) {
	obj, perr := decodeObject(raw, "traffic_split")
	if perr != nil {
		return nil, "", perr
	}
	if len(obj) == 0 {
		return nil, "", malformed("traffic_split: must name at least one version")
	}
	if len(obj) > maxSplitVersions {
		return nil, "", malformed("traffic_split: more than %d versions", maxSplitVersions)
	}
	w := make(split.Weights, 0, len(obj)+len(svc.Weights))
	sum := 0
	for _, m := range obj {
		if m.key == "" {
			return nil, "", malformed("traffic_split: empty version name")
		}
		bp, perr := percent(m.value, "traffic_split."+m.key)
		if perr != nil {
			return nil, "", perr
		}
		sum += bp
		w = append(w, split.Weight{Version: m.key, BasisPoints: bp})
	}
	if sum != split.Buckets {
		return nil, "", malformed("traffic_split: weights sum to %s, want 100", split.FormatPercent(sum))
	}
	slices.SortFunc(w, func(a, b split.Weight) int { return strings.Compare(a.Version, b.Version) })
	var canon strings.Builder
	for i, v := range w {
		if i > 0 {
			canon.WriteByte(',')
		}
		canon.WriteString(v.Version)
		canon.WriteByte('=')
		canon.WriteString(split.FormatPercent(v.BasisPoints))
	}
	named := len(w)
	for _, v := range svc.Weights {
		if !slices.ContainsFunc(w[:named], func(x split.Weight) bool { return x.Version == v.Version }) {
			w = append(w, split.Weight{Version: v.Version})
		}
	}
	return w, canon.String(), nil
}

// splitCache maps a service and canonical split to its table, keeping the
// most recently added entries.
type splitCache struct {
	tables map[string]*split.Table
	ring   []string // keys in insertion order, oldest at next
	next   int
}

func newSplitCache(size int) splitCache {
	return splitCache{tables: make(map[string]*split.Table, size), ring: make([]string, 0, size)}
}

func (c *splitCache) get(key string) (*split.Table, bool) {
	t, ok := c.tables[key]
	return t, ok
}

func (c *splitCache) put(key string, t *split.Table) {
	if len(c.ring) < cap(c.ring) {
		c.ring = append(c.ring, key)
	} else {
		delete(c.tables, c.ring[c.next])
		c.ring[c.next] = key
		c.next = (c.next + 1) % len(c.ring)
	}
	c.tables[key] = t
}
