package rollout

import (
	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the rollouts of the configuration in force. Service
// labels come from the validated configuration, state and result labels
// from closed sets, so nothing a client sends can create a series.
type collector struct {
	m                                 *Manager
	state, step, weight, verdicts, tr *prometheus.Desc
}

// Collector returns the rollout metrics: splitter_rollout_state (1 for the
// phase a service's rollout is in, 0 for the others),
// splitter_rollout_step, splitter_rollout_canary_percent,
// splitter_rollout_verdicts_total and splitter_rollout_transitions_total.
func (m *Manager) Collector() prometheus.Collector {
	const ns = "splitter_rollout_"
	return &collector{
		m: m,
		state: prometheus.NewDesc(ns+"state", "1 for the state the service's rollout is in "+
			"(idle, progressing, paused, waiting, promoted, rolled_back, aborted), 0 for the others.", []string{"service", "state"}, nil),
		step:   prometheus.NewDesc(ns+"step", "The rollout's step in force, 1..number of steps; 0 before the first.", []string{"service"}, nil),
		weight: prometheus.NewDesc(ns+"canary_percent", "The canary's share the rollout set, in percent.", []string{"service"}, nil),
		verdicts: prometheus.NewDesc(ns+"verdicts_total", "Guard verdicts on the canary (healthy, failing, inconclusive), "+
			"one per tick while the rollout is progressing, paused or waiting.", []string{"service", "result"}, nil),
		tr: prometheus.NewDesc(ns+"transitions_total", "Rollout transitions by the state entered.", []string{"service", "to"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.step, c.weight, c.verdicts, c.tr} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.m.store.Load()
	if snap == nil {
		return
	}
	cfg := snap.Table.Config()
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for _, svc := range cfg.Services {
		if svc.Rollout == nil {
			continue
		}
		st := c.m.stateOf(svc.Name)
		for _, p := range Phases() {
			v := 0.0
			if p == st.Phase {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, svc.Name, string(p))
		}
		ch <- prometheus.MustNewConstMetric(c.step, prometheus.GaugeValue, float64(st.Step), svc.Name)
		ch <- prometheus.MustNewConstMetric(c.weight, prometheus.GaugeValue, float64(st.Weight)/100, svc.Name)
		counts := c.m.countsOf(svc.Name)
		for _, r := range Results() {
			ch <- prometheus.MustNewConstMetric(c.verdicts, prometheus.CounterValue, float64(counts.verdicts[r]), svc.Name, string(r))
		}
		for _, p := range Phases() {
			ch <- prometheus.MustNewConstMetric(c.tr, prometheus.CounterValue, float64(counts.transitions[p]), svc.Name, string(p))
		}
	}
}
