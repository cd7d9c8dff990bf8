// Package model is the EMO mixture-of-experts decoder (emo-method.md) in
// GoMLX: pre-norm blocks of RoPE attention and a SwiGLU MoE with a shared
// expert, routed by the standard top-k router or by EMO's document pools.
//
// Key types:
//
//   - Config: the model's shape and training constants (presets Tiny, Small,
//     Ref1B14B; LoadConfig for YAML/JSON), with Params and FLOPsPerToken.
//   - Forward, with Inputs (tokens, document segments, labels, pool sizes,
//     load-balancing counts, expert subsets) and Outputs (logits, losses,
//     per-layer expert loads and pool sizes, routing decisions).
//   - Routing: one layer's router logits, pools, top-k experts and gates.
//
// Read bottom-up: norm.go, rope.go, attention.go, router.go (pools and
// top-k), moe.go (dense and dispatched experts), block.go, loss.go,
// transformer.go. segments.go derives router segments from EOS tokens as the
// reference does. docs/model.md describes the API, the deviations from the
// reference and measured speeds; testdata/ holds golden vectors made by
// scripts/emo_reference/make_goldens.py.
package model
