package chaos

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/testbed"
)

var (
	long       = flag.Bool("chaos.long", false, "the long form: every fault at the issue's lengths, for -chaos.seeds passes, at the issue's bounds")
	seeds      = flag.Int("chaos.seeds", 3, "passes of the long form (seeds 1..N)")
	reportPath = flag.String("chaos.report", "", "write the markdown report here")
)

// slack multiplies the timing bounds in the short form: it runs inside
// `make test`, beside every other suite, on a shared 2-core machine (a
// stall of the machine is not a stall of the fleet). The long form
// (`make chaos`) holds the bounds.
const slack = 2

// TestChaos runs the fleet under every fault with a 3-member etcd
// cluster, three splitter processes and three Envoys, records the history
// and checks it (docs/fleet.md, "Under faults"). The short form is one
// pass; `make chaos` runs the long form.
func TestChaos(t *testing.T) {
	etcd := testbed.RequireEtcd(t)
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	envoyBin, err := testbed.FindEnvoy(root)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (CI is set, so this is a failure; run `make envoy`)", err)
		}
		t.Skip(err)
	}
	splitter := os.Getenv("SPLITTER_BIN")
	if splitter == "" {
		if splitter, err = testbed.BuildSplitter(t.Context(), root, t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	bin := Binaries{Splitter: splitter, Etcd: etcd, Envoy: envoyBin}
	timing, bounds, n, form := ShortTiming(), DefaultBounds(), 1, "short form (one pass, in make test; timing bounds doubled)"
	bounds.Behind *= slack
	bounds.AckGap *= slack
	bounds.Follow *= slack
	bounds.Converge *= slack
	if *long {
		timing, bounds, n, form = LongTiming(), DefaultBounds(), *seeds, "long form (make chaos)"
	}
	var passes []*Pass
	for seed := 1; seed <= n; seed++ {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			tb := testbed.ForTest(t)
			log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
			p, err := RunPass(t.Context(), tb, bin, Options{Seed: uint64(seed), Timing: timing, Bounds: bounds, Log: log})
			if err != nil {
				t.Fatal(err)
			}
			passes = append(passes, p)
			t.Logf("seed %d: %v, %d faults", seed, p.Took.Round(time.Second), len(p.History.Faults))
			if !p.Held() {
				t.Errorf("checks failed (bed in %s):\n%s", p.Dir, p.Failures())
			}
		})
	}
	report := Report(passes, form, timing.Settle)
	t.Log("\n" + report)
	if *reportPath != "" {
		if err := os.WriteFile(*reportPath, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
