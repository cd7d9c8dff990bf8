package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/spf13/cobra"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/pipelines"
	"github.com/emopipe/emopipe/train"
)

// evalReport is what `emopipe eval --json` prints.
type evalReport struct {
	Checkpoint string       `json:"checkpoint"`
	Router     string       `json:"router"`
	NumExperts int          `json:"num_experts"`
	Routing    string       `json:"routing"`
	Sequences  int          `json:"sequences"`
	Full       evalNumbers  `json:"full"`
	SubsetFile string       `json:"subset_file,omitempty"`
	Subset     *evalNumbers `json:"subset,omitempty"`
}

type evalNumbers struct {
	Keep       int                    `json:"keep"`
	Loss       float64                `json:"loss"`
	Perplexity float64                `json:"perplexity"`
	Tokens     int                    `json:"tokens"`
	Domains    map[string]domainEvals `json:"domains"`
}

type domainEvals struct {
	Loss       float64 `json:"loss"`
	Perplexity float64 `json:"perplexity"`
	Tokens     int     `json:"tokens"`
}

func numbers(r train.EvalResult, keep int) evalNumbers {
	n := evalNumbers{Keep: keep, Loss: r.Loss, Perplexity: math.Exp(r.Loss), Tokens: r.Tokens, Domains: map[string]domainEvals{}}
	for d, v := range r.Domains {
		n.Domains[d] = domainEvals{Loss: v.Loss, Perplexity: math.Exp(v.Loss), Tokens: v.Tokens}
	}
	return n
}

func newEvalCmd() *cobra.Command {
	var ckpt, storeDir, subsetFile, tokName string
	var files []string
	var opts train.InferenceOptions
	var seqs int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "eval --checkpoint FILE (--store DIR | --files FILE...)",
		Short: "Held-out loss and perplexity per domain, for the full model and an expert subset",
		Long: `Evaluates a checkpoint (a trainer checkpoint or a pruned one) on held-out
documents: a packed store (same tokenizer and seq_len as the training store),
or files (JSONL {"id","text","domain"} or text), which are packed with the
model's tokenizer into a temporary store. Domains are the documents' labels.
With --subset, the experts outside the subset are masked (emo-method.md §7);
the table shows both. Routing follows the reference's inference (no EMO pool)
unless --pool.`,
		Example: `  emopipe eval --checkpoint s/checkpoints/step-00000900.safetensors --store h
  emopipe eval --checkpoint ckpt.safetensors --files testdata/corpus/heldout.jsonl.gz --subset go.json --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ckpt == "" {
				return fmt.Errorf("--checkpoint is required")
			}
			if (storeDir == "") == (len(files) == 0) {
				return fmt.Errorf("give one of --store DIR or --files FILE")
			}
			m, err := train.LoadModel(ckpt)
			if err != nil {
				return err
			}
			var sub *model.Subset
			if subsetFile != "" {
				s, err := model.ReadSubset(subsetFile)
				if err != nil {
					return err
				}
				sub = &s
			}
			if len(files) > 0 {
				tmp, err := os.MkdirTemp("", "emopipe-eval-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				if err := packFiles(cmd, m.Info, tokName, files, tmp); err != nil {
					return err
				}
				storeDir = tmp
			}
			st, err := store.Open(storeDir, nil, store.Options{ReadOnly: true})
			if err != nil {
				return err
			}
			defer st.Close()
			in, err := train.NewInference(m, opts)
			if err != nil {
				return err
			}
			set, err := in.NewEvalSet(st, seqs)
			if err != nil {
				return err
			}
			full, err := in.Eval(cmd.Context(), set, nil)
			if err != nil {
				return err
			}
			cfg := m.Config()
			rep := evalReport{Checkpoint: ckpt, Router: cfg.Router, NumExperts: cfg.NumExperts, Routing: in.Routing(),
				Sequences: set.Sequences, Full: numbers(full, cfg.NumExperts)}
			if sub != nil {
				r, err := in.Eval(cmd.Context(), set, sub)
				if err != nil {
					return err
				}
				n := numbers(r, sub.Keep)
				rep.Subset, rep.SubsetFile = &n, subsetFile
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			writeEvalTable(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ckpt, "checkpoint", "", "checkpoint file (safetensors from train or experts prune)")
	f.StringVar(&storeDir, "store", "", "held-out store (packed with the training store's tokenizer and seq_len)")
	f.StringSliceVar(&files, "files", nil, "held-out files or directories to pack and evaluate instead of --store")
	f.StringVar(&tokName, "tokenizer", "", "tokenizer for --files (default: the checkpoint's)")
	f.StringVar(&subsetFile, "subset", "", "expert subset file (emopipe experts select) to evaluate besides the full model")
	f.IntVar(&seqs, "sequences", 0, "evaluate at most this many sequences, evenly spaced (0: all)")
	inferenceFlags(cmd, &opts)
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// inferenceFlags adds --backend, --batch and --pool.
func inferenceFlags(cmd *cobra.Command, o *train.InferenceOptions) {
	f := cmd.Flags()
	f.StringVar(&o.Backend, "backend", "go", "compute backend: go (CPU) or xla:/abs/path/to/pjrt_plugin.so")
	f.IntVar(&o.Batch, "batch", 8, "rows per forward pass")
	f.BoolVar(&o.Pool, "pool", false, "EMO: route with the eval pool (as the trainer's eval) instead of no pool (the reference's inference)")
}

func writeEvalTable(w io.Writer, r evalReport) {
	fmt.Fprintf(w, "%s: %s router, %d experts; routing: %s; %d sequences\n\n", r.Checkpoint, r.Router, r.NumExperts, r.Routing, r.Sequences)
	doms := make([]string, 0, len(r.Full.Domains))
	for d := range r.Full.Domains {
		doms = append(doms, d)
	}
	sort.Strings(doms)
	if r.Subset == nil {
		fmt.Fprintln(w, "| domain | tokens | loss | perplexity |\n|---|---|---|---|")
		for _, d := range doms {
			v := r.Full.Domains[d]
			fmt.Fprintf(w, "| %s | %d | %.4f | %.2f |\n", d, v.Tokens, v.Loss, v.Perplexity)
		}
		fmt.Fprintf(w, "| **all** | %d | %.4f | %.2f |\n", r.Full.Tokens, r.Full.Loss, r.Full.Perplexity)
		return
	}
	fmt.Fprintf(w, "subset %s: keep %d of %d experts per layer\n\n", r.SubsetFile, r.Subset.Keep, r.NumExperts)
	fmt.Fprintln(w, "| domain | tokens | full loss | full ppl | subset loss | subset ppl | Δ loss |\n|---|---|---|---|---|---|---|")
	line := func(name string, f, s domainEvals) {
		fmt.Fprintf(w, "| %s | %d | %.4f | %.2f | %.4f | %.2f | %+.4f |\n", name, f.Tokens, f.Loss, f.Perplexity, s.Loss, s.Perplexity, s.Loss-f.Loss)
	}
	for _, d := range doms {
		line(d, r.Full.Domains[d], r.Subset.Domains[d])
	}
	line("**all**", domainEvals{Loss: r.Full.Loss, Perplexity: r.Full.Perplexity, Tokens: r.Full.Tokens},
		domainEvals{Loss: r.Subset.Loss, Perplexity: r.Subset.Perplexity, Tokens: r.Subset.Tokens})
}

// packFiles packs files into a new store in dir the way the checkpoint's
// training store was packed (tokenizer, seq_len, EOS), reference-style
// contiguous chunks.
func packFiles(cmd *cobra.Command, info train.CheckpointInfo, tokName string, files []string, dir string) error {
	if tokName == "" {
		tokName = info.Tokenizer
	}
	if tokName == "" || info.StoreSeqLen == 0 {
		return fmt.Errorf("the checkpoint does not name its tokenizer and seq_len; pack the files with emopipe pack and pass --store")
	}
	tok, err := loadTokenizer(tokName)
	if err != nil {
		return err
	}
	pc := packing.DefaultConfig()
	pc.SeqLen, pc.Mode = info.StoreSeqLen, packing.Concat
	_, err = pipelines.Pack(cmd.Context(), pipelines.PackConfig{Store: dir, Inputs: files, Files: ingest.DefaultFileConfig(),
		Packing: pc, Tokenizer: tok})
	return err
}
