package rollout

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/split"
)

// failingFor notes the verdict's result for service and returns how long
// the verdicts have been failing without a break: 0 at the first failing
// one, and a verdict that is not failing (healthy or inconclusive) ends
// the run; m.mu is held. A tick without a verdict (the signals could not
// be read) neither extends nor ends it: the next verdict is measured from
// the first failing one.
func (m *Manager) failingFor(service string, r Result, now time.Time) time.Duration {
	if r != Failing {
		delete(m.failing, service)
		return 0
	}
	since, ok := m.failing[service]
	if !ok || now.Before(since) {
		m.failing[service] = now
		return 0
	}
	return now.Sub(since)
}

// gate asks the hooks a waiting rollout waits on, in order (each in its
// own goroutine: a slow hook never holds the tick), and moves the rollout
// on once all of them have answered 2xx and the verdict allows it; a
// pre_step hook that failed every attempt rolls the canary back with a
// failing verdict naming it. st is the state on this replica's clock;
// m.mu is held.
func (m *Manager) gate(st State, r *split.Rollout, v Verdict, covered time.Duration, now time.Time) (State, bool) {
	target, weight := nextTarget(r.Steps, int(st.Weight))
	hooks := Gates(r, target)
	ws := WaitStatus{NextStep: target, NextWeight: split.Percent(weight)}
	nw := split.Percent(weight)
	vc := v
	base := Payload{State: st.Phase, Step: st.Step, Weight: st.Weight, Canary: st.Canary, Stable: st.Stable,
		Verdict: &vc, NextStep: target, NextWeight: &nw}
	// One wait: the stored state's Since, the same on every replica.
	episode := m.current[st.Service].Since.UnixNano()
	var passed []string
	for _, h := range hooks {
		g := m.gates.check(gateKey{service: st.Service, episode: episode, hook: h}, base)
		if g.failed {
			fv := v
			fv.Result = Failing
			fv.Reason = fmt.Sprintf("pre_step hook %s failed %d times: %s", h.Name, g.asked, g.answer)
			delete(m.waits, st.Service)
			return st.to(RolledBack, st.Step, 0, now, Actor, "guard failed the canary: "+fv.Reason, &fv), true
		}
		if !g.open {
			ws.Hook, ws.Type, ws.Asked, ws.Since, ws.LastAnswer, ws.LastAt, ws.Passed = h.Name, h.Type, g.asked, g.since, g.answer, g.lastAt, passed
			m.waits[st.Service] = ws
			return st, false
		}
		passed = append(passed, h.Name)
	}
	why := "no hook left to ask"
	if len(passed) > 0 {
		why = "hooks " + strings.Join(passed, ", ") + " answered 2xx"
	}
	next, changed := Proceed(st, r, v, covered, now, why)
	if !changed {
		ws.Passed = passed
		ws.Note = "every hook answered 2xx: the step waits for a healthy verdict over a full window"
		m.waits[st.Service] = ws
		return st, false
	}
	delete(m.waits, st.Service)
	return next, true
}

// moved is told of transitions of st (its own, or followed from another
// replica): what they end is forgotten, and the leader tells the
// service's event hooks; m.mu is held.
func (m *Manager) moved(st State, trs []Transition) {
	if len(trs) == 0 {
		return
	}
	if st.Phase != Waiting {
		delete(m.waits, st.Service)
	}
	// The hooks of the configuration in force, or, when it no longer has
	// the rollout (a reload removed it: the abort this causes), those of
	// the configuration the rollout last ran under.
	hooks := m.eventHooks[st.Service]
	if snap := m.store.Load(); snap != nil {
		if svc, ok := snap.Table.Service(st.Service); ok && svc.Rollout != nil {
			hooks = svc.Rollout.HooksOf(split.HookEvent)
		}
	}
	if !st.Phase.active() {
		delete(m.failing, st.Service)
		delete(m.eventHooks, st.Service)
	}
	if len(hooks) == 0 || !m.leadsNow() {
		return
	}
	for _, tr := range trs {
		m.events.publish(st.Service, hooks, Payload{
			State: tr.To, Step: tr.Step, Weight: tr.Weight, Canary: st.Canary, Stable: st.Stable,
			Verdict: tr.Verdict, Transition: &tr,
		})
	}
}

// leadsNow asks the Elector whether this replica leads at this moment (a
// transition followed just after an election must not wait for the next
// tick to be told); m.mu may be held: Lead takes only the elector's own
// lock.
func (m *Manager) leadsNow() bool {
	_, release, leading := m.elector.Lead(context.Background())
	release()
	return leading
}

// Close stops the hooks: the gates being asked and the event deliveries
// (Run does it when it returns).
func (m *Manager) Close() {
	m.closed.Do(func() {
		m.gates.stop()
		m.events.close()
	})
}
