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

	scores := attnScores(q, k)                           // [B,H,S,S]
	scores = MulScalar(scores, 1/math.Sqrt(float64(dh))) // scaled dot product
	scores = Where(mask, scores, negInf(g, scores.DType()))
	probs := Softmax(scores, -1)                                       // [B,H,S,S]; the diagonal keeps every row finite
	out := attnMix(probs, v)                                           // [B,H,S,dh]
	out = Reshape(TransposeAllAxes(out, 0, 2, 1, 3), b, seqLen, nh*dh) // [B,S,H·dh]
	return linear(out, wo)                                             // [B,S,d]
}

// attnScores is q·kᵀ per head, q [B,H,Sq,dh] and k [B,H,Sk,dh] ->
// [B,H,Sq,Sk], and attnMix is p·v, p [B,H,Sq,Sk] and v [B,H,Sk,dh] ->
// [B,H,Sq,dh]. Their key-side gradients are built as linear's weight
// gradient is, for the same reason: dk = dsᵀ·q and dv = pᵀ·do contract
// the query axis, which GoMLX's gradient does by transposing the [S,S]
// matrix (ds or p), the go backend's matmul wanting the left operand's
// contracting axis last. Here they are (qᵀ·ds)ᵀ and (doᵀ·p)ᵀ instead: two
// transposes of [S,dh] matrices, together half the elements when dh = S/4
// (the go backend's transpose costs ~6 ns an element). The query-side
// gradients (ds·k, do·vᵀ) need no transpose and are GoMLX's own.
func attnScores(q, k *Node) *Node {
	batch := []int{0, 1}
	return withKeyGrad(k, func(kg *Node) *Node {
		return DotGeneral(q, []int{3}, batch, kg, []int{3}, batch)
	}, func(ds *Node) *Node { // dk = (qᵀ·ds)ᵀ
		return Transpose(DotGeneral(Transpose(q, 2, 3), []int{3}, batch, ds, []int{2}, batch), 2, 3)
	})
}

func attnMix(p, v *Node) *Node {
	batch := []int{0, 1}
	return withKeyGrad(v, func(vg *Node) *Node {
		return DotGeneral(p, []int{3}, batch, vg, []int{2}, batch)
	}, func(do *Node) *Node { // dv = (doᵀ·p)ᵀ
		return Transpose(DotGeneral(Transpose(do, 2, 3), []int{3}, batch, p, []int{2}, batch), 2, 3)
	})
}

// withKeyGrad returns f(b) with b's gradient grad(dy), dy being the
// gradient of f's output: the identity on the output records dy in the
// backward pass, and the identity on b, whose gradient is asked for after
// the output's, returns grad(dy) (linear's trick; GoMLX's own gradient for
// b is then unused and dropped).
func withKeyGrad(b *Node, f func(b *Node) *Node, grad func(dy *Node) *Node) *Node {
	var dy *Node
	bg := IdentityWithCustomGradient(b, func(_, _ *Node) *Node {
		if dy == nil {
			panic("model.attention: key gradient asked for before the output's")
		}
		return grad(dy)
	})
	return IdentityWithCustomGradient(f(bg), func(_, v *Node) *Node {
		dy = v
		return v
	})
}
