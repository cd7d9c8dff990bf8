//go:build goexperiment.simd

package ingest

import (
	"math/bits"
	"simd/archsimd"
)

func init() {
	if archsimd.X86.AVX2() {
		copyPlain = copyPlainAVX2
	}
}

// copyPlainAVX2 is copyPlain 32 bytes at a time. JSON text of real
// documents has an escape every 20-30 bytes (newlines, quotes, tabs in
// code), so most calls end in their first step: what it saves is the three
// or four eight-byte steps before each escape.
func copyPlainAVX2(b, out []byte, i, o int) (int, int) {
	quote := archsimd.BroadcastUint8x32('"')
	backslash := archsimd.BroadcastUint8x32('\\')
	control := archsimd.BroadcastUint8x32(0x1f)
	// o <= i throughout and len(out) == len(b): the bound on i bounds o.
	for i+32 <= len(b) && o+32 <= len(out) {
		x := archsimd.LoadUint8x32(b[i : i+32])
		x.Store(out[o : o+32])
		special := x.Equal(quote).Or(x.Equal(backslash)).Or(x.Min(control).Equal(x))
		if m := special.ToBits(); m != 0 {
			k := bits.TrailingZeros32(m)
			return i + k, o + k
		}
		i, o = i+32, o+32
	}
	return i, o
}
