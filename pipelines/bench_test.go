package pipelines

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/internal/kafkatest"
)

// Ingest run i is paired with the tokenize-only passes i and i+1 around
// it, and the median over runs is taken.
func TestPairedRatio(t *testing.T) {
	tok := []float64{1, 3, 1, 1}
	ing := []float64{1, 4, 0.5}
	// pairs: (1+3)/2/1 = 2, (3+1)/2/4 = 0.5, (1+1)/2/0.5 = 4 → median 2
	if got := pairedRatio(tok, ing); got != 2 {
		t.Errorf("paired ratio %v, want 2", got)
	}
	if got := pairedRatio([]float64{1}, []float64{1}); got != 0 {
		t.Errorf("no pair: %v, want 0", got)
	}
}

// Each tokenizer goroutine count gets a column, with its own ratios.
func TestBenchMarkdownHasAColumnPerSeries(t *testing.T) {
	r := &BenchIngestResult{Docs: 10, Bytes: 1e6, Rounds: 2, Partitions: 4, SeqLen: 2048, Tokenizer: "dolma2", Compression: "lz4",
		Series: []BenchSeries{
			{Workers: 8, TokenizeMBps: 100, IngestMBps: 80, Ratio: 0.8, RatioMedian: 0.81, RatioPaired: 0.82, TokenizeCPU: 1, IngestCPU: 1.25, TokenizerBusy: 0.875, TokenizingSpeed: 0.914},
			{Workers: 7, TokenizeMBps: 90, IngestMBps: 87, Ratio: 0.97, RatioMedian: 0.98, RatioPaired: 0.99, TokenizeCPU: 1, IngestCPU: 1.2, TokenizeMachineCPU: 1, IngestMachineCPU: 1.3, TokenizerBusy: 0.9971, TokenizingSpeed: 0.97},
		}}
	r.Path = BenchSeries{IngestMBps: 240, IngestDocsPerSec: 2400, IngestSeconds: 0.1, IngestCPU: 0.2, IngestMachineCPU: 0.25}
	r.Series[0].TokenizeMachineCPU = 1
	md := r.Markdown()
	for _, want := range []string{"| **0.80** | **0.97** |", "| 0.81 | 0.98 |", "| 0.82 | 0.99 |", "| 1.00 / 1.25 (0.80) | 1.00 / 1.20 (0.83) |", "| n/a | 1.00 / 1.30 (0.77) |", "|---|---:|---:|", "| 87.5% | 99.7% |", "| 0.91 | 0.97 |", "**2.4× the tokenize-only throughput on 8 goroutines**", "= 1.00 ÷ (1.00 + 0.25) = 0.80 (measured: 0.80)"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// Texts are cut at the first line end n bytes in, nothing lost, and left
// whole without n.
func TestSplitText(t *testing.T) {
	text := "aaaa\nbb\ncccccc\ndd"
	got := splitText(text, 3)
	want := []string{"aaaa\n", "bb\ncccccc\n", "dd"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("splitText(%q, 3) = %q, want %q", text, got, want)
	}
	if got := splitText(text, 0); len(got) != 1 || got[0] != text {
		t.Errorf("splitText(n=0) = %q, want the text whole", got)
	}
	if got := splitText("no line end here", 3); len(got) != 1 {
		t.Errorf("no line end: %q, want one piece", got)
	}
}

// The shuffle moves texts and their domains together, loses and repeats
// nothing, and gives the same order every run.
func TestShuffleDocsKeepsPairsAndIsSeeded(t *testing.T) {
	mk := func() (texts, domains []string) {
		for i := range 200 {
			texts = append(texts, fmt.Sprintf("t%d", i))
			domains = append(domains, fmt.Sprintf("d%d", i))
		}
		return
	}
	t1, d1 := mk()
	t2, d2 := mk()
	shuffleDocs(t1, d1)
	shuffleDocs(t2, d2)
	moved := 0
	seen := map[string]bool{}
	for i := range t1 {
		if t1[i] != t2[i] || d1[i] != d2[i] {
			t.Fatalf("two shuffles differ at %d: %s/%s against %s/%s", i, t1[i], d1[i], t2[i], d2[i])
		}
		if "d"+strings.TrimPrefix(t1[i], "t") != d1[i] {
			t.Errorf("position %d: text %s with domain %s", i, t1[i], d1[i])
		}
		if t1[i] != fmt.Sprintf("t%d", i) {
			moved++
		}
		seen[t1[i]] = true
	}
	if len(seen) != 200 {
		t.Errorf("%d distinct texts after the shuffle, want 200", len(seen))
	}
	if moved < 150 {
		t.Errorf("only %d of 200 texts moved", moved)
	}
}

// Inputs with no text are refused with an error, not a crash.
func TestBenchIngestRefusesInputsWithoutText(t *testing.T) {
	f := filepath.Join(t.TempDir(), "docs.jsonl")
	if err := os.WriteFile(f, []byte(`{"id":"a","text":"  "}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := BenchIngest(context.Background(), BenchIngestConfig{Inputs: []string{f}, Log: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "no documents") {
		t.Errorf("BenchIngest over blank texts: %v, want an error saying there are no documents", err)
	}
}

// An unknown order is refused before anything runs.
func TestBenchIngestRefusesUnknownOrder(t *testing.T) {
	f := filepath.Join(t.TempDir(), "docs.jsonl")
	if err := os.WriteFile(f, []byte(`{"id":"a","text":"hello"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := BenchIngest(context.Background(), BenchIngestConfig{Inputs: []string{f}, Order: "sorted", Log: io.Discard})
	if err == nil || !strings.Contains(err.Error(), `order "sorted"`) {
		t.Errorf("BenchIngest with order sorted: %v, want an error naming the order", err)
	}
}

// Against a real broker a small benchmark measures every pass and run it
// reports, and deletes the topics it made: at --copies 30 each holds about
// a GB of the corpus, and repeated runs left behind filled the broker's disk.
func TestBenchIngestAgainstARealBrokerDeletesItsTopics(t *testing.T) {
	brokers := kafkatest.Shared(t)
	var lines []string
	for _, d := range readSample(t)[:200] {
		b, _ := json.Marshal(map[string]string{"id": d.ID, "text": d.Text, "domain": d.Domain})
		lines = append(lines, string(b))
	}
	f := filepath.Join(t.TempDir(), "docs.jsonl")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers = brokers
	ctx := context.Background()
	before := benchTopics(t, brokers)
	var log strings.Builder
	r, err := BenchIngest(ctx, BenchIngestConfig{Kafka: kc, Inputs: []string{f}, Tokenizer: dolma2(t), SeqLen: 256,
		Partitions: 2, Rounds: 1, Workers: []int{1}, LagSeconds: 1, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if se := r.Series[0]; r.Docs == 0 || se.TokenizeMBps <= 0 || se.IngestMBps <= 0 || se.Ratio <= 0 || r.Path.IngestMBps <= 0 {
		t.Errorf("docs %d, tokenize-only %.2f MB/s, ingest %.2f MB/s, ratio %.2f, data path %.2f MB/s: want all measured",
			r.Docs, se.TokenizeMBps, se.IngestMBps, se.Ratio, r.Path.IngestMBps)
	}
	// A deleted topic leaves the broker's metadata within moments.
	var left []string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		left = left[:0]
		for topic := range benchTopics(t, brokers) {
			if !before[topic] {
				left = append(left, topic)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("topics left behind: %v\n%s", left, log.String())
	}
}

// benchTopics is the set of the broker's topics named as BenchIngest names
// its own.
func benchTopics(t *testing.T, brokers []string) map[string]bool {
	t.Helper()
	resp, err := (&kafka.Client{Addr: kafka.TCP(brokers...)}).Metadata(context.Background(), &kafka.MetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, tp := range resp.Topics {
		if strings.HasPrefix(tp.Name, "bench-") {
			out[tp.Name] = true
		}
	}
	return out
}
