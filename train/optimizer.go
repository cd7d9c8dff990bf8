package train

import (
	"math"
	"strings"

	. "github.com/gomlx/gomlx/core/graph"
	gmodel "github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
)

// LRAt is the learning rate of optimizer step s (0-based): linear warmup
// over the first Warmup steps (step s uses (s+1)/Warmup of LR, so the first
// step already moves), then a half cosine from LR down to MinLRRatio·LR at
// ScheduleSteps, and that floor afterwards — OLMo-core's CosWithWarmup with
// 1-based steps.
func (o OptimConfig) LRAt(s int) float64 {
	t := s + 1
	if t <= o.Warmup {
		return o.LR * float64(t) / float64(o.Warmup)
	}
	floor := o.LR * o.MinLRRatio
	span := o.ScheduleSteps - o.Warmup
	if span <= 0 || t >= o.ScheduleSteps {
		if t >= o.ScheduleSteps {
			return floor
		}
		return o.LR
	}
	frac := float64(t-o.Warmup) / float64(span)
	return floor + (o.LR-floor)*0.5*(1+math.Cos(math.Pi*frac))
}

// Decays reports whether AdamW's weight decay applies to the variable at
// path (a GoMLX store path such as "/blocks/00/attention/w_q").
func (o OptimConfig) Decays(path string) bool {
	for _, p := range o.NoDecay {
		if strings.Contains(path, p) {
			return false
		}
	}
	return o.WeightDecay > 0
}

// hyperParams are the per-step scalars the update graph takes as one
// float32 input [4], computed in float64 on the Go side (PyTorch's AdamW
// arithmetic): lr·wd, step size lr/(1-β1^t), sqrt(1-β2^t), and the clip
// threshold.
func (o OptimConfig) hyperParams(step int) []float32 {
	t := float64(step + 1)
	lr := o.LRAt(step)
	bc1 := 1 - math.Pow(o.Beta1, t)
	bc2 := 1 - math.Pow(o.Beta2, t)
	return []float32{float32(lr * o.WeightDecay), float32(lr / bc1), float32(math.Sqrt(bc2)), float32(o.ClipNorm)}
}

// Optimizer variables live under these store paths, mirroring the
// parameter's path: /optimizer/adam_m/blocks/00/..., and the gradient
// accumulators of micro-batches under /optimizer/grad_acc/... (never
// checkpointed: they are zero between steps).
const (
	optimScope   = "/optimizer"
	momentM      = optimScope + "/adam_m"
	momentV      = optimScope + "/adam_v"
	gradAccScope = optimScope + "/grad_acc"
	// gradOutScope holds the step's gradients for the host optimizer
	// (hostAdamW); not checkpointed either.
	gradOutScope = optimScope + "/grad"
)

// transient reports whether the variable at path is scratch between
// steps (gradient accumulators and outputs), left out of checkpoints.
func transient(path string) bool {
	return strings.HasPrefix(path, gradAccScope+"/") || strings.HasPrefix(path, gradOutScope+"/")
}

// ClipByGlobalNorm scales grads by min(1, maxNorm/(‖g‖+1e-6)) with ‖g‖ the
// norm over all of them (torch.nn.utils.clip_grad_norm_). maxNorm < 0 means
// no clipping. It returns the clipped gradients and the norm before
// clipping.
func ClipByGlobalNorm(grads []*Node, maxNorm *Node) (clipped []*Node, norm *Node) {
	coef, norm := clipCoef(grads, maxNorm, nil)
	clipped = make([]*Node, len(grads))
	for i, gr := range grads {
		clipped[i] = Mul(gr, coef)
	}
	return clipped, norm
}

// clipCoef is ClipByGlobalNorm's scale and the norm. sq, if given, holds
// each gradient's square.
func clipCoef(grads []*Node, maxNorm *Node, sq []*Node) (coef, norm *Node) {
	g := grads[0].Graph()
	sum := ScalarZero(g, grads[0].DType())
	for i, gr := range grads {
		s := Square(gr)
		if sq != nil {
			s = sq[i]
		}
		sum = Add(sum, ReduceAllSum(s))
	}
	norm = Sqrt(sum)
	coef = Div(maxNorm, AddScalar(norm, 1e-6))
	coef = Where(LessThan(maxNorm, ScalarZero(g, maxNorm.DType())), OnesLike(coef), MinScalar(coef, 1.0))
	return coef, norm
}

// adamWUpdate clips grads by global norm and applies one AdamW step to
// vars (PyTorch's torch.optim.AdamW arithmetic: decoupled decay p -= lr·wd·p
// first, then p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)). hyper
// is the [4] input of OptimConfig.hyperParams. It returns the gradient norm
// before clipping.
//
// It runs where the weights live on an accelerator (xla backend); on the
// go backend the trainer uses hostAdamW, the same update in two passes.
// Without fusion every element-wise op is a pass over all parameters, so
// the arithmetic is arranged for fewer of them, with the same values (to
// float32 rounding; TestAdamWMatchesPyTorchArithmetic):
//   - the clip scale c is folded into the moments' scalars, m' = β1·m +
//     (c(1-β1))·g and v' = β2·v + (c²(1-β2))·g², and g² is the one the
//     norm needed;
//   - the step is (lr/(1-β1^t)·√(1-β2^t)) · m' / (√v' + eps·√(1-β2^t)),
//     the same quotient with the bias correction moved into scalars.
//
// 14 passes per parameter instead of 18.
func adamWUpdate(st *gmodel.Store, o OptimConfig, vars []*gmodel.Variable, grads []*Node, hyper *Node) *Node {
	g := hyper.Graph()
	at := func(i int) *Node { return Squeeze(SliceAxis(hyper, 0, AxisElem(i)), 0) }
	lrWD, stepSize, bc2Sqrt, clip := at(0), at(1), at(2), at(3)
	sq := make([]*Node, len(grads))
	for i, gr := range grads {
		sq[i] = Square(gr)
	}
	coef, norm := clipCoef(grads, clip, sq)
	cm := MulScalar(coef, 1-o.Beta1)         // scales g in m'
	cv := MulScalar(Square(coef), 1-o.Beta2) // scales g² in v'
	keep := OneMinus(lrWD)                   // decoupled decay
	step := Mul(stepSize, bc2Sqrt)           // scales m'/(...)
	eps := MulScalar(bc2Sqrt, o.Eps)         // added to √v'
	for i, v := range vars {
		p := v.NodeValue(g)
		m := st.VariableWithShape(momentM+v.Path(), v.Shape(), initializer.Zero).SetTrainable(false)
		s := st.VariableWithShape(momentV+v.Path(), v.Shape(), initializer.Zero).SetTrainable(false)
		mNew := Add(MulScalar(m.NodeValue(g), o.Beta1), Mul(grads[i], cm))
		vNew := Add(MulScalar(s.NodeValue(g), o.Beta2), Mul(sq[i], cv))
		if o.Decays(v.Path()) {
			p = Mul(p, keep)
		}
		p = Sub(p, Mul(Div(mNew, Add(Sqrt(vNew), eps)), step))
		m.SetNodeValue(mNew)
		s.SetNodeValue(vNew)
		v.SetNodeValue(p)
	}
	return norm
}
