package model

import (
	. "github.com/gomlx/gomlx/core/graph"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// layerInputs are the per-forward tensors every block reads.
type layerInputs struct {
	attnMask *Node // [B,1,S,S] bool
	seg      *Node // [B,S] router segments
	valid    *Node // [B,S] bool, seg >= 0
	rope     rope
	dispatch string
}

// moeLayer is the MoE feed-forward of one block: routing, routed experts and
// the shared expert. x is the normalised input [B,S,d].
func moeLayer(s *gmodel.Scope, cfg *Config, x *Node, in layerInputs, pools, allowed *Node) (*Node, Routing) {
	r := route(s.In("router"), cfg, x, in.seg, pools, allowed)
	ex := newExperts(s.In("experts"), cfg, x.Graph(), x.DType())
	var y *Node
	switch in.dispatch {
	case DispatchDense:
		y = denseMoE(ex.routed(cfg.RoutableExperts()), x, r.Experts, r.Gates) // [B,S,d]
	default:
		// The full tensors: dispatch gathers only routable experts' blocks,
		// and a slice of the routable ones would copy nearly all expert
		// weights each step (and its gradient pad them back).
		ex = ex.withMergedGradients()
		y = dispatchMoE(ex, cfg.RoutableExperts(), x, r.Experts, r.Gates, in.valid, cfg.DispatchBlock) // [B,S,d]
	}
	if cfg.SharedExpert {
		y = Add(y, ex.shared(x)) // weight 1.0
	}
	return y, r
}

// block is one pre-norm transformer block:
// h = x + Attn(RMSNorm(x)); out = h + MoE(RMSNorm(h)).
func block(s *gmodel.Scope, cfg *Config, x *Node, in layerInputs, pools, allowed *Node) (*Node, Routing) {
	h := Add(x, attention(s.In("attention"), cfg, rmsNorm(s.In("attention_norm"), x, cfg.NormEps), in.attnMask, in.rope))
	y, r := moeLayer(s.In("feed_forward_moe"), cfg, rmsNorm(s.In("feed_forward_norm"), h, cfg.NormEps), in, pools, allowed)
	return Add(h, y), r
}
