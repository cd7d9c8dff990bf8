package train

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing/store"
)

// ErrConfigMismatch: the store holds a run of another configuration and
// Config.ForceNew is not set.
var ErrConfigMismatch = errors.New("store holds a training run of another configuration")

// Trainer trains one model from one store. It is not safe for concurrent
// use. Close releases what New opened.
type Trainer struct {
	cfg     Config
	st      *store.Store
	ownSt   bool
	evalSt  *store.Store
	backend compute.Backend
	vars    *gmodel.Store
	data    *Dataset
	layout  layout
	nseg    int
	ckptDir string

	execs map[graphKind]*gmodel.Exec
	// hostParams are the step graph's trainable variables in the order of
	// its gradient outputs (host optimizer only); hostOpt updates them.
	hostParams []*gmodel.Variable
	hostViews  int // how many of them the step graph hands back as views
	hostOpt    *hostAdamW

	step    int
	tokens  int64
	history History
	prev    *CheckpointRef // last committed checkpoint
	last    *CheckpointRef // the one before it
	resumed bool

	evalBatches []Batch
	log         *metricsLog
}

// StepMetrics describe one optimizer step.
type StepMetrics struct {
	// Step is the 1-based number of the step just taken.
	Step int `json:"step"`
	// Loss is the objective: CE + weighted router z, LB and LM-head z.
	Loss float64 `json:"loss"`
	// CE is the mean next-token cross-entropy (nats) over labelled tokens.
	CE float64 `json:"ce"`
	// RouterZ, LB (means over layers) and LMHeadZ are the unweighted aux losses.
	RouterZ  float64 `json:"router_z"`
	LB       float64 `json:"lb"`
	LMHeadZ  float64 `json:"lm_head_z"`
	GradNorm float64 `json:"grad_norm"`
	LR       float64 `json:"lr"`
	// Tokens are real tokens in the step; TokensPerSec counts them over
	// Seconds, the wall time of the step (data, count passes, update).
	Tokens       int     `json:"tokens"`
	Seconds      float64 `json:"seconds"`
	TokensPerSec float64 `json:"tokens_per_sec"`
	// MFU is model FLOPs (Config.FLOPsPerToken) per second over PeakFLOPs.
	MFU float64 `json:"mfu,omitempty"`
	// Load is each layer's share of routed assignments per expert. [L][E']
	Load [][]float64 `json:"load"`
	// PoolSize is each layer's mean effective EMO pool size. [L]
	PoolSize []float64 `json:"pool_size,omitempty"`
	// LBPerLayer is the unweighted LB loss per layer. [L]
	LBPerLayer []float64 `json:"lb_per_layer"`
	// Seqs are the store sequences the step trained on, in batch order.
	Seqs []uint64 `json:"seqs"`
	// DataWait is the time the step waited for data (a following trainer
	// that has caught up with the stream); not part of Seconds.
	DataWait float64 `json:"data_wait,omitempty"`
	// Fresh is the freshness of the streamed documents first trained on
	// in this step (Config.Follow, documents with a Kafka timestamp).
	Fresh *Freshness `json:"fresh,omitempty"`
}

// Freshness is the lag from documents' Kafka record time to the end of
// the step that first trained on them.
type Freshness struct {
	Docs int `json:"docs"`
	// MeanSeconds and MaxSeconds are over those documents.
	MeanSeconds float64 `json:"mean_s"`
	MaxSeconds  float64 `json:"max_s"`
}

// freshness looks up the record time of each document that starts in the
// step's batch.
func (t *Trainer) freshness(keys []string) *Freshness {
	now := time.Now().UnixMilli()
	var f Freshness
	for _, k := range keys {
		d, err := t.st.Doc(k)
		if err != nil || d.Time <= 0 {
			continue
		}
		lag := float64(now-d.Time) / 1000
		f.Docs++
		f.MeanSeconds += lag
		f.MaxSeconds = max(f.MaxSeconds, lag)
	}
	if f.Docs == 0 {
		return nil
	}
	f.MeanSeconds /= float64(f.Docs)
	return &f
}

// New opens cfg.Store, and resumes the run it holds (when its settings
// match cfg; see Config.ForceNew) or starts a new one.
func New(ctx context.Context, cfg Config) (*Trainer, error) {
	if cfg.Store == "" {
		return nil, errors.New("train: no store given")
	}
	st, err := store.Open(cfg.Store, nil, store.Options{})
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	t, err := NewWithStore(ctx, st, cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	t.ownSt = true
	return t, nil
}

// NewWithStore trains from an open store (which the caller keeps
// owning), e.g. one an ingester in the same process writes to.
func NewWithStore(ctx context.Context, st *store.Store, cfg Config) (*Trainer, error) {
	scheduleDefaulted := cfg.Optim.ScheduleSteps == 0
	warmupDefaulted := cfg.Optim.Warmup == 0
	cfg = cfg.withDefaults()
	hdr := st.Header()
	cfg.Model.SeqLen = hdr.SeqLen - 1
	if cfg.Model.VocabSize == 0 {
		cfg.Model.VocabSize = hdr.VocabSize
	}
	if cfg.Model.VocabSize < hdr.VocabSize {
		return nil, fmt.Errorf("train: model vocab_size %d is smaller than the store's tokenizer (%d)", cfg.Model.VocabSize, hdr.VocabSize)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Model.Validate(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	cfg, err := cfg.withInit() // experts.go: the init checkpoint's hash joins the run key
	if err != nil {
		return nil, err
	}
	t := &Trainer{cfg: cfg, st: st, execs: map[graphKind]*gmodel.Exec{}}
	t.ckptDir = cfg.CheckpointDir
	if t.ckptDir == "" {
		if st.Dir() == "" {
			return nil, errors.New("train: an in-memory store needs Config.CheckpointDir")
		}
		t.ckptDir = filepath.Join(st.Dir(), "checkpoints")
	}
	if t.cfg.ReportDir == "" && st.Dir() != "" {
		t.cfg.ReportDir = filepath.Join(st.Dir(), "train")
	}

	// Resume: the stored run's settings must match (the schedule a run
	// started with is kept unless set explicitly).
	state, hist, err := LoadState(st)
	if err != nil {
		return nil, err
	}
	if state != nil && !cfg.ForceNew {
		if scheduleDefaulted {
			t.cfg.Optim.ScheduleSteps = state.Run.Optim.ScheduleSteps
		}
		if warmupDefaulted {
			t.cfg.Optim.Warmup = state.Run.Optim.Warmup
		}
		if d := diffKeys(state.Run, t.cfg.key()); d != "" {
			return nil, fmt.Errorf("train: %w (%s); pass --force-new to start a new run", ErrConfigMismatch, d)
		}
	}
	cfg = t.cfg

	t.layout = layout{
		attn:   cfg.AttnSegments != cfg.Segments,
		pools:  cfg.Model.Router == model.RouterEMO,
		counts: cfg.Accum > 1 && cfg.LB == LBGlobal,
	}
	t.nseg = cfg.Model.SeqLen // a row never holds more segments than positions
	if t.backend, err = NewBackend(cfg.Backend); err != nil {
		return nil, err
	}
	// AdamW on the host (adamw_host.go) needs the go backend, whose device
	// buffers are Go slices that the trainer may update in place.
	t.layout.hostOptim = isGoBackend(cfg.Backend) && t.backend.HasSharedBuffers() && !cfg.graphOptimizer
	t.vars = gmodel.NewStore()
	t.vars.SetParam(gmodel.ParamInitialSeed, int64(cfg.Seed))
	if err := t.initVariables(); err != nil {
		return nil, err
	}
	if cfg.InitCheckpoint != "" && (state == nil || cfg.ForceNew) {
		if err := t.loadInit(); err != nil { // experts.go: start from a (pruned) checkpoint
			return nil, err
		}
	}

	cursor := store.Cursor{Seed: cfg.Seed, Shuffle: true, Follow: cfg.Follow}
	if state != nil && !cfg.ForceNew {
		if err := t.loadCheckpoint(state.Checkpoint); err != nil {
			return nil, err
		}
		t.step, t.tokens, cursor = state.Step, state.Tokens, state.Cursor
		t.history = hist.clone()
		c := state.Checkpoint
		t.prev, t.last = &c, state.Previous
		t.resumed = true
	}
	if t.data, err = NewDataset(st, cursor, DatasetOptions{Segments: cfg.Segments, AttnSegments: cfg.AttnSegments}); err != nil {
		return nil, err
	}
	if cfg.EvalStore != "" {
		if err := t.openEval(); err != nil {
			return nil, err
		}
	}
	if t.cfg.ReportDir != "" {
		if t.log, err = openMetricsLog(filepath.Join(t.cfg.ReportDir, "metrics.jsonl"), t.step); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// initVariables creates every model variable in model order and
// initialises it from the seed, by compiling (not running) the whole
// model once.
func (t *Trainer) initVariables() error {
	e, err := gmodel.NewExec(t.backend, t.vars, t.graphFn(kindInit))
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	i32 := shapes.Make(dtypes.Int32, 1, t.cfg.Model.SeqLen)
	in := []shapes.Shape{i32, i32}
	if t.layout.attn {
		in = append(in, i32)
	}
	in = append(in, i32) // labels
	err = model.Try(func() {
		if _, err := e.Compile(in...); err != nil {
			panic(err)
		}
		if err := t.vars.InitializeVariables(t.backend, nil); err != nil {
			panic(err)
		}
	})
	if err != nil {
		return fmt.Errorf("train: build model: %w", err)
	}
	return nil
}

func (t *Trainer) exec(k graphKind) (*gmodel.Exec, error) {
	if e := t.execs[k]; e != nil {
		return e, nil
	}
	e, err := gmodel.NewExec(t.backend, t.vars, t.graphFn(k))
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	t.execs[k] = e
	return e, nil
}

// run executes graph k, turning graph-building panics into errors.
func (t *Trainer) run(k graphKind, args []any) (outs []*tensors.Tensor, err error) {
	e, err := t.exec(k)
	if err != nil {
		return nil, err
	}
	err = model.Try(func() {
		var e2 error
		outs, e2 = e.Exec(args...)
		if e2 != nil {
			panic(e2)
		}
	})
	return outs, err
}

// Config returns the run's effective configuration (defaults applied,
// vocabulary and sequence length from the store, schedule from a resumed
// run).
func (t *Trainer) Config() Config { return t.cfg }

// StepsDone is the number of optimizer steps taken (including a resumed
// run's).
func (t *Trainer) StepsDone() int { return t.step }

// Resumed reports whether New continued a run from the store.
func (t *Trainer) Resumed() bool { return t.resumed }

// Cursor is the data position of the next step.
func (t *Trainer) Cursor() store.Cursor { return t.data.Cursor() }

// History returns the losses and evaluations so far.
func (t *Trainer) History() History { return t.history.clone() }

// Step takes one optimizer step: Batch sequences from the store in Accum
// micro-batches (global LB counts from a forward-only pass over all of
// them first), gradients accumulated, clipped by global norm, one AdamW
// update. After an error the Trainer's state is undefined (the cursor may
// have moved, gradients may be half accumulated): close it and resume from
// the store's last checkpoint.
func (t *Trainer) Step(ctx context.Context) (StepMetrics, error) {
	if err := ctx.Err(); err != nil {
		return StepMetrics{}, err
	}
	start := time.Now()
	cfg := t.cfg
	batch, err := t.data.NextWait(ctx, cfg.Batch, cfg.StreamDone)
	waited := t.data.TakeWaited()
	if err != nil {
		return StepMetrics{}, err
	}
	p, err := t.plan(batch)
	if err != nil {
		return StepMetrics{}, err
	}
	k, micro, pools, counts, totReal := cfg.Accum, p.micro, p.pools, p.counts, p.totReal
	hyper := cfg.Optim.hyperParams(t.step)
	nl, ep := cfg.Model.NLayers, cfg.Model.RoutableExperts()
	sm := StepMetrics{Step: t.step + 1, LR: cfg.Optim.LRAt(t.step), Tokens: totReal,
		LBPerLayer: make([]float64, nl), PoolSize: make([]float64, nl)}
	load := make([]float64, nl*ep)
	rz := make([]float64, nl)
	for m := range k {
		kind := kindAccum
		if m == k-1 {
			kind = kindStep
		}
		w := p.weights[m]
		args, err := t.microInputs(kind, micro[m], pools[m], counts, w, hyper)
		if err != nil {
			return StepMetrics{}, err
		}
		outs, err := t.run(kind, args)
		if err != nil {
			return StepMetrics{}, fmt.Errorf("train: step %d micro-batch %d: %w", t.step+1, m, err)
		}
		wl, wr := float64(w[0]), float64(w[1])
		sm.CE += wl * float64(float32s(outs[outCE])[0])
		sm.LMHeadZ += wl * float64(float32s(outs[outLMZ])[0])
		for l, v := range float32s(outs[outRouterZ]) {
			rz[l] += wr * float64(v)
		}
		for l, v := range float32s(outs[outLB]) {
			sm.LBPerLayer[l] += wr * float64(v)
		}
		for i, v := range float32s(outs[outCounts]) {
			load[i] += float64(v)
		}
		for l, v := range float32s(outs[outPoolMean]) {
			sm.PoolSize[l] += float64(v) / float64(k)
		}
		if kind == kindStep && t.layout.hostOptim {
			if sm.GradNorm, err = t.hostUpdate(); err != nil {
				return StepMetrics{}, fmt.Errorf("train: step %d: %w", t.step+1, err)
			}
		} else if kind == kindStep {
			sm.GradNorm = float64(float32s(outs[outGradNorm])[0])
		}
		for _, o := range outs {
			o.FinalizeAll()
		}
	}
	mc := cfg.Model
	for l := range nl {
		sm.RouterZ += rz[l] / float64(nl)
		sm.LB += sm.LBPerLayer[l] / float64(nl)
	}
	sm.Loss = sm.CE + mc.LMHeadZLossWeight*sm.LMHeadZ + mc.RouterZLossWeight*sm.RouterZ + mc.LBLossWeight*sm.LB
	sm.Load = make([][]float64, nl)
	for l := range nl {
		var tot float64
		for e := range ep {
			tot += load[l*ep+e]
		}
		sm.Load[l] = make([]float64, ep)
		for e := range ep {
			sm.Load[l][e] = frac64(load[l*ep+e], tot)
		}
	}
	if !t.layout.pools {
		sm.PoolSize = nil
	}
	sm.Seconds = (time.Since(start) - waited).Seconds()
	sm.DataWait = waited.Seconds()
	sm.Seqs = batch.Seqs
	if cfg.Follow {
		sm.Fresh = t.freshness(batch.Starts)
	}
	sm.TokensPerSec = float64(totReal) / sm.Seconds
	if peak := cfg.peakFLOPs(); peak > 0 {
		sm.MFU = sm.TokensPerSec * cfg.Model.FLOPsPerToken(cfg.Model.SeqLen) / peak
	}
	t.step++
	t.tokens += int64(totReal)
	t.history.Loss = append(t.history.Loss, sm.Loss)
	t.history.CE = append(t.history.CE, sm.CE)
	if t.log != nil {
		if err := t.log.write(sm); err != nil {
			return sm, err
		}
	}
	t.publish(sm)
	if cfg.OnStep != nil {
		cfg.OnStep(sm)
	}
	return sm, nil
}

// hostUpdate applies the step's AdamW update on the host from the
// gradients the step graph left in its gradient variables, and returns
// their norm before clipping.
func (t *Trainer) hostUpdate() (float64, error) {
	if t.hostOpt == nil {
		h, err := newHostAdamW(t.vars, t.cfg.Optim, t.hostParams)
		if err != nil {
			return 0, err
		}
		t.hostOpt = h
	}
	return t.hostOpt.step(t.step)
}

// stepPlan is one step's micro-batches with their pool sizes, loss
// weights (share of the step's labelled and real tokens) and, with global
// LB and accumulation, the expert counts of the whole step.
type stepPlan struct {
	micro   []Batch
	pools   []*tensors.Tensor
	weights [][]float32
	counts  *tensors.Tensor
	totReal int
}

// plan splits a step's batch and runs the count passes.
func (t *Trainer) plan(batch Batch) (stepPlan, error) {
	cfg := t.cfg
	k, mb := cfg.Accum, cfg.Batch/cfg.Accum
	var allPools []int32
	if t.layout.pools {
		allPools = t.poolSizes(t.step)
	}
	p := stepPlan{micro: make([]Batch, k), pools: make([]*tensors.Tensor, k), weights: make([][]float32, k)}
	nLab, nReal := make([]int, k), make([]int, k)
	var totLab int
	for m := range k {
		p.micro[m] = batch.slice(m*mb, (m+1)*mb)
		if allPools != nil {
			p.pools[m] = t.microPools(allPools, m*mb, mb, segmentSlots(p.micro[m].Segments, t.nseg))
		}
		nLab[m], nReal[m] = p.micro[m].counts()
		totLab += nLab[m]
		p.totReal += nReal[m]
	}
	for m := range k {
		p.weights[m] = []float32{float32(frac(nLab[m], totLab)), float32(frac(nReal[m], p.totReal))}
	}
	if !t.layout.counts {
		return p, nil
	}
	ep := cfg.Model.RoutableExperts()
	sum := make([]float32, cfg.Model.NLayers*ep)
	for m := range k {
		args, err := t.microInputs(kindCount, p.micro[m], p.pools[m], nil, nil, nil)
		if err != nil {
			return p, err
		}
		outs, err := t.run(kindCount, args)
		if err != nil {
			return p, fmt.Errorf("train: step %d count pass: %w", t.step+1, err)
		}
		for i, v := range float32s(outs[0]) {
			sum[i] += v // integers below 2^24: exact in any order
		}
		outs[0].FinalizeAll()
	}
	p.counts = tensors.FromFlatDataAndDimensions(sum, cfg.Model.NLayers, ep)
	return p, nil
}

func frac(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func frac64(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func newPCG(seed, stream uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream)) }

// checkpointTensors are the variables a checkpoint holds: weights,
// optimizer moments and GoMLX's RNG state; not the gradient accumulators
// (zero between steps).
func (t *Trainer) checkpointTensors() (map[string]*tensors.Tensor, error) {
	out := map[string]*tensors.Tensor{}
	for v := range t.vars.IterVariables() {
		if transient(v.Path()) {
			continue
		}
		val, err := v.Value()
		if err != nil {
			return nil, fmt.Errorf("train: read %s: %w", v.Path(), err)
		}
		out[strings.TrimPrefix(v.Path(), "/")] = val
	}
	return out, nil
}

// Checkpoint makes the current step durable: the checkpoint file first
// (temporary file, fsync, rename), then one store transaction with the
// state that names it and its sha256, then the files older than the
// previous checkpoint are deleted. A kill at any point leaves the old
// state with its file, or the new one.
func (t *Trainer) Checkpoint() error {
	if t.prev != nil && t.prev.Step == t.step {
		return nil
	}
	named, err := t.checkpointTensors()
	if err != nil {
		return err
	}
	name := checkpointName(t.step)
	var sum string
	var n int64
	err = writeFileAtomic(filepath.Join(t.ckptDir, name), func(w io.Writer) error {
		var err error
		sum, n, err = writeSafetensors(w, named, t.checkpointMeta())
		return err
	})
	if err != nil {
		return fmt.Errorf("train: write checkpoint %s: %w", name, err)
	}
	ref := CheckpointRef{File: name, SHA256: sum, Bytes: n, Step: t.step}
	state := State{Version: stateVersion, Step: t.step, Cursor: t.data.Cursor(), Tokens: t.tokens,
		Checkpoint: ref, Previous: t.prev, Run: t.cfg.key(), Params: t.cfg.Model.Params().Total}
	if err := commitState(t.st, state, t.history); err != nil {
		return err
	}
	t.last, t.prev = t.prev, &ref
	keep := []string{ref.File}
	if t.last != nil {
		keep = append(keep, t.last.File)
	}
	return pruneCheckpoints(t.ckptDir, keep...)
}

// loadCheckpoint verifies ref's hash and loads its tensors into the
// variables created by initVariables (moments are created here: the step
// graph finds them with their values).
func (t *Trainer) loadCheckpoint(ref CheckpointRef) error {
	path := filepath.Join(t.ckptDir, ref.File)
	sum, err := fileSHA256(path)
	if err != nil {
		return fmt.Errorf("train: resume from step %d: checkpoint %s: %w", ref.Step, path, err)
	}
	if sum != ref.SHA256 {
		return fmt.Errorf("train: resume from step %d: %w: %s has sha256 %s, the store's state expects %s", ref.Step, ErrCheckpoint, path, sum[:12], ref.SHA256[:12])
	}
	named, _, err := readSafetensors(path)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	for v := range t.vars.IterVariables() {
		if transient(v.Path()) {
			continue
		}
		name := strings.TrimPrefix(v.Path(), "/")
		val, ok := named[name]
		if !ok {
			return fmt.Errorf("train: %w: %s lacks %s", ErrCheckpoint, path, name)
		}
		if !val.Shape().Equal(v.Shape()) {
			return fmt.Errorf("train: %w: %s: %s is %s, the model has %s", ErrCheckpoint, path, name, val.Shape(), v.Shape())
		}
		if err := v.SetValue(val); err != nil {
			return fmt.Errorf("train: load %s: %w", name, err)
		}
		delete(named, name)
	}
	for name, val := range named { // optimizer moments
		v, err := t.vars.CreateVariable("/"+name, val)
		if err != nil {
			return fmt.Errorf("train: load %s: %w", name, err)
		}
		v.SetTrainable(false)
	}
	return nil
}

// Digest is a SHA-256 over every checkpointed variable (weights, moments,
// RNG state) in path order: equal digests mean bitwise-equal training
// states.
func (t *Trainer) Digest() (string, error) {
	named, err := t.checkpointTensors()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, _, err := writeSafetensors(h, named, nil); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Weights returns a copy of the model's weights by path (no optimizer
// state), e.g. to compare runs.
func (t *Trainer) Weights() (map[string][]float32, error) {
	out := map[string][]float32{}
	for v := range t.vars.IterVariables() {
		if !v.Trainable {
			continue
		}
		val, err := v.Value()
		if err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(v.Path(), "/")] = tensors.MustCopyFlatData[float32](val)
	}
	return out, nil
}

// Close releases the stores New opened and the metrics log. It does not
// checkpoint. It is idempotent.
func (t *Trainer) Close() error {
	var errs []error
	if t.log != nil {
		errs = append(errs, t.log.close())
		t.log = nil
	}
	if t.evalSt != nil {
		errs = append(errs, t.evalSt.Close())
		t.evalSt = nil
	}
	if t.ownSt && t.st != nil {
		errs = append(errs, t.st.Close())
		t.st = nil
	}
	return errors.Join(errs...)
}

// Store returns the training store.
func (t *Trainer) Store() *store.Store { return t.st }

// CheckpointDir is where checkpoint files go.
func (t *Trainer) CheckpointDir() string { return t.ckptDir }
