package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/pipelines"
)

func newPackCmd() *cobra.Command {
	cfg := pipelines.PackConfig{Files: ingest.DefaultFileConfig(), Packing: packing.DefaultConfig()}
	var tokName, mode, utf8Policy, shards, format string
	var perShard int
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "pack FILES_OR_DIRS... --store DIR",
		Short: "Tokenize and pack documents from files into a store",
		Long: `Reads JSONL (one {"id","text","domain"} record per line; .jsonl/.ndjson/.json),
plain-text files (one document per file) and directories of them, optionally
.gz or .zst compressed; tokenizes them, packs them into fixed-length
sequences that record document boundaries, and commits them to the store.
Bad records are rejected, counted and recorded (see emopipe inspect).
Interrupted, it resumes where it stopped when run again with the same inputs.`,
		Example: `  emopipe pack testdata/corpus/sample.jsonl.gz --store /tmp/emo-store
  emopipe pack corpus/ --store s --mode bestfit --seq-len 1024 --shards s/npy`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Store == "" {
				return fmt.Errorf("--store is required")
			}
			if format != "npy" {
				return fmt.Errorf("--format %q: only npy is supported", format)
			}
			tok, err := loadTokenizer(tokName)
			if err != nil {
				return err
			}
			cfg.Inputs, cfg.Tokenizer = args, tok
			cfg.Packing.Mode = packing.Mode(strings.ToLower(mode))
			cfg.InvalidUTF8 = pipelines.UTF8Policy(utf8Policy)
			cfg.Progress = progressOut(quiet)
			res, err := pipelines.Pack(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if res.AlreadyRan {
				fmt.Fprintf(cmd.ErrOrStderr(), "these inputs were already packed into %s (source %s); nothing to do\n", cfg.Store, res.Source)
			}
			if shards != "" {
				if _, err := pipelines.ExportShards(cfg.Store, shards, perShard, progressOut(quiet)); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "packed %d documents (%d rejected) into %s: %d sequences, %.2f%% padding; see emopipe inspect %s\n",
				res.Docs, res.Rejects, cfg.Store, res.Stats.Sequences, paddingPct(res), cfg.Store)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Store, "store", "", "store directory (created if missing)")
	f.StringVar(&tokName, "tokenizer", "dolma2", "bundled tokenizer name (dolma2, gpt2) or path to a tokenizer.json[.gz]")
	f.IntVar(&cfg.Packing.SeqLen, "seq-len", cfg.Packing.SeqLen, "tokens per sequence")
	f.StringVar(&mode, "mode", string(cfg.Packing.Mode), "packing mode: concat (reference: contiguous chunks) or bestfit (fewer split documents, some padding)")
	f.IntVar(&cfg.Packing.MaxOpen, "max-open", cfg.Packing.MaxOpen, "bestfit: partly filled sequences kept open (1-255)")
	f.StringVar(&cfg.Files.Fields.ID, "id-field", "id", "JSONL field holding the document id")
	f.StringVar(&cfg.Files.Fields.Text, "text-field", "text", "JSONL field holding the text")
	f.StringVar(&cfg.Files.Fields.Domain, "domain-field", "domain", "JSONL field holding the domain label")
	f.StringVar(&cfg.Files.Domain, "domain", "", "domain label for documents that carry none")
	f.IntVar(&cfg.Files.MaxDocBytes, "max-doc-bytes", cfg.Files.MaxDocBytes, "reject documents larger than this many bytes")
	f.StringVar(&utf8Policy, "invalid-utf8", "reject", "invalid UTF-8: reject the document, or replace bad bytes with U+FFFD")
	f.IntVar(&cfg.CommitSequences, "commit-every", 1024, "commit after this many sequences")
	f.StringVar(&shards, "shards", "", "also export the store as .npy shards into this directory")
	f.StringVar(&format, "format", "npy", "shard format (npy)")
	f.IntVar(&perShard, "per-shard", 4096, "sequences per shard")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&quiet, "quiet", false, "no progress output")
	return cmd
}

func paddingPct(r pipelines.PackResult) float64 {
	return pct(r.Stats.Padding, r.Stats.Padding+r.Stats.Tokens)
}

func pct(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
