package rollout

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/split"
)

// Payload is the JSON body of every webhook call (docs/rollouts.md,
// "Webhooks"): the rollout as it is when the call is made.
type Payload struct {
	Service string `json:"service"`
	// Type is the hook's type, Hook its name.
	Type   string        `json:"type"`
	Hook   string        `json:"hook"`
	State  Phase         `json:"state"`
	Step   int           `json:"step"`
	Weight split.Percent `json:"weight"`
	Canary string        `json:"canary"`
	Stable string        `json:"stable"`
	// Verdict is the last verdict (gates), or the one behind the
	// transition (events); null when there is none.
	Verdict *Verdict  `json:"verdict"`
	Time    time.Time `json:"time"`
	// Node is the replica that calls (fleet mode: the rollout leader);
	// "" in file mode.
	Node string `json:"node"`
	// NextStep and NextWeight: for pre_step and confirm hooks, the step
	// the rollout moves to once every hook before it has answered 2xx.
	NextStep   int            `json:"next_step,omitempty"`
	NextWeight *split.Percent `json:"next_weight,omitempty"`
	// Transition: for event hooks, the transition that happened.
	Transition *Transition `json:"transition,omitempty"`
}

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body,
// keyed with the hook's secret_file, when it has one.
const SignatureHeader = "X-Splitter-Signature"

// Sign returns the value of SignatureHeader for body under key.
func Sign(key, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// maxAnswerBytes bounds what is kept of a hook's answer body (shown in the
// status as its last answer).
const maxAnswerBytes = 200

// The results of one webhook request, a closed set (metrics).
const (
	hookOK      = "2xx"
	hookStatus  = "other_status" // an answer that is not 2xx
	hookTimeout = "timeout"
	hookError   = "error" // no answer: refused, reset, a secret file unreadable
)

func hookResults() []string { return []string{hookOK, hookStatus, hookTimeout, hookError} }

// The outcomes of one event for one event hook, a closed set (metrics).
const (
	eventDelivered = "delivered"
	eventFailed    = "failed"  // every attempt failed
	eventDropped   = "dropped" // the hook's queue was full
)

func eventOutcomes() []string { return []string{eventDelivered, eventFailed, eventDropped} }

// hookClient makes webhook calls and counts them.
type hookClient struct {
	http  *http.Client
	node  string
	log   *slog.Logger
	stats *hookStats
}

func newHookClient(c *http.Client, node string, log *slog.Logger) *hookClient {
	if c == nil {
		c = &http.Client{
			Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute},
		}
	}
	// A redirect is an answer (not 2xx), never followed: a signed body
	// must not travel to another host.
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hookClient{http: &cc, node: node, log: log, stats: newHookStats()}
}

// call POSTs p to h once, within h.Timeout, and says how it was answered:
// ok for a 2xx; answer is the status line and the start of the body, or
// why there was none.
func (c *hookClient) call(ctx context.Context, service string, h split.Webhook, p Payload) (answer string, ok bool) {
	p.Service, p.Type, p.Hook, p.Node, p.Time = service, h.Type, h.Name, c.node, time.Now().UTC()
	result := hookError
	defer func() { c.stats.request(service, h.Name, h.Type, result) }()
	body, err := json.Marshal(p)
	if err != nil {
		return "error: " + err.Error(), false
	}
	ctx, cancel := context.WithTimeout(ctx, h.Timeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return "error: " + err.Error(), false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "splitter-rollout")
	req.Header.Set("X-Splitter-Hook", h.Name)
	if c.node != "" {
		req.Header.Set("X-Splitter-Node", c.node)
	}
	if h.SecretFile != "" {
		key, err := config.ReadSecret(h.SecretFile)
		if err != nil {
			// Never sent unsigned: the receiver would refuse it anyway,
			// or worse, accept it.
			return "error: not sent: " + err.Error(), false
		}
		req.Header.Set(SignatureHeader, Sign(key, body))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded {
			result = hookTimeout
			return fmt.Sprintf("no answer within %s", h.Timeout.D()), false
		}
		return "error: " + trimURLError(err), false
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	answer = resp.Status
	if s := printable(snippet); s != "" {
		answer += ": " + s
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		result = hookOK
		return answer, true
	}
	result = hookStatus
	return answer, false
}

// trimURLError drops the method and URL Go's client puts before the
// cause (the URL is in the configuration already).
func trimURLError(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "\": "); i >= 0 && strings.HasPrefix(msg, "Post ") {
		return msg[i+3:]
	}
	return msg
}

// printable keeps the first line of an answer body, without control
// characters, for the status.
func printable(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
}

// hookStats counts webhook requests and event deliveries, per service and
// hook, for the metrics.
type hookStats struct {
	mu       sync.Mutex
	requests map[[4]string]uint64 // service, hook, type, result
	events   map[[3]string]uint64 // service, hook, outcome
}

func newHookStats() *hookStats {
	return &hookStats{requests: map[[4]string]uint64{}, events: map[[3]string]uint64{}}
}

func (s *hookStats) request(service, hook, typ, result string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[[4]string{service, hook, typ, result}]++
}

func (s *hookStats) event(service, hook, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events[[3]string{service, hook, outcome}]++
}

// hookCollector exports the webhook counters for the hooks of the
// configuration in force: service and hook labels come from the validated
// configuration, type and result from closed sets.
type hookCollector struct {
	m                *Manager
	requests, events *prometheus.Desc
}

// HookCollector returns the webhook metrics:
// splitter_rollout_webhook_requests_total{service,hook,type,result} and
// splitter_rollout_webhook_events_total{service,hook,outcome}.
func (m *Manager) HookCollector() prometheus.Collector {
	const ns = "splitter_rollout_webhook_"
	return &hookCollector{
		m: m,
		requests: prometheus.NewDesc(ns+"requests_total", "Rollout webhook requests by how they were answered "+
			"(2xx, other_status, timeout, error: no answer), on the replica that makes them (the rollout leader).",
			[]string{"service", "hook", "type", "result"}, nil),
		events: prometheus.NewDesc(ns+"events_total", "Transitions told to event hooks, by outcome (delivered; failed: "+
			"every retry failed; dropped: the hook's queue was full).", []string{"service", "hook", "outcome"}, nil),
	}
}

func (c *hookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.requests
	ch <- c.events
}

func (c *hookCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.m.store.Load()
	if snap == nil {
		return
	}
	st := c.m.hooks.stats
	st.mu.Lock()
	requests, events := maps.Clone(st.requests), maps.Clone(st.events)
	st.mu.Unlock()
	for _, svc := range snap.Table.Config().Services {
		if svc.Rollout == nil {
			continue
		}
		for _, h := range svc.Rollout.Webhooks {
			for _, r := range hookResults() {
				n := requests[[4]string{svc.Name, h.Name, h.Type, r}]
				ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(n), svc.Name, h.Name, h.Type, r)
			}
			if h.Type != split.HookEvent {
				continue
			}
			for _, o := range eventOutcomes() {
				n := events[[3]string{svc.Name, h.Name, o}]
				ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(n), svc.Name, h.Name, o)
			}
		}
	}
}

// Gates returns the hooks that must answer 2xx, in order, before the
// rollout moves to step target (1..len(steps)): the confirm_step hooks
// before every step after the first, the confirm_promotion hooks before
// the last, then the pre_step hooks before every step.
func Gates(r *split.Rollout, target int) []split.Webhook {
	var out []split.Webhook
	if target >= 2 {
		out = append(out, r.HooksOf(split.HookConfirmStep)...)
	}
	if target == len(r.Steps) {
		out = append(out, r.HooksOf(split.HookConfirmPromotion)...)
	}
	return append(out, r.HooksOf(split.HookPreStep)...)
}

func hookNames(hooks []split.Webhook) string {
	names := make([]string, len(hooks))
	for i, h := range hooks {
		names[i] = h.Name + " (" + h.Type + ")"
	}
	return strings.Join(names, ", ")
}
