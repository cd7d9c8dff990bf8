package pipelines

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/emopipe/emopipe/internal/kafkatest"
	"github.com/emopipe/emopipe/internal/storecheck"
)

// Partitions added to a topic while it is read (kafka-topics --alter) are
// picked up by the running ingester from their first record, including
// the records written to them before its group noticed them.
func TestIngestReadsPartitionsAddedToItsTopic(t *testing.T) {
	brokers := kafkatest.Shared(t) // skips without a real broker
	topic := "grow-" + time.Now().Format("150405.000")
	kafkatest.CreateTopic(t, brokers, topic, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	want := map[string]bool{}
	produce := func(partition, from, n int) {
		t.Helper()
		var values [][]byte
		for i := from; i < from+n; i++ {
			id := fmt.Sprintf("p%d-doc%d", partition, i)
			want[id] = true
			values = append(values, fmt.Appendf(nil, `{"id":%q,"text":"document %d of partition %d, written %s"}`, id, i, partition, time.Now().Format(time.RFC3339Nano)))
		}
		var err error
		// A new topic's or partition's leader is known to the client's
		// metadata a moment later: retry.
		for try := 0; try < 100; try++ {
			recs := make([]kafka.Record, len(values)) // a record's value is a reader, read once
			for i, v := range values {
				recs[i] = kafka.Record{Value: kafka.NewBytes(v)}
			}
			var resp *kafka.ProduceResponse
			resp, err = client.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: partition,
				RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...)})
			if err == nil {
				err = resp.Error
			}
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("produce to partition %d: %v", partition, err)
		}
	}
	produce(0, 0, 50)
	produce(1, 0, 50)

	dir := t.TempDir()
	cfg := ingestCfg(t, brokers, topic, dir)
	cfg.IdleExit = 10 * time.Second // past kafka-go's partition watch (5 s) and a rebalance
	done := make(chan error, 1)
	go func() { done <- Ingest(ctx, cfg) }()
	time.Sleep(3 * time.Second)

	resp, err := client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 4}}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		t.Fatalf("add partitions: %v", err)
	}
	for p := 0; p < 4; p++ { // the new ones at once, before the group notices them
		produce(p, 50, 50)
	}
	time.Sleep(8 * time.Second)
	for p := 0; p < 4; p++ { // and after
		produce(p, 100, 50)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c, err := storecheck.ReadDir(dir) // fails on a document stored twice
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for id := range want {
		if _, ok := c.Records[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 || len(c.Records) != len(want) {
		t.Fatalf("%d documents stored, want %d; %d missing (e.g. %v)", len(c.Records), len(want), len(missing), missing[:min(5, len(missing))])
	}
}
