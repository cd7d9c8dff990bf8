package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	bundled "github.com/emopipe/emopipe"
	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/pipelines"
	"github.com/emopipe/emopipe/train"
)

// Defaults of the embedded run: a model and data small enough to train
// visibly in a few minutes on two cores.
const (
	embeddedTokenizer = "dolma2-8k"
	embeddedSeqLen    = 129
	embeddedSteps     = 150
	// A short backlog keeps the trained data fresh (seconds, not minutes,
	// behind the stream) on a CPU trainer.
	embeddedBacklog = 256
	// A live stream at about the pace a 2-core CPU trainer consumes it.
	embeddedRate = 0.7
)

func newRunCmd() *cobra.Command {
	cfg := pipelines.RunConfig{
		Ingest: pipelines.IngestConfig{Kafka: ingest.DefaultKafkaConfig(), Packing: packing.DefaultConfig()},
		Train:  train.DefaultConfig(),
	}
	cfg.Train.Steps = 0
	var brokers, tokName, mode, metricsAddr, configFile, preset, router string
	var quiet, asJSON bool
	cmd := &cobra.Command{
		Use:   "run [--brokers H:P --topic T --group G] --store DIR",
		Short: "Continuous pretraining: ingest a Kafka stream and train on it in one process",
		Long: `Ingests documents from a Kafka topic into the store (exactly once, as emopipe
ingest) and trains on them as they land (as emopipe train, reading the store as a
stream: each sequence once, in commit order). The trainer waits when it has caught
up; ingestion pauses when the trainer is --max-backlog sequences behind. Ctrl-C
checkpoints the trainer and commits what was read; run the same command again to
resume both halves from the store (kill -9 loses only the steps since the last
checkpoint).

With no --brokers, an embedded Kafka-protocol broker on loopback streams the bundled
real corpus (7 domains), and a tiny EMO model trains on the CPU for 150 steps: the
whole path on a fresh machine. At the end the report folder (DIR/report) holds the
loss curve, expert load and expert × domain plots and a summary (emopipe report
redraws it at any time).`,
		Example: `  emopipe run --store /tmp/emo-run
  emopipe run --brokers 127.0.0.1:9092 --topic docs --group emo --store /data/emo \
      --tokenizer dolma2 --seq-len 4097 --config small.yaml --steps 100000 --metrics-addr 127.0.0.1:9100`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Ingest.Store == "" {
				return fmt.Errorf("--store is required")
			}
			finishKafka(&cfg.Ingest.Kafka, brokers)
			embedded := len(cfg.Ingest.Kafka.Brokers) == 0
			if embedded {
				if tokName == "" {
					tokName = embeddedTokenizer
				}
				if cfg.Ingest.Packing.SeqLen == 0 {
					cfg.Ingest.Packing.SeqLen = embeddedSeqLen
				}
				if cfg.Train.Steps == 0 {
					cfg.Train.Steps = embeddedSteps
				}
				if !cmd.Flags().Changed("max-backlog") {
					cfg.MaxBacklog = embeddedBacklog
				}
				if !cmd.Flags().Changed("embedded-rate") {
					cfg.Embedded.Rate = embeddedRate
				}
				cfg.Ingest.FetchMax = 8 // long documents: few per fetch keeps the backlog near its bound
				cfg.Embedded.Corpus = bundled.SampleCorpus
				cfg.HeldoutCorpus = bundled.HeldoutCorpus
			} else if cfg.Ingest.Kafka.Topic == "" {
				return fmt.Errorf("--topic is required with --brokers")
			}
			if tokName == "" {
				tokName = "dolma2"
			}
			if cfg.Ingest.Packing.SeqLen == 0 {
				cfg.Ingest.Packing.SeqLen = packing.DefaultConfig().SeqLen
			}
			if cfg.Train.Steps == 0 {
				return fmt.Errorf("--steps is required with --brokers (the length of the run and its cosine schedule)")
			}
			tok, err := loadTokenizer(tokName)
			if err != nil {
				return err
			}
			cfg.Ingest.Tokenizer = tok
			cfg.Ingest.Packing.Mode = packing.Mode(mode)
			m, err := modelConfig(configFile, preset)
			if err != nil {
				return err
			}
			if router != "" {
				m.Router = strings.ToLower(router)
			}
			cfg.Train.Model = m
			cfg.Progress = progressOut(quiet)
			cfg.Metrics = pipelines.NewMetrics()
			stop, err := serveMetrics(cmd, cfg.Metrics, metricsAddr)
			if err != nil {
				return err
			}
			defer stop()
			res, err := pipelines.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			tr := res.Train
			out := fmt.Sprintf("run %s: trained to step %d", cfg.Ingest.Store, tr.Steps)
			if tr.Resumed {
				out += fmt.Sprintf(" (resumed at %d)", tr.FromStep)
			}
			if tr.Last.Step > 0 {
				out += fmt.Sprintf(", loss %.4f", tr.Last.Loss)
			}
			if tr.Eval != nil {
				out += fmt.Sprintf(", held-out loss %.4f at step %d", tr.Eval.Loss, tr.Eval.Step)
			}
			switch {
			case tr.Interrupted:
				out += " (interrupted and checkpointed; run the same command to resume)"
			case tr.CaughtUp:
				out += " (the stream ended and every sequence it delivered is trained on)"
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			if res.Report != nil {
				fmt.Fprintln(cmd.OutOrStdout(), reportLines(res.Report, res.Files))
			}
			return nil
		},
	}
	f := cmd.Flags()
	kafkaFlags(f, &cfg.Ingest.Kafka, &brokers)
	f.StringVar(&cfg.Ingest.Kafka.Group, "group", "", "consumer group (default with the embedded broker: emopipe-run)")
	f.StringVar(&cfg.Ingest.Store, "store", "", "store directory: sequences, offsets, trainer state and checkpoints (created if missing)")
	f.StringVar(&cfg.Ingest.Kafka.Format, "format", "json", "record format: json ({id,text,domain}) or text (value = text, key = id)")
	f.StringVar(&cfg.Ingest.Kafka.Isolation, "isolation", ingest.ReadCommitted, "read_committed (records of aborted transactions left out) or read_uncommitted")
	f.StringVar(&cfg.Ingest.Kafka.Start, "start", ingest.StartEarliest, "where a partition that neither the store nor the group has read starts: earliest (all its records) or latest (those written from now on)")
	f.StringVar(&cfg.Ingest.Kafka.Fields.ID, "id-field", "id", "JSON field holding the document id")
	f.StringVar(&cfg.Ingest.Kafka.Fields.Text, "text-field", "text", "JSON field holding the text")
	f.StringVar(&cfg.Ingest.Kafka.Fields.Domain, "domain-field", "domain", "JSON field holding the domain")
	f.StringVar(&cfg.Ingest.DLQTopic, "dlq-topic", "", "dead-letter topic for rejected records (default: the store's rejects)")
	f.StringVar(&tokName, "tokenizer", "", "bundled tokenizer or tokenizer.json (default dolma2; embedded: dolma2-8k)")
	f.IntVar(&cfg.Ingest.Packing.SeqLen, "seq-len", 0, "tokens per stored sequence = model sequence + 1 (default 2048; embedded: 129)")
	f.StringVar(&mode, "mode", "concat", "packing mode: concat or bestfit")
	f.IntVar(&cfg.Ingest.TokenizerWorkers, "tokenizer-workers", 0, "goroutines tokenizing, leaving the other cores to the trainer (default: one per core)")
	f.DurationVar(&cfg.Ingest.Kafka.SessionTimeout, "session-timeout", cfg.Ingest.Kafka.SessionTimeout, "group session timeout: how soon a dead member's partitions move")
	f.DurationVar(&cfg.Ingest.IdleExit, "idle-exit", 0, "end once no record arrived for this long and the trainer has caught up (0: run to --steps)")
	trainFlags(f, &cfg.Train, &configFile, &preset, &router)
	f.Lookup("steps").Usage = "train until this many optimizer steps (required with --brokers; embedded default 150)"
	f.Lookup("steps").DefValue = "0"
	f.IntVar(&cfg.MaxBacklog, "max-backlog", 4096, "pause ingestion while this many stored sequences wait for the trainer (embedded: 256)")
	f.StringVar(&cfg.ReportDir, "report", "", `report folder written at the end (default DIR/report; "-": none)`)
	f.IntVar(&cfg.Embedded.Partitions, "embedded-partitions", 2, "partitions of the embedded broker's topic")
	f.Float64Var(&cfg.Embedded.Rate, "embedded-rate", 0, "documents per second the embedded producer streams (0: all at once; default 0.7)")
	f.Uint64Var(&cfg.Embedded.Seed, "embedded-seed", 1, "order in which the embedded producer streams the corpus")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus /metrics (ingest and train) on this address")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&quiet, "quiet", false, "no progress output")
	return cmd
}

func newReportCmd() *cobra.Command {
	var rc pipelines.ReportConfig
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "report --store DIR",
		Short: "Write the report folder of a training store (plots and summary)",
		Long: `Reads a store that emopipe run or emopipe train has trained from (stopped:
the store is one process's at a time) and writes DIR/report: loss.png, expert_load.png, the expert × domain
view, summary.json and summary.md (tokens seen, steps, throughput, input stall,
freshness lag).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--store is required")
			}
			st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
			if err != nil {
				return err
			}
			defer st.Close()
			sum, files, err := pipelines.Report(cmd.Context(), st, rc)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sum)
			}
			fmt.Fprintln(cmd.OutOrStdout(), reportLines(&sum, files))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "store", "", "the training store")
	f.StringVar(&rc.Dir, "out", "", "report folder (default DIR/report)")
	f.StringVar(&rc.EvalStore, "eval-store", "", "held-out store with domain labels for the expert × domain view (default DIR/heldout if present)")
	f.StringVar(&rc.Backend, "backend", "go", "compute backend for the expert × domain view")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}

// reportLines is the few lines a terminal user reads of a report.
func reportLines(s *pipelines.Summary, files []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "report: %d docs streamed into %d sequences; %d steps trained on %d sequences (%d tokens), loss %.3f → %.3f",
		s.Documents, s.Sequences, s.Steps, s.SequencesTrained, s.TokensTrained, s.FirstLoss, s.LastLoss)
	if s.Eval != nil {
		fmt.Fprintf(&b, ", held-out %.3f", s.Eval.Loss)
	}
	fmt.Fprintf(&b, "\n        %.0f tokens/s, input stall %.1f%%", s.Perf.TokensPerSec, 100*s.Perf.InputStall)
	if s.Fresh != nil {
		fmt.Fprintf(&b, ", freshness lag mean %.1fs max %.1fs", s.Fresh.MeanSeconds, s.Fresh.MaxSeconds)
	}
	for _, f := range files {
		fmt.Fprintf(&b, "\n        %s", f)
	}
	return b.String()
}
