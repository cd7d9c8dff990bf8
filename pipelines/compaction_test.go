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
)

// A compacted topic (one keyed by document id, say, so that it keeps each
// document's last version) holds batches whose last records compaction
// removed: Kafka keeps such a batch's last offset, so a fetch from the
// offset after its last surviving record returns the same batch again,
// with no record at or after that offset. The reader must step over it
// as the Java consumer does; before, it reported "no progress" and stayed
// there for good whenever the batch after it did not fit in its request.
// Both ways past it are taken: a larger request (the default bound), and,
// when the next batch is larger than the bound, finding where the batch
// ends.
func TestIngestReadsCompactedTopics(t *testing.T) {
	if !kafkatest.Available() {
		t.Skip("needs a real Kafka broker (EMOPIPE_KAFKA=1)")
	}
	// The log cleaner looks for work every 15 s by default.
	brokers := kafkatest.StartWith(t, "log.cleaner.backoff.ms=100").Brokers()
	topic := "compacted"
	kafkatest.CreateTopic(t, brokers, topic, 1, "cleanup.policy=compact", "segment.ms=100",
		"min.cleanable.dirty.ratio=0.01", "min.compaction.lag.ms=0")
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, BatchSize: 100, BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll}
	defer w.Close()
	batch := func(docs ...string) { // one produce request, one batch: "id" or "id:text bytes"
		t.Helper()
		var msgs []kafka.Message
		for _, d := range docs {
			id, n := d, 40
			if i := strings.IndexByte(d, ':'); i >= 0 {
				id = d[:i]
				fmt.Sscan(d[i+1:], &n)
			}
			text := strings.Repeat("word "+id+" ", n/len("word "+id+" ")+1)[:n]
			msgs = append(msgs, kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"id":%q,"text":%q}`, id, text)})
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	// Offsets 0-3; compaction keeps d0 and d1 and the batch's last offset, 3.
	batch("d0", "d1", "d2", "d3")
	// Offsets 4-5: the new versions of d2 and d3, too large to come with
	// the first batch in the reader's first, 1 KiB, request.
	batch("d2:3000", "d3:3000")
	// Offsets 6-9 the same way, the new versions larger than the bound of
	// the second ingest run below.
	batch("d4", "d5", "d6", "d7")
	batch("d6:5000", "d7:5000")
	time.Sleep(300 * time.Millisecond) // segment.ms: the next record rolls the segment
	batch("d8")
	// A tombstone: d5 deleted (it stays in the active segment, after d5).
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte("d5")}); err != nil {
		t.Fatal(err)
	}
	waitCompacted(t, brokers, topic, 10)

	want := []string{"d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"}
	for _, fetchBytes := range []int{0, 4096} {
		cfg := ingestCfg(t, brokers, topic, t.TempDir())
		cfg.Kafka.Group = fmt.Sprintf("g-%d-%s", fetchBytes, topic)
		cfg.FetchMaxBytes = fetchBytes
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := Ingest(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatalf("fetch bound %d: %v (stuck on a compacted batch?)", fetchBytes, err)
		}
		c, err := storecheck.ReadDir(cfg.Store) // fails on a document stored twice
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for id, r := range c.Records {
			got = append(got, id)
			if (id == "d2" || id == "d3" || id == "d6" || id == "d7") && r.Bytes < 3000 {
				t.Errorf("fetch bound %d: %s stored in its old version (%d bytes)", fetchBytes, id, r.Bytes)
			}
		}
		sort.Strings(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("fetch bound %d: documents %v, want %v", fetchBytes, got, want)
		}
		// The tombstone is counted as one, not as malformed input.
		if n := cfg.Metrics.Sum("emopipe_ingest_rejects_total"); n != 1 || cfg.Metrics.Get("emopipe_ingest_rejects_total", "reason", ingest.ReasonTombstone) != 1 {
			t.Fatalf("fetch bound %d: %v rejects, want the tombstone of d5 alone", fetchBytes, n)
		}
	}
}

// waitCompacted waits until the log cleaner has removed records from the
// topic's first n offsets.
func waitCompacted(t *testing.T, brokers []string, topic string, n int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		offsets := readOffsets(t, brokers, topic, n)
		if int64(len(offsets)) < n {
			t.Logf("compacted: offsets %v of the first %d remain", offsets, n)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log cleaner removed nothing from the first %d offsets in a minute", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readOffsets lists the offsets below n that partition 0 of topic holds.
func readOffsets(t *testing.T, brokers []string, topic string, n int64) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var offsets []int64
	for next := int64(0); next < n; {
		if _, err := conn.Seek(next, kafka.SeekAbsolute); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := conn.ReadBatch(1, 1<<20)
		progress := false
		for {
			m, err := b.ReadMessage()
			if err != nil {
				break
			}
			if m.Offset >= next && m.Offset < n {
				offsets = append(offsets, m.Offset)
				next, progress = m.Offset+1, true
			}
		}
		b.Close()
		if !progress {
			break
		}
	}
	return offsets
}
