package fleet

import (
	"strings"
	"testing"
	"time"
)

// The default cadence is the one the fault tests and docs/fleet.md state;
// a raised etcd_follow_interval scales every bound with it.
func TestCadence(t *testing.T) {
	for _, tc := range []struct {
		name  string
		every time.Duration
		want  cadence
	}{
		{name: "default", every: 0, want: cadence{progressEvery: 500 * time.Millisecond, followBound: time.Second, probeInterval: 2 * time.Second,
			slowBound: 5 * time.Second, maxStallBound: 8 * time.Second, calmAfter: 10 * time.Second, applyWait: 3 * time.Second}},
		{name: "raised for a large fleet", every: 2 * time.Second, want: cadence{progressEvery: 2 * time.Second, followBound: 4 * time.Second, probeInterval: 8 * time.Second,
			slowBound: 20 * time.Second, maxStallBound: 32 * time.Second, calmAfter: 40 * time.Second, applyWait: 12 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := newCadence(tc.every); got != tc.want {
				t.Fatalf("newCadence(%v) = %+v, want %+v", tc.every, got, tc.want)
			}
		})
	}
}

// A watch is given up after the cadence's followBound of silence, and a
// replica follows only while a progress notification is that recent.
func TestFollowBoundsFromCadence(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name      string
		every     time.Duration
		silent    time.Duration
		stalled   bool
		following bool
	}{
		{name: "default, within the bound", every: 0, silent: 900 * time.Millisecond, following: true},
		{name: "default, past the bound", every: 0, silent: 1100 * time.Millisecond, stalled: true},
		{name: "raised, silent past the default bound", every: 2 * time.Second, silent: 3 * time.Second, following: true},
		{name: "raised, past its own bound", every: 2 * time.Second, silent: 4100 * time.Millisecond, stalled: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &follow{c: newCadence(tc.every)}
			f.started(t0, "m0")
			f.answered(t0, 10, true)
			now := t0.Add(tc.silent)
			why := f.stalled(now)
			if (why != "") != tc.stalled || (tc.stalled && !strings.Contains(why, "no answer from the watch")) {
				t.Fatalf("stalled after %v = %q, want stalled %v", tc.silent, why, tc.stalled)
			}
			if got := f.following(now); got != tc.following {
				t.Fatalf("following after %v = %v, want %v", tc.silent, got, tc.following)
			}
		})
	}
}
