package train

import (
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/emopipe/emopipe/model"
)

// Router segment sources (Config.Segments, Config.AttnSegments).
const (
	// SegmentsSpans numbers the documents of a row by the store's spans:
	// segment = span index in the row, padding -1. Correct for tokenizers
	// without EOS and for documents that contain the EOS id as text.
	SegmentsSpans = "spans"
	// SegmentsEOS reproduces the reference: router segments from EOS
	// positions (an EOS starts the next segment, model.SegmentsFromEOS) and,
	// for attention, documents in which an EOS ends its document
	// (model.DocumentsFromEOS).
	SegmentsEOS = "eos"
)

// Load-balancing statistics (Config.LB).
const (
	// LBGlobal: the counts of the LB loss cover the whole optimizer step
	// (every micro-batch), as the reference's all-reduced counts cover every
	// data-parallel replica.
	LBGlobal = "global"
	// LBLocal: counts per group of LBGroupRows rows (one replica's
	// micro-batch in the reference): the ablation of emo-method.md §5.
	LBLocal = "local"
)

// Config is one training run. Zero values take the defaults of
// DefaultConfig where noted; Validate rejects contradictions.
type Config struct {
	// Store is the directory of the packed store to train from. Its
	// sequences hold SeqLen+1 tokens: inputs are seq[:-1], labels seq[1:].
	Store string `json:"store"`
	// Model is the model to train. VocabSize 0 takes the store's vocabulary;
	// SeqLen is always the store's seq_len - 1.
	Model model.Config `json:"model"`

	// Steps is how many optimizer steps the run ends at (counting steps of
	// an earlier run it resumes). Default 100.
	Steps int `json:"steps"`
	// Batch is the sequences per optimizer step (all micro-batches
	// together). Default 8. Must be a multiple of Accum.
	Batch int `json:"batch"`
	// Accum is the number of micro-batches one step accumulates gradients
	// over (Batch/Accum sequences each). Default 1.
	Accum int `json:"accum"`
	// Seed fixes initialisation (GoMLX's RNG), data order (the store
	// cursor's shuffle) and EMO pool sizes (PCG(seed, step)). Default 1.
	Seed uint64 `json:"seed"`

	// Optim configures AdamW, clipping and the schedule.
	Optim OptimConfig `json:"optim"`

	// LB is LBGlobal (default) or LBLocal.
	LB string `json:"lb"`
	// LBGroupRows is the rows per group of LBLocal (default: the micro-batch
	// size, Batch/Accum). Ignored for LBGlobal.
	LBGroupRows int `json:"lb_group_rows,omitempty"`
	// Segments is the router's document segmentation: SegmentsSpans
	// (default) or SegmentsEOS.
	Segments string `json:"segments"`
	// AttnSegments is the attention mask's documents (when the model masks
	// attention by document): "" (same as the router), SegmentsSpans or
	// SegmentsEOS.
	AttnSegments string `json:"attn_segments,omitempty"`

	// Backend is "go" (pure Go CPU, default) or "xla:/abs/path/plugin.so"
	// (PJRT plugin, e.g. CUDA) with optional ",opt=value" suffixes.
	Backend string `json:"-"`
	// PeakFLOPs is the hardware peak (FLOP/s) the MFU estimate divides by.
	// 0: for the go backend, NumCPU × 2 GHz × 16 fp32 FLOP/cycle (two 128-bit
	// FMA pipes, e.g. AMD Zen 1 with AVX2); for xla, no MFU.
	PeakFLOPs float64 `json:"-"`

	// EvalStore is a second store of held-out sequences ("" = no eval).
	EvalStore string `json:"-"`
	// EvalEvery runs the held-out eval every this many steps and at the
	// end (default 50; 0 with an EvalStore means only at the end).
	EvalEvery int `json:"-"`
	// EvalSequences caps the held-out sequences evaluated (in store order);
	// 0 means all of them.
	EvalSequences int `json:"-"`

	// CheckpointEvery saves weights, optimizer state and data cursor every
	// this many steps and at the end (default 50).
	CheckpointEvery int `json:"-"`
	// CheckpointDir holds the checkpoint files (default <Store>/checkpoints).
	CheckpointDir string `json:"-"`
	// ReportDir receives the metrics log and PNG plots (default <Store>/train).
	ReportDir string `json:"-"`
	// ForceNew starts a new run even when the store holds a run of another
	// configuration (the old state is replaced at the first checkpoint).
	ForceNew bool `json:"-"`
	// InitCheckpoint starts a new run from the model weights of this
	// checkpoint file (e.g. one `emopipe experts prune` wrote: continued
	// training of a pruned model) instead of a random init; optimizer state
	// starts fresh. Model must be the checkpoint's config (InitModel). Its
	// sha256 is part of the run's settings: a resume must name the same file.
	InitCheckpoint string `json:"-"`
	initSHA256     string // set by withInit

	// Follow trains on the store as a stream: each sequence once, in
	// commit order, waiting (not polling) for commits when caught up, as
	// `emopipe run` does while an ingester writes to the same store. A run
	// started one way resumes only the same way.
	Follow bool `json:"-"`
	// StreamDone, when closed, tells a following trainer that the store
	// will not grow: Run then ends when it has caught up (Result.CaughtUp).
	StreamDone <-chan struct{} `json:"-"`

	// OnStep, if set, is called after each step with its metrics (from the
	// training goroutine; keep it short).
	OnStep func(StepMetrics) `json:"-"`

	// Progress receives a progress line (nil: none).
	Progress io.Writer `json:"-"`
	// Metrics receives per-step gauges (nil: none). *pipelines.Metrics
	// satisfies it.
	Metrics MetricsSink `json:"-"`

	// graphOptimizer keeps AdamW in the step graph on a backend whose
	// buffers are host memory too (tests compare the two).
	graphOptimizer bool
}

// OptimConfig is AdamW with global-norm clipping and a cosine schedule with
// linear warmup, as the reference (emo-method.md §6).
type OptimConfig struct {
	// LR is the peak learning rate (default 4e-3, the reference's).
	LR float64 `json:"lr"`
	// Beta1, Beta2, Eps: Adam's moments (defaults 0.9, 0.95, 1e-8).
	Beta1 float64 `json:"beta1"`
	Beta2 float64 `json:"beta2"`
	Eps   float64 `json:"eps"`
	// WeightDecay is AdamW's decoupled decay (default 0.1), applied as
	// p -= lr·wd·p to every trainable variable except those NoDecay matches.
	WeightDecay float64 `json:"weight_decay"`
	// NoDecay lists variable-path patterns exempt from decay: a pattern
	// matches a path that contains it. Default: embeddings and norm weights.
	NoDecay []string `json:"no_decay"`
	// ClipNorm clips the global gradient norm to this value (default 1.0;
	// negative: no clipping).
	ClipNorm float64 `json:"clip_norm"`
	// Warmup is the steps of linear warmup (default 10% of ScheduleSteps,
	// at most 2000 as the reference).
	Warmup int `json:"warmup"`
	// ScheduleSteps is the length of the cosine decay (default: Steps). A
	// resumed run keeps the schedule it started with.
	ScheduleSteps int `json:"schedule_steps"`
	// MinLRRatio is the floor the cosine decays to, as a fraction of LR
	// (default 0.1, the reference's 0.1×).
	MinLRRatio float64 `json:"min_lr_ratio"`
}

// DefaultConfig is a Tiny EMO model trained with the reference's optimizer
// settings on small CPU batches.
func DefaultConfig() Config {
	m := model.Tiny()
	m.VocabSize = 0
	return Config{
		Model:           m,
		Steps:           100,
		Batch:           8,
		Accum:           1,
		Seed:            1,
		Optim:           DefaultOptimConfig(),
		LB:              LBGlobal,
		Segments:        SegmentsSpans,
		Backend:         "go",
		EvalEvery:       50,
		CheckpointEvery: 50,
	}
}

// DefaultOptimConfig is the reference's AdamW recipe.
func DefaultOptimConfig() OptimConfig {
	return OptimConfig{
		LR:          4e-3,
		Beta1:       0.9,
		Beta2:       0.95,
		Eps:         1e-8,
		WeightDecay: 0.1,
		NoDecay:     []string{"embeddings/", "norm/"},
		ClipNorm:    1.0,
		MinLRRatio:  0.1,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Steps == 0 {
		c.Steps = d.Steps
	}
	if c.Batch == 0 {
		c.Batch = d.Batch
	}
	if c.Accum == 0 {
		c.Accum = 1
	}
	if c.Seed == 0 {
		c.Seed = d.Seed
	}
	if c.LB == "" {
		c.LB = LBGlobal
	}
	if c.LB == LBLocal && c.LBGroupRows == 0 && c.Accum > 0 {
		c.LBGroupRows = c.Batch / c.Accum
	}
	if c.Segments == "" {
		c.Segments = SegmentsSpans
	}
	if c.AttnSegments == "" {
		c.AttnSegments = c.Segments // EOS mode reproduces the reference on both sides
	}
	if c.Backend == "" {
		c.Backend = "go"
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = d.CheckpointEvery
	}
	o := &c.Optim
	do := DefaultOptimConfig()
	if o.LR == 0 {
		o.LR = do.LR
	}
	if o.Beta1 == 0 {
		o.Beta1 = do.Beta1
	}
	if o.Beta2 == 0 {
		o.Beta2 = do.Beta2
	}
	if o.Eps == 0 {
		o.Eps = do.Eps
	}
	if o.NoDecay == nil {
		o.NoDecay = do.NoDecay
	}
	if o.ClipNorm == 0 {
		o.ClipNorm = do.ClipNorm
	}
	if o.MinLRRatio == 0 {
		o.MinLRRatio = do.MinLRRatio
	}
	if o.ScheduleSteps == 0 {
		o.ScheduleSteps = c.Steps
	}
	if o.Warmup == 0 {
		o.Warmup = min(2000, max(1, o.ScheduleSteps/10))
	}
	return c
}

// Validate rejects inconsistent settings (after defaults are applied).
func (c Config) Validate() error {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if c.Steps < 0 || c.Batch <= 0 || c.Accum <= 0 {
		bad("steps must be >= 0, batch and accum > 0")
	} else if c.Batch%c.Accum != 0 {
		bad("batch %d is not a multiple of accum %d", c.Batch, c.Accum)
	}
	switch c.LB {
	case LBGlobal:
	case LBLocal:
		if mb := c.Batch / max(c.Accum, 1); c.LBGroupRows <= 0 || mb%c.LBGroupRows != 0 {
			bad("lb local: lb_group_rows %d must divide the micro-batch of %d rows", c.LBGroupRows, mb)
		}
	default:
		bad("lb %q: want %q or %q", c.LB, LBGlobal, LBLocal)
	}
	for _, s := range []string{c.Segments, c.AttnSegments} {
		if s != SegmentsSpans && s != SegmentsEOS && s != "" {
			bad("segments %q: want %q or %q", s, SegmentsSpans, SegmentsEOS)
		}
	}
	o := c.Optim
	if o.LR <= 0 || o.Beta1 < 0 || o.Beta1 >= 1 || o.Beta2 < 0 || o.Beta2 >= 1 || o.Eps <= 0 || o.WeightDecay < 0 {
		bad("optimizer: need lr > 0, 0 <= betas < 1, eps > 0, weight_decay >= 0")
	}
	if o.Warmup < 0 || o.ScheduleSteps < 0 || o.MinLRRatio < 0 || o.MinLRRatio > 1 {
		bad("schedule: need warmup >= 0, schedule_steps >= 0, 0 <= min_lr_ratio <= 1")
	}
	if c.CheckpointEvery < 0 || c.EvalEvery < 0 {
		bad("checkpoint_every and eval_every must be >= 0")
	}
	if len(errs) > 0 {
		return fmt.Errorf("train: invalid config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// peakFLOPs is the MFU denominator (see Config.PeakFLOPs).
func (c Config) peakFLOPs() float64 {
	if c.PeakFLOPs > 0 {
		return c.PeakFLOPs
	}
	if c.Backend == "" || c.Backend == "go" || strings.HasPrefix(c.Backend, "go:") {
		return float64(runtime.NumCPU()) * 2.0e9 * 16
	}
	return 0
}

// runKey is what must not change between a run and its resumption: every
// setting that changes the sequence of losses. Steps (where to stop),
// evaluation, checkpointing and reporting may change.
type runKey struct {
	Model        model.Config `json:"model"`
	Batch        int          `json:"batch"`
	Accum        int          `json:"accum"`
	Seed         uint64       `json:"seed"`
	Optim        OptimConfig  `json:"optim"`
	LB           string       `json:"lb"`
	LBGroupRows  int          `json:"lb_group_rows,omitempty"`
	Segments     string       `json:"segments"`
	AttnSegments string       `json:"attn_segments,omitempty"`
	Follow       bool         `json:"follow,omitempty"`
	// Init is the sha256 of Config.InitCheckpoint ("" for a random init).
	Init string `json:"init,omitempty"`
}

func (c Config) key() runKey {
	k := runKey{Model: c.Model, Batch: c.Batch, Accum: c.Accum, Seed: c.Seed, Optim: c.Optim,
		LB: c.LB, Segments: c.Segments, AttnSegments: c.AttnSegments, Follow: c.Follow, Init: c.initSHA256}
	if c.LB == LBLocal {
		k.LBGroupRows = c.LBGroupRows
	}
	return k
}
