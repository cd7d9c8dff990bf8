package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/train"
)

func newExpertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "experts",
		Short: "Selective expert use: select a subset from calibration text, prune a checkpoint, compare models",
		Long: `Selective expert use (emo-method.md §7). K counts the shared expert: with 16
experts, --keep 4 keeps 3 routable experts and the shared one per layer.`,
	}
	cmd.AddCommand(newExpertsSelectCmd(), newExpertsPruneCmd(), newExpertsCompareCmd(), newExpertsModularityCmd())
	return cmd
}

// parseKeep reads "K" or "P%" (a share of the model's experts).
func parseKeep(s string, cfg model.Config) (int, error) {
	if p, ok := strings.CutSuffix(strings.TrimSpace(s), "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f <= 0 || f > 100 {
			return 0, fmt.Errorf("--keep %q: want a count or a percentage in (0, 100]", s)
		}
		return cfg.KeepForFraction(f / 100), nil
	}
	k, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("--keep %q: want a count (shared expert included) or a percentage", s)
	}
	return k, cfg.CheckKeep(k)
}

func newExpertsSelectCmd() *cobra.Command {
	var ckpt, calib, calibStore, domain, keepS, out, tokName string
	var opts train.InferenceOptions
	var co train.CalibrationOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "select --checkpoint FILE (--calib FILE | --calib-store DIR --domain D) --keep K --out SUBSET.json",
		Short: "Choose each layer's experts from calibration text (the reference's greedy layer-wise selection)",
		Long: `Layer by layer, with the earlier layers already restricted, averages
softmax(router logits) over the routable experts and every calibration token,
and keeps the K-1 most probable routable experts plus the shared one
(src/hf_training/greedy_prune_layerwise.py of the reference). One document is
enough. --calib reads a text file (the whole file is one document) or a JSONL
file ({"id","text","domain"} per line; every line is used), tokenized with
the checkpoint's tokenizer; --calib-store takes the first document of
--domain (at least --min-tokens tokens) from a packed store.`,
		Example: `  emopipe experts select --checkpoint s/checkpoints/step-00000900.safetensors --calib prompt.txt --keep 25% --out go.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ckpt == "" || out == "" || keepS == "" {
				return fmt.Errorf("--checkpoint, --keep and --out are required")
			}
			if (calib == "") == (calibStore == "") {
				return fmt.Errorf("give one of --calib FILE or --calib-store DIR")
			}
			m, err := train.LoadModel(ckpt)
			if err != nil {
				return err
			}
			keep, err := parseKeep(keepS, m.Config())
			if err != nil {
				return err
			}
			var docs []train.CalibDoc
			source := calib
			if calib != "" {
				if docs, err = calibFile(m.Info, tokName, calib); err != nil {
					return err
				}
			} else {
				if domain == "" {
					return fmt.Errorf("--calib-store needs --domain")
				}
				st, err := store.Open(calibStore, nil, store.Options{ReadOnly: true})
				if err != nil {
					return err
				}
				all, err := train.CalibrationDocs(st, co)
				st.Close()
				if err != nil {
					return err
				}
				d, ok := all[domain]
				if !ok {
					return fmt.Errorf("store %s has no %s document of at least %d tokens", calibStore, domain, co.MinTokens)
				}
				docs, source = []train.CalibDoc{d}, calibStore
			}
			in, err := train.NewInference(m, opts)
			if err != nil {
				return err
			}
			s, err := in.Select(cmd.Context(), docs, keep)
			if err != nil {
				return err
			}
			s.Calibration.Source = source
			if err := model.WriteSubset(out, s); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s (from %d calibration tokens, routing %s)\n", out, s, s.Calibration.Tokens, in.Routing())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ckpt, "checkpoint", "", "checkpoint file")
	f.StringVar(&calib, "calib", "", "calibration file: text (one document) or JSONL (one document per line)")
	f.StringVar(&calibStore, "calib-store", "", "packed store to take the calibration document from (with --domain)")
	f.StringVar(&domain, "domain", "", "domain of the calibration document in --calib-store")
	f.IntVar(&co.MinTokens, "min-tokens", 64, "--calib-store: skip documents shorter than this")
	f.IntVar(&co.MaxTokens, "max-tokens", 1024, "truncate the calibration document (--calib-store) to this many tokens")
	f.StringVar(&tokName, "tokenizer", "", "tokenizer for --calib (default: the checkpoint's)")
	f.StringVar(&keepS, "keep", "", "experts to keep per layer, shared included: a count (4) or a share of them (25%)")
	f.StringVar(&out, "out", "", "subset file to write (JSON)")
	inferenceFlags(cmd, &opts)
	f.BoolVar(&asJSON, "json", false, "print the subset as JSON")
	return cmd
}

// calibFile reads calibration documents from a text or JSONL file (.gz
// allowed) and tokenizes them with the checkpoint's tokenizer.
func calibFile(info train.CheckpointInfo, tokName, path string) ([]train.CalibDoc, error) {
	if tokName == "" {
		tokName = info.Tokenizer
	}
	if tokName == "" {
		return nil, fmt.Errorf("the checkpoint does not name its tokenizer; pass --tokenizer")
	}
	tok, err := loadTokenizer(tokName)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	name := path
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if raw, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		name = strings.TrimSuffix(name, ".gz")
	}
	var docs []train.CalibDoc
	add := func(key, domain, text string) {
		ids := tok.Encode(text)
		t := make([]int32, len(ids))
		for i, v := range ids {
			t[i] = int32(v)
		}
		if len(t) > 0 {
			docs = append(docs, train.CalibDoc{Key: key, Domain: domain, Tokens: t})
		}
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jsonl", ".ndjson", ".json":
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		fields := ingest.DefaultFields()
		for n := 0; sc.Scan(); n++ {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			d, rej := fields.ParseJSON(sc.Bytes(), fmt.Sprintf("%s:%d", path, n+1))
			if rej != nil {
				return nil, fmt.Errorf("%s line %d: %s", path, n+1, rej.Reason)
			}
			add(d.ID, d.Domain, string(d.Text))
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	default:
		add(path, "", string(raw))
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s holds no text", path)
	}
	return docs, nil
}

func newExpertsPruneCmd() *cobra.Command {
	var ckpt, subsetFile, out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "prune --checkpoint FILE --subset SUBSET.json --out PRUNED.safetensors",
		Short: "Write a checkpoint that physically holds only the subset's experts",
		Long: `Drops the other experts' weights and router rows (the pruned model computes
what the full model computes with those experts masked) and writes a
self-describing checkpoint (its model config, the subset and the source's
sha256 in the safetensors metadata; no optimizer state). eval, experts select
(on the original) and train --init-checkpoint read it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ckpt == "" || subsetFile == "" || out == "" {
				return fmt.Errorf("--checkpoint, --subset and --out are required")
			}
			m, err := train.LoadModel(ckpt)
			if err != nil {
				return err
			}
			s, err := model.ReadSubset(subsetFile)
			if err != nil {
				return err
			}
			p, err := m.Prune(s)
			if err != nil {
				return err
			}
			n, err := p.Save(out)
			if err != nil {
				return err
			}
			before, after := m.Config().Params(), p.Config().Params()
			rep := map[string]any{"checkpoint": out, "sha256": p.SHA256, "bytes": n, "keep": s.Keep,
				"params_before": before.Total, "params_after": after.Total,
				"expert_params_before": before.Experts, "expert_params_after": after.Experts,
				"active_params": after.Active, "tensor_bytes_predicted": 4 * after.Total}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: keep %d of %d experts per layer; parameters %d → %d (experts %d → %d); %d bytes (tensors %d = 4 × parameters, plus header)\n",
				out, s.Keep, m.Config().NumExperts, before.Total, after.Total, before.Experts, after.Experts, n, 4*after.Total)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ckpt, "checkpoint", "", "checkpoint to prune")
	f.StringVar(&subsetFile, "subset", "", "subset file (emopipe experts select)")
	f.StringVar(&out, "out", "", "pruned checkpoint to write")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newExpertsCompareCmd() *cobra.Command {
	var emo, std, evalStore, calibStore, outFile string
	var o train.CompareOptions
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "compare --emo CKPT --standard CKPT --eval-store DIR --calib-store DIR",
		Short: "Per-domain loss increase of two models when keeping 50/25/12.5% of the experts (one-document calibration)",
		Long: `For each checkpoint, each fraction and each held-out domain: selects a subset
from ONE calibration document of the domain (the first one of at least
--min-tokens tokens in --calib-store, e.g. the training store), and measures
the domain's held-out loss increase over the full model. Controls: the subset
of another domain's document and a random subset. Prints a markdown table.`,
		Example: `  emopipe experts compare --emo s_emo/checkpoints/step-00000900.safetensors \
      --standard s_std/checkpoints/step-00000900.safetensors --eval-store h --calib-store s_emo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if emo == "" || std == "" || evalStore == "" || calibStore == "" {
				return fmt.Errorf("--emo, --standard, --eval-store and --calib-store are required")
			}
			if !quiet {
				o.Progress = cmd.ErrOrStderr()
			}
			res, err := train.Compare(cmd.Context(), []train.CompareModel{{Name: "EMO", Checkpoint: emo}, {Name: "standard", Checkpoint: std}},
				evalStore, calibStore, o)
			if err != nil {
				return err
			}
			if outFile != "" {
				if err := os.WriteFile(outFile, []byte(res.Markdown()), 0o644); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprint(cmd.OutOrStdout(), res.Markdown())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&emo, "emo", "", "EMO checkpoint")
	f.StringVar(&std, "standard", "", "standard-MoE checkpoint (same size and data)")
	f.StringVar(&evalStore, "eval-store", "", "held-out store")
	f.StringVar(&calibStore, "calib-store", "", "store the calibration documents come from (one per domain)")
	f.Float64SliceVar(&o.Fractions, "fractions", []float64{0.5, 0.25, 0.125}, "shares of the experts to keep")
	f.IntVar(&o.Sequences, "sequences", 0, "held-out sequences, evenly spaced (0: all)")
	f.IntVar(&o.Calibration.MinTokens, "min-tokens", 64, "calibration documents have at least this many tokens")
	f.IntVar(&o.Calibration.MaxTokens, "max-tokens", 1024, "truncate calibration documents to this many tokens")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of the random-subset control")
	f.StringVar(&outFile, "out", "", "also write the markdown table to this file")
	inferenceFlags(cmd, &o.Inference)
	f.BoolVar(&asJSON, "json", false, "print JSON instead of the table")
	f.BoolVar(&quiet, "quiet", false, "no progress lines")
	return cmd
}

func newExpertsModularityCmd() *cobra.Command {
	var ckpt, storeDir, out string
	var o train.ModularityOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "modularity --checkpoint FILE --store DIR --out DIR",
		Short: "Which experts each domain uses per layer (heat maps) and NMI between document domain and experts",
		Long: `Routes the store's sequences through the full model and writes, per layer,
modularity_layerNN.png (domains × routable experts: share of each domain's
routed assignments) and modularity.json: the usage matrices, the token NMI
(domain vs routed expert, over assignments) and the pool NMI (domain vs the
n experts with the largest summed router probability over each document).
emopipe report shows the same view.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ckpt == "" || storeDir == "" || out == "" {
				return fmt.Errorf("--checkpoint, --store and --out are required")
			}
			rep, files, err := train.WriteModularity(cmd.Context(), ckpt, storeDir, out, o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s router, routing %s, %d tokens, %d documents, pool n=%d\n", rep.Router, rep.Routing, rep.Tokens, rep.Documents, rep.PoolSize)
			for _, l := range rep.Layers {
				fmt.Fprintf(cmd.OutOrStdout(), "layer %d: token NMI %.4f, pool NMI %.4f\n", l.Layer, l.TokenNMI, l.PoolNMI)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", strings.Join(files, ", "))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ckpt, "checkpoint", "", "checkpoint file")
	f.StringVar(&storeDir, "store", "", "held-out store with domain labels")
	f.StringVar(&out, "out", "", "directory for the PNGs and modularity.json")
	f.IntVar(&o.Sequences, "sequences", 0, "sequences, evenly spaced (0: all)")
	f.IntVar(&o.PoolSize, "pool-size", 0, "experts per document pool in the pool view (default: the EMO eval pool size, else 2·k')")
	f.IntVar(&o.MinDocTokens, "min-doc-tokens", 16, "leave shorter document pieces out of the pool view")
	inferenceFlags(cmd, &o.Inference)
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
