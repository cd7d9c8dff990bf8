package pipelines

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/train"
)

// ReportConfig chooses where a report goes and what it evaluates.
type ReportConfig struct {
	// Dir is the report folder (default <store>/report).
	Dir string
	// EvalStore is a store of held-out documents with domain labels for the
	// expert × domain view ("" uses the training store's sequences).
	EvalStore string
	// Backend runs the model for the expert × domain view (default go).
	Backend string
	// DomainSequences caps the sequences the expert × domain view routes
	// (0: default 256; negative: no view).
	DomainSequences int
}

// LayerModularity is one layer's alignment of experts with domains
// (train.LayerUsage without the matrix, which modularity.json holds).
type LayerModularity struct {
	Layer    int     `json:"layer"`
	TokenNMI float64 `json:"token_nmi"`
	PoolNMI  float64 `json:"pool_nmi"`
}

// Summary is a training store's state in numbers: what the stream
// delivered, what the trainer made of it, and how fresh and how fed it
// was. summary.json holds it; summary.md says it in a table.
type Summary struct {
	Store     string    `json:"store"`
	Generated time.Time `json:"generated"`
	Tokenizer string    `json:"tokenizer"`
	SeqLen    int       `json:"seq_len"`

	// The store: documents accepted, sequences, tokens, rejects.
	Documents uint64            `json:"documents"`
	Sequences uint64            `json:"sequences"`
	Tokens    uint64            `json:"tokens"`
	Rejects   uint64            `json:"rejects"`
	Domains   map[string]uint64 `json:"domains"`

	// The trainer.
	Model            string  `json:"model"`
	Params           int64   `json:"params"`
	Steps            int     `json:"steps"`
	TokensTrained    int64   `json:"tokens_trained"`
	SequencesTrained uint64  `json:"sequences_trained"`
	Backlog          uint64  `json:"backlog_sequences"`
	Checkpoint       string  `json:"checkpoint,omitempty"`
	FirstLoss        float64 `json:"first_loss"`
	LastLoss         float64 `json:"last_loss"`
	// LastCE is the mean CE of the last (up to) 20 steps.
	LastCE  float64           `json:"last_ce"`
	Unigram float64           `json:"unigram_entropy"`
	Eval    *train.EvalResult `json:"eval,omitempty"`
	Perf    Throughput        `json:"throughput"`
	Fresh   *train.Freshness  `json:"freshness,omitempty"`
	// Modularity is NMI(domain; expert) per layer on the held-out store.
	Modularity []LayerModularity `json:"modularity,omitempty"`
}

// Throughput is the trainer's speed and how much of its time it waited
// for data.
type Throughput struct {
	// StepSeconds is the compute time of all logged steps; DataWaitSeconds
	// the time they waited for the stream.
	StepSeconds     float64 `json:"step_seconds"`
	DataWaitSeconds float64 `json:"data_wait_seconds"`
	// InputStall is DataWaitSeconds / (StepSeconds + DataWaitSeconds).
	InputStall   float64 `json:"input_stall"`
	TokensPerSec float64 `json:"tokens_per_sec"`
	MFU          float64 `json:"mfu"`
}

// Report writes the report folder of a training store: loss.png and
// expert_load.png (from the trainer's metrics log), summary.json and
// summary.md. It reads the store only, so it works on a stopped run
// (`emopipe report`) as well as at the end of one.
func Report(ctx context.Context, st *store.Store, cfg ReportConfig) (Summary, []string, error) {
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(st.Dir(), "report")
	}
	if cfg.DomainSequences == 0 {
		cfg.DomainSequences = 256
	}
	if cfg.EvalStore == "" {
		if _, err := os.Stat(filepath.Join(st.Dir(), "heldout")); err == nil {
			cfg.EvalStore = filepath.Join(st.Dir(), "heldout")
		}
	}
	state, _, err := train.LoadState(st)
	if err != nil {
		return Summary{}, nil, err
	}
	if state == nil {
		return Summary{}, nil, fmt.Errorf("report: %s holds no training run yet (run emopipe run or emopipe train first)", st.Dir())
	}
	steps, evals, err := train.ReadMetricsLog(filepath.Join(st.Dir(), "train", "metrics.jsonl"))
	if err != nil {
		return Summary{}, nil, fmt.Errorf("report: %w", err)
	}
	hdr, stats := st.Header(), st.Stats()
	mc := state.Run.Model
	s := Summary{
		Store: st.Dir(), Generated: time.Now().UTC().Truncate(time.Second), Tokenizer: hdr.Tokenizer, SeqLen: hdr.SeqLen,
		Documents: stats.Docs, Sequences: stats.Sequences, Tokens: stats.Tokens, Domains: map[string]uint64{},
		Model:  fmt.Sprintf("%s router, %d layers, d_model %d, %d experts (top-%d)", mc.Router, mc.NLayers, mc.DModel, mc.NumExperts, mc.TopK),
		Params: state.Params, Steps: state.Step, TokensTrained: state.Tokens, Checkpoint: filepath.Join(st.Dir(), "checkpoints", state.Checkpoint.File),
	}
	for _, n := range stats.Rejects {
		s.Rejects += n
	}
	for d, ds := range stats.Domains {
		s.Domains[d] = ds.Docs
	}
	if state.Cursor.Follow {
		s.SequencesTrained = state.Cursor.Pos
	} else {
		s.SequencesTrained = uint64(state.Step * state.Run.Batch)
	}
	if stats.Sequences > s.SequencesTrained && state.Cursor.Follow {
		s.Backlog = stats.Sequences - s.SequencesTrained
	}
	if n := len(steps); n > 0 {
		s.FirstLoss, s.LastLoss = steps[0].Loss, steps[n-1].Loss
		tail := steps[max(0, n-20):]
		for _, m := range tail {
			s.LastCE += m.CE / float64(len(tail))
		}
	}
	if len(evals) > 0 {
		e := evals[len(evals)-1]
		s.Eval = &e
	}
	var tokens, flops float64
	var fresh train.Freshness
	for i, m := range steps {
		if f := m.Fresh; f != nil {
			fresh.MeanSeconds += f.MeanSeconds * float64(f.Docs)
			fresh.Docs += f.Docs
			fresh.MaxSeconds = max(fresh.MaxSeconds, f.MaxSeconds)
		}
		if i == 0 {
			continue // the first logged step compiles the graphs
		}
		s.Perf.StepSeconds += m.Seconds
		s.Perf.DataWaitSeconds += m.DataWait
		tokens += float64(m.Tokens)
		if m.TokensPerSec > 0 {
			flops += m.MFU / m.TokensPerSec * float64(m.Tokens)
		}
	}
	if s.Perf.StepSeconds > 0 {
		s.Perf.TokensPerSec = tokens / s.Perf.StepSeconds
		s.Perf.MFU = flops / s.Perf.StepSeconds
		s.Perf.InputStall = s.Perf.DataWaitSeconds / (s.Perf.StepSeconds + s.Perf.DataWaitSeconds)
	}
	if fresh.Docs > 0 {
		fresh.MeanSeconds /= float64(fresh.Docs)
		s.Fresh = &fresh
	}
	if s.Unigram, err = train.UnigramEntropy(st, 20000); err != nil {
		return s, nil, fmt.Errorf("report: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return s, nil, err
	}

	files, err := train.WritePlots(cfg.Dir, train.PlotInputs{Steps: steps, Evals: evals, Unigram: s.Unigram, Title: s.Model})
	if err != nil {
		return s, files, fmt.Errorf("report: %w", err)
	}
	if cfg.DomainSequences >= 0 {
		rep, more, err := writeDomainView(ctx, st, state, cfg)
		files = append(files, more...)
		if err != nil {
			return s, files, fmt.Errorf("report: expert × domain view: %w", err)
		}
		for _, l := range rep.Layers {
			s.Modularity = append(s.Modularity, LayerModularity{Layer: l.Layer, TokenNMI: l.TokenNMI, PoolNMI: l.PoolNMI})
		}
	}
	js, _ := json.MarshalIndent(s, "", "  ")
	p := filepath.Join(cfg.Dir, "summary.json")
	if err := os.WriteFile(p, append(js, '\n'), 0o644); err != nil {
		return s, files, err
	}
	files = append(files, p)
	p = filepath.Join(cfg.Dir, "summary.md")
	if err := os.WriteFile(p, []byte(s.Markdown(files)), 0o644); err != nil {
		return s, files, err
	}
	files = append(files, p)
	return s, files, nil
}

// writeDomainView measures which experts each domain's tokens use in the
// last checkpoint (train.Modularity: per-layer domain × expert heat maps,
// token and pool NMI) on the held-out store, or on the training store
// itself when there is none.
func writeDomainView(ctx context.Context, st *store.Store, state *train.State, cfg ReportConfig) (train.ModularityReport, []string, error) {
	m, err := train.LoadModel(filepath.Join(st.Dir(), "checkpoints", state.Checkpoint.File))
	if err != nil {
		return train.ModularityReport{}, nil, err
	}
	src := st
	if cfg.EvalStore != "" {
		if src, err = store.Open(cfg.EvalStore, nil, store.Options{ReadOnly: true}); err != nil {
			return train.ModularityReport{}, nil, err
		}
		defer src.Close()
	}
	o := train.ModularityOptions{Inference: train.InferenceOptions{Backend: cfg.Backend}, Sequences: cfg.DomainSequences}
	rep, err := train.Modularity(ctx, m, src, o)
	if err != nil {
		return rep, nil, err
	}
	files, err := rep.Write(cfg.Dir)
	return rep, files, err
}

// Markdown is the summary as a short document.
func (s Summary) Markdown(files []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# emopipe run report\n\nStore `%s`, generated %s.\n\n", s.Store, s.Generated.Format(time.RFC3339))
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	b.WriteString("| | |\n|---|---|\n")
	row("model", fmt.Sprintf("%s, %.2fM parameters", s.Model, float64(s.Params)/1e6))
	row("tokenizer / seq_len", fmt.Sprintf("%s / %d", s.Tokenizer, s.SeqLen))
	row("stream into the store", fmt.Sprintf("%d documents, %d sequences, %d tokens, %d rejected", s.Documents, s.Sequences, s.Tokens, s.Rejects))
	row("trained", fmt.Sprintf("%d steps, %d sequences, %d tokens; backlog %d sequences", s.Steps, s.SequencesTrained, s.TokensTrained, s.Backlog))
	row("loss", fmt.Sprintf("%.4f at step 1 → %.4f at step %d (CE of the last 20 steps %.4f; unigram entropy %.4f)", s.FirstLoss, s.LastLoss, s.Steps, s.LastCE, s.Unigram))
	if s.Eval != nil {
		row("held-out loss", fmt.Sprintf("%.4f at step %d", s.Eval.Loss, s.Eval.Step))
	}
	row("throughput", fmt.Sprintf("%.0f tokens/s, MFU %.2f%%", s.Perf.TokensPerSec, 100*s.Perf.MFU))
	row("input stall", fmt.Sprintf("%.1f%% of step time waiting for data (%.1f s of %.1f s)", 100*s.Perf.InputStall, s.Perf.DataWaitSeconds, s.Perf.DataWaitSeconds+s.Perf.StepSeconds))
	if s.Fresh != nil {
		row("freshness lag", fmt.Sprintf("mean %.1f s, max %.1f s from Kafka record time to the step that first trained on it (%d documents)", s.Fresh.MeanSeconds, s.Fresh.MaxSeconds, s.Fresh.Docs))
	}
	for _, l := range s.Modularity {
		row(fmt.Sprintf("layer %d experts vs domains", l.Layer), fmt.Sprintf("NMI %.3f over routed tokens, %.3f over document pools", l.TokenNMI, l.PoolNMI))
	}
	row("checkpoint", "`"+s.Checkpoint+"`")
	if s.Eval != nil && len(s.Eval.Domains) > 0 {
		b.WriteString("\n| domain | documents in store | held-out loss |\n|---|---|---|\n")
		var ds []string
		for d := range s.Eval.Domains {
			ds = append(ds, d)
		}
		sort.Strings(ds)
		for _, d := range ds {
			fmt.Fprintf(&b, "| %s | %d | %.4f |\n", d, s.Domains[d], s.Eval.Domains[d].Loss)
		}
	}
	if len(files) > 0 {
		b.WriteString("\nFiles:\n")
		for _, f := range files {
			fmt.Fprintf(&b, "- `%s`\n", filepath.Base(f))
		}
	}
	return b.String()
}
