package module

import (
	"fmt"
	"runtime/debug"
	"slices"
	"sync/atomic"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/split"
)

// Status says what a Decide answered.
type Status int32

// The statuses; module/abi mirrors them in C.
const (
	// StatusOK: Result.Plan is the decision's plan.
	StatusOK Status = iota
	// StatusRetry: the headers were read for another table; read
	// Reads again and call once more (never answered twice in a row).
	StatusRetry
	// StatusNoConfig: no configuration is loaded; Result.Plan sends the
	// request to the stable route (route header removed).
	StatusNoConfig
	// StatusPanic: a panic was recovered; Result.Plan is as for
	// StatusNoConfig.
	StatusPanic
)

// The request results counted per thread and reported as
// stream_results_total{api="module"}.
const (
	resultOK = iota
	resultNoConfig
	resultPanic
	numResults
)

var resultNames = [numResults]string{adapter.ResultOK, adapter.ResultNoConfig, adapter.ResultPanic}

// resultCounts are one thread's request results; only that thread adds.
type resultCounts struct {
	n [numResults]atomic.Uint64
	_ [64]byte
}

// Request is one request's headers, as C read them. Values point into
// Envoy's header map: they are valid during the hook only, and Decide
// drops them before it returns.
type Request struct {
	sc     *scratch
	slot   int
	pooled bool
}

// Begin returns the request space of the Envoy worker thread with the
// given slot (a small number C gives each thread; negative or at least
// MaxThreads: a pooled one).
func (p *Process) Begin(slot int) Request {
	if slot >= 0 && slot < MaxThreads {
		sc := &p.scratch[slot]
		adapter.ResetRequest(&sc.req) // empty, unless a panic skipped Decide
		return Request{sc: sc, slot: slot}
	}
	return Request{sc: p.pool.Get().(*scratch), slot: MaxThreads, pooled: true}
}

// Add appends one header (a lower-case name and one value; a header with
// several values is added once per value, in order).
func (r Request) Add(name, value string) { adapter.AddHeader(&r.sc.req, name, value) }

// Result is Decide's answer.
type Result struct {
	Status Status
	// Plan is the encoded plan to apply (EncodePlan); nil for
	// StatusRetry. It is shared and must not be modified.
	Plan []byte
	// Pair is the counter pair of the decided version, -1 for none.
	Pair int32
	// Cookie is the Set-Cookie value the response of a request given a
	// fresh sticky key must carry (added in the response headers hook);
	// nil for every other request. It is the thread's buffer (a fresh one
	// for a pooled slot), valid until its next Decide: C copies it at once.
	Cookie []byte
}

// MaxCookieBytes bounds a Set-Cookie value (module/abi's SP_COOKIE_MAX): a
// cookie name of at most split.MaxHeaderNameLen, the key and the fixed
// attributes stay below it.
const MaxCookieBytes = 512

// Decide decides the request whose headers r holds, read for the header
// set readsID, and ends r. retried says the headers were read again after
// a StatusRetry: then Decide decides whatever was read. It does not
// allocate in steady state, and it recovers its own panics (StatusPanic,
// counted, logged, the request sent to the stable route).
func (p *Process) Decide(r Request, readsID uint32, retried bool, res *Result) {
	sc := r.sc
	defer p.end(r)
	run := p.run.Load()
	if run == nil {
		// No filter configuration yet: Envoy never calls a filter then.
		*res = Result{Status: StatusNoConfig, Pair: -1}
		return
	}
	defer func() {
		if v := recover(); v != nil {
			*res = Result{Status: StatusPanic, Plan: run.unrouted, Pair: -1}
			p.results[r.slot].n[resultPanic].Add(1)
			run.rec.Panic(API)
			run.log.Error("module decision panic recovered: the request goes to the stable route",
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	t := run.plane.Table()
	if t == nil {
		*res = Result{Status: StatusNoConfig, Plan: run.unrouted, Pair: -1}
		p.results[r.slot].n[resultNoConfig].Add(1)
		return
	}
	ts := p.cur.Load()
	if ts == nil || ts.table != t {
		ts = p.install(run, t)
	}
	if ts.readsID != readsID && !retried {
		*res = Result{Status: StatusRetry, Pair: -1}
		return
	}
	if p.faultHeader != "" {
		p.fault(&sc.req)
	}
	adapter.FinishRequest(&sc.req)
	ts.table.Decide(&sc.req, &sc.dec)
	run.rec.Decided(API, &sc.dec)
	res.Status, res.Plan, res.Pair, res.Cookie = StatusOK, *run.answers.Get(ts.table, &sc.dec), -1, nil
	if sc.dec.Assigned() {
		if r.pooled {
			// A pooled scratch goes back to the pool before C copies the
			// answer: the cookie must not live in it.
			res.Cookie = sc.dec.AppendSetCookie(nil)
		} else {
			sc.cookie = sc.dec.AppendSetCookie(sc.cookie[:0])
			res.Cookie = sc.cookie
		}
	}
	if s, v := sc.dec.Target(); s >= 0 && s < len(ts.pairs) && v < len(ts.pairs[s]) {
		res.Pair = ts.pairs[s][v]
	}
	p.results[r.slot].n[resultOK].Add(1)
}

// end drops the request's references into Envoy's memory.
func (p *Process) end(r Request) {
	adapter.ResetRequest(&r.sc.req)
	if r.pooled {
		p.pool.Put(r.sc)
	}
}

// fault panics when the request carries p.faultHeader.
func (p *Process) fault(req *split.Request) {
	for _, h := range req.Headers {
		if h.Name == p.faultHeader {
			panic("induced fault: the request carries " + p.faultHeader)
		}
	}
}

// install makes t's state current. It returns the state of the table in
// force, which is t unless t was replaced meanwhile (then the request is
// decided by the newer table).
func (p *Process) install(run *running, t *split.Table) *tableState {
	p.installMu.Lock()
	defer p.installMu.Unlock()
	if cur := run.plane.Table(); cur != nil {
		t = cur
	}
	if ts := p.cur.Load(); ts != nil && ts.table == t {
		return ts
	}
	reads := t.RequestHeaders()
	if p.faultHeader != "" {
		reads = append(reads, p.faultHeader)
	}
	if !slices.Equal(reads, p.reads) {
		p.readsID++
		p.reads = reads
		p.host.SetReads(p.readsID, reads)
		run.log.Info("request headers read per decision", "headers", reads)
	}
	ts := &tableState{table: t, readsID: p.readsID, pairs: p.pairs.forTable(t, run.log)}
	p.cur.Store(ts)
	return ts
}
