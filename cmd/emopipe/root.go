package main

import (
	"encoding/json"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "emopipe",
		Short: "Pretrain EMO mixture-of-experts models from files and Kafka streams",
		Long: `emopipe packs documents into fixed-length sequences that keep document
boundaries (the routing metadata EMO needs), stores them in a Badger store,
and trains from it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newPackCmd(), newIngestCmd(), newProduceCmd(), newInspectCmd(), newExportCmd(), newTokenizerCmd(), newBenchCmd(), newTrainCmd(), newRunCmd(), newReportCmd(), newEvalCmd(), newExpertsCmd())
	return root
}

// progressOut is where progress lines go: stderr unless --quiet.
func progressOut(quiet bool) io.Writer {
	if quiet {
		return nil
	}
	return os.Stderr
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
