package pipelines

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	kafka "github.com/segmentio/kafka-go"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/internal/kafkatest"
	"github.com/emopipe/emopipe/internal/storecheck"
	"github.com/emopipe/emopipe/packing/store"
)

// Records that the topic's retention deleted before the ingester read them
// are not lost silently: kafka-go skips to the log start without a word,
// and the ingester records the deleted offsets in the store's rejects
// (reason offsets_deleted, with the count), counts them in a metric, and
// ingests the rest exactly.
func TestIngestRecordsOffsetsDeletedByRetention(t *testing.T) {
	if !kafkatest.Available() {
		t.Skip("needs a real broker: EMOPIPE_KAFKA=1")
	}
	in := kafkatest.StartWith(t, "log.retention.check.interval.ms=300", "log.initial.task.delay.ms=0", "log.segment.delete.delay.ms=0")
	brokers := in.Brokers()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const topic = "retained"
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: "60000"}, {ConfigName: "segment.ms", ConfigValue: "100"}}}}})
	if err != nil || resp.Errors[topic] != nil {
		t.Fatalf("create topic: %v %v", err, resp)
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 100}
	defer w.Close()
	doc := func(i int, at time.Time) kafka.Message {
		v, _ := json.Marshal(map[string]string{"id": fmt.Sprintf("doc-%02d", i), "text": fmt.Sprintf("document number %d of the retention test", i), "domain": "test"})
		return kafka.Message{Value: v, Time: at}
	}
	// Offsets 0-19 an hour old (past retention.ms), in one segment; 20-29
	// now, in the next (the old first timestamp makes the append roll).
	var old, fresh []kafka.Message
	for i := range 20 {
		old = append(old, doc(i, time.Now().Add(-time.Hour)))
	}
	for i := 20; i < 30; i++ {
		fresh = append(fresh, doc(i, time.Now()))
	}
	if err := w.WriteMessages(ctx, old...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := w.WriteMessages(ctx, fresh...); err != nil {
		t.Fatal(err)
	}
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers, kc.Topic = brokers, topic
	deadline := time.Now().Add(60 * time.Second)
	for {
		first, _, err := kc.Offsets(ctx, 0)
		if err == nil && first == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retention did not delete offsets 0-19 within a minute (log start %d, %v)", first, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	dir := t.TempDir()
	cfg := ingestCfg(t, brokers, topic, dir)
	if err := Ingest(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	contents, err := storecheck.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(contents.Records) != 10 {
		t.Fatalf("%d documents stored, want the 10 that retention left", len(contents.Records))
	}
	for i := 20; i < 30; i++ {
		if _, ok := contents.Records[fmt.Sprintf("doc-%02d", i)]; !ok {
			t.Fatalf("doc-%02d missing", i)
		}
	}
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var rejects []store.Reject
	st.Rejects(func(r store.Reject) error { rejects = append(rejects, r); return nil })
	if len(rejects) != 1 || rejects[0].Reason != ingest.ReasonOffsetsDeleted || rejects[0].Position != "offsets 0-19" || rejects[0].Source != "kafka:retained/0" {
		t.Fatalf("rejects %+v, want one offsets_deleted for offsets 0-19 of kafka:retained/0", rejects)
	}
	t.Logf("recorded: %+v", rejects[0])
	if got := cfg.Metrics.Sum("emopipe_ingest_records_deleted_total"); got != 20 {
		t.Fatalf("emopipe_ingest_records_deleted_total = %v, want 20", got)
	}
}

// A topic deleted and created again starts its offsets over, and the
// store has read the old one to some offset. Shorter than that, the
// reader used to wait there, logging "waiting for records" every 30 s,
// and once the new topic grew past that offset it went on from it (with
// --idle-exit the run ended, status 0, having read nothing); as long or
// longer, it went on from that offset at once. Either way the new
// topic's records before it were never read. Now both are errors that
// say what happened, and the store keeps what it had.
func TestIngestStopsOnATopicCreatedAgain(t *testing.T) {
	brokers := kafkatest.Shared(t) // skips without a real broker
	topic := "again-" + time.Now().Format("150405.000")
	recreate := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := &kafka.Client{Addr: kafka.TCP(brokers...)}
		if resp, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}}); err != nil || resp.Errors[topic] != nil {
			t.Fatalf("delete topic: %v %v", err, resp)
		}
		for { // deletion is asynchronous: creating it again fails until it is done
			err := kafkatest.CreateTopicErr(ctx, brokers, topic, 1)
			if err == nil {
				return
			} else if ctx.Err() != nil {
				t.Fatalf("create the topic again: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	cfg := ingestCfg(t, brokers, topic, t.TempDir())
	ingestOnce := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return Ingest(ctx, cfg)
	}
	stored := func() int {
		t.Helper()
		got, err := storecheck.ReadDir(cfg.Store)
		if err != nil {
			t.Fatal(err)
		}
		return len(got.Records)
	}
	kafkatest.CreateTopic(t, brokers, topic, 1)
	writeDocs(t, brokers, topic, "old", 30)
	if err := ingestOnce(); err != nil {
		t.Fatal(err)
	}
	cfg.IdleExit = 0 // from here on it stops by itself, not by going idle

	recreate()
	writeDocs(t, brokers, topic, "short", 10)
	err := ingestOnce()
	if te := (*ingest.TruncatedError)(nil); !errors.As(err, &te) || te.Pos != 30 || te.End != 10 {
		t.Fatalf("ingest after the topic was created again, shorter: %v; want an error saying it ends at offset 10, before 30", err)
	}
	t.Log(err)
	if n := stored(); n != 30 {
		t.Fatalf("%d documents in the store, want the old topic's 30", n)
	}

	recreate()
	writeDocs(t, brokers, topic, "long", 40)
	err = ingestOnce()
	if err == nil || !strings.Contains(err.Error(), "the record at offset 29 is not the one this store read there") {
		t.Fatalf("ingest after the topic was created again, longer: %v; want an error saying offset 29 holds another record", err)
	}
	t.Log(err)
	if n := stored(); n != 30 {
		t.Fatalf("%d documents in the store, want the old topic's 30", n)
	}
}
