package train

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// Five host AdamW steps with clipping on random gradients match the
// float64 PyTorch arithmetic (adamWReference) to float32 tolerance, as the
// graph version does (TestAdamWMatchesPyTorchArithmetic). The second
// parameter spans several work chunks.
func TestHostAdamWMatchesPyTorchArithmetic(t *testing.T) {
	o := DefaultOptimConfig()
	o.LR, o.Warmup, o.ScheduleSteps, o.ClipNorm = 1e-2, 2, 5, 0.5
	paths := []string{"/embeddings/weight", "/blocks/00/attention/w_q"}
	sizes := []int{6, 2*hostChunkLen + 5}
	decays := []bool{false, true}
	st := gmodel.NewStore()
	r := newPCG(3, 4)
	var params []*gmodel.Variable
	p, m, v := make([][]float64, 2), make([][]float64, 2), make([][]float64, 2)
	for i, path := range paths {
		n := sizes[i]
		init := make([]float32, n)
		p[i], m[i], v[i] = make([]float64, n), make([]float64, n), make([]float64, n)
		for j := range init {
			init[j] = float32(r.NormFloat64())
			p[i][j] = float64(init[j])
		}
		pv, err := st.CreateVariable(path, tensors.FromFlatDataAndDimensions(init, n))
		if err != nil {
			t.Fatal(err)
		}
		params = append(params, pv)
		if _, err := st.CreateVariable(gradOutScope+path, tensors.FromShape(pv.Shape())); err != nil {
			t.Fatal(err)
		}
	}
	h, err := newHostAdamW(st, o, params)
	if err != nil {
		t.Fatal(err)
	}
	for step := range 5 {
		g := make([][]float64, 2)
		for i, path := range paths {
			g32 := make([]float32, sizes[i])
			g[i] = make([]float64, sizes[i])
			for j := range g32 {
				g32[j] = float32(r.NormFloat64() * 0.7)
				g[i][j] = float64(g32[j])
			}
			if err := st.GetVariable(gradOutScope + path).SetValue(tensors.FromFlatDataAndDimensions(g32, sizes[i])); err != nil {
				t.Fatal(err)
			}
		}
		norm, err := h.step(step)
		if err != nil {
			t.Fatal(err)
		}
		var sq float64
		for _, gi := range g {
			for _, x := range gi {
				sq += x * x
			}
		}
		// float32 within blocks of 256 (≤ 32 terms a lane), float64 across.
		if math.Abs(norm-math.Sqrt(sq)) > 1e-6*math.Sqrt(sq) {
			t.Fatalf("step %d: norm %v, want %v", step, norm, math.Sqrt(sq))
		}
		adamWReference(o, p, m, v, g, step, decays)
	}
	for i, path := range paths {
		got := tensors.MustCopyFlatData[float32](st.GetVariable(path).MustValue())
		bad := 0
		for j := range got {
			if d := math.Abs(float64(got[j]) - p[i][j]); d > 2e-6*math.Max(1, math.Abs(p[i][j])) {
				if bad++; bad <= 5 {
					t.Errorf("%s[%d]: %v, reference %v", path, j, got[j], p[i][j])
				}
			}
		}
	}
}

// On the go backend the trainer updates weights with hostAdamW, the step
// graph handing back each weight through its view (no copy). Training with
// it follows the in-graph AdamW: same losses to float32 rounding over 6
// steps, and weights and moments that agree. That also shows that every
// update reaches the next step's graph, the views included.
func TestHostOptimizerFollowsGraphOptimizer(t *testing.T) {
	dir := synthStore(t, filepath.Join(t.TempDir(), "s"), 24, 33, 64, 3)
	run := func(graph bool) ([]StepMetrics, map[string]*tensors.Tensor, *Trainer) {
		c := testConfig(t, dir)
		c.CheckpointDir = t.TempDir()
		c.graphOptimizer = graph
		tr := newTrainer(t, c)
		if tr.layout.hostOptim == graph {
			t.Fatalf("graphOptimizer %v: host optimizer %v", graph, tr.layout.hostOptim)
		}
		ms := steps(t, tr, 6)
		named, err := tr.checkpointTensors()
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		return ms, named, tr
	}
	hostM, hostW, hostTr := run(false)
	graphM, graphW, _ := run(true)
	for i := range hostM {
		a, b := hostM[i], graphM[i]
		if math.Abs(a.Loss-b.Loss) > 1e-5*math.Abs(b.Loss) || math.Abs(a.GradNorm-b.GradNorm) > 1e-4*b.GradNorm {
			t.Errorf("step %d: host loss %.7f |g| %.6f, graph loss %.7f |g| %.6f", i+1, a.Loss, a.GradNorm, b.Loss, b.GradNorm)
		}
	}
	if len(hostW) != len(graphW) {
		t.Fatalf("checkpoint tensors: host %d, graph %d", len(hostW), len(graphW))
	}
	for name, gt := range graphW {
		ht := hostW[name]
		if ht == nil {
			t.Fatalf("host checkpoint lacks %s", name)
		}
		if gt.DType() != dtypes.Float32 { // GoMLX's RNG state
			continue
		}
		worst, scale := maxDiff(tensors.MustCopyFlatData[float32](ht), tensors.MustCopyFlatData[float32](gt))
		if worst > 1e-3*scale+1e-7 {
			t.Errorf("%s: max |host-graph| %.3g, max |graph| %.3g", name, worst, scale)
		}
	}
	// Every matrix goes through a view (only embeddings and norm weights,
	// read by a gather and a product, have none), so none is copied.
	want := 0
	for _, p := range hostTr.hostParams {
		if !strings.Contains(p.Path(), "norm/") && !strings.HasPrefix(p.Path(), "/embeddings/") {
			want++
		}
	}
	if hostTr.hostViews != want || want == 0 {
		t.Errorf("%d weights handed back through views, want %d", hostTr.hostViews, want)
	}
	t.Logf("final loss host %.7f graph %.7f; %d of %d weights through views", hostM[5].Loss, graphM[5].Loss, hostTr.hostViews, len(hostTr.hostParams))
}

// The AVX2 kernels give the scalar kernels' bits, tails included, with
// and without decay.
func TestAdamWKernelsAgree(t *testing.T) {
	if !vectorKernels {
		t.Skip("no vector kernels in this build (GOEXPERIMENT=simd on amd64 with AVX2)")
	}
	r := newPCG(5, 6)
	for _, n := range []int{1, 7, 8, 9, 255, 256, 257, 1000} {
		for _, decay := range []bool{false, true} {
			k := adamWScalars{coef: 0.37, keep: 0.999, decay: decay, stepSize: -0.013, bc2Sqrt: 0.31,
				w1: 0.1, b2: 0.95, w2: 0.05, eps: 1e-8}
			var in [4][]float32
			for i := range in {
				in[i] = make([]float32, n)
				for j := range in[i] {
					in[i][j] = float32(r.NormFloat64())
				}
			}
			for j := range in[3] {
				in[3][j] *= in[3][j] // v ≥ 0
			}
			clone := func() [4][]float32 {
				var c [4][]float32
				for i := range in {
					c[i] = append([]float32(nil), in[i]...)
				}
				return c
			}
			a, b := clone(), clone()
			adamWScalar(k, a[0], a[1], a[2], a[3])
			adamWChunk(k, b[0], b[1], b[2], b[3])
			for i := 1; i < 4; i++ {
				for j := range a[i] {
					if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
						t.Fatalf("n=%d decay=%v: array %d [%d]: scalar %v, vector %v", n, decay, i, j, a[i][j], b[i][j])
					}
				}
			}
			if s, v := sumSquaresScalar(in[0]), sumSquares(in[0]); s != v {
				t.Fatalf("n=%d: sum of squares scalar %v, vector %v", n, s, v)
			}
		}
	}
}
