package model

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// The greedy layer-wise selection on a hand-computed case: 4 routable
// experts + shared, 2 layers, K = 3 (2 routable + shared). Layer 1's
// probabilities depend on layer 0's subset, as they do in the model; the
// selection must ask for them with layer 0 already restricted.
func TestSelectGreedyHandCase(t *testing.T) {
	cfg := Tiny()
	cfg.NumExperts, cfg.TopK, cfg.PoolMin, cfg.PoolMax, cfg.EvalPoolSize = 5, 3, 2, 4, 2
	var calls []string
	probs := func(l int, kept [][]int) ([]float64, error) {
		calls = append(calls, fmtKept(kept))
		switch {
		case l == 0:
			return []float64{0.1, 0.4, 0.2, 0.3}, nil // top 2: experts 1 (0.4) and 3 (0.3)
		case slices.Equal(kept[0], []int{1, 3}):
			return []float64{0.25, 0.25, 0.3, 0.2}, nil // 2 (0.3), then the 0.25 tie goes to expert 0
		default:
			return []float64{0.5, 0.3, 0.1, 0.1}, nil // what an unrestricted layer 0 would give
		}
	}
	s, err := SelectGreedy(cfg, 3, probs)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]int{{1, 3}, {0, 2}}; !reflect.DeepEqual(s.Layers, want) {
		t.Errorf("layers %v, want %v", s.Layers, want)
	}
	if want := []string{"[nil nil]", "[[1 3] nil]"}; !reflect.DeepEqual(calls, want) {
		t.Errorf("layerProbs called with %v, want %v", calls, want)
	}
	if s.Keep != 3 || s.NumExperts != 5 || !s.SharedExpert || s.Method != SubsetGreedyLayerwise || len(s.RouterProbs) != 2 {
		t.Errorf("subset %+v", s)
	}
	if err := s.Validate(cfg); err != nil {
		t.Error(err)
	}
	// Deterministic: the same probabilities give the same subset.
	calls = nil
	s2, _ := SelectGreedy(cfg, 3, probs)
	if !reflect.DeepEqual(s, s2) {
		t.Errorf("second selection %v, first %v", s2, s)
	}
	// K = 1 keeps no routable expert; K > E is impossible.
	for _, k := range []int{1, 6} {
		if _, err := SelectGreedy(cfg, k, probs); err == nil {
			t.Errorf("keep %d accepted", k)
		}
	}
}

func fmtKept(kept [][]int) string {
	parts := make([]string, len(kept))
	for i, k := range kept {
		parts[i] = "nil"
		if k != nil {
			parts[i] = fmt.Sprint(k)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func TestTopExperts(t *testing.T) {
	for _, tc := range []struct {
		probs []float64
		n     int
		want  []int
	}{
		{[]float64{0.1, 0.5, 0.2, 0.2}, 2, []int{1, 2}}, // tie 0.2: lower index
		{[]float64{0.3, 0.3, 0.3}, 1, []int{0}},
		{[]float64{0.1, 0.9}, 5, []int{0, 1}},
		{[]float64{0.7, 0.2, 0.1, 0.0}, 3, []int{0, 1, 2}},
	} {
		if got := TopExperts(tc.probs, tc.n); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("TopExperts(%v, %d) = %v, want %v", tc.probs, tc.n, got, tc.want)
		}
	}
}

// A subset file reads back equal, and malformed subsets are rejected.
func TestSubsetFileRoundTrip(t *testing.T) {
	cfg := Tiny()
	s := Subset{Keep: 4, NumExperts: 16, SharedExpert: true, Layers: [][]int{{0, 7, 14}, {2, 3, 9}},
		Method: SubsetGreedyLayerwise, Calibration: &Calibration{Source: "calib.txt", Docs: []string{"go:x.go"}, Domain: "go", Tokens: 97},
		RouterProbs: [][]float64{make([]float64, 15), make([]float64, 15)}}
	s.RouterProbs[0][7] = 0.125
	path := filepath.Join(t.TempDir(), "subset.json")
	if err := WriteSubset(path, s); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSubset(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("read %+v, wrote %+v", got, s)
	}
	if err := got.Validate(cfg); err != nil {
		t.Error(err)
	}
	bad := map[string]func(s *Subset){
		"unsorted":        func(s *Subset) { s.Layers[0] = []int{7, 0, 14} },
		"duplicate":       func(s *Subset) { s.Layers[0] = []int{0, 0, 14} },
		"shared listed":   func(s *Subset) { s.Layers[0] = []int{0, 7, 15} },
		"wrong size":      func(s *Subset) { s.Layers[0] = []int{0, 7} },
		"wrong layers":    func(s *Subset) { s.Layers = s.Layers[:1] },
		"other model":     func(s *Subset) { s.NumExperts = 32 },
		"keep too small":  func(s *Subset) { s.Keep, s.Layers = 1, [][]int{{}, {}} },
		"keep too large":  func(s *Subset) { s.Keep = 17 },
		"shared mismatch": func(s *Subset) { s.SharedExpert = false },
	}
	for name, mutate := range bad {
		b := s
		b.Layers = [][]int{slices.Clone(s.Layers[0]), slices.Clone(s.Layers[1])}
		mutate(&b)
		if err := b.Validate(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// storeWeights returns the model variables of a store by checkpoint name.
func storeWeights(store *gmodel.Store) map[string]*tensors.Tensor {
	out := map[string]*tensors.Tensor{}
	for v := range store.IterVariables() {
		out[strings.TrimPrefix(v.Path(), "/")] = v.MustValue()
	}
	return out
}

// The pruned model (PruneWeights: experts and router rows physically
// dropped) computes the full model's logits with the other experts masked
// (Inputs.ExpertMask), for both routers, with and without EMO pools, down
// to subsets smaller than k' (K = 2: one routable expert + shared, pruned
// top_k = 2).
func TestPruneWeightsEqualsMask(t *testing.T) {
	for _, router := range []string{RouterStandard, RouterEMO} {
		for _, keep := range []int{8, 4, 2} {
			t.Run(router+"/keep"+string(rune('0'+keep)), func(t *testing.T) {
				cfg := testConfig()
				cfg.Router = router
				b := 2
				tb := makeBatch(rand.New(rand.NewPCG(21, uint64(keep))), cfg.VocabSize, b, cfg.SeqLen, 3)
				sub, err := RandomSubset(cfg, keep, uint64(keep))
				if err != nil {
					t.Fatal(err)
				}
				mask, err := sub.Mask(cfg)
				if err != nil {
					t.Fatal(err)
				}
				store := newStore(17)
				outs := func(o Outputs) []*Node { return []*Node{o.Logits, o.CE} }
				noPools := []bool{true}
				if router == RouterEMO {
					noPools = []bool{true, false} // released-model inference, and the eval pool
				}
				for _, noPool := range noPools {
					opts := Options{Logits: true, NoPool: noPool}
					masked := run(t, store, forwardSpec{cfg: cfg, opts: opts, subset: true, outputs: outs}, append(baseArgs(tb), mask)...)
					pcfg, pw, err := PruneWeights(cfg, storeWeights(store), sub)
					if err != nil {
						t.Fatal(err)
					}
					if pcfg.NumExperts != keep || pcfg.TopK != min(cfg.TopK, keep) {
						t.Fatalf("pruned config: %d experts top-%d", pcfg.NumExperts, pcfg.TopK)
					}
					pstore := gmodel.NewStore()
					for n, v := range pw {
						setVar(t, pstore, "/"+n, v)
					}
					pruned := run(t, pstore, forwardSpec{cfg: pcfg, opts: opts, outputs: outs}, baseArgs(tb)...)
					assertAllClose(t, "logits", pruned[0], masked[0], 1e-5)
					assertAllClose(t, "CE", pruned[1], masked[1], 1e-5)
					full := run(t, store, forwardSpec{cfg: cfg, opts: opts, outputs: outs}, baseArgs(tb)...)
					if e := maxRelErr(flatFloat(full[0]), flatFloat(masked[0])); e < 1e-3 {
						t.Errorf("masking changed the logits by only %.2g: the test would not see a wrong mask", e)
					}
				}
			})
		}
	}
}

// Pruning shrinks the parameter count by exactly the dropped experts and
// router rows, and the pruned tensors hold exactly Params().Total values.
func TestPruneShrinksParams(t *testing.T) {
	cfg := testConfig()
	store := newStore(3)
	tb := makeBatch(rand.New(rand.NewPCG(1, 1)), cfg.VocabSize, 1, cfg.SeqLen, 0)
	run(t, store, forwardSpec{cfg: cfg, opts: Options{Logits: true}, outputs: func(o Outputs) []*Node { return []*Node{o.Logits} }}, baseArgs(tb)...)
	w := storeWeights(store)
	for _, keep := range []int{16, 8, 4, 2} {
		sub, _ := RandomSubset(cfg, keep, 9)
		pcfg, pw, err := PruneWeights(cfg, w, sub)
		if err != nil {
			t.Fatal(err)
		}
		dropped := int64(cfg.NLayers * (cfg.NumExperts - keep) * (3*cfg.DModel*cfg.ExpertHidden + cfg.DModel))
		if got, want := pcfg.Params().Total, cfg.Params().Total-dropped; got != want {
			t.Errorf("keep %d: pruned params %d, want %d", keep, got, want)
		}
		var n int64
		for _, v := range pw {
			n += int64(v.Shape().Size())
		}
		if n != pcfg.Params().Total {
			t.Errorf("keep %d: pruned tensors hold %d values, Params says %d", keep, n, pcfg.Params().Total)
		}
	}
}
