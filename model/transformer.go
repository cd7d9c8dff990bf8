package model

import (
	"fmt"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	gmodel "github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
	"github.com/gomlx/gomlx/support/exceptions"
)

// Inputs are the graph nodes of one forward pass. Only Tokens is required.
type Inputs struct {
	// Tokens are the token ids. [B,S] int32
	Tokens *Node
	// Segments is the router segment (document) of each token within its row,
	// 0..NSeg-1, or PaddingSegment. From the store's spans
	// (packing.Sequence.Segments) or SegmentsFromEOS. nil: every row is one
	// document, no padding. [B,S] int32
	Segments *Node
	// AttnSegments are the documents the attention mask uses when
	// Config.DocAttentionMask is set; nil means Segments. The reference derives
	// them from EOS differently from the router (DocumentsFromEOS). [B,S] int32
	AttnSegments *Node
	// Labels are next-token targets; IgnoreLabel (and padding positions) add
	// no loss. nil: no loss is computed. [B,S] int32
	Labels *Node
	// PoolSizes is the EMO pool size per (layer, row, segment slot), drawn by
	// the trainer (Config.SamplePoolSizes). Its last dimension NSeg bounds the
	// segment ids (S always suffices). nil: the eval pool size
	// (Config.EvalPoolSize). Ignored by the standard router. [L,B,NSeg] int32
	PoolSizes *Node
	// LBCounts are routed-assignment counts per layer and expert to use in
	// the load-balancing loss instead of this batch's own (e.g. summed over
	// all micro-batches of an accumulated step in a forward-only pass, from
	// Outputs.Counts). [L,E'] float32
	LBCounts *Node
	// ExpertMask keeps a subset of routable experts per layer (Config.ExpertMask);
	// the others' logits are -inf before every softmax and top-k, which equals
	// pruning them; the load-balancing loss is then over the kept experts
	// (scale kept/k', subsetLB), as the pruned model's. nil: all experts. [L,E'] bool
	ExpertMask *Node
}

// Options are graph-building choices that are not part of the model's shape.
type Options struct {
	// Train requires Inputs.PoolSizes for the EMO router (so training never
	// silently falls back to the eval pool).
	Train bool
	// NoPool routes EMO models without pools (softmax over all routable
	// experts, top-k'), as the released model does at inference.
	NoPool bool
	// LBGroupRows > 0 computes the load-balancing counts per group of that
	// many rows ("local" LB ablation); 0: over the whole batch. Ignored when
	// Inputs.LBCounts is set.
	LBGroupRows int
	// Logits returns Outputs.Logits even without labels.
	Logits bool
	// SkipHead skips the final norm and LM head (a routing-only pass, e.g.
	// to collect global LB counts); Labels and Logits are then ignored.
	SkipHead bool
	// Dispatch overrides Config.Dispatch ("" keeps it).
	Dispatch string
	// WeightViews fills Outputs.WeightViews.
	WeightViews bool
}

// Outputs are the nodes a forward pass returns. L layers, E' routable experts.
type Outputs struct {
	// Logits [B,S,V], when Options.Logits or Labels are set.
	Logits *Node
	// Loss is CE + Aux, the scalar to minimise (nil without Labels).
	Loss *Node
	// CE is the mean cross-entropy over labelled real tokens (nil without Labels).
	CE *Node
	// LMHeadZ is the mean logsumexp(logits)² (unweighted; nil without Labels).
	LMHeadZ *Node
	// Aux is the weighted sum of auxiliary losses: RouterZLossWeight/L·ΣRouterZ
	// + LBLossWeight/L·ΣLB (+ LMHeadZLossWeight·LMHeadZ with Labels).
	Aux *Node
	// RouterZ and LB are the unweighted per-layer losses. [L]
	RouterZ, LB *Node
	// Counts are the routed assignments per expert over this batch's real
	// tokens (no grad). [L,E'] float32
	Counts *Node
	// RouterProbs is the mean over real tokens of softmax(router logits) over
	// the routable experts, without pool (expert selection, §7). [L,E']
	RouterProbs *Node
	// PoolSizes are the effective pool sizes per segment slot, 0 for empty
	// slots; nil without pools. [L,B,NSeg] int32
	PoolSizes *Node
	// Tokens is the number of real (non-padding) tokens. scalar float32
	Tokens *Node
	// Layers are the per-layer routing decisions (for tests and analysis).
	Layers []Routing
	// WeightViews maps a weight's node to the identity that carries its
	// custom gradient, for the weights that have one (with
	// Options.WeightViews; see weightviews.go).
	WeightViews map[*Node]*Node
}

// Forward builds the model graph. Variables live under s:
//
//	embeddings/weight [V,d]
//	blocks/NN/attention_norm/weight [d]
//	blocks/NN/attention/{w_q,w_k,w_v} [H·dh,d], w_out [d,H·dh]
//	blocks/NN/feed_forward_norm/weight [d]
//	blocks/NN/feed_forward_moe/router/weight [E,d]
//	blocks/NN/feed_forward_moe/experts/{w1,w3} [E,h,d], w2 [E,d,h]
//	lm_head/norm/weight [d], lm_head/w_out [V,d]
//
// Matrices are [out,in] like PyTorch's Linear.weight (OLMo-core's names
// with "/" for "."). Errors panic, GoMLX style; wrap the call in Try to get
// an error.
func Forward(s *gmodel.Scope, cfg Config, in Inputs, opts Options) (out Outputs) {
	if !opts.WeightViews {
		return forward(s, cfg, in, opts)
	}
	g := in.Tokens.Graph()
	beginWeightViews(g)
	// Deferred so that a panicking build leaves no record behind either.
	defer func() { out.WeightViews = endWeightViews(g) }()
	return forward(s, cfg, in, opts)
}

func forward(s *gmodel.Scope, cfg Config, in Inputs, opts Options) Outputs {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	c := &cfg
	g := in.Tokens.Graph()
	if in.Tokens.Rank() != 2 {
		exceptions.Panicf("model: tokens must be [B,S], got %s", in.Tokens.Shape())
	}
	b, seqLen := in.Tokens.Shape().Dim(0), in.Tokens.Shape().Dim(1)
	ep, nl := c.RoutableExperts(), c.NLayers
	dtype := dtypes.Float32
	s = s.WithInitializer(initializer.RandomNormalFn(s, c.InitStd))

	seg := in.Segments
	if seg == nil {
		seg = Zeros(g, shapes.Make(dtypes.Int32, b, seqLen))
	}
	seg = ConvertDType(seg, dtypes.Int32)
	checkDims("segments", seg, b, seqLen)
	attnSeg := seg
	if in.AttnSegments != nil {
		attnSeg = ConvertDType(in.AttnSegments, dtypes.Int32)
		checkDims("attention segments", attnSeg, b, seqLen)
	}
	valid := GreaterOrEqual(seg, ScalarZero(g, dtypes.Int32)) // [B,S]

	li := layerInputs{
		attnMask: attentionMask(attnSeg, c.DocAttentionMask), // [B,1,S,S]
		seg:      seg,
		valid:    valid,
		rope:     newRoPE(g, seqLen, c.HeadDimOrDefault(), c.RoPETheta),
		dispatch: c.Dispatch,
	}
	if opts.Dispatch != "" {
		li.dispatch = opts.Dispatch
	}

	// Pools: the trainer's sizes, or the eval size for every segment slot, or none.
	var pools *Node // [L,B,NSeg]
	if c.Router == RouterEMO && !opts.NoPool {
		switch {
		case in.PoolSizes != nil:
			pools = ConvertDType(in.PoolSizes, dtypes.Int32)
			if pools.Rank() != 3 || pools.Shape().Dim(0) != nl || pools.Shape().Dim(1) != b {
				exceptions.Panicf("model: pool sizes must be [L=%d,B=%d,NSeg], got %s", nl, b, pools.Shape())
			}
		case opts.Train:
			exceptions.Panicf("model: EMO training needs Inputs.PoolSizes")
		case c.EvalPoolSize > 0:
			pools = Scalar(g, dtypes.Int32, c.EvalPoolSize)
			pools = BroadcastToDims(pools, nl, b, seqLen)
		}
	}
	var mask *Node // [L,E']
	if in.ExpertMask != nil {
		mask = in.ExpertMask
		checkDims("expert mask", mask, nl, ep)
	}
	if in.LBCounts != nil {
		checkDims("LB counts", in.LBCounts, nl, ep)
	}

	emb := s.In("embeddings").VariableWithShape("weight", shapes.Make(dtype, c.VocabSize, c.DModel)).NodeValue(g)
	h := Gather(emb, InsertAxes(ConvertDType(in.Tokens, dtypes.Int32), -1)) // [B,S,d]

	var out Outputs
	var zs, lbs, counts, rawProbs, poolSizes []*Node
	blocks := s.In("blocks")
	width := max(2, len(fmt.Sprint(nl-1)))
	for l := range nl {
		layer := func(x *Node) *Node { // row l of an [L,...] input, or nil
			if x == nil {
				return nil
			}
			return Squeeze(SliceAxis(x, 0, AxisRange(l, l+1)), 0)
		}
		var r Routing
		h, r = block(blocks.In("%0*d", width, l), c, h, li, layer(pools), layer(mask)) // [B,S,d]
		st := newLayerStats(r, valid, ep)
		zs = append(zs, st.zLoss)
		lb := loadBalance(st, layer(in.LBCounts), opts.LBGroupRows, ep, c.RoutedTopK())
		lbs = append(lbs, subsetLB(lb, layer(mask), ep))
		counts = append(counts, ReduceSum(st.counts, 0))
		tokens := MaxScalar(ReduceAllSum(st.tokens), 1.0)
		rawProbs = append(rawProbs, Div(ReduceSum(st.rawSums, 0), tokens))
		if r.PoolSizes != nil {
			poolSizes = append(poolSizes, r.PoolSizes)
		}
		out.Layers = append(out.Layers, r)
	}
	out.RouterZ, out.LB = Stack(zs, 0), Stack(lbs, 0)
	out.Counts, out.RouterProbs = Stack(counts, 0), Stack(rawProbs, 0)
	if len(poolSizes) == nl {
		out.PoolSizes = Stack(poolSizes, 0)
	}
	out.Tokens = ReduceAllSum(ConvertDType(valid, dtype))
	perLayer := func(x *Node, w float64) *Node { return MulScalar(ReduceAllSum(x), w/float64(nl)) }
	out.Aux = Add(perLayer(out.RouterZ, c.RouterZLossWeight), perLayer(out.LB, c.LBLossWeight))

	if opts.SkipHead || (in.Labels == nil && !opts.Logits) {
		return out
	}
	head := s.In("lm_head")
	hn := rmsNorm(head.In("norm"), h, c.NormEps)                                                    // [B,S,d]
	wOut := head.VariableWithShape("w_out", shapes.Make(dtype, c.VocabSize, c.DModel)).NodeValue(g) // [V,d]
	if in.Labels == nil || opts.Logits {
		// linear: no transpose of the [B·S,V] dlogits in the weight gradient.
		out.Logits = linear(hn, wOut) // [B,S,V]
	}
	if in.Labels != nil {
		labels := ConvertDType(in.Labels, dtypes.Int32)
		checkDims("labels", labels, b, seqLen)
		if out.Logits != nil {
			out.CE, out.LMHeadZ = crossEntropy(out.Logits, labels, valid)
		} else {
			out.CE, out.LMHeadZ = headLossInChunks(hn, wOut, labels, valid)
		}
		out.Aux = Add(out.Aux, MulScalar(out.LMHeadZ, c.LMHeadZLossWeight))
		out.Loss = Add(out.CE, out.Aux)
	}
	return out
}

// headChunks is how many row groups headLossInChunks splits a batch into.
// A constant, not the core count, so that losses do not depend on the
// machine.
const headChunks = 2

// headLossInChunks is crossEntropy(linear(hn, w), ...) computed on
// headChunks groups of rows, sums combined. Why: the go backend runs each
// element-wise op on one core, and the softmax over the vocabulary (an exp
// per logit, the largest tensor of a small model) was one chain of such ops
// that left the other core idle; independent chains run side by side.
// Same values up to float summation order.
func headLossInChunks(hn, w, labels, valid *Node) (ce, z *Node) {
	b := hn.Shape().Dim(0)
	chunks := headChunks
	if b%chunks != 0 {
		chunks = 1
	}
	rows := b / chunks
	var ceSum, zSum, n *Node
	for c := range chunks {
		part := func(x *Node) *Node { return SliceAxis(x, 0, AxisRange(c*rows, (c+1)*rows)) }
		cs, zs, nc := crossEntropySums(linear(part(hn), w), part(labels), part(valid))
		if c == 0 {
			ceSum, zSum, n = cs, zs, nc
			continue
		}
		ceSum, zSum, n = Add(ceSum, cs), Add(zSum, zs), Add(n, nc)
	}
	n = MaxScalar(n, 1.0)
	return Div(ceSum, n), Div(zSum, n)
}

func checkDims(what string, x *Node, dims ...int) {
	if !x.Shape().EqualDimensions(shapes.Make(x.DType(), dims...)) {
		exceptions.Panicf("model: %s must have dimensions %v, got %s", what, dims, x.Shape())
	}
}

// Try runs fn (typically graph building or an Exec call) and returns a panic
// raised inside it as an error.
func Try(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			switch e := r.(type) {
			case error:
				err = fmt.Errorf("model: %w", e)
			default:
				err = fmt.Errorf("model: %v", e)
			}
		}
	}()
	fn()
	return nil
}
