package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/train"
)

func newTrainCmd() *cobra.Command {
	cfg := train.DefaultConfig()
	var configFile, preset, router string
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "train --store DIR",
		Short: "Train an EMO mixture-of-experts model from a packed store",
		Long: `Trains a model on the store's sequences (store seq_len = model sequence + 1:
inputs are seq[:-1], labels seq[1:]). Weights, optimizer state and the data
cursor are checkpointed into DIR/checkpoints and the store's trainer state;
run the same command again to resume (a kill at any moment loses at most the
steps since the last checkpoint). Metrics go to DIR/train/metrics.jsonl,
plots to DIR/train (or --report).`,
		Example: `  emopipe pack testdata/corpus/sample.jsonl.gz --store s --seq-len 129 --tokenizer dolma2-8k
  emopipe pack testdata/corpus/heldout.jsonl.gz --store h --seq-len 129 --tokenizer dolma2-8k
  emopipe train --store s --preset tiny --steps 300 --eval-store h
  emopipe train --store s --backend xla:/opt/jax/xla_cuda_plugin.so --preset small --batch 32`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Store == "" {
				return fmt.Errorf("--store is required")
			}
			m, err := modelConfig(configFile, preset)
			if err != nil {
				return err
			}
			if router != "" {
				m.Router = strings.ToLower(router)
			}
			if cfg.InitCheckpoint != "" { // the model is the checkpoint's (e.g. a pruned one)
				if configFile != "" || router != "" || cmd.Flags().Changed("preset") {
					return fmt.Errorf("--init-checkpoint takes the model config from the checkpoint; drop --config, --preset and --router")
				}
				if m, err = train.InitModel(cfg.InitCheckpoint); err != nil {
					return err
				}
			}
			cfg.Model = m
			cfg.Progress = progressOut(quiet)
			res, err := train.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			out := fmt.Sprintf("trained %s to step %d", cfg.Store, res.Steps)
			if res.Resumed {
				out += fmt.Sprintf(" (resumed at %d)", res.FromStep)
			}
			if res.Last.Step > 0 {
				out += fmt.Sprintf(": loss %.4f, %.0f tokens/s, MFU %.2f%%", res.Last.Loss, res.TokensPerSec, 100*res.MFU)
			}
			if res.Eval != nil {
				out += fmt.Sprintf(", held-out loss %.4f", res.Eval.Loss)
			}
			if res.Interrupted {
				out += " (interrupted and checkpointed; run the same command to resume)"
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Store, "store", "", "packed store to train from (trainer state and checkpoints are kept in it)")
	trainFlags(f, &cfg, &configFile, &preset, &router)
	f.StringVar(&cfg.EvalStore, "eval-store", "", "held-out store for evaluation (same tokenizer and seq_len)")
	f.StringVar(&cfg.ReportDir, "report", "", "directory for metrics.jsonl and plots (default DIR/train)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&quiet, "quiet", false, "no progress output")
	return cmd
}

// modelConfig reads --config, or the preset. The vocabulary comes from the
// store unless the file sets vocab_size itself.
func modelConfig(file, preset string) (model.Config, error) {
	if file == "" {
		m, err := model.Preset(preset)
		m.VocabSize = 0
		return m, err
	}
	m, err := model.LoadConfig(file)
	if err != nil {
		return m, err
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return m, err
	}
	var keys map[string]any
	if yaml.Unmarshal(raw, &keys) == nil { // YAML also reads JSON
		if _, ok := keys["vocab_size"]; !ok {
			m.VocabSize = 0
		}
	}
	return m, nil
}

// trainFlags binds the trainer's flags (shared by train and run).
func trainFlags(f *pflag.FlagSet, cfg *train.Config, configFile, preset, router *string) {
	f.StringVar(configFile, "config", "", "model config file (YAML or JSON; see model.Config); vocab_size defaults to the store's")
	f.StringVar(preset, "preset", "tiny", "model preset when no --config: tiny, small or ref1b14b")
	f.StringVar(router, "router", "", "override the router: emo or standard")
	f.IntVar(&cfg.Steps, "steps", cfg.Steps, "train until this many optimizer steps (a resumed run counts earlier steps)")
	f.IntVar(&cfg.Batch, "batch", cfg.Batch, "sequences per optimizer step")
	f.IntVar(&cfg.Accum, "accum", cfg.Accum, "micro-batches per step (gradient accumulation; batch must divide)")
	f.Float64Var(&cfg.Optim.LR, "lr", cfg.Optim.LR, "peak learning rate")
	f.IntVar(&cfg.Optim.Warmup, "warmup", 0, "warmup steps (default 10% of the schedule, at most 2000)")
	f.IntVar(&cfg.Optim.ScheduleSteps, "schedule-steps", 0, "length of the cosine schedule (default --steps; a resumed run keeps its own)")
	f.Float64Var(&cfg.Optim.WeightDecay, "weight-decay", cfg.Optim.WeightDecay, "AdamW weight decay (not on embeddings and norm weights)")
	f.Float64Var(&cfg.Optim.ClipNorm, "clip", cfg.Optim.ClipNorm, "global gradient-norm clip (negative: off)")
	f.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of initialisation, data order and EMO pool sizes")
	f.StringVar(&cfg.LB, "lb", cfg.LB, "load-balancing statistic: global (whole step) or local (per --lb-group-rows rows)")
	f.IntVar(&cfg.LBGroupRows, "lb-group-rows", 0, "rows per group for --lb local (default: the micro-batch)")
	f.StringVar(&cfg.Segments, "segments", cfg.Segments, "router documents: spans (stored document spans) or eos (the reference's EOS segmentation)")
	f.StringVar(&cfg.Backend, "backend", cfg.Backend, "compute backend: go (CPU) or xla:/abs/path/to/pjrt_plugin.so (GPU)")
	f.Float64Var(&cfg.PeakFLOPs, "peak-flops", 0, "hardware peak FLOP/s for the MFU estimate (default for go: NumCPU × 32 GFLOP/s)")
	f.IntVar(&cfg.EvalEvery, "eval-every", cfg.EvalEvery, "evaluate every N steps (and at the end)")
	f.IntVar(&cfg.EvalSequences, "eval-sequences", 256, "held-out sequences to evaluate, evenly spaced (0: all)")
	f.IntVar(&cfg.CheckpointEvery, "checkpoint-every", cfg.CheckpointEvery, "checkpoint every N steps (and at the end)")
	f.StringVar(&cfg.InitCheckpoint, "init-checkpoint", "", "start a new run from this checkpoint's weights and model config (e.g. emopipe experts prune output)")
	f.BoolVar(&cfg.ForceNew, "force-new", false, "start a new run even if the store holds one of another configuration")
}
