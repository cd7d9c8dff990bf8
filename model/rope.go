package model

import (
	"math"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// ropeTables returns cos and sin tables [S, dh] for rotary embeddings in the
// "rotate half" layout of OLMo-core / GPT-NeoX: channel i and i+dh/2 share the
// frequency theta^(-2i/dh). They are computed once on the host in float64 and
// rounded to float32, so they are exact whatever the backend.
func ropeTables(seqLen, headDim int, theta float64) (cos, sin *tensors.Tensor) {
	half := headDim / 2
	c := make([]float32, seqLen*headDim)
	s := make([]float32, seqLen*headDim)
	for p := range seqLen {
		for i := range half {
			invFreq := 1 / math.Pow(theta, float64(2*i)/float64(headDim))
			a := float64(p) * invFreq
			cv, sv := float32(math.Cos(a)), float32(math.Sin(a))
			c[p*headDim+i], c[p*headDim+half+i] = cv, cv
			s[p*headDim+i], s[p*headDim+half+i] = sv, sv
		}
	}
	return tensors.FromFlatDataAndDimensions(c, seqLen, headDim),
		tensors.FromFlatDataAndDimensions(s, seqLen, headDim)
}

// rope holds the cos/sin tables of one graph, shaped [1,1,S,dh] to broadcast
// over [B,H,S,dh].
type rope struct{ cos, sin *Node }

func newRoPE(g *Graph, seqLen, headDim int, theta float64) rope {
	cosT, sinT := ropeTables(seqLen, headDim, theta)
	return rope{
		cos: Reshape(ConstTensor(g, cosT), 1, 1, seqLen, headDim), // [1,1,S,dh]
		sin: Reshape(ConstTensor(g, sinT), 1, 1, seqLen, headDim), // [1,1,S,dh]
	}
}

// apply rotates x [B,H,S,dh] by position p = 0..S-1 of its row:
// x·cos + rotateHalf(x)·sin with rotateHalf([x1, x2]) = [-x2, x1].
// Positions are absolute in the packed row (they do not restart per document).
func (r rope) apply(x *Node) *Node {
	dh := x.Shape().Dim(3)
	cos, sin := r.cos, r.sin
	x1 := SliceAxis(x, 3, AxisRange(0, dh/2))   // [B,H,S,dh/2]
	x2 := SliceAxis(x, 3, AxisRange(dh/2, dh))  // [B,H,S,dh/2]
	rot := Concatenate([]*Node{Neg(x2), x1}, 3) // [B,H,S,dh]
	return Add(Mul(x, cos), Mul(rot, sin))
}
