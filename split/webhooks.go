package split

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// Webhook is one HTTP hook of a rollout (docs/rollouts.md, "Webhooks"):
// a JSON POST to URL at a point of the rollout given by Type.
type Webhook struct {
	Name string `json:"name"`
	// Type is one of HookTypes: pre_step, confirm_step, confirm_promotion
	// or event.
	Type string `json:"type"`
	URL  string `json:"url"`
	// Timeout bounds one call.
	Timeout Duration `json:"timeout"`
	// Retries: how many times a pre_step or event call that failed (a
	// non-2xx answer, a timeout, no connection) is made again.
	Retries int `json:"retries"`
	// Poll: how often a confirm_step or confirm_promotion hook is asked
	// again until it answers 2xx.
	Poll Duration `json:"poll,omitempty"`
	// SecretFile holds the key of the X-Splitter-Signature HMAC; "" means
	// calls are not signed. The file is read at each call; it must exist
	// and not be empty when the configuration is loaded (package config
	// checks it: the engine does no I/O).
	SecretFile string `json:"secret_file,omitempty"`
	// SecretFileLine is the YAML line of secret_file (0: unknown), so that a
	// missing file is reported at its place.
	SecretFileLine int `json:"-"`
}

// The hook types.
const (
	// HookPreStep is called before each step's weight is applied; a
	// non-2xx answer or a timeout, after Retries, fails the canary.
	HookPreStep = "pre_step"
	// HookConfirmStep gates each next step after the first: the rollout
	// waits, asking every Poll, until it answers 2xx.
	HookConfirmStep = "confirm_step"
	// HookConfirmPromotion gates the last step (100 %) likewise.
	HookConfirmPromotion = "confirm_promotion"
	// HookEvent is told of every transition; it never blocks one.
	HookEvent = "event"
)

// HookTypes is the closed set of hook types, in a fixed order.
func HookTypes() []string {
	return []string{HookPreStep, HookConfirmStep, HookConfirmPromotion, HookEvent}
}

// IsGate reports whether hooks of type t hold the rollout until they
// answer 2xx.
func IsGate(t string) bool { return t == HookConfirmStep || t == HookConfirmPromotion }

// Webhook defaults and bounds.
const (
	DefaultHookTimeout = 5 * time.Second
	DefaultHookRetries = 2
	DefaultHookPoll    = time.Second
	MinHookTimeout     = 10 * time.Millisecond
	MaxHookTimeout     = time.Minute
	MaxHookRetries     = 10
	MinHookPoll        = 100 * time.Millisecond
	MaxHookPoll        = time.Hour
	MaxHooks           = 16
	MaxHookURLBytes    = 2048
)

// hookName is what a hook's name may be: it is a metrics label value.
var hookName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// SecretFile is a webhook's secret_file and its place in the document.
type SecretFile struct {
	Path string // the place: services[0].rollout.webhooks[1].secret_file
	File string
	Line int // 0 when unknown (a configuration not parsed from YAML)
}

// SecretFiles lists the secret files the configuration's webhooks name, so
// that the caller that reads files can check them (package config).
func (c *Config) SecretFiles() []SecretFile {
	var out []SecretFile
	for i, s := range c.Services {
		if s.Rollout == nil {
			continue
		}
		for j, h := range s.Rollout.Webhooks {
			if h.SecretFile == "" {
				continue
			}
			out = append(out, SecretFile{
				Path: fmt.Sprintf("services[%d].rollout.webhooks[%d].secret_file", i, j),
				File: h.SecretFile, Line: h.SecretFileLine,
			})
		}
	}
	return out
}

// webhook reads one entry of a rollout's webhooks. Every problem is
// reported here, with its line: the checker repeats the checks only for
// configurations built in code.
func (p *parser) webhook(path string, n *yaml.Node) Webhook {
	h := Webhook{Timeout: Duration(DefaultHookTimeout), Retries: DefaultHookRetries}
	var retries, poll *yaml.Node
	for _, e := range p.fields(path, n, "name", "type", "url", "timeout", "retries", "poll", "secret_file") {
		fp := join(path, e.key)
		switch e.key {
		case "name":
			if v, ok := p.name(fp, e.v, "hook name"); ok {
				if !hookName.MatchString(v) {
					p.errorf(fp, e.v, "%q: a hook name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit", v)
				}
				h.Name = v
			}
		case "type":
			if v, ok := p.name(fp, e.v, "hook type"); ok {
				if !slices.Contains(HookTypes(), v) {
					p.errorf(fp, e.v, "unknown hook type %q (one of %s)", v, strings.Join(HookTypes(), ", "))
				}
				h.Type = v
			}
		case "url":
			if v, ok := p.name(fp, e.v, "hook url"); ok {
				if reason := checkHookURL(v); reason != "" {
					p.errorf(fp, e.v, "%s", reason)
				}
				h.URL = v
			}
		case "timeout":
			h.Timeout = p.duration(fp, e.v, h.Timeout)
			if d := h.Timeout.D(); d < MinHookTimeout || d > MaxHookTimeout {
				p.errorf(fp, e.v, "must be between %s and %s (got %s)", MinHookTimeout, MaxHookTimeout, d)
			}
		case "retries":
			retries = e.v
			if v, ok := p.decimal(fp, e.v, 0, "a whole number"); ok {
				if v > MaxHookRetries {
					p.errorf(fp, e.v, "must be between 0 and %d (got %d)", MaxHookRetries, v)
				}
				h.Retries = v
			}
		case "poll":
			poll = e.v
			h.Poll = p.duration(fp, e.v, h.Poll)
			if d := h.Poll.D(); d < MinHookPoll || d > MaxHookPoll {
				p.errorf(fp, e.v, "must be between %s and %s (got %s)", MinHookPoll, MaxHookPoll, d)
			}
		case "secret_file":
			if v, ok := p.name(fp, e.v, "secret_file"); ok {
				if !filepath.IsAbs(v) {
					p.errorf(fp, e.v, "%q: must be an absolute path (the configuration may come from etcd, with no directory of its own)", v)
				}
				h.SecretFile, h.SecretFileLine = v, e.v.Line
			}
		}
	}
	for _, k := range []string{"name", "type", "url"} {
		if _, ok := p.lines[join(path, k)]; !ok {
			p.errorf(join(path, k), n, "missing: every hook needs a name, a type and a url")
		}
	}
	switch {
	case IsGate(h.Type):
		if retries != nil {
			p.errorf(join(path, "retries"), retries, "a %s hook is asked again every poll until it answers 2xx: retries applies to pre_step and event hooks", h.Type)
		}
		if h.Poll == 0 {
			h.Poll = Duration(DefaultHookPoll)
		}
		h.Retries = 0
	case h.Type != "" && poll != nil:
		p.errorf(join(path, "poll"), poll, "poll applies to confirm_step and confirm_promotion hooks, not to %s", h.Type)
	}
	return h
}

// uniqueHooks reports hooks that share a name: the name identifies a hook
// in the status, the metrics and the logs.
func (p *parser) uniqueHooks(path string, n *yaml.Node, hooks []Webhook) {
	if len(hooks) > MaxHooks {
		p.errorf(path, n, "too many hooks (%d, at most %d)", len(hooks), MaxHooks)
	}
	seen := map[string]int{}
	for i, h := range hooks {
		if h.Name == "" {
			continue
		}
		if first, dup := seen[h.Name]; dup {
			p.errorf(join(index(path, i), "name"), n.Content[i], "hook name %q is already used by %s", h.Name, index(path, first))
			continue
		}
		seen[h.Name] = i
	}
}

// checkHookURL says what is wrong with a hook's URL ("" when nothing).
func checkHookURL(s string) string {
	if len(s) > MaxHookURLBytes {
		return fmt.Sprintf("longer than %d bytes", MaxHookURLBytes)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Sprintf("not a URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("%q: a hook URL must be http:// or https://", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Sprintf("%q: a hook URL needs a host", s)
	case u.User != nil:
		return "a hook URL must not carry credentials (user:password@): the URL is shown in the rollout's status; sign calls with secret_file instead"
	case u.Fragment != "":
		return "a hook URL has no #fragment"
	}
	return ""
}

// latencyKeys notes which latency keys a guard block sets.
type latencyKeys struct {
	percentile, bound *yaml.Node
}

// latencyKey reads one of the guard's latency and flap-control keys.
func (p *parser) latencyKey(fp string, e entry, g *Guard, seen *latencyKeys) {
	switch e.key {
	case "max_latency_ms":
		seen.bound = e.v
		if v, ok := p.decimal(fp, e.v, 0, "a whole number of milliseconds"); ok {
			if v < 1 || v > MaxLatencyMs {
				p.errorf(fp, e.v, "must be between 1 and %d (got %d; leave it out for no absolute bound)", MaxLatencyMs, v)
			}
			g.MaxLatencyMs = v
		}
	case "max_latency_ratio":
		seen.bound = e.v
		if h, ok := p.decimal(fp, e.v, 2, "a number such as 2 or 1.5"); ok {
			if h < MinLatencyRatio {
				p.errorf(fp, e.v, "must be between 1 and %s (got %s; leave it out for no relative bound)", FormatPercent(MaxLatencyRatio), FormatPercent(h))
			}
			g.MaxLatencyRatio = Hundredths(h)
		}
	case "latency_percentile":
		seen.percentile = e.v
		if h, ok := p.decimal(fp, e.v, 2, "a percentile such as 99 or 99.9"); ok {
			if h < MinLatencyPercentile || h > MaxLatencyPercentile {
				p.errorf(fp, e.v, "must be between 50 and 99.9 (got %s)", FormatPercent(h))
			}
			g.LatencyPercentile = Hundredths(h)
		}
	case "failing_for":
		g.FailingFor = p.duration(fp, e.v, g.FailingFor)
		if d := g.FailingFor.D(); d < 0 || d > MaxFailingFor {
			p.errorf(fp, e.v, "must be between 0s and %s (got %s)", MaxFailingFor, d)
		}
	}
}

// latencyDone reports a latency_percentile that nothing would use.
func (p *parser) latencyDone(path string, _ *yaml.Node, _ Guard, seen latencyKeys) {
	if seen.percentile != nil && seen.bound == nil {
		p.errorf(join(path, "latency_percentile"), seen.percentile,
			"set, but neither max_latency_ms nor max_latency_ratio is: latency is judged only against a bound")
	}
}

// latency validates the guard's latency and flap-control fields (for
// configurations built in code; the parser reports the same with lines).
func (c *checker) latency(gp string, g *Guard) {
	if g.MaxLatencyMs < 0 || g.MaxLatencyMs > MaxLatencyMs {
		c.add(gp+".max_latency_ms", "must be between 1 and %d (got %d; 0 is no absolute bound)", MaxLatencyMs, g.MaxLatencyMs)
	}
	if g.MaxLatencyRatio != 0 && (g.MaxLatencyRatio < MinLatencyRatio || g.MaxLatencyRatio > MaxLatencyRatio) {
		c.add(gp+".max_latency_ratio", "must be between 1 and %s (got %s)", FormatPercent(MaxLatencyRatio), FormatPercent(int(g.MaxLatencyRatio)))
	}
	if g.LatencyPercentile < MinLatencyPercentile || g.LatencyPercentile > MaxLatencyPercentile {
		c.add(gp+".latency_percentile", "must be between 50 and 99.9 (got %s)", FormatPercent(int(g.LatencyPercentile)))
	}
	if d := g.FailingFor.D(); d < 0 || d > MaxFailingFor {
		c.add(gp+".failing_for", "must be between 0s and %s (got %s)", MaxFailingFor, d)
	}
}

// webhooks validates a rollout's hooks (for configurations built in code;
// the parser reports the same with lines).
func (c *checker) webhooks(path string, hooks []Webhook) {
	if len(hooks) > MaxHooks {
		c.add(path, "too many hooks (%d, at most %d)", len(hooks), MaxHooks)
	}
	seen := map[string]bool{}
	for i, h := range hooks {
		hp := index(path, i)
		switch {
		case !hookName.MatchString(h.Name):
			c.add(hp+".name", "%q: a hook name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit", h.Name)
		case seen[h.Name]:
			c.add(hp+".name", "hook name %q is used twice", h.Name)
		}
		seen[h.Name] = true
		if !slices.Contains(HookTypes(), h.Type) {
			c.add(hp+".type", "unknown hook type %q (one of %s)", h.Type, strings.Join(HookTypes(), ", "))
		}
		if reason := checkHookURL(h.URL); reason != "" {
			c.add(hp+".url", "%s", reason)
		}
		if d := h.Timeout.D(); d < MinHookTimeout || d > MaxHookTimeout {
			c.add(hp+".timeout", "must be between %s and %s (got %s)", MinHookTimeout, MaxHookTimeout, d)
		}
		if h.Retries < 0 || h.Retries > MaxHookRetries {
			c.add(hp+".retries", "must be between 0 and %d (got %d)", MaxHookRetries, h.Retries)
		}
		if IsGate(h.Type) {
			if d := h.Poll.D(); d < MinHookPoll || d > MaxHookPoll {
				c.add(hp+".poll", "must be between %s and %s (got %s)", MinHookPoll, MaxHookPoll, d)
			}
		}
		if h.SecretFile != "" && !filepath.IsAbs(h.SecretFile) {
			c.add(hp+".secret_file", "%q: must be an absolute path", h.SecretFile)
		}
	}
}

// HooksOf returns r's hooks of type t, in declared order.
func (r *Rollout) HooksOf(t string) []Webhook {
	if r == nil {
		return nil
	}
	var out []Webhook
	for _, h := range r.Webhooks {
		if h.Type == t {
			out = append(out, h)
		}
	}
	return out
}

// UnmarshalJSON reads a decimal number with at most two decimals, as
// MarshalJSON writes it (a client of the admin API reads 1.5 back as 150).
func (h *Hundredths) UnmarshalJSON(data []byte) error {
	v, reason := parseHundredths(strings.TrimSpace(string(data)), 1<<40)
	if reason != "" {
		return fmt.Errorf("number %s: %s", data, reason)
	}
	*h = Hundredths(v)
	return nil
}
