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
)

// ClipByGlobalNorm scales grads by min(1, maxNorm/(‖g‖+1e-6)) with ‖g‖ the
// norm over all of them (torch.nn.utils.clip_grad_norm_). maxNorm < 0 means
// no clipping. It returns the clipped gradients and the norm before
// clipping.
func ClipByGlobalNorm(grads []*Node, maxNorm *Node) (clipped []*Node, norm *Node) {
	g := grads[0].Graph()
	sq := ScalarZero(g, grads[0].DType())
	for _, gr := range grads {
		sq = Add(sq, ReduceAllSum(Square(gr)))
	}
	norm = Sqrt(sq)
	coef := Div(maxNorm, AddScalar(norm, 1e-6))
	coef = Where(LessThan(maxNorm, ScalarZero(g, maxNorm.DType())), OnesLike(coef), MinScalar(coef, 1.0))
	clipped = make([]*Node, len(grads))
	for i, gr := range grads {
		clipped[i] = Mul(gr, coef)
	}
	return clipped, norm
}

// adamWUpdate clips grads by global norm and applies one AdamW step to
// vars (PyTorch's torch.optim.AdamW arithmetic: decoupled decay p -= lr·wd·p
// first, then p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)). hyper
// is the [4] input of OptimConfig.hyperParams. It returns the gradient norm
// before clipping.
func adamWUpdate(st *gmodel.Store, o OptimConfig, vars []*gmodel.Variable, grads []*Node, hyper *Node) *Node {
	g := hyper.Graph()
	at := func(i int) *Node { return Squeeze(SliceAxis(hyper, 0, AxisElem(i)), 0) }
	lrWD, stepSize, bc2Sqrt, clip := at(0), at(1), at(2), at(3)
	grads, norm := ClipByGlobalNorm(grads, clip)
	for i, v := range vars {
		p := v.NodeValue(g)
		m := st.VariableWithShape(momentM+v.Path(), v.Shape(), initializer.Zero).SetTrainable(false)
		s := st.VariableWithShape(momentV+v.Path(), v.Shape(), initializer.Zero).SetTrainable(false)
		gr := grads[i]
		mNew := Add(MulScalar(m.NodeValue(g), o.Beta1), MulScalar(gr, 1-o.Beta1))
		vNew := Add(MulScalar(s.NodeValue(g), o.Beta2), MulScalar(Square(gr), 1-o.Beta2))
		if o.Decays(v.Path()) {
			p = Sub(p, Mul(p, lrWD))
		}
		denom := AddScalar(Div(Sqrt(vNew), bc2Sqrt), o.Eps)
		p = Sub(p, Mul(stepSize, Div(mNew, denom)))
		m.SetNodeValue(mNew)
		s.SetNodeValue(vNew)
		v.SetNodeValue(p)
	}
	return norm
}
