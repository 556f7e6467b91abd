// Package metrics defines splitter's Prometheus metrics on an injected
// registerer (no global registry, no init-time registration).
//
// Every label value comes either from the validated configuration (service
// and version names) or from a closed set fixed here (api, reason, result,
// phase); a value outside its closed set is recorded as "other". Nothing a
// client sends (header values, paths) ever becomes a label, so traffic
// cannot create series.
//
// Decided is on the request path: the counter for each label combination
// is looked up in a copy-on-write map, so after the first decision of a
// kind it neither locks nor allocates.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

const namespace = "splitter"

// other replaces a label value outside its closed set.
const other = "other"

// Closed label sets, as functions so that no package-level slice can be
// modified.
func reloadResults() []string { return []string{"success", "error", "unchanged"} }
func mutationResults() []string {
	return []string{"success", "rejected", "unauthorized", "forbidden", "error"}
}

// Metrics holds splitter's collectors. Its methods are safe for concurrent
// use.
type Metrics struct {
	decisions         *prometheus.CounterVec
	assignedKeys      *prometheus.CounterVec
	cookiesLost       *prometheus.CounterVec
	mirrored          *prometheus.CounterVec
	reloads           *prometheus.CounterVec
	configInfo        *prometheus.GaugeVec
	lastReloadSuccess prometheus.Gauge
	lastReloadError   prometheus.Gauge
	generation        prometheus.Gauge
	weightPercent     *prometheus.GaugeVec
	overrideActive    *prometheus.GaugeVec
	streams           *prometheus.CounterVec
	streamsActive     *prometheus.GaugeVec
	streamResults     *prometheus.CounterVec
	unexpectedPhases  *prometheus.CounterVec
	panics            prometheus.Counter
	adminRequests     *prometheus.CounterVec
	adminMutations    *prometheus.CounterVec
	gcPercent         prometheus.Gauge
	reg               prometheus.Registerer

	// decided maps a decision's labels to its counters; it is replaced,
	// never modified, so readers need no lock.
	decided atomic.Pointer[map[decisionKey]decisionCounters]
	// mu guards copy-on-write updates of decided, and known.
	mu sync.Mutex
	// known holds every (service, version) of every configuration observed,
	// nil until the first ObserveSnapshot.
	known map[[2]string]bool
	// snapMu serialises ObserveSnapshot and guards the label sets it last
	// exported, which it deletes when they disappear (rather than resetting
	// the vectors, which would let a scrape see no series at all).
	snapMu      sync.Mutex
	lastInfo    [2]string
	lastWeights map[[2]string]bool
	lastActive  map[string]bool

	// Read-only after New: the closed label sets and their children.
	reasons        map[string]bool
	reloadSet      map[string]bool
	mutationSet    map[string]bool
	streamChildren map[string]streamChildren
	resultChildren map[[2]string]prometheus.Counter
	phaseChildren  map[[2]string]prometheus.Counter
}

type decisionKey struct {
	api, service, version string
	reason                split.Reason
	mirror                string // the version the request is copied to, "" for none
}

// decisionCounters are what one decision counts: always the decision; a
// key given out (reason sticky_assigned) and a mirrored request when it
// was one (nil otherwise).
type decisionCounters struct {
	decision, assigned, mirrored prometheus.Counter
}

type streamChildren struct {
	total  prometheus.Counter
	active prometheus.Gauge
}

// New creates the metrics and registers them on reg; it panics if one of
// them is already registered there, which is a programming error.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg: reg,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "decisions_total",
			Help: "Routing decisions by adapter, service, version and reason.",
		}, []string{"api", "service", "version", "reason"}),
		assignedKeys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sticky_keys_assigned_total",
			Help: "Fresh sticky keys given to requests that carried none (sticky.assign), by adapter and service.",
		}, []string{"api", "service"}),
		cookiesLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sticky_cookies_lost_total",
			Help: "Requests given a fresh sticky key whose cookie could not be set (ext_proc: Envoy never sent their response headers; its filter lacks allow_mode_override), by adapter.",
		}, []string{"api"}),
		mirrored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "mirrored_requests_total",
			Help: "Requests marked to be copied to a mirror version (Envoy sends the copy), by adapter, service and mirror version.",
		}, []string{"api", "service", "version"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "config_reloads_total",
			Help: "Configuration reloads by result (success, error, unchanged).",
		}, []string{"result"}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "config_info",
			Help: "The configuration in force: its sha256 and source (always 1).",
		}, []string{"sha256", "source"}),
		lastReloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "config_last_reload_success_timestamp_seconds",
			Help: "When the configuration in force was loaded (Unix seconds).",
		}),
		lastReloadError: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "config_last_reload_error",
			Help: "1 if the last reload failed (the previous configuration keeps serving), else 0.",
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "config_generation",
			Help: "Generation of the state in force; +1 on every reload or runtime override.",
		}),
		weightPercent: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "weight_percent",
			Help: "Effective weight of each version in percent (file weights or runtime override).",
		}, []string{"service", "version"}),
		overrideActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "override_active",
			Help: "1 if a runtime override sets the service's weights, else 0.",
		}, []string{"service"}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "streams_total",
			Help: "gRPC streams (ext_proc) or calls (ext_authz) started.",
		}, []string{"api"}),
		streamsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "streams_active",
			Help: "gRPC streams or calls in progress.",
		}, []string{"api"}),
		streamResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "stream_results_total",
			Help: "Ended streams by result (ok, canceled, error, panic, no_config).",
		}, []string{"api", "result"}),
		unexpectedPhases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "unexpected_phases_total",
			Help: "ext_proc messages for phases splitter does not ask for, answered with an empty response.",
		}, []string{"api", "phase"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "panics_total",
			Help: "Panics recovered while handling a request.",
		}),
		adminRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "admin_requests_total",
			Help: "Admin API requests by route pattern and status code.",
		}, []string{"endpoint", "code"}),
		adminMutations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "admin_mutations_total",
			Help: "Admin API mutation attempts by result (success, rejected, unauthorized, forbidden, error).",
		}, []string{"result"}),
		gcPercent: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "gc_percent",
			Help: "Garbage collector target percent applied at startup (gc_percent, else GOGC, else the default); -1: off.",
		}),
	}
	reg.MustRegister(
		m.decisions, m.assignedKeys, m.cookiesLost, m.mirrored, m.reloads, m.configInfo, m.lastReloadSuccess, m.lastReloadError,
		m.generation, m.weightPercent, m.overrideActive, m.streams, m.streamsActive,
		m.streamResults, m.unexpectedPhases, m.panics, m.adminRequests, m.adminMutations,
		m.gcPercent,
	)
	empty := map[decisionKey]decisionCounters{}
	m.decided.Store(&empty)

	// Pre-create the closed-set children: the hot path then only reads
	// maps, and every series exists (at 0) from the start.
	m.streamChildren = map[string]streamChildren{}
	m.resultChildren = map[[2]string]prometheus.Counter{}
	m.phaseChildren = map[[2]string]prometheus.Counter{}
	for _, api := range append(adapter.APIs(), other) {
		m.streamChildren[api] = streamChildren{
			total:  m.streams.WithLabelValues(api),
			active: m.streamsActive.WithLabelValues(api),
		}
		for _, r := range append(adapter.Results(), other) {
			m.resultChildren[[2]string{api, r}] = m.streamResults.WithLabelValues(api, r)
		}
		for _, p := range append(adapter.Phases(), other) {
			m.phaseChildren[[2]string{api, p}] = m.unexpectedPhases.WithLabelValues(api, p)
		}
	}
	m.reasons = setOf(reasonNames())
	m.reloadSet = setOf(reloadResults())
	m.mutationSet = setOf(mutationResults())
	for r := range m.reloadSet {
		m.reloads.WithLabelValues(r)
	}
	for r := range m.mutationSet {
		m.adminMutations.WithLabelValues(r)
	}
	return m
}

// Decided counts one decision. It does not allocate once the label
// combination has been seen.
func (m *Metrics) Decided(api string, d *split.Decision) {
	if d == nil {
		return
	}
	k := decisionKey{api: api, service: d.Service, version: d.Version, reason: d.Reason, mirror: d.Mirror()}
	c, ok := (*m.decided.Load())[k]
	if !ok {
		c = m.decidedSlow(k)
	}
	c.decision.Inc()
	if c.assigned != nil {
		c.assigned.Inc()
	}
	if c.mirrored != nil {
		c.mirrored.Inc()
	}
}

// decidedSlow adds the counters for a new label combination.
func (m *Metrics) decidedSlow(k decisionKey) decisionCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.decided.Load()
	if c, ok := cur[k]; ok {
		return c
	}
	api := m.closedAPI(k.api)
	service, version := k.service, k.version
	// Service and version come from the table; a pair that no observed
	// configuration declares is not trusted as a label.
	if m.known != nil && (service != "" || version != "") && !m.known[[2]string{service, version}] {
		service, version = other, other
	}
	reason := k.reason.String()
	if !m.reasons[reason] {
		reason = other
	}
	c := decisionCounters{decision: m.decisions.WithLabelValues(api, service, version, reason)}
	if k.reason == split.ReasonStickyAssigned {
		c.assigned = m.assignedKeys.WithLabelValues(api, service)
	}
	if k.mirror != "" {
		mirror := k.mirror
		if m.known != nil && !m.known[[2]string{k.service, mirror}] {
			mirror = other
		}
		if service == other {
			mirror = other
		}
		c.mirrored = m.mirrored.WithLabelValues(api, service, mirror)
	}
	next := make(map[decisionKey]decisionCounters, len(cur)+1)
	for kk, v := range cur {
		next[kk] = v
	}
	next[k] = c
	m.decided.Store(&next)
	return c
}

// StreamStarted counts a started stream or call.
func (m *Metrics) StreamStarted(api string) {
	c := m.stream(api)
	c.total.Inc()
	c.active.Inc()
}

// StreamEnded counts an ended stream with its result.
func (m *Metrics) StreamEnded(api, result string) {
	m.stream(api).active.Dec()
	api = m.closedAPI(api)
	c, ok := m.resultChildren[[2]string{api, result}]
	if !ok {
		c = m.resultChildren[[2]string{api, other}]
	}
	c.Inc()
}

// StreamsEnded counts n requests that ended with result at once, for an
// adapter that counts its requests itself and reports them in batches (the
// in-process module: its "streams" are Envoy's own HTTP streams, decided
// inside one hook call, so none is ever active between two batches). It
// adds to streams_total and stream_results_total alike.
func (m *Metrics) StreamsEnded(api, result string, n uint64) {
	if n == 0 {
		return
	}
	m.stream(api).total.Add(float64(n))
	api = m.closedAPI(api)
	c, ok := m.resultChildren[[2]string{api, result}]
	if !ok {
		c = m.resultChildren[[2]string{api, other}]
	}
	c.Add(float64(n))
}

// PhaseUnexpected counts a message for a phase splitter did not ask for.
func (m *Metrics) PhaseUnexpected(api, phase string) {
	api = m.closedAPI(api)
	c, ok := m.phaseChildren[[2]string{api, phase}]
	if !ok {
		c = m.phaseChildren[[2]string{api, other}]
	}
	c.Inc()
}

func (m *Metrics) stream(api string) streamChildren {
	return m.streamChildren[m.closedAPI(api)]
}

// closedAPI maps api into its closed set.
func (m *Metrics) closedAPI(api string) string {
	if _, ok := m.streamChildren[api]; ok {
		return api
	}
	return other
}

// CookieLost implements adapter.CookieRecorder: a request given a fresh
// sticky key whose cookie could not be set.
func (m *Metrics) CookieLost(api string) { m.cookiesLost.WithLabelValues(m.closedAPI(api)).Inc() }

// Panic counts a recovered panic; api is the adapter it happened in ("" for
// none), which the counter does not label.
func (m *Metrics) Panic(api string) { m.panics.Inc() }

// ReloadResult counts a reload attempt: "success", "error" or "unchanged".
// An unchanged file is a good one, so it clears the error gauge like a
// success does.
func (m *Metrics) ReloadResult(result string) {
	if !m.reloadSet[result] {
		result = other
	}
	m.reloads.WithLabelValues(result).Inc()
	switch result {
	case "error":
		m.lastReloadError.Set(1)
	case "success", "unchanged":
		m.lastReloadError.Set(0)
	}
}

// ObserveSnapshot exports the state in force; use it as store.Options.OnSwap.
// Series of services, versions and configurations that are gone are
// deleted (after the new values are set, so a scrape never sees none):
// config_info always has exactly one series.
func (m *Metrics) ObserveSnapshot(snap *store.Snapshot) {
	if snap == nil || snap.Table == nil {
		return
	}
	cfg := snap.Table.Config()
	if cfg == nil {
		return
	}

	m.mu.Lock()
	if m.known == nil {
		m.known = map[[2]string]bool{}
	}
	for _, svc := range cfg.Services {
		for _, w := range svc.Weights {
			m.known[[2]string{svc.Name, w.Version}] = true
		}
	}
	m.mu.Unlock()

	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	info := [2]string{snap.SHA256, snap.Source}
	m.configInfo.WithLabelValues(info[0], info[1]).Set(1)
	if m.lastWeights != nil && info != m.lastInfo {
		m.configInfo.DeleteLabelValues(m.lastInfo[0], m.lastInfo[1])
	}
	m.lastInfo = info
	m.generation.Set(float64(snap.Generation))
	if !snap.LoadedAt.IsZero() {
		m.lastReloadSuccess.Set(float64(snap.LoadedAt.UnixNano()) / 1e9)
	}

	weights := map[[2]string]bool{}
	active := map[string]bool{}
	for _, svc := range cfg.Services {
		for _, w := range svc.Weights {
			weights[[2]string{svc.Name, w.Version}] = true
			m.weightPercent.WithLabelValues(svc.Name, w.Version).Set(float64(w.BasisPoints) / 100)
		}
		v := 0.0
		if _, ok := snap.Overrides[svc.Name]; ok {
			v = 1
		}
		active[svc.Name] = true
		m.overrideActive.WithLabelValues(svc.Name).Set(v)
	}
	for k := range m.lastWeights {
		if !weights[k] {
			m.weightPercent.DeleteLabelValues(k[0], k[1])
		}
	}
	for k := range m.lastActive {
		if !active[k] {
			m.overrideActive.DeleteLabelValues(k)
		}
	}
	m.lastWeights, m.lastActive = weights, active
}

// Register adds collectors to the registry the metrics were created on
// (for example an adapter's NewCacheCollector); it panics on a duplicate,
// a programming error.
func (m *Metrics) Register(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

// GCPercent records the garbage collector target in force (-1: off).
func (m *Metrics) GCPercent(percent int) { m.gcPercent.Set(float64(percent)) }

// AdminRequest counts an admin API request; endpoint is the route pattern.
func (m *Metrics) AdminRequest(endpoint string, code int) {
	m.adminRequests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
}

// AdminMutation counts an admin mutation attempt: "success", "rejected",
// "unauthorized", "forbidden" (cross-site, or a non-loopback Host without
// a token) or "error".
func (m *Metrics) AdminMutation(result string) {
	if !m.mutationSet[result] {
		result = other
	}
	m.adminMutations.WithLabelValues(result).Inc()
}

func setOf(values []string) map[string]bool {
	m := make(map[string]bool, len(values))
	for _, v := range values {
		m[v] = true
	}
	return m
}

func reasonNames() []string {
	var names []string
	for _, r := range split.Reasons() {
		names = append(names, r.String())
	}
	return names
}

// cacheCollector exports an adapter's response cache statistics.
type cacheCollector struct {
	desc  *prometheus.Desc
	api   string
	stats func() (hits, misses uint64)
}

// NewCacheCollector returns a collector of splitter_response_cache_total
// {api, result="hit"|"miss"}: how often an adapter found its prebuilt
// answer for a decision (adapter.Responses) and how often it built one.
// In steady state misses stop growing.
func NewCacheCollector(api string, stats func() (hits, misses uint64)) prometheus.Collector {
	return &cacheCollector{
		desc: prometheus.NewDesc(namespace+"_response_cache_total",
			"Answers taken from the adapter's per-configuration cache (hit) or built (miss).",
			[]string{"result"}, prometheus.Labels{"api": api}),
		api: api, stats: stats,
	}
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// ResponseCount is how many responses of one version ended in one class.
type ResponseCount struct {
	Service, Version, Class string
	N                       uint64
}

// ResponseClasses are the classes of NewResponsesCollector: the status
// class of the response, "reset" for a response cut off by an upstream
// failure, "aborted" for a request the client gave up before any response.
func ResponseClasses() []string {
	return []string{"1xx", "2xx", "3xx", "4xx", "5xx", "reset", "aborted"}
}

type responsesCollector struct {
	desc  *prometheus.Desc
	read  func() []ResponseCount
	known map[string]bool
}

// NewResponsesCollector returns a collector of splitter_responses_total
// {api, service, version, class}: the responses an adapter that sees them
// counted per version (the in-process module), read from read at each
// scrape. Service and version come from the configurations the adapter
// decided with, class from ResponseClasses (anything else is "other").
func NewResponsesCollector(api string, read func() []ResponseCount) prometheus.Collector {
	return &responsesCollector{
		desc: prometheus.NewDesc(namespace+"_responses_total",
			"Responses by the version that served them and status class (reset: cut off by an upstream failure; aborted: the client went away before any response), counted in process.",
			[]string{"service", "version", "class"}, prometheus.Labels{"api": api}),
		read:  read,
		known: setOf(ResponseClasses()),
	}
}

func (c *responsesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *responsesCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.read() {
		class := r.Class
		if !c.known[class] {
			class = other
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(r.N), r.Service, r.Version, class)
	}
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	hits, misses := c.stats()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(hits), "hit")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(misses), "miss")
}
