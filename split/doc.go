// Package split is splitter's decision engine: it parses and validates the
// routing configuration, compiles it into an immutable Table, and decides,
// for one request, which version of a service serves it. It does no I/O and
// imports only the standard library and yaml.v3; adapters (ext_proc,
// ext_authz, the seed node, the admin API) translate to and from it.
//
// # Decisions
//
// Decide looks at a Request in this order (docs/decisions.md):
//
//  1. Service: the service whose hosts match the authority, in Envoy's
//     virtual-host order: an exact host, then the longest matching
//     "*.suffix" (which needs at least one character before the suffix),
//     then "*". The port is stripped and case is ignored. No match: reason
//     unmatched, no version.
//  2. Rules, in declared order, first match wins; a rule holds when all of
//     its conditions hold. Reason header_match.
//  3. Sticky weights: when the service names a sticky key (header or cookie)
//     and the request carries a non-empty value for it (the first one), the
//     key's bucket picks the version. Reason sticky_routing.
//  4. Otherwise smooth weighted round-robin. Reason weighted_routing.
//
// Independently, every experiment whose key the request carries assigns a
// variant, whatever decided the version (even when no service matched).
//
// Decide does not allocate and takes no lock: the Table is immutable except
// for one atomic counter per service.
//
// # Conditions
//
// A condition reads a header (names compared case-insensitively), a cookie
// (from every Cookie header, names case-sensitive, surrounding double quotes
// of a value removed) or a query parameter (from the path's query string).
// A value operator holds when ANY value matches: a header sent twice, a
// parameter repeated. Header values are not split on commas. present holds
// when the source appears at all, even empty; absent when it does not.
// regex is RE2 matched against the whole value (compiled as ^(?:re)$).
// ignore_case folds ASCII letters for exact, prefix, suffix and contains,
// and adds (?i) (Unicode folding) to a regex.
//
// Query names and values are percent-decoded ("+" is a space) before they
// are compared, into fixed stack buffers of 256 bytes (names) and 2048
// bytes (values). A name or value longer than that, or one with a malformed
// escape, is compared as sent, undecoded. A regex condition on a value that
// needs decoding costs one allocation; every other path allocates nothing.
//
// # Buckets
//
// Sticky routing and experiments hash a key into one of Buckets (10,000)
// buckets with a fixed function that is part of the compatibility contract
// (golden-tested; changing it moves users):
//
//	bucket = FNV-1a-32(name + ":" + key) % 10000
//
// over the bytes of the string, where name is the service name for sticky
// routing and the experiment name for experiments (so experiments are
// independent of each other and of routing). FNV-1a-32 starts from
// 2166136261 and, for each byte, XORs the byte in and multiplies by
// 16777619 modulo 2^32.
//
// Worked example: the default experiment "default" with variants A 50 / B
// 50 and the key "user-123": FNV-1a-32("default:user-123") = 1760370338
// (0x68ed1ea2), and 1760370338 % 10000 = 338. Variants own consecutive
// ranges in declared order, A [0, 5000) and B [5000, 10000), so user-123
// gets A. To reproduce in Python:
//
//	h = 2166136261
//	for b in b"default:user-123": h = ((h ^ b) * 16777619) % 2**32
//	print(h % 10000)  # 338
//
// For sticky routing the versions' ranges are laid out with the non-stable
// versions first, in declared order, and the stable version last. With the
// default service (stable v1 80, v2 20), v2 owns [0, 2000) and v1 [2000,
// 10000); "api:user-123" hashes to bucket 1301, so user-123 is pinned to v2.
//
// Monotonicity: for a two-version service the canary owns [0, share), so
// raising its share only moves users from stable to canary, and lowering it
// only moves them back. With more versions, a change is monotone in the
// same sense when only the last non-stable version and the stable version
// trade share (they are adjacent at the end of the range). Changing an
// earlier non-stable version's share shifts the ranges of the non-stable
// versions declared after it, which moves some of their users.
//
// # Round-robin
//
// Unkeyed requests follow nginx's smooth weighted round-robin, which is
// deterministic and periodic: the whole cycle (period at most 10,000 after
// dividing the weights by their gcd) is computed at compile time and
// requests index it with an atomic counter, so concurrent decisions are
// lock-free and together follow the exact sequence. The first request of a
// fresh table goes to the largest weight (ties: the first declared). Over
// any run of consecutive requests each version stays within one request of
// its exact share for two versions, and within two in general. A version
// with weight 0 never gets weighted or sticky traffic, only rule matches.
// Tables derived with WithWeights or CompileNext keep the position of every
// service whose weights did not change.
//
// # Configuration
//
// Parse reads YAML strictly (see Parse) and Compile validates (see Compile);
// Load does both and puts the YAML line in every error. Weights are
// percentages with at most two decimals, kept as basis points (1 bp =
// 0.01 %). Names (services, versions, variants, experiments) keep their case
// and are limited to HTTP token characters; two names that differ only in
// case are an error, since they would be confused in headers, URLs and
// metrics.
package split
