package train

import "testing"

// segmentSlots: the smallest power of two of at least 8 above every
// segment id (padding -1 ignored), capped at the sequence length.
func TestSegmentSlots(t *testing.T) {
	pad := int32(-1)
	for _, c := range []struct {
		segs [][]int32
		ns   int
		want int
	}{
		{[][]int32{{0, 0, pad}}, 128, 8},
		{[][]int32{{0, 1, 2}, {7, 7, 7}}, 128, 8},
		{[][]int32{{0, 8}}, 128, 16},
		{[][]int32{{pad, pad}}, 128, 8},
		{[][]int32{{0, 100}}, 128, 128},
		{[][]int32{{0, 5}}, 4, 4},
	} {
		if got := segmentSlots(c.segs, c.ns); got != c.want {
			t.Errorf("segmentSlots(%v, %d) = %d, want %d", c.segs, c.ns, got, c.want)
		}
	}
}
