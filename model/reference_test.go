package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// The reference goldens come from scripts/emo_reference/run_reference.py,
// which runs allenai/EMO's own code (commit fb077838: the randpool and
// standard shared-expert routers, loss.py, DroplessMoE with its Triton
// kernels, Attention, the Transformer and its LM head) on the inputs of
// moe_goldens.json / model_goldens.json, in float32 as the reference routes.
// Differences to those transcription goldens, by design of the reference:
//   - expert subsets: the reference's pruned model balances over the kept
//     experts (LB scale E''/k', see subsetLB); pool_mask_kept holds the pool
//     mask on the kept experts only (a pruned model has no other columns);
//   - the model cases label every position (an S+1-token window), so the
//     reference's divisor for LB and router z (labelled tokens) equals ours
//     (real tokens).
// Indices exact, floats to goldenRel of each tensor's scale.

func TestReferenceSegments(t *testing.T) {
	var gold moeGoldens
	readJSON(t, "testdata/reference_moe_goldens.json", &gold)
	for _, c := range gold.Cases {
		segs, _ := Int32Tensor(SegmentsFromEOS(c.Inputs.IDs.rows(), c.Config.EOS))
		checkExact(t, c.Name+"/segments", segs, c.Inputs.Segments)
	}
}

func TestReferenceMoEGoldens(t *testing.T) {
	var gold moeGoldens
	readJSON(t, "testdata/reference_moe_goldens.json", &gold)
	if len(gold.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range gold.Cases {
		for _, dispatch := range []string{DispatchDense, DispatchSorted} {
			t.Run(c.Name+"/"+dispatch, func(t *testing.T) {
				runReferenceMoECase(t, &c, dispatch)
			})
		}
	}
}

// runReferenceMoECase is runMoECase with the subset LB scale (subsetLB) and
// the kept-expert pool mask of a pruned reference.
func runReferenceMoECase(t *testing.T, c *moeCase, dispatch string) {
	got, outs := execMoECase(t, c, dispatch, true)
	in := c.Inputs
	checked := 0
	for i, n := range got {
		want := c.Outputs[n]
		if n == "pool_mask" && in.Allowed != nil {
			// A pruned model has no columns for the removed experts.
			n, want = "pool_mask_kept", c.Outputs["pool_mask_kept"]
			outs[i] = keptColumns(outs[i], in.Allowed.ints())
		}
		if want == nil {
			t.Fatalf("reference golden has no %q", n)
		}
		checked++
		switch n {
		case "experts", "pool_mask", "pool_mask_kept", "counts":
			checkExact(t, n, outs[i], want)
		default:
			checkClose(t, n, outs[i], want, goldenRel)
		}
	}
	if c.Config.WithAttention {
		checked++ // block() returns the block output only; moe_out is inside block_out
	}
	if checked != len(c.Outputs) {
		t.Errorf("checked %d outputs, the golden has %d", checked, len(c.Outputs))
	}
}

// keptColumns keeps the last-axis entries where keep is nonzero.
func keptColumns(x *tensors.Tensor, keep []int32) *tensors.Tensor {
	v := flatFloat(x)
	n := len(keep)
	var out []bool
	for i := 0; i < len(v); i += n {
		for j := range n {
			if keep[j] != 0 {
				out = append(out, v[i+j] != 0)
			}
		}
	}
	dims := append([]int{}, x.Shape().Dimensions...)
	kept := 0
	for _, k := range keep {
		if k != 0 {
			kept++
		}
	}
	dims[len(dims)-1] = kept
	return tensors.FromFlatDataAndDimensions(out, dims...)
}

// TestReferenceModelGoldens runs the whole tiny models of the reference
// goldens (reference Transformer.forward: embeddings, attention with
// flash-attn document masking for EMO, MoE blocks, LM head, every loss)
// through Forward.
func TestReferenceModelGoldens(t *testing.T) {
	var gold modelGoldens
	readJSON(t, "testdata/reference_model_goldens.json", &gold)
	if len(gold.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range gold.Cases {
		for _, dispatch := range []string{DispatchDense, DispatchSorted} {
			t.Run(c.Name+"/"+dispatch, func(t *testing.T) {
				cc := c.Config
				cfg := methodDefaults()
				cfg.VocabSize, cfg.DModel, cfg.NLayers, cfg.NHeads = cc.VocabSize, cc.DModel, cc.NLayers, cc.NHeads
				cfg.NumExperts, cfg.TopK, cfg.ExpertHidden, cfg.Router = cc.NumExperts, cc.TopK, cc.ExpertHidden, cc.Router
				cfg.DocAttentionMask, cfg.RoPETheta = cc.DocAttentionMask, cc.RoPETheta
				cfg.PoolMin, cfg.PoolMax, cfg.EvalPoolSize = cfg.RoutedTopK(), cfg.NumExperts, 0
				cfg.Dispatch, cfg.DispatchBlock = dispatch, 16
				in := c.Inputs
				seg, _ := Int32Tensor(SegmentsFromEOS(in["ids"].rows(), cc.EOS))
				checkExact(t, "segments", seg, in["segments"])
				docs, _ := Int32Tensor(DocumentsFromEOS(in["ids"].rows(), cc.EOS))
				checkExact(t, "attn_segments", docs, in["attn_segments"])
				for _, l := range in["labels"].Data {
					if l < 0 {
						t.Fatal("reference model goldens label every position")
					}
				}

				names, outs := runModelCase(t, cfg, in)
				if len(names) != len(c.Outputs) {
					t.Errorf("checking %d outputs, the golden has %d", len(names), len(c.Outputs))
				}
				for i, n := range names {
					want := c.Outputs[n]
					if want == nil {
						t.Fatalf("reference golden has no %q", n)
					}
					if n == "counts" || n[:min(len(n), 7)] == "experts" {
						checkExact(t, n, outs[i], want)
					} else {
						checkClose(t, n, outs[i], want, goldenRel)
					}
				}
			})
		}
	}
}

// An expert subset balances like the pruned model: Forward's LB with
// Inputs.ExpertMask equals the LB of a model whose router rows and experts
// are sliced to the kept ones (the reference's pruned checkpoints), and
// uniform routing over the subset gives LB = 1.
func TestSubsetLBEqualsPruned(t *testing.T) {
	for _, router := range []string{RouterStandard, RouterEMO} {
		t.Run(router, func(t *testing.T) {
			cfg := testConfig()
			cfg.Router = router
			b := 2
			tb := makeBatch(rand.New(rand.NewPCG(9, 10)), cfg.VocabSize, b, cfg.SeqLen, 3)
			keep := [][]int{{0, 3, 4, 7, 11, 14}, {1, 2, 5, 6, 9, 12}}
			mask, err := cfg.ExpertMask(keep)
			if err != nil {
				t.Fatal(err)
			}
			args := baseArgs(tb)
			if router == RouterEMO {
				args = append(args, fill3(cfg.NLayers, b, cfg.SeqLen, 5))
			}
			outs := func(o Outputs) []*Node { return []*Node{o.LB, o.RouterZ, o.Aux} }
			for _, zero := range []bool{false, true} {
				store := newStore(13)
				if zero { // zero router weights: uniform over the subset (over each pool with pools)
					for l := range cfg.NLayers {
						z := tensors.FromShape(shapes.Make(dtypes.Float32, cfg.NumExperts, cfg.DModel))
						setVar(t, store, "/blocks/"+twoDigits(l)+"/feed_forward_moe/router/weight", z)
					}
				}
				masked := run(t, store, forwardSpec{cfg: cfg, opts: Options{Train: true}, pools: router == RouterEMO,
					subset: true, outputs: outs}, append(append([]any{}, args...), mask)...)
				pcfg := cfg
				pcfg.NumExperts = len(keep[0]) + 1
				pcfg.PoolMax = pcfg.RoutableExperts()
				pstore := gmodel.NewStore()
				for v := range store.IterVariables() {
					val := v.MustValue()
					path := v.Path()
					if hasSuffix(path, "router/weight") || hasSuffix(path, "experts/w1") ||
						hasSuffix(path, "experts/w2") || hasSuffix(path, "experts/w3") {
						val = pickAxis(val, 0, withShared(keep[layerOf(path)], cfg.NumExperts))
					}
					setVar(t, pstore, path, val)
				}
				pruned := run(t, pstore, forwardSpec{cfg: pcfg, opts: Options{Train: true}, pools: router == RouterEMO,
					outputs: outs}, args...)
				assertAllClose(t, "LB", masked[0], pruned[0], 1e-6)
				assertAllClose(t, "router z", masked[1], pruned[1], 1e-6)
				assertAllClose(t, "aux", masked[2], pruned[2], 1e-6)
				if zero && router == RouterStandard {
					for _, v := range flatFloat(masked[0]) {
						if math.Abs(v-1) > 1e-6 {
							t.Errorf("uniform over the subset: LB = %v, want 1", v)
						}
					}
				}
			}
		})
	}
}
