package compare

import "github.com/trafficsplit/splitter/bench/loadgen"

// SeedConfig is the seed's routing configuration (SPEC §4), written out so
// that the benchmarks do not depend on the built-in default: service api
// on every host, v1 80 / v2 20, x-beta: true pins v2, sticky on x-user-id,
// and an A/B experiment on x-user-id written to x-variant.
const SeedConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id}
    rules:
      - name: beta-testers
        when: [{header: x-beta, exact: "true"}]
        version: v2
experiments:
  - name: default
    key: {header: x-user-id}
    variants: {A: 50, B: 50}
    header: x-variant
`

// SeedExpect is what every correct splitter answer looks like on
// SeedConfig.
func SeedExpect() loadgen.Expect {
	return loadgen.Expect{
		RouteHeader:   "x-route-version",
		Versions:      []string{"v1", "v2"},
		PinnedVersion: "v2",
		VariantHeader: "x-variant",
		Variants:      []string{"A", "B"},
	}
}
