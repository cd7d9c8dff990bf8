package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/pipelines"
)

// serveMetrics serves /metrics on addr ("" serves nothing) until stop.
func serveMetrics(cmd *cobra.Command, m *pipelines.Metrics, addr string) (stop func() error, err error) {
	if addr == "" {
		return func() error { return nil }, nil
	}
	at, stop, err := m.Serve(addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "metrics on http://%s/metrics\n", at)
	return stop, nil
}

// kafkaFlags binds the connection and record-format flags shared by
// ingest, produce and run.
func kafkaFlags(f *pflag.FlagSet, kc *ingest.KafkaConfig, brokers *string) {
	f.StringVar(brokers, "brokers", "", "Kafka bootstrap brokers, host:port[,host:port]")
	f.StringVar(&kc.Topic, "topic", "", "topic")
	f.StringVar(&kc.SASL, "sasl", "", "SASL mechanism: plain, scram-sha-256, scram-sha-512")
	f.StringVar(&kc.User, "sasl-user", "", "SASL user (password from $EMOPIPE_KAFKA_PASSWORD)")
	f.BoolVar(&kc.TLS, "tls", false, "connect with TLS")
	f.StringVar(&kc.TLSCA, "tls-ca", "", "PEM file of CA certificates for TLS")
	f.BoolVar(&kc.TLSInsecure, "tls-insecure", false, "skip TLS certificate verification")
}

func finishKafka(kc *ingest.KafkaConfig, brokers string) {
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			kc.Brokers = append(kc.Brokers, b)
		}
	}
	kc.Password = os.Getenv("EMOPIPE_KAFKA_PASSWORD")
}

func newIngestCmd() *cobra.Command {
	cfg := pipelines.IngestConfig{Kafka: ingest.DefaultKafkaConfig(), Packing: packing.DefaultConfig()}
	var brokers, tokName, mode, utf8Policy, metricsAddr string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "ingest --brokers H:P --topic T --group G --store DIR",
		Short: "Consume a Kafka topic in a consumer group into a store, exactly once",
		Long: `Consumes documents from a topic as a member of a consumer group, tokenizes and
packs them, and commits sequences to the store. Each record is in the store once
or not at all, across crashes, restarts and rebalances: the group's committed
offset is the commit point, and the store's batches are staged until it lands.
Several ingesters in one group (one store each) split the partitions. Runs until
interrupted (or --idle-exit).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Store == "" {
				return fmt.Errorf("--store is required")
			}
			if cfg.Kafka.Group == "" {
				return fmt.Errorf("--group is required")
			}
			finishKafka(&cfg.Kafka, brokers)
			tok, err := loadTokenizer(tokName)
			if err != nil {
				return err
			}
			cfg.Tokenizer = tok
			cfg.Packing.Mode = packing.Mode(mode)
			cfg.InvalidUTF8 = pipelines.UTF8Policy(utf8Policy)
			cfg.Progress = progressOut(quiet)
			cfg.Metrics = pipelines.NewMetrics()
			stop, err := serveMetrics(cmd, cfg.Metrics, metricsAddr)
			if err != nil {
				return err
			}
			defer stop()
			return pipelines.Ingest(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	kafkaFlags(f, &cfg.Kafka, &brokers)
	f.StringVar(&cfg.Kafka.Group, "group", "", "consumer group")
	f.StringVar(&cfg.Store, "store", "", "store directory (created if missing)")
	f.StringVar(&cfg.Kafka.Format, "format", "json", "record format: json ({id,text,domain}) or text (value = text, key = id)")
	f.StringVar(&cfg.Kafka.Isolation, "isolation", ingest.ReadCommitted, "read_committed (records of aborted transactions left out) or read_uncommitted")
	f.StringVar(&cfg.Kafka.Start, "start", ingest.StartEarliest, "where a partition that neither the store nor the group has read starts: earliest (all its records) or latest (those written from now on)")
	f.StringVar(&cfg.Kafka.Fields.ID, "id-field", "id", "JSON field holding the document id")
	f.StringVar(&cfg.Kafka.Fields.Text, "text-field", "text", "JSON field holding the text")
	f.StringVar(&cfg.Kafka.Fields.Domain, "domain-field", "domain", "JSON field holding the domain")
	f.StringVar(&cfg.Kafka.Domain, "domain", "", "domain for records that carry none")
	f.IntVar(&cfg.Kafka.MaxDocBytes, "max-doc-bytes", cfg.Kafka.MaxDocBytes, "reject larger records")
	f.StringVar(&cfg.DLQTopic, "dlq-topic", "", "dead-letter topic for rejected records (default: the store's rejects)")
	f.StringVar(&tokName, "tokenizer", "dolma2", "bundled tokenizer name or tokenizer.json path")
	f.IntVar(&cfg.Packing.SeqLen, "seq-len", cfg.Packing.SeqLen, "tokens per sequence")
	f.IntVar(&cfg.TokenizerWorkers, "tokenizer-workers", 0, "goroutines tokenizing, all partitions together (default: one per core)")
	f.BoolVar(&cfg.TokenizerPriority, "tokenizer-priority", true, "with fewer tokenizer workers than cores, run them on threads of their own and the rest of the process at nice +10 (Linux), so that it uses the cores left to it")
	f.StringVar(&mode, "mode", "concat", "packing mode: concat or bestfit")
	f.StringVar(&utf8Policy, "invalid-utf8", "reject", "invalid UTF-8: reject or replace")
	f.DurationVar(&cfg.CommitInterval, "commit-interval", 0, "longest wait before read records are committed (default 1s)")
	f.DurationVar(&cfg.IdleExit, "idle-exit", 0, "exit after no record arrived for this long (0: run until interrupted); an error if a partition cannot be read then")
	f.DurationVar(&cfg.Kafka.SessionTimeout, "session-timeout", cfg.Kafka.SessionTimeout, "group session timeout: how soon a dead member's partitions move")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus /metrics on this address (e.g. 127.0.0.1:9100)")
	f.BoolVar(&quiet, "quiet", false, "no progress output")
	return cmd
}

func newProduceCmd() *cobra.Command {
	cfg := pipelines.ProduceConfig{Kafka: ingest.DefaultKafkaConfig()}
	var brokers string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "produce --brokers H:P --topic T FILES...",
		Short: "Load JSONL lines / text files into a topic, one record each (as they are)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			finishKafka(&cfg.Kafka, brokers)
			cfg.Inputs, cfg.Progress = args, progressOut(quiet)
			n, err := pipelines.Produce(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "produced %d records to %s\n", n, cfg.Kafka.Topic)
			return nil
		},
	}
	f := cmd.Flags()
	kafkaFlags(f, &cfg.Kafka, &brokers)
	f.StringVar(&cfg.Compression, "compression", "none", "none, gzip, snappy, lz4 or zstd")
	f.IntVar(&cfg.Partitions, "partitions", 0, "create the topic with this many partitions first")
	f.IntVar(&cfg.Limit, "limit", 0, "stop after this many records")
	f.BoolVar(&quiet, "quiet", false, "no progress output")
	return cmd
}
