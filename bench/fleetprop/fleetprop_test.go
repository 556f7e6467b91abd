package fleetprop_test

import (
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/bench/fleetprop"
	"github.com/trafficsplit/splitter/internal/testbed"
)

// A short run of the three setups against a real 3-member etcd cluster: every change reaches
// every replica and the report renders. It measures nothing worth
// keeping (the machine is busy with other tests) and asserts no timing.
func TestRunSmall(t *testing.T) {
	etcd := testbed.RequireEtcd(t)
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testbed.BuildSplitter(t.Context(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := fleetprop.Run(t.Context(), fleetprop.Config{
		SplitterBin: bin, EtcdBin: etcd, Changes: 3, Processes: 2, Watchers: 3,
		PollInterval: 5 * time.Millisecond, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Setups) != 3 {
		t.Fatalf("setups = %+v", res.Setups)
	}
	for _, s := range res.Setups {
		if s.Changes != 3 || s.AllP50ms <= 0 || s.AllMaxms < s.AllP99ms || s.AllP99ms < s.AllP50ms || s.MemoryKiB <= 0 {
			t.Fatalf("setup %+v", s)
		}
	}
	var b strings.Builder
	fleetprop.Render(&b, res)
	for _, want := range []string{"| processes | 2 | 3 |", "| watchers | 3 | 3 |", "| watchers, member killed | 3 | 3 |", "SIGKILLed", "kubelet"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, b.String())
		}
	}
}
