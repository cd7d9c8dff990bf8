package train_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/pipelines"
	"github.com/emopipe/emopipe/tokenize"
)

// The real-corpus tests train on the bundled multi-domain sample packed
// with the small-vocabulary tokenizer (cl100k's first 8192 ranks + EOS and
// PAD): with the full 100k vocabulary the LM head dominates a CPU step.
const (
	smallTokenizer = "dolma2-8k"
	sampleCorpus   = "../testdata/corpus/sample.jsonl.gz"
	heldoutCorpus  = "../testdata/corpus/heldout.jsonl.gz"
)

// testRoot holds the packed corpora for the whole test binary.
var testRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "emopipe-train-test")
	if err != nil {
		panic(err)
	}
	testRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var nTemp int

func mkdirTemp() (string, error) {
	nTemp++
	d := filepath.Join(testRoot, fmt.Sprintf("d%d", nTemp))
	return d, os.MkdirAll(d, 0o755)
}

var (
	corpusOnce  sync.Once
	corpusDir   string
	corpusError error
)

// corpusStores packs the sample and the held-out split once per test
// binary (seq_len 65: 64 inputs + the shifted label) and returns the two
// store directories.
func corpusStores(t *testing.T) (train, heldout string) {
	t.Helper()
	corpusOnce.Do(func() {
		dir, err := mkdirTemp()
		if err != nil {
			corpusError = err
			return
		}
		// EMOPIPE_TEST_CORPUS keeps the packed stores between runs (benchmarks, debugging).
		if keep := os.Getenv("EMOPIPE_TEST_CORPUS"); keep != "" {
			dir = keep
			if store.Exists(filepath.Join(dir, "heldout")) {
				corpusDir = dir
				return
			}
		}
		corpusDir = dir
		for _, c := range []struct{ in, name string }{{sampleCorpus, "train"}, {heldoutCorpus, "heldout"}} {
			if err := packCorpus(c.in, filepath.Join(dir, c.name), 65); err != nil {
				corpusError = err
				return
			}
		}
	})
	if corpusError != nil {
		t.Fatal(corpusError)
	}
	return filepath.Join(corpusDir, "train"), filepath.Join(corpusDir, "heldout")
}

func packCorpus(in, dir string, seqLen int) error {
	tok, err := tokenize.Bundled(smallTokenizer)
	if err != nil {
		return err
	}
	pc := packing.DefaultConfig()
	pc.SeqLen = seqLen
	_, err = pipelines.Pack(context.Background(), pipelines.PackConfig{
		Store: dir, Inputs: []string{in}, Files: ingest.DefaultFileConfig(), Packing: pc, Tokenizer: tok})
	return err
}
