package model

import (
	"math"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// attentionMask builds the boolean mask [B,1,S,S] (true = may attend) from the
// attention segments [B,S]:
//   - docMask: key in the query's segment AND key <= query (intra-document
//     causal attention, the reference's EMO runs);
//   - otherwise plain causal attention across packed documents, except that
//     padding keys are hidden from other positions.
func attentionMask(attnSeg *Node, docMask bool) *Node {
	g := attnSeg.Graph()
	seqLen := attnSeg.Shape().Dim(1)
	causal := InsertAxes(LowerTriangular(g, seqLen), 0) // [1,S,S]: k <= q
	segQ := InsertAxes(attnSeg, -1)                     // [B,S,1]
	segK := InsertAxes(attnSeg, 1)                      // [B,1,S]
	var allowed *Node
	if docMask {
		allowed = Equal(segQ, segK) // [B,S,S]
	} else {
		keyReal := GreaterOrEqual(segK, ScalarZero(g, segK.DType()))                    // [B,1,S]
		diag := InsertAxes(Equal(Iota(g, shapes.Make(dtypes.Int32, seqLen, seqLen), 0), // [1,S,S]
			Iota(g, shapes.Make(dtypes.Int32, seqLen, seqLen), 1)), 0)
		allowed = Or(keyReal, diag) // [B,S,S] by broadcasting
	}
	mask := And(allowed, causal) // [B,S,S]
	return InsertAxes(mask, 1)   // [B,1,S,S]
}

// attention is multi-head causal self-attention with RoPE and no biases
// (OLMo-core's default block attention): x [B,S,d] -> [B,S,d].
// Weights are [out,in] like PyTorch Linear.weight (also the go backend's
// fastest matmul layout): w_q, w_k, w_v [H·dh,d] and w_out [d,H·dh].
func attention(s *gmodel.Scope, cfg *Config, x, mask *Node, rp rope) *Node {
	g := x.Graph()
	b, seqLen, d := x.Shape().Dim(0), x.Shape().Dim(1), x.Shape().Dim(2)
	nh, dh := cfg.NHeads, cfg.HeadDimOrDefault()
	proj := func(name string, out, in int) *Node {
		return s.VariableWithShape(name, shapes.Make(x.DType(), out, in)).NodeValue(g)
	}
	wq, wk, wv := proj("w_q", nh*dh, d), proj("w_k", nh*dh, d), proj("w_v", nh*dh, d)
	wo := proj("w_out", d, nh*dh)

	heads := func(w *Node) *Node { // [B,S,d] -> [B,H,S,dh]
		return TransposeAllAxes(Reshape(linear(x, w), b, seqLen, nh, dh), 0, 2, 1, 3)
	}
	q, k, v := rp.apply(heads(wq)), rp.apply(heads(wk)), heads(wv) // [B,H,S,dh]

	scores := Einsum("bhqd,bhkd->bhqk", q, k)            // [B,H,S,S]
	scores = MulScalar(scores, 1/math.Sqrt(float64(dh))) // scaled dot product
	scores = Where(mask, scores, negInf(g, scores.DType()))
	probs := Softmax(scores, -1)                                       // [B,H,S,S]; the diagonal keeps every row finite
	out := Einsum("bhqk,bhkd->bhqd", probs, v)                         // [B,H,S,dh]
	out = Reshape(TransposeAllAxes(out, 0, 2, 1, 3), b, seqLen, nh*dh) // [B,S,H·dh]
	return linear(out, wo)                                             // [B,S,d]
}
