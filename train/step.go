package train

import (
	"fmt"
	"sort"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"

	"github.com/emopipe/emopipe/model"
)

// The graphs one training run compiles. Each takes its inputs as one
// slice (see layout) and returns small metric tensors; variable updates
// (weights, moments, gradient accumulators) happen inside the graph.
type graphKind int

const (
	// kindInit builds the whole model once so variables are created and
	// initialised in model order whatever graphs come later (K=1 and K=4
	// runs start from the same weights).
	kindInit graphKind = iota
	// kindCount is a forward-only routing pass returning expert counts:
	// the global LB statistic of an accumulated step.
	kindCount
	// kindAccum adds one micro-batch's gradients to the accumulators.
	kindAccum
	// kindStep adds the last micro-batch's gradients, clips, applies AdamW
	// and zeroes the accumulators.
	kindStep
	// kindEval returns per-token negative log-likelihoods in eval routing.
	kindEval
)

// layout says which optional inputs the graphs take, in this order:
// tokens, segments, [attention segments], [labels], [pool sizes],
// [LB counts], [loss weights [2]], [hyper-parameters [4]].
type layout struct {
	attn   bool // attention documents differ from router segments
	pools  bool // EMO router: training pool sizes
	counts bool // accumulated global LB: counts from the count passes
	// hostOptim: the step graph returns the gradients and hostAdamW
	// updates the weights (backends with host-memory buffers).
	hostOptim bool
}

func (l layout) has(k graphKind) (labels, pools, counts, weights, hyper bool) {
	labels = k != kindCount
	pools = l.pools && (k == kindCount || k == kindAccum || k == kindStep)
	counts = l.counts && (k == kindAccum || k == kindStep)
	weights = k == kindAccum || k == kindStep
	hyper = k == kindStep && !l.hostOptim
	return
}

// stepOutputs are what kindAccum/kindStep return, in this order.
const (
	outCE = iota
	outLMZ
	outRouterZ  // [L]
	outLB       // [L]
	outCounts   // [L,E']
	outPoolMean // [L]
	outGradNorm // scalar (0 for kindAccum and with the host optimizer)
	numStepOutputs
)

// graphFn returns the graph function of kind k.
func (t *Trainer) graphFn(k graphKind) func(s *gmodel.Scope, in []*Node) []*Node {
	cfg := t.cfg.Model
	return func(s *gmodel.Scope, in []*Node) []*Node {
		// Variables must be graph parameters in every graph, eval included:
		// outside "training" graphs the go backend (PreferConstantsForVariables)
		// bakes their values in as constants at compile time, and an exec
		// compiled at step 0 would keep using the step-0 weights.
		s.Store().SetTraining(in[0].Graph(), true)
		hasLabels, hasPools, hasCounts, hasWeights, hasHyper := t.layout.has(k)
		mi := model.Inputs{Tokens: in[0], Segments: in[1]}
		i := 2
		next := func() *Node { i++; return in[i-1] }
		if t.layout.attn {
			mi.AttnSegments = next()
		}
		if hasLabels {
			mi.Labels = next()
		}
		if hasPools {
			mi.PoolSizes = next()
		}
		if hasCounts {
			mi.LBCounts = next()
		}
		var weights, hyper *Node
		if hasWeights {
			weights = next()
		}
		if hasHyper {
			hyper = next()
		}
		hostStep := k == kindStep && t.layout.hostOptim
		opts := model.Options{Train: k == kindCount || k == kindAccum || k == kindStep, WeightViews: hostStep}
		if t.cfg.LB == LBLocal {
			opts.LBGroupRows = t.cfg.LBGroupRows
		}
		switch k {
		case kindInit:
			opts.Train = false
		case kindCount:
			opts.SkipHead = true
		case kindEval:
			opts.Logits = true
		}
		out := model.Forward(s, cfg, mi, opts)
		g := in[0].Graph()
		switch k {
		case kindInit:
			return []*Node{out.Loss}
		case kindCount:
			return []*Node{out.Counts}
		case kindEval:
			return []*Node{tokenNLL(out.Logits, mi.Labels)}
		}

		// Each micro-batch's losses are means over its own tokens; weighting
		// them by its share of the step's tokens makes the sum of the K
		// micro-batch gradients the gradient of the whole step's loss.
		nl := float64(cfg.NLayers)
		wLab := Squeeze(SliceAxis(weights, 0, AxisElem(0)), 0)
		wReal := Squeeze(SliceAxis(weights, 0, AxisElem(1)), 0)
		perLabel := Add(out.CE, MulScalar(out.LMHeadZ, cfg.LMHeadZLossWeight))
		perReal := Add(MulScalar(ReduceAllSum(out.RouterZ), cfg.RouterZLossWeight/nl),
			MulScalar(ReduceAllSum(out.LB), cfg.LBLossWeight/nl))
		loss := Add(Mul(wLab, perLabel), Mul(wReal, perReal))

		params := trainableVars(s.Store(), g)
		nodes := make([]*Node, len(params))
		for j, v := range params {
			nodes[j] = v.NodeValue(g)
		}
		grads := Gradient(loss, nodes...)
		norm := ScalarZero(g, dtypes.Float32)
		st := s.Store()
		accumulate := t.cfg.Accum > 1 || k == kindAccum // (kindAccum with Accum 1: tests read the gradient)
		for j, v := range params {
			if !accumulate {
				break
			}
			acc := st.VariableWithShape(gradAccScope+v.Path(), v.Shape(), initializer.Zero).SetTrainable(false)
			if k == kindAccum {
				acc.SetNodeValue(Add(acc.NodeValue(g), grads[j]))
			} else {
				grads[j] = Add(acc.NodeValue(g), grads[j])
				acc.SetNodeValue(ZerosLike(acc.NodeValue(g)))
			}
		}
		outs := []*Node{out.CE, out.LMHeadZ, out.RouterZ, out.LB, out.Counts, poolMean(out.PoolSizes, cfg.NLayers, g), norm}
		if hostStep {
			// The gradients go to variables rather than outputs: last
			// step's gradient buffers are then donated to this run and
			// reused, where outputs would be fresh memory every step.
			// Each weight that has a view (model.Outputs.WeightViews) is
			// donated and comes back as that view: the same memory, not
			// a copy (weightviews.go).
			t.hostViews = 0
			for j, v := range params {
				st.VariableWithShape(gradOutScope+v.Path(), v.Shape(), initializer.Zero).SetTrainable(false).SetNodeValue(grads[j])
				if view := out.WeightViews[nodes[j]]; view != nil {
					v.SetNodeValue(view)
					t.hostViews++
				}
			}
			t.hostParams = params
			return outs
		}
		if k == kindStep {
			outs[outGradNorm] = adamWUpdate(st, t.cfg.Optim, params, grads, hyper)
		}
		return outs
	}
}

// trainableVars are the trainable variables the graph uses, in path
// order: the order fixes the gradient-norm sum, so it must not depend on
// how the store was filled (fresh init vs loaded checkpoint).
func trainableVars(st *gmodel.Store, g *Graph) []*gmodel.Variable {
	var vs []*gmodel.Variable
	for v := range st.IterVariables() {
		if v.Trainable && v.InUseByGraph(g) {
			vs = append(vs, v)
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Path() < vs[j].Path() })
	return vs
}

// poolMean is the mean effective pool size per layer over non-empty
// segment slots; zeros without pools. [L]
func poolMean(ps *Node, nl int, g *Graph) *Node {
	if ps == nil {
		return Zeros(g, shapes.Make(dtypes.Float32, nl))
	}
	f := ConvertDType(ps, dtypes.Float32)                                            // [L,B,NSeg]
	used := ConvertDType(GreaterThan(ps, ScalarZero(g, ps.DType())), dtypes.Float32) // [L,B,NSeg]
	return Div(ReduceSum(f, 1, 2), MaxScalar(ReduceSum(used, 1, 2), 1))
}

// tokenNLL is -log p(label) per position (0 where label < 0). logits
// [B,S,V], labels [B,S] -> [B,S].
func tokenNLL(logits, labels *Node) *Node {
	v := logits.Shape().Dim(-1)
	m := StopGradient(ReduceAndKeep(logits, ReduceMax, -1))             // [B,S,1]
	lse := Add(Squeeze(m, -1), Log(ReduceSum(Exp(Sub(logits, m)), -1))) // [B,S]
	lbl := ConvertDType(labels, dtypes.Int32)
	use := GreaterOrEqual(lbl, ScalarZero(logits.Graph(), dtypes.Int32))
	picked := ReduceSum(Mul(logits, OneHot(MaxScalar(lbl, 0), v, logits.DType())), -1) // [B,S]
	return Where(use, Sub(lse, picked), ZerosLike(lse))
}

// microInputs assembles the input tensors of kind k for micro-batch b.
func (t *Trainer) microInputs(k graphKind, b Batch, pools, counts *tensors.Tensor, weights, hyper []float32) ([]any, error) {
	hasLabels, hasPools, hasCounts, hasWeights, hasHyper := t.layout.has(k)
	var args []any
	add := func(rows [][]int32) error {
		x, err := model.Int32Tensor(rows)
		if err != nil {
			return err
		}
		args = append(args, x)
		return nil
	}
	if err := add(b.Tokens); err != nil {
		return nil, err
	}
	if err := add(b.Segments); err != nil {
		return nil, err
	}
	if t.layout.attn {
		if err := add(b.AttnSegments); err != nil {
			return nil, err
		}
	}
	if hasLabels {
		if err := add(b.Labels); err != nil {
			return nil, err
		}
	}
	if hasPools {
		args = append(args, pools)
	}
	if hasCounts {
		args = append(args, counts)
	}
	if hasWeights {
		args = append(args, tensors.FromFlatDataAndDimensions(weights, len(weights)))
	}
	if hasHyper {
		args = append(args, tensors.FromFlatDataAndDimensions(hyper, len(hyper)))
	}
	return args, nil
}

// poolSizes draws the step's EMO pool sizes [L][B·NSeg] from
// PCG(seed, step): a pure function of (seed, step), so a resumed run
// draws what the uninterrupted one drew. The whole step's rows are drawn at
// once and micro-batch m takes its rows, so accumulation does not change
// the draws.
func (t *Trainer) poolSizes(step int) []int32 {
	r := newPCG(t.cfg.Seed, uint64(step))
	x := t.cfg.Model.SamplePoolSizes(r, t.cfg.Batch, t.nseg)
	return tensors.MustCopyFlatData[int32](x)
}

// microPools slices rows [r0, r0+rows) and the first slots segment slots
// of a [L,B,NSeg] draw.
func (t *Trainer) microPools(all []int32, r0, rows, slots int) *tensors.Tensor {
	nl, b, ns := t.cfg.Model.NLayers, t.cfg.Batch, t.nseg
	out := make([]int32, 0, nl*rows*slots)
	for l := range nl {
		for r := r0; r < r0+rows; r++ {
			base := (l*b + r) * ns
			out = append(out, all[base:base+slots]...)
		}
	}
	return tensors.FromFlatDataAndDimensions(out, nl, rows, slots)
}

// segmentSlots is how many segment slots a micro-batch's graph gets: the
// smallest power of two (at least minSegmentSlots, at most ns) above every
// router segment id in its rows.
//
// Why not always ns (= the sequence length, the most a row can hold): the
// EMO pool ranks every expert against every other in every slot, O(slots·E'²)
// element-wise work, and nearly all of the ns slots are empty: a row holds a
// few documents. The draws are made for ns slots either way and sliced, so
// the pools, and the losses, are those of the full-width graph; a batch
// with more documents gets a wider graph (compiled once per width).
func segmentSlots(segments [][]int32, ns int) int {
	top := int32(-1)
	for _, row := range segments {
		for _, s := range row {
			top = max(top, s)
		}
	}
	slots := minSegmentSlots
	for slots <= int(top) {
		slots *= 2
	}
	return min(slots, ns)
}

const minSegmentSlots = 8

func float32s(t *tensors.Tensor) []float32 {
	if t.DType() != dtypes.Float32 {
		panic(fmt.Sprintf("train: want float32 output, got %s", t.DType()))
	}
	return tensors.MustCopyFlatData[float32](t)
}
