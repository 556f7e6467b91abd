package split

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// ParseOptions tunes Parse.
type ParseOptions struct {
	// ExtraKeys are top-level scalar keys owned by someone else (process
	// settings such as grpc_addr); Parse accepts and ignores them.
	ExtraKeys []string
}

// maxParseErrors bounds the error list, so a garbage file gives a readable
// answer rather than thousands of lines.
const maxParseErrors = 50

// Parse decodes a YAML document strictly (unknown keys, duplicate or
// case-only-different keys, wrong types, more than two decimals, extra
// documents are errors that name their path). It does not compile.
//
// The document is walked as a yaml.Node tree rather than decoded into
// structs, so that every problem is reported with its path and line, all of
// them at once (errors.Join of *FieldError), and so that numbers are read
// from their text: 0.07 is exactly 7 basis points, "30" (a string) is an
// error, and 356 is out of range rather than wrapped. Anchors and aliases
// are rejected outright, which also keeps alias bombs harmless: the parser
// never expands them.
func Parse(data []byte, opts ParseOptions) (*Config, error) {
	cfg, _, errs := parse(data, opts)
	if len(errs) > 0 {
		return nil, joinFieldErrors(errs)
	}
	return cfg, nil
}

// Load parses data and compiles it, annotating compile errors with the line
// of the place they name. It is what a process reading a configuration file
// wants; Parse and Compile stay separate for callers that edit the Config in
// between.
func Load(data []byte, opts ParseOptions) (*Table, error) {
	return LoadNext(nil, data, opts)
}

// LoadNext is Load that carries the round-robin position of every service
// whose weights did not change over from prev (which may be nil), as
// CompileNext does.
func LoadNext(prev *Table, data []byte, opts ParseOptions) (*Table, error) {
	cfg, lines, errs := parse(data, opts)
	if len(errs) > 0 {
		return nil, joinFieldErrors(errs)
	}
	t, errs := compile(cfg, prev)
	if len(errs) > 0 {
		for _, e := range errs {
			e.Line = lineOf(lines, e.Path)
		}
		return nil, joinFieldErrors(errs)
	}
	return t, nil
}

// lineOf finds the line of path, or of its nearest recorded ancestor.
func lineOf(lines map[string]int, path string) int {
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

type parser struct {
	opts  ParseOptions
	errs  []*FieldError
	lines map[string]int // path -> line of its key, for Load
}

func parse(data []byte, opts ParseOptions) (*Config, map[string]int, []*FieldError) {
	p := &parser{opts: opts, lines: map[string]int{}}
	cfg := p.document(data)
	return cfg, p.lines, p.errs
}

func (p *parser) errorf(path string, n *yaml.Node, format string, args ...any) {
	if len(p.errs) > maxParseErrors {
		return
	}
	if len(p.errs) == maxParseErrors {
		p.errs = append(p.errs, &FieldError{Reason: "too many errors, the rest are not shown"})
		return
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &FieldError{Path: path, Reason: fmt.Sprintf(format, args...), Line: line})
}

func (p *parser) mark(path string, n *yaml.Node) {
	p.lines[path] = n.Line
}

func (p *parser) document(data []byte) *Config {
	if len(data) > MaxConfigBytes {
		p.errorf("", nil, "the configuration is %d bytes, more than the limit of %d", len(data), MaxConfigBytes)
		return nil
	}
	if off := invalidUTF8(data); off >= 0 {
		// yaml.v3 says only "invalid leading UTF-8 octet", with no place.
		line := 1 + bytes.Count(data[:off], []byte("\n"))
		col := off - bytes.LastIndexByte(data[:off], '\n')
		p.errs = append(p.errs, &FieldError{Reason: fmt.Sprintf(
			"invalid UTF-8 at column %d (byte offset %d): YAML must be UTF-8 text", col, off), Line: line})
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf("", nil, "no services: the configuration is empty")
		} else {
			p.errorf("", nil, "invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		p.errorf("", nil, "invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil
	case !emptyDocument(&extra):
		// Viper (and most readers) would silently use only the first one.
		p.errorf("", &extra, "more than one YAML document: only one is allowed")
		return nil
	}
	if len(doc.Content) != 1 {
		p.errorf("", &doc, "no services: the configuration is empty")
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		p.errorf("", root, "no services: the document is null")
		return nil
	}
	if !p.noAliases(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.errorf("", root, "the configuration must be a mapping with a services key, not %s", kindName(root))
		return nil
	}
	return p.config(root)
}

// emptyDocument reports whether a trailing document is nothing but a "---"
// separator, which some tools write after the last document.
func emptyDocument(doc *yaml.Node) bool {
	if len(doc.Content) != 1 {
		return len(doc.Content) == 0
	}
	n := doc.Content[0]
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && n.Value == "" && n.Anchor == ""
}

// noAliases rejects every anchor and alias, naming the first of each. The
// tree is walked with an explicit stack (never following an alias), so its
// cost is linear in the document size however the aliases are arranged.
func (p *parser) noAliases(root *yaml.Node) bool {
	var anchor, alias *yaml.Node
	stack := []*yaml.Node{root}
	for len(stack) > 0 && (anchor == nil || alias == nil) {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n.Kind == yaml.AliasNode {
			if alias == nil {
				alias = n
			}
			continue
		}
		if n.Anchor != "" && anchor == nil {
			anchor = n
		}
		for i := len(n.Content) - 1; i >= 0; i-- {
			stack = append(stack, n.Content[i])
		}
	}
	if anchor != nil {
		p.errorf("", anchor, "anchors (&%s) are not supported: write the value out", anchor.Anchor)
	}
	if alias != nil {
		p.errorf("", alias, "aliases (*%s) are not supported: write the value out", alias.Value)
	}
	return anchor == nil && alias == nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!bool":
			return "a boolean"
		case "!!int", "!!float":
			return "a number"
		}
		return "a scalar (" + n.ShortTag() + ")"
	}
	return "an alias"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

type entry struct {
	key  string
	k, v *yaml.Node
}

// entries returns the pairs of a mapping in order, reporting keys that are
// not plain scalars and keys that repeat, exactly or up to case.
func (p *parser) entries(path string, n *yaml.Node) ([]entry, bool) {
	if n.Kind != yaml.MappingNode {
		p.errorf(path, n, "must be a mapping, not %s", kindName(n))
		return nil, false
	}
	out := make([]entry, 0, len(n.Content)/2)
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!null" || k.ShortTag() == "!!merge" {
			p.errorf(path, k, "keys must be plain names, not %s", kindName(k))
			continue
		}
		lower := strings.ToLower(k.Value)
		if prev, dup := seen[lower]; dup {
			if prev.Value == k.Value {
				p.errorf(join(path, k.Value), k, "duplicate key, first declared at line %d", prev.Line)
			} else {
				p.errorf(join(path, k.Value), k, "key differs only in case from %q, declared at line %d", prev.Value, prev.Line)
			}
			continue
		}
		seen[lower] = k
		out = append(out, entry{key: k.Value, k: k, v: v})
	}
	return out, true
}

// fields is entries for a mapping with a fixed set of keys: unknown keys are
// reported (with a suggestion) and left out.
func (p *parser) fields(path string, n *yaml.Node, known ...string) []entry {
	all, ok := p.entries(path, n)
	if !ok {
		return nil
	}
	out := all[:0]
	for _, e := range all {
		if !slices.Contains(known, e.key) {
			p.errorf(join(path, e.key), e.k, "unknown key%s", suggest(e.key, known))
			continue
		}
		p.mark(join(path, e.key), e.k)
		out = append(out, e)
	}
	return out
}

// suggest names the known key a typo most likely meant.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf(" (did you mean %q? keys are case-sensitive)", k)
		}
		if d := editDistance(strings.ToLower(key), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return fmt.Sprintf(" (expected one of %s)", strings.Join(known, ", "))
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the optimal-string-alignment distance (Levenshtein plus
// adjacent transpositions), so "wehn" is one edit from "when".
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

func (p *parser) seq(path string, n *yaml.Node) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		p.errorf(path, n, "must be a list, not %s", kindName(n))
		return nil, false
	}
	return n.Content, true
}

// list decodes the sequence n at path item by item with each, marking every
// item's line; it returns nil when n is not a sequence (after reporting it).
func list[T any](p *parser, path string, n *yaml.Node, each func(path string, item *yaml.Node) T) []T {
	items, ok := p.seq(path, n)
	if !ok {
		return nil
	}
	out := make([]T, 0, len(items))
	for i, item := range items {
		ip := index(path, i)
		p.mark(ip, item)
		out = append(out, each(ip, item))
	}
	return out
}

func (p *parser) str(path string, n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		p.errorf(path, n, "must be a string, not %s", kindName(n))
		return "", false
	}
	switch n.ShortTag() {
	case "!!str":
		return n.Value, true
	case "!!null":
		p.errorf(path, n, "must be a string, not null")
	default:
		p.errorf(path, n, "must be a string, not %s (quote it: %q)", kindName(n), n.Value)
	}
	return "", false
}

// name is str for a name that may not be empty.
func (p *parser) name(path string, n *yaml.Node, what string) (string, bool) {
	s, ok := p.str(path, n)
	if ok && s == "" {
		p.errorf(path, n, "%s is empty", what)
		return "", false
	}
	return s, ok
}

func (p *parser) boolean(path string, n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		p.errorf(path, n, "must be true or false, not %s", kindName(n))
		return false, false
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		p.errorf(path, n, "must be true or false: %v", err)
		return false, false
	}
	return b, true
}

// percent reads a weight from the scalar's text, never through a float.
func (p *parser) percent(path string, n *yaml.Node) (int, bool) {
	if n.Kind != yaml.ScalarNode {
		p.errorf(path, n, "must be a number from 0 to 100, not %s", kindName(n))
		return 0, false
	}
	tag := n.ShortTag()
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 || (tag != "!!int" && tag != "!!float") {
		p.errorf(path, n, "must be a number from 0 to 100, not %s", kindName(n))
		return 0, false
	}
	bp, reason := parseBasisPoints(n.Value)
	if reason != "" {
		p.errorf(path, n, "%s (got %s)", reason, n.Value)
		return 0, false
	}
	return bp, true
}

// weights reads a mapping of name -> percentage, keeping declared order.
func (p *parser) weights(path string, n *yaml.Node) (Weights, bool) {
	all, ok := p.entries(path, n)
	if !ok {
		return nil, false
	}
	w := make(Weights, 0, len(all))
	good := true
	for _, e := range all {
		p.mark(join(path, e.key), e.k)
		bp, ok := p.percent(join(path, e.key), e.v)
		good = good && ok
		w = append(w, Weight{Version: e.key, BasisPoints: bp})
	}
	return w, good
}

func (p *parser) config(root *yaml.Node) *Config {
	cfg := &Config{}
	all, _ := p.entries("", root)
	for _, e := range all {
		switch {
		case e.key == "services":
			p.mark(e.key, e.k)
			cfg.Services = list(p, e.key, e.v, p.service)
		case e.key == "experiments":
			p.mark(e.key, e.k)
			if isNull(e.v) {
				continue // "experiments:" with every entry commented out
			}
			cfg.Experiments = list(p, e.key, e.v, p.experiment)
		case slices.Contains(p.opts.ExtraKeys, e.key):
			if e.v.Kind != yaml.ScalarNode {
				p.errorf(e.key, e.v, "must be a single value, not %s", kindName(e.v))
			}
		default:
			known := append([]string{"services", "experiments"}, p.opts.ExtraKeys...)
			p.errorf(e.key, e.k, "unknown key%s", suggest(e.key, known))
		}
	}
	return cfg
}

func (p *parser) service(path string, n *yaml.Node) Service {
	var s Service
	for _, e := range p.fields(path, n, "name", "hosts", "stable", "weights", "sticky", "rules", "clusters", "rollout", "mirror") {
		fp := join(path, e.key)
		switch e.key {
		case "name":
			s.Name, _ = p.name(fp, e.v, "service name")
		case "hosts":
			items, ok := p.seq(fp, e.v)
			if !ok {
				continue
			}
			if len(items) == 0 {
				p.errorf(fp, e.v, "lists no host (leave hosts out to match every host)")
				continue
			}
			s.Hosts = make([]string, 0, len(items))
			for i, item := range items {
				p.mark(index(fp, i), item)
				if h, ok := p.name(index(fp, i), item, "host"); ok {
					s.Hosts = append(s.Hosts, h)
				}
			}
		case "stable":
			s.Stable, _ = p.name(fp, e.v, "stable version")
		case "weights":
			s.Weights, _ = p.weights(fp, e.v)
		case "sticky":
			k := p.stickyKey(fp, e.v)
			s.Sticky = &k
		case "mirror":
			if isNull(e.v) {
				continue // "mirror:" with every field commented out
			}
			m := p.mirror(fp, e.v)
			s.Mirror = &m
		case "rules":
			if isNull(e.v) {
				continue // "rules:" with every rule commented out
			}
			s.Rules = list(p, fp, e.v, p.rule)
		case "clusters":
			s.Clusters = p.names(fp, e.v, "cluster name")
		case "rollout":
			if isNull(e.v) {
				continue // "rollout:" with every field commented out
			}
			r := p.rollout(fp, e.v)
			s.Rollout = &r
		}
	}
	return s
}

// names reads a mapping of name -> non-empty string.
func (p *parser) names(path string, n *yaml.Node, what string) map[string]string {
	all, ok := p.entries(path, n)
	if !ok {
		return nil
	}
	out := make(map[string]string, len(all))
	for _, e := range all {
		p.mark(join(path, e.key), e.k)
		if v, ok := p.name(join(path, e.key), e.v, what); ok {
			out[e.key] = v
		}
	}
	return out
}

// rollout reads a rollout block over DefaultRollout: a key left out keeps
// its default.
func (p *parser) rollout(path string, n *yaml.Node) Rollout {
	r := DefaultRollout()
	for _, e := range p.fields(path, n, "canary", "steps", "hold", "guard", "on_failure", "shadow", "webhooks") {
		fp := join(path, e.key)
		switch e.key {
		case "canary":
			r.Canary, _ = p.name(fp, e.v, "canary version")
		case "steps":
			r.Steps = list(p, fp, e.v, func(ip string, item *yaml.Node) int {
				bp, _ := p.percent(ip, item)
				return bp
			})
		case "hold":
			r.Hold = p.duration(fp, e.v, r.Hold)
		case "guard":
			r.Guard = p.guard(fp, e.v, r.Guard)
		case "on_failure":
			r.OnFailure, _ = p.name(fp, e.v, "on_failure")
		case "shadow":
			sh := DefaultShadow()
			if !isNull(e.v) { // "shadow:" alone means every default
				sh = p.shadow(fp, e.v)
			}
			r.Shadow = &sh
		case "webhooks":
			r.Webhooks = list(p, fp, e.v, p.webhook)
			p.uniqueHooks(fp, e.v, r.Webhooks)
		}
	}
	return r
}

// shadow reads a rollout's shadow step over DefaultShadow.
func (p *parser) shadow(path string, n *yaml.Node) Shadow {
	sh := DefaultShadow()
	for _, e := range p.fields(path, n, "percent", "hold") {
		fp := join(path, e.key)
		switch e.key {
		case "percent":
			if bp, ok := p.percent(fp, e.v); ok {
				sh.Percent = Percent(bp)
			}
		case "hold":
			sh.Hold = p.duration(fp, e.v, sh.Hold)
		}
	}
	return sh
}

func (p *parser) guard(path string, n *yaml.Node, g Guard) Guard {
	latency := latencyKeys{}
	for _, e := range p.fields(path, n, "window", "min_requests", "max_error_rate", "max_error_ratio",
		"max_latency_ms", "max_latency_ratio", "latency_percentile", "failing_for") {
		fp := join(path, e.key)
		switch e.key {
		case "window":
			g.Window = p.duration(fp, e.v, g.Window)
		case "min_requests":
			if v, ok := p.decimal(fp, e.v, 0, "a whole number"); ok {
				g.MinRequests = v
			}
		case "max_error_rate":
			if bp, ok := p.percent(fp, e.v); ok {
				g.MaxErrorRate = Percent(bp)
			}
		case "max_error_ratio":
			if h, ok := p.decimal(fp, e.v, 2, "a number such as 2 or 1.5"); ok {
				g.MaxErrorRatio = Hundredths(h)
			}
		case "max_latency_ms", "max_latency_ratio", "latency_percentile", "failing_for":
			p.latencyKey(fp, e, &g, &latency)
		}
	}
	p.latencyDone(path, n, g, latency)
	return g
}

// duration reads Go duration text ("60s", "1m30s", "500ms") from the
// scalar; on error it reports and returns def.
func (p *parser) duration(path string, n *yaml.Node, def Duration) Duration {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.errorf(path, n, "must be a duration such as 60s or 500ms, not %s", kindName(n))
		return def
	}
	if tag := n.ShortTag(); tag == "!!int" || tag == "!!float" {
		p.errorf(path, n, "must be a duration with a unit, such as %ss (got %s)", n.Value, n.Value)
		return def
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		p.errorf(path, n, "must be a duration such as 60s or 500ms (got %q)", n.Value)
		return def
	}
	return Duration(d)
}

// decimal reads a non-negative number with at most decimals decimals
// (0 or 2) from the scalar's text: a whole number, or hundredths.
func (p *parser) decimal(path string, n *yaml.Node, decimals int, what string) (int, bool) {
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode || n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 ||
		(tag != "!!int" && (decimals == 0 || tag != "!!float")) {
		p.errorf(path, n, "must be %s, not %s", what, kindName(n))
		return 0, false
	}
	if decimals == 0 {
		v, err := strconv.Atoi(strings.TrimPrefix(n.Value, "+"))
		if err != nil || v < 0 || !allDigits(strings.TrimPrefix(n.Value, "+")) {
			p.errorf(path, n, "must be a plain non-negative whole number (got %s)", n.Value)
			return 0, false
		}
		return v, true
	}
	v, reason := parseHundredths(n.Value, MaxErrorRatio)
	if reason != "" {
		p.errorf(path, n, "%s (got %s)", reason, n.Value)
		return 0, false
	}
	return v, true
}

func (p *parser) key(path string, n *yaml.Node) Key {
	var k Key
	for _, e := range p.fields(path, n, "header", "cookie") {
		switch e.key {
		case "header":
			k.Header, _ = p.name(join(path, e.key), e.v, "header name")
		case "cookie":
			k.Cookie, _ = p.name(join(path, e.key), e.v, "cookie name")
		}
	}
	return k
}

// stickyKey is key plus the sticky-only assign block.
func (p *parser) stickyKey(path string, n *yaml.Node) Key {
	var k Key
	for _, e := range p.fields(path, n, "header", "cookie", "assign") {
		fp := join(path, e.key)
		switch e.key {
		case "header":
			k.Header, _ = p.name(fp, e.v, "header name")
		case "cookie":
			k.Cookie, _ = p.name(fp, e.v, "cookie name")
		case "assign":
			a := DefaultAssign()
			if !isNull(e.v) { // "assign:" alone means every default
				a = p.assign(fp, e.v)
			}
			k.Assign = &a
		}
	}
	return k
}

// assign reads an assign block over DefaultAssign.
func (p *parser) assign(path string, n *yaml.Node) Assign {
	a := DefaultAssign()
	for _, e := range p.fields(path, n, "cookie", "max_age", "secure") {
		fp := join(path, e.key)
		switch e.key {
		case "cookie":
			a.Cookie, _ = p.name(fp, e.v, "cookie name")
		case "max_age":
			a.MaxAge = p.duration(fp, e.v, a.MaxAge)
		case "secure":
			a.Secure, _ = p.boolean(fp, e.v)
		}
	}
	return a
}

// mirror reads a mirror block; both keys are required (Compile says so).
func (p *parser) mirror(path string, n *yaml.Node) Mirror {
	m := Mirror{Percent: -1}
	for _, e := range p.fields(path, n, "version", "percent") {
		fp := join(path, e.key)
		switch e.key {
		case "version":
			m.Version, _ = p.name(fp, e.v, "mirror version")
		case "percent":
			if bp, ok := p.percent(fp, e.v); ok {
				m.Percent = Percent(bp)
			} else {
				m.Percent = 0 // reported; do not report it missing too
			}
		}
	}
	return m
}

func (p *parser) rule(path string, n *yaml.Node) Rule {
	var r Rule
	for _, e := range p.fields(path, n, "name", "when", "version") {
		fp := join(path, e.key)
		switch e.key {
		case "name":
			r.Name, _ = p.name(fp, e.v, "rule name")
		case "version":
			r.Version, _ = p.name(fp, e.v, "version")
		case "when":
			r.When = list(p, fp, e.v, p.condition)
		}
	}
	return r
}

func (p *parser) condition(path string, n *yaml.Node) Condition {
	var c Condition
	for _, e := range p.fields(path, n, "header", "cookie", "query", "request",
		"exact", "prefix", "suffix", "contains", "regex", "present", "absent", "ignore_case") {
		fp := join(path, e.key)
		switch e.key {
		case "header":
			c.Header, _ = p.name(fp, e.v, "header name")
		case "cookie":
			c.Cookie, _ = p.name(fp, e.v, "cookie name")
		case "query":
			c.Query, _ = p.name(fp, e.v, "query parameter name")
		case "request":
			c.Request, _ = p.name(fp, e.v, "request part (method or path)")
		case "exact", "prefix", "suffix", "contains", "regex":
			s, ok := p.str(fp, e.v)
			if !ok {
				continue
			}
			switch e.key {
			case "exact":
				c.Exact = &s
			case "prefix":
				c.Prefix = &s
			case "suffix":
				c.Suffix = &s
			case "contains":
				c.Contains = &s
			case "regex":
				c.Regex = &s
			}
		case "present", "absent":
			b, ok := p.boolean(fp, e.v)
			if ok && !b {
				other := map[string]string{"present": "absent", "absent": "present"}[e.key]
				p.errorf(fp, e.v, "%s: false is not a condition; write %s: true instead", e.key, other)
				continue
			}
			if e.key == "present" {
				c.Present = b
			} else {
				c.Absent = b
			}
		case "ignore_case":
			c.IgnoreCase, _ = p.boolean(fp, e.v)
		}
	}
	return c
}

func (p *parser) experiment(path string, n *yaml.Node) Experiment {
	var x Experiment
	for _, e := range p.fields(path, n, "name", "key", "variants", "header") {
		fp := join(path, e.key)
		switch e.key {
		case "name":
			x.Name, _ = p.name(fp, e.v, "experiment name")
		case "key":
			x.Key = p.key(fp, e.v)
		case "variants":
			x.Variants, _ = p.weights(fp, e.v)
		case "header":
			x.Header, _ = p.name(fp, e.v, "header name")
		}
	}
	return x
}

// invalidUTF8 returns the offset of the first byte that is not valid UTF-8,
// or -1.
func invalidUTF8(data []byte) int {
	if utf8.Valid(data) {
		return -1
	}
	for off := 0; off < len(data); {
		r, size := utf8.DecodeRune(data[off:])
		if r == utf8.RuneError && size == 1 {
			return off
		}
		off += size
	}
	return -1
}
