package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/fleet"
)

// Recorder records a pass: the admin writes of the writers, each
// replica's own log, its status sampled, every change in etcd, the
// recorder's linearizable reads, and every request through the Envoys.
type Recorder struct {
	bed  *Bed
	rng  *rand.Rand
	http *http.Client

	mu      sync.Mutex
	h       History
	nextPct int
	etcd    map[int64][]KV // by revision, from any member's watch
	seen    map[string]bool
	fromRev int64

	stop, stopWriters context.CancelFunc
	wg, writers       sync.WaitGroup
	// writers pauses the writers (between passes of a fault that needs a
	// quiet fleet, none yet); traffic counts.
	byEnvoy map[string]int
}

// Record starts recording; Finish stops it and returns the history.
func Record(ctx context.Context, b *Bed, seed uint64) (*Recorder, error) {
	ctx, cancel := context.WithCancel(ctx)
	rec := &Recorder{
		bed: b, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), stop: cancel,
		http:    &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		etcd:    map[int64][]KV{},
		seen:    map[string]bool{},
		byEnvoy: map[string]int{},
	}
	rec.h = History{
		Prefix: prefix, Start: time.Now(), Stable: map[string]string{"api": "v1"},
		Logs: map[string][]fleet.Event{}, Gaps: map[string]int{}, Invalid: map[string]string{},
		Bounds: DefaultBounds(), Traffic: Traffic{ByEnvoy: map[string]int{}},
	}
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := b.Client.Get(sctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	scancel()
	if err != nil {
		cancel()
		return nil, err
	}
	rec.fromRev = resp.Header.Revision
	// The state at the start (the election's keys, among others): what
	// the history's changes apply to.
	sctx, scancel = context.WithTimeout(ctx, 5*time.Second)
	start, err := b.Client.Get(sctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rec.fromRev))
	scancel()
	if err != nil {
		cancel()
		return nil, err
	}
	for _, kv := range start.Kvs {
		rec.h.Initial = append(rec.h.Initial, KV{Rev: kv.ModRevision, Key: string(kv.Key), Value: kv.Value, CreateRev: kv.CreateRevision, Lease: kv.Lease, Seen: rec.h.Start})
	}
	for i, m := range b.Members {
		rec.wg.Go(func() { rec.watchMember(ctx, i, m) })
	}
	for _, r := range b.Replicas {
		rec.wg.Go(func() { rec.followLog(ctx, r) })
		rec.wg.Go(func() { rec.look(ctx, r) })
		for w := range 2 {
			rec.wg.Go(func() { rec.traffic(ctx, r, w) })
		}
	}
	wctx, wcancel := context.WithCancel(ctx)
	rec.stopWriters = wcancel
	for i, r := range b.Replicas[:2] {
		rec.writers.Go(func() { rec.write(wctx, fmt.Sprintf("w%d", i), r) })
	}
	rec.wg.Go(func() { rec.read(ctx) })
	return rec, nil
}

// Fault records a fault.
func (rec *Recorder) Fault(f Fault) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.h.Faults = append(rec.h.Faults, f)
}

// Invalid records an invalid document written into etcd.
func (rec *Recorder) Invalid(sha, why string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.h.Invalid[sha] = why
}

// Note adds a line to what the rollout fault observed.
func (rec *Recorder) Note(line string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.h.Rollout = append(rec.h.Rollout, line)
}

// Finish stops recording, reads the replicas' logs to their end, and
// returns the history.
func (rec *Recorder) Finish(ctx context.Context) *History {
	rec.stopWriters()
	rec.writers.Wait()
	end := time.Now()
	// Let the logs and the watches catch up with the last writes.
	sleepCtx(ctx, 1500*time.Millisecond)
	rec.stop()
	rec.wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	h := rec.h
	h.End = end
	var revs []int64
	for rev := range rec.etcd {
		revs = append(revs, rev)
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	for _, rev := range revs {
		h.Etcd = append(h.Etcd, rec.etcd[rev]...)
	}
	// Every revision after the start is under the prefix (the cluster is
	// the bed's alone), so the history has no hole.
	if n := len(revs); n > 0 {
		for want, i := rec.fromRev+1, 0; want <= revs[n-1]; want++ {
			for i < n && revs[i] < want {
				i++
			}
			if i >= n || revs[i] != want {
				h.EtcdGaps = append(h.EtcdGaps, want)
			}
		}
	}
	sort.Slice(h.Writes, func(i, j int) bool { return h.Writes[i].ID < h.Writes[j].ID })
	sort.Slice(h.Looks, func(i, j int) bool { return h.Looks[i].At.Before(h.Looks[j].At) })
	h.Traffic.ByEnvoy = rec.byEnvoy
	return &h
}

// watchMember follows every change under the prefix through one member,
// resuming after the last revision it saw.
func (rec *Recorder) watchMember(ctx context.Context, i int, c *clientv3.Client) {
	next := rec.fromRev + 1
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range c.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(next)) {
			if resp.Err() != nil || resp.Canceled {
				break
			}
			now := time.Now()
			rec.mu.Lock()
			for _, ev := range resp.Events {
				kv := KV{Rev: ev.Kv.ModRevision, Key: string(ev.Kv.Key), Deleted: ev.Type == mvccpb.DELETE,
					Value: ev.Kv.Value, CreateRev: ev.Kv.CreateRevision, Lease: ev.Kv.Lease, Seen: now}
				id := fmt.Sprintf("%d %s", kv.Rev, kv.Key)
				if !rec.seen[id] {
					rec.seen[id] = true
					rec.etcd[kv.Rev] = append(rec.etcd[kv.Rev], kv)
				}
				next = max(next, kv.Rev+1)
			}
			rec.mu.Unlock()
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// followLog reads r's log as it grows (long poll).
func (rec *Recorder) followLog(ctx context.Context, r *Replica) {
	var after uint64
	for ctx.Err() == nil {
		var l fleet.EventLog
		err := rec.get(ctx, r.AdminURL(fmt.Sprintf("/v1/fleet/log?after=%d&wait=5s", after)), &l)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		rec.mu.Lock()
		if l.FirstSeq > after+1 {
			rec.h.Gaps[r.Name] += int(l.FirstSeq - after - 1)
		}
		rec.h.Logs[r.Name] = append(rec.h.Logs[r.Name], l.Events...)
		rec.mu.Unlock()
		if n := len(l.Events); n > 0 {
			after = l.Events[n-1].Seq
		}
	}
	// What was logged after the last read.
	fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var l fleet.EventLog
	if rec.get(fctx, r.AdminURL(fmt.Sprintf("/v1/fleet/log?after=%d", after)), &l) == nil {
		rec.mu.Lock()
		rec.h.Logs[r.Name] = append(rec.h.Logs[r.Name], l.Events...)
		rec.mu.Unlock()
	}
}

// look samples r's status every 100 ms, as an operator's poll would.
func (rec *Recorder) look(ctx context.Context, r *Replica) {
	for ctx.Err() == nil {
		st, err := r.status(ctx)
		at := time.Now()
		if err == nil {
			rec.mu.Lock()
			rec.h.Looks = append(rec.h.Looks, Look{Replica: r.Name, At: at, Connected: st.Connected, Applied: st.AppliedRevision})
			rec.mu.Unlock()
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// write sets api's canary on r again and again, each time to a share no
// other write of the pass uses, and records each call.
func (rec *Recorder) write(ctx context.Context, name string, r *Replica) {
	for ctx.Err() == nil {
		rec.mu.Lock()
		rec.nextPct++
		id := rec.nextPct
		pause := 50*time.Millisecond + time.Duration(rec.rng.IntN(100))*time.Millisecond
		rec.mu.Unlock()
		// 1.00 .. 98.99 by hundredths: unique for 9,800 writes.
		pct := float64(100+(id*37)%9800) / 100
		w := Write{ID: id, Client: name, Replica: r.Name, Service: "api", Percent: pct, Call: time.Now()}
		body, _ := json.Marshal(map[string]float64{"percentage": pct})
		req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPut, r.AdminURL("/v1/services/api/canary"), bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := rec.http.Do(req)
		w.Return = time.Now()
		if err != nil {
			w.Error = err.Error()
		} else {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			w.Status = resp.StatusCode
			var ans struct {
				Revision int64  `json:"revision"`
				Applied  *bool  `json:"applied"`
				Error    string `json:"error"`
			}
			_ = json.Unmarshal(data, &ans)
			w.Revision, w.Applied, w.Error = ans.Revision, ans.Applied == nil || *ans.Applied, ans.Error
			if !w.Acked() && w.Error == "" {
				w.Error = strings.TrimSpace(string(data))
			}
		}
		rec.mu.Lock()
		rec.h.Writes = append(rec.h.Writes, w)
		rec.mu.Unlock()
		sleepCtx(ctx, pause)
	}
}

// read reads api's override key in etcd (linearizable), each time through
// the next member, every 50 ms.
func (rec *Recorder) read(ctx context.Context) {
	key := rec.h.overrideKey("api")
	for i := 0; ctx.Err() == nil; i++ {
		c := rec.bed.Members[i%len(rec.bed.Members)]
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		call := time.Now()
		resp, err := c.Get(rctx, key)
		ret := time.Now()
		cancel()
		if err == nil {
			r := Read{Call: call, Return: ret, Key: key}
			if len(resp.Kvs) > 0 {
				r.Value, r.Rev = canaryOf(resp.Kvs[0].Value, "v1"), resp.Kvs[0].ModRevision
			}
			rec.mu.Lock()
			rec.h.Reads = append(rec.h.Reads, r)
			rec.mu.Unlock()
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// traffic sends requests through r's Envoy, api and shop in turn, each
// with its own user, and keeps every failure. An answer from the canary's
// injected fault (the rollout fault's failing canary) is counted apart.
func (rec *Recorder) traffic(ctx context.Context, r *Replica, worker int) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	defer client.CloseIdleConnections()
	hosts := []string{"api.example.com", "shop.example.com"}
	for i := 0; ctx.Err() == nil; i++ {
		host := hosts[i%2]
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.Envoy.URL("/"), nil)
		if err != nil {
			return
		}
		req.Host = host
		req.Header.Set("x-user-id", fmt.Sprintf("u-%d-%d-%d", worker, i, rec.rngInt()))
		at := time.Now()
		resp, err := client.Do(req)
		if ctx.Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return
		}
		fail := Request{Envoy: r.Name, Host: host, At: at}
		injected := false
		if err != nil {
			fail.Error = err.Error()
		} else {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			fail.Status = resp.StatusCode
			if resp.StatusCode != http.StatusOK {
				fail.Error = strings.TrimSpace(string(data))
				injected = strings.Contains(fail.Error, "injected fault")
			}
		}
		rec.mu.Lock()
		rec.h.Traffic.Total++
		rec.byEnvoy[r.Name]++
		switch {
		case fail.Status == http.StatusOK:
		case injected:
			rec.h.Traffic.Injected++
		default:
			rec.h.Traffic.Failed = append(rec.h.Traffic.Failed, fail)
		}
		rec.mu.Unlock()
		sleepCtx(ctx, 5*time.Millisecond)
	}
}

func (rec *Recorder) rngInt() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.rng.IntN(1 << 30)
}

func (rec *Recorder) get(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := rec.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
