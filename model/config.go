package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomlx/gomlx/core/tensors"
	"gopkg.in/yaml.v3"
)

// Router kinds (Config.Router).
const (
	// RouterStandard routes each token with softmax over the routable experts and
	// top-k' (no renormalisation): the standard-MoE baseline of emo-method.md §5.
	RouterStandard = "standard"
	// RouterEMO restricts each token to its document's expert pool
	// (emo-method.md §3–4).
	RouterEMO = "emo"
)

// Expert compute modes (Config.Dispatch).
const (
	// DispatchDense runs every routed expert on every token and weights the
	// results by the (mostly zero) gates: cost grows with E', fine for tiny models.
	DispatchDense = "dense"
	// DispatchSorted gathers each token's routed assignments into per-expert
	// blocks, runs one batched matmul over the blocks and scatters the results
	// back: cost follows the routed FLOPs (see moe.go).
	DispatchSorted = "dispatch"
)

// Config is the shape and the training-time constants of an EMO MoE decoder.
// Field names mirror the YAML/JSON keys. Sizes have no default: start from a
// preset (Tiny, Small, Ref1B14B) or set `preset:` in the file LoadConfig reads.
type Config struct {
	// Preset names the preset a config file starts from ("tiny", "small",
	// "ref1b14b"); only LoadConfig reads it.
	Preset string `yaml:"preset,omitempty" json:"preset,omitempty"`

	// VocabSize is the number of embedding rows and logits. Set it from the
	// tokenizer of the store (padded up, e.g. dolma2 100278 -> 100352).
	VocabSize int `yaml:"vocab_size" json:"vocab_size"`
	// DModel is the residual width d.
	DModel int `yaml:"d_model" json:"d_model"`
	// NLayers is the number of transformer blocks.
	NLayers int `yaml:"n_layers" json:"n_layers"`
	// NHeads is the number of attention heads.
	NHeads int `yaml:"n_heads" json:"n_heads"`
	// HeadDim is the per-head width; 0 means DModel/NHeads. Must be even (RoPE).
	HeadDim int `yaml:"head_dim,omitempty" json:"head_dim,omitempty"`

	// NumExperts is E, the experts per layer, counting the shared one.
	NumExperts int `yaml:"num_experts" json:"num_experts"`
	// SharedExpert makes expert E-1 a shared expert used by every token with
	// weight 1.0; the routable experts are then E' = E-1.
	SharedExpert bool `yaml:"shared_expert" json:"shared_expert"`
	// TopK is k, the experts each token uses, counting the shared one; the
	// router picks k' = k-1 (shared) or k (no shared expert).
	TopK int `yaml:"top_k" json:"top_k"`
	// ExpertHidden is the SwiGLU hidden width h of each expert.
	ExpertHidden int `yaml:"expert_hidden" json:"expert_hidden"`

	// Router is RouterStandard or RouterEMO.
	Router string `yaml:"router" json:"router"`
	// PoolMin and PoolMax bound the per-(segment, layer, step) pool size drawn
	// uniformly (inclusive) in training; the reference uses [8, 128] with
	// E' = 127. n >= E' means no restriction. PoolMin must be >= k'.
	PoolMin int `yaml:"pool_min" json:"pool_min"`
	PoolMax int `yaml:"pool_max" json:"pool_max"`
	// EvalPoolSize is the pool size in evaluation (reference: 32). 0 means no pool.
	EvalPoolSize int `yaml:"eval_pool_size" json:"eval_pool_size"`

	// RoPETheta is the RoPE base (reference: 500000).
	RoPETheta float64 `yaml:"rope_theta" json:"rope_theta"`
	// NormEps is the RMSNorm epsilon (reference: 1e-6).
	NormEps float64 `yaml:"norm_eps" json:"norm_eps"`
	// DocAttentionMask restricts attention to the token's own document
	// (same attention segment AND causal). The reference's EMO runs used it;
	// its standard-MoE baselines did not.
	DocAttentionMask bool `yaml:"doc_attention_mask" json:"doc_attention_mask"`

	// RouterZLossWeight (0.001), LMHeadZLossWeight (1e-5) and LBLossWeight (0.1)
	// weight the auxiliary losses. The per-layer ones (router z, LB) are
	// divided by NLayers, as the reference does.
	RouterZLossWeight float64 `yaml:"router_z_loss_weight" json:"router_z_loss_weight"`
	LMHeadZLossWeight float64 `yaml:"lm_head_z_loss_weight" json:"lm_head_z_loss_weight"`
	LBLossWeight      float64 `yaml:"lb_loss_weight" json:"lb_loss_weight"`

	// Dispatch is DispatchDense or DispatchSorted (default).
	Dispatch string `yaml:"dispatch" json:"dispatch"`
	// DispatchBlock is the row count of one expert block in DispatchSorted
	// (default 64): each expert's assignments are padded to a multiple of it.
	DispatchBlock int `yaml:"dispatch_block,omitempty" json:"dispatch_block,omitempty"`

	// DType of parameters and activations; only "float32" for now.
	DType string `yaml:"dtype" json:"dtype"`
	// InitStd is the std of the normal initialisation (0.02); the router uses
	// a normal truncated at ±3 std.
	InitStd float64 `yaml:"init_std" json:"init_std"`
	// SeqLen is the training sequence length (used by presets and FLOPs).
	SeqLen int `yaml:"seq_len" json:"seq_len"`
}

// methodDefaults holds the constants of emo-method.md that do not depend on size.
func methodDefaults() Config {
	return Config{
		SharedExpert:      true,
		Router:            RouterEMO,
		RoPETheta:         500000,
		NormEps:           1e-6,
		DocAttentionMask:  true,
		RouterZLossWeight: 0.001,
		LMHeadZLossWeight: 1e-5,
		LBLossWeight:      0.1,
		Dispatch:          DispatchSorted,
		DispatchBlock:     64,
		DType:             "float32",
		InitStd:           0.02,
	}
}

// Tiny is the CPU test shape: 2 layers, d 128, 16 experts (15 routed + shared),
// top-3 (2 routed + shared), pools [4, 15], eval pool 4 (~25%), sequences of
// 128. VocabSize is the dolma2 embedding size 100352; set it from the store's
// tokenizer (and use a small one in unit tests: the LM head dominates the cost).
func Tiny() Config {
	c := methodDefaults()
	c.Preset = "tiny"
	c.VocabSize = 100352 // dolma2, padded as the release
	c.DModel = 128       // small enough for 2 CPU cores, wide enough for 4 heads of 32
	c.NLayers = 2        // two MoE layers: layer-wise selection still has an order
	c.NHeads = 4
	c.NumExperts = 16 // 15 routable + shared
	c.TopK = 3        // 2 routed + shared
	c.ExpertHidden = 128
	c.PoolMin = 4      // ~1/4 of E' at the narrowest, like 8..128 of 127 scaled up for small E'
	c.PoolMax = 15     // = E': some draws leave the document unrestricted, as in the reference
	c.EvalPoolSize = 4 // ~25% of E', as 32 of 127
	c.RoPETheta = 10000
	c.SeqLen = 128
	c.DispatchBlock = 32
	return c
}

// Small is a ~100M-parameter model (about half of it embeddings with the
// dolma2 vocabulary): 8 layers, d 256, 32 experts (31 + shared), top-4.
func Small() Config {
	c := methodDefaults()
	c.Preset = "small"
	c.VocabSize = 100352
	c.DModel = 256
	c.NLayers = 8
	c.NHeads = 4
	c.NumExperts = 32
	c.TopK = 4
	c.ExpertHidden = 256
	c.PoolMin = 4
	c.PoolMax = 31
	c.EvalPoolSize = 8
	c.SeqLen = 1024
	// With ~100 assignments per expert at the benchmark's 1024 tokens a
	// step, blocks of 32 pad a quarter of the rows that blocks of 64 do,
	// for 60% more (smaller) weight gathers: 4-5% faster on CPU.
	c.DispatchBlock = 32
	return c
}

// Ref1B14B is the shape of the released allenai/Emo_1b14b_1T: 16 layers,
// d 2048, 16 heads, 128 experts (127 + shared), top-8, expert hidden 1024,
// pools [8, 128], eval pool 32, RoPE theta 500000, sequences of 4096.
func Ref1B14B() Config {
	c := methodDefaults()
	c.Preset = "ref1b14b"
	c.VocabSize = 100352
	c.DModel = 2048
	c.NLayers = 16
	c.NHeads = 16
	c.NumExperts = 128
	c.TopK = 8
	c.ExpertHidden = 1024
	c.PoolMin = 8
	c.PoolMax = 128
	c.EvalPoolSize = 32
	c.SeqLen = 4096
	c.DispatchBlock = 128
	return c
}

// Preset returns the named preset ("tiny", "small", "ref1b14b").
func Preset(name string) (Config, error) {
	switch strings.ToLower(name) {
	case "tiny":
		return Tiny(), nil
	case "small":
		return Small(), nil
	case "ref1b14b", "ref", "emo_1b14b":
		return Ref1B14B(), nil
	}
	return Config{}, fmt.Errorf("model: unknown preset %q (want tiny, small or ref1b14b)", name)
}

// LoadConfig reads a YAML or JSON config file. Keys not in the file keep the
// value of the file's `preset` (if any) or else the method constants
// (router weights, eps, theta...), with sizes left unset. The result is
// validated.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("model: load config: %w", err)
	}
	c, err := ParseConfig(data, strings.ToLower(filepath.Ext(path)) == ".json")
	if err != nil {
		return Config{}, fmt.Errorf("model: load config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes YAML (or JSON when isJSON) as LoadConfig does.
func ParseConfig(data []byte, isJSON bool) (Config, error) {
	decode := func(c *Config) error {
		if isJSON {
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			return dec.Decode(c)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		err := dec.Decode(c)
		if err != nil && err.Error() == "EOF" {
			return nil
		}
		return err
	}
	var probe Config
	if err := decode(&probe); err != nil {
		return Config{}, err
	}
	c := methodDefaults()
	if probe.Preset != "" {
		p, err := Preset(probe.Preset)
		if err != nil {
			return Config{}, err
		}
		c = p
	}
	if err := decode(&c); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// YAML renders the config as YAML (e.g. for `emopipe config defaults`).
func (c Config) YAML() string {
	b, err := yaml.Marshal(c)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// Validate rejects inconsistent configs.
func (c Config) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if c.VocabSize <= 0 || c.DModel <= 0 || c.NLayers <= 0 || c.NHeads <= 0 || c.ExpertHidden <= 0 {
		bad("vocab_size, d_model, n_layers, n_heads and expert_hidden must be > 0")
	}
	if c.HeadDim == 0 && c.NHeads > 0 && c.DModel%c.NHeads != 0 {
		bad("d_model %d not divisible by n_heads %d (or set head_dim)", c.DModel, c.NHeads)
	}
	if c.HeadDimOrDefault()%2 != 0 {
		bad("head_dim %d must be even for RoPE", c.HeadDimOrDefault())
	}
	if c.SharedExpert && c.NumExperts < 2 || c.NumExperts < 1 {
		bad("num_experts %d too small (shared_expert=%v)", c.NumExperts, c.SharedExpert)
	}
	kp := c.RoutedTopK()
	if kp < 1 || kp > c.RoutableExperts() {
		bad("top_k %d gives %d routed experts, want 1..%d", c.TopK, kp, c.RoutableExperts())
	}
	switch c.Router {
	case RouterStandard:
	case RouterEMO:
		if c.PoolMin < kp || c.PoolMax < c.PoolMin {
			bad("pool sizes [%d, %d] must satisfy k'=%d <= pool_min <= pool_max", c.PoolMin, c.PoolMax, kp)
		}
		if c.EvalPoolSize != 0 && c.EvalPoolSize < kp {
			bad("eval_pool_size %d must be 0 (no pool) or >= k'=%d", c.EvalPoolSize, kp)
		}
	default:
		bad("router %q: want %q or %q", c.Router, RouterStandard, RouterEMO)
	}
	switch c.Dispatch {
	case DispatchDense, DispatchSorted:
	default:
		bad("dispatch %q: want %q or %q", c.Dispatch, DispatchDense, DispatchSorted)
	}
	if c.Dispatch == DispatchSorted && c.DispatchBlock <= 0 {
		bad("dispatch_block must be > 0")
	}
	if c.DType != "float32" {
		bad("dtype %q: only float32 is supported", c.DType)
	}
	if c.RoPETheta <= 0 || c.NormEps <= 0 || c.InitStd <= 0 {
		bad("rope_theta, norm_eps and init_std must be > 0")
	}
	if c.RouterZLossWeight < 0 || c.LMHeadZLossWeight < 0 || c.LBLossWeight < 0 {
		bad("loss weights must be >= 0")
	}
	if len(errs) > 0 {
		return fmt.Errorf("model: invalid config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// HeadDimOrDefault is HeadDim, or DModel/NHeads when HeadDim is 0.
func (c Config) HeadDimOrDefault() int {
	if c.HeadDim > 0 {
		return c.HeadDim
	}
	if c.NHeads == 0 {
		return 0
	}
	return c.DModel / c.NHeads
}

// RoutableExperts is E': the experts the router chooses from.
func (c Config) RoutableExperts() int {
	if c.SharedExpert {
		return c.NumExperts - 1
	}
	return c.NumExperts
}

// RoutedTopK is k': the experts the router picks per token.
func (c Config) RoutedTopK() int {
	if c.SharedExpert {
		return c.TopK - 1
	}
	return c.TopK
}

// ParamCounts splits the parameter count.
type ParamCounts struct {
	Total     int64 // every weight
	Embedding int64 // input embedding rows (a lookup, no FLOPs)
	Experts   int64 // all expert weights (routed + shared)
	Active    int64 // weights one token uses: non-expert + k experts (unused router row included)
}

// Params counts the parameters of the model this config builds.
func (c Config) Params() ParamCounts {
	d, V, L := int64(c.DModel), int64(c.VocabSize), int64(c.NLayers)
	hd := int64(c.NHeads * c.HeadDimOrDefault())
	expert := 3 * d * int64(c.ExpertHidden)
	attn := 4*d*hd + 0 // w_q, w_k, w_v [d,H*dh], w_out [H*dh,d]; no biases
	norms := 2 * d
	router := d * int64(c.NumExperts)
	perLayer := attn + norms + router + int64(c.NumExperts)*expert
	emb := V * d
	head := d + d*V // final norm + untied LM head
	p := ParamCounts{
		Total:     emb + L*perLayer + head,
		Embedding: emb,
		Experts:   L * int64(c.NumExperts) * expert,
	}
	p.Active = p.Total - p.Experts + L*int64(c.TopK)*expert
	return p
}

// FLOPsPerToken estimates training FLOPs per token (forward + backward) for
// MFU, nanoGPT style: 6 × active non-embedding weights (router and LM head
// included, shared and routed experts at k per token) + 12·L·H·dh·seqLen for
// attention scores and values (full causal square, as nanoGPT counts it).
// Dispatch padding and the dense mode's extra expert work are not counted.
func (c Config) FLOPsPerToken(seqLen int) float64 {
	p := c.Params()
	n := float64(p.Active - p.Embedding)
	attn := 12 * float64(c.NLayers) * float64(c.NHeads*c.HeadDimOrDefault()) * float64(seqLen)
	return 6*n + attn
}

// SamplePoolSizes draws training pool sizes UniformInt[PoolMin, PoolMax]
// (inclusive) for every (layer, row, segment slot): a [NLayers, batch, nseg]
// int32 tensor for Inputs.PoolSizes. The trainer owns r, so runs replay.
func (c Config) SamplePoolSizes(r *rand.Rand, batch, nseg int) *tensors.Tensor {
	v := make([]int32, c.NLayers*batch*nseg)
	span := c.PoolMax - c.PoolMin + 1
	for i := range v {
		v[i] = int32(c.PoolMin + r.IntN(span))
	}
	return tensors.FromFlatDataAndDimensions(v, c.NLayers, batch, nseg)
}
