package pipelines

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/internal/kafkatest"
	"github.com/emopipe/emopipe/internal/storecheck"
	"github.com/emopipe/emopipe/packing/store"
)

// Topics written by transactional producers (Kafka Streams, Flink, any
// exactly-once producer), written here by Kafka's own Java producer. At
// read_committed, the default, the records of aborted transactions are
// not documents, the markers that end transactions are not records, and
// an open transaction holds back the records written after it until it
// ends. With kafka-go's Reader every marker was a malformed_json reject
// and every aborted record a document.
func TestIngestLeavesOutAbortedTransactions(t *testing.T) {
	brokers := kafkatest.Shared(t) // skips without a real broker
	topic := "tx-" + time.Now().Format("150405.000")
	kafkatest.CreateTopic(t, brokers, topic, 2)
	p := kafkatest.NewTxProducer(t, brokers, topic)
	p.Do(t,
		"begin A", "send A 0 aborted-a 50",
		"begin B", "send B 0 committed-b 40",
		"send - 0 plain 30",
		"send A 1 aborted-a1 20",
		"abort A", "commit B",
		"begin A", "send A 0 committed-a 25", "commit A",
		"begin B", "send B 1 open-b 10", // left open for now
		"send - 1 after-open 5",
		"send - 0 plain-late 5",
	)
	committed := ids("committed-b", 40, "plain", 30, "committed-a", 25, "plain-late", 5)

	// held is the last emopipe_ingest_held_back_records of partition 1.
	var held float64
	ingestOnce := func(dir, isolation string) (docs []string, rejects int) {
		t.Helper()
		cfg := ingestCfg(t, brokers, topic, dir)
		cfg.Kafka.Group = "g-" + isolation + "-" + topic
		cfg.Kafka.Isolation = isolation
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := Ingest(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		held = cfg.Metrics.Get("emopipe_ingest_held_back_records", "partition", "1")
		c, err := storecheck.ReadDir(dir) // fails on a document stored twice
		if err != nil {
			t.Fatal(err)
		}
		for id := range c.Records {
			docs = append(docs, id)
		}
		sort.Strings(docs)
		st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.Rejects(func(r store.Reject) error {
			t.Logf("reject: %+v", r)
			rejects++
			return nil
		})
		return docs, rejects
	}
	same := func(what string, got, want []string, rejects int) {
		t.Helper()
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) || rejects != 0 {
			in := func(list []string) map[string]bool {
				m := map[string]bool{}
				for _, id := range list {
					m[id] = true
				}
				return m
			}
			g, w := in(got), in(want)
			var extra, missing []string
			for _, id := range got {
				if !w[id] {
					extra = append(extra, id)
				}
			}
			for _, id := range want {
				if !g[id] {
					missing = append(missing, id)
				}
			}
			t.Fatalf("%s: %d documents and %d rejects, want %d documents and none; not wanted %v; missing %v", what, len(got), rejects, len(want), extra, missing)
		}
	}

	dir := t.TempDir()
	docs, rejects := ingestOnce(dir, ingest.ReadCommitted)
	same("read_committed, B's transaction open", docs, committed, rejects)
	if held != 15 { // B's 10 open records and the 5 written after them
		t.Fatalf("%v offsets of partition 1 reported held back behind B's open transaction; want 15", held)
	}

	p.Do(t, "commit B")
	docs, rejects = ingestOnce(dir, ingest.ReadCommitted) // the same store and group: resumes
	all := ids("committed-b", 40, "plain", 30, "committed-a", 25, "plain-late", 5, "open-b", 10, "after-open", 5)
	same("read_committed, B's transaction committed", docs, all, rejects)
	if held != 0 {
		t.Fatalf("%v offsets of partition 1 reported held back after B's commit", held)
	}
	// Partition 1 ends with B's commit marker: the group's offset is past
	// it, so Kafka's tools show no lag (it stopped after the last record).
	if lag := groupLag(t, brokers, "g-"+ingest.ReadCommitted+"-"+topic, topic, 2); lag[0] != 0 || lag[1] != 0 {
		t.Fatalf("group lag by partition %v after reading everything; want 0 for both", lag)
	}

	docs, rejects = ingestOnce(t.TempDir(), ingest.ReadUncommitted)
	same("read_uncommitted", docs, append(all, ids("aborted-a", 50, "aborted-a1", 20)...), rejects)
}

// groupLag is, by partition, the partition's end offset minus the group's
// committed offset, as Kafka's consumer-group tools show it.
func groupLag(t *testing.T, brokers []string, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	var parts []int
	var ends []kafka.OffsetRequest
	for p := range partitions {
		parts = append(parts, p)
		ends = append(ends, kafka.LastOffsetOf(p))
	}
	committed, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatal(err)
	}
	last, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: ends}})
	if err != nil {
		t.Fatal(err)
	}
	lag := map[int]int64{}
	for _, p := range last.Topics[topic] {
		lag[p.Partition] = p.LastOffset
	}
	for _, p := range committed.Topics[topic] {
		lag[p.Partition] -= p.CommittedOffset
	}
	return lag
}

// ids lists prefix-0 … prefix-(n-1) for each (prefix, n) pair, sorted.
func ids(pairs ...any) []string {
	var out []string
	for i := 0; i < len(pairs); i += 2 {
		for j := range pairs[i+1].(int) {
			out = append(out, fmt.Sprintf("%s-%d", pairs[i], j))
		}
	}
	sort.Strings(out)
	return out
}

// A partition read up to its last stable offset, with records after it,
// is said to wait behind an open transaction once per wait, after
// heldAfter; one with records still to read before that offset is not.
func TestHeldBackPartitionIsSaidOnce(t *testing.T) {
	var log strings.Builder
	w := &partitionWork{in: &Ingester{m: NewMetrics(), cfg: IngestConfig{Log: &log}}, partition: 1}
	said := func() int { return strings.Count(log.String(), "wait behind a transaction still open") }
	w.heldBack(15, 3) // records to read before the stable offset: not waiting
	if !w.heldSince.IsZero() {
		t.Fatal("a partition with records to read counted as waiting")
	}
	w.heldBack(15, 0)
	w.heldBack(15, 0)
	if said() != 0 {
		t.Fatalf("said before %v: %q", heldAfter, log.String())
	}
	w.heldSince = time.Now().Add(-heldAfter)
	w.heldBack(15, 0)
	w.heldBack(15, 0)
	if said() != 1 || w.in.m.Get("emopipe_ingest_held_back_records", "partition", "1") != 15 {
		t.Fatalf("said %d times (want 1), gauge %v: %q", said(), w.in.m.Get("emopipe_ingest_held_back_records", "partition", "1"), log.String())
	}
	w.heldBack(0, 0) // the transaction ended
	w.heldBack(15, 0)
	w.heldSince = time.Now().Add(-heldAfter)
	w.heldBack(15, 0)
	if said() != 2 {
		t.Fatalf("a second wait said %d times in all, want 2", said())
	}
}
