package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/pipelines"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks that write the tables of docs/benchmarks.md"}
	cfg := pipelines.BenchIngestConfig{Kafka: ingest.DefaultKafkaConfig()}
	var brokers, tokName string
	ing := &cobra.Command{
		Use:   "ingest --brokers H:P FILES...",
		Short: "Ingest throughput against a real broker, as a ratio to tokenize-only throughput, and end-to-end lag",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			finishKafka(&cfg.Kafka, brokers)
			tok, err := loadTokenizer(tokName)
			if err != nil {
				return err
			}
			cfg.Tokenizer, cfg.Inputs = tok, args
			r, err := pipelines.BenchIngest(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), r.Markdown())
			return nil
		},
	}
	f := ing.Flags()
	f.StringVar(&brokers, "brokers", "", "a real Kafka broker")
	f.StringVar(&tokName, "tokenizer", "dolma2", "tokenizer")
	f.IntVar(&cfg.SeqLen, "seq-len", 2048, "sequence length")
	f.IntVar(&cfg.Partitions, "partitions", 4, "topic partitions")
	f.IntVar(&cfg.Rounds, "rounds", 3, "ingest runs, alternating with tokenize-only passes (best and median of each)")
	f.Float64Var(&cfg.LagRate, "lag-rate", 0, "records/s of the paced lag phase (default: half the measured rate)")
	f.IntVar(&cfg.Warmup, "warmup", 0, "untimed runs of the data path before the rounds (a just-started broker is still compiling its code)")
	f.IntVar(&cfg.LagSeconds, "lag-seconds", 20, "length of the paced lag phase")
	f.IntVar(&cfg.Copies, "copies", 1, "repeat the data this many times (fresh ids)")
	f.IntVar(&cfg.SplitBytes, "split-bytes", 0, "cut each text into documents of about this many bytes (short records: per-record costs)")
	f.StringVar(&cfg.Compression, "compression", "lz4", "the topic's compression: none, gzip, snappy, lz4 or zstd")
	f.StringVar(&cfg.Order, "order", "shuffled", "document order: shuffled (seeded, as a stream mixes domains) or files (as the inputs hold them)")
	f.IntSliceVar(&cfg.Workers, "workers", nil, "tokenizer goroutine counts, a column each (default: all cores, and all but one)")
	f.BoolVar(&cfg.TokenizerPriority, "tokenizer-priority", true, "as emopipe ingest's: with cores left over, the tokenizer on threads of its own, the rest of the process niced (both passes)")
	cmd.AddCommand(ing)
	return cmd
}
