package model

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/train"
	"github.com/gomlx/gomlx/ml/train/optimizer"
)

// newTrainer wires Forward into GoMLX's train.Trainer the way a trainer
// would: inputs (tokens, segments, labels, pools), CE as the main loss and
// the auxiliary losses as regularisation.
func newTrainer(t testing.TB, cfg Config, store *gmodel.Store, opt optimizer.Interface) *train.Trainer {
	modelFn := func(s *gmodel.Scope, _ any, in []*Node) []*Node {
		out := Forward(s, cfg, Inputs{Tokens: in[0], Segments: in[1], Labels: in[2], PoolSizes: in[3]}, Options{Train: true})
		train.AddMainLoss(out.CE)
		train.AddRegularizationLoss(out.Aux)
		return []*Node{out.CE}
	}
	return train.NewTrainer(backend(t), store, modelFn, nil, opt, nil, nil)
}

func trainBatch(cfg Config, tb testBatch, r *rand.Rand) train.Batch {
	return train.Batch{Inputs: []*tensors.Tensor{mustT(tb.tokens), mustT(tb.segs), mustT(tb.labels),
		cfg.SamplePoolSizes(r, len(tb.tokens), len(tb.tokens[0]))}}
}

// A tiny model's loss falls over 30 Adam steps on a fixed batch, and the
// main loss alone sends gradient to the router (through the gates) and to
// routed and shared experts.
func TestTinyLossDecreases(t *testing.T) {
	cfg := testConfig()
	tb := makeBatch(rand.New(rand.NewPCG(40, 41)), cfg.VocabSize, 4, cfg.SeqLen, 0)
	store := newStore(17)
	trainer := newTrainer(t, cfg, store, optimizer.Adam().LearningRate(3e-3).Done())
	r := rand.New(rand.NewPCG(42, 43))
	var losses []float64
	for step := range 30 {
		m, err := trainer.TrainStep(trainBatch(cfg, tb, r))
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		losses = append(losses, flatFloat(m[0])[0])
	}
	t.Logf("loss: first %.3f, last %.3f", losses[0], losses[len(losses)-1])
	if !(losses[29] < losses[0]-1.0) {
		t.Fatalf("loss did not fall: %v", losses)
	}

	// Gradient of CE alone w.r.t. router and expert weights of every layer.
	var names []string
	exec, err := gmodel.NewExec(backend(t), store, func(s *gmodel.Scope, in []*Node) []*Node {
		out := Forward(s, cfg, Inputs{Tokens: in[0], Segments: in[1], Labels: in[2], PoolSizes: in[3]}, Options{Train: true})
		g := out.CE.Graph()
		var vars []*Node
		for l := range cfg.NLayers {
			for _, n := range []string{"router/weight", "experts/w1", "experts/w2"} {
				path := fmt.Sprintf("/blocks/%02d/feed_forward_moe/%s", l, n)
				names = append(names, path)
				vars = append(vars, store.GetVariable(path).NodeValue(g))
			}
		}
		return Gradient(out.CE, vars...)
	})
	if err != nil {
		t.Fatal(err)
	}
	b := trainBatch(cfg, tb, r)
	grads := exec.MustExec(b.Inputs[0], b.Inputs[1], b.Inputs[2], b.Inputs[3])
	ep := cfg.RoutableExperts()
	for i, gT := range grads {
		v := flatFloat(gT)
		if hasSuffix(names[i], "router/weight") {
			// The routable rows get gradient; the shared expert's row is unused.
			var routable, shared float64
			for j, x := range v {
				if j/cfg.DModel < ep {
					routable += x * x
				} else {
					shared += x * x
				}
			}
			if routable == 0 || shared != 0 {
				t.Errorf("%s: |grad|² routable %g (want > 0), shared row %g (want 0)", names[i], routable, shared)
			}
			continue
		}
		per := len(v) / cfg.NumExperts
		used := 0
		for e := range cfg.NumExperts {
			var n2 float64
			for _, x := range v[e*per : (e+1)*per] {
				n2 += x * x
			}
			if n2 > 0 {
				used++
			}
			if e == cfg.NumExperts-1 && n2 == 0 {
				t.Errorf("%s: shared expert has no gradient", names[i])
			}
		}
		if used < 4 {
			t.Errorf("%s: only %d experts have gradient", names[i], used)
		}
	}
}

// BenchmarkTrainStep measures one Adam step (forward + backward + update)
// of the Tiny shape on the go backend. Run with GOEXPERIMENT=simd.
func BenchmarkTrainStep(b *testing.B) {
	for _, bc := range []struct {
		vocab, batch, seq int
		dispatch          string
	}{
		{96, 8, 128, DispatchSorted},
		{96, 8, 128, DispatchDense},
		{100352, 8, 128, DispatchSorted},
	} {
		b.Run(fmt.Sprintf("tiny/vocab=%d/B=%d/S=%d/%s", bc.vocab, bc.batch, bc.seq, bc.dispatch), func(b *testing.B) {
			cfg := Tiny()
			cfg.VocabSize, cfg.SeqLen, cfg.Dispatch = bc.vocab, bc.seq, bc.dispatch
			tb := makeBatch(rand.New(rand.NewPCG(1, 1)), min(bc.vocab, 1000), bc.batch, bc.seq, 0)
			store := newStore(1)
			trainer := newTrainer(b, cfg, store, optimizer.Adam().LearningRate(1e-3).Done())
			r := rand.New(rand.NewPCG(2, 2))
			start := time.Now()
			if _, err := trainer.TrainStep(trainBatch(cfg, tb, r)); err != nil { // compile
				b.Fatal(err)
			}
			b.Logf("first step (compile + init): %s", time.Since(start))
			b.ResetTimer()
			for range b.N {
				if _, err := trainer.TrainStep(trainBatch(cfg, tb, r)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*bc.batch*bc.seq)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
