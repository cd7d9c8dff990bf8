package pipelines

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/emopipe/emopipe"
	"github.com/emopipe/emopipe/ingest"
)

// The embedded stream puts every corpus document into its topic exactly
// once, keyed by id, in the same partitions and offsets on every start
// (a restarted run resumes partitions from the offsets in its store).
func TestEmbeddedStreamIsCompleteAndRepeatable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	layout := func() map[string]string {
		e, err := StartEmbedded(ctx, EmbeddedConfig{Corpus: emopipe.SampleCorpus, Partitions: 3, Seed: 5})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		select {
		case <-e.Done():
		case <-ctx.Done():
			t.Fatal("embedded producer did not finish")
		}
		n, err := e.Produced()
		if err != nil || n != e.Docs() || n != 630 {
			t.Fatalf("produced %d of %d: %v", n, e.Docs(), err)
		}
		kc := ingest.DefaultKafkaConfig()
		kc.Brokers, kc.Topic = e.Brokers(), e.Topic()
		where := map[string]string{}
		for p := range 3 {
			r, err := kc.NewPartitionReader(p, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			for empty := 0; empty < 3; {
				recs, err := r.Fetch(ctx, 1000, 0, 300*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) == 0 {
					empty++
				}
				for _, rec := range recs {
					k := string(rec.Key)
					if _, dup := where[k]; dup {
						t.Fatalf("document %s produced twice", k)
					}
					where[k] = fmt.Sprintf("%d/%d", rec.Partition, rec.Offset)
				}
			}
			r.Close()
		}
		if len(where) != 630 {
			t.Fatalf("topic holds %d documents, want 630", len(where))
		}
		return where
	}
	a, b := layout(), layout()
	for k, v := range a {
		if b[k] != v {
			t.Fatalf("document %s at %s, then at %s", k, v, b[k])
		}
	}
}
