package model

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// experts holds one layer's expert weights: SwiGLU_e(x) = W2_e(silu(W1_e x) * W3_e x).
// The shared expert (if any) is the last one, index E-1, as in the reference.
type experts struct {
	w1, w3 *Node // [E,h,d] ([out,in] like PyTorch Linear.weight)
	w2     *Node // [E,d,h]
	// merged, if set, maps each weight to its gradient merger
	// (withMergedGradients).
	merged map[*Node]*mergedGrad
}

func newExperts(s *gmodel.Scope, cfg *Config, g *Graph, dtype dtypes.DType) experts {
	e, d, h := cfg.NumExperts, cfg.DModel, cfg.ExpertHidden
	v := func(name string, dims ...int) *Node {
		return s.VariableWithShape(name, shapes.Make(dtype, dims...)).NodeValue(g)
	}
	return experts{w1: v("w1", e, h, d), w3: v("w3", e, h, d), w2: v("w2", e, d, h)}
}

// routed returns the weights of the E' routable experts.
func (ex experts) routed(ep int) experts {
	sl := func(w *Node) *Node { return SliceAxis(w, 0, AxisRange(0, ep)) }
	return experts{w1: sl(ex.w1), w3: sl(ex.w3), w2: sl(ex.w2)}
}

func silu(x *Node) *Node { return Mul(x, Sigmoid(x)) }

// shared runs the shared expert (index E-1) on every token with weight 1.0.
func (ex experts) shared(x *Node) *Node {
	last := ex.w1.Shape().Dim(0) - 1
	pick := func(w *Node) *Node { return Squeeze(SliceAxis(w, 0, AxisRange(last, last+1)), 0) }
	if ex.merged != nil {
		pick = func(w *Node) *Node { return ex.merged[w].pick(last) }
	}
	h1 := linear(x, pick(ex.w1))                  // [B,S,h]
	h3 := linear(x, pick(ex.w3))                  // [B,S,h]
	return linear(Mul(silu(h1), h3), pick(ex.w2)) // [B,S,d]
}

// gather returns w[idx] along the expert axis (w one of ex's weights).
func (ex experts) gather(w, idx *Node) *Node {
	if ex.merged != nil {
		return ex.merged[w].gather(idx)
	}
	return Gather(w, InsertAxes(idx, -1))
}

// withMergedGradients returns ex with each weight's gradient built by one
// scatter from the gradients of what dispatchMoE gathers and of the shared
// expert's slice, which must then be its only reads (the dispatch path).
// GoMLX's own gradient sums a scatter into a zero tensor and the slice's
// gradient padded with zeros to the whole tensor: two more passes over
// every expert weight each step (~2% of a small-model step).
func (ex experts) withMergedGradients() experts {
	ex.merged = map[*Node]*mergedGrad{}
	for _, w := range []**Node{&ex.w1, &ex.w3, &ex.w2} {
		m := newMergedGrad(*w)
		*w = m.w
		ex.merged[m.w] = m
	}
	return ex
}

// mergedGrad wraps one expert weight [E,...] that is read only through
// one gather and one pick. The gradients of those reads are recorded in the
// backward pass, and the identity on the weight, whose gradient is asked
// for after theirs, builds its gradient from them (linear's trick).
type mergedGrad struct {
	w        *Node
	idx      *Node // [NB] experts of the gathered blocks
	dBlocks  *Node // [NB,...]
	pickedAt int
	dPicked  *Node // [...]
	gathers  int
	picks    int
}

func newMergedGrad(v *Node) *mergedGrad {
	m := &mergedGrad{}
	m.w = weightHook(v, func(_, _ *Node) *Node {
		var g *Node
		if m.dBlocks != nil {
			g = Scatter(InsertAxes(m.idx, -1), m.dBlocks, v.Shape(), false, false)
		}
		if m.dPicked != nil {
			at := Const(v.Graph(), [][]int32{{int32(m.pickedAt)}})
			upd := InsertAxes(m.dPicked, 0)
			if g == nil {
				g = Scatter(at, upd, v.Shape(), false, false)
			} else {
				g = ScatterSum(g, at, upd, false, false) // in place: one expert's rows
			}
		}
		if g == nil {
			return ZerosLike(v)
		}
		return g
	})
	return m
}

func (m *mergedGrad) gather(idx *Node) *Node {
	if m.gathers++; m.gathers > 1 {
		panic("model: a merged-gradient expert weight is gathered once")
	}
	m.idx = idx
	return IdentityWithCustomGradient(Gather(m.w, InsertAxes(idx, -1)), func(_, v *Node) *Node {
		m.dBlocks = v
		return v
	})
}

func (m *mergedGrad) pick(e int) *Node {
	if m.picks++; m.picks > 1 {
		panic("model: a merged-gradient expert weight is picked once")
	}
	m.pickedAt = e
	return IdentityWithCustomGradient(Squeeze(SliceAxis(m.w, 0, AxisRange(e, e+1)), 0), func(_, v *Node) *Node {
		m.dPicked = v
		return v
	})
}

// denseMoE runs every routed expert on every token: y = Σ_e gate_e·SwiGLU_e(x)
// with gate_e = 0 for unchosen experts. Cost ∝ E'; for tiny configs and as
// the oracle of dispatchMoE. The gate multiplies the hidden activation before
// W2 (the same value, one matmul fewer).
func denseMoE(ex experts, x, idx, gates *Node) *Node {
	ep := ex.w1.Shape().Dim(0)
	dense := ReduceSum(Mul(OneHot(idx, ep, gates.DType()), InsertAxes(gates, -1)), 2) // [B,S,E']
	h1 := Einsum("bsd,ehd->bseh", x, ex.w1)                                           // [B,S,E',h]
	h3 := Einsum("bsd,ehd->bseh", x, ex.w3)                                           // [B,S,E',h]
	act := Mul(Mul(silu(h1), h3), InsertAxes(dense, -1))                              // [B,S,E',h]
	return Einsum("bseh,edh->bsd", act, ex.w2)                                        // [B,S,d]
}

// dispatchMoE computes the same sum with cost that follows the routed FLOPs,
// dropless and with static shapes (MegaBlocks-style block-sparse grouping):
//
//  1. Each of the A = T·k' (token, slot) assignments gets its rank among the
//     assignments to the same expert (an exclusive cumulative sum of one-hot
//     rows: a counting sort, no comparator sort). Padding tokens go to a
//     sentinel expert and are dropped.
//  2. Each expert's run is padded to a multiple of the block size Bk. All
//     runs fit in P = roundUp(A + E'·(Bk-1) + 1, Bk) rows, NB = P/Bk blocks, each
//     block owned by one expert (or empty at the tail). Assignment a lands
//     in row padOff[expert] + rank.
//  3. Token ids and gates are scattered into the rows; tokens are gathered
//     into [NB,Bk,d], each block's expert weights into [NB,h,d] / [NB,d,h],
//     and one batched matmul per projection runs all blocks.
//  4. Each assignment gathers its row back (gate already applied); the k'
//     rows of a token are summed.
//
// Cost: 6·d·h·P multiply-adds per layer instead of 6·d·h·T·E' for denseMoE,
// plus a gather of NB expert weight blocks (3·d·h each) and O(A·E')
// integer work for the ranks — the price of static shapes without a
// grouped-GEMM kernel. Gradients flow through the gathers and scatters (to
// tokens, gates and weights); the index arithmetic carries none.
//
// ex may hold more experts than the ep routable ones (the shared expert
// last): only experts below ep are gathered.
func dispatchMoE(ex experts, ep int, x, idx, gates, valid *Node, block int) *Node {
	g := x.Graph()
	b, seqLen, d := x.Shape().Dim(0), x.Shape().Dim(1), x.Shape().Dim(2)
	kp := idx.Shape().Dim(2)
	t, a := b*seqLen, b*seqLen*kp
	// One row more than the worst case, so that the last row, P-1, is always
	// empty: its output is zero (gate 0) and dropped assignments read it.
	p := (a + ep*(block-1) + 1 + block - 1) / block * block
	nb := p / block
	i32 := func(x *Node) *Node { return ConvertDType(x, dtypes.Int32) }
	iota := func(n int) *Node { return Iota(g, shapes.Make(dtypes.Int32, n), 0) }
	at := func(v, i *Node) *Node { return Gather(v, InsertAxes(i, -1)) } // v[i] along axis 0

	// 1. Rank of each assignment among those to the same expert.
	validA := Reshape(BroadcastToDims(InsertAxes(valid, -1), b, seqLen, kp), a)
	expert := StopGradient(Where(validA, Reshape(i32(idx), a), Scalar(g, dtypes.Int32, ep))) // [A], E' = dropped
	onehot := OneHot(expert, ep+1, dtypes.Int32)                                             // [A,E'+1]
	before := CumSum(onehot, 0, &CumSumOptions{Exclusive: true})                             // [A,E'+1]
	rank := ReduceSum(Mul(before, onehot), -1)                                               // [A]
	counts := SliceAxis(ReduceSum(onehot, 0), 0, AxisRange(0, ep))                           // [E']

	// 2. Padded layout: expert e owns rows [padOff_e, padOff_e + padCounts_e).
	padCounts := MulScalar(DivScalar(AddScalar(counts, block-1), block), block)
	padOff := CumSum(padCounts, 0, &CumSumOptions{Exclusive: true}) // [E']
	padEnd := Add(padOff, padCounts)                                // [E']
	row := Add(at(padOff, MinScalar(expert, int32(ep-1))), rank)
	row = StopGradient(Where(validA, row, Scalar(g, dtypes.Int32, p))) // [A]; dropped ones are scattered to the spare row P
	// Block n belongs to the first expert whose padded run ends after the block starts.
	blockStart := MulScalar(iota(nb), block)                                                         // [NB]
	blockExpert := ReduceSum(i32(LessOrEqual(InsertAxes(padEnd, 0), InsertAxes(blockStart, -1))), 1) // [NB]
	blockExpert = StopGradient(MinScalar(blockExpert, int32(ep-1)))                                  // tail blocks: any expert, all-empty rows

	// 3. Rows: token id (+1, 0 = empty) and gate, scattered; P+1 rows, the last one spare.
	rowIdx := InsertAxes(row, -1) // [A,1]
	tokA := AddScalar(DivScalar(iota(a), kp), 1)
	rowTok := Scatter(rowIdx, tokA, shapes.Make(dtypes.Int32, p+1), false, false)             // [P+1]
	rowTok = StopGradient(MaxScalar(AddScalar(SliceAxis(rowTok, 0, AxisRange(0, p)), -1), 0)) // [P] token (0 if empty)
	rowGate := Scatter(rowIdx, Reshape(gates, a), shapes.Make(x.DType(), p+1), false, false)  // [P+1], 0 if empty
	rowGate = SliceAxis(rowGate, 0, AxisRange(0, p))                                          // [P]

	xs := Reshape(at(Reshape(x, t, d), rowTok), nb, block, d)            // [NB,Bk,d]
	h1 := blockLinear(xs, ex.gather(ex.w1, blockExpert))                 // [NB,Bk,h]
	h3 := blockLinear(xs, ex.gather(ex.w3, blockExpert))                 // [NB,Bk,h]
	act := Mul(Mul(silu(h1), h3), Reshape(rowGate, nb, block, 1))        // [NB,Bk,h] gated
	ys := Reshape(blockLinear(act, ex.gather(ex.w2, blockExpert)), p, d) // [P,d]

	// 4. Combine: each assignment reads its row, a dropped one the empty
	// (zero) row P-1; sum a token's k' rows.
	readRow := StopGradient(MinScalar(row, int32(p-1)))
	y := Reshape(at(ys, readRow), b, seqLen, kp, d) // [B,S,k',d]
	return ReduceSum(y, 2)                          // [B,S,d]
}
