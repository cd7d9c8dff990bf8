package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
)

// Selective expert use at the checkpoint level (emo-method.md §7): load a
// checkpoint for inference, select an expert subset from calibration text,
// evaluate held-out loss per domain with a subset, and write a pruned
// checkpoint that physically holds only the kept experts.

// Checkpoint formats (CheckpointInfo.Format).
const (
	// FormatTrain is a trainer checkpoint: weights, optimizer moments, RNG state.
	FormatTrain = "emopipe-train"
	// FormatPruned holds only the model weights of a pruned model.
	FormatPruned = "emopipe-pruned"
)

// checkpointMetaKey is the safetensors metadata entry holding CheckpointInfo
// as JSON.
const checkpointMetaKey = "emopipe"

// CheckpointInfo makes a checkpoint file self-describing: the model it
// holds and the data layout it was trained on.
type CheckpointInfo struct {
	Format string `json:"format"`
	// Step is the optimizer steps behind the weights.
	Step int `json:"step"`
	// Model is the model config (NumExperts/TopK of the pruned model for a
	// pruned checkpoint).
	Model model.Config `json:"model"`
	// Segments and AttnSegments are the run's router and attention
	// document segmentation (Config.Segments).
	Segments     string `json:"segments"`
	AttnSegments string `json:"attn_segments,omitempty"`
	// Tokenizer, TokenizerFingerprint, StoreSeqLen, EOS and AppendEOS
	// describe the training store (its header): eval stores must match.
	Tokenizer            string `json:"tokenizer,omitempty"`
	TokenizerFingerprint string `json:"tokenizer_fingerprint,omitempty"`
	StoreSeqLen          int    `json:"store_seq_len,omitempty"`
	EOS                  uint32 `json:"eos"`
	AppendEOS            bool   `json:"append_eos"`
	// PrunedFrom is the sha256 of the checkpoint a pruned one was cut from,
	// Subset the subset it keeps (expert ids of that checkpoint).
	PrunedFrom string        `json:"pruned_from,omitempty"`
	Subset     *model.Subset `json:"subset,omitempty"`
}

// checkpointMeta is the safetensors metadata of the trainer's checkpoints.
func (t *Trainer) checkpointMeta() map[string]string {
	h := t.st.Header()
	info := CheckpointInfo{Format: FormatTrain, Step: t.step, Model: t.cfg.Model, Segments: t.cfg.Segments,
		AttnSegments: t.cfg.AttnSegments, Tokenizer: h.Tokenizer, TokenizerFingerprint: h.TokenizerFingerprint,
		StoreSeqLen: h.SeqLen, EOS: h.EOS, AppendEOS: h.AppendEOS}
	b, _ := json.Marshal(info)
	return map[string]string{"format": FormatTrain, "step": fmt.Sprint(t.step), checkpointMetaKey: string(b)}
}

// Model is a checkpoint loaded for inference.
type Model struct {
	// Path is the file it was read from ("" for a pruned model not yet saved).
	Path string
	// SHA256 is the file's hash (of what Save wrote, for a saved one).
	SHA256 string
	Info   CheckpointInfo
	// Weights are the model variables by checkpoint name (no optimizer state).
	Weights map[string]*tensors.Tensor
}

// LoadModel reads a checkpoint file. Its model config comes from the file's
// metadata or, for checkpoints written before the metadata existed, from
// the trainer state of the store that holds it (<store>/checkpoints/FILE).
func LoadModel(path string) (*Model, error) {
	named, meta, err := readSafetensors(path)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	m := &Model{Path: path, SHA256: sum, Weights: map[string]*tensors.Tensor{}}
	if raw, ok := meta[checkpointMetaKey]; ok {
		if err := json.Unmarshal([]byte(raw), &m.Info); err != nil {
			return nil, fmt.Errorf("train: %w: %s: metadata: %v", ErrCheckpoint, path, err)
		}
	} else if m.Info, err = infoFromStore(path); err != nil {
		return nil, err
	}
	if err := m.Info.Model.Validate(); err != nil {
		return nil, fmt.Errorf("train: %w: %s: %v", ErrCheckpoint, path, err)
	}
	for n := range model.WeightShapes(m.Info.Model) {
		if t, ok := named[n]; ok {
			m.Weights[n] = t
		}
	}
	if err := model.CheckWeights(m.Info.Model, m.Weights); err != nil {
		return nil, fmt.Errorf("train: %w: %s: %v", ErrCheckpoint, path, err)
	}
	return m, nil
}

// infoFromStore reads the model of a trainer checkpoint without metadata
// from its store's state.
func infoFromStore(path string) (CheckpointInfo, error) {
	dir := filepath.Dir(filepath.Dir(path))
	if !store.Exists(dir) {
		return CheckpointInfo{}, fmt.Errorf("train: %w: %s carries no model config and is not in <store>/checkpoints", ErrCheckpoint, path)
	}
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		return CheckpointInfo{}, fmt.Errorf("train: read the model config of %s from its store: %w", path, err)
	}
	defer st.Close()
	state, _, err := LoadState(st)
	if err != nil {
		return CheckpointInfo{}, err
	}
	if state == nil {
		return CheckpointInfo{}, fmt.Errorf("train: %w: %s carries no model config and store %s has no training run", ErrCheckpoint, path, dir)
	}
	h := st.Header()
	step := state.Step
	if state.Previous != nil && state.Previous.File == filepath.Base(path) {
		step = state.Previous.Step
	}
	return CheckpointInfo{Format: FormatTrain, Step: step, Model: state.Run.Model, Segments: state.Run.Segments,
		AttnSegments: state.Run.AttnSegments, Tokenizer: h.Tokenizer, TokenizerFingerprint: h.TokenizerFingerprint,
		StoreSeqLen: h.SeqLen, EOS: h.EOS, AppendEOS: h.AppendEOS}, nil
}

// Config is the model config.
func (m *Model) Config() model.Config { return m.Info.Model }

// Prune returns the model that physically holds only s's experts
// (model.PruneWeights); its Info records the subset and the source hash.
func (m *Model) Prune(s model.Subset) (*Model, error) {
	if m.Info.Subset != nil {
		return nil, fmt.Errorf("train: %s is already pruned; prune the original checkpoint", m.Path)
	}
	pcfg, pw, err := model.PruneWeights(m.Info.Model, m.Weights, s)
	if err != nil {
		return nil, fmt.Errorf("train: prune: %w", err)
	}
	info := m.Info
	info.Format, info.Model, info.PrunedFrom = FormatPruned, pcfg, m.SHA256
	sub := s
	info.Subset = &sub
	return &Model{Info: info, Weights: pw}, nil
}

// Save writes the model weights and their CheckpointInfo as a safetensors
// file (atomically: temporary file, fsync, rename) and returns its size.
func (m *Model) Save(path string) (int64, error) {
	b, err := json.Marshal(m.Info)
	if err != nil {
		return 0, err
	}
	meta := map[string]string{"format": m.Info.Format, "step": fmt.Sprint(m.Info.Step), checkpointMetaKey: string(b)}
	var sum string
	var n int64
	err = writeFileAtomic(path, func(w io.Writer) error {
		var err error
		sum, n, err = writeSafetensors(w, m.Weights, meta)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("train: write %s: %w", path, err)
	}
	m.Path, m.SHA256 = path, sum
	return n, nil
}

// InferenceOptions configure an Inference.
type InferenceOptions struct {
	// Backend is "go" (default) or "xla:/abs/plugin.so" (see NewBackend).
	Backend string
	// Batch is the rows per forward pass (default 8).
	Batch int
	// Pool routes an EMO model with its eval pool (Config.EvalPoolSize per
	// document), as the trainer's held-out eval does. Default (false): no
	// pool, softmax over all routable experts and top-k', as the reference
	// runs the released model (and its pruned models) at inference.
	Pool bool
}

// Inference runs a loaded model forward: held-out loss, router
// probabilities for expert selection, per-token routing. One compiled graph
// per use serves every expert subset (the subset is an input mask). Not
// safe for concurrent use.
type Inference struct {
	m       *Model
	cfg     model.Config
	opts    InferenceOptions
	backend compute.Backend
	vars    *gmodel.Store
	execs   map[inferKind]*gmodel.Exec
}

type inferKind int

const (
	inferNLL    inferKind = iota // per-token NLL
	inferProbs                   // router probabilities summed over real tokens (no LM head)
	inferRoutes                  // per-token router probabilities and chosen experts (no LM head)
)

// NewInference prepares m for inference.
func NewInference(m *Model, o InferenceOptions) (*Inference, error) {
	if o.Batch <= 0 {
		o.Batch = 8
	}
	if o.Backend == "" {
		o.Backend = "go"
	}
	b, err := NewBackend(o.Backend)
	if err != nil {
		return nil, err
	}
	vars := gmodel.NewStore()
	names := make([]string, 0, len(m.Weights))
	for n := range m.Weights {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		// A copy per Inference: a tensor materialised on one backend cannot feed another.
		w, err := m.Weights[n].LocalClone()
		if err != nil {
			return nil, fmt.Errorf("train: load %s: %w", n, err)
		}
		if _, err := vars.CreateVariable("/"+n, w); err != nil {
			return nil, fmt.Errorf("train: load %s: %w", n, err)
		}
	}
	return &Inference{m: m, cfg: m.Info.Model, opts: o, backend: b, vars: vars, execs: map[inferKind]*gmodel.Exec{}}, nil
}

// Model is the model it runs.
func (in *Inference) Model() *Model { return in.m }

// Routing names the routing in use: "no pool" or "eval pool N".
func (in *Inference) Routing() string {
	if in.cfg.Router == model.RouterEMO && in.opts.Pool && in.cfg.EvalPoolSize > 0 {
		return fmt.Sprintf("eval pool %d", in.cfg.EvalPoolSize)
	}
	return "no pool"
}

// graph inputs: tokens, segments, attention segments, labels [B,S] int32, mask [L,E'] bool.
func (in *Inference) graphFn(k inferKind) func(s *gmodel.Scope, x []*Node) []*Node {
	cfg := in.cfg
	return func(s *gmodel.Scope, x []*Node) []*Node {
		// Variables must stay graph parameters (see graphFn in step.go).
		s.Store().SetTraining(x[0].Graph(), true)
		mi := model.Inputs{Tokens: x[0], Segments: x[1], AttnSegments: x[2], ExpertMask: x[4]}
		opts := model.Options{NoPool: !in.opts.Pool}
		if k == inferNLL {
			mi.Labels = x[3]
			opts.Logits = true
		} else {
			opts.SkipHead = true
		}
		out := model.Forward(s, cfg, mi, opts)
		probSum := Mul(out.RouterProbs, out.Tokens) // [L,E'] mean over real tokens → sum
		switch k {
		case inferNLL:
			return []*Node{tokenNLL(out.Logits, mi.Labels), probSum, out.Tokens}
		case inferProbs:
			return []*Node{probSum, out.Tokens}
		}
		raw := make([]*Node, len(out.Layers))
		ex := make([]*Node, len(out.Layers))
		for l, r := range out.Layers {
			raw[l], ex[l] = r.RawProbs, r.Experts
		}
		return []*Node{probSum, out.Tokens, Stack(raw, 0), Stack(ex, 0)} // [L,B,S,E'], [L,B,S,k']
	}
}

func (in *Inference) run(ctx context.Context, k inferKind, b Batch, mask *tensors.Tensor) ([]*tensors.Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e := in.execs[k]
	if e == nil {
		var err error
		if e, err = gmodel.NewExec(in.backend, in.vars, in.graphFn(k)); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		in.execs[k] = e
	}
	attn := b.AttnSegments
	if attn == nil {
		attn = b.Segments
	}
	var args []any
	for _, rows := range [][][]int32{b.Tokens, b.Segments, attn, b.Labels} {
		x, err := model.Int32Tensor(rows)
		if err != nil {
			return nil, err
		}
		args = append(args, x)
	}
	args = append(args, mask)
	var outs []*tensors.Tensor
	err := model.Try(func() {
		var err error
		if outs, err = e.Exec(args...); err != nil {
			panic(err)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("train: inference: %w", err)
	}
	return outs, nil
}

// mask is the [L,E'] expert mask of s (nil: every expert).
func (in *Inference) mask(s *model.Subset) (*tensors.Tensor, error) {
	if s != nil {
		return s.Mask(in.cfg)
	}
	return in.cfg.ExpertMask(make([][]int, in.cfg.NLayers))
}

// EvalSet is held-out data in fixed-size batches, with the rows that hold
// each domain's tokens.
type EvalSet struct {
	// Batches cover every evaluated sequence once.
	Batches []Batch
	// ByDomain holds, per domain, the rows with tokens of that domain.
	ByDomain map[string][]Batch
	// Sequences is the number of sequences read.
	Sequences int
}

// Domains are the domains of the set, sorted.
func (e *EvalSet) Domains() []string {
	out := make([]string, 0, len(e.ByDomain))
	for d := range e.ByDomain {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// checkStore rejects a store whose tokenizer or sequence length differ
// from the model's training store.
func (in *Inference) checkStore(st *store.Store) error {
	h, i := st.Header(), in.m.Info
	if h.SeqLen != in.cfg.SeqLen+1 {
		return fmt.Errorf("train: store %s has seq_len %d; the model was trained on %d (pack it with --seq-len %d)", st.Dir(), h.SeqLen, in.cfg.SeqLen+1, in.cfg.SeqLen+1)
	}
	if i.TokenizerFingerprint != "" && h.TokenizerFingerprint != i.TokenizerFingerprint {
		return fmt.Errorf("train: store %s uses tokenizer %s, the model was trained with %s", st.Dir(), h.Tokenizer, i.Tokenizer)
	}
	if h.VocabSize > in.cfg.VocabSize {
		return fmt.Errorf("train: store %s has vocabulary %d, the model %d", st.Dir(), h.VocabSize, in.cfg.VocabSize)
	}
	return nil
}

// NewEvalSet reads up to maxSeqs sequences of st (0: all; evenly spaced
// when capped, as the trainer's eval) with the model's segmentation.
func (in *Inference) NewEvalSet(st *store.Store, maxSeqs int) (*EvalSet, error) {
	if err := in.checkStore(st); err != nil {
		return nil, err
	}
	total := int(st.NumSequences())
	n := total
	if maxSeqs > 0 {
		n = min(n, maxSeqs)
	}
	if n == 0 {
		return nil, fmt.Errorf("train: store %s holds no sequences", st.Dir())
	}
	i := in.m.Info
	ds, err := NewDataset(st, store.Cursor{}, DatasetOptions{Segments: i.Segments, AttnSegments: i.AttnSegments, Domains: true})
	if err != nil {
		return nil, err
	}
	var all Batch
	for j := range n {
		idx := uint64(j * total / n)
		seq, err := st.Sequence(idx)
		if err != nil {
			return nil, fmt.Errorf("train: eval store: %w", err)
		}
		ds.appendRow(&all, idx, &seq)
	}
	set := &EvalSet{ByDomain: map[string][]Batch{}, Sequences: n}
	set.Batches = in.rebatch(all, nil)
	for _, d := range domainsOf(all) {
		var rows []int
		for r := range all.Rows() {
			if rowHasDomain(all, r, d) {
				rows = append(rows, r)
			}
		}
		set.ByDomain[d] = in.rebatch(all, rows)
	}
	return set, nil
}

// rebatch cuts the given rows of all (nil: every row) into batches of
// opts.Batch rows, the last one filled with padding rows.
func (in *Inference) rebatch(all Batch, rows []int) []Batch {
	if rows == nil {
		rows = make([]int, all.Rows())
		for i := range rows {
			rows[i] = i
		}
	}
	attn := all.AttnSegments != nil
	var out []Batch
	var b Batch
	for i, r := range rows {
		b.Tokens = append(b.Tokens, all.Tokens[r])
		b.Labels = append(b.Labels, all.Labels[r])
		b.Segments = append(b.Segments, all.Segments[r])
		if attn {
			b.AttnSegments = append(b.AttnSegments, all.AttnSegments[r])
		}
		if all.Domains != nil {
			b.Domains = append(b.Domains, all.Domains[r])
		}
		b.Seqs = append(b.Seqs, all.Seqs[r])
		if b.Rows() == in.opts.Batch || i == len(rows)-1 {
			for b.Rows() < in.opts.Batch {
				padRow(&b, in.cfg.SeqLen, attn)
			}
			out = append(out, b)
			b = Batch{}
		}
	}
	return out
}

func domainsOf(b Batch) []string {
	seen := map[string]bool{}
	for r := range b.Rows() {
		for p, d := range b.Domains[r] {
			if b.Segments[r][p] >= 0 && b.Labels[r][p] >= 0 {
				seen[d] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

func rowHasDomain(b Batch, r int, d string) bool {
	for p, x := range b.Domains[r] {
		if x == d && b.Segments[r][p] >= 0 && b.Labels[r][p] >= 0 {
			return true
		}
	}
	return false
}

// Eval is the held-out loss over every batch of set, per domain too, with
// the experts outside s masked (nil: the full model). Only labelled real
// tokens count, as in the trainer's eval.
func (in *Inference) Eval(ctx context.Context, set *EvalSet, s *model.Subset) (EvalResult, error) {
	return in.evalBatches(ctx, set.Batches, s, "")
}

// EvalDomain is Eval restricted to one domain's tokens (and the rows that
// hold them).
func (in *Inference) EvalDomain(ctx context.Context, set *EvalSet, domain string, s *model.Subset) (DomainLoss, error) {
	res, err := in.evalBatches(ctx, set.ByDomain[domain], s, domain)
	if err != nil {
		return DomainLoss{}, err
	}
	return res.Domains[domain], nil
}

func (in *Inference) evalBatches(ctx context.Context, batches []Batch, s *model.Subset, only string) (EvalResult, error) {
	mask, err := in.mask(s)
	if err != nil {
		return EvalResult{}, err
	}
	var acc nllSum
	for _, b := range batches {
		outs, err := in.run(ctx, inferNLL, b, mask)
		if err != nil {
			return EvalResult{}, err
		}
		acc.add(b, float32s(outs[0]), in.cfg.SeqLen, only)
		for _, o := range outs {
			o.FinalizeAll()
		}
	}
	return acc.result(in.m.Info.Step), nil
}

// CalibDoc is calibration text: one document's tokens.
type CalibDoc struct {
	Key, Domain string
	Tokens      []int32
}

// calibBatches lays documents out as rows of S tokens (a document longer
// than S takes several rows, each its own router segment; the tail is
// padding), in batches of opts.Batch rows.
func (in *Inference) calibBatches(docs []CalibDoc) (Batch, []Batch) {
	seqLen := in.cfg.SeqLen
	eosSeg := in.m.Info.Segments == SegmentsEOS
	var all Batch
	for _, d := range docs {
		for off := 0; off < len(d.Tokens); off += seqLen {
			chunk := d.Tokens[off:min(off+seqLen, len(d.Tokens))]
			tok, seg, lbl := make([]int32, seqLen), make([]int32, seqLen), make([]int32, seqLen)
			for p := range seqLen {
				lbl[p] = model.IgnoreLabel
				if p < len(chunk) {
					tok[p] = chunk[p]
				} else {
					seg[p] = model.PaddingSegment
				}
			}
			attn := seg
			if eosSeg {
				full := seg
				seg = model.SegmentsFromEOS([][]int32{tok}, int32(in.m.Info.EOS))[0]
				attn = model.DocumentsFromEOS([][]int32{tok}, int32(in.m.Info.EOS))[0]
				keepPadding(seg, full)
				keepPadding(attn, full)
			}
			dom := make([]string, seqLen)
			for p := range len(chunk) {
				dom[p] = d.Domain
			}
			all.Tokens = append(all.Tokens, tok)
			all.Segments = append(all.Segments, seg)
			all.AttnSegments = append(all.AttnSegments, attn)
			all.Labels = append(all.Labels, lbl)
			all.Domains = append(all.Domains, dom)
			all.Seqs = append(all.Seqs, math.MaxUint64)
		}
	}
	return all, in.rebatch(all, nil)
}

// RouterProbs is the mean over the documents' tokens of softmax(router
// logits) over the routable experts, per layer, with the experts outside s
// masked (nil: none), and the number of tokens. [L][E']
func (in *Inference) RouterProbs(ctx context.Context, docs []CalibDoc, s *model.Subset) ([][]float64, int, error) {
	_, batches := in.calibBatches(docs)
	mask, err := in.mask(s)
	if err != nil {
		return nil, 0, err
	}
	return in.routerProbs(ctx, batches, mask)
}

func (in *Inference) routerProbs(ctx context.Context, batches []Batch, mask *tensors.Tensor) ([][]float64, int, error) {
	nl, ep := in.cfg.NLayers, in.cfg.RoutableExperts()
	sums := make([]float64, nl*ep)
	var tokens float64
	for _, b := range batches {
		outs, err := in.run(ctx, inferProbs, b, mask)
		if err != nil {
			return nil, 0, err
		}
		for i, v := range float32s(outs[0]) {
			sums[i] += float64(v)
		}
		tokens += float64(float32s(outs[1])[0])
		for _, o := range outs {
			o.FinalizeAll()
		}
	}
	if tokens == 0 {
		return nil, 0, errors.New("train: calibration text has no tokens")
	}
	out := make([][]float64, nl)
	for l := range nl {
		out[l] = make([]float64, ep)
		for e := range ep {
			out[l][e] = sums[l*ep+e] / tokens
		}
	}
	return out, int(tokens), nil
}

// Select runs the reference's greedy layer-wise selection
// (model.SelectGreedy) on calibration documents: for each layer in order,
// with the earlier layers restricted to their subsets, the router
// probabilities averaged over every calibration token; the K-1 most
// probable routable experts (+ the shared one) are kept. Routing follows
// InferenceOptions.Pool. Deterministic.
func (in *Inference) Select(ctx context.Context, docs []CalibDoc, keep int) (model.Subset, error) {
	if in.m.Info.Subset != nil {
		return model.Subset{}, fmt.Errorf("train: select on a pruned model: select on the original checkpoint")
	}
	_, batches := in.calibBatches(docs)
	var ntok int
	s, err := model.SelectGreedy(in.cfg, keep, func(l int, kept [][]int) ([]float64, error) {
		mask, err := in.cfg.ExpertMask(kept)
		if err != nil {
			return nil, err
		}
		probs, n, err := in.routerProbs(ctx, batches, mask)
		if err != nil {
			return nil, err
		}
		ntok = n
		return probs[l], nil
	})
	if err != nil {
		return model.Subset{}, err
	}
	cal := &model.Calibration{Tokens: ntok}
	domains := map[string]bool{}
	for _, d := range docs {
		if d.Key != "" {
			cal.Docs = append(cal.Docs, d.Key)
		}
		domains[d.Domain] = true
	}
	if len(domains) == 1 {
		cal.Domain = docs[0].Domain
	}
	s.Calibration = cal
	return s, nil
}

// CalibrationOptions choose calibration documents from a store.
type CalibrationOptions struct {
	// MinTokens skips shorter documents (default 64).
	MinTokens int
	// MaxTokens truncates a document (default 1024).
	MaxTokens int
}

// CalibrationDocs picks one calibration document per domain from st,
// deterministically: the first document in store order that starts in the
// store and has at least MinTokens tokens, truncated to MaxTokens (its
// stored tokens: EOS included when the store appends it).
func CalibrationDocs(st *store.Store, o CalibrationOptions) (map[string]CalibDoc, error) {
	if o.MinTokens <= 0 {
		o.MinTokens = 64
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 1024
	}
	out := map[string]CalibDoc{}
	open := map[string]*CalibDoc{} // documents being collected, by key
	done := map[string]bool{}      // domains decided
	err := st.Scan(0, func(_ uint64, seq *packing.Sequence) error {
		for _, sp := range seq.Spans {
			d := open[sp.DocKey]
			if d == nil {
				if sp.ContinuesFromPrev || done[sp.Domain] {
					continue
				}
				d = &CalibDoc{Key: sp.DocKey, Domain: sp.Domain}
				open[sp.DocKey] = d
			}
			for _, tk := range seq.Tokens[sp.Start : sp.Start+sp.Length] {
				if len(d.Tokens) < o.MaxTokens {
					d.Tokens = append(d.Tokens, int32(tk))
				}
			}
			if sp.ContinuesInNext && len(d.Tokens) < o.MaxTokens {
				continue
			}
			delete(open, sp.DocKey)
			if len(d.Tokens) >= o.MinTokens && !done[d.Domain] {
				out[d.Domain] = *d
				done[d.Domain] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("train: calibration documents: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("train: store %s has no document of at least %d tokens", st.Dir(), o.MinTokens)
	}
	return out, nil
}

// withInit hashes Config.InitCheckpoint (for the run key: a resumed run
// must start from the same weights).
func (c Config) withInit() (Config, error) {
	if c.InitCheckpoint == "" {
		c.initSHA256 = ""
		return c, nil
	}
	sum, err := fileSHA256(c.InitCheckpoint)
	if err != nil {
		return c, fmt.Errorf("train: init checkpoint: %w", err)
	}
	c.initSHA256 = sum
	return c, nil
}

// loadInit sets the model weights of a new run from Config.InitCheckpoint
// (e.g. a pruned checkpoint: continued training of a pruned model). The
// model config must be the checkpoint's (InitModel gives it).
func (t *Trainer) loadInit() error {
	m, err := LoadModel(t.cfg.InitCheckpoint)
	if err != nil {
		return err
	}
	want, got := t.cfg.Model, m.Info.Model
	want.SeqLen, got.SeqLen = 0, 0
	if d := diffKeys(runKey{Model: got}, runKey{Model: want}); d != "" {
		return fmt.Errorf("train: init checkpoint %s holds another model (%s); train it with its own config", t.cfg.InitCheckpoint,
			strings.ReplaceAll(strings.ReplaceAll(d, "in the store", "in the checkpoint"), "model.", ""))
	}
	for v := range t.vars.IterVariables() {
		name := strings.TrimPrefix(v.Path(), "/")
		w, ok := m.Weights[name]
		if !ok {
			continue // optimizer state, RNG: fresh
		}
		if !w.Shape().Equal(v.Shape()) {
			return fmt.Errorf("train: %w: %s: %s is %s, the model has %s", ErrCheckpoint, t.cfg.InitCheckpoint, name, w.Shape(), v.Shape())
		}
		if err := v.SetValue(w); err != nil {
			return fmt.Errorf("train: init %s: %w", name, err)
		}
	}
	return nil
}

// InitModel is the model config to train from an init checkpoint: the
// checkpoint's (VocabSize kept, SeqLen from the store as always).
func InitModel(path string) (model.Config, error) {
	m, err := LoadModel(path)
	if err != nil {
		return model.Config{}, err
	}
	return m.Info.Model, nil
}
