package fleet

import "strings"

// Keys is the key layout under one prefix.
type Keys struct {
	Prefix string // ends with "/"
}

// Config is the routing document's key.
func (k Keys) Config() string { return k.Prefix + "config" }

// Overrides is the prefix of the override keys.
func (k Keys) Overrides() string { return k.Prefix + "overrides/" }

// Override is service's override key.
func (k Keys) Override(service string) string { return k.Overrides() + service }

// Mirrors is the prefix of the runtime mirrors' keys.
func (k Keys) Mirrors() string { return k.Prefix + "mirrors/" }

// Mirror is service's runtime mirror key.
func (k Keys) Mirror(service string) string { return k.Mirrors() + service }

// Replicas is the prefix of the replica records.
func (k Keys) Replicas() string { return k.Prefix + "replicas/" }

// Replica is node's record key.
func (k Keys) Replica(node string) string { return k.Replicas() + node }

// Rollouts is the prefix of the guarded rollouts' states.
func (k Keys) Rollouts() string { return k.Prefix + "rollouts/" }

// Rollout is service's rollout state key.
func (k Keys) Rollout(service string) string { return k.Rollouts() + service }

// RolloutCounts is the prefix of the window counts the replicas publish
// for the rollout leader.
func (k Keys) RolloutCounts() string { return k.Prefix + "rollout-counts/" }

// RolloutCount is node's published counts of service's rollout.
func (k Keys) RolloutCount(service, node string) string {
	return k.RolloutCounts() + service + "/" + node
}

// RolloutElection is the prefix of the rollout leader's election
// (concurrency.NewElection adds the "/").
func (k Keys) RolloutElection() string { return k.Prefix + "rollout-leader" }

// The rollout keys all sort after "replicas/", outside the state range a
// Source watches, so that the counts the replicas publish several times a
// second never wake the configuration watch; and "rollouts/" is watched
// apart from "rollout-counts/" and "rollout-leader/" ('-' sorts before
// 's'), so only a state change wakes the states' watch.

// stateRange is the key range a replica reads and watches: [Prefix,
// Prefix+"replicas/"), which holds config, mirrors/ and overrides/ but not the
// replica records, so that N replicas reporting their progress after a
// change do not wake N watchers each (N² events per change).
func (k Keys) stateRange() (start, end string) { return k.Prefix, k.Replicas() }

// service returns the service an override key names, or "".
func (k Keys) service(key string) string {
	name, ok := strings.CutPrefix(key, k.Overrides())
	if !ok || name == "" || strings.Contains(name, "/") {
		return ""
	}
	return name
}

// mirrorService returns the service a runtime mirror key names, or "".
func (k Keys) mirrorService(key string) string {
	name, ok := strings.CutPrefix(key, k.Mirrors())
	if !ok || name == "" || strings.Contains(name, "/") {
		return ""
	}
	return name
}
