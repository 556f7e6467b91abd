package console

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRing(t *testing.T) {
	type reading struct {
		bucket int64
		cum    uint64
	}
	tests := []struct {
		name     string
		size     int
		readings []reading
		end      int64
		want     []uint64 // series of len(want) ending at end
		sumFrom  int64
		wantSum  uint64
	}{
		{
			name:     "the first reading is only the baseline",
			size:     4,
			readings: []reading{{10, 500}},
			end:      10, want: []uint64{0, 0, 0, 0}, sumFrom: 0, wantSum: 0,
		},
		{
			name:     "growth lands in the bucket of the reading",
			size:     4,
			readings: []reading{{10, 500}, {11, 510}, {12, 530}, {12, 531}},
			end:      12, want: []uint64{0, 0, 10, 21}, sumFrom: 11, wantSum: 31,
		},
		{
			name:     "a counter that went backwards restarted: all of it is growth",
			size:     4,
			readings: []reading{{1, 100}, {2, 150}, {3, 7}},
			end:      3, want: []uint64{0, 0, 50, 7}, sumFrom: 0, wantSum: 57,
		},
		{
			name:     "buckets older than the ring are forgotten",
			size:     3,
			readings: []reading{{1, 0}, {2, 1}, {3, 3}, {4, 6}, {5, 10}},
			end:      5, want: []uint64{2, 3, 4}, sumFrom: 0, wantSum: 9,
		},
		{
			name:     "a quiet bucket reads zero, not an older value in its slot",
			size:     3,
			readings: []reading{{1, 0}, {2, 5}, {6, 9}},
			end:      6, want: []uint64{0, 0, 4}, sumFrom: 0, wantSum: 4,
		},
		{
			name:     "a series longer than what was seen is zero-padded",
			size:     5,
			readings: []reading{{0, 0}, {1, 2}},
			end:      1, want: []uint64{0, 0, 0, 0, 2}, sumFrom: -10, wantSum: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(tc.size)
			for _, rd := range tc.readings {
				r.observe(rd.bucket, rd.cum)
			}
			got := make([]uint64, len(tc.want))
			r.series(tc.end, got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("series (-want +got):\n%s", diff)
			}
			if s := r.sum(tc.sumFrom, tc.end); s != tc.wantSum {
				t.Errorf("sum(%d, %d) = %d, want %d", tc.sumFrom, tc.end, s, tc.wantSum)
			}
			if len(r.vals) != tc.size || len(r.slots) != tc.size {
				t.Errorf("ring grew to %d values, %d slots; want %d (fixed memory)", len(r.vals), len(r.slots), tc.size)
			}
		})
	}
}
