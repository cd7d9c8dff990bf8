package ingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// KafkaConfig describes where documents come from and how records map to
// documents. Zero fields take DefaultKafkaConfig's values.
type KafkaConfig struct {
	Brokers []string `yaml:"brokers" json:"brokers"`
	Topic   string   `yaml:"topic" json:"topic"`
	Group   string   `yaml:"group" json:"group"`
	// Format is "json" (records are {id,text,domain} objects, Fields names
	// them) or "text" (the value is the text, the key the id; without a key
	// the id is topic/partition/offset).
	Format string `yaml:"format" json:"format"`
	Fields Fields `yaml:"fields" json:"fields"`
	Domain string `yaml:"domain" json:"domain"` // for records without one
	// MaxDocBytes: larger record values are rejected (oversize). 16 MiB.
	MaxDocBytes int `yaml:"max_doc_bytes" json:"max_doc_bytes"`
	// Repair turns invalid UTF-8 into valid text; nil rejects it.
	Repair func([]byte) []byte `yaml:"-" json:"-"`
	// Isolation is ReadCommitted (the default: records of aborted
	// transactions are left out, and an open transaction holds back the
	// records after it) or ReadUncommitted.
	Isolation string `yaml:"isolation" json:"isolation"`
	// Start is where a partition that neither the store nor the group has
	// read starts: StartEarliest (the default: all its records) or
	// StartLatest (the records written from then on), as Kafka consumers'
	// auto.offset.reset.
	Start string `yaml:"start" json:"start"`

	// Security for real clusters. SASL is "", "plain", "scram-sha-256" or
	// "scram-sha-512"; TLS with an optional CA file.
	SASL        string `yaml:"sasl" json:"sasl"`
	User        string `yaml:"user" json:"user"`
	Password    string `yaml:"-" json:"-"`
	TLS         bool   `yaml:"tls" json:"tls"`
	TLSCA       string `yaml:"tls_ca" json:"tls_ca"`
	TLSInsecure bool   `yaml:"tls_insecure" json:"tls_insecure"`

	// SessionTimeout: how long a dead member keeps its partitions (10 s;
	// a killed ingester's partitions move after this). Heartbeat 1 s.
	SessionTimeout    time.Duration `yaml:"session_timeout" json:"session_timeout"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval" json:"heartbeat_interval"`
	RebalanceTimeout  time.Duration `yaml:"rebalance_timeout" json:"rebalance_timeout"`
}

// Where a partition without a position starts (KafkaConfig.Start).
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"
)

// DefaultKafkaConfig returns the documented defaults.
func DefaultKafkaConfig() KafkaConfig {
	return KafkaConfig{Format: "json", Fields: DefaultFields(), MaxDocBytes: 16 << 20,
		SessionTimeout: 10 * time.Second, HeartbeatInterval: time.Second, RebalanceTimeout: 30 * time.Second}
}

// Validate reports the first contradictory or missing setting.
func (c *KafkaConfig) Validate() error {
	d := DefaultKafkaConfig()
	if c.Format == "" {
		c.Format = d.Format
	}
	if c.Fields == (Fields{}) {
		c.Fields = d.Fields
	}
	if c.MaxDocBytes <= 0 {
		c.MaxDocBytes = d.MaxDocBytes
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = d.SessionTimeout
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.RebalanceTimeout <= 0 {
		c.RebalanceTimeout = d.RebalanceTimeout
	}
	switch {
	case len(c.Brokers) == 0:
		return errors.New("kafka: no brokers (--brokers host:port,...)")
	case c.Topic == "":
		return errors.New("kafka: no topic (--topic)")
	case c.Format != "json" && c.Format != "text":
		return fmt.Errorf("kafka: format %q: want json or text", c.Format)
	case c.Isolation != "" && c.Isolation != ReadCommitted && c.Isolation != ReadUncommitted:
		return fmt.Errorf("kafka: isolation %q: want %s or %s", c.Isolation, ReadCommitted, ReadUncommitted)
	case c.Start != "" && c.Start != StartEarliest && c.Start != StartLatest:
		return fmt.Errorf("kafka: start %q: want %s or %s", c.Start, StartEarliest, StartLatest)
	}
	if _, err := c.mechanism(); err != nil {
		return err
	}
	if _, err := c.tlsConfig(); err != nil {
		return err
	}
	return nil
}

func (c *KafkaConfig) mechanism() (sasl.Mechanism, error) {
	switch strings.ToLower(c.SASL) {
	case "":
		return nil, nil
	case "plain":
		return plain.Mechanism{Username: c.User, Password: c.Password}, nil
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if strings.HasSuffix(strings.ToLower(c.SASL), "512") {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, c.User, c.Password)
		if err != nil {
			return nil, fmt.Errorf("kafka: sasl %s: %w", c.SASL, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("kafka: sasl mechanism %q: want plain, scram-sha-256 or scram-sha-512", c.SASL)
}

func (c *KafkaConfig) tlsConfig() (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	cfg := &tls.Config{InsecureSkipVerify: c.TLSInsecure, MinVersion: tls.VersionTLS12}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("kafka: tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka: tls ca %s: no certificates found", c.TLSCA)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// Dialer is the connection dialer with SASL/TLS applied.
func (c *KafkaConfig) Dialer() *kafka.Dialer {
	m, _ := c.mechanism()
	t, _ := c.tlsConfig()
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, SASLMechanism: m, TLS: t}
}

// Transport is the client transport with SASL/TLS applied.
func (c *KafkaConfig) Transport() *kafka.Transport {
	m, _ := c.mechanism()
	t, _ := c.tlsConfig()
	return &kafka.Transport{SASL: m, TLS: t, DialTimeout: 10 * time.Second}
}

// Diagnose explains a failed client call. kafka-go's client reports a
// broker it could not talk to (a TLS certificate it does not trust, a SASL
// login refused) as "Broker Not Available", which sends a user looking at
// the broker; dialing the first broker directly, with the same TLS and
// SASL settings, says what went wrong. err is returned as it is when that
// dial succeeds.
func (c *KafkaConfig) Diagnose(ctx context.Context, err error) error {
	if err == nil || len(c.Brokers) == 0 || ctx.Err() != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, derr := c.Dialer().DialContext(dctx, "tcp", c.Brokers[0])
	if derr != nil {
		return fmt.Errorf("%w (connecting to %s: %v)", err, c.Brokers[0], derr)
	}
	conn.Close()
	return err
}

func (c *KafkaConfig) client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(c.Brokers...), Transport: c.Transport(), Timeout: 15 * time.Second}
}

// Record is one Kafka record.
type Record struct {
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Time      time.Time
	Headers   map[string]string
}

// SourceName names a partition as a store source.
func (c *KafkaConfig) SourceName(partition int) string {
	return fmt.Sprintf("kafka:%s/%d", c.Topic, partition)
}

// Parse turns a record into a Document, or says why it cannot.
func (c *KafkaConfig) Parse(r Record) (Document, *Reject) {
	off, part := strconv.FormatInt(r.Offset, 10), strconv.Itoa(r.Partition)
	pos := "offset " + off
	src := "kafka:" + c.Topic + "/" + part // SourceName, without fmt on every record
	fallback := c.Topic + "/" + part + "/" + off
	if r.Value == nil { // a null value, not an empty one
		key := fallback
		if len(r.Key) > 0 {
			key = string(r.Key)
		}
		return Document{}, &Reject{Source: src, Position: pos, DocKey: key, Reason: ReasonTombstone,
			Detail: "null value: a deletion of its key in a compacted topic; documents already stored stay"}
	}
	if len(r.Value) > c.MaxDocBytes {
		return Document{}, &Reject{Source: src, Position: pos, DocKey: fallback, Reason: ReasonOversize,
			Detail: fmt.Sprintf("%d-byte record, more than max_doc_bytes %d", len(r.Value), c.MaxDocBytes), Bytes: len(r.Value)}
	}
	value := r.Value
	if c.Repair != nil {
		value = c.Repair(value)
	}
	var doc Document
	if c.Format == "text" {
		if len(r.Key) > 0 {
			fallback = string(r.Key)
		}
		doc = Document{ID: fallback, Text: value}
	} else {
		var rej *Reject
		doc, rej = c.Fields.ParseJSON(value, fallback)
		if rej != nil {
			rej.Source, rej.Position = src, pos
			if rej.DocKey == "" {
				rej.DocKey = fallback
			}
			return doc, rej
		}
	}
	if doc.Domain == "" {
		doc.Domain = c.Domain
	}
	doc.Source, doc.Position, doc.Time = src, pos, r.Time.UnixMilli()
	return doc, nil
}

// Group is this process's membership of the consumer group. It hands out
// generations: the set of partitions this member owns until the next
// rebalance.
type Group struct {
	cfg *KafkaConfig
	cg  *kafka.ConsumerGroup
	// client is shared by every offset commit and fetch of this member: a
	// client per call would dial and look up the coordinator each time.
	client *kafka.Client
}

// JoinGroup creates the membership (it joins on the first Next).
func JoinGroup(cfg *KafkaConfig) (*Group, error) {
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: cfg.Group, Brokers: cfg.Brokers, Dialer: cfg.Dialer(), Topics: []string{cfg.Topic},
		HeartbeatInterval: cfg.HeartbeatInterval, SessionTimeout: cfg.SessionTimeout,
		RebalanceTimeout: cfg.RebalanceTimeout, JoinGroupBackoff: time.Second,
		WatchPartitionChanges: true, PartitionWatchInterval: 5 * time.Second,
		StartOffset: kafka.FirstOffset, Timeout: 10 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("kafka: consumer group %q: %w", cfg.Group, err)
	}
	return &Group{cfg: cfg, cg: cg, client: cfg.client()}, nil
}

// Assignment is one partition of a generation with the group's committed
// offset (negative when the group never committed one).
type Assignment struct {
	Partition int
	Committed int64
}

// Generation is one period of stable partition ownership.
type Generation struct {
	ID         int32
	MemberID   string
	Partitions []Assignment
	gen        *kafka.Generation
	group      *Group
}

// Next blocks until this member is part of a new generation.
func (g *Group) Next(ctx context.Context) (*Generation, error) {
	gen, err := g.cg.Next(ctx)
	if err != nil {
		return nil, err
	}
	out := &Generation{ID: gen.ID, MemberID: gen.MemberID, gen: gen, group: g}
	for _, a := range gen.Assignments[g.cfg.Topic] {
		out.Partitions = append(out.Partitions, Assignment{Partition: a.ID, Committed: a.Offset})
	}
	return out, nil
}

// Close leaves the group at once (partitions move without waiting for the
// session timeout). Idempotent.
func (g *Group) Close() error {
	if g.cg == nil {
		return nil
	}
	err := g.cg.Close()
	g.cg = nil
	return err
}

// Start runs fn until the generation ends (ctx is then cancelled); the
// group does not rejoin until every fn has returned, so revoked partitions
// can be flushed and committed first.
func (gen *Generation) Start(fn func(ctx context.Context)) { gen.gen.Start(fn) }

// Commit commits a partition's next offset in this generation, with
// metadata that says who committed it. It fails if the generation is over
// (the partition may already belong to another member); the caller must
// then find out with CommittedOffset whether the commit landed.
func (gen *Generation) Commit(ctx context.Context, partition int, next int64, metadata string) error {
	cfg := gen.group.cfg
	resp, err := gen.group.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: cfg.Group, GenerationID: int(gen.ID), MemberID: gen.MemberID,
		Topics: map[string][]kafka.OffsetCommit{cfg.Topic: {{Partition: partition, Offset: next, Metadata: metadata}}},
	})
	if err != nil {
		return fmt.Errorf("kafka: commit %s/%d: %w", cfg.Topic, partition, err)
	}
	for _, p := range resp.Topics[cfg.Topic] {
		if p.Error != nil {
			return fmt.Errorf("kafka: commit %s/%d: %w", cfg.Topic, partition, p.Error)
		}
	}
	return nil
}

// CommittedOffset asks the group coordinator for a partition's committed
// offset (-1 if none) and the metadata committed with it. It is how a
// staged batch is resolved after a crash or a commit of unknown outcome.
func (g *Group) CommittedOffset(ctx context.Context, partition int) (int64, string, error) {
	c := g.cfg
	resp, err := g.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: c.Group, Topics: map[string][]int{c.Topic: {partition}}})
	if err != nil {
		return 0, "", fmt.Errorf("kafka: offset fetch %s/%d: %w", c.Topic, partition, err)
	}
	if resp.Error != nil {
		return 0, "", fmt.Errorf("kafka: offset fetch %s/%d: %w", c.Topic, partition, resp.Error)
	}
	for _, p := range resp.Topics[c.Topic] {
		if p.Partition == partition {
			if p.Error != nil {
				return 0, "", fmt.Errorf("kafka: offset fetch %s/%d: %w", c.Topic, partition, p.Error)
			}
			return p.CommittedOffset, p.Metadata, nil
		}
	}
	return -1, "", nil
}

// PartitionReader fetches one partition from an explicit offset (the
// store's, not the group's), one fetch response ahead of Fetch.
type PartitionReader struct {
	f         *fetcher
	partition int
	err       error    // a fetch error met while records were being returned
	pending   []Record // received from f, not yet returned by Fetch
	// pendingThrough is the offset after everything the response of
	// pending held, and through ReadThrough's offset.
	pendingThrough, through int64
}

// NewPartitionReader starts reading partition at offset (or
// kafka.FirstOffset, kafka.LastOffset), one fetch response of at most
// fetchBytes (0: 16 MiB; a larger record still comes whole) ahead of
// Fetch, at the configured isolation level.
func (c *KafkaConfig) NewPartitionReader(partition int, offset int64, fetchBytes int) (*PartitionReader, error) {
	if fetchBytes <= 0 {
		fetchBytes = 16 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fetcher{
		transport: c.Transport(), renew: c.Transport, addr: kafka.TCP(c.Brokers...), topic: c.Topic, partition: partition,
		isolation: int8(kafka.ReadCommitted), maxBytes: fetchBytes,
		out: make(chan fetched), cancel: cancel, done: make(chan struct{}),
	}
	if c.Isolation == ReadUncommitted {
		f.isolation = int8(kafka.ReadUncommitted)
	}
	f.offsets = func(ctx context.Context) (int64, int64, error) { return c.Offsets(ctx, partition) }
	if offset < 0 { // kafka.FirstOffset or kafka.LastOffset
		first, last, err := c.Offsets(ctx, partition)
		if err != nil {
			cancel()
			return nil, err
		}
		if offset == kafka.LastOffset {
			offset = last
		} else {
			offset = first
		}
	}
	f.pos.Store(offset)
	f.end.Store(offset)
	f.hwm.Store(offset)
	go f.run(ctx)
	return &PartitionReader{f: f, partition: partition, through: offset, pendingThrough: offset}, nil
}

// Fetch returns up to maxRecs records, and stops after the record that
// brings their values to maxBytes (0: no bound), waiting at most wait for
// the first. After the first it takes only what has arrived, so a busy
// partition is handed on in large batches and an idle one costs no
// latency. An empty result with a nil error means the partition is idle.
func (p *PartitionReader) Fetch(ctx context.Context, maxRecs, maxBytes int, wait time.Duration) ([]Record, error) {
	if err := p.err; err != nil {
		p.err = nil
		return nil, err
	}
	if len(p.pending) == 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case r := <-p.f.out:
			if r.err != nil {
				return nil, r.err
			}
			p.pending, p.pendingThrough = r.recs, r.through
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var out []Record
	size := 0
	for len(out) < maxRecs && (maxBytes <= 0 || size < maxBytes) {
		if len(p.pending) == 0 {
			select {
			case r := <-p.f.out:
				if r.err != nil {
					p.err = r.err // said at the next call
					return out, nil
				}
				p.pending, p.pendingThrough = r.recs, r.through
			default:
				return out, nil
			}
		}
		n := 0
		for n < len(p.pending) && len(out)+n < maxRecs && (maxBytes <= 0 || size < maxBytes) {
			size += len(p.pending[n].Value)
			n++
		}
		out = append(out, p.pending[:n]...)
		p.pending = p.pending[n:]
		if n > 0 {
			p.through = max(p.through, out[len(out)-1].Offset+1)
		}
		if len(p.pending) == 0 {
			p.through = max(p.through, p.pendingThrough)
		}
	}
	return out, nil
}

// ReadThrough is the offset after everything Fetch has returned or read
// past: transaction markers, aborted transactions and offsets that
// compaction emptied hold no record for the caller, so a consumer that
// has handled every record Fetch returned is at this offset, not at the
// one after its last record. (A jump to the log start, past records that
// retention deleted, is not read past: the records after it come first.)
func (p *PartitionReader) ReadThrough() int64 { return p.through }

// Lag is how many offsets the partition holds past the reader (to its
// last stable offset at read_committed).
func (p *PartitionReader) Lag() int64 { return max(p.f.end.Load()-p.f.pos.Load(), 0) }

// HeldBack is how many offsets past the partition's last stable offset
// the reader may not read yet at read_committed: the records after a
// transaction that is still open (0 at read_uncommitted).
func (p *PartitionReader) HeldBack() int64 { return max(p.f.hwm.Load()-p.f.end.Load(), 0) }

// Failing returns the error of the reader's last fetch, or nil if it
// worked: a partition that cannot be read looks idle otherwise, since
// Fetch reports a run of failures only now and then.
func (p *PartitionReader) Failing() error {
	f, _ := p.f.failing.Load().(failure)
	return f.err
}

// Close stops the reader. Idempotent.
func (p *PartitionReader) Close() error {
	if p.f == nil {
		return nil
	}
	p.f.cancel()
	<-p.f.done
	p.f.transport.CloseIdleConnections()
	p.f = nil
	return nil
}

// Offsets is the partition's log start offset (records below it were
// deleted by retention, or never existed) and end offset.
func (c *KafkaConfig) Offsets(ctx context.Context, partition int) (int64, int64, error) {
	resp, err := c.client().ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{c.Topic: {kafka.FirstOffsetOf(partition), kafka.LastOffsetOf(partition)}}})
	if err != nil {
		return 0, 0, fmt.Errorf("kafka: list offsets %s/%d: %w", c.Topic, partition, err)
	}
	for _, p := range resp.Topics[c.Topic] {
		if p.Partition == partition {
			if p.Error != nil {
				return 0, 0, fmt.Errorf("kafka: list offsets %s/%d: %w", c.Topic, partition, p.Error)
			}
			return p.FirstOffset, p.LastOffset, nil
		}
	}
	return 0, 0, fmt.Errorf("kafka: list offsets %s/%d: no answer for the partition", c.Topic, partition)
}

// ErrNoTopic is Partitions' error for a topic the broker does not have.
var ErrNoTopic = errors.New("no such topic")

// Partitions lists the topic's partitions.
func (c *KafkaConfig) Partitions(ctx context.Context) ([]int, error) {
	resp, err := c.client().Metadata(ctx, &kafka.MetadataRequest{Topics: []string{c.Topic}})
	if err != nil {
		return nil, fmt.Errorf("kafka: metadata %s: %w", c.Topic, c.Diagnose(ctx, err))
	}
	for _, t := range resp.Topics {
		if t.Name == c.Topic {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return nil, fmt.Errorf("kafka: topic %s: %w", c.Topic, ErrNoTopic)
			}
			if t.Error != nil {
				return nil, fmt.Errorf("kafka: topic %s: %w", c.Topic, t.Error)
			}
			var ps []int
			for _, p := range t.Partitions {
				ps = append(ps, p.ID)
			}
			return ps, nil
		}
	}
	return nil, fmt.Errorf("kafka: topic %s: %w", c.Topic, ErrNoTopic)
}

// CreateTopic creates a topic (no error if it exists).
func (c *KafkaConfig) CreateTopic(ctx context.Context, topic string, partitions int) error {
	resp, err := c.client().CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}}})
	if err != nil {
		return fmt.Errorf("kafka: create topic %s: %w", topic, c.Diagnose(ctx, err))
	}
	if e := resp.Errors[topic]; e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
		return fmt.Errorf("kafka: create topic %s: %w", topic, e)
	}
	return nil
}

// DeleteTopic deletes a topic (no error if it does not exist).
func (c *KafkaConfig) DeleteTopic(ctx context.Context, topic string) error {
	resp, err := c.client().DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("kafka: delete topic %s: %w", topic, c.Diagnose(ctx, err))
	}
	if e := resp.Errors[topic]; e != nil && !errors.Is(e, kafka.UnknownTopicOrPartition) {
		return fmt.Errorf("kafka: delete topic %s: %w", topic, e)
	}
	return nil
}

// Writer is a producer to one topic, used for the dead-letter topic and by
// `emopipe produce`.
func (c *KafkaConfig) Writer(topic string, compression string) (*kafka.Writer, error) {
	w := &kafka.Writer{Addr: kafka.TCP(c.Brokers...), Topic: topic, Transport: c.Transport(),
		Balancer: &kafka.Hash{}, BatchTimeout: 5 * time.Millisecond, BatchSize: 1000, BatchBytes: int64(c.batchBytes(topic)),
		RequiredAcks: kafka.RequireAll, MaxAttempts: 20, WriteBackoffMin: 100 * time.Millisecond, WriteBackoffMax: 2 * time.Second}
	switch compression {
	case "", "none":
	case "gzip":
		w.Compression = kafka.Gzip
	case "snappy":
		w.Compression = kafka.Snappy
	case "lz4":
		w.Compression = kafka.Lz4
	case "zstd":
		w.Compression = kafka.Zstd
	default:
		return nil, fmt.Errorf("kafka: compression %q: want none, gzip, snappy, lz4 or zstd", compression)
	}
	return w, nil
}

// batchBytes is the writer's batch limit for topic: the topic's
// max.message.bytes (the broker's default, 1 MiB, if it cannot be read)
// less 64 KiB. The broker checks that limit against a whole record batch,
// while kafka-go counts only keys, values and headers, so a batch filled
// to the limit is refused; the margin covers the per-record framing of a
// full batch (1,000 records). A single record over it is refused by
// kafka-go before sending, with the record's size.
func (c *KafkaConfig) batchBytes(topic string) int {
	limit := 1 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.client().DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"max.message.bytes"}}}})
	if err == nil {
		for _, r := range resp.Resources {
			for _, e := range r.ConfigEntries {
				if v, err := strconv.Atoi(e.ConfigValue); err == nil && r.Error == nil && e.ConfigName == "max.message.bytes" && v > 0 {
					limit = v
				}
			}
		}
	}
	return max(limit-64<<10, 64<<10)
}

// Message builds a producer message.
func Message(key, value []byte, headers map[string]string) kafka.Message {
	m := kafka.Message{Key: key, Value: value}
	for k, v := range headers {
		m.Headers = append(m.Headers, kafka.Header{Key: k, Value: []byte(v)})
	}
	return m
}

// DLQ is a dead-letter topic: rejected records are written there, with
// the reason and source position as headers, instead of to the store.
// Delivery is at-least-once: a record rejected just before a crash may be
// dead-lettered again when its partition is re-read.
type DLQ struct {
	w *kafka.Writer
}

// NewDLQ writes to topic on the same cluster, creating it if needed.
func (c *KafkaConfig) NewDLQ(ctx context.Context, topic string) (*DLQ, error) {
	if err := c.CreateTopic(ctx, topic, 1); err != nil {
		return nil, err
	}
	w, err := c.Writer(topic, "")
	if err != nil {
		return nil, err
	}
	w.MaxAttempts = 3
	return &DLQ{w: w}, nil
}

// DeadLetter is one rejected record with its original bytes.
type DeadLetter struct {
	Reject Reject
	Key    []byte
	Value  []byte
}

// Send writes the records and waits until the brokers have them.
func (d *DLQ) Send(ctx context.Context, letters []DeadLetter) error {
	if len(letters) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(letters))
	for i, l := range letters {
		headers := map[string]string{
			"emopipe-reason": l.Reject.Reason, "emopipe-detail": l.Reject.Detail,
			"emopipe-source": l.Reject.Source, "emopipe-position": l.Reject.Position, "emopipe-doc": l.Reject.DocKey,
		}
		key, value := fitLetter(l.Key, l.Value, headers, int(d.w.BatchBytes))
		msgs[i] = Message(key, value, headers)
	}
	return writeRetrying(ctx, d.w, msgs)
}

// fitLetter cuts a dead letter's value (and, if it must, its key) so that
// the letter fits a writer limited to limit bytes, and says so in the
// header emopipe-truncated. The record that the source topic took can be
// larger than the dead-letter topic takes (its own max.message.bytes, or
// an oversize reject); refused, the letter stopped the ingester at that
// record, on every restart. The headers name where the whole record is.
func fitLetter(key, value []byte, headers map[string]string, limit int) ([]byte, []byte) {
	const note = "emopipe-truncated"
	limit -= 1 << 10 // kafka-go also counts the record's framing (lengths, timestamp)
	size := func() int {
		n := len(key) + len(value)
		for k, v := range headers {
			n += len(k) + len(v)
		}
		return n
	}
	if size() <= limit {
		return key, value
	}
	headers[note] = fmt.Sprintf("key %d bytes, value %d bytes, cut to fit the dead-letter topic's max.message.bytes", len(key), len(value))
	over := size() - limit
	cut := min(over, len(value))
	value = value[:len(value)-cut]
	if over -= cut; over > 0 {
		key = key[:max(len(key)-over, 0)]
	}
	return key, value
}

// Close flushes and closes. Idempotent.
func (d *DLQ) Close() error {
	if d == nil || d.w == nil {
		return nil
	}
	err := d.w.Close()
	d.w = nil
	return err
}

// Producer writes records to a topic, retrying only the records that
// failed (a partial failure during a broker outage must not duplicate the
// rest).
type Producer struct {
	w *kafka.Writer
}

// NewProducer writes to topic with the given compression.
func (c *KafkaConfig) NewProducer(topic, compression string) (*Producer, error) {
	w, err := c.Writer(topic, compression)
	if err != nil {
		return nil, err
	}
	w.MaxAttempts = 3
	return &Producer{w: w}, nil
}

// Write sends values (and keys, which may be nil) and returns once all are
// acknowledged by every in-sync replica, or ctx ends.
func (p *Producer) Write(ctx context.Context, keys, values [][]byte) error {
	msgs := make([]kafka.Message, len(values))
	for i := range values {
		msgs[i] = kafka.Message{Value: values[i]}
		if keys != nil {
			msgs[i].Key = keys[i]
		}
	}
	return writeRetrying(ctx, p.w, msgs)
}

// writeRetrying retries until every message is acknowledged, resending
// only the ones that failed, or until ctx ends. An error that no retry can
// cure (a record over the broker's size limit, no permission, a bad topic)
// is returned at once, naming the record: retrying it would hang the
// writer forever.
func writeRetrying(ctx context.Context, w *kafka.Writer, msgs []kafka.Message) error {
	backoff := 200 * time.Millisecond
	for len(msgs) > 0 {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		var werrs kafka.WriteErrors
		if errors.As(err, &werrs) && len(werrs) == len(msgs) {
			var retry []kafka.Message
			failed := 0
			for i, e := range werrs {
				if e == nil {
					continue
				}
				failed++
				if permanentWriteError(e) {
					return fmt.Errorf("kafka: write to %s: a record of %d bytes (%d of %d in its batch): %w%s",
						w.Topic, len(msgs[i].Key)+len(msgs[i].Value), i+1, len(msgs), e, sizeHint(e))
				}
				retry = append(retry, msgs[i])
			}
			msgs = retry
			// WriteErrors prints every element: one line is enough.
			err = fmt.Errorf("%d of %d records failed, e.g. %w", failed, len(werrs), firstError(werrs))
		} else if tl := (kafka.MessageTooLargeError{}); errors.As(err, &tl) {
			return fmt.Errorf("kafka: write to %s: a record of %d bytes is over this writer's limit of %d (the topic's max.message.bytes less 64 KiB of framing): %w%s",
				w.Topic, len(tl.Message.Key)+len(tl.Message.Value), w.BatchBytes, err, sizeHint(err))
		} else if permanentWriteError(err) {
			return fmt.Errorf("kafka: write to %s: %w%s", w.Topic, err, sizeHint(err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: write to %s: %w (last error: %v)", w.Topic, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// permanentWriteError reports the produce errors that retrying cannot fix.
// Anything else (a broker down or restarting, a leader moving, a timeout)
// is retried.
func permanentWriteError(err error) bool {
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		return true
	}
	for _, e := range []kafka.Error{kafka.MessageSizeTooLarge, kafka.RecordListTooLarge, kafka.InvalidTopic,
		kafka.TopicAuthorizationFailed, kafka.UnsupportedCompressionType, kafka.InvalidRecord, kafka.PolicyViolation} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func sizeHint(err error) string {
	if errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) {
		return " (raise the topic's max.message.bytes, or split the document)"
	}
	return ""
}

func firstError(errs kafka.WriteErrors) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Close flushes and closes. Idempotent.
func (p *Producer) Close() error {
	if p == nil || p.w == nil {
		return nil
	}
	err := p.w.Close()
	p.w = nil
	return err
}
