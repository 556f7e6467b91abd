package module

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/split"
)

// fakeHost is the C side of the library, in Go.
type fakeHost struct {
	mu       sync.Mutex
	readsID  uint32
	reads    []string
	fallback []byte
	counts   map[int32][NumClasses]uint64
	logs     []string
	// validating makes the host answer ValidationMode true.
	validating bool
}

func (h *fakeHost) SetReads(id uint32, names []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.readsID, h.reads = id, append([]string(nil), names...)
}

func (h *fakeHost) SetFallback(plan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fallback = plan
}

func (h *fakeHost) Concurrency() int { return 1 }

func (h *fakeHost) ValidationMode() bool { return h.validating }

func (h *fakeHost) Counts(pair int32) [NumClasses]uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[pair]
}

func (h *fakeHost) Log(level slog.Level, msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, level.String()+" "+msg)
}

func (h *fakeHost) current() (uint32, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.readsID, h.reads
}

const testConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id}
    rules:
      - name: beta-testers
        when: [{header: x-beta, exact: "true"}]
        version: v2
      - name: internal-ring
        when: [{cookie: ring, exact: internal}]
        version: v2
experiments:
  - name: default
    key: {cookie: sid}
    variants: {A: 50, B: 50}
    header: x-variant
`

// started is a Process on a config file with its admin API on a free
// loopback port.
type started struct {
	p       *Process
	host    *fakeHost
	cfgPath string
	admin   string
}

func start(t *testing.T, config string, extra ...string) *started {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "ready.json")
	fc := fmt.Sprintf(`{"config": %q, "admin_addr": "127.0.0.1:0", "ready_file": %q, "reload_debounce": "20ms"%s}`,
		cfgPath, ready, strings.Join(extra, ""))
	host := &fakeHost{counts: map[int32][NumClasses]uint64{}}
	p := NewProcess(host)
	if _, err := p.NewConfig("splitter", []byte(fc)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	data, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		AdminAddr string `json:"admin_addr"`
	}
	if err := json.Unmarshal(data, &info); err != nil || info.AdminAddr == "" {
		t.Fatalf("ready file %q: %v", data, err)
	}
	return &started{p: p, host: host, cfgPath: cfgPath, admin: info.AdminAddr}
}

// decide runs one request through the module as C does: read the
// published headers, decide, read again on StatusRetry.
func (s *started) decide(t testing.TB, slot int, hs []split.Header) Result {
	t.Helper()
	var res Result
	for attempt := range 2 {
		id, reads := s.host.current()
		r := s.p.Begin(slot)
		for _, name := range reads {
			for _, h := range hs {
				if h.Name == name {
					r.Add(h.Name, h.Value)
				}
			}
		}
		s.p.Decide(r, id, attempt > 0, &res)
		if res.Status != StatusRetry {
			return res
		}
		if attempt > 0 {
			t.Fatal("Decide answered StatusRetry twice")
		}
	}
	return res
}

func (s *started) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func load(t testing.TB, config string) *split.Table {
	t.Helper()
	tb, err := split.Load([]byte(config), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// requests are generated header sets, many with a header on two lines.
func requests(n int) [][]split.Header {
	r := rand.New(rand.NewPCG(3, 4))
	out := make([][]split.Header, n)
	for i := range out {
		hs := []split.Header{{Name: ":authority", Value: "api.example.com"}, {Name: ":path", Value: "/x"}, {Name: "accept", Value: "*/*"}}
		if r.IntN(3) > 0 {
			hs = append(hs, split.Header{Name: "x-user-id", Value: fmt.Sprint("user-", r.IntN(100))})
			if r.IntN(2) == 0 {
				hs = append(hs, split.Header{Name: "x-user-id", Value: fmt.Sprint("user-", r.IntN(100))})
			}
		}
		switch r.IntN(4) {
		case 0:
			hs = append(hs, split.Header{Name: "x-beta", Value: "true"})
		case 1:
			hs = append(hs, split.Header{Name: "x-beta", Value: "false"}, split.Header{Name: "x-beta", Value: "true"})
		}
		switch r.IntN(4) {
		case 0:
			hs = append(hs, split.Header{Name: "cookie", Value: fmt.Sprint("sid=s", r.IntN(50))})
		case 1:
			hs = append(hs, split.Header{Name: "cookie", Value: "a=b"}, split.Header{Name: "cookie", Value: "ring=internal; sid=s1"})
		}
		if r.IntN(5) == 0 {
			hs = append(hs, split.Header{Name: "x-route-version", Value: "v2"})
		}
		out[i] = hs
	}
	return out
}

// TestDecideWritesThePlanOfEveryHeader: for generated requests the module,
// reading only the headers the table needs, writes exactly the plan an
// adapter handed every header (as ext_proc is) writes.
func TestDecideWritesThePlanOfEveryHeader(t *testing.T) {
	s := start(t, testConfig)
	ref := load(t, testConfig)
	h := adapter.DefaultHeaders()
	reasons := map[string]int{}
	for i, hs := range requests(3000) {
		res := s.decide(t, 0, hs)
		if res.Status != StatusOK {
			t.Fatalf("request %d: status %d", i, res.Status)
		}
		var req split.Request
		for _, x := range hs {
			adapter.AddHeader(&req, x.Name, x.Value)
		}
		var d split.Decision
		ref.Decide(&req, &d)
		var want adapter.Plan
		h.PlanFor(&d, &want)
		remove, set, err := DecodePlan(res.Plan)
		if err != nil {
			t.Fatal(err)
		}
		if remove != want.Remove || !cmp.Equal(set, want.Set()) {
			t.Fatalf("request %d %v: module remove %q set %v; every header: remove %q set %v", i, hs, remove, set, want.Remove, want.Set())
		}
		reasons[d.Reason.String()]++
		if s, v := d.Target(); s != 0 || res.Pair != int32(v) {
			t.Fatalf("request %d: pair %d for %s/%s", i, res.Pair, d.Service, d.Version)
		}
	}
	if len(reasons) != 3 {
		t.Fatalf("reasons %v: the requests do not exercise every path", reasons)
	}
}

func TestUnmatchedRemovesTheRouteHeader(t *testing.T) {
	s := start(t, strings.Replace(testConfig, `hosts: ["*"]`, `hosts: [api]`, 1))
	res := s.decide(t, 1, []split.Header{{Name: ":authority", Value: "other"}, {Name: "x-beta", Value: "true"}})
	remove, set, err := DecodePlan(res.Plan)
	if err != nil || res.Status != StatusOK || remove != "x-route-version" ||
		!cmp.Equal(set, []split.Header{{Name: "x-route-reason", Value: "unmatched"}}) || res.Pair != -1 {
		t.Fatalf("status %d pair %d remove %q set %v err %v", res.Status, res.Pair, remove, set, err)
	}
}

func TestReadsFollowTheTable(t *testing.T) {
	s := start(t, testConfig)
	// Before any request nothing is published: the first request reads
	// nothing, is asked to read again, and is decided on the second read.
	if id, reads := s.host.current(); id != 0 || reads != nil {
		t.Fatalf("published before any request: %d %v", id, reads)
	}
	var res Result
	s.p.Decide(s.p.Begin(0), 0, false, &res)
	if res.Status != StatusRetry {
		t.Fatalf("status %d, want StatusRetry for headers read before the table's set was published", res.Status)
	}
	id, reads := s.host.current()
	if want := []string{":authority", "x-beta", "cookie", "x-user-id"}; id != 1 || !cmp.Equal(reads, want) {
		t.Fatalf("published %d %v, want 1 %v", id, reads, want)
	}
	// A second call with the same stale set decides anyway.
	s.p.Decide(s.p.Begin(0), 0, true, &res)
	if res.Status != StatusOK {
		t.Fatalf("retried status %d", res.Status)
	}

	// A reload that changes only weights keeps the set; one with a new
	// header publishes a new one.
	reload := func(config string) {
		t.Helper()
		if err := os.WriteFile(s.cfgPath, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.p.Plane().Reload(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	reload(strings.Replace(testConfig, "{v1: 80, v2: 20}", "{v1: 50, v2: 50}", 1))
	if res := s.decide(t, 0, nil); res.Status != StatusOK {
		t.Fatal(res.Status)
	}
	if id, _ := s.host.current(); id != 1 {
		t.Fatalf("a weights-only reload published reads %d", id)
	}
	reload(strings.Replace(testConfig, "{header: x-beta, exact: \"true\"}", "{header: x-canary, present: true}", 1))
	res = s.decide(t, 0, []split.Header{{Name: ":authority", Value: "a"}, {Name: "x-canary", Value: ""}})
	if id, reads := s.host.current(); id != 2 || !cmp.Equal(reads, []string{":authority", "x-canary", "cookie", "x-user-id"}) {
		t.Fatalf("after the reload: %d %v", id, reads)
	}
	if _, set, _ := DecodePlan(res.Plan); set[0].Value != "v2" || set[1].Value != "header_match" {
		t.Fatalf("the new rule did not apply: %v", set)
	}
}

func TestNoConfigurationSendsToStableAndSaysWhy(t *testing.T) {
	s := start(t, "services: [this is not valid")
	res := s.decide(t, 0, []split.Header{{Name: ":authority", Value: "a"}})
	remove, set, _ := DecodePlan(res.Plan)
	if res.Status != StatusNoConfig || remove != "x-route-version" || len(set) != 1 || set[0].Value != "unmatched" {
		t.Fatalf("status %d remove %q set %v", res.Status, remove, set)
	}
	if fbRemove, _, _ := DecodePlan(s.host.fallback); fbRemove != "x-route-version" {
		t.Fatalf("fallback plan removes %q", fbRemove)
	}
	code, body := s.get(t, "/v1/services")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, s.cfgPath) {
		t.Fatalf("GET /v1/services: %d %s; want 503 naming the file", code, body)
	}
	// Fixing the file takes effect without a restart.
	if err := os.WriteFile(s.cfgPath, []byte(testConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.decide(t, 0, nil).Status != StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the fixed file was not loaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPanicIsRecoveredCountedAndUnrouted(t *testing.T) {
	s := start(t, testConfig)
	s.p.faultHeader = "x-fault"
	s.p.cur.Store(nil) // the fault header joins the reads on the next install
	res := s.decide(t, 2, []split.Header{{Name: ":authority", Value: "a"}, {Name: "x-fault", Value: "1"}})
	remove, set, _ := DecodePlan(res.Plan)
	if res.Status != StatusPanic || remove != "x-route-version" || len(set) != 1 || set[0].Value != "unmatched" || res.Pair != -1 {
		t.Fatalf("status %d remove %q set %v pair %d", res.Status, remove, set, res.Pair)
	}
	if res := s.decide(t, 2, []split.Header{{Name: ":authority", Value: "a"}}); res.Status != StatusOK {
		t.Fatalf("the next request: status %d", res.Status)
	}
	_, body := s.get(t, "/metrics")
	if !strings.Contains(body, "splitter_panics_total 1\n") {
		t.Fatalf("panics_total is not 1:\n%s", grep(body, "panics"))
	}
	waitMetric(t, s, `splitter_stream_results_total{api="module",result="panic"} 1`)
	waitMetric(t, s, `splitter_stream_results_total{api="module",result="ok"} 1`)
}

func grep(body, word string) string {
	var out []string
	for l := range strings.Lines(body) {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

func waitMetric(t *testing.T, s *started, line string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := s.get(t, "/metrics")
		if strings.Contains(body, line+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in /metrics:\n%s", line, grep(body, "splitter_"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// quiesce stops the control plane's goroutines (the admin server, the
// file watch, the rollout ticks, the metrics flush), which allocate on
// their own: testing.AllocsPerRun counts every goroutine's allocations.
// Decisions go on from the table in force.
func (s *started) quiesce(t *testing.T) {
	t.Helper()
	if err := s.p.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	s := start(t, testConfig)
	hs := []split.Header{{Name: ":authority", Value: "a"}, {Name: "x-user-id", Value: "u1"}, {Name: "cookie", Value: "sid=s3"}}
	s.decide(t, 3, hs) // publishes the reads and builds the answer
	id, _ := s.host.current()
	s.quiesce(t)
	var res Result
	if n := testing.AllocsPerRun(1000, func() {
		r := s.p.Begin(3)
		for _, h := range hs {
			r.Add(h.Name, h.Value)
		}
		s.p.Decide(r, id, false, &res)
	}); n != 0 {
		t.Fatalf("%v allocations per decision", n)
	}
	if res.Status != StatusOK {
		t.Fatal(res.Status)
	}
}

// TestConcurrentWorkersAndReloads runs several worker slots (and pooled
// ones) while the configuration changes under them (run with -race).
func TestConcurrentWorkersAndReloads(t *testing.T) {
	s := start(t, testConfig)
	reqs := requests(500)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 6 {
		slot := w
		if w >= 4 {
			slot = -1 // beyond MaxThreads: pooled
		}
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if res := s.decide(t, slot, reqs[i%len(reqs)]); res.Status != StatusOK {
					t.Errorf("status %d", res.Status)
					return
				}
			}
		})
	}
	for i := range 10 {
		cfg := strings.Replace(testConfig, "{v1: 80, v2: 20}", fmt.Sprintf("{v1: %d, v2: %d}", 90-i, 10+i), 1)
		if i%2 == 1 {
			cfg = strings.Replace(cfg, "x-beta", "x-beta-"+fmt.Sprint(i), 1)
		}
		if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.p.Plane().Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

func TestSecondConfig(t *testing.T) {
	s := start(t, testConfig)
	fc := func(extra string) []byte {
		return fmt.Appendf(nil, `{"config": %q, "admin_addr": "127.0.0.1:0", "ready_file": %q, "reload_debounce": "20ms"%s}`,
			s.cfgPath, filepath.Join(filepath.Dir(s.cfgPath), "ready.json"), extra)
	}
	// The same settings, written differently, share the control plane.
	if _, err := s.p.NewConfig("second", fc(` , "route_header": "X-Route-Version"`)); err != nil {
		t.Fatalf("same settings: %v", err)
	}
	_, err := s.p.NewConfig("third", fc(`, "route_header": "x-other"`))
	if err == nil || !strings.Contains(err.Error(), `"third" differs`) {
		t.Fatalf("other settings: %v, want an error", err)
	}
	if _, err := s.p.NewConfig("bad", []byte(`{"nope": 1}`)); err == nil || !strings.Contains(err.Error(), "nope: unknown key") {
		t.Fatalf("bad filter_config: %v", err)
	}
	// The file's top-level scalars change (and one becomes invalid): an
	// unchanged filter_config is still the same, since what Envoy gives is
	// compared, not the file as it is now.
	for _, scalars := range []string{"log_level: debug\n", "log_level: bogus\n"} {
		if err := os.WriteFile(s.cfgPath, []byte(scalars+testConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.p.NewConfig("after the file changed", fc("")); err != nil {
			t.Fatalf("after %q in the file: %v", scalars, err)
		}
	}
}

func TestSignalsAndResponsesMetric(t *testing.T) {
	s := start(t, testConfig)
	s.decide(t, 0, nil) // numbers the pairs: api/v1 = 0, api/v2 = 1
	s.host.mu.Lock()
	// Aborted streams (the client went away first) are neither requests
	// nor errors; resets (an upstream failure mid-response) are both.
	s.host.counts[0] = [NumClasses]uint64{ClassReset: 1, 2: 97, 4: 3, ClassAborted: 40}
	s.host.counts[1] = [NumClasses]uint64{2: 10, 5: 5, ClassAborted: 1000}
	s.host.mu.Unlock()
	targets := []signals.Target{{Service: "api", Version: "v1"}, {Service: "api", Version: "v2"}, {Service: "api", Version: "v9"}}
	out := make([]signals.Counts, len(targets))
	if err := s.p.pairs.Read(t.Context(), targets, out); err != nil {
		t.Fatal(err)
	}
	want := []signals.Counts{{Requests: 101, Errors: 1}, {Requests: 15, Errors: 5}, {}}
	if !cmp.Equal(out, want) {
		t.Fatalf("Read = %v, want %v", out, want)
	}
	_, body := s.get(t, "/metrics")
	for _, l := range []string{
		`splitter_responses_total{api="module",class="2xx",service="api",version="v1"} 97`,
		`splitter_responses_total{api="module",class="reset",service="api",version="v1"} 1`,
		`splitter_responses_total{api="module",class="5xx",service="api",version="v2"} 5`,
		`splitter_responses_total{api="module",class="aborted",service="api",version="v2"} 1000`,
	} {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("no %s in /metrics:\n%s", l, grep(body, "responses_total"))
		}
	}
}

func TestClassOf(t *testing.T) {
	for status, want := range map[int]int{0: ClassReset, 99: ClassReset, 100: 1, 204: 2, 302: 3, 404: 4, 503: 5, 600: ClassReset} {
		if got := ClassOf(status); got != want {
			t.Errorf("ClassOf(%d) = %d, want %d", status, got, want)
		}
	}
}

func TestEncodePlanRoundTrip(t *testing.T) {
	tb := load(t, testConfig)
	for _, hs := range requests(50) {
		var req split.Request
		for _, x := range hs {
			adapter.AddHeader(&req, x.Name, x.Value)
		}
		var d split.Decision
		tb.Decide(&req, &d)
		for _, dec := range []*split.Decision{&d, nil} {
			var p adapter.Plan
			adapter.DefaultHeaders().PlanFor(dec, &p)
			remove, set, err := DecodePlan(EncodePlan(&p))
			if err != nil || remove != p.Remove || !cmp.Equal(set, p.Set()) {
				t.Fatalf("%+v: decoded %q %v %v", p, remove, set, err)
			}
		}
	}
	for _, bad := range [][]byte{nil, {1}, {1, 1, 5, 0, 0, 0, 'a'}, {0, 9}, {1, 7, 0, 0, 0, 0}} {
		if _, _, err := DecodePlan(bad); err == nil {
			t.Errorf("DecodePlan(%v) accepted", bad)
		}
	}
}
