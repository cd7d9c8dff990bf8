package train

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/gobackend"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
)

// With zero gradients Adam's step is 0, so what moves is weight decay
// alone: decayed variables shrink by exactly (1 - lr·wd), embeddings and
// norm weights do not move.
func TestAdamWDecayExemptions(t *testing.T) {
	be, err := gobackend.New("")
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptimConfig()
	o.ScheduleSteps, o.Warmup = 10, 1
	st := gmodel.NewStore()
	paths := []string{"/embeddings/weight", "/blocks/00/attention_norm/weight", "/blocks/00/feed_forward_norm/weight",
		"/lm_head/norm/weight", "/blocks/00/attention/w_q", "/blocks/00/feed_forward_moe/experts/w1", "/lm_head/w_out"}
	for _, p := range paths {
		st.VariableWithShape(p, shapes.Make(dtypes.Float32, 3), initializer.One)
	}
	e, err := gmodel.NewExec(be, st, func(s *gmodel.Scope, hyper *Node) *Node {
		s.Store().SetTraining(hyper.Graph(), true)
		var vars []*gmodel.Variable
		var grads []*Node
		for _, p := range paths {
			v := st.GetVariable(p)
			vars = append(vars, v)
			grads = append(grads, ZerosLike(v.NodeValue(hyper.Graph())))
		}
		return adamWUpdate(st, o, vars, grads, hyper)
	})
	if err != nil {
		t.Fatal(err)
	}
	hp := o.hyperParams(0)
	if _, err := e.Exec(tensors.FromFlatDataAndDimensions(hp, 4)); err != nil {
		t.Fatal(err)
	}
	lr := o.LRAt(0)
	for _, p := range paths {
		got := tensors.MustCopyFlatData[float32](st.GetVariable(p).MustValue())[0]
		exempt := strings.Contains(p, "embeddings/") || strings.Contains(p, "norm/")
		want := float32(1)
		if !exempt {
			want = 1 - float32(lr*o.WeightDecay)
		}
		if got != want {
			t.Errorf("%s: %v after one step, want %v (exempt=%v)", p, got, want, exempt)
		}
		if exempt == o.Decays(p) {
			t.Errorf("Decays(%s) = %v", p, o.Decays(p))
		}
	}
}

// Clipping: the global norm after clipping is <= max (= max when above);
// below max the gradients pass unchanged; max < 0 disables clipping.
func TestClipByGlobalNorm(t *testing.T) {
	be, err := gobackend.New("")
	if err != nil {
		t.Fatal(err)
	}
	clip := func(maxNorm float32, a, b []float32) (after, before float64, out [][]float32) {
		t.Helper()
		outs := MustExecOnceN(be, func(x, y, m *Node) []*Node {
			c, n := ClipByGlobalNorm([]*Node{x, y}, m)
			return []*Node{c[0], c[1], n}
		}, a, b, maxNorm)
		ca, cb := tensors.MustCopyFlatData[float32](outs[0]), tensors.MustCopyFlatData[float32](outs[1])
		var s float64
		for _, v := range append(append([]float32{}, ca...), cb...) {
			s += float64(v) * float64(v)
		}
		return math.Sqrt(s), float64(tensors.MustCopyFlatData[float32](outs[2])[0]), [][]float32{ca, cb}
	}
	a, b := []float32{3, 4, 0}, []float32{12, 0} // global norm 13
	after, before, _ := clip(1, a, b)
	if math.Abs(before-13) > 1e-5 || after > 1+1e-6 || after < 1-1e-5 {
		t.Errorf("max 1: norm %v -> %v, want 13 -> 1", before, after)
	}
	after, _, out := clip(100, a, b)
	if math.Abs(after-13) > 1e-5 || out[0][1] != 4 {
		t.Errorf("max 100: norm became %v (%v), want unchanged", after, out)
	}
	after, _, _ = clip(-1, a, b)
	if math.Abs(after-13) > 1e-5 {
		t.Errorf("no clipping: norm became %v", after)
	}
}

// The schedule: linear warmup from LR/W to LR, half cosine to 0.1·LR at
// ScheduleSteps, floor after.
func TestSchedule(t *testing.T) {
	o := DefaultOptimConfig()
	o.LR, o.Warmup, o.ScheduleSteps = 1.0, 10, 110
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-12 }
	cases := []struct {
		step int
		want float64
	}{
		{0, 0.1}, {4, 0.5}, {9, 1.0}, // warmup: (s+1)/10
		{59, 0.1 + 0.9*0.5}, // halfway through the cosine
		{109, 0.1}, {500, 0.1},
	}
	for _, c := range cases {
		if got := o.LRAt(c.step); !near(got, c.want) {
			t.Errorf("LRAt(%d) = %v, want %v", c.step, got, c.want)
		}
	}
	prev := math.Inf(1)
	for s := 9; s < 120; s++ {
		lr := o.LRAt(s)
		if lr > prev+1e-15 {
			t.Fatalf("lr rises after warmup at step %d: %v > %v", s, lr, prev)
		}
		prev = lr
	}
	d := DefaultConfig()
	d.Steps = 300
	d = d.withDefaults()
	if d.Optim.Warmup != 30 || d.Optim.ScheduleSteps != 300 || d.Optim.MinLRRatio != 0.1 {
		t.Errorf("defaults: warmup %d, schedule %d, floor %v", d.Optim.Warmup, d.Optim.ScheduleSteps, d.Optim.MinLRRatio)
	}
}

// K micro-batches of B/K with global LB counts give the gradient of one
// batch of B (to float tolerance), and the same step metrics.
func TestAccumulationEqualsOneBatch(t *testing.T) {
	dir := synthStore(t, filepath.Join(t.TempDir(), "s"), 24, 33, 64, 3)
	grads := func(accum int) (map[string][]float32, StepMetrics) {
		c := testConfig(t, dir)
		c.Batch, c.Accum = 8, accum
		c.CheckpointDir = t.TempDir()
		tr := newTrainer(t, c)
		batch, err := tr.data.Next(c.Batch)
		if err != nil {
			t.Fatal(err)
		}
		p, err := tr.plan(batch)
		if err != nil {
			t.Fatal(err)
		}
		for m := range accum {
			args, err := tr.microInputs(kindAccum, p.micro[m], p.pools[m], p.counts, p.weights[m], nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tr.run(kindAccum, args); err != nil {
				t.Fatal(err)
			}
		}
		g := map[string][]float32{}
		for v := range tr.vars.IterVariables() {
			if strings.HasPrefix(v.Path(), gradAccScope) {
				g[strings.TrimPrefix(v.Path(), gradAccScope)] = tensors.MustCopyFlatData[float32](v.MustValue())
			}
		}
		tr.Close()
		// A real step on a fresh trainer for the metrics.
		c.CheckpointDir = t.TempDir()
		tr2 := newTrainer(t, c)
		m, err := tr2.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		tr2.Close()
		return g, m
	}
	g1, m1 := grads(1)
	g4, m4 := grads(4)
	if len(g1) == 0 || len(g1) != len(g4) {
		t.Fatalf("gradients: %d vs %d variables", len(g1), len(g4))
	}
	for name, a := range g1 {
		worst, scale := maxDiff(g4[name], a)
		if worst > 1e-4*scale+1e-9 {
			t.Errorf("%s: max |Δgrad| %.3g vs max |grad| %.3g", name, worst, scale)
		}
	}
	rel := func(a, b float64) float64 { return math.Abs(a-b) / max(math.Abs(a), 1e-12) }
	for _, c := range []struct {
		name string
		a, b float64
	}{{"loss", m1.Loss, m4.Loss}, {"ce", m1.CE, m4.CE}, {"lb", m1.LB, m4.LB}, {"router_z", m1.RouterZ, m4.RouterZ},
		{"grad_norm", m1.GradNorm, m4.GradNorm}} {
		if rel(c.a, c.b) > 1e-5 {
			t.Errorf("%s: %v with one batch, %v with 4 micro-batches", c.name, c.a, c.b)
		}
	}
	for l := range m1.Load {
		for e := range m1.Load[l] {
			if m1.Load[l][e] != m4.Load[l][e] {
				t.Fatalf("expert load differs at layer %d expert %d: %v vs %v", l, e, m1.Load[l][e], m4.Load[l][e])
			}
		}
	}
	t.Logf("loss %.6f vs %.6f, LB %.6f vs %.6f, |g| %.6f vs %.6f", m1.Loss, m4.Loss, m1.LB, m4.LB, m1.GradNorm, m4.GradNorm)
}

// Local LB differs from global LB on the same batch (the ablation is real),
// and both run.
func TestLocalLB(t *testing.T) {
	dir := synthStore(t, filepath.Join(t.TempDir(), "s"), 16, 33, 64, 3)
	lb := func(mode string) float64 {
		c := testConfig(t, dir)
		c.Batch, c.Accum, c.LB = 8, 2, mode
		c.LBGroupRows = 0
		if mode == LBLocal {
			c.LBGroupRows = 2
		}
		c.CheckpointDir = t.TempDir()
		tr := newTrainer(t, c)
		m, err := tr.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		tr.Close()
		return m.LB
	}
	g, l := lb(LBGlobal), lb(LBLocal)
	if g == l || g < 0.9 || l < 0.9 {
		t.Fatalf("LB global %v, local %v: want both >= ~1 and different", g, l)
	}
	t.Logf("LB global %.4f, local (groups of 2 rows) %.4f", g, l)
}

// adamWReference is torch.optim.AdamW's update in float64 (decoupled decay
// first, then the bias-corrected step), with global-norm clipping.
func adamWReference(o OptimConfig, p, m, v [][]float64, g [][]float64, step int, decays []bool) {
	var sq float64
	for _, gi := range g {
		for _, x := range gi {
			sq += x * x
		}
	}
	coef := math.Min(1, o.ClipNorm/(math.Sqrt(sq)+1e-6))
	lr := o.LRAt(step)
	t := float64(step + 1)
	bc1, bc2 := 1-math.Pow(o.Beta1, t), 1-math.Pow(o.Beta2, t)
	for i := range p {
		for j := range p[i] {
			gr := g[i][j] * coef
			if decays[i] {
				p[i][j] *= 1 - lr*o.WeightDecay
			}
			m[i][j] = o.Beta1*m[i][j] + (1-o.Beta1)*gr
			v[i][j] = o.Beta2*v[i][j] + (1-o.Beta2)*gr*gr
			p[i][j] -= lr / bc1 * m[i][j] / (math.Sqrt(v[i][j])/math.Sqrt(bc2) + o.Eps)
		}
	}
}

// Five AdamW steps with clipping on random gradients match the float64
// PyTorch arithmetic to float32 tolerance.
func TestAdamWMatchesPyTorchArithmetic(t *testing.T) {
	be, err := gobackend.New("")
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptimConfig()
	o.LR, o.Warmup, o.ScheduleSteps, o.ClipNorm = 1e-2, 2, 5, 0.5
	paths := []string{"/embeddings/weight", "/blocks/00/attention/w_q"}
	decays := []bool{false, true}
	const n = 6
	st := gmodel.NewStore()
	r := newPCG(3, 4)
	p := make([][]float64, 2)
	m, v := [][]float64{make([]float64, n), make([]float64, n)}, [][]float64{make([]float64, n), make([]float64, n)}
	for i, path := range paths {
		init := make([]float32, n)
		p[i] = make([]float64, n)
		for j := range init {
			init[j] = float32(r.NormFloat64())
			p[i][j] = float64(init[j])
		}
		if _, err := st.CreateVariable(path, tensors.FromFlatDataAndDimensions(init, n)); err != nil {
			t.Fatal(err)
		}
	}
	e, err := gmodel.NewExec(be, st, func(s *gmodel.Scope, in []*Node) []*Node {
		g := in[0].Graph()
		s.Store().SetTraining(g, true)
		vars := []*gmodel.Variable{st.GetVariable(paths[0]), st.GetVariable(paths[1])}
		return []*Node{adamWUpdate(st, o, vars, []*Node{in[0], in[1]}, in[2])}
	})
	if err != nil {
		t.Fatal(err)
	}
	for step := range 5 {
		g := [][]float64{make([]float64, n), make([]float64, n)}
		g32 := [][]float32{make([]float32, n), make([]float32, n)}
		for i := range g {
			for j := range g[i] {
				g32[i][j] = float32(r.NormFloat64() * 0.7)
				g[i][j] = float64(g32[i][j])
			}
		}
		if _, err := e.Exec(tensors.FromFlatDataAndDimensions(g32[0], n), tensors.FromFlatDataAndDimensions(g32[1], n),
			tensors.FromFlatDataAndDimensions(o.hyperParams(step), 4)); err != nil {
			t.Fatal(err)
		}
		adamWReference(o, p, m, v, g, step, decays)
	}
	for i, path := range paths {
		got := tensors.MustCopyFlatData[float32](st.GetVariable(path).MustValue())
		for j := range got {
			if d := math.Abs(float64(got[j]) - p[i][j]); d > 2e-6*math.Max(1, math.Abs(p[i][j])) {
				t.Errorf("%s[%d]: %v, reference %v", path, j, got[j], p[i][j])
			}
		}
	}
}
