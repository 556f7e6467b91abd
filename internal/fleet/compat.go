package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
)

// A fleet is upgraded one replica at a time, so replicas of two builds
// share one etcd for a while (and again after a rollback). Each replica's
// record lists the features it applies beyond the state every release
// reads (config, overrides/ without an owner, rollouts/ in the phases
// idle to aborted); the release before features (8f6553d) writes none.
// What that release does with each of them, found by running it beside
// this one (e2e/upgrade_fleet_test.go):
//
//   - mirrors/, live-routes/, live-mirror-routes/: inside the range it
//     watches, but not keys it knows: ignored without a word. It goes on
//     deciding without the mirror or the route (its state_sha256 differs).
//   - an override with an owner: refused as a record ("unknown field
//     owner"), logged; it serves the document's weights instead.
//   - a rollout state in the phase waiting: unreadable, ignored while it
//     runs, and its start fails ("unknown phase").
//   - a state at the shadow step: read as a step 0 at 0 %, from which its
//     guard would step on without the shadow's mirror.
//
// So this build does not write those while a replica without the feature
// holds a lease: the change is refused (409, naming the replicas). What
// that release does read (new fields of rollout states, latency
// histograms in published counts, the replica records) is written in a
// form it reads alike (rollout/wire.go for the hold).

// The features a replica of this build lists in its record.
const (
	FeatureMirrors          = "mirrors"            // mirrors/<service>
	FeatureLiveRoutes       = "live-routes"        // live-routes/<service>/<route>
	FeatureLiveMirrorRoutes = "live-mirror-routes" // live-mirror-routes/<service>/<route>
	FeatureOwners           = "override-owner"     // overrides/<service> with "owner"
	FeatureRolloutWaiting   = "rollout-waiting"    // rollouts/<service> in the phase waiting
	FeatureRolloutShadow    = "rollout-shadow"     // rollouts/<service> at the shadow step
)

// Features is what this build lists, sorted.
func Features() []string {
	f := []string{FeatureMirrors, FeatureLiveRoutes, FeatureLiveMirrorRoutes, FeatureOwners, FeatureRolloutWaiting, FeatureRolloutShadow}
	slices.Sort(f)
	return f
}

// featureChanges names each feature's change for the 409.
var featureChanges = map[string]string{
	FeatureMirrors:          "a runtime mirror (mirrors/<service>)",
	FeatureLiveRoutes:       "a runtime route (live-routes/<service>/<route>)",
	FeatureLiveMirrorRoutes: "a mirror route (live-mirror-routes/<service>/<route>)",
	FeatureOwners:           "owned weights (an override with an owner)",
	FeatureRolloutWaiting:   "a rollout waiting for its hooks (the phase waiting)",
	FeatureRolloutShadow:    "a rollout's shadow step",
}

// OlderReplica is a replica holding a lease whose build lacks features
// this one writes (GET /v1/fleet, "older_replicas").
type OlderReplica struct {
	NodeID  string   `json:"node_id"`
	Version string   `json:"version"`
	Lacks   []string `json:"lacks"`
}

// olderReplicas are the replicas among records (replicas/ as read) that
// lack one of this build's features, this one excepted. An unreadable
// record lacks them all: nothing says what it applies.
func (s *Source) olderReplicas(records []ReplicaRecord) []OlderReplica {
	var out []OlderReplica
	for _, r := range records {
		if r.NodeID == s.opts.NodeID {
			continue
		}
		var lacks []string
		for _, f := range Features() {
			if !slices.Contains(r.Features, f) {
				lacks = append(lacks, f)
			}
		}
		if len(lacks) > 0 {
			out = append(out, OlderReplica{NodeID: r.NodeID, Version: r.Version, Lacks: lacks})
		}
	}
	return out
}

// readReplicas reads every replica record (unreadable ones with their
// node id and the error).
func (s *Source) readReplicas(ctx context.Context, c *clientv3.Client) ([]ReplicaRecord, int64, error) {
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
	defer cancel()
	resp, err := c.Get(rctx, s.keys.Replicas(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, errUnavailable("read " + s.keys.Replicas() + ": " + trimErr(err))
	}
	out := make([]ReplicaRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r ReplicaRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			r = ReplicaRecord{NodeID: string(kv.Key[len(s.keys.Replicas()):]), Error: fmt.Sprintf("unreadable record: %v", err)}
		}
		out = append(out, r)
	}
	return out, resp.Header.Revision, nil
}

// requireFeature refuses, with a *store.OlderReplicasError, a change that
// needs feature while a replica of a build without it holds a lease. A
// replica that joins after the check is not stopped by it (nothing in
// etcd can compare a range of records); GET /v1/fleet then lists it under
// older_replicas.
func (s *Source) requireFeature(ctx context.Context, feature string) error {
	c := s.client.Load()
	if c == nil || !s.conn.Load().connected {
		return errUnavailable("not connected; the change was not made")
	}
	records, _, err := s.readReplicas(ctx, c)
	if err != nil {
		return err
	}
	var names []string
	for _, o := range s.olderReplicas(records) {
		if slices.Contains(o.Lacks, feature) {
			v := o.Version
			if v == "" {
				v = "unknown"
			}
			names = append(names, fmt.Sprintf("%s (version %s)", o.NodeID, v))
		}
	}
	if len(names) == 0 {
		return nil
	}
	return &store.OlderReplicasError{What: featureChanges[feature], Feature: feature, Replicas: names}
}

// stateFeature is the feature a rollout state needs when s enters it
// with this save ("" for none): the phase waiting, or the shadow step.
// A state already there is saved again (its weights applied, an operator
// action) whoever holds a lease.
func stateFeature(s rollout.State) string {
	n := len(s.History)
	if n == 0 {
		return ""
	}
	last := s.History[n-1]
	switch {
	case last.To == rollout.Waiting && last.From != rollout.Waiting && s.Applying:
		return FeatureRolloutWaiting
	case last.Shadow && s.Shadow && s.Applying && (n == 1 || !s.History[n-2].Shadow):
		return FeatureRolloutShadow
	}
	return ""
}

// inUse lists the keys in force that need a feature some replicas lack
// (for GET /v1/fleet); s.mu is held.
func (s *Source) inUseLocked(lacking map[string]bool) []string {
	var out []string
	for key, kv := range s.kvs {
		switch {
		case lacking[FeatureMirrors] && s.keys.mirrorService(key) != "":
		case lacking[FeatureLiveRoutes] && strings.HasPrefix(key, s.keys.LiveRoutes()):
		case lacking[FeatureLiveMirrorRoutes] && strings.HasPrefix(key, s.keys.LiveMirrorRoutes()):
		case lacking[FeatureOwners] && s.keys.service(key) != "":
			if rec, err := decodeOverride(kv.Value); err != nil || rec.Owner == "" {
				continue
			}
		default:
			continue
		}
		out = append(out, strings.TrimPrefix(key, s.keys.Prefix))
	}
	slices.Sort(out)
	return out
}

// addOlder fills v's older replicas and the keys in force they do not
// apply.
func (s *Source) addOlder(v *FleetView) {
	v.OlderReplicas = s.olderReplicas(v.Replicas)
	lacking := map[string]bool{}
	for _, o := range v.OlderReplicas {
		for _, f := range o.Lacks {
			lacking[f] = true
		}
	}
	if len(lacking) == 0 {
		return
	}
	s.mu.Lock()
	v.NotAppliedByOlder = s.inUseLocked(lacking)
	s.mu.Unlock()
}
