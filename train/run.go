package train

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// Result summarises a Run.
type Result struct {
	// FromStep is where this invocation started (0, or the resumed step);
	// Steps where it stopped.
	FromStep int  `json:"from_step"`
	Steps    int  `json:"steps"`
	Resumed  bool `json:"resumed"`
	// Interrupted: the context was cancelled; the last step is checkpointed.
	Interrupted bool `json:"interrupted"`
	// CaughtUp: a following run (Config.Follow) trained on everything the
	// stream delivered before it ended, short of Steps.
	CaughtUp bool `json:"caught_up,omitempty"`
	// Last is the last step's metrics (zero if no step ran).
	Last StepMetrics `json:"last"`
	// Eval is the last held-out evaluation, if any.
	Eval *EvalResult `json:"eval,omitempty"`
	// TokensPerSec and MFU are means over this invocation's steps after the
	// first (which compiles the graphs).
	TokensPerSec float64 `json:"tokens_per_sec"`
	MFU          float64 `json:"mfu"`
	// Checkpoint is the path of the last checkpoint file.
	Checkpoint string `json:"checkpoint"`
	// Plots and Log are the report files written.
	Plots []string `json:"plots,omitempty"`
	Log   string   `json:"log,omitempty"`
}

// Run trains cfg.Store's model to cfg.Steps: it resumes the run the store
// holds, evaluates and checkpoints on schedule and at the end, and writes
// the report plots. Cancelling ctx stops after the current step, which is
// checkpointed.
func Run(ctx context.Context, cfg Config) (Result, error) {
	t, err := New(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	res, err := t.Run(ctx)
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	return res, err
}

// Run trains to Config.Steps (see the package-level Run).
func (t *Trainer) Run(ctx context.Context) (Result, error) {
	cfg := t.cfg
	res := Result{FromStep: t.step, Resumed: t.resumed}
	prog := newProgress(cfg.Progress)
	if t.resumed {
		prog.done(fmt.Sprintf("train: resuming at step %d of %d from %s", t.step, cfg.Steps, t.prev.File))
	}
	if len(t.evalBatches) > 0 && t.step == 0 && len(t.history.Evals) == 0 {
		e, err := t.Evaluate(ctx)
		if err != nil {
			return res, err
		}
		res.Eval = &e
	}
	start := time.Now()
	var timed time.Duration
	var timedTokens int
	var timedFLOPs float64
	for t.step < cfg.Steps {
		m, err := t.Step(ctx)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			res.Interrupted = true
			break
		}
		if errors.Is(err, ErrStreamEnded) {
			res.CaughtUp = true
			break
		}
		if err != nil {
			return res, err
		}
		res.Last = m
		if t.step > res.FromStep+1 {
			timed += time.Duration(m.Seconds * float64(time.Second))
			timedTokens += m.Tokens
			timedFLOPs += float64(m.Tokens) * cfg.Model.FLOPsPerToken(cfg.Model.SeqLen)
		}
		done := t.step - res.FromStep
		eta := time.Duration(float64(time.Since(start)) / float64(done) * float64(cfg.Steps-t.step))
		prog.update(t.step == cfg.Steps, func() string {
			return fmt.Sprintf("train %s step %d/%d loss %.4f ce %.4f lb %.3f |g| %.2f lr %.2e %.0f tok/s MFU %.1f%% eta %s",
				bar(t.step, cfg.Steps, 20), t.step, cfg.Steps, m.Loss, m.CE, m.LB, m.GradNorm, m.LR, m.TokensPerSec, 100*m.MFU, fmtDuration(eta))
		})
		if cfg.EvalEvery > 0 && len(t.evalBatches) > 0 && t.step%cfg.EvalEvery == 0 && t.step < cfg.Steps {
			e, err := t.Evaluate(ctx)
			if err != nil {
				return res, err
			}
			res.Eval = &e
			prog.done(fmt.Sprintf("train: step %d held-out loss %.4f", t.step, e.Loss))
		}
		if cfg.CheckpointEvery > 0 && t.step%cfg.CheckpointEvery == 0 && t.step < cfg.Steps {
			if err := t.Checkpoint(); err != nil {
				return res, err
			}
		}
	}
	if !res.Interrupted && len(t.evalBatches) > 0 && (len(t.history.Evals) == 0 || t.history.Evals[len(t.history.Evals)-1].Step != t.step) {
		e, err := t.Evaluate(context.WithoutCancel(ctx))
		if err != nil {
			return res, err
		}
		res.Eval = &e
	}
	if err := t.Checkpoint(); err != nil {
		return res, err
	}
	res.Steps = t.step
	if t.prev != nil {
		res.Checkpoint = filepath.Join(t.ckptDir, t.prev.File)
	}
	if timed > 0 {
		res.TokensPerSec = float64(timedTokens) / timed.Seconds()
		if peak := cfg.peakFLOPs(); peak > 0 {
			res.MFU = timedFLOPs / timed.Seconds() / peak
		}
	}
	if cfg.ReportDir != "" {
		res.Log = filepath.Join(cfg.ReportDir, "metrics.jsonl")
		plots, err := t.WriteReport()
		if err != nil {
			return res, err
		}
		res.Plots = plots
	}
	msg := fmt.Sprintf("train: step %d/%d", t.step, cfg.Steps)
	if res.Interrupted {
		msg += " (interrupted; run again to resume)"
	}
	if res.CaughtUp {
		msg += " (trained on all the stream delivered)"
	}
	if res.Eval != nil {
		msg += fmt.Sprintf(", held-out loss %.4f", res.Eval.Loss)
	}
	prog.done(msg)
	return res, nil
}

// WriteReport draws the plots of the run so far into Config.ReportDir from
// its metrics log.
func (t *Trainer) WriteReport() ([]string, error) {
	if t.cfg.ReportDir == "" {
		return nil, nil
	}
	if t.log != nil {
		t.log.w.Flush()
	}
	steps, evals, err := ReadMetricsLog(filepath.Join(t.cfg.ReportDir, "metrics.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("train: report: %w", err)
	}
	uni, err := UnigramEntropy(t.st, 20000) // a sample is enough for a reference line
	if err != nil {
		return nil, fmt.Errorf("train: report: %w", err)
	}
	title := fmt.Sprintf("%s router, %d layers, d %d, %d experts", t.cfg.Model.Router, t.cfg.Model.NLayers, t.cfg.Model.DModel, t.cfg.Model.NumExperts)
	return WritePlots(t.cfg.ReportDir, PlotInputs{Steps: steps, Evals: evals, Unigram: uni, Title: title})
}
