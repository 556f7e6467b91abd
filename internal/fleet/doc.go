// Package fleet makes etcd the source of splitter's routing state, so that
// one change reaches every replica of a mesh (docs/fleet.md).
//
// Keys live under a prefix (default /splitter/):
//
//	config               the routing document (YAML, as the file's services and experiments)
//	overrides/<service>  an admin override: {"weights", "against", "set_at", "node", "actor"}
//	replicas/<node_id>   each replica's record, bound to its lease
//	rollout-counts/<service>/<node_id>  a replica's window counts of an active rollout, bound to its rollout lease
//	rollout-leader/<lease>              the rollout election (concurrency.NewElection)
//	rollouts/<service>   a guarded rollout's state (Rollouts)
//
// A Source keeps a mirror of config and overrides/ (one range read, then
// one watch from the applied revision), and after every watch response applies
// the whole state as one snapshot with the last-good rule: a document that
// does not parse or compile is rejected (logged, counted, reported in the
// admin API and in the replica record) and the last good one keeps serving,
// with the current overrides on top where they still fit. A watch that ends
// is resumed from the applied revision; after a compaction (or a new
// cluster) everything is read again. While etcd is unreachable the last
// snapshot keeps serving and the Source says since when it is disconnected;
// a cache file lets a replica start from the last applied state when etcd
// is down at its start.
//
// "Connected" means following (follow.go): the watch, on a client of its
// own pinned to one member, is asked for progress every 500 ms and must
// prove itself caught up within a second; a watch that does not is moved
// to the next member. Every request has a deadline per attempt and is
// tried on the next member (attempt.go); a member that hangs (a stopped
// process, a network that drops packets) has its connections dropped
// after a failed HTTP/2 PING (members.go), without waiting for gRPC's
// keepalive. Each replica keeps its own log of what it applied and of its
// connection (eventlog.go, GET /v1/fleet/log).
//
// Admin mutations are written to etcd in compare-and-swap transactions on
// the revisions of the config and override keys they read, so concurrent
// writers on different replicas serialise with no lost update; the writing
// replica answers once its own watch has applied the commit.
//
// Rollouts keeps the guarded rollouts' states in etcd, elects the replica
// that judges and moves them, and carries every replica's counts to it.
package fleet
