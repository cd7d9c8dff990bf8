//go:build goexperiment.simd

package packing

import (
	"encoding/binary"
	"math/bits"
	"simd/archsimd"
)

// Staging encodes every token the ingester stores (Low16), on the same
// core as Kafka and Badger: in scalar Go, the encoding took 1.9 ns a
// token, 30 times the copy Fixed32 makes, and with AVX2 0.7 ns
// (BenchmarkAppendEncoded).
func init() {
	if archsimd.X86.AVX2() {
		highTokens = highTokensAVX2
		putLowHalves = putLowHalvesAVX2
		putHighTokens = putHighTokensAVX2
	}
}

// highTokensAVX2 is highTokens eight tokens at a time.
func highTokensAVX2(toks []uint32) int {
	zero := archsimd.BroadcastUint32x8(0)
	var low archsimd.Int32x8 // minus the low tokens, per lane
	i := 0
	for ; i+8 <= len(toks); i += 8 {
		x := archsimd.LoadUint32x8(toks[i : i+8])
		low = low.Add(x.ShiftAllRight(16).Equal(zero).ToInt32x8())
	}
	var lanes [8]int32
	low.StoreArray(&lanes)
	n := i
	for _, v := range lanes {
		n += int(v)
	}
	return n + highTokensScalar(toks[i:])
}

// lowOrder puts the halves of two packed vectors back in token order:
// packing works within each 128-bit half, so it leaves tokens 0-3 and
// 8-11 in the low half, 4-7 and 12-15 in the high.
var lowOrder = [8]uint32{0, 1, 4, 5, 2, 3, 6, 7}

// putLowHalvesAVX2 is putLowHalves sixteen tokens at a time: mask each to
// its low half, pack two vectors' to 16 bits (no saturation can happen),
// reorder, store 32 bytes; count the tokens whose high half is zero.
func putLowHalvesAVX2(out []byte, toks []uint32) int {
	mask := archsimd.BroadcastUint32x8(0xffff)
	zero := archsimd.BroadcastUint32x8(0)
	order := archsimd.LoadUint32x8Array(&lowOrder)
	var low archsimd.Int32x8 // minus the low tokens, per lane
	i := 0
	for ; i+16 <= len(toks) && 2*i+32 <= len(out); i += 16 {
		a := archsimd.LoadUint32x8(toks[i : i+8])
		b := archsimd.LoadUint32x8(toks[i+8 : i+16])
		low = low.Add(a.ShiftAllRight(16).Equal(zero).ToInt32x8()).Add(b.ShiftAllRight(16).Equal(zero).ToInt32x8())
		p := a.And(mask).BitsToInt32().SaturateToUint16ConcatGrouped(b.And(mask).BitsToInt32())
		p.ReshapeToUint32s().Permute(order).ReshapeToUint8s().Store(out[2*i : 2*i+32])
	}
	var lanes [8]int32
	low.StoreArray(&lanes)
	high := i
	for _, v := range lanes {
		high += int(v)
	}
	return high + putLowHalvesScalar(out[2*i:], toks[i:])
}

// putHighTokensAVX2 finds high tokens eight at a time by a mask.
func putHighTokensAVX2(out []byte, toks []uint32) int {
	zero := archsimd.BroadcastUint32x8(0)
	p, i := 0, 0
	for ; i+8 <= len(toks); i += 8 {
		m := archsimd.LoadUint32x8(toks[i : i+8]).ShiftAllRight(16).NotEqual(zero).ToBits()
		for m != 0 {
			j := i + bits.TrailingZeros8(m)
			m &= m - 1
			p += binary.PutUvarint(out[p:], uint64(j))
			p += binary.PutUvarint(out[p:], uint64(toks[j]>>16))
		}
	}
	return p + putHighTokensScalar(out[p:], toks[i:], i)
}
