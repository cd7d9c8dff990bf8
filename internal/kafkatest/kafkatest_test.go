package kafkatest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "kafka", "kafka.sh")); err != nil {
		t.Fatalf("script not found under %s: %v", root, err)
	}
	if _, err := Script(); err != nil {
		t.Fatal(err)
	}
}

// roundTrip writes n messages and reads them back through a consumer group.
func roundTrip(t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint("v", i))}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("write: %v", err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: "rt-" + topic, Topic: topic,
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	seen := map[string]bool{}
	for len(seen) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch after %d/%d: %v", len(seen), n, err)
		}
		seen[string(m.Value)] = true
		if len(seen)%50 == 0 || len(seen) == n {
			if err := r.CommitMessages(ctx, m); err != nil {
				t.Fatalf("commit: %v", err)
			}
		}
	}
}

func TestFake(t *testing.T) {
	brokers := Fake(t, 3, "seeded")
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	md, err := c.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{"seeded"}})
	if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 3 {
		t.Fatalf("seeded topic: %+v %v", md, err)
	}
	CreateTopic(t, brokers, "created", 2)
	roundTrip(t, brokers, "created", 200)
	roundTrip(t, brokers, "seeded", 200)
}

func TestBrokerRoundTrip(t *testing.T) {
	brokers := Broker(t)
	topic := fmt.Sprintf("rt-%d", time.Now().UnixNano())
	CreateTopic(t, brokers, topic, 2)
	roundTrip(t, brokers, topic, 200)
}

// TestBrokerRestart checks that Restart keeps address and data.
func TestBrokerRestart(t *testing.T) {
	brokers := Broker(t)
	if Lookup(brokers) == nil {
		t.Skip("external broker")
	}
	topic := "restart"
	CreateTopic(t, brokers, topic, 1)
	ctx := context.Background()
	// RequireAll: the Writer's default is RequireNone (fire and forget), which
	// loses the last writes when the broker is killed right after.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	Restart(t, brokers)
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	Lookup(brokers).Kill(t)
	Lookup(brokers).Start(t)
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	for _, want := range []string{"before", "after"} {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := r.ReadMessage(rctx)
		cancel()
		if err != nil || string(m.Value) != want {
			t.Fatalf("read %q: got %q %v", want, m.Value, err)
		}
	}
}

func TestShared(t *testing.T) {
	a := Shared(t)
	b := Shared(t)
	if len(a) != 1 || a[0] != b[0] {
		t.Fatalf("shared brokers differ: %v %v", a, b)
	}
	topic := fmt.Sprintf("shared-%d", time.Now().UnixNano())
	CreateTopic(t, a, topic, 1)
	roundTrip(t, a, topic, 50)
}
