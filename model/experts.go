package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/tensors"
)

// Selective expert use (emo-method.md §7): choose a per-layer subset of K
// experts from calibration text, then either mask the others
// (Inputs.ExpertMask) or drop their weights (PruneWeights). Both give the
// same model.

// Subset methods (Subset.Method).
const (
	// SubsetGreedyLayerwise is the reference's selection
	// (src/hf_training/greedy_prune_layerwise.py): layer by layer, with the
	// earlier layers already restricted, average softmax(router logits) over
	// the routable experts and the calibration tokens; keep the top K-1.
	SubsetGreedyLayerwise = "greedy-layerwise"
	// SubsetRandom keeps K-1 routable experts per layer drawn uniformly (a
	// control).
	SubsetRandom = "random"
)

// Subset is a per-layer expert subset, as a file (JSON) and in memory.
// K counts the shared expert, as the reference does: K = 16 of 128 is
// 12.5% (15 routable experts + the shared one).
type Subset struct {
	// Keep is K, the experts every layer keeps, counting the shared one.
	Keep int `json:"keep"`
	// NumExperts is E of the model the subset was chosen on (shared included).
	NumExperts int `json:"num_experts"`
	// SharedExpert: that model's expert E-1 is shared; it is always kept
	// and never listed in Layers.
	SharedExpert bool `json:"shared_expert"`
	// Layers are the kept routable experts of each layer, ascending:
	// [NLayers][K-1] (K without a shared expert).
	Layers [][]int `json:"layers"`
	// Method is how the subset was chosen (SubsetGreedyLayerwise, SubsetRandom).
	Method string `json:"method,omitempty"`
	// Calibration describes the text it was chosen from.
	Calibration *Calibration `json:"calibration,omitempty"`
	// RouterProbs are the averaged router probabilities the greedy
	// selection ranked, per layer over the routable experts (experts of
	// earlier layers' subsets applied). [NLayers][E']
	RouterProbs [][]float64 `json:"router_probs,omitempty"`
}

// Calibration names the text a subset was selected from.
type Calibration struct {
	// Source is a file path or a store directory.
	Source string `json:"source"`
	// Docs are the document keys used (store calibration).
	Docs []string `json:"docs,omitempty"`
	// Domain is the calibration documents' domain, if known.
	Domain string `json:"domain,omitempty"`
	// Tokens is the number of calibration tokens the probabilities average over.
	Tokens int `json:"tokens"`
}

// KeptRoutable is the number of routable experts a subset of K keeps per
// layer: K-1 with a shared expert, else K.
func (c Config) KeptRoutable(keep int) int {
	if c.SharedExpert {
		return keep - 1
	}
	return keep
}

// CheckKeep rejects a K that keeps no routable expert or more experts than
// the model has.
func (c Config) CheckKeep(keep int) error {
	if keep > c.NumExperts || c.KeptRoutable(keep) < 1 {
		lo := 1
		if c.SharedExpert {
			lo = 2
		}
		return fmt.Errorf("model: keep %d experts: want %d..%d (K counts the shared expert)", keep, lo, c.NumExperts)
	}
	return nil
}

// KeepForFraction is K for a fraction of the experts (0.25 keeps a
// quarter): round(frac·E), at least one routable expert (plus the shared
// one), at most E.
func (c Config) KeepForFraction(frac float64) int {
	k := int(math.Round(frac * float64(c.NumExperts)))
	lo := 1
	if c.SharedExpert {
		lo = 2
	}
	return min(max(k, lo), c.NumExperts)
}

// TopExperts returns the indices of the n largest probabilities, ascending
// (ties go to the lower index, NaN ranks last). It is the selection step of
// one layer.
func TopExperts(probs []float64, n int) []int {
	idx := make([]int, len(probs))
	for i := range idx {
		idx[i] = i
	}
	key := func(i int) float64 {
		if math.IsNaN(probs[i]) {
			return math.Inf(-1)
		}
		return probs[i]
	}
	sort.SliceStable(idx, func(a, b int) bool { return key(idx[a]) > key(idx[b]) })
	out := slices.Clone(idx[:min(n, len(idx))])
	sort.Ints(out)
	return out
}

// SelectGreedy runs the reference's greedy layer-wise selection
// (emo-method.md §7): for l = 0..L-1, layerProbs(l, kept) returns the mean
// over the calibration tokens of softmax(router logits) over the E'
// routable experts of layer l, computed with kept[j] applied to the layers
// j < l (kept[j] is nil, all experts, for j >= l); the K-1 most probable
// routable experts (K without a shared expert) are kept. Deterministic for
// deterministic layerProbs.
func SelectGreedy(cfg Config, keep int, layerProbs func(l int, kept [][]int) ([]float64, error)) (Subset, error) {
	if err := cfg.CheckKeep(keep); err != nil {
		return Subset{}, err
	}
	s := Subset{Keep: keep, NumExperts: cfg.NumExperts, SharedExpert: cfg.SharedExpert, Method: SubsetGreedyLayerwise,
		Layers: make([][]int, cfg.NLayers), RouterProbs: make([][]float64, cfg.NLayers)}
	n, ep := cfg.KeptRoutable(keep), cfg.RoutableExperts()
	for l := range cfg.NLayers {
		kept := make([][]int, cfg.NLayers)
		copy(kept, s.Layers[:l])
		probs, err := layerProbs(l, kept)
		if err != nil {
			return Subset{}, err
		}
		if len(probs) != ep {
			return Subset{}, fmt.Errorf("model: layer %d: %d router probabilities, want E'=%d", l, len(probs), ep)
		}
		s.Layers[l] = TopExperts(probs, n)
		s.RouterProbs[l] = slices.Clone(probs)
	}
	return s, nil
}

// RandomSubset keeps K-1 routable experts per layer drawn uniformly from a
// PCG seeded with seed (a control for the selection).
func RandomSubset(cfg Config, keep int, seed uint64) (Subset, error) {
	if err := cfg.CheckKeep(keep); err != nil {
		return Subset{}, err
	}
	r := rand.New(rand.NewPCG(seed, 0x5e1ec7))
	s := Subset{Keep: keep, NumExperts: cfg.NumExperts, SharedExpert: cfg.SharedExpert, Method: SubsetRandom,
		Layers: make([][]int, cfg.NLayers)}
	for l := range cfg.NLayers {
		s.Layers[l] = r.Perm(cfg.RoutableExperts())[:cfg.KeptRoutable(keep)]
		sort.Ints(s.Layers[l])
	}
	return s, nil
}

// Validate checks that s fits cfg: same expert count and shared expert,
// one list per layer of K-1 (K) distinct routable experts, ascending.
func (s Subset) Validate(cfg Config) error {
	if s.NumExperts != cfg.NumExperts || s.SharedExpert != cfg.SharedExpert {
		return fmt.Errorf("model: subset was chosen on a model with %d experts (shared %v); this model has %d (shared %v)",
			s.NumExperts, s.SharedExpert, cfg.NumExperts, cfg.SharedExpert)
	}
	if err := cfg.CheckKeep(s.Keep); err != nil {
		return err
	}
	if len(s.Layers) != cfg.NLayers {
		return fmt.Errorf("model: subset has %d layers, the model %d", len(s.Layers), cfg.NLayers)
	}
	n, ep := cfg.KeptRoutable(s.Keep), cfg.RoutableExperts()
	for l, list := range s.Layers {
		if len(list) != n {
			return fmt.Errorf("model: subset layer %d lists %d routable experts, keep %d needs %d", l, len(list), s.Keep, n)
		}
		for i, e := range list {
			if e < 0 || e >= ep {
				return fmt.Errorf("model: subset layer %d: expert %d is not routable (E'=%d)", l, e, ep)
			}
			if i > 0 && e <= list[i-1] {
				return fmt.Errorf("model: subset layer %d: experts must be distinct and ascending, got %v", l, list)
			}
		}
	}
	return nil
}

// Mask is the Inputs.ExpertMask tensor [L,E'] of s.
func (s Subset) Mask(cfg Config) (*tensors.Tensor, error) {
	if err := s.Validate(cfg); err != nil {
		return nil, err
	}
	return cfg.ExpertMask(s.Layers)
}

// WriteSubset writes s as indented JSON.
func WriteSubset(path string, s Subset) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("model: write subset: %w", err)
	}
	return nil
}

// ReadSubset reads a file written by WriteSubset (unknown keys are errors).
func ReadSubset(path string) (Subset, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Subset{}, fmt.Errorf("model: read subset: %w", err)
	}
	var s Subset
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Subset{}, fmt.Errorf("model: read subset %s: %w", path, err)
	}
	return s, nil
}

// PruneConfig is the config of the model that keeps K experts per layer:
// NumExperts = K, TopK = min(TopK, K) (the reference's
// prune_moe_layer_inplace: top_k = min(top_k, K); with fewer kept routable
// experts than k' a masked model's extra slots have gate 0, so both agree),
// EMO pool bounds clipped to the new E' (eval pool unchanged: n >= E' means
// no pool, and a pool of n among the kept experts is what the masked model
// builds, since masked experts have pool score 0 and rank last).
func PruneConfig(cfg Config, keep int) (Config, error) {
	if err := cfg.CheckKeep(keep); err != nil {
		return Config{}, err
	}
	p := cfg
	p.Preset = ""
	p.NumExperts = keep
	p.TopK = min(cfg.TopK, keep)
	if p.Router == RouterEMO {
		ep, kp := p.RoutableExperts(), p.RoutedTopK()
		p.PoolMax = max(min(p.PoolMax, ep), kp)
		p.PoolMin = max(min(p.PoolMin, p.PoolMax), kp)
		if p.EvalPoolSize != 0 && p.EvalPoolSize < kp {
			p.EvalPoolSize = kp
		}
	}
	return p, p.Validate()
}

// WeightShapes lists the model's variables (checkpoint names: GoMLX paths
// without the leading "/") and their dimensions.
func WeightShapes(cfg Config) map[string][]int {
	d, v, e, h := cfg.DModel, cfg.VocabSize, cfg.NumExperts, cfg.ExpertHidden
	hd := cfg.NHeads * cfg.HeadDimOrDefault()
	out := map[string][]int{
		"embeddings/weight":   {v, d},
		"lm_head/norm/weight": {d},
		"lm_head/w_out":       {v, d},
	}
	for l := range cfg.NLayers {
		b := blockName(cfg, l)
		out[b+"/attention_norm/weight"] = []int{d}
		out[b+"/attention/w_q"] = []int{hd, d}
		out[b+"/attention/w_k"] = []int{hd, d}
		out[b+"/attention/w_v"] = []int{hd, d}
		out[b+"/attention/w_out"] = []int{d, hd}
		out[b+"/feed_forward_norm/weight"] = []int{d}
		out[b+"/feed_forward_moe/router/weight"] = []int{e, d}
		out[b+"/feed_forward_moe/experts/w1"] = []int{e, h, d}
		out[b+"/feed_forward_moe/experts/w3"] = []int{e, h, d}
		out[b+"/feed_forward_moe/experts/w2"] = []int{e, d, h}
	}
	return out
}

// blockName is layer l's scope name ("blocks/07"), as Forward names it.
func blockName(cfg Config, l int) string {
	width := max(2, len(fmt.Sprint(cfg.NLayers-1)))
	return fmt.Sprintf("blocks/%0*d", width, l)
}

// CheckWeights verifies that weights holds every variable of cfg with its
// shape (other entries are ignored).
func CheckWeights(cfg Config, weights map[string]*tensors.Tensor) error {
	want := WeightShapes(cfg)
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w, ok := weights[n]
		if !ok {
			return fmt.Errorf("model: weights lack %s", n)
		}
		if !slices.Equal(w.Shape().Dimensions, want[n]) {
			return fmt.Errorf("model: %s has dimensions %v, the config wants %v", n, w.Shape().Dimensions, want[n])
		}
	}
	return nil
}

// PruneWeights physically drops the experts s does not keep: for every
// layer, the router rows and the w1/w2/w3 slices of the kept routable
// experts (in ascending order) and of the shared expert (last). It returns
// the pruned config (PruneConfig) and its weights; tensors that do not
// change are shared with weights, entries that are not model variables
// (optimizer moments, RNG state) are dropped. The pruned model computes
// what cfg's model computes with Inputs.ExpertMask = s.Mask(cfg).
func PruneWeights(cfg Config, weights map[string]*tensors.Tensor, s Subset) (Config, map[string]*tensors.Tensor, error) {
	if err := s.Validate(cfg); err != nil {
		return Config{}, nil, err
	}
	if err := CheckWeights(cfg, weights); err != nil {
		return Config{}, nil, err
	}
	pcfg, err := PruneConfig(cfg, s.Keep)
	if err != nil {
		return Config{}, nil, err
	}
	out := map[string]*tensors.Tensor{}
	for n := range WeightShapes(cfg) {
		out[n] = weights[n]
	}
	for l := range cfg.NLayers {
		rows := slices.Clone(s.Layers[l])
		if cfg.SharedExpert {
			rows = append(rows, cfg.NumExperts-1)
		}
		moe := blockName(cfg, l) + "/feed_forward_moe/"
		for _, n := range []string{"router/weight", "experts/w1", "experts/w3", "experts/w2"} {
			t, err := pickRows(weights[moe+n], rows)
			if err != nil {
				return Config{}, nil, fmt.Errorf("model: prune %s: %w", moe+n, err)
			}
			out[moe+n] = t
		}
	}
	if err := CheckWeights(pcfg, out); err != nil {
		return Config{}, nil, fmt.Errorf("model: pruned weights: %w", err)
	}
	return pcfg, out, nil
}

// pickRows keeps the given indices of axis 0 (any dtype).
func pickRows(t *tensors.Tensor, rows []int) (*tensors.Tensor, error) {
	dims := slices.Clone(t.Shape().Dimensions)
	n := dims[0]
	rowBytes := int(t.Shape().ByteSize()) / n
	dims[0] = len(rows)
	out := tensors.FromShape(shapes.Make(t.DType(), dims...))
	var inner error
	err := t.ConstBytes(func(src []byte) {
		inner = out.MutableBytes(func(dst []byte) {
			for i, r := range rows {
				copy(dst[i*rowBytes:(i+1)*rowBytes], src[r*rowBytes:(r+1)*rowBytes])
			}
		})
	})
	if err != nil {
		return nil, err
	}
	return out, inner
}

// String is a one-line summary: "keep 4 of 16 (greedy-layerwise): L0 [1 5 9], L1 [...]".
func (s Subset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keep %d of %d", s.Keep, s.NumExperts)
	if s.Method != "" {
		fmt.Fprintf(&b, " (%s)", s.Method)
	}
	for l, list := range s.Layers {
		sep := ", "
		if l == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%sL%d %v", sep, l, list)
	}
	return b.String()
}
