//go:build goexperiment.simd

package train

import "simd/archsimd"

// The AVX2 kernels of the host AdamW: eight lanes of the scalar code's
// operations, each rounded to float32 as there (no fused multiply-add),
// so results are bit-identical to adamWScalar and sumSquaresScalar. The
// scalar update is bound by its square roots and divisions; with eight
// lanes the pass is bound by memory instead.
func init() {
	if archsimd.X86.AVX2() {
		adamWChunk = adamWAVX2
		sumSquares = sumSquaresAVX2
		vectorKernels = true
	}
}

func adamWAVX2(k adamWScalars, g, p, m, v []float32) {
	n := len(g) &^ 7
	p, m, v = p[:len(g)], m[:len(g)], v[:len(g)]
	coef := archsimd.BroadcastFloat32x8(k.coef)
	keep := archsimd.BroadcastFloat32x8(k.keep)
	step := archsimd.BroadcastFloat32x8(k.stepSize)
	bc2 := archsimd.BroadcastFloat32x8(k.bc2Sqrt)
	w1 := archsimd.BroadcastFloat32x8(k.w1)
	b2 := archsimd.BroadcastFloat32x8(k.b2)
	w2 := archsimd.BroadcastFloat32x8(k.w2)
	eps := archsimd.BroadcastFloat32x8(k.eps)
	for j := 0; j < n; j += 8 {
		gr := archsimd.LoadFloat32x8(g[j:]).Mul(coef)
		pj := archsimd.LoadFloat32x8(p[j:])
		if k.decay {
			pj = pj.Mul(keep)
		}
		mj := archsimd.LoadFloat32x8(m[j:])
		mj = mj.Add(w1.Mul(gr.Sub(mj)))
		vj := archsimd.LoadFloat32x8(v[j:]).Mul(b2).Add(w2.Mul(gr).Mul(gr))
		d := vj.Sqrt().Div(bc2).Add(eps)
		pj.Add(step.Mul(mj).Div(d)).Store(p[j:])
		mj.Store(m[j:])
		vj.Store(v[j:])
	}
	adamWScalar(k, g[n:], p[n:], m[n:], v[n:])
}

func sumSquaresAVX2(g []float32) float64 {
	var total float64
	var lanes [8]float32
	for lo := 0; lo < len(g); lo += 256 {
		blk := g[lo:min(len(g), lo+256)]
		n8 := len(blk) &^ 7
		acc := archsimd.BroadcastFloat32x8(0)
		for j := 0; j < n8; j += 8 {
			x := archsimd.LoadFloat32x8(blk[j:])
			acc = acc.Add(x.Mul(x))
		}
		acc.StoreArray(&lanes)
		for _, x := range lanes {
			total += float64(x)
		}
		for _, x := range blk[n8:] {
			total += float64(x) * float64(x)
		}
	}
	return total
}
