package model

import (
	. "github.com/gomlx/gomlx/core/graph"
)

// linear returns x·wᵀ for x [..., in] and w [out, in] (the layout of every
// weight matrix here), with the weight gradient formed so that GoMLX's go
// backend moves as little memory as it can.
//
// Why: the go backend's matmul wants the left operand's contracting axis
// last. The weight gradient dW = dyᵀ·x contracts the token axis, which is
// first in both dy and x, so GoMLX's own gradient transposes both of them
// (for the LM head that is the [tokens, vocab] dlogits: 33 MB a step of
// the tiny model). Here dW is instead the one product that needs only the
// smaller transposes: dyᵀ·x with dy transposed when out ≤ in, else
// (xᵀ·dy)ᵀ, which transposes x and the [in, out] result. The input
// gradient dy·w needs no transpose and is GoMLX's own. The values are the
// same sums; only which buffer is transposed differs (the test compares
// both gradients with GoMLX's).
//
// How: dy is known only during the backward pass, so the identity on the
// output records it, and the identity on w, whose gradient is asked for
// after the output's, returns dW built from it. GoMLX's own dW is then
// unused and the backend drops it.
func linear(x, w *Node) *Node {
	in, out := x.Shape().Dim(-1), w.Shape().Dim(0)
	dims := append([]int(nil), x.Shape().Dimensions...)
	dims[len(dims)-1] = out
	x2 := Reshape(x, -1, in) // [N,in]
	var dy *Node             // [N,out], set in the backward pass
	wg := weightHook(w, func(_, _ *Node) *Node {
		if dy == nil {
			panic("model.linear: weight gradient asked for before the output's")
		}
		if out <= in {
			return DotGeneral(Transpose(dy, 0, 1), []int{1}, nil, x2, []int{0}, nil) // [out,in]
		}
		return Transpose(DotGeneral(Transpose(x2, 0, 1), []int{1}, nil, dy, []int{0}, nil), 0, 1) // [in,out]ᵀ
	})
	y := IdentityWithCustomGradient(DotGeneral(x2, []int{1}, nil, wg, []int{1}, nil), func(_, v *Node) *Node {
		dy = v
		return v
	})
	return Reshape(y, dims...)
}

// blockLinear is linear for a batch of blocks: x [n,b,in] and w [n,out,in]
// give [n,b,out], block i using w[i] (the expert blocks of dispatchMoE).
// Its weight gradient transposes the smaller of dy and x, as linear's.
func blockLinear(x, w *Node) *Node {
	in, out := x.Shape().Dim(2), w.Shape().Dim(1)
	var dy *Node // [n,b,out]
	wg := IdentityWithCustomGradient(w, func(_, _ *Node) *Node {
		if dy == nil {
			panic("model.blockLinear: weight gradient asked for before the output's")
		}
		batch := []int{0}
		if out <= in {
			return DotGeneral(Transpose(dy, 1, 2), []int{2}, batch, x, []int{1}, batch) // [n,out,in]
		}
		return Transpose(DotGeneral(Transpose(x, 1, 2), []int{2}, batch, dy, []int{1}, batch), 1, 2)
	})
	return IdentityWithCustomGradient(DotGeneral(x, []int{2}, []int{0}, wg, []int{2}, []int{0}), func(_, v *Node) *Node {
		dy = v
		return v
	})
}
