package model

import (
	"math"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// Routing is one layer's routing decision and the statistics the losses and
// metrics read. E' is the number of routable experts, k' the routed top-k,
// NSeg the number of segment slots per row.
type Routing struct {
	// Logits are the router logits L over the routable experts, with experts
	// outside the layer's subset (Inputs.ExpertMask) at -inf. [B,S,E']
	Logits *Node
	// RawProbs is P0 = softmax(Logits): no pool mask. [B,S,E']
	RawProbs *Node
	// PoolScores is D: per segment, the sum of P0 over its tokens (no grad);
	// nil without pools. [B,NSeg,E']
	PoolScores *Node
	// PoolMask marks the experts of each token's document pool; nil without
	// pools. Padding tokens are not restricted. [B,S,E'] bool
	PoolMask *Node
	// PoolSizes is the effective pool size min(n, E') of each segment slot, 0
	// for slots with no token; nil without pools. [B,NSeg] int32
	PoolSizes *Node
	// Masked is L_masked: Logits with the experts outside the pool at -inf. [B,S,E']
	Masked *Node
	// Probs is Sc = softmax(Masked), renormalised over the pool. [B,S,E']
	Probs *Node
	// Experts are the top-k' experts of Probs, best first. [B,S,k'] int32
	Experts *Node
	// Gates are Probs at Experts (not renormalised); 0 for padding tokens. [B,S,k']
	Gates *Node
}

func negInf(g *Graph, dtype dtypes.DType) *Node { return Scalar(g, dtype, math.Inf(-1)) }

// truncNormalInit draws normal values truncated at ±3 std (as
// torch.nn.init.trunc_normal_(std=std, a=-3std, b=3std)): out-of-range draws
// are redrawn four times, then clipped (left over with probability ~1e-10).
func truncNormalInit(s *gmodel.Scope, std float64) gmodel.VariableInitializer {
	return func(g *Graph, shape shapes.Shape) *Node {
		x := s.RandomNormal(g, shape)
		for range 4 {
			redraw := s.RandomNormal(g, shape)
			x = Where(GreaterThan(Abs(x), Scalar(g, x.DType(), 3.0)), redraw, x)
		}
		return MulScalar(ClipScalar(x, -3.0, 3.0), std)
	}
}

// route computes one layer's routing (emo-method.md §1, §3, §4).
//
//	x       [B,S,d]   the normalised hidden states (the MoE input)
//	seg     [B,S]     router segment per token, PaddingSegment for padding
//	pools   [B,NSeg]  int32 pool size per segment slot, or nil for no pool
//	allowed [E']      bool experts kept in this layer, or nil for all
func route(s *gmodel.Scope, cfg *Config, x, seg, pools, allowed *Node) Routing {
	g := x.Graph()
	b, d := x.Shape().Dim(0), x.Shape().Dim(2)
	ep, kp := cfg.RoutableExperts(), cfg.RoutedTopK()
	dtype := x.DType()
	valid := GreaterOrEqual(seg, ScalarZero(g, seg.DType())) // [B,S] bool

	// §1 Router logits. The shared expert's row exists (checkpoint layout) but is unused.
	w := s.WithInitializer(truncNormalInit(s, cfg.InitStd)).
		VariableWithShape("weight", shapes.Make(dtype, cfg.NumExperts, d)).NodeValue(g) // [E,d]
	logits := linear(x, w)                           // [B,S,E]
	logits = SliceAxis(logits, -1, AxisRange(0, ep)) // [B,S,E']
	if allowed != nil {
		// Pruning an expert = dropping its router row = its logit at -inf.
		logits = Where(Reshape(allowed, 1, 1, ep), logits, negInf(g, dtype))
	}
	r := Routing{Logits: logits, RawProbs: Softmax(logits, -1)}

	// §3 Per-document pool: keep the n experts with the largest summed P0.
	masked := logits
	if pools != nil {
		nseg := pools.Shape().Dim(1)
		segIdx := segmentIndex(seg, nseg)                                                              // [B,S,2] = (row, segment slot)
		p0 := Where(valid, StopGradient(r.RawProbs), ScalarZero(g, dtype))                             // [B,S,E'] padding excluded
		r.PoolScores = ScatterSum(Zeros(g, shapes.Make(dtype, b, nseg, ep)), segIdx, p0, false, false) // [B,NSeg,E']

		// rank[b,s,e] = position of expert e when the segment's D is sorted
		// descending (equal scores keep index order); the pool is rank < n.
		rank := rankDescending(r.PoolScores)                         // [B,NSeg,E'] int32
		n := MinScalar(ConvertDType(pools, dtypes.Int32), int32(ep)) // [B,NSeg] n >= E' means no restriction

		tokRank := Gather(rank, segIdx) // [B,S,E']
		tokN := Gather(n, segIdx)       // [B,S]
		inPool := LessThan(tokRank, InsertAxes(tokN, -1))
		r.PoolMask = Or(inPool, InsertAxes(LogicalNot(valid), -1)) // [B,S,E'] padding unrestricted
		masked = Where(r.PoolMask, logits, negInf(g, dtype))

		tokens := ScatterSum(Zeros(g, shapes.Make(dtypes.Int32, b, nseg)), segIdx,
			ConvertDType(valid, dtypes.Int32), false, false) // [B,NSeg] tokens per segment slot
		r.PoolSizes = Where(GreaterThan(tokens, ScalarZero(g, dtypes.Int32)), n, ScalarZero(g, dtypes.Int32))
	}
	r.Masked = masked

	// §4 Token top-k' inside the pool; gates are the renormalised probabilities, not renormalised again.
	r.Probs = Softmax(masked, -1)                      // [B,S,E']
	r.Experts = topKIndices(StopGradient(r.Probs), kp) // [B,S,k'] int32
	r.Gates = Gather(r.Probs, rowIndexed(r.Experts))   // [B,S,k'] gradient flows to Probs
	r.Gates = Where(valid, r.Gates, ScalarZero(g, dtype))
	return r
}

// segmentIndex maps seg [B,S] to Gather/Scatter indices [B,S,2] = (row,
// slot); padding goes to slot 0 (callers mask it), ids >= nseg are clipped.
func segmentIndex(seg *Node, nseg int) *Node {
	g := seg.Graph()
	b, seqLen := seg.Shape().Dim(0), seg.Shape().Dim(1)
	slot := ClipScalar(ConvertDType(seg, dtypes.Int32), 0, float64(nseg-1))
	row := Iota(g, shapes.Make(dtypes.Int32, b, seqLen), 0)
	return Stack([]*Node{row, slot}, -1)
}

// rowIndexed turns ids [B,N,K] (experts of a segment slot or of a token,
// labels of a token) into Gather/Scatter indices [B,N,K,3] = (row, n, id).
func rowIndexed(experts *Node) *Node {
	g := experts.Graph()
	dims := experts.Shape().Dimensions
	sh := shapes.Make(dtypes.Int32, dims...)
	return Stack([]*Node{Iota(g, sh, 0), Iota(g, sh, 1), ConvertDType(experts, dtypes.Int32)}, -1)
}

// topKIndices returns the indices of the k largest values along the last
// axis, largest first, equal values in index order (as torch.topk on distinct
// values). It takes k rounds of arg-max: O(k·N) and plain element-wise ops,
// where the go backend's TopK runs a comparator closure per comparison
// (~100x slower at these sizes). x [...,N] -> [...,k] int32.
func topKIndices(x *Node, k int) *Node {
	g := x.Graph()
	n := x.Shape().Dim(-1)
	pos := Iota(g, shapes.Make(dtypes.Int32, x.Shape().Dimensions...), -1) // [...,N]
	cur := x
	picks := make([]*Node, 0, k)
	for range k {
		best := ReduceAndKeep(cur, ReduceMax, -1)                                      // [...,1]
		idx := ReduceMin(Where(Equal(cur, best), pos, Scalar(g, dtypes.Int32, n)), -1) // [...] first arg-max
		picks = append(picks, idx)
		cur = Where(Equal(pos, InsertAxes(idx, -1)), negInf(g, x.DType()), cur) // remove it
	}
	return Stack(picks, -1)
}

// rankDescending returns, along the last axis, each element's position in a
// stable descending sort: rank_e = #{j: x_j > x_e} + #{j < e: x_j = x_e}.
// Pairwise, O(N²) per row, element-wise only. x [...,N] -> [...,N] int32.
func rankDescending(x *Node) *Node {
	g := x.Graph()
	n := x.Shape().Dim(-1)
	xe := InsertAxes(x, -1) // [...,N,1] the ranked element e
	xj := InsertAxes(x, -2) // [...,1,N] the others j
	sq := shapes.Make(dtypes.Int32, n, n)
	jBeforeE := LessThan(Iota(g, sq, 1), Iota(g, sq, 0)) // [N,N] j < e
	for range x.Rank() - 1 {
		jBeforeE = InsertAxes(jBeforeE, 0)
	}
	ahead := Or(GreaterThan(xj, xe), And(Equal(xj, xe), jBeforeE)) // [...,N,N]
	return ReduceSum(ConvertDType(ahead, dtypes.Int32), -1)
}
