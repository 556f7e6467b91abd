package fleet

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the fleet's Prometheus metrics.
type Metrics struct {
	connected       prometheus.Gauge
	disconnectedAt  prometheus.Gauge
	appliedRevision prometheus.Gauge
	watchRestarts   prometheus.Counter
	compactions     prometheus.Counter
	resyncs         *prometheus.CounterVec
	rejectedDocs    prometheus.Counter
	rejectedNow     prometheus.Gauge
	propagation     prometheus.Histogram
	conflicts       prometheus.Counter
	watchStalls     prometheus.Counter
	severed         prometheus.Counter
}

// resyncReasons is the closed label set of splitter_etcd_full_reads_total.
func resyncReasons() []string { return []string{"start", "resync", "reload"} }

// NewMetrics creates the fleet metrics and registers them on reg (nil:
// not registered, for tests and tools).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "splitter"
	m := &Metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "etcd_connected",
			Help: "1 while this replica follows etcd (its watch answers progress requests and has reached the cluster's revision within a second), else 0."}),
		disconnectedAt: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "etcd_disconnected_since_timestamp_seconds",
			Help: "When etcd stopped answering (Unix seconds); 0 while connected."}),
		appliedRevision: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "etcd_applied_revision",
			Help: "etcd revision of the fleet state in force."}),
		watchRestarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "etcd_watch_restarts_total",
			Help: "Times the watch ended and was started again (resumed from the applied revision, or after a full read)."}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "etcd_watch_compacted_total",
			Help: "Watches cancelled because etcd compacted past the applied revision (everything is read again)."}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "etcd_full_reads_total",
			Help: "Full reads of the fleet state by reason (start, resync after a compaction or a start from the cache, reload)."}, []string{"reason"}),
		rejectedDocs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "etcd_rejected_documents_total",
			Help: "Configuration documents in etcd that failed validation (each distinct document counted once)."}),
		rejectedNow: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "etcd_config_rejected",
			Help: "1 while the document in etcd is rejected and the last good one serves, else 0."}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "etcd_propagation_seconds",
			Help:    "From an override's write (the writer's clock) to its application on this replica.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "etcd_write_conflicts_total",
			Help: "Admin writes whose compare-and-swap lost to a concurrent writer and were retried."}),
		watchStalls: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "etcd_watch_stalls_total",
			Help: "Watches given up because they stopped answering progress requests or fell behind the cluster's revision (then resumed, on another member if theirs hangs)."}),
		severed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "etcd_members_dropped_total",
			Help: "Times an etcd member that did not answer a liveness check had its connections dropped, so that requests and watches moved to the other members."}),
	}
	for _, r := range resyncReasons() {
		m.resyncs.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.disconnectedAt, m.appliedRevision, m.watchRestarts, m.compactions,
			m.resyncs, m.rejectedDocs, m.rejectedNow, m.propagation, m.conflicts, m.watchStalls, m.severed)
	}
	return m
}

func (m *Metrics) setConnected(up bool, since time.Time) {
	if up {
		m.connected.Set(1)
		m.disconnectedAt.Set(0)
		return
	}
	m.connected.Set(0)
	m.disconnectedAt.Set(float64(since.UnixNano()) / 1e9)
}

func (m *Metrics) resync(reason string) {
	if reason != "start" && reason != "reload" {
		reason = "resync"
	}
	m.resyncs.WithLabelValues(reason).Inc()
}

// RolloutMetrics are the fleet's rollout metrics.
type RolloutMetrics struct {
	leader    prometheus.Gauge
	elected   prometheus.Counter
	published prometheus.Counter
	conflicts prometheus.Counter
}

// NewRolloutMetrics creates them and registers them on reg (nil: not
// registered).
func NewRolloutMetrics(reg prometheus.Registerer) *RolloutMetrics {
	const ns = "splitter_rollout_"
	m := &RolloutMetrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "leader",
			Help: "1 while this replica leads the fleet's rollouts (judges and moves them), else 0."}),
		elected: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "leader_elected_total",
			Help: "Times this replica was elected rollout leader."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "counts_published_total",
			Help: "Window counts of active rollouts this replica wrote to etcd for the leader."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "state_conflicts_total",
			Help: "Rollout state writes refused because the stored state (or the leadership) changed meanwhile."}),
	}
	if reg != nil {
		reg.MustRegister(m.leader, m.elected, m.published, m.conflicts)
	}
	return m
}
