package pipelines

import (
	"strings"
	"testing"
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
