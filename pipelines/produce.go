package pipelines

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/emopipe/emopipe/ingest"
)

// ProduceConfig configures Produce.
type ProduceConfig struct {
	Kafka ingest.KafkaConfig
	// Inputs are files and directories; JSONL lines and text files are sent
	// as they are, one record each.
	Inputs      []string
	Compression string // none, gzip, snappy, lz4, zstd
	// Partitions creates the topic with this many partitions if > 0.
	Partitions int
	// Limit stops after this many records (0: all).
	Limit    int
	Progress io.Writer
}

// Produce loads files into a topic and returns the number of records.
func Produce(ctx context.Context, cfg ProduceConfig) (int, error) {
	if len(cfg.Kafka.Brokers) == 0 || cfg.Kafka.Topic == "" {
		return 0, fmt.Errorf("produce: --brokers and --topic are required")
	}
	files, err := ingest.ExpandPaths(cfg.Inputs)
	if err != nil {
		return 0, err
	}
	if cfg.Partitions > 0 {
		if err := cfg.Kafka.CreateTopic(ctx, cfg.Kafka.Topic, cfg.Partitions); err != nil {
			return 0, err
		}
	} else if _, err := cfg.Kafka.Partitions(ctx); errors.Is(err, ingest.ErrNoTopic) {
		// Otherwise the writer would retry "unknown topic" until killed
		// (it is a transient error while a new topic propagates).
		return 0, fmt.Errorf("produce: %w (--partitions N creates it)", err)
	}
	p, err := cfg.Kafka.NewProducer(cfg.Kafka.Topic, cfg.Compression)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	prog := NewProgress(cfg.Progress)
	var batch [][]byte
	size, n := 0, 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := p.Write(ctx, nil, batch); err != nil {
			return cfg.Kafka.Diagnose(ctx, err)
		}
		n += len(batch)
		batch, size = nil, 0
		prog.Update(func() string { return fmt.Sprintf("produce %s: %d records", cfg.Kafka.Topic, n) })
		return nil
	}
	errLimit := fmt.Errorf("limit")
	err = ingest.ReadRaw(files, cfg.Kafka.MaxDocBytes, func(_ string, v []byte) error {
		if cfg.Limit > 0 && n+len(batch) >= cfg.Limit {
			return errLimit
		}
		batch = append(batch, v)
		size += len(v)
		if len(batch) >= 1000 || size >= 8<<20 {
			return flush()
		}
		return nil
	})
	if err != nil && err != errLimit {
		return n, err
	}
	if err := flush(); err != nil {
		return n, err
	}
	prog.Done(fmt.Sprintf("produced %d records to %s", n, cfg.Kafka.Topic))
	return n, nil
}
