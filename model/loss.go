package model

import (
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/support/exceptions"
)

// logSumExp over the last axis, stable and with -inf entries allowed:
// x [...,N] -> [...].
func logSumExp(x *Node) *Node {
	m := StopGradient(ReduceAndKeep(x, ReduceMax, -1)) // [...,1]
	return Add(Squeeze(m, -1), Log(ReduceSum(Exp(Sub(x, m)), -1)))
}

// layerStats are one layer's routing statistics, per row so the
// load-balancing loss can group rows.
type layerStats struct {
	counts   *Node // [B,E'] routed assignments per expert over valid tokens (no grad)
	probSums *Node // [B,E'] Σ over valid tokens of Sc (carries the gradient)
	rawSums  *Node // [B,E'] Σ over valid tokens of P0 (no grad; for expert selection)
	tokens   *Node // [B] valid tokens
	zLoss    *Node // scalar router z-loss: mean over valid tokens of logsumexp(L_masked)²
}

func newLayerStats(r Routing, valid *Node, ep int) layerStats {
	dtype := r.Probs.DType()
	vf := ConvertDType(valid, dtype)                     // [B,S]
	chosen := ReduceSum(OneHot(r.Experts, ep, dtype), 2) // [B,S,E'] 0/1
	lse := logSumExp(r.Masked)                           // [B,S]
	return layerStats{
		counts:   StopGradient(ReduceSum(Mul(chosen, InsertAxes(vf, -1)), 1)), // [B,E']
		probSums: ReduceSum(Mul(r.Probs, InsertAxes(vf, -1)), 1),              // [B,E']
		rawSums:  StopGradient(ReduceSum(Mul(r.RawProbs, InsertAxes(vf, -1)), 1)),
		tokens:   ReduceSum(vf, 1), // [B]
		zLoss:    Div(ReduceAllSum(Mul(Square(lse), vf)), MaxScalar(ReduceAllSum(vf), 1.0)),
	}
}

// loadBalance is the load-balancing loss of one layer (emo-method.md §5):
//
//	LB = (E'/k') · Σ_i c_i·P_i / T
//
// with c the routed-assignment counts (no grad), P_i the mean of Sc[...,i]
// over the tokens the loss sees, T the tokens the counts cover.
//   - extCounts [E'] given: c = extCounts (e.g. summed over every micro-batch
//     of an accumulated step), T = Σc/k' (every token makes k' assignments),
//     P over this batch's valid tokens;
//   - groupRows = 0 (or B): c, P and T over the whole batch ("global" over it);
//   - groupRows = G: each group of G rows gets its own c, P, T (the "local"
//     ablation) and LB is the mean over groups.
//
// Uniform routing gives LB = 1.
func loadBalance(st layerStats, extCounts *Node, groupRows, ep, kp int) *Node {
	scale := float64(ep) / float64(kp)
	if extCounts != nil {
		tGlobal := MaxScalar(DivScalar(ReduceAllSum(extCounts), float64(kp)), 1.0)
		p := Div(ReduceSum(st.probSums, 0), MaxScalar(ReduceAllSum(st.tokens), 1.0)) // [E']
		return MulScalar(Div(ReduceAllSum(Mul(StopGradient(extCounts), p)), tGlobal), scale)
	}
	b := st.counts.Shape().Dim(0)
	if groupRows <= 0 || groupRows >= b {
		groupRows = b
	}
	if b%groupRows != 0 {
		exceptions.Panicf("load balancing: batch %d rows not divisible into groups of %d", b, groupRows)
	}
	ng := b / groupRows
	c := ReduceSum(Reshape(st.counts, ng, groupRows, ep), 1)             // [G,E']
	ps := ReduceSum(Reshape(st.probSums, ng, groupRows, ep), 1)          // [G,E']
	t := MaxScalar(ReduceSum(Reshape(st.tokens, ng, groupRows), 1), 1.0) // [G]
	p := Div(ps, InsertAxes(t, -1))                                      // [G,E'] mean Sc per group
	lb := Div(ReduceSum(Mul(c, p), 1), t)                                // [G]
	return MulScalar(ReduceMean(lb), scale)
}

// subsetLB rescales a loadBalance value computed over all E' routable
// experts to the K experts an expert subset keeps (allowed [E'] bool; nil:
// no subset). The reference balances a pruned model over its own experts,
// scale K/k' (a sliced checkpoint has K routable experts; pruning_router.py
// masks like Inputs.ExpertMask and slices the scores to the active experts
// before load_balancing_loss); removed experts have c = P = 0, so only the
// scale changes: LB·K/E'. Uniform routing over the subset then gives LB = 1,
// as for the pruned model.
func subsetLB(lb, allowed *Node, ep int) *Node {
	if allowed == nil {
		return lb
	}
	kept := ReduceAllSum(ConvertDType(allowed, lb.DType()))
	return Mul(lb, DivScalar(kept, float64(ep)))
}

// crossEntropy returns the mean next-token loss and the LM-head z-loss
// (mean logsumexp(logits)²) over positions with label >= 0 and a real token.
// logits [B,S,V], labels [B,S] int32, valid [B,S] bool.
func crossEntropy(logits, labels, valid *Node) (ce, z *Node) {
	ceSum, zSum, n := crossEntropySums(logits, labels, valid)
	n = MaxScalar(n, 1.0)
	return Div(ceSum, n), Div(zSum, n)
}

// crossEntropySums returns Σ(lse − logit of the label), Σ lse² and the
// count of the positions used (label >= 0 and a real token).
//
// The gradient with respect to the logits is written out rather than left
// to GoMLX: with u the positions used and s = softmax(x),
//
//	d/dx (a·ΣCE + b·ΣZ) = s·(a + 2b·lse)·u − onehot(label)·a·u
//
// one pass over the [B,S,V] logits (the forward's exp(x−m) times a
// per-position factor) and an in-place scatter of the label terms. GoMLX's
// own gradient of the same sums broadcasts, multiplies, scatters into a
// zero tensor and adds: four more passes over the largest tensor of a small
// model's step (~4% of a tiny step). The test compares both gradients.
func crossEntropySums(logits, labels, valid *Node) (ceSum, zSum, n *Node) {
	g := logits.Graph()
	v := logits.Shape().Dim(-1)
	use := And(valid, GreaterOrEqual(labels, ScalarZero(g, labels.DType()))) // [B,S]
	lbl := ClipScalar(ConvertDType(labels, dtypes.Int32), 0, float64(v-1))
	labelIdx := rowIndexed(InsertAxes(lbl, -1)) // [B,S,1,3]
	uf := ConvertDType(use, logits.DType())

	var expd, sum, lse, dce, dz *Node // forward values and, in the backward pass, dLoss/dΣCE and dLoss/dΣZ
	x := IdentityWithCustomGradient(logits, func(_, _ *Node) *Node {
		perPos := ZerosLike(lse) // [B,S]: a + 2b·lse
		if dce != nil {
			perPos = Add(perPos, dce)
		}
		if dz != nil {
			perPos = Add(perPos, Mul(MulScalar(dz, 2), lse))
		}
		grad := Mul(expd, InsertAxes(Div(Mul(perPos, uf), sum), -1)) // s·(a + 2b·lse)·u
		if dce != nil {
			grad = ScatterSum(grad, labelIdx, InsertAxes(Neg(Mul(uf, dce)), -1), false, false) // − onehot·a·u, in place
		}
		return grad
	})
	m := StopGradient(ReduceAndKeep(x, ReduceMax, -1)) // [B,S,1]
	expd = Exp(Sub(x, m))                              // [B,S,V]
	sum = ReduceSum(expd, -1)                          // [B,S]
	lse = Add(Squeeze(m, -1), Log(sum))                // [B,S]
	picked := Squeeze(Gather(x, labelIdx), -1)         // [B,S] logit of the label
	ceSum = IdentityWithCustomGradient(ReduceAllSum(Mul(Sub(lse, picked), uf)), func(_, d *Node) *Node {
		dce = d
		return d
	})
	zSum = IdentityWithCustomGradient(ReduceAllSum(Mul(Square(lse), uf)), func(_, d *Node) *Node {
		dz = d
		return d
	})
	return ceSum, zSum, ReduceAllSum(uf)
}
