package model

import (
	"fmt"
	"testing"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// The goldens come from scripts/emo_reference/make_goldens.py: a PyTorch
// transcription of the reference's router/MoE math, computed in float64 from
// float32 inputs. Indices must match exactly, floats to goldenRel.
const goldenRel = 1e-5

type moeGoldens struct {
	Segments struct {
		EOS       int32    `json:"eos"`
		IDs       *jtensor `json:"ids"`
		Segments  *jtensor `json:"segments"`
		Documents *jtensor `json:"documents"`
	} `json:"segments"`
	Cases []moeCase `json:"cases"`
}

type moeCase struct {
	Name   string `json:"name"`
	Config struct {
		NumExperts    int     `json:"num_experts"`
		SharedExpert  bool    `json:"shared_expert"`
		TopK          int     `json:"top_k"`
		DModel        int     `json:"d_model"`
		ExpertHidden  int     `json:"expert_hidden"`
		Router        string  `json:"router"`
		EOS           int32   `json:"eos"`
		NHeads        int     `json:"n_heads"`
		RoPETheta     float64 `json:"rope_theta"`
		WithAttention bool    `json:"with_attention"`
		EvalPool      int     `json:"eval_pool"`
	} `json:"config"`
	Inputs struct {
		IDs             *jtensor            `json:"ids"`
		Segments        *jtensor            `json:"segments"`
		AttnSegments    *jtensor            `json:"attn_segments"`
		X               *jtensor            `json:"x"`
		AttentionNorm   *jtensor            `json:"attention_norm"`
		FeedForwardNorm *jtensor            `json:"feed_forward_norm"`
		Router          *jtensor            `json:"router"`
		W1              *jtensor            `json:"w1"`
		W3              *jtensor            `json:"w3"`
		W2              *jtensor            `json:"w2"`
		Attn            map[string]*jtensor `json:"attn"`
		Pools           *jtensor            `json:"pools"`
		Allowed         *jtensor            `json:"allowed"`
	} `json:"inputs"`
	Outputs map[string]*jtensor `json:"outputs"`
}

func TestSegmentsFromEOSGolden(t *testing.T) {
	var gold moeGoldens
	readJSON(t, "testdata/moe_goldens.json", &gold)
	sg := gold.Segments
	got := SegmentsFromEOS(sg.IDs.rows(), sg.EOS)
	gotT, _ := Int32Tensor(got)
	checkExact(t, "segments", gotT, sg.Segments)
	docs, _ := Int32Tensor(DocumentsFromEOS(sg.IDs.rows(), sg.EOS))
	checkExact(t, "documents", docs, sg.Documents)
	// And on every case's ids.
	for _, c := range gold.Cases {
		segs, _ := Int32Tensor(SegmentsFromEOS(c.Inputs.IDs.rows(), c.Config.EOS))
		checkExact(t, c.Name+"/segments", segs, c.Inputs.Segments)
	}
}

// moeCaseConfig is a one-layer config for a golden case.
func moeCaseConfig(c *moeCase) Config {
	cfg := methodDefaults()
	cfg.VocabSize = 8
	cfg.DModel = c.Config.DModel
	cfg.NLayers = 1
	cfg.NHeads = c.Config.NHeads
	cfg.NumExperts = c.Config.NumExperts
	cfg.SharedExpert = c.Config.SharedExpert
	cfg.TopK = c.Config.TopK
	cfg.ExpertHidden = c.Config.ExpertHidden
	cfg.Router = c.Config.Router
	cfg.PoolMin, cfg.PoolMax = cfg.RoutedTopK(), cfg.NumExperts
	cfg.EvalPoolSize = c.Config.EvalPool
	cfg.RoPETheta = c.Config.RoPETheta
	cfg.DispatchBlock = 8
	return cfg
}

func TestMoEGoldens(t *testing.T) {
	var gold moeGoldens
	readJSON(t, "testdata/moe_goldens.json", &gold)
	for _, c := range gold.Cases {
		for _, dispatch := range []string{DispatchDense, DispatchSorted} {
			t.Run(c.Name+"/"+dispatch, func(t *testing.T) {
				runMoECase(t, &c, dispatch)
			})
		}
	}
}

// execMoECase runs one MoE layer (or block) golden case and returns the
// names of the outputs it produced with their values. subsetScale applies
// the reference's LB scale for a pruned expert subset (subsetLB).
func execMoECase(t *testing.T, c *moeCase, dispatch string, subsetScale bool) ([]string, []*tensors.Tensor) {
	t.Helper()
	cfg := moeCaseConfig(c)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ep, kp := cfg.RoutableExperts(), cfg.RoutedTopK()
	store := gmodel.NewStore()
	in := c.Inputs
	setVar(t, store, "/blocks/00/feed_forward_norm/weight", in.FeedForwardNorm.tensor())
	setVar(t, store, "/blocks/00/feed_forward_moe/router/weight", in.Router.tensor())
	setVar(t, store, "/blocks/00/feed_forward_moe/experts/w1", in.W1.tensor())
	setVar(t, store, "/blocks/00/feed_forward_moe/experts/w3", in.W3.tensor())
	setVar(t, store, "/blocks/00/feed_forward_moe/experts/w2", in.W2.tensor())
	if c.Config.WithAttention {
		setVar(t, store, "/blocks/00/attention_norm/weight", in.AttentionNorm.tensor())
		for _, n := range []string{"w_q", "w_k", "w_v", "w_out"} {
			setVar(t, store, "/blocks/00/attention/"+n, in.Attn[n].tensor())
		}
	}

	var names []string
	fn := func(s *gmodel.Scope, inputs []*Node) []*Node {
		x, seg, attnSeg := inputs[0], inputs[1], inputs[2]
		g := x.Graph()
		var pools, allowed *Node
		switch {
		case c.Config.EvalPool > 0:
			pools = BroadcastToDims(Scalar(g, dtypes.Int32, c.Config.EvalPool), seg.Shape().Dimensions...)
		case in.Pools != nil:
			pools = inputs[3]
		}
		if in.Allowed != nil {
			allowed = inputs[len(inputs)-1]
		}
		li := layerInputs{
			attnMask: attentionMask(attnSeg, true),
			seg:      seg,
			valid:    GreaterOrEqual(seg, ScalarZero(g, dtypes.Int32)),
			rope:     newRoPE(g, x.Shape().Dim(1), cfg.HeadDimOrDefault(), cfg.RoPETheta),
			dispatch: dispatch,
		}
		bs := s.In("blocks").In("00")
		var blockOut, moeOut *Node
		var r Routing
		if c.Config.WithAttention {
			blockOut, r = block(bs, &cfg, x, li, pools, allowed)
		} else {
			xn := rmsNorm(bs.In("feed_forward_norm"), x, cfg.NormEps)
			moeOut, r = moeLayer(bs.In("feed_forward_moe"), &cfg, xn, li, pools, allowed)
			blockOut = Add(x, moeOut)
		}
		st := newLayerStats(r, li.valid, ep)
		out := map[string]*Node{
			"logits": r.Logits, "raw_probs": r.RawProbs, "probs": r.Probs, "experts": r.Experts,
			"gates": r.Gates, "counts": ReduceSum(st.counts, 0),
			"lb":            loadBalance(st, nil, 0, ep, kp),
			"lb_local_1row": loadBalance(st, nil, 1, ep, kp),
			"router_z":      st.zLoss, "block_out": blockOut,
		}
		if subsetScale {
			out["lb"] = subsetLB(out["lb"], allowed, ep)
			out["lb_local_1row"] = subsetLB(out["lb_local_1row"], allowed, ep)
		}
		if moeOut != nil {
			out["moe_out"] = moeOut
		}
		if r.PoolScores != nil {
			out["pool_scores"], out["pool_mask"] = r.PoolScores, r.PoolMask
		}
		names = names[:0]
		var nodes []*Node
		for _, n := range []string{"logits", "raw_probs", "probs", "experts", "gates", "counts", "lb",
			"lb_local_1row", "router_z", "block_out", "moe_out", "pool_scores", "pool_mask"} {
			if out[n] != nil {
				names = append(names, n)
				nodes = append(nodes, out[n])
			}
		}
		return nodes
	}
	args := []any{in.X.tensor(), in.Segments.tensor(), in.Segments.tensor()}
	if in.AttnSegments != nil {
		args[2] = in.AttnSegments.tensor()
	}
	if in.Pools != nil {
		args = append(args, in.Pools.tensor())
	}
	if in.Allowed != nil {
		args = append(args, in.Allowed.tensor())
	}
	exec, err := gmodel.NewExec(backend(t), store, fn)
	if err != nil {
		t.Fatal(err)
	}
	var outs []*tensors.Tensor
	if err := Try(func() { outs = exec.MustExec(args...) }); err != nil {
		t.Fatal(err)
	}
	return names, outs
}

func runMoECase(t *testing.T, c *moeCase, dispatch string) {
	names, outs := execMoECase(t, c, dispatch, false)
	for i, n := range names {
		want := c.Outputs[n]
		if want == nil {
			t.Fatalf("golden has no %q", n)
		}
		switch n {
		case "experts", "pool_mask", "counts":
			checkExact(t, n, outs[i], want)
		default:
			checkClose(t, n, outs[i], want, goldenRel)
		}
	}
}

type modelGoldens struct {
	Cases []modelCase `json:"cases"`
}

// modelCase is one whole-model golden: config, inputs, outputs.
type modelCase struct {
	Name   string `json:"name"`
	Config struct {
		VocabSize        int     `json:"vocab_size"`
		DModel           int     `json:"d_model"`
		NLayers          int     `json:"n_layers"`
		NHeads           int     `json:"n_heads"`
		NumExperts       int     `json:"num_experts"`
		TopK             int     `json:"top_k"`
		ExpertHidden     int     `json:"expert_hidden"`
		Router           string  `json:"router"`
		DocAttentionMask bool    `json:"doc_attention_mask"`
		RoPETheta        float64 `json:"rope_theta"`
		EOS              int32   `json:"eos"`
	} `json:"config"`
	Inputs  map[string]*jtensor `json:"inputs"`
	Outputs map[string]*jtensor `json:"outputs"`
}

// TestModelGoldens runs whole tiny models (embeddings, 2 blocks with
// attention and MoE, LM head, every loss) through Forward.
func TestModelGoldens(t *testing.T) {
	var gold modelGoldens
	readJSON(t, "testdata/model_goldens.json", &gold)
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

				// The EOS segmentation must be what the reference computed.
				seg, _ := Int32Tensor(SegmentsFromEOS(in["ids"].rows(), cc.EOS))
				checkExact(t, "segments", seg, in["segments"])
				docs, _ := Int32Tensor(DocumentsFromEOS(in["ids"].rows(), cc.EOS))
				checkExact(t, "attn_segments", docs, in["attn_segments"])

				names, outs := runModelCase(t, cfg, in)
				for i, n := range names {
					want := c.Outputs[n]
					switch {
					case n == "counts" || n[:min(len(n), 7)] == "experts":
						checkExact(t, n, outs[i], want)
					default:
						checkClose(t, n, outs[i], want, goldenRel)
					}
				}
			})
		}
	}
}

// runModelCase loads a golden case's weights into a store and runs Forward
// on its inputs, returning the output names the goldens use and the values.
func runModelCase(t *testing.T, cfg Config, in map[string]*jtensor) ([]string, []*tensors.Tensor) {
	t.Helper()
	store := gmodel.NewStore()
	setVar(t, store, "/embeddings/weight", in["embeddings"].tensor())
	setVar(t, store, "/lm_head/norm/weight", in["lm_head_norm"].tensor())
	setVar(t, store, "/lm_head/w_out", in["lm_head"].tensor())
	for l := range cfg.NLayers {
		p := fmt.Sprintf("/blocks/%02d/", l)
		get := func(n string) *tensors.Tensor { return in[fmt.Sprintf("blocks.%d.%s", l, n)].tensor() }
		setVar(t, store, p+"attention_norm/weight", get("attention_norm"))
		setVar(t, store, p+"feed_forward_norm/weight", get("feed_forward_norm"))
		for _, n := range []string{"w_q", "w_k", "w_v", "w_out"} {
			setVar(t, store, p+"attention/"+n, get(n))
		}
		setVar(t, store, p+"feed_forward_moe/router/weight", get("router"))
		for _, n := range []string{"w1", "w3", "w2"} {
			setVar(t, store, p+"feed_forward_moe/experts/"+n, get(n))
		}
	}
	names := []string{"logits", "ce", "lm_head_z", "aux", "loss", "router_z", "lb", "counts"}
	for l := range cfg.NLayers {
		names = append(names, fmt.Sprintf("experts.%d", l), fmt.Sprintf("gates.%d", l))
	}
	fn := func(s *gmodel.Scope, inputs []*Node) []*Node {
		fin := Inputs{Tokens: inputs[0], Segments: inputs[1], AttnSegments: inputs[2], Labels: inputs[3]}
		if len(inputs) > 4 {
			fin.PoolSizes = inputs[4]
		}
		o := Forward(s, cfg, fin, Options{Train: fin.PoolSizes != nil, Logits: true})
		nodes := []*Node{o.Logits, o.CE, o.LMHeadZ, o.Aux, o.Loss, o.RouterZ, o.LB, o.Counts}
		for _, r := range o.Layers {
			nodes = append(nodes, r.Experts, r.Gates)
		}
		return nodes
	}
	args := []any{in["ids"].tensor(), in["segments"].tensor(), in["attn_segments"].tensor(), in["labels"].tensor()}
	if in["pools"] != nil {
		args = append(args, in["pools"].tensor())
	}
	exec, err := gmodel.NewExec(backend(t), store, fn)
	if err != nil {
		t.Fatal(err)
	}
	var outs []*tensors.Tensor
	if err := Try(func() { outs = exec.MustExec(args...) }); err != nil {
		t.Fatal(err)
	}
	return names, outs
}
