// Package fleetprop measures fleet propagation: from an admin change on one
// replica until the new weights are applied on all N replicas, through a
// real etcd server (tools/etcd, fsync on, as a production member has it).
//
// Two setups:
//   - processes: N splitter processes in fleet mode; the change is an
//     admin API call (PUT /v1/services/api/canary) on the first, and every
//     replica's admin API is polled every PollInterval until it shows the
//     new weights (the figure includes up to one poll interval).
//   - watchers: N fleet sources in this process, each with its own etcd
//     client (its own connection, watch, lease and replica record, as N
//     replicas have), the change made through the first one's write path
//     (what the admin API calls); each store's swap hook stamps the moment
//     the new revision is in force, so nothing is polled.
package fleetprop

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trafficsplit/splitter/internal/fleet"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// Config is one benchmark run.
type Config struct {
	SplitterBin  string
	EtcdBin      string
	Changes      int           // changes per setup (default 100)
	Processes    int           // N of the processes setup (default 3)
	Watchers     int           // N of the watchers setup (default 100)
	PollInterval time.Duration // processes setup (default 1ms)
	Dir          string        // work directory (default: a temporary one)
	Logger       *slog.Logger
}

// Setup is the result of one setup.
type Setup struct {
	Name     string `json:"name"`
	Replicas int    `json:"replicas"`
	Changes  int    `json:"changes"`
	// Writer: from the call until it returned (commit, then applied on
	// the writer). All: until the last of the N replicas applied it.
	WriterP50ms float64 `json:"writer_p50_ms"`
	WriterP99ms float64 `json:"writer_p99_ms"`
	AllP50ms    float64 `json:"all_p50_ms"`
	AllP99ms    float64 `json:"all_p99_ms"`
	AllMaxms    float64 `json:"all_max_ms"`
	Note        string  `json:"note"`
}

// Result is the whole benchmark.
type Result struct {
	Machine string  `json:"machine"`
	Etcd    string  `json:"etcd"`
	Setups  []Setup `json:"setups"`
}

const document = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 90, v2: 10}
`

// Run runs both setups.
func Run(ctx context.Context, c Config) (*Result, error) {
	if c.Changes <= 0 {
		c.Changes = 100
	}
	if c.Processes <= 0 {
		c.Processes = 3
	}
	if c.Watchers <= 0 {
		c.Watchers = 100
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Dir == "" {
		dir, err := os.MkdirTemp("", "fleetprop-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		c.Dir = dir
	}
	res := &Result{Etcd: "etcd 3.7.3 (tools/etcd), one member on loopback, fsync on"}
	p, err := runProcesses(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("processes: %w", err)
	}
	res.Setups = append(res.Setups, *p)
	w, err := runWatchers(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("watchers: %w", err)
	}
	res.Setups = append(res.Setups, *w)
	return res, nil
}

func startEtcd(ctx context.Context, c Config, name string) (*testbed.Bed, *testbed.Etcd, error) {
	bed := testbed.New(filepath.Join(c.Dir, name), c.Logger)
	if err := os.MkdirAll(bed.Dir, 0o755); err != nil {
		return nil, nil, err
	}
	e, err := bed.StartEtcd(ctx, c.EtcdBin, testbed.EtcdOptions{Fsync: true})
	if err != nil {
		bed.Close()
		return nil, nil, err
	}
	cl, err := fleet.NewClient(fleet.ClientOptions{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		bed.Close()
		return nil, nil, err
	}
	defer cl.Close()
	if _, err := fleet.PushConfig(ctx, cl, fleet.Keys{Prefix: "/splitter/"}, []byte(document), -1); err != nil {
		bed.Close()
		return nil, nil, err
	}
	return bed, e, nil
}

// percent returns the i-th canary value: never the same twice in a row.
func percent(i int) float64 { return float64(11 + i%80) }

func runProcesses(ctx context.Context, c Config) (*Setup, error) {
	bed, e, err := startEtcd(ctx, c, "processes")
	if err != nil {
		return nil, err
	}
	defer bed.Close()
	var reps []*testbed.Splitter
	for i := range c.Processes {
		s, err := bed.StartSplitter(ctx, c.SplitterBin, "", "--log-level", "warn",
			"--etcd-endpoints", e.Endpoint, "--node-id", fmt.Sprintf("replica-%d", i))
		if err != nil {
			return nil, err
		}
		reps = append(reps, s)
	}
	var writer, all []time.Duration
	for i := range c.Changes {
		pct := percent(i)
		start := time.Now()
		var ans map[string]any
		if err := reps[0].Admin(ctx, http.MethodPut, "/v1/services/api/canary", map[string]float64{"percentage": pct}, &ans); err != nil {
			return nil, err
		}
		writer = append(writer, time.Since(start))
		var wg sync.WaitGroup
		errs := make([]error, len(reps))
		for j, s := range reps[1:] {
			wg.Go(func() { errs[j] = poll(ctx, s, pct, c.PollInterval) })
		}
		wg.Wait()
		all = append(all, time.Since(start))
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
	}
	return summarise("processes", c.Processes, writer, all,
		fmt.Sprintf("admin API call on replica 1; the others' admin API polled every %v", c.PollInterval)), nil
}

// poll waits until s serves api with v2 at pct.
func poll(ctx context.Context, s *testbed.Splitter, pct float64, every time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var v struct {
			Weights map[string]float64 `json:"weights"`
		}
		if err := s.Admin(ctx, http.MethodGet, "/v1/services/api", nil, &v); err != nil {
			return err
		}
		if v.Weights["v2"] == pct {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never applied v2=%v: %w", s.Name, pct, ctx.Err())
		case <-time.After(every):
		}
	}
}

// stamp records when each revision was published in one store.
type stamp struct {
	mu   sync.Mutex
	at   map[int64]time.Time
	cond chan struct{}
}

func (s *stamp) onSwap(snap *store.Snapshot) {
	s.mu.Lock()
	if _, ok := s.at[snap.Revision]; !ok {
		s.at[snap.Revision] = time.Now()
	}
	close(s.cond)
	s.cond = make(chan struct{})
	s.mu.Unlock()
}

// wait returns when the store first had rev or later.
func (s *stamp) wait(ctx context.Context, rev int64) (time.Time, error) {
	for {
		s.mu.Lock()
		var first time.Time
		for r, at := range s.at {
			if r >= rev && (first.IsZero() || at.Before(first)) {
				first = at
			}
		}
		ch := s.cond
		s.mu.Unlock()
		if !first.IsZero() {
			return first, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

func runWatchers(ctx context.Context, c Config) (*Setup, error) {
	bed, e, err := startEtcd(ctx, c, "watchers")
	if err != nil {
		return nil, err
	}
	defer bed.Close()
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	srcs := make([]*fleet.Source, c.Watchers)
	stamps := make([]*stamp, c.Watchers)
	for i := range c.Watchers {
		st := &stamp{at: map[int64]time.Time{}, cond: make(chan struct{})}
		s, err := store.New(store.Options{OnSwap: st.onSwap})
		if err != nil {
			return nil, err
		}
		src := fleet.New(fleet.Options{
			Client: fleet.ClientOptions{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second},
			Prefix: "/splitter/", NodeID: fmt.Sprintf("watcher-%d", i), Store: s,
		})
		if err := src.Start(ctx); err != nil {
			return nil, err
		}
		defer src.Close()
		srcs[i], stamps[i] = src, st
		wg.Go(func() { _ = src.Run(rctx) })
	}
	// Let every watcher connect and register before measuring.
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range srcs {
		for !s.Status().Connected {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("watchers did not all connect")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second)
	var writer, all []time.Duration
	for i := range c.Changes {
		start := time.Now()
		ch, err := srcs[0].SetCanary(ctx, "api", int(percent(i)*100), "bench")
		if err != nil {
			return nil, err
		}
		writer = append(writer, time.Since(start))
		var last time.Time
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		for j, st := range stamps {
			at, err := st.wait(wctx, ch.Revision)
			if err != nil {
				wcancel()
				return nil, fmt.Errorf("watcher %d never applied revision %d: %w", j, ch.Revision, err)
			}
			if at.After(last) {
				last = at
			}
		}
		wcancel()
		all = append(all, last.Sub(start))
	}
	return summarise("watchers", c.Watchers, writer, all,
		"fleet write path (what the admin API calls) on watcher 1; each store's swap stamped, no polling; all in one process"), nil
}

func summarise(name string, n int, writer, all []time.Duration, note string) *Setup {
	return &Setup{
		Name: name, Replicas: n, Changes: len(all),
		WriterP50ms: quantile(writer, 0.50), WriterP99ms: quantile(writer, 0.99),
		AllP50ms: quantile(all, 0.50), AllP99ms: quantile(all, 0.99), AllMaxms: quantile(all, 1),
		Note: note,
	}
}

// quantile returns the q-quantile of ds in milliseconds (nearest rank).
func quantile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s)) + 0.5)
	i = min(max(i-1, 0), len(s)-1)
	return float64(s[i].Microseconds()) / 1000
}

// Render writes the fleet section of BENCH.md.
func Render(b *strings.Builder, r *Result) {
	b.WriteString("## Fleet: propagation of one admin change through etcd\n\n")
	fmt.Fprintf(b, "From an admin change on one replica until the new weights are in force on all N replicas "+
		"(`make bench-fleet`, package `bench/fleetprop`), over %d changes per setup; %s. Machine: %s.\n\n",
		firstChanges(r), r.Etcd, r.Machine)
	b.WriteString("| setup | N | changes | writer answered p50 / p99 ms | all N applied p50 ms | p99 ms | max ms | how |\n")
	b.WriteString("|---|---:|---:|---|---:|---:|---:|---|\n")
	for _, s := range r.Setups {
		fmt.Fprintf(b, "| %s | %d | %d | %.1f / %.1f | %.1f | %.1f | %.1f | %s |\n",
			s.Name, s.Replicas, s.Changes, s.WriterP50ms, s.WriterP99ms, s.AllP50ms, s.AllP99ms, s.AllMaxms, s.Note)
	}
	b.WriteString("\nThe goal is p99 under 1 s at N = 100. For comparison, the ConfigMap path (a file mounted " +
		"from a ConfigMap, docs/deployment.md) waits for the kubelet's sync period (one minute by default) plus its " +
		"ConfigMap cache TTL before the file changes in the pod, then the splitter's debounce (200 ms).\n\n")
}

func firstChanges(r *Result) int {
	if len(r.Setups) == 0 {
		return 0
	}
	return r.Setups[0].Changes
}

// MarshalIndent is a helper for the results file.
func (r *Result) MarshalIndent() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }
