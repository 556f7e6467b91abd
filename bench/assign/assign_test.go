package assign

import (
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/bench/compare"
	"github.com/trafficsplit/splitter/bench/viaenvoy"
	"github.com/trafficsplit/splitter/split"
)

func TestConfigAssignsKeys(t *testing.T) {
	tb, err := split.Load([]byte(Config), split.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := tb.Service("api")
	if svc.Sticky == nil || svc.Sticky.Header != "x-user-id" || svc.Sticky.Assign == nil || svc.Sticky.Assign.Cookie != "splitter-id" {
		t.Fatalf("sticky %+v", svc.Sticky)
	}
}

func TestPairsAndRender(t *testing.T) {
	run := func(round int, mode string, rps, envoyCPU, splitterCPU float64) viaenvoy.Run {
		return viaenvoy.Run{Round: round, Mode: mode, RPS: rps, P50us: 1000, P99us: 2000, CPU: viaenvoy.CPU{Envoy: envoyCPU, Splitter: splitterCPU}}
	}
	e := &viaenvoy.Result{
		Runs: []viaenvoy.Run{
			run(2, "ext_proc keyed", 1000, 100, 20), run(1, "ext_proc keyed", 1000, 100, 20),
			run(1, "ext_proc assigned", 900, 110, 30), run(2, "ext_proc assigned", 800, 120, 30),
		},
		Modes: []viaenvoy.Mode{
			{Mode: "ext_proc keyed", Stats: map[string]uint64{"ext_proc.streams_started": 100, "ext_proc.stream_msgs_sent": 100}},
			{Mode: "ext_proc assigned", Stats: map[string]uint64{"ext_proc.streams_started": 100, "ext_proc.stream_msgs_sent": 200}},
		},
	}
	k, s := runsOf(e, "ext_proc keyed"), runsOf(e, "ext_proc assigned")
	if k[0].Round != 1 || s[1].Round != 2 {
		t.Fatal("runs not in round order")
	}
	if got := messagesPerStream(e, "ext_proc assigned"); got != 2 {
		t.Errorf("messages per stream %v, want 2", got)
	}
	p := Pair{Adapter: "ext_proc", Ratios: map[string]compare.Ratio{"rps": {Median: 0.85, Min: 0.8, Max: 0.9}}, KeyedMessages: 1, AssignedMessages: 2}
	var b strings.Builder
	Render(&b, &Result{Machine: "test", Envoy: e, Pairs: []Pair{p}})
	for _, want := range []string{"| ext_proc | 0.85 (0.80..0.90) |", "1.00 → 2.00", "Machine: test."} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("rendered section lacks %q:\n%s", want, b.String())
		}
	}
}
