package train

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// hostAdamW is AdamW with global-norm clipping run by Go code on the
// weights' own memory, for the go backend (its buffers are Go slices). The step graph then only leaves the gradients in variables.
//
// Why: the go backend runs every element-wise op as its own pass over
// memory. adamWUpdate needs 14 of them per parameter, and on the small
// preset (57M parameters) they were about 10% of a step. Here the same
// update is two passes: one reading the gradients for their norm, one
// reading gradient, weight and both moments and writing the last three.
// On an accelerator the weights stay on the device and adamWUpdate is
// used (the gradients would otherwise travel to the host and back).
//
// The arithmetic is PyTorch's single-tensor AdamW in float32, operation
// for operation (decay, lerp, mul+addcmul, sqrt/div+add, addcdiv), after
// clip_grad_norm_'s scale. The norm's sum of squares is float32 within
// blocks of 256 elements and float64 across them, in a fixed order, so the
// result does not depend on the number of workers.
type hostAdamW struct {
	o      OptimConfig
	params []*gmodel.Variable // the step graph's trainable variables
	grads  []*gmodel.Variable // their gradients, left by the step graph
	m, v   []*gmodel.Variable // moments (host tensors: no graph reads them)
	decays []bool
	chunks []hostChunk
}

// hostChunk is a range of one parameter's elements: the unit of work, and
// the unit of the norm's fixed summation order.
type hostChunk struct{ param, lo, hi int }

const hostChunkLen = 1 << 15

// newHostAdamW prepares the update of params. Moments a checkpoint did not
// provide are created as zeros.
func newHostAdamW(st *gmodel.Store, o OptimConfig, params []*gmodel.Variable) (*hostAdamW, error) {
	h := &hostAdamW{o: o, params: params}
	for i, p := range params {
		if p.DType() != dtypes.Float32 || !p.Trainable {
			return nil, fmt.Errorf("train: host AdamW: %s is not a float32 trainable variable", p.Path())
		}
		g := st.GetVariable(gradOutScope + p.Path())
		if g == nil {
			return nil, fmt.Errorf("train: host AdamW: no gradient variable for %s", p.Path())
		}
		h.grads = append(h.grads, g)
		for _, scope := range []string{momentM, momentV} {
			mv := st.GetVariable(scope + p.Path())
			if mv == nil {
				var err error
				if mv, err = st.CreateVariable(scope+p.Path(), tensors.FromShape(p.Shape())); err != nil {
					return nil, fmt.Errorf("train: host AdamW: %w", err)
				}
				mv.SetTrainable(false)
			}
			if scope == momentM {
				h.m = append(h.m, mv)
			} else {
				h.v = append(h.v, mv)
			}
		}
		h.decays = append(h.decays, o.Decays(p.Path()))
		n := p.Shape().Size()
		for lo := 0; lo < n; lo += hostChunkLen {
			h.chunks = append(h.chunks, hostChunk{i, lo, min(n, lo+hostChunkLen)})
		}
	}
	return h, nil
}

// hostView returns the variable's float32 data, to read or update in
// place. On the go backend a tensor that lives only "on the device" is a
// Go slice that GoMLX hands out as is (ConstFlatData makes no copy): it
// is the tensor's only copy, so writing it is what the next graph reads.
// A tensor with a local copy is written through MutableFlatData, after
// which GoMLX drops any device copy and makes a new one when a graph needs
// it (once, after a checkpoint load).
func hostView(v *gmodel.Variable) ([]float32, error) {
	t, err := v.Value()
	if err != nil {
		return nil, err
	}
	var f []float32
	access := func(a any) { f = a.([]float32) }
	if t.IsLocal() {
		err = t.MutableFlatData(access)
	} else {
		err = t.ConstFlatData(access)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", v.Path(), err)
	}
	if len(f) != v.Shape().Size() {
		return nil, fmt.Errorf("%s: %d values, want %d", v.Path(), len(f), v.Shape().Size())
	}
	return f, nil
}

// step clips the gradients by global norm and applies AdamW step `step`
// (0-based) in place. It returns the norm before clipping.
func (h *hostAdamW) step(step int) (norm float64, err error) {
	n := len(h.params)
	g, p, m, v := make([][]float32, n), make([][]float32, n), make([][]float32, n), make([][]float32, n)
	// The slices stay valid after hostView returns: each is the tensor's
	// own memory, and nothing else touches these tensors until step ends.
	for i := range n {
		for _, x := range []struct {
			dst *[]float32
			v   *gmodel.Variable
		}{{&g[i], h.grads[i]}, {&p[i], h.params[i]}, {&m[i], h.m[i]}, {&v[i], h.v[i]}} {
			if *x.dst, err = hostView(x.v); err != nil {
				return 0, fmt.Errorf("train: host AdamW: %w", err)
			}
		}
	}

	partial := make([]float64, len(h.chunks))
	h.parallel(func(c int) {
		ch := h.chunks[c]
		partial[c] = sumSquares(g[ch.param][ch.lo:ch.hi])
	})
	var sq float64
	for _, s := range partial {
		sq += s
	}
	norm = math.Sqrt(sq)

	o := h.o
	hp := o.hyperParams(step)
	k := adamWScalars{coef: 1, stepSize: -hp[1], bc2Sqrt: hp[2], keep: float32(1 - o.LRAt(step)*o.WeightDecay),
		w1: float32(1 - o.Beta1), b2: float32(o.Beta2), w2: float32(1 - o.Beta2), eps: float32(o.Eps)}
	if o.ClipNorm >= 0 {
		k.coef = float32(math.Min(o.ClipNorm/(norm+1e-6), 1))
	}
	h.parallel(func(c int) {
		ch := h.chunks[c]
		kc := k
		kc.decay = h.decays[ch.param]
		adamWChunk(kc, g[ch.param][ch.lo:ch.hi], p[ch.param][ch.lo:ch.hi], m[ch.param][ch.lo:ch.hi], v[ch.param][ch.lo:ch.hi])
	})
	return norm, nil
}

// adamWScalars are one step's scalars of the element-wise update.
type adamWScalars struct {
	coef     float32 // clip_grad_norm_'s scale
	keep     float32 // 1 - lr·wd
	decay    bool    // whether keep applies (not to embeddings and norms)
	stepSize float32 // -lr/(1-β1^t)
	bc2Sqrt  float32 // sqrt(1-β2^t)
	w1       float32 // 1-β1
	b2, w2   float32 // β2, 1-β2
	eps      float32
}

// adamWChunk updates p, m and v from g, element by element: the AVX2
// kernel where the CPU has it (adamw_host_amd64.go), else adamWScalar.
// Both round every operation to float32 in the same order, so they give
// the same bits (TestAdamWKernelsAgree).
var adamWChunk = adamWScalar

// sumSquares is Σ g² in float64, likewise vectorised where possible.
var sumSquares = sumSquaresScalar

// vectorKernels says whether adamWChunk and sumSquares are the AVX2 ones.
var vectorKernels = false

func adamWScalar(k adamWScalars, g, p, m, v []float32) {
	p, m, v = p[:len(g)], m[:len(g)], v[:len(g)]
	for j, gr := range g {
		gr *= k.coef // clip_grad_norm_: grad.mul_(clip_coef_clamped)
		pj := p[j]
		if k.decay {
			pj *= k.keep // param.mul_(1 - lr·wd)
		}
		mj := m[j] + k.w1*(gr-m[j])                            // exp_avg.lerp_(grad, 1-β1)
		vj := v[j]*k.b2 + k.w2*gr*gr                           // exp_avg_sq.mul_(β2).addcmul_(grad, grad, 1-β2)
		d := float32(math.Sqrt(float64(vj)))/k.bc2Sqrt + k.eps // (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
		p[j] = pj + k.stepSize*mj/d                            // param.addcdiv_(exp_avg, denom, -step_size)
		m[j], v[j] = mj, vj
	}
}

// sumSquaresScalar sums in blocks of 256 in float32 (the vector kernel's
// order: lane i of a block takes elements i, i+8, ...) and adds the
// blocks in float64.
func sumSquaresScalar(g []float32) float64 {
	var total float64
	for lo := 0; lo < len(g); lo += 256 {
		blk := g[lo:min(len(g), lo+256)]
		var lanes [8]float32
		n8 := len(blk) &^ 7
		for j := 0; j < n8; j += 8 {
			for l := range 8 {
				lanes[l] += blk[j+l] * blk[j+l]
			}
		}
		for _, x := range lanes {
			total += float64(x)
		}
		for _, x := range blk[n8:] {
			total += float64(x) * float64(x)
		}
	}
	return total
}

// parallel runs f over every chunk index on GOMAXPROCS workers.
func (h *hostAdamW) parallel(f func(c int)) {
	workers := min(runtime.GOMAXPROCS(0), len(h.chunks))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				c := int(next.Add(1) - 1)
				if c >= len(h.chunks) {
					return
				}
				f(c)
			}
		})
	}
	wg.Wait()
}
