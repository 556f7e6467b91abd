package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/config"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// maxWriteAttempts bounds the compare-and-swap retries of one admin
// mutation against concurrent writers.
const maxWriteAttempts = 16

func errUnavailable(reason string) error {
	return fmt.Errorf("etcd: %s: %w", reason, store.ErrUnavailable)
}

// SetWeights writes an override of service's weights to etcd.
func (s *Source) SetWeights(ctx context.Context, service string, w split.Weights, actor string) (store.Change, error) {
	return s.mutate(ctx, service, actor, nil, setWeights(service, w))
}

// setWeights computes w against the document a mutation read.
func setWeights(service string, w split.Weights) func(base *split.Table, _ split.Weights) (split.Weights, error) {
	return func(base *split.Table, _ split.Weights) (split.Weights, error) {
		svc, _ := base.Service(service)
		if err := store.CheckVersions(w, svc.Weights); err != nil {
			return nil, err
		}
		t, err := base.WithWeights(service, w)
		if err != nil {
			return nil, err
		}
		svc, _ = t.Service(service)
		return svc.Weights, nil
	}
}

// SetCanary writes an override giving a two-version service's canary
// basisPoints.
func (s *Source) SetCanary(ctx context.Context, service string, basisPoints int, actor string) (store.Change, error) {
	return s.mutate(ctx, service, actor, nil, func(base *split.Table, _ split.Weights) (split.Weights, error) {
		return base.CanaryWeights(service, basisPoints)
	})
}

// ClearOverride deletes service's override from etcd.
func (s *Source) ClearOverride(ctx context.Context, service string, actor string) (store.Change, error) {
	return s.mutate(ctx, service, actor, nil, nil)
}

// mutate is the write-through path: read the document and the override at
// one revision, compute the new weights against that document, and write
// them if neither key changed meanwhile (else read again). compute nil
// deletes the override. It answers once this replica applied the commit,
// or after applyWait with Change.NotApplied set. A fence adds comparisons
// the write is conditional on (a rollout state's revision, the leader's
// election key): when they no longer hold, nothing is written and the
// error wraps rollout.ErrStale.
//
// Each read and write gets attemptTimeout on one member. A write that got
// no answer may or may not have been committed, so it is never simply
// sent again: the next round reads the override back. Holding the value
// written (each record is unique: it carries the writer's node and clock)
// means it was committed, at the key's revision; the key unchanged since
// the read means it was not, and the round goes on (the compare-and-swap
// makes sure that at most one of the writes sent can commit); anything
// else (another writer changed the key meanwhile) cannot be told apart
// from "committed, then overwritten", and the answer says the outcome is
// unknown.
func (s *Source) mutate(ctx context.Context, service, actor string, fence []clientv3.Cmp, compute func(base *split.Table, current split.Weights) (split.Weights, error)) (store.Change, error) {
	c := s.client.Load()
	if c == nil {
		return store.Change{}, errUnavailable("not connected; the change was not made")
	}
	cfgKey, ovKey := s.keys.Config(), s.keys.Override(service)
	var sent []sentWrite // writes whose outcome is not known yet
	for range maxWriteAttempts {
		var read *clientv3.TxnResponse
		err := s.try(ctx, func(actx context.Context, c *clientv3.Client) error {
			r, err := c.Txn(clientv3.WithRequireLeader(actx)).Then(clientv3.OpGet(cfgKey), clientv3.OpGet(ovKey)).Commit()
			read = r
			return err
		}, nil)
		if err != nil {
			if len(sent) > 0 {
				return store.Change{}, errUnknownOutcome(err)
			}
			return store.Change{}, errUnavailable("read: " + trimErr(err) + "; the change was not made")
		}
		cfgKV := firstKV(read.Responses[0].GetResponseRange().Kvs)
		ovKV := firstKV(read.Responses[1].GetResponseRange().Kvs)
		if len(sent) > 0 {
			rev, done, err := settle(sent, ovKV, read.Header.Revision)
			if err != nil {
				return store.Change{}, err
			}
			if done {
				last := sent[len(sent)-1]
				return s.committed(ctx, service, actor, last.old, last.next, rev, last.verb)
			}
			// None committed yet, and the ones sent compare the same
			// override revision as the next: at most one of them can.
		}
		base, err := s.baseTable(cfgKV)
		if err != nil {
			return store.Change{}, err
		}
		fileSvc, ok := base.Service(service)
		if !ok {
			return store.Change{}, fmt.Errorf("service %q: %w", service, split.ErrUnknownService)
		}
		current := fileSvc.Weights
		if ovKV != nil {
			if rec, err := decodeOverride(ovKV.Value); err == nil && sameShares(rec.Against, fileSvc.Weights) {
				current = split.InDeclaredOrder(rec.Weights, fileSvc.Weights)
			}
		}
		var op clientv3.Op
		var next split.Weights
		var value []byte
		verb := "set"
		if compute == nil {
			if ovKV == nil {
				return store.Change{Service: service, Old: current, New: current, Snapshot: s.store.Load(), Revision: read.Header.Revision}, nil
			}
			next, verb = fileSvc.Weights, "cleared"
			op = clientv3.OpDelete(ovKey)
		} else {
			if next, err = compute(base, current); err != nil {
				return store.Change{}, fmt.Errorf("service %q: %w", service, err)
			}
			if len(fence) > 0 && sameShares(next, current) {
				// A rollout's weights already in force in etcd (this
				// replica's snapshot may lag): nothing to write.
				return store.Change{Service: service, Old: current, New: next, Snapshot: s.store.Load(), Revision: read.Header.Revision}, nil
			}
			rec := overrideRecord{Weights: next, Against: fileSvc.Weights, SetAt: s.now().UTC(), Node: s.opts.NodeID, Actor: actor}
			if value, err = rec.encode(); err != nil {
				return store.Change{}, err
			}
			op = clientv3.OpPut(ovKey, string(value))
		}
		cmps := append([]clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(cfgKey), "=", modRev(cfgKV)),
			clientv3.Compare(clientv3.ModRevision(ovKey), "=", modRev(ovKV)),
		}, fence...)
		var resp *clientv3.TxnResponse
		unknown := false
		err = s.try(ctx, func(actx context.Context, c *clientv3.Client) error {
			r, err := c.Txn(clientv3.WithRequireLeader(actx)).If(cmps...).Then(op).Commit()
			resp = r
			return err
		}, func(attempt, error) bool {
			unknown = true
			return false // read back before anything else
		})
		if err != nil {
			if !unknown {
				return store.Change{}, errUnavailable("write: " + trimErr(err) + "; the change was not made")
			}
			sent = append(sent, sentWrite{value: value, overrideRev: modRev(ovKV), old: current, next: next, verb: verb})
			s.log.Warn("admin write got no answer; reading back whether it was committed", "service", service, "error", trimErr(err))
			if ctx.Err() != nil {
				return store.Change{}, errUnknownOutcome(err)
			}
			continue
		}
		if !resp.Succeeded {
			if len(fence) > 0 {
				if held, err := s.holds(ctx, c, fence); err != nil {
					return store.Change{}, err
				} else if !held {
					return store.Change{}, fmt.Errorf("service %q: weights not written: %w", service, rollout.ErrStale)
				}
			}
			s.m.conflicts.Inc()
			continue
		}
		return s.committed(ctx, service, actor, current, next, resp.Header.Revision, verb)
	}
	if len(sent) > 0 {
		return store.Change{}, errUnknownOutcome(errors.New("no answer"))
	}
	return store.Change{}, errUnavailable(fmt.Sprintf("%d concurrent writes in a row won over this one; try again", maxWriteAttempts))
}

// sentWrite is a write sent without an answer. All the writes of one
// mutation that are kept are conditional on the same override revision
// (the key did not change between them), so at most one can commit.
type sentWrite struct {
	value       []byte // the record put; nil: a delete
	overrideRev int64  // the override key's revision it was conditional on
	old, next   split.Weights
	verb        string
}

// settle tells what became of writes sent without an answer, from the
// override as read afterwards at readRev: done with the revision that
// holds their effect, not done (nothing was committed: write again), or
// an error when it cannot be told.
func settle(sent []sentWrite, ovKV *mvccpb.KeyValue, readRev int64) (rev int64, done bool, err error) {
	for _, w := range sent {
		if w.value != nil && ovKV != nil && string(ovKV.Value) == string(w.value) {
			return ovKV.ModRevision, true, nil
		}
	}
	last := sent[len(sent)-1]
	if last.value == nil && ovKV == nil {
		// Deleted: by this write or another; either way the override is
		// gone as of the read.
		return readRev, true, nil
	}
	if modRev(ovKV) == last.overrideRev {
		return 0, false, nil
	}
	return 0, false, errUnknownOutcome(errors.New("another writer changed the override meanwhile"))
}

func errUnknownOutcome(cause error) error {
	return errUnavailable("write (outcome unknown; GET the service to see): " + trimErr(cause))
}

// committed answers a write committed at rev once this replica applied it,
// or after applyWait with NotApplied set.
func (s *Source) committed(ctx context.Context, service, actor string, old, next split.Weights, rev int64, verb string) (store.Change, error) {
	s.follow.learnt(rev, s.now())
	s.log.Info("runtime override "+verb+" in etcd", "service", service, "actor", actor,
		"old", old.String(), "new", next.String(), "revision", rev)
	wctx, cancel := context.WithTimeout(ctx, s.follow.c.applyWait)
	werr := s.waitApplied(wctx, rev)
	cancel()
	ch := store.Change{Service: service, Old: old, New: next, Snapshot: s.store.Load(), Revision: rev}
	if werr != nil {
		ch.NotApplied = true
		s.log.Warn("committed to etcd but not yet applied here; answering so", "service", service, "revision", rev,
			"applied_revision", s.AppliedRevision(), "waited", s.follow.c.applyWait)
	}
	return ch, nil
}

// holds evaluates a fence on its own.
func (s *Source) holds(ctx context.Context, c *clientv3.Client, fence []clientv3.Cmp) (bool, error) {
	var resp *clientv3.TxnResponse
	err := s.try(ctx, func(actx context.Context, c *clientv3.Client) error {
		r, err := c.Txn(clientv3.WithRequireLeader(actx)).If(fence...).Commit()
		resp = r
		return err
	}, nil)
	if err != nil {
		return false, errUnavailable("read: " + trimErr(err))
	}
	return resp.Succeeded, nil
}

// baseTable compiles the document a mutation is computed against: etcd's
// when it is valid, else the last good one in force (where the override
// will apply).
func (s *Source) baseTable(cfgKV *mvccpb.KeyValue) (*split.Table, error) {
	snap := s.store.Load()
	if cfgKV != nil {
		sha := config.SHA256(cfgKV.Value)
		if snap != nil && snap.SHA256 == sha {
			return split.Compile(snap.File)
		}
		if cfg, err := config.Parse(cfgKV.Value); err == nil {
			if t, err := split.Compile(cfg); err == nil {
				return t, nil
			}
		}
	}
	if snap == nil {
		return nil, store.ErrNoConfig
	}
	return split.Compile(snap.File)
}

func firstKV(kvs []*mvccpb.KeyValue) *mvccpb.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	return kvs[0]
}

func modRev(kv *mvccpb.KeyValue) int64 {
	if kv == nil {
		return 0
	}
	return kv.ModRevision
}

// ErrRevisionMismatch is returned by PushConfig when the document's
// revision is not the expected one.
var ErrRevisionMismatch = errors.New("the configuration's revision is not the expected one")

// PushResult is what PushConfig wrote.
type PushResult struct {
	Revision int64
	// Cleared are the overrides deleted with the push because the new
	// document changes their service's weights (or drops the service).
	Cleared []string
}

// PushConfig writes a validated document to the config key. With
// expectRevision >= 0 it is a compare-and-swap: the key's current
// ModRevision must be expectRevision (0: the key must not exist). In the
// same transaction it deletes the overrides the new document makes stale,
// as a file reload would.
func PushConfig(ctx context.Context, c *clientv3.Client, keys Keys, data []byte, expectRevision int64) (PushResult, error) {
	// Webhook secret files are the replicas' (each checks them when it
	// applies the document), not the pushing machine's.
	cfg, err := config.ParseDocument(data)
	if err != nil {
		return PushResult{}, err
	}
	for range maxWriteAttempts {
		read, err := c.Txn(ctx).Then(
			clientv3.OpGet(keys.Config()),
			clientv3.OpGet(keys.Overrides(), clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return PushResult{}, fmt.Errorf("etcd: read %s: %w", keys.Config(), err)
		}
		cur := firstKV(read.Responses[0].GetResponseRange().Kvs)
		if expectRevision >= 0 && modRev(cur) != expectRevision {
			return PushResult{}, fmt.Errorf("%w: %s is at revision %d, not %d", ErrRevisionMismatch, keys.Config(), modRev(cur), expectRevision)
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(keys.Config()), "=", modRev(cur))}
		ops := []clientv3.Op{clientv3.OpPut(keys.Config(), string(data))}
		var cleared []string
		for _, kv := range read.Responses[1].GetResponseRange().Kvs {
			svc := keys.service(string(kv.Key))
			if svc == "" || !staleAgainst(kv.Value, cfg, svc) {
				continue
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			cleared = append(cleared, svc)
		}
		resp, err := c.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return PushResult{}, fmt.Errorf("etcd: write %s: %w", keys.Config(), err)
		}
		if resp.Succeeded {
			return PushResult{Revision: resp.Header.Revision, Cleared: cleared}, nil
		}
		if expectRevision >= 0 {
			return PushResult{}, fmt.Errorf("%w: %s changed during the push", ErrRevisionMismatch, keys.Config())
		}
	}
	return PushResult{}, fmt.Errorf("etcd: %s: %d concurrent writes in a row won over this one", keys.Config(), maxWriteAttempts)
}

// staleAgainst says whether an override record no longer applies to cfg:
// the service is gone or its weights differ from those the override was
// set against. An unreadable record is left alone.
func staleAgainst(raw []byte, cfg *split.Config, service string) bool {
	rec, err := decodeOverride(raw)
	if err != nil {
		return false
	}
	for _, svc := range cfg.Services {
		if svc.Name == service {
			return !sameShares(rec.Against, svc.Weights)
		}
	}
	return true
}

// sameShares compares weights as version -> share, in any order.
func sameShares(a, b split.Weights) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if bp, ok := b.Get(x.Version); !ok || bp != x.BasisPoints {
			return false
		}
	}
	return true
}

// Document is the config key as GetConfig read it.
type Document struct {
	Data     []byte
	Revision int64 // the key's ModRevision (what --expect-revision compares)
	SHA256   string
}

// GetConfig reads the config key; a missing key is an error naming it.
func GetConfig(ctx context.Context, c *clientv3.Client, keys Keys) (Document, error) {
	resp, err := c.Get(ctx, keys.Config())
	if err != nil {
		return Document{}, fmt.Errorf("etcd: read %s: %w", keys.Config(), err)
	}
	kv := firstKV(resp.Kvs)
	if kv == nil {
		return Document{}, fmt.Errorf("etcd %s: no configuration (push one with `splitter config push FILE`)", keys.Config())
	}
	return Document{Data: kv.Value, Revision: kv.ModRevision, SHA256: config.SHA256(kv.Value)}, nil
}

// trimErr shortens an etcd error for an answer.
func trimErr(err error) string { return strings.TrimPrefix(err.Error(), "etcdserver: ") }
