package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// Timing of a pass. The short form (one pass inside `make test`) keeps
// every fault but shortens the outages that do not need their length.
type Timing struct {
	Warmup   time.Duration // traffic and writes before the first fault
	Settle   time.Duration // after each heal, before the next fault
	KillFor  time.Duration // the etcd leader stays dead this long
	StopFor  time.Duration // a member stays stopped (SIGSTOP) this long
	CutFor   time.Duration // a replica stays cut off from etcd this long
	Rollback time.Duration // how long the rollout fault waits for the rollback
}

// ShortTiming is the short form's.
func ShortTiming() Timing {
	return Timing{Warmup: 3 * time.Second, Settle: 3 * time.Second, KillFor: 4 * time.Second,
		StopFor: 10 * time.Second, CutFor: 15 * time.Second, Rollback: 30 * time.Second}
}

// LongTiming is the long form's: the outages.
func LongTiming() Timing {
	return Timing{Warmup: 5 * time.Second, Settle: 5 * time.Second, KillFor: 10 * time.Second,
		StopFor: 10 * time.Second, CutFor: 30 * time.Second, Rollback: 30 * time.Second}
}

// Options of a pass.
type Options struct {
	Seed   uint64
	Timing Timing
	// Bounds are checked; zero: DefaultBounds.
	Bounds Bounds
	Log    *slog.Logger
}

// Pass is one pass: every fault in turn, under traffic and writes.
type Pass struct {
	Seed        uint64
	Took        time.Duration
	Dir         string
	History     *History
	Results     []Result
	Convergence []Convergence
}

// Held says whether every check held.
func (p *Pass) Held() bool {
	for _, r := range p.Results {
		if !r.Held {
			return false
		}
	}
	return true
}

// RunPass starts a bed in tb, records while it injects every fault in
// turn, and checks the history.
func RunPass(ctx context.Context, tb *testbed.Bed, bin Binaries, o Options) (*Pass, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Bounds == (Bounds{}) {
		o.Bounds = DefaultBounds()
	}
	began := time.Now()
	b, err := StartBed(ctx, tb, bin)
	if err != nil {
		return nil, fmt.Errorf("bed: %w", err)
	}
	o.Log.Info("bed up", "took", time.Since(began).Round(time.Millisecond))
	rec, err := Record(ctx, b, o.Seed)
	if err != nil {
		return nil, fmt.Errorf("recorder: %w", err)
	}
	p := &pass{b: b, rec: rec, o: o, t: o.Timing}
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"kill the etcd leader", p.killLeader},
		{"stop a member", p.stopMember},
		{"compaction, defragmentation, invalid documents", p.store},
		{"cut a replica off", p.cutReplica},
		{"cut the rollout leader off while its canary fails", p.cutRolloutLeader},
		{"stop the rollout leader while its canary fails", p.pauseRolloutLeader},
	}
	sleepCtx(ctx, p.t.Warmup)
	var stepErr error
	for _, s := range steps {
		o.Log.Info("fault", "step", s.name)
		if err := s.run(ctx); err != nil {
			stepErr = fmt.Errorf("%s: %w", s.name, err)
			break
		}
		sleepCtx(ctx, p.t.Settle)
	}
	h := rec.Finish(ctx)
	h.Bounds = o.Bounds
	if stepErr != nil {
		return nil, stepErr
	}
	res, conv := Check(h, tb.Dir)
	return &Pass{Seed: o.Seed, Took: time.Since(began), Dir: tb.Dir, History: h, Results: res, Convergence: conv}, ctx.Err()
}

type pass struct {
	b   *Bed
	rec *Recorder
	o   Options
	t   Timing
}

// killLeader kills the etcd leader (SIGKILL) and restarts it on its data.
func (p *pass) killLeader(ctx context.Context) error {
	i, err := p.b.leader(ctx)
	if err != nil {
		return err
	}
	m := p.b.Cluster.Members[i]
	start := time.Now()
	if err := m.Kill(); err != nil {
		return err
	}
	sleepCtx(ctx, p.t.KillFor)
	if err := m.Restart(ctx); err != nil {
		return err
	}
	p.rec.Fault(Fault{Name: fmt.Sprintf("etcd leader %s killed (SIGKILL), restarted after %v", m.Name, p.t.KillFor),
		Kind: MemberFault, Target: m.Name, Start: start, Heal: time.Now()})
	return nil
}

// stopMember stops a member with SIGSTOP: the one a replica's watch is on
// (the seed picks which replica), so that the stall is felt.
func (p *pass) stopMember(ctx context.Context) error {
	r := p.b.Replicas[p.o.Seed%2]
	st, err := r.status(ctx)
	if err != nil {
		return err
	}
	i := r.memberOf(st.Watching)
	why := r.Name + "'s watch is on it"
	if i < 0 {
		if i, err = p.b.leader(ctx); err != nil {
			return err
		}
		why = "the leader"
	}
	m := p.b.Cluster.Members[i]
	start := time.Now()
	if err := m.Pause(); err != nil {
		return err
	}
	sleepCtx(ctx, p.t.StopFor)
	if err := m.Resume(); err != nil {
		return err
	}
	p.rec.Fault(Fault{Name: fmt.Sprintf("etcd member %s stopped (SIGSTOP) for %v", m.Name, p.t.StopFor),
		Kind: MemberFault, Target: m.Name, Start: start, Heal: time.Now(), Notes: []string{why}})
	return nil
}

// store writes invalid documents straight into etcd, compacts to the
// current revision and defragments every member, under load, then puts
// the valid document back.
func (p *pass) store(ctx context.Context) error {
	c := p.b.Client
	key := prefix + "config"
	start := time.Now()
	put := func(doc string) error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := c.Put(pctx, key, doc)
		return err
	}
	var notes []string
	for _, inv := range invalidDocuments {
		p.rec.Invalid(config.SHA256([]byte(inv.doc)), inv.why)
		if err := put(inv.doc); err != nil {
			return err
		}
		sleepCtx(ctx, time.Second)
	}
	rev, err := p.compact(ctx)
	if err != nil {
		return err
	}
	notes = append(notes, fmt.Sprintf("compacted at revision %d", rev))
	for i, m := range p.b.Cluster.Members {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t := time.Now()
		_, err := p.b.Members[i].Defragment(dctx, m.Endpoint)
		cancel()
		if err != nil {
			return fmt.Errorf("defragment %s: %w", m.Name, err)
		}
		notes = append(notes, fmt.Sprintf("%s defragmented in %v", m.Name, time.Since(t).Round(time.Millisecond)))
	}
	if err := put(document); err != nil {
		return err
	}
	p.rec.Fault(Fault{Name: fmt.Sprintf("%d invalid documents written into etcd, compaction, defragmentation of every member", len(invalidDocuments)),
		Kind: StoreFault, Start: start, Heal: time.Now(), Notes: notes})
	return nil
}

// compact compacts etcd to its current revision.
func (p *pass) compact(ctx context.Context) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := p.b.Client.Get(cctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	_, err = p.b.Client.Compact(cctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	return resp.Header.Revision, err
}

// cutReplica blackholes every connection of r2 to etcd; meanwhile etcd is
// compacted past what r2 applied, so it must read everything again when
// it is back.
func (p *pass) cutReplica(ctx context.Context) error {
	r := p.b.Replicas[2]
	start := time.Now()
	r.cut(true)
	sleepCtx(ctx, p.t.CutFor/2)
	rev, err := p.compact(ctx)
	if err != nil {
		r.cut(false)
		return err
	}
	sleepCtx(ctx, p.t.CutFor-p.t.CutFor/2)
	r.cut(false)
	p.rec.Fault(Fault{Name: fmt.Sprintf("replica %s cut off from etcd (blackhole) for %v", r.Name, p.t.CutFor),
		Kind: ReplicaFault, Target: r.Name, Start: start, Heal: time.Now(),
		Notes: []string{fmt.Sprintf("etcd compacted at revision %d meanwhile", rev)}})
	return nil
}

// cutRolloutLeader starts shop's rollout, waits for the leader's first
// verdict, then makes the canary fail and cuts the leader off at once:
// another replica must take over and roll the canary back, and the old
// leader's writes must be refused (fenced).
func (p *pass) cutRolloutLeader(ctx context.Context) error {
	return p.rolloutLeaderFault(ctx, "cut off from etcd", false, func(r *Replica, on bool) error {
		r.cut(on)
		return nil
	})
}

// pauseRolloutLeader is the same with the leader's process stopped
// (SIGSTOP) instead: a leader that stalls mid-term (a long GC pause, a
// frozen VM) while its lease expires and another replica leads. When it
// resumes it may act on what it saw before the stop before it hears that
// its session ended: etcd must refuse those writes (the fence), as Jepsen
// found etcd's locks need.
func (p *pass) pauseRolloutLeader(ctx context.Context) error {
	return p.rolloutLeaderFault(ctx, "stopped (SIGSTOP)", true, func(r *Replica, on bool) error {
		if on {
			return r.Pause()
		}
		return r.Resume()
	})
}

// rolloutLeaderFault starts shop's rollout (again, after an earlier
// rollback), waits for the leader's first verdict, then makes the canary
// fail and applies fault to the leader at once, until another replica has
// rolled the canary back; then it heals and waits for the old leader to
// follow.
func (p *pass) rolloutLeaderFault(ctx context.Context, what string, frozen bool, fault func(r *Replica, on bool) error) error {
	r0 := p.b.Replicas[0]
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := r0.Admin(actx, http.MethodPost, "/v1/services/shop/rollout", map[string]string{"action": "start"}, nil)
	cancel()
	if err != nil {
		return err
	}
	var leader string
	if err := waitFor(ctx, 30*time.Second, "the rollout leader's first verdict", func() bool {
		l, err := r0.fleetLeader(ctx)
		if err != nil || l == "" {
			return false
		}
		lr := p.b.replica(l)
		if lr == nil {
			return false
		}
		st, err := lr.rollout(ctx)
		if err != nil || st.State != "progressing" || len(st.Verdict) == 0 || string(st.Verdict) == "null" {
			return false
		}
		leader = l
		return true
	}); err != nil {
		return err
	}
	lr := p.b.replica(leader)
	canary := p.b.Backends["s2"]
	canary.Fail(50)
	start := time.Now()
	if err := fault(lr, true); err != nil {
		canary.Fail(0)
		return err
	}
	p.rec.Note(fmt.Sprintf("%s: rollout of shop progressing at step 1; leader %s; canary s2 fails 50%% of its requests and %s is %s", clock(start), leader, leader, what))
	var by string
	err = waitFor(ctx, p.t.Rollback, "another replica to roll the canary back", func() bool {
		for _, r := range p.b.Replicas {
			if r == lr {
				continue
			}
			if st, err := r.rollout(ctx); err == nil && st.State == "rolled_back" {
				by = st.lastNode()
				return true
			}
		}
		return false
	})
	if err != nil {
		_ = fault(lr, false)
		canary.Fail(0)
		return err
	}
	p.rec.Note(fmt.Sprintf("%s: rolled back by the new leader %s, %v after the fault", clock(time.Now()), by, time.Since(start).Round(time.Millisecond)))
	sleepCtx(ctx, time.Second)
	if err := fault(lr, false); err != nil {
		return err
	}
	heal := time.Now()
	ferr := waitFor(ctx, 15*time.Second, leader+" to follow the rollback", func() bool {
		st, err := lr.rollout(ctx)
		return err == nil && st.State == "rolled_back"
	})
	canary.Fail(0)
	if ferr != nil {
		return errors.Join(ferr, errors.New("the old leader did not follow the rollback"))
	}
	p.rec.Note(fmt.Sprintf("%s: %s back, follows the rollback %v after the heal.", clock(time.Now()), leader, time.Since(heal).Round(time.Millisecond)))
	// What the old leader did meanwhile: its own account.
	for _, line := range logLines(lr.LogPath, start, time.Now(), "no longer leading", "rollout transition", "cannot save the rollout state",
		"weights were not written", "cannot apply the rollout's weights") {
		p.rec.Note(leader + " logged: " + line)
	}
	p.rec.Fault(Fault{Name: fmt.Sprintf("rollout leader %s %s while its canary fails", leader, what),
		Kind: ReplicaFault, Target: leader, Start: start, Heal: heal, Frozen: frozen})
	return nil
}

// logLines returns the lines of a splitter's log (text handler: each line
// starts with time=...) logged from from to to that contain one of subs,
// shortened.
func logLines(path string, from, to time.Time, subs ...string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		ts, ok := strings.CutPrefix(line, "time=")
		if !ok {
			continue
		}
		ts, _, _ = strings.Cut(ts, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(from) || at.After(to) {
			continue
		}
		for _, sub := range subs {
			if strings.Contains(line, sub) {
				if len(line) > 400 {
					line = line[:400] + "…"
				}
				out = append(out, "`"+line+"`")
				break
			}
		}
	}
	return out
}
