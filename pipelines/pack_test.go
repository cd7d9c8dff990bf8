package pipelines

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/tokenize"
)

const sampleCorpus = "../testdata/corpus/sample.jsonl.gz"

var (
	tokOnce sync.Once
	tok     *tokenize.Tokenizer
	tokErr  error
)

func dolma2(t testing.TB) *tokenize.Tokenizer {
	t.Helper()
	tokOnce.Do(func() { tok, tokErr = tokenize.Bundled("dolma2") })
	if tokErr != nil {
		t.Fatal(tokErr)
	}
	return tok
}

type rawDoc struct {
	ID, Text, Domain string
}

func readSample(t testing.TB) []rawDoc {
	t.Helper()
	f, err := os.Open(sampleCorpus)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var docs []rawDoc
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var d struct{ ID, Text, Domain string }
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, rawDoc{d.ID, d.Text, d.Domain})
	}
	return docs
}

func packCfg(t testing.TB, dir string, inputs ...string) PackConfig {
	pc := packing.DefaultConfig()
	pc.SeqLen = 512
	return PackConfig{Store: dir, Inputs: inputs, Files: ingest.DefaultFileConfig(), Packing: pc, Tokenizer: dolma2(t)}
}

// collect reassembles every document from the store's spans.
func collect(t *testing.T, dir string) (map[string][]uint32, *store.Store) {
	t.Helper()
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]uint32{}
	starts := map[string]int{}
	err = st.Scan(0, func(n uint64, s *packing.Sequence) error {
		for _, sp := range s.Spans {
			if !sp.ContinuesFromPrev {
				starts[sp.DocKey]++
			}
			got[sp.DocKey] = append(got[sp.DocKey], s.Tokens[sp.Start:sp.Start+sp.Length]...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, n := range starts {
		if n != 1 {
			t.Fatalf("document %s starts %d times", k, n)
		}
	}
	return got, st
}

func TestPackEveryTokenOfEveryDocumentOnceInOrder(t *testing.T) {
	docs := readSample(t)
	tk := dolma2(t)
	eos, _ := tk.EOS()
	for _, mode := range []packing.Mode{packing.Concat, packing.BestFit} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			cfg := packCfg(t, dir, sampleCorpus)
			cfg.Packing.Mode = mode
			res, err := Pack(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Docs != len(docs) || res.Rejects != 0 {
				t.Fatalf("packed %d docs with %d rejects, sample has %d", res.Docs, res.Rejects, len(docs))
			}
			got, st := collect(t, dir)
			defer st.Close()
			if len(got) != len(docs) {
				t.Fatalf("%d documents in the store, want %d", len(got), len(docs))
			}
			for _, d := range docs {
				want := append(tk.Encode(d.Text), eos)
				if !reflect.DeepEqual(got[d.ID], want) {
					t.Fatalf("document %s: store holds %d tokens, encoding gives %d (or they differ)", d.ID, len(got[d.ID]), len(want))
				}
				rec, err := st.Doc(d.ID)
				if err != nil || rec.Domain != d.Domain || rec.Tokens != len(want)-1 {
					t.Fatalf("record of %s: %+v %v", d.ID, rec, err)
				}
			}
			s := st.Stats()
			if s.Tokens+s.Padding != s.Sequences*512 {
				t.Fatalf("stats: %d tokens + %d padding != %d sequences × 512", s.Tokens, s.Padding, s.Sequences)
			}
			t.Logf("%s: %d docs, %d sequences, %d split, padding %.2f%%", mode, s.Docs, s.Sequences, s.SplitDocs, 100*float64(s.Padding)/float64(s.Sequences*512))
		})
	}
}

func digest(t *testing.T, dir string) string {
	t.Helper()
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := st.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Same input → byte-identical store content and shards, whatever the
// batching.
func TestPackDeterministic(t *testing.T) {
	var digests []string
	var shards [][]byte
	for i, batch := range []int{8 << 20, 64 << 10} {
		dir := t.TempDir()
		cfg := packCfg(t, dir, sampleCorpus, "../testdata/bad")
		cfg.BatchBytes, cfg.CommitSequences = batch, 10+i*50
		if _, err := Pack(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		digests = append(digests, digest(t, dir))
		out := filepath.Join(t.TempDir(), "npy")
		files, err := ExportShards(dir, out, 100, nil)
		if err != nil {
			t.Fatal(err)
		}
		var all []byte
		for _, f := range files {
			b, _ := os.ReadFile(f)
			all = append(all, b...)
		}
		shards = append(shards, all)
	}
	if digests[0] != digests[1] {
		t.Fatal("two packs of the same input gave different store content")
	}
	if string(shards[0]) != string(shards[1]) {
		t.Fatal("two packs of the same input gave different shards")
	}
}

var errCrash = errors.New("simulated crash")

// A pack stopped after any commit, then rerun, ends with exactly the
// content of an uninterrupted pack: nothing lost, nothing twice.
func TestPackResumeAfterCrashMatchesUninterrupted(t *testing.T) {
	ref := t.TempDir()
	cfg := packCfg(t, ref, sampleCorpus, "../testdata/bad")
	cfg.CommitSequences = 40
	cfg.BatchBytes = 256 << 10
	if _, err := Pack(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	want := digest(t, ref)
	for _, crashAt := range []int{1, 2, 5} {
		t.Run(fmt.Sprint(crashAt), func(t *testing.T) {
			dir := t.TempDir()
			c := cfg
			c.Store = dir
			c.afterCommit = func(n int) error {
				if n == crashAt {
					return errCrash
				}
				return nil
			}
			if _, err := Pack(context.Background(), c); !errors.Is(err, errCrash) {
				t.Fatalf("first run: %v (too few commits to crash at %d?)", err, crashAt)
			}
			c.afterCommit = nil
			res, err := Pack(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Resumed {
				t.Fatal("second run did not resume")
			}
			if got := digest(t, dir); got != want {
				t.Fatal("resumed store differs from the uninterrupted one")
			}
		})
	}
	// A third run of the same inputs changes nothing.
	res, err := Pack(context.Background(), cfg)
	if err != nil || !res.AlreadyRan {
		t.Fatalf("rerun: %+v %v", res, err)
	}
	if digest(t, ref) != want {
		t.Fatal("rerun changed the store")
	}
}

func TestPackRefusesStoreOfAnotherTokenizer(t *testing.T) {
	dir := t.TempDir()
	if _, err := Pack(context.Background(), packCfg(t, dir, sampleCorpus)); err != nil {
		t.Fatal(err)
	}
	gpt2, err := tokenize.Bundled("gpt2")
	if err != nil {
		t.Fatal(err)
	}
	cfg := packCfg(t, dir, sampleCorpus)
	cfg.Tokenizer = gpt2
	_, err = Pack(context.Background(), cfg)
	if !errors.Is(err, store.ErrHeaderMismatch) {
		t.Fatalf("err = %v, want header mismatch", err)
	}
	if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "tokenizer") {
		t.Fatalf("error is not one line naming the tokenizer: %q", err)
	}
}

// tinyDocs writes n one-word JSONL documents: a stream whose records, not
// its sequences, fill a commit (2 tokens each with EOS: 128 sequences of
// 512 would wait for 32,768 of them; of 2048, for 131,072).
func tinyDocs(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "{\"id\":\"tiny-%d\",\"text\":\"word\"}\n", i)
	}
	path := filepath.Join(t.TempDir(), "tiny.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A commit is one Badger transaction, which holds about 100,000 entries;
// a document is one. 120,000 documents of one word fill only 469 sequences
// of 512 tokens, so with a commit every 1,000 sequences they all waited
// for one commit, which Badger refused (ErrTxnTooBig) and the pack failed.
func TestPackCommitsTinyDocumentsInBatchesBadgerHolds(t *testing.T) {
	const n = 120_000
	dir := t.TempDir()
	cfg := packCfg(t, dir, tinyDocs(t, n))
	cfg.CommitSequences = 1000
	commits := 0
	cfg.afterCommit = func(int) error { commits++; return nil }
	res, err := Pack(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Docs != n || res.Rejects != 0 {
		t.Fatalf("packed %d documents with %d rejects, want %d and none", res.Docs, res.Rejects, n)
	}
	if commits < n/maxBatchRecords {
		t.Fatalf("%d commits for %d documents: a commit held more than %d", commits, n, maxBatchRecords)
	}
	st := openHolding(t, dir, n)
	has, err := st.HasDocs([]string{"tiny-0", fmt.Sprintf("tiny-%d", n/2), fmt.Sprintf("tiny-%d", n-1)})
	if err != nil || !has[0] || !has[1] || !has[2] {
		t.Fatalf("first, middle and last documents in the store: %v (%v)", has, err)
	}
}

// openHolding opens the store in dir for reading until t ends, and checks
// that it holds n documents.
func openHolding(t *testing.T, dir string, n int) *store.Store {
	t.Helper()
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if got := st.Stats().Docs; got != uint64(n) {
		t.Fatalf("store holds %d documents, want %d", got, n)
	}
	return st
}
