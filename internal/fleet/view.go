package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status is this replica's view of the fleet, shown in GET /v1/services
// (config.fleet) and GET /v1/fleet (self).
type Status struct {
	NodeID    string   `json:"node_id"`
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	// Connected: this replica follows etcd. A progress notification
	// proved its watch caught up within the last second, and it has
	// reached every revision the cluster had committed a second before its
	// last probe, so everything committed more than 3 s ago is in force
	// here (docs/fleet.md).
	Connected bool `json:"connected"`
	// Watching is the member (as dialled) the watch runs on.
	Watching string `json:"watching,omitempty"`
	// Since is when the connection state last changed;
	// DisconnectedSince repeats it while disconnected.
	Since             time.Time  `json:"since"`
	DisconnectedSince *time.Time `json:"disconnected_since,omitempty"`
	AppliedRevision   int64      `json:"applied_revision"`
	AppliedAt         *time.Time `json:"applied_at,omitempty"`
	// StartedFrom is "etcd" or "cache" (etcd_cache_file, etcd was down).
	StartedFrom string `json:"started_from,omitempty"`
	// RejectedError is why etcd's document is not in force, if it is not.
	RejectedError *string    `json:"rejected_error,omitempty"`
	RejectedAt    *time.Time `json:"rejected_at,omitempty"`
}

// Status returns this replica's fleet status.
func (s *Source) Status() Status {
	s.refreshConnected()
	c := s.conn.Load()
	st := Status{
		NodeID: s.opts.NodeID, Endpoints: s.opts.Client.Endpoints, Prefix: s.keys.Prefix,
		Connected: c.connected, Since: c.since, Watching: s.follow.watching(),
	}
	if !c.connected {
		since := c.since
		st.DisconnectedSince = &since
	}
	s.amu.Lock()
	st.AppliedRevision = s.appliedRev
	if !s.appliedAt.IsZero() {
		at := s.appliedAt
		st.AppliedAt = &at
	}
	s.amu.Unlock()
	st.StartedFrom, _ = s.startedFrom.Load().(string)
	s.mu.Lock()
	if s.rejected != nil {
		msg, at := s.rejected.err.Error(), s.rejected.at
		st.RejectedError, st.RejectedAt = &msg, &at
	}
	s.mu.Unlock()
	return st
}

// FleetView is GET /v1/fleet.
type FleetView struct {
	// Revision is etcd's current revision: a replica whose revision is
	// lower may still have the same state (revision counts every write,
	// replica records included); state_sha256 says whether it decides alike.
	Revision int64           `json:"revision"`
	Replicas []ReplicaRecord `json:"replicas"`
	Self     Status          `json:"self"`
	// RolloutLeader is the replica that judges and moves the rollouts
	// (the rollout election's leader), "" when none is elected.
	RolloutLeader string `json:"rollout_leader"`
	// OlderReplicas are the replicas whose build lacks features this one
	// writes (a rolling upgrade in progress, or a rollback): changes that
	// need them are refused while they hold a lease (docs/upgrading.md).
	OlderReplicas []OlderReplica `json:"older_replicas,omitempty"`
	// NotAppliedByOlder are the keys in force that they ignore or refuse
	// (written before they joined): until they leave, they do not decide
	// alike.
	NotAppliedByOlder []string `json:"not_applied_by_older,omitempty"`
}

// Fleet lists the replicas holding a lease, read from etcd now.
func (s *Source) Fleet(ctx context.Context) (FleetView, error) {
	c := s.client.Load()
	if c == nil {
		return FleetView{}, errUnavailable("not connected")
	}
	var resp *clientv3.GetResponse
	err := s.try(ctx, func(actx context.Context, c *clientv3.Client) error {
		r, err := c.Get(clientv3.WithRequireLeader(actx), s.keys.Replicas(), clientv3.WithPrefix())
		resp = r
		return err
	}, nil)
	if err != nil {
		return FleetView{}, errUnavailable("read " + s.keys.Replicas() + ": " + trimErr(err))
	}
	v := FleetView{Revision: resp.Header.Revision, Replicas: []ReplicaRecord{}, Self: s.Status()}
	if r := s.rollouts.Load(); r != nil {
		v.RolloutLeader = r.Leader()
	}
	for _, kv := range resp.Kvs {
		var r ReplicaRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			r = ReplicaRecord{NodeID: string(kv.Key[len(s.keys.Replicas()):]), Error: fmt.Sprintf("unreadable record: %v", err)}
		}
		v.Replicas = append(v.Replicas, r)
	}
	slices.SortFunc(v.Replicas, func(a, b ReplicaRecord) int {
		switch {
		case a.NodeID < b.NodeID:
			return -1
		case a.NodeID > b.NodeID:
			return 1
		}
		return 0
	})
	s.addOlder(&v)
	return v, nil
}
