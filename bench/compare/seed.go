package compare

import (
	"github.com/trafficsplit/splitter/bench/loadgen"
	"github.com/trafficsplit/splitter/split"
)

// SeedConfig is the seed's routing configuration (the built-in default of
// docs/configuration.md) passed as a file, as an operator would: service
// api on every host, v1 80 / v2 20, x-beta: true pins v2, sticky on
// x-user-id, and an A/B experiment on x-user-id written to x-variant.
const SeedConfig = split.DefaultYAML

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
