package console

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// Buckets is how many sampling intervals of history the console keeps per
// service and version (and per decision reason): 60 of the default 5s,
// five minutes.
const Buckets = 60

// decisionsMetric is the counter the decision-reason mix is read from.
const decisionsMetric = "splitter_decisions_total"

// rateSpan is how far back the "now" rates (requests per second, error
// percentage) look.
const rateSpan = time.Minute

// maxReadTime bounds one sampling read of the signal source.
const maxReadTime = 2 * time.Second

// sampler reads the signal source and the decision counters every
// interval into fixed-size rings per service: requests and errors per
// version, decisions per reason. The request path does no work for it.
type sampler struct {
	src     signals.Source // nil: no source
	srcName string
	gather  prometheus.Gatherer // nil: no reason mix
	store   *store.Store
	width   time.Duration

	mu       sync.Mutex
	services map[string]*serviceSeries
	srcErr   string    // the last read's error for every service, "" when it worked
	gathErr  string    // the last gather's error
	lastAt   time.Time // when the last sample was taken
}

type serviceSeries struct {
	versions []*versionSeries // in the configuration's declared order
	reasons  map[string]*ring
	totals   map[string]uint64 // decisions per reason since the process started
	first    time.Time         // first reading (the baseline)
	err      string            // this service's read error
}

type versionSeries struct {
	version, cluster string
	requests, errors *ring
}

func newSampler(src signals.Source, srcName string, gather prometheus.Gatherer, st *store.Store, width time.Duration) *sampler {
	return &sampler{src: src, srcName: srcName, gather: gather, store: st, width: width, services: map[string]*serviceSeries{}}
}

// run samples every width until ctx ends; the first sample is the
// baseline, taken at once.
func (s *sampler) run(ctx context.Context, now func() time.Time) {
	t := time.NewTicker(s.width)
	defer t.Stop()
	for {
		s.sample(ctx, now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample takes one reading of every version of every service in the
// configuration in force, and of the decision counters.
func (s *sampler) sample(ctx context.Context, now time.Time) {
	snap := s.store.Load()
	if snap == nil {
		return
	}
	cfg := snap.Table.Config()
	var targets [][]signals.Target
	for _, svc := range cfg.Services {
		ts := make([]signals.Target, 0, len(svc.Weights))
		for _, w := range svc.Weights {
			ts = append(ts, signals.Target{Service: svc.Name, Version: w.Version, Cluster: svc.Cluster(w.Version)})
		}
		targets = append(targets, ts)
	}
	counts, errs, srcErr := s.read(ctx, targets)
	reasons, gathErr := s.decisions()

	bucket := s.bucket(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastAt, s.srcErr, s.gathErr = now, srcErr, gathErr
	keep := make(map[string]bool, len(cfg.Services))
	for i, svc := range cfg.Services {
		keep[svc.Name] = true
		ss := s.series(svc, now)
		ss.err = errs[i]
		if errs[i] == "" {
			for j, vs := range ss.versions {
				vs.requests.observe(bucket, counts[i][j].Requests)
				vs.errors.observe(bucket, counts[i][j].Errors)
			}
		}
		if gathErr == "" {
			for _, r := range reasonNames() {
				n := reasons[[2]string{svc.Name, r}]
				ss.reasons[r].observe(bucket, n)
				ss.totals[r] = n
			}
		}
	}
	for name := range s.services {
		if !keep[name] {
			delete(s.services, name)
		}
	}
}

// series returns svc's series, made anew when its versions or clusters
// changed; s.mu is held.
func (s *sampler) series(svc split.Service, now time.Time) *serviceSeries {
	ss := s.services[svc.Name]
	if ss != nil && len(ss.versions) == len(svc.Weights) {
		same := true
		for j, w := range svc.Weights {
			if ss.versions[j].version != w.Version || ss.versions[j].cluster != svc.Cluster(w.Version) {
				same = false
			}
		}
		if same {
			return ss
		}
	}
	ss = &serviceSeries{reasons: map[string]*ring{}, totals: map[string]uint64{}, first: now}
	for _, w := range svc.Weights {
		ss.versions = append(ss.versions, &versionSeries{
			version: w.Version, cluster: svc.Cluster(w.Version), requests: newRing(Buckets), errors: newRing(Buckets),
		})
	}
	for _, r := range reasonNames() {
		ss.reasons[r] = newRing(Buckets)
	}
	s.services[svc.Name] = ss
	return ss
}

// read reads every service's targets: in one request when it works,
// else service by service, so that one service whose cluster Envoy does
// not have does not blind the others. errs[i] is service i's error;
// srcErr is set when nothing could be read at all.
func (s *sampler) read(ctx context.Context, targets [][]signals.Target) (counts [][]signals.Counts, errs []string, srcErr string) {
	counts = make([][]signals.Counts, len(targets))
	errs = make([]string, len(targets))
	for i, ts := range targets {
		counts[i] = make([]signals.Counts, len(ts))
	}
	if s.src == nil {
		for i := range errs {
			errs[i] = errNoSource
		}
		return counts, errs, errNoSource
	}
	ctx, cancel := context.WithTimeout(ctx, min(s.width, maxReadTime))
	defer cancel()
	var all []signals.Target
	for _, ts := range targets {
		all = append(all, ts...)
	}
	out := make([]signals.Counts, len(all))
	err := s.src.Read(ctx, all, out)
	if err == nil {
		k := 0
		for i := range counts {
			k += copy(counts[i], out[k:k+len(counts[i])])
		}
		return counts, errs, ""
	}
	failed := 0
	for i, ts := range targets {
		if len(targets) == 1 {
			errs[i] = s.readError(err)
		} else if err := s.src.Read(ctx, ts, counts[i]); err != nil {
			errs[i] = s.readError(err)
		}
		if errs[i] != "" {
			failed++
		}
	}
	if failed == len(targets) {
		srcErr = s.readError(err)
	}
	return counts, errs, srcErr
}

func (s *sampler) readError(err error) string {
	// The request's URL (with its long filter) says nothing the source's
	// name does not.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Sprintf("cannot read per-version traffic from %s: %v", s.srcName, err)
}

// errNoSource is shown when there is nothing to read rates from.
const errNoSource = "no traffic source: envoy_admin is not set, so per-version request and error rates are not available"

// decisions sums splitter_decisions_total by service and reason.
func (s *sampler) decisions() (map[[2]string]uint64, string) {
	if s.gather == nil {
		return nil, "no metrics registry"
	}
	families, err := s.gather.Gather()
	if err != nil {
		return nil, fmt.Sprintf("reading %s: %v", decisionsMetric, err)
	}
	out := map[[2]string]uint64{}
	for _, f := range families {
		if f.GetName() != decisionsMetric {
			continue
		}
		for _, m := range f.GetMetric() {
			var service, reason string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "service":
					service = l.GetValue()
				case "reason":
					reason = l.GetValue()
				}
			}
			out[[2]string{service, reason}] += uint64(m.GetCounter().GetValue())
		}
	}
	return out, ""
}

// reasonNames are the reasons a decision for a service can have (not
// "unmatched": that one has no service).
func reasonNames() []string {
	var out []string
	for _, r := range split.Reasons() {
		if r != split.ReasonUnmatched {
			out = append(out, r.String())
		}
	}
	return out
}

func (s *sampler) bucket(t time.Time) int64 { return t.UnixNano() / int64(s.width) }

// Traffic is one service's per-version requests and errors over the last
// Buckets sampling intervals.
type Traffic struct {
	// BucketSeconds is the width of one bucket; the arrays below hold
	// Buckets of them, oldest first, the last one ending at End (it is
	// still filling).
	BucketSeconds float64   `json:"bucket_seconds"`
	End           time.Time `json:"end"`
	// CoveredSeconds is how much of the span has been sampled (less than
	// Buckets x BucketSeconds for a while after a start or a change).
	CoveredSeconds float64 `json:"covered_seconds"`
	// Error says, in words, why there are no numbers (no source, Envoy
	// unreachable, a cluster Envoy does not have).
	Error    string           `json:"error,omitempty"`
	Versions []VersionTraffic `json:"versions"`
}

// VersionTraffic is one version's series and its rates over the last
// minute.
type VersionTraffic struct {
	Version  string   `json:"version"`
	Cluster  string   `json:"cluster"`
	Requests []uint64 `json:"requests"`
	Errors   []uint64 `json:"errors"`
	// RatePerSecond and ErrorPercent are over the last minute (or what of
	// it has been sampled).
	RatePerSecond float64 `json:"rate_per_second"`
	ErrorPercent  float64 `json:"error_percent"`
}

// Reason is one decision reason's count for a service.
type Reason struct {
	Reason string `json:"reason"`
	// Recent is over the console's span (Buckets intervals), Total since
	// the process started.
	Recent uint64 `json:"recent"`
	Total  uint64 `json:"total"`
}

// view returns service's traffic and reason mix as of now; ok is false
// before its first sample.
func (s *sampler) view(service string, now time.Time) (Traffic, []Reason, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.services[service]
	if ss == nil {
		return Traffic{}, nil, false
	}
	end := s.bucket(now)
	span := time.Duration(Buckets) * s.width
	covered := min(max(now.Sub(ss.first), 0), span)
	t := Traffic{
		BucketSeconds: s.width.Seconds(), End: time.Unix(0, (end+1)*int64(s.width)).UTC(),
		CoveredSeconds: covered.Seconds(), Error: ss.err, Versions: []VersionTraffic{},
	}
	rateBuckets := max(int64(rateSpan/s.width), 1)
	rateSecs := min(rateSpan, covered).Seconds()
	for _, vs := range ss.versions {
		v := VersionTraffic{Version: vs.version, Cluster: vs.cluster, Requests: make([]uint64, Buckets), Errors: make([]uint64, Buckets)}
		vs.requests.series(end, v.Requests)
		vs.errors.series(end, v.Errors)
		req, errs := vs.requests.sum(end-rateBuckets+1, end), vs.errors.sum(end-rateBuckets+1, end)
		if rateSecs > 0 {
			v.RatePerSecond = round2(float64(req) / rateSecs)
		}
		if req > 0 {
			v.ErrorPercent = round2(100 * float64(errs) / float64(req))
		}
		t.Versions = append(t.Versions, v)
	}
	var reasons []Reason
	for _, r := range reasonNames() {
		reasons = append(reasons, Reason{Reason: r, Recent: ss.reasons[r].sum(end-Buckets+1, end), Total: ss.totals[r]})
	}
	return t, reasons, true
}

// status is the sampler's own health for the page.
func (s *sampler) status() (srcErr, gathErr string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srcErr, s.gathErr, s.lastAt
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
