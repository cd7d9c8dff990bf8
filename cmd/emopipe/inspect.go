package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/emopipe/emopipe/pipelines"
)

func newInspectCmd() *cobra.Command {
	var opt pipelines.InspectOptions
	var tokName string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect STORE",
		Short: "Print a store's statistics and decode a sequence with its document boundaries",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tokName != "" {
				tok, err := loadTokenizer(tokName)
				if err != nil {
					return err
				}
				opt.Tokenizer = tok
			}
			r, err := pipelines.Inspect(args[0], opt)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), r)
			}
			r.WriteText(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.Int64Var(&opt.Sequence, "seq", 0, "sequence to decode (-1: none)")
	f.IntVar(&opt.Rejects, "rejects", 20, "rejected records to list")
	f.StringVar(&tokName, "tokenizer", "", "tokenizer for decoding (default: the bundled one the store names)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newExportCmd() *cobra.Command {
	var out string
	var perShard int
	var quiet bool
	cmd := &cobra.Command{
		Use:   "export STORE --shards DIR",
		Short: "Export a store's sequences as .npy shards (uint32 ids + document boundaries)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--shards is required")
			}
			files, err := pipelines.ExportShards(args[0], out, perShard, progressOut(quiet))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d files to %s\n", len(files), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "shards", "", "output directory")
	cmd.Flags().IntVar(&perShard, "per-shard", 4096, "sequences per shard")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress output")
	return cmd
}
