// Package chaos runs the fleet under etcd faults and checks what happened
// from recorded histories, the way etcd checks itself (its robustness
// suite) rather than from snapshots.
//
// A pass starts a bed (bed.go): a 3-member etcd cluster on loopback (the
// server from tools/etcd), three splitter processes in fleet mode, each
// given every member through proxies of its own (so that one replica can
// be cut off alone), an Envoy in front of each, and the backends. While
// two writers change a service's canary through two replicas and traffic
// flows through every Envoy, it injects, in turn (run.go): the etcd
// leader killed (SIGKILL) and restarted; a member stopped (SIGSTOP) for
// 10 s, the one a replica's watch is on; invalid documents written
// straight into etcd, compaction and defragmentation under load; a
// replica cut off from every member by a blackhole for 30 s (15 s in the
// short form), with a compaction meanwhile; and the rollout leader cut off
// while its canary fails.
//
// The recorder (record.go) keeps every admin write with its call and
// return times and answer, every replica's own log of the revisions it
// applied and of its connection (GET /v1/fleet/log: the replica's
// account, complete, not polls), its status sampled every 100 ms, every
// change in etcd (watched through each member), linearizable reads of the
// written key, and every request through Envoy. The checker (check.go,
// linearize.go) states and checks, over that history: the acknowledged
// writes are linearizable (porcupine); every acknowledged write is in
// etcd at its revision and none is applied twice; each replica's applied
// revision only grows and every state it applies is etcd's; while a
// member is down no replica is more than 2 s behind an acknowledged write
// and writes keep being acknowledged (no gap over 3 s); a replica says
// connected only while it follows; after each heal every replica reaches
// the last revision within 1 s; no replica applies an invalid document;
// the rollout leader's writes are fenced; no request fails through Envoy.
// A check that fails shows the part of the history that breaks it. The
// checker itself is tested on hand-made histories (check_test.go).
//
// TestChaos is the short form (one pass, in `make test`, timing bounds
// doubled for a shared machine); `make chaos` runs the long form (the
// issue's outage lengths and bounds, several seeds) and writes
// chaos-report.md.
package chaos
