package pipelines

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/internal/kafkatest"
	"github.com/emopipe/emopipe/internal/storecheck"
	"github.com/emopipe/emopipe/packing"
)

func ingestCfg(t *testing.T, brokers []string, topic, dir string) IngestConfig {
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers, kc.Topic, kc.Group = brokers, topic, "g-"+topic
	kc.SessionTimeout = 6 * time.Second
	pc := packing.DefaultConfig()
	pc.SeqLen = 256
	return IngestConfig{Store: dir, Kafka: kc, Packing: pc, Tokenizer: dolma2(t), IdleExit: 3 * time.Second,
		CommitInterval: 200 * time.Millisecond, Metrics: NewMetrics(), Log: testLog{t}}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func produceFiles(t *testing.T, brokers []string, topic string, partitions int, files ...string) int {
	t.Helper()
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers, kc.Topic = brokers, topic
	n, err := Produce(context.Background(), ProduceConfig{Kafka: kc, Inputs: files, Partitions: partitions, Compression: "lz4"})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func checkSampleIngested(t *testing.T, dir string) *storecheck.Contents {
	t.Helper()
	c, err := storecheck.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	tk := dolma2(t)
	eos, _ := tk.EOS()
	for _, d := range readSample(t) {
		if want := append(tk.Encode(d.Text), eos); !reflect.DeepEqual(c.Tokens[d.ID], want) {
			t.Fatalf("document %s: %d tokens stored, want %d", d.ID, len(c.Tokens[d.ID]), len(want))
		}
		if c.Records[d.ID].Domain != d.Domain {
			t.Fatalf("document %s: domain %q, want %q", d.ID, c.Records[d.ID].Domain, d.Domain)
		}
	}
	return c
}

// Unit tier: an in-process Kafka-protocol broker (kfake). Fast, but kfake
// accepts requests Apache Kafka 4 removed, so the real-broker tests below
// and in cmd/emopipe are the ones that count.
func TestIngestFromFakeBroker(t *testing.T) {
	brokers := kafkatest.Fake(t, 3, "docs")
	produceFiles(t, brokers, "docs", 0, sampleCorpus, "../testdata/bad/bad.jsonl")
	dir := t.TempDir()
	cfg := ingestCfg(t, brokers, "docs", dir)
	if err := Ingest(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	c := checkSampleIngested(t, dir)
	if len(c.Records) != len(readSample(t))+3 { // + good-1..3 of bad.jsonl
		t.Fatalf("%d documents, want sample + 3", len(c.Records))
	}
	if got := cfg.Metrics.Sum("emopipe_ingest_rejects_total"); got != 8 {
		t.Fatalf("%v rejects counted, want 8", got)
	}
}

// A new store in an old group starts each partition where the group has
// committed (the records before are in the store of the member that
// committed them), and says so: a wiped store, restarted with its group,
// otherwise looked like loss. With a new group it reads everything.
func TestNewStoreInAnOldGroupSaysWhereItStarts(t *testing.T) {
	brokers := kafkatest.Fake(t, 3, "docs")
	produceFiles(t, brokers, "docs", 0, sampleCorpus)
	first := ingestCfg(t, brokers, "docs", t.TempDir())
	if err := Ingest(context.Background(), first); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	again := ingestCfg(t, brokers, "docs", dir) // the same group
	again.IdleExit = time.Second
	said := &countingLog{t: t, word: "where group \"g-docs\" has committed; this store has none of it"}
	again.Log = said
	if err := Ingest(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	if n := said.n.Load(); n != 3 {
		t.Fatalf("%d of 3 partitions said where they start", n)
	}
	if c, err := storecheck.ReadDir(dir); err != nil || len(c.Records) != 0 {
		t.Fatalf("the new store in the old group: %v documents, error %v; want none (the first store has them)", len(c.Records), err)
	}

	fresh := ingestCfg(t, brokers, "docs", dir)
	fresh.Kafka.Group = "g-docs-2"
	if err := Ingest(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	checkSampleIngested(t, dir)
}

// Every malformed record of the bad set lands in the dead-letter topic
// with its reason; none reaches the store.
func TestIngestDeadLetterTopic(t *testing.T) {
	brokers := kafkatest.Shared(t)
	topic := "bad-" + time.Now().Format("150405.000")
	produceFiles(t, brokers, topic, 2, "../testdata/bad/bad.jsonl", "../testdata/bad/good.jsonl.gz")
	dir := t.TempDir()
	cfg := ingestCfg(t, brokers, topic, dir)
	cfg.DLQTopic = topic + "-dlq"
	if err := Ingest(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	dlq := ingest.DefaultKafkaConfig()
	dlq.Brokers, dlq.Topic = brokers, cfg.DLQTopic
	parts, err := dlq.Partitions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, p := range parts {
		r, err := dlq.NewPartitionReader(p, -2, 0)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := r.Fetch(context.Background(), 100, 0, 3*time.Second)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			got[rec.Headers["emopipe-reason"]]++
			if rec.Headers["emopipe-source"] == "" || !strings.HasPrefix(rec.Headers["emopipe-position"], "offset ") || len(rec.Value) == 0 {
				t.Errorf("dead letter without source, position or original value: %+v", rec.Headers)
			}
		}
	}
	want := map[string]int{"malformed_json": 1, "missing_text": 3, "empty_text": 1, "invalid_utf8": 1, "duplicate_id": 1, "id_too_long": 1}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("dead letters by reason %v, want %v", got, want)
	}
	c, err := storecheck.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Records) != 23 {
		t.Fatalf("%d documents stored, want 23 (3 good lines + 20 gz)", len(c.Records))
	}
}

// A source topic may take records larger than the dead-letter topic
// does (its own max.message.bytes): such a record, malformed, was refused
// by the dead-letter topic and stopped the ingester at that record, on
// every restart. Now its letter is cut to fit, and says so.
func TestIngestDeadLetterLargerThanItsTopicTakes(t *testing.T) {
	brokers := kafkatest.Shared(t)
	topic := "wide-bad-" + time.Now().Format("150405.000")
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := client.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "4000000"}},
	}}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		t.Fatal(err)
	}
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers, kc.Topic = brokers, topic
	p, err := kc.NewProducer(topic, "none")
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(`{"id":"big-bad","text":"`), bytes.Repeat([]byte("x"), 2_000_000)...) // never closed
	values := [][]byte{[]byte(`{"id":"a","text":"before"}`), bad, []byte(`{"id":"b","text":"after"}`)}
	if err := p.Write(context.Background(), nil, values); err != nil {
		t.Fatal(err)
	}
	p.Close()

	dir := t.TempDir()
	cfg := ingestCfg(t, brokers, topic, dir)
	cfg.DLQTopic = topic + "-dlq" // created with the broker's default limit, 1 MB
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Ingest(ctx, cfg); err != nil {
		t.Fatalf("ingest stopped at a dead letter too large for its topic: %v", err)
	}
	dlq := ingest.DefaultKafkaConfig()
	dlq.Brokers, dlq.Topic = brokers, cfg.DLQTopic
	r, err := dlq.NewPartitionReader(0, -2, 0)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := r.Fetch(ctx, 10, 0, 5*time.Second)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Headers["emopipe-reason"] != ingest.ReasonMalformedJSON ||
		!strings.Contains(recs[0].Headers["emopipe-truncated"], "value 2000024 bytes") ||
		!bytes.HasPrefix(bad, recs[0].Value) || len(recs[0].Value) < 900_000 {
		t.Fatalf("dead letters: %d; want one, malformed_json, its value cut to a prefix of about 1 MB and marked so", len(recs))
	}
	c, err := storecheck.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Records) != 2 {
		t.Fatalf("%d documents stored, want the 2 around the bad record", len(c.Records))
	}
}

// The SASL options against a real broker's SASL_PLAINTEXT listener: the
// sample goes in over SCRAM-SHA-512 and is ingested over SCRAM-SHA-256 and
// over PLAIN (a group and a store each); a wrong password is refused.
func TestIngestOverSASL(t *testing.T) {
	if !kafkatest.Available() {
		t.Skip("needs a real broker: EMOPIPE_KAFKA=1")
	}
	const user, password = "emo", "s3cret-pw"
	in := kafkatest.StartSASL(t, user, password)
	sasl := func(mechanism, pw string) ingest.KafkaConfig {
		kc := ingest.DefaultKafkaConfig()
		kc.Brokers, kc.Topic = []string{in.SASLAddr()}, "secure"
		kc.SASL, kc.User, kc.Password = mechanism, user, pw
		return kc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// kafka-go's client reports a failed authentication as an unreachable
	// broker; the error says what the broker said (KafkaConfig.Diagnose).
	// The same call with the right password succeeds.
	for _, mechanism := range []string{"scram-sha-256", "scram-sha-512", "plain"} {
		bad := sasl(mechanism, "wrong")
		if err := bad.CreateTopic(ctx, "t-"+mechanism, 1); err == nil {
			t.Fatalf("%s with a wrong password: topic created", mechanism)
		} else if !strings.Contains(err.Error(), "Authentication Failed") {
			t.Errorf("%s with a wrong password: %v, want the broker's authentication error", mechanism, err)
		}
		good := sasl(mechanism, password)
		if err := good.CreateTopic(ctx, "t-"+mechanism, 1); err != nil {
			t.Fatalf("%s: %v", mechanism, err)
		}
	}
	if _, err := Produce(ctx, ProduceConfig{Kafka: sasl("scram-sha-512", password), Inputs: []string{sampleCorpus}, Partitions: 2, Compression: "lz4"}); err != nil {
		t.Fatal(err)
	}
	for _, mechanism := range []string{"scram-sha-256", "plain"} {
		ingestSampleWith(t, ctx, sasl(mechanism, password), "g-"+mechanism)
	}
}

// ingestSampleWith ingests topic kc.Topic, which holds the sample corpus,
// with kc's connection settings in group into a new store, and checks that
// the store holds the sample.
func ingestSampleWith(t *testing.T, ctx context.Context, kc ingest.KafkaConfig, group string) {
	t.Helper()
	dir := t.TempDir()
	cfg := ingestCfg(t, nil, kc.Topic, dir)
	cfg.Kafka = kc
	cfg.Kafka.Group, cfg.Kafka.SessionTimeout = group, 6*time.Second
	if err := Ingest(ctx, cfg); err != nil {
		t.Fatalf("ingest (group %s): %v", group, err)
	}
	checkSampleIngested(t, dir)
}

// The TLS options against a real broker's SSL listener (certificate for
// 127.0.0.1 signed by a CA that kafka.sh made): the sample goes in and is
// ingested over TLS trusting that CA. Without the CA the connection is
// refused as unverified; --tls-insecure connects; a plaintext client on
// the TLS port gets no answer.
func TestIngestOverTLS(t *testing.T) {
	if !kafkatest.Available() {
		t.Skip("needs a real broker: EMOPIPE_KAFKA=1")
	}
	in := kafkatest.StartTLS(t)
	conf := func(tls bool, ca string, insecure bool) ingest.KafkaConfig {
		kc := ingest.DefaultKafkaConfig()
		kc.Brokers, kc.Topic = []string{in.TLSAddr()}, "secure"
		kc.TLS, kc.TLSCA, kc.TLSInsecure = tls, ca, insecure
		return kc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 15*time.Second) }

	c1, cancel1 := short()
	defer cancel1()
	noCA := conf(true, "", false) // the system roots do not know the test CA
	if err := noCA.CreateTopic(c1, "t-unverified", 1); err == nil {
		t.Fatal("TLS without the CA: topic created, want a certificate error")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("TLS without the CA: %v, want a certificate error", err)
	} else {
		t.Logf("TLS without the CA: %v", err)
	}
	c2, cancel2 := short()
	defer cancel2()
	plain := conf(false, "", false)
	if err := plain.CreateTopic(c2, "t-plain", 1); err == nil {
		t.Fatal("plaintext client on the TLS port: topic created")
	}
	insecure := conf(true, "", true)
	if err := insecure.CreateTopic(ctx, "t-insecure", 1); err != nil {
		t.Fatalf("--tls-insecure: %v", err)
	}

	if _, err := Produce(ctx, ProduceConfig{Kafka: conf(true, in.CAFile(), false), Inputs: []string{sampleCorpus}, Partitions: 2, Compression: "lz4"}); err != nil {
		t.Fatal(err)
	}
	ingestSampleWith(t, ctx, conf(true, in.CAFile(), false), "g-tls")
}

// The ingester's form of TestPackCommitsTinyDocumentsInBatchesBadgerHolds:
// with commits far apart (by sequences and by time), 120,000 one-word
// records of one partition would all wait for one commit, more than one
// Badger transaction holds.
func TestIngestCommitsTinyDocumentsInBatchesBadgerHolds(t *testing.T) {
	const n = 120_000
	brokers := kafkatest.Fake(t, 1, "tiny")
	produceFiles(t, brokers, "tiny", 0, tinyDocs(t, n))
	dir := t.TempDir()
	cfg := ingestCfg(t, brokers, "tiny", dir)
	cfg.CommitSequences, cfg.CommitInterval = 1_000_000, time.Hour
	if err := Ingest(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	openHolding(t, dir, n)
}

// countingLog is testLog that also counts the lines holding a word.
type countingLog struct {
	t    *testing.T
	word string
	n    atomic.Int64
}

func (l *countingLog) Write(p []byte) (int, error) {
	if strings.Contains(string(p), l.word) {
		l.n.Add(1)
	}
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// On a cluster that does not create topics on demand, joining the group of
// a missing topic gave generations without partitions, hundreds a second,
// and no word of why (the ingester never went idle either). Now: a topic
// that never comes is an error naming it once --idle-exit has passed; one
// created after the ingester started is waited for and read; one deleted
// while it is read stops the ingester with an error.
func TestIngestWaitsForItsTopicAndReportsAMissingOne(t *testing.T) {
	if !kafkatest.Available() {
		t.Skip("needs a real broker: EMOPIPE_KAFKA=1")
	}
	brokers := kafkatest.StartWith(t, "auto.create.topics.enable=false").Brokers()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cfg := ingestCfg(t, brokers, "never", t.TempDir())
	cfg.IdleExit = 2 * time.Second
	gens := &countingLog{t: t, word: "generation"}
	cfg.Log = gens
	err := Ingest(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "topic never does not exist") {
		t.Fatalf("ingest of a topic that does not exist: %v", err)
	}
	if gens.n.Load() != 0 {
		t.Fatalf("%d generations joined for a topic that does not exist", gens.n.Load())
	}

	produced := make(chan error, 1)
	go func() {
		time.Sleep(2 * time.Second)
		kc := ingest.DefaultKafkaConfig()
		kc.Brokers, kc.Topic = brokers, "later"
		_, err := Produce(ctx, ProduceConfig{Kafka: kc, Inputs: []string{sampleCorpus}, Partitions: 2, Compression: "lz4"})
		produced <- err
	}()
	dir := t.TempDir()
	cfg = ingestCfg(t, brokers, "later", dir)
	cfg.IdleExit = 6 * time.Second
	if err := Ingest(ctx, cfg); err != nil {
		t.Fatalf("ingest of a topic created after it started: %v", err)
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	checkSampleIngested(t, dir)

	produceFiles(t, brokers, "gone", 2, sampleCorpus)
	cfg = ingestCfg(t, brokers, "gone", t.TempDir())
	cfg.IdleExit = 0 // until the topic goes
	done := make(chan error, 1)
	go func() { done <- Ingest(ctx, cfg) }()
	for cfg.Metrics.Sum("emopipe_ingest_documents_total") < float64(len(readSample(t))) {
		select {
		case err := <-done:
			t.Fatalf("ingest ended before reading the topic: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	cl := &kafka.Client{Addr: kafka.TCP(brokers...)}
	if _, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{"gone"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "topic gone no longer exists") {
			t.Fatalf("ingest after its topic was deleted: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("ingest still running a minute after its topic was deleted")
	}
}

// Every partition a member owns fills its read-ahead at once while the
// tokenizer is busy with the others: with kafka-go's Reader 64 records
// ahead in each, 32 partitions of 780 KB records held 450 MB of record
// values. A member owning many partitions shares the bounds among them
// (shareReadAhead), and a reader holds one response ahead. Here each of 32
// partitions stalls after its first fetch (the throttle), its reader
// reads ahead as far as it may, and the heap that the stall added is
// measured.
func TestManyPartitionsShareTheReadAhead(t *testing.T) {
	const parts, perPart, size = 32, 72, 50_000
	brokers := kafkatest.Fake(t, parts, "wide")
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers, kc.Topic = brokers, "wide"
	// Compressed, so that kfake holds little (and a response bounded in
	// compressed bytes holds many records), and one record per batch in
	// each partition.
	p, err := kc.NewProducer("wide", "lz4")
	if err != nil {
		t.Fatal(err)
	}
	values := make([][]byte, parts) // round robin: one each
	for i := range values {
		values[i] = []byte(strings.Repeat("x", size)) // rejects: nothing to tokenize
	}
	for range perPart {
		if err := p.Write(context.Background(), nil, values); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()

	cfg := ingestCfg(t, brokers, "wide", t.TempDir())
	cfg.FetchMaxBytes = 4 * size // the fetches take little: what stays is read ahead
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	var (
		mu       sync.Mutex
		baseline int64
		passed   int
		blocked  = make(chan struct{}, parts)
		release  = make(chan struct{})
	)
	cfg.Throttle = func(ctx context.Context) error {
		mu.Lock()
		if passed == 0 {
			baseline = heap() // the store and tokenizer open, no reader started yet
		}
		if passed < parts {
			passed++
			mu.Unlock()
			return nil
		}
		mu.Unlock()
		blocked <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Ingest(ctx, cfg) }()
	for range parts { // every partition is stalled, after one fetch at least
		select {
		case <-blocked:
		case err := <-done:
			t.Fatalf("ingest ended before every partition was stalled: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("partitions not stalled after a minute")
		}
	}
	var held int64
	for last := int64(-1); ; last = held { // until kafka-go has read all it may
		time.Sleep(300 * time.Millisecond)
		if held = heap() - baseline; held <= last+size {
			break
		}
	}
	close(release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Each partition's reader holds one response ahead, and the records
	// of the last fetch not yet returned: at most a fetch's bytes (and
	// the record that crosses them) each; the rest (a part, buffers) is a
	// few MB. kafka-go's Reader, 64 records ahead in each partition, held
	// 123 MB here, 20 MB with its queues shared.
	limit := int64(parts*2*(cfg.FetchMaxBytes+size)) + 16<<20
	t.Logf("%d partitions stalled: %.1f MB held ahead (limit %.1f MB)", parts, float64(held)/1e6, float64(limit)/1e6)
	if held > limit {
		t.Fatalf("%d partitions held %d bytes of records ahead of the tokenizer; at most %d", parts, held, limit)
	}
}

func TestReadAheadShares(t *testing.T) {
	for owned := 1; owned <= 1024; owned++ {
		ra := shareReadAhead(owned, 8<<20)
		if owned <= 4 && (ra != readAhead{8 << 20, handleBytes}) {
			t.Fatalf("%d partitions: %+v, want the per-partition bounds", owned, ra)
		}
		if ra.fetchBytes*owned > max(readAheadFetchBytes, owned*minFetchBytes) ||
			ra.partBytes*owned > max(readAheadPartBytes, owned*minPartBytes) {
			t.Fatalf("%d partitions: %+v each exceeds the shared bounds", owned, ra)
		}
	}
	if ra := shareReadAhead(64, 100_000); ra.fetchBytes != 100_000 {
		t.Fatalf("FetchMaxBytes 100,000 gave fetches of %d", ra.fetchBytes)
	}
}

// A fetch stops after the record that brings its values to the byte
// bound, and a fetch is handled in parts of 64 records or fewer that hold
// handleBytes: without the bounds, 2000 records of 900 KB were fetched and
// handled at once (1.7 GB of memory for one partition).
func TestFetchAndPartsAreBoundedInBytes(t *testing.T) {
	brokers := kafkatest.Fake(t, 1, "big")
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers, kc.Topic = brokers, "big"
	p, err := kc.NewProducer("big", "none")
	if err != nil {
		t.Fatal(err)
	}
	values := make([][]byte, 20)
	for i := range values {
		values[i] = []byte(strings.Repeat("x", 100_000))
	}
	if err := p.Write(context.Background(), nil, values); err != nil {
		t.Fatal(err)
	}
	p.Close()
	r, err := kc.NewPartitionReader(0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	recs, err := r.Fetch(context.Background(), 1000, 250_000, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("a fetch bounded at 250,000 bytes took %d records of 100,000", len(recs))
	}

	var parts []int
	big := make([]ingest.Record, 70)
	for i := range big {
		big[i].Value = make([]byte, handleBytes/4)
	}
	small := make([]ingest.Record, 70)
	for _, recs := range [][]ingest.Record{big, small} {
		for i := 0; i < len(recs); {
			j := partEnd(recs, i, handleBytes)
			parts = append(parts, j-i)
			i = j
		}
	}
	if want := []int{4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 2, 64, 6}; !reflect.DeepEqual(parts, want) {
		t.Fatalf("parts %v, want %v", parts, want)
	}
	if partEnd(nil, 0, handleBytes) != 0 {
		t.Fatal("an empty fetch is not one empty part")
	}
}

// A partition whose fetches keep failing brings no record, so it looked
// idle: with --idle-exit the run ended with status 0 and its records
// missing. Now the idle exit is an error that names the partition and
// why it cannot be read.
func TestIdleExitWithAnUnreadablePartitionIsAnError(t *testing.T) {
	c := kafkatest.FakeCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "docs"))
	brokers := c.ListenAddrs()
	produceFiles(t, brokers, "docs", 0, sampleCorpus)
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.FetchRequest)
		// emopipe's reader asks for one partition a request; partition 0
		// is read as usual.
		if len(r.Topics) != 1 || len(r.Topics[0].Partitions) != 1 || r.Topics[0].Partitions[0].Partition != 1 {
			return nil, nil, false
		}
		st := kmsg.NewFetchResponseTopic()
		st.Topic, st.TopicID = r.Topics[0].Topic, r.Topics[0].TopicID
		sp := kmsg.NewFetchResponseTopicPartition()
		sp.Partition, sp.ErrorCode = 1, kerr.KafkaStorageError.Code
		st.Partitions = append(st.Partitions, sp)
		resp := r.ResponseKind().(*kmsg.FetchResponse)
		resp.Topics = append(resp.Topics, st)
		return resp, nil, true
	})
	cfg := ingestCfg(t, brokers, "docs", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := Ingest(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "partition 1 cannot be read") || !strings.Contains(err.Error(), "Storage") {
		t.Fatalf("idle exit with partition 1 failing every fetch: %v; want an error naming it and its cause", err)
	}
	t.Log(err)
	// Partition 0 was read all the same.
	c2, rerr := storecheck.ReadDir(cfg.Store)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(c2.Records) == 0 {
		t.Fatal("nothing of partition 0 stored")
	}
}

// The ingester's partition reader sends each fetch to its partition's
// leader (kafka-go's transport routes it by the cluster's metadata): on
// three brokers, with the partitions' leaders spread over them, every
// document is read.
func TestIngestReadsEachPartitionFromItsLeader(t *testing.T) {
	c := kafkatest.FakeCluster(t, kfake.NumBrokers(3), kfake.SeedTopics(3, "docs"))
	brokers := c.ListenAddrs()
	leaders := map[int32]bool{}
	for p := range int32(3) { // kfake places leaders at random: one a broker
		if err := c.MoveTopicPartition("docs", p, p); err != nil {
			t.Fatal(err)
		}
		leaders[c.LeaderFor("docs", p)] = true
	}
	if len(leaders) != 3 {
		t.Fatalf("the partitions' leaders are %v, want 3 brokers", leaders)
	}
	var mu sync.Mutex
	fetched := map[int32]bool{} // the brokers that answered a fetch with records
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		fetched[c.CurrentNode()] = true
		mu.Unlock()
		return nil, nil, false
	})
	produceFiles(t, brokers, "docs", 0, sampleCorpus)
	cfg := ingestCfg(t, brokers[:1], "docs", t.TempDir()) // one bootstrap broker
	if err := Ingest(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	checkSampleIngested(t, cfg.Store)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(fetched) != fmt.Sprint(leaders) {
		t.Fatalf("fetches went to brokers %v; the partitions' leaders are %v", fetched, leaders)
	}
}

// A partition's leader moving to another broker (a broker leaving, a
// reassignment) while the ingester runs: the old leader answers its
// fetches with "not leader", and the reader goes on at the new one at
// its next fetch; every document is stored once. (kafka-go's transport
// refreshes its metadata only every 0-6 s: the reader kept asking the old
// leader, 2-6 more fetches over up to 5 s.)
func TestIngestFollowsAPartitionLeaderThatMoves(t *testing.T) {
	c := kafkatest.FakeCluster(t, kfake.NumBrokers(3), kfake.SeedTopics(3, "docs"))
	brokers := c.ListenAddrs()
	var mu sync.Mutex
	former := map[int32]int32{}    // partition → its leader before the move, once moved
	misdirected := map[int32]int{} // fetches a partition's former leader got after the move
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		node := c.CurrentNode()
		mu.Lock()
		defer mu.Unlock()
		for _, rt := range req.(*kmsg.FetchRequest).Topics {
			for _, rp := range rt.Partitions {
				if old, moved := former[rp.Partition]; moved && old == node {
					misdirected[rp.Partition]++
				}
			}
		}
		return nil, nil, false
	})
	cfg := ingestCfg(t, brokers, "docs", t.TempDir())
	cfg.IdleExit = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Ingest(ctx, cfg) }()
	waitDocs := func(n float64) time.Duration {
		t.Helper()
		start := time.Now()
		for cfg.Metrics.Sum("emopipe_ingest_documents_total") < n {
			select {
			case err := <-done:
				t.Fatalf("ingester ended: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Since(start) > time.Minute {
				t.Fatalf("%v documents after a minute, want %v", cfg.Metrics.Sum("emopipe_ingest_documents_total"), n)
			}
		}
		return time.Since(start)
	}
	writeDocs(t, brokers, "docs", "before", 30)
	waitDocs(30)
	for p := range int32(3) {
		from := c.LeaderFor("docs", p)
		if err := c.MoveTopicPartition("docs", p, (from+1)%3); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		former[p] = from
		mu.Unlock()
	}
	writeDocs(t, brokers, "docs", "after", 30)
	t.Logf("the documents written after the move were read in %v", waitDocs(60).Round(time.Millisecond))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := storecheck.ReadDir(cfg.Store) // fails on a document stored twice
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Records) != 60 {
		t.Fatalf("%d documents stored, want 60", len(got.Records))
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("fetches sent to a former leader, by partition: %v", misdirected)
	for p, n := range misdirected {
		// The fetch waiting at the old leader when it moves arrived
		// before and is not counted; the one after it may still go there.
		if n > 1 {
			t.Errorf("partition %d: %d fetches went to its former leader; the reader should ask the new one after the first", p, n)
		}
	}
}

// --start latest: a partition that neither the store nor the group has
// read starts at its end, as Kafka consumers' auto.offset.reset=latest.
// The position is committed at once, so a restart before any record
// arrives does not start at the end again, past the records written in
// between; a partition with a position resumes from it.
func TestStartLatestReadsOnlyNewRecords(t *testing.T) {
	brokers := kafkatest.Fake(t, 2, "docs")
	cfg := ingestCfg(t, brokers, "docs", t.TempDir())
	cfg.Kafka.Start = ingest.StartLatest
	run := func() []string {
		t.Helper()
		if err := Ingest(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		c, err := storecheck.ReadDir(cfg.Store)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for id := range c.Records {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		return ids
	}
	writeDocs(t, brokers, "docs", "before", 30)
	if got := run(); len(got) != 0 {
		t.Fatalf("--start latest stored %v, written before it started", got)
	}
	writeDocs(t, brokers, "docs", "between", 10) // while no ingester runs: read by the next one
	if got, want := run(), ids("between", 10); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after a restart: %v, want %v", got, want)
	}
	// Earliest, the default, with a new store and group: everything.
	all := ingestCfg(t, brokers, "docs", t.TempDir())
	all.Kafka.Group = "g-all"
	if err := Ingest(context.Background(), all); err != nil {
		t.Fatal(err)
	}
	c, err := storecheck.ReadDir(all.Store)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Records) != 40 {
		t.Fatalf("--start earliest: %d documents, want 40", len(c.Records))
	}
}

// writeDocs writes n small JSON documents, ids prefix-0 … prefix-(n-1),
// to topic, round robin over its partitions, acknowledged by all replicas.
func writeDocs(t *testing.T, brokers []string, topic, prefix string, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.RoundRobin{}, BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll}
	defer w.Close()
	var msgs []kafka.Message
	for i := range n {
		msgs = append(msgs, kafka.Message{Value: fmt.Appendf(nil, `{"id":"%s-%d","text":"document %d of %s, a few words long"}`, prefix, i, i, prefix)})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}
