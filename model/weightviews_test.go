package model

import (
	"math/rand/v2"
	"strings"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
)

// With Options.WeightViews, Forward reports for every weight matrix (the
// projections, the router, the experts, the LM head; not embeddings and
// norm weights, which have no custom gradient) the identity on that very
// weight node, and keeps no record of the graph afterwards.
func TestWeightViews(t *testing.T) {
	cfg := testConfig()
	b := 2
	tb := makeBatch(rand.New(rand.NewPCG(7, 8)), cfg.VocabSize, b, cfg.SeqLen, 9)
	pools := cfg.SamplePoolSizes(rand.New(rand.NewPCG(9, 9)), b, cfg.SeqLen)
	store := newStore(3)
	for _, on := range []bool{true, false} {
		outs := func(o Outputs) []*Node {
			g := o.Loss.Graph()
			weightViews.Lock()
			_, left := weightViews.byGraph[g]
			weightViews.Unlock()
			if left {
				t.Error("the graph's view record outlived Forward")
			}
			if !on {
				if o.WeightViews != nil {
					t.Errorf("%d views without Options.WeightViews", len(o.WeightViews))
				}
				return []*Node{o.Loss}
			}
			want := 0
			for v := range store.IterVariables() {
				if !v.InUseByGraph(g) {
					continue
				}
				w := v.NodeValue(g)
				view := o.WeightViews[w]
				matrix := !strings.Contains(v.Path(), "norm") && !strings.HasPrefix(v.Path(), "/embeddings/")
				if matrix {
					want++
				}
				switch {
				case matrix && view == nil:
					t.Errorf("%s: no view", v.Path())
				case !matrix && view != nil:
					t.Errorf("%s: a view on a weight without a custom gradient", v.Path())
				case view != nil && (view.Type() != NodeTypeIdentity || view.Inputs()[0] != w):
					t.Errorf("%s: view is %s, not an identity of the weight", v.Path(), view.Type())
				}
			}
			if want < 8 || len(o.WeightViews) != want {
				t.Errorf("%d views, want %d", len(o.WeightViews), want)
			}
			return []*Node{o.Loss}
		}
		run(t, store, forwardSpec{cfg: cfg, opts: Options{Train: true, WeightViews: on}, pools: true, outputs: outs},
			append(baseArgs(tb), pools)...)
	}
}
