package pipelines

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing/store"
)

// EmbeddedConfig is the stream `emopipe run` makes for itself when given
// no brokers: an in-process Kafka-protocol broker on loopback (franz-go's
// kfake) and a producer that writes a corpus into it, so the whole path —
// Kafka records, consumer group, exactly-once store, trainer — runs on a
// fresh machine with nothing installed.
type EmbeddedConfig struct {
	// Corpus is gzip'd JSON lines ({"id","text","domain"}); each line is
	// one record, keyed by its id.
	Corpus []byte
	// Topic (default "emopipe-embedded") and Partitions (default 2).
	Topic      string
	Partitions int
	// Seed fixes the order the documents are produced in (a seeded
	// shuffle, so the stream mixes domains as a live one would).
	Seed uint64
	// Rate is documents per second (0: as fast as the broker takes them).
	Rate float64
}

// Embedded is a running embedded broker and its producer.
type Embedded struct {
	cluster  *kfake.Cluster
	topic    string
	docs     int
	done     chan struct{}
	mu       sync.Mutex
	produced int
	err      error
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// StartEmbedded starts the broker and, in the background, the producer.
// The broker keeps nothing on disk: a restarted run gets a new broker, the
// same records at the same offsets (the order is a pure function of the
// corpus and the seed), and resumes each partition from the offset its
// store holds.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Topic == "" {
		cfg.Topic = "emopipe-embedded"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 2
	}
	keys, values, err := corpusRecords(cfg.Corpus)
	if err != nil {
		return nil, err
	}
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(cfg.Partitions), cfg.Topic))
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	e := &Embedded{cluster: cl, topic: cfg.Topic, docs: len(values), done: make(chan struct{})}
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers, kc.Topic = cl.ListenAddrs(), cfg.Topic
	prod, err := kc.NewProducer(cfg.Topic, "none")
	if err != nil {
		cl.Close()
		return nil, err
	}
	order := store.Permutation(cfg.Seed, 0, uint64(len(values)))
	pctx, cancel := context.WithCancel(ctx)
	e.cancel = cancel
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer close(e.done)
		defer prod.Close()
		e.setErr(e.produce(pctx, prod, order, keys, values, cfg.Rate))
	}()
	return e, nil
}

// produce writes the records in order, in chunks of at most a tenth of a
// second's worth when rate-limited.
func (e *Embedded) produce(ctx context.Context, p *ingest.Producer, order []uint32, keys, values [][]byte, rate float64) error {
	// Small writes: a broker refuses record batches over its message size
	// limit (1 MiB by default), and a partition's share of the whole corpus
	// is more than that.
	chunk := 64
	if rate > 0 {
		chunk = min(chunk, max(1, int(rate/10)))
	}
	start := time.Now()
	for i := 0; i < len(order); i += chunk {
		j := min(i+chunk, len(order))
		ks, vs := make([][]byte, 0, j-i), make([][]byte, 0, j-i)
		for _, k := range order[i:j] {
			ks, vs = append(ks, keys[k]), append(vs, values[k])
		}
		if err := p.Write(ctx, ks, vs); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		e.mu.Lock()
		e.produced = j
		e.mu.Unlock()
		if rate > 0 {
			due := start.Add(time.Duration(float64(j) / rate * float64(time.Second)))
			sleepCtx(ctx, time.Until(due))
		}
	}
	return nil
}

func (e *Embedded) setErr(err error) {
	e.mu.Lock()
	e.err = err
	e.mu.Unlock()
}

// Brokers are the broker's loopback addresses.
func (e *Embedded) Brokers() []string { return e.cluster.ListenAddrs() }

// Topic is the topic the corpus goes to.
func (e *Embedded) Topic() string { return e.topic }

// Docs is the number of documents in the corpus.
func (e *Embedded) Docs() int { return e.docs }

// Produced is the number of documents produced so far, and the producer's
// error if it failed.
func (e *Embedded) Produced() (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.produced, e.err
}

// Done is closed when the producer has finished (or failed, or was
// stopped).
func (e *Embedded) Done() <-chan struct{} { return e.done }

// Close stops the producer and the broker.
func (e *Embedded) Close() {
	e.cancel()
	e.wg.Wait()
	e.cluster.Close()
}

// corpusRecords splits a gzip'd JSONL corpus into records keyed by id.
func corpusRecords(gz []byte) (keys, values [][]byte, err error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, nil, fmt.Errorf("embedded corpus: %w", err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		v := bytes.TrimSpace(sc.Bytes())
		if len(v) == 0 {
			continue
		}
		var doc struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(v, &doc); err != nil || doc.ID == "" {
			return nil, nil, fmt.Errorf("embedded corpus: line %d: not a JSON document with an id", line)
		}
		keys = append(keys, []byte(doc.ID))
		values = append(values, bytes.Clone(v))
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("embedded corpus: %w", err)
	}
	if len(values) == 0 {
		return nil, nil, fmt.Errorf("embedded corpus: no documents")
	}
	return keys, values, nil
}
