package store

import (
	"bytes"
	"encoding/gob"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/emopipe/emopipe/packing"
)

func stageBatch() *Batch {
	b := &Batch{
		Sequences: []packing.Sequence{seq("a", 5, 6, 7, 1), seq("b", 8, 1, 2, 2)},
		Docs:      []DocRecord{{Key: "a", Domain: "d", Source: "kafka:t/0", Position: "offset 0", Tokens: 3, Bytes: 10, Time: 1700000000000}, {Key: "b", Domain: "d", Tokens: 1, Bytes: 3}},
		Rejects:   []Reject{{Source: "kafka:t/0", Position: "offset 2", Reason: "malformed_json", Detail: "x"}},
		Sources:   map[string][]byte{"kafka:t/0": []byte(`{"next":3}`)},
	}
	b.Sequences[1].Spans[0].Length = 2
	b.Sequences[1].Spans[0].ContinuesInNext = true
	return b
}

func memStore(t *testing.T) *Store {
	t.Helper()
	h := testHeader()
	st, err := Open("", &h, Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func digest(t *testing.T, st *Store) string {
	t.Helper()
	d, err := st.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A staged batch is invisible until it is finalized; the finalized store
// (also when the batch is decoded back from its staged value, as after a
// restart) equals one that committed the batch directly.
func TestStageFinalizeEqualsCommit(t *testing.T) {
	direct := memStore(t)
	if _, err := direct.Commit(stageBatch()); err != nil {
		t.Fatal(err)
	}
	want := digest(t, direct)

	for _, restart := range []bool{false, true} {
		st := memStore(t)
		empty := digest(t, st)
		sb, err := st.Stage(stageBatch(), "kafka:t/0", 3, "m/1/3")
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := st.HasDoc("a"); n || st.NumSequences() != 0 || st.Stats().Docs != 0 {
			t.Fatal("staged batch is visible")
		}
		staged, err := st.Staged()
		if err != nil || len(staged) != 1 || staged["kafka:t/0"] == nil || !bytes.Equal(staged["kafka:t/0"].raw, sb.raw) {
			t.Fatalf("Staged() = %d batches, %v", len(staged), err)
		}
		if restart {
			sb = staged["kafka:t/0"]
			if sb.Source != "kafka:t/0" || sb.End != 3 || sb.Token != "m/1/3" || sb.Sequences() != 2 {
				t.Fatalf("decoded %+v", sb)
			}
		}
		first, err := st.Finalize(sb)
		if err != nil || first != 0 {
			t.Fatalf("finalize: %d %v", first, err)
		}
		if got := digest(t, st); got != want {
			t.Fatalf("restart=%v: store after stage+finalize differs from a direct commit", restart)
		}
		if !reflect.DeepEqual(st.Stats(), direct.Stats()) {
			t.Fatalf("stats %+v, want %+v", st.Stats(), direct.Stats())
		}
		for n := uint64(0); n < 2; n++ {
			got, err := st.Sequence(n)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := direct.Sequence(n)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("sequence %d read through its reference differs", n)
			}
		}
		if staged, err := st.Staged(); err != nil || len(staged) != 0 {
			t.Fatalf("after finalize: Staged() = %d batches, %v", len(staged), err)
		}

		// Discard leaves the store as it was.
		st2 := memStore(t)
		if _, err := st2.Stage(stageBatch(), "kafka:t/0", 3, "tok"); err != nil {
			t.Fatal(err)
		}
		if err := st2.Discard("kafka:t/0"); err != nil {
			t.Fatal(err)
		}
		if digest(t, st2) != empty || len(rawKeys(t, st2, prefChunk)) != 0 {
			t.Fatal("discard left something behind")
		}
	}
}

// Batches staged in format 1 (gob, before encode-once) by an earlier
// version still finalize after an upgrade.
func TestDecodeStagedFormat1(t *testing.T) {
	b := stageBatch()
	old := stagedGob{Rejects: b.Rejects, Source: "kafka:t/0", State: b.Sources["kafka:t/0"], End: 3, Token: "tok"}
	for i := range b.Sequences {
		enc, _ := b.Sequences[i].MarshalBinary()
		old.Sequences = append(old.Sequences, enc)
	}
	for _, d := range b.Docs {
		old.Docs = append(old.Docs, stagedGobDoc{Key: d.Key, DocRecord: d})
	}
	var raw bytes.Buffer
	if err := gob.NewEncoder(&raw).Encode(old); err != nil {
		t.Fatal(err)
	}
	sb, err := DecodeStaged(raw.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	finalizeEqualsCommit(t, memStore(t), sb, "format-1")
}

// finalizeEqualsCommit finalizes sb (a staged stageBatch) in st and checks
// that st then equals a store that committed stageBatch directly.
func finalizeEqualsCommit(t *testing.T, st *Store, sb *StagedBatch, what string) {
	t.Helper()
	if _, err := st.Finalize(sb); err != nil {
		t.Fatal(err)
	}
	direct := memStore(t)
	if _, err := direct.Commit(stageBatch()); err != nil {
		t.Fatal(err)
	}
	if digest(t, st) != digest(t, direct) {
		t.Fatalf("%s batch finalized differently from a direct commit", what)
	}
}

// Every truncation of a staged value is an error, never a panic or a
// partial batch.
func TestDecodeStagedTruncated(t *testing.T) {
	sb, err := memStore(t).Stage(stageBatch(), "kafka:t/0", 3, "tok")
	if err != nil {
		t.Fatal(err)
	}
	for n := len(stagedMagic); n < len(sb.raw); n++ {
		if _, err := DecodeStaged(sb.raw[:n]); err == nil {
			t.Fatalf("staged value cut to %d of %d bytes decoded", n, len(sb.raw))
		}
	}
}

func TestStageRefusesBadBatches(t *testing.T) {
	st := memStore(t)
	short := stageBatch()
	short.Sequences[0] = seq("a", 1, 2)
	if _, err := st.Stage(short, "kafka:t/0", 3, "tok"); err == nil {
		t.Fatal("sequence shorter than seq_len staged")
	}
	if _, err := st.Stage(stageBatch(), "kafka:t/1", 3, "tok"); err == nil {
		t.Fatal("batch staged without its source's state")
	}
	if staged, _ := st.Staged(); len(staged) != 0 {
		t.Fatal("a refused batch was staged")
	}
}

// BenchmarkStageFinalize is one ingest commit's store work on disk: 256
// sequences of 2048 tokens (2 MB) with their documents, staged then
// finalized.
func BenchmarkStageFinalize(b *testing.B) {
	h := testHeader()
	h.SeqLen = 2048
	st, err := Open(b.TempDir(), &h, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	batch := &Batch{Sources: map[string][]byte{"kafka:t/0": []byte(`{"next":1}`)}}
	for i := range 256 {
		s := packing.Sequence{Tokens: make([]uint32, 2048)}
		for j := range s.Tokens {
			s.Tokens[j] = uint32(i*j) % 100000
		}
		key := "doc-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		s.Spans = []packing.Span{{DocKey: key, Domain: "code", Length: 2048}}
		batch.Sequences = append(batch.Sequences, s)
		batch.Docs = append(batch.Docs, DocRecord{Key: key, Domain: "code", Source: "kafka:t/0", Position: "offset 1", Tokens: 2047, Bytes: 8000})
	}
	b.SetBytes(256 * 2048 * 4)
	for b.Loop() {
		sb, err := st.Stage(batch, "kafka:t/0", 1, "tok")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Finalize(sb); err != nil {
			b.Fatal(err)
		}
	}
}

func rawKeys(t *testing.T, st *Store, prefix string) []string {
	t.Helper()
	var keys []string
	if err := st.walk(prefix, func(k, _ []byte) error { keys = append(keys, string(k)); return nil }); err != nil {
		t.Fatal(err)
	}
	return keys
}

// A finalized batch's sequences are stored once: in its chunk, referred
// to by number. A stage-and-finalize store's value log is about the size
// of a directly committed one's (with a copy at the final commit it was
// twice as large, and the deleted staged copy never went away).
func TestFinalizedSequencesAreWrittenOnce(t *testing.T) {
	h := testHeader()
	h.SeqLen = 1024 // 2 bytes a token (Low16): 2 KB a sequence, value-log values
	h.VocabSize = 16000
	vlogBytes := func(staged bool) int64 {
		dir := t.TempDir()
		st, err := Open(dir, &h, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 40 {
			b := stageBatch()
			b.Docs = nil // fresh keys are not the point; sequences are
			b.Sequences = nil
			for j := range 20 {
				toks := make([]uint32, h.SeqLen)
				for k := range toks {
					toks[k] = uint32(128 + (i*7919+j*31+k)%(h.VocabSize-128))
				}
				b.Sequences = append(b.Sequences, packing.Sequence{Tokens: toks, Spans: []packing.Span{{DocKey: "k", Domain: "d", Length: h.SeqLen}}})
			}
			if staged {
				sb, err := st.Stage(b, "kafka:t/0", int64(i+1), "tok")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Finalize(sb); err != nil {
					t.Fatal(err)
				}
			} else if _, err := st.Commit(b); err != nil {
				t.Fatal(err)
			}
		}
		if staged && len(rawKeys(t, st, prefChunk)) != 40 {
			t.Fatalf("%d chunks, want one per batch", len(rawKeys(t, st, prefChunk)))
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		var n int64
		files, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
		for _, f := range files {
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			n += fi.Size()
		}
		return n
	}
	direct, staged := vlogBytes(false), vlogBytes(true)
	t.Logf("value log: %d bytes committed directly, %d staged and finalized", direct, staged)
	if float64(staged) > 1.15*float64(direct) {
		t.Fatalf("value log %d bytes after stage+finalize, %d after direct commits: sequences written more than once", staged, direct)
	}
}

// A batch staged in place by an earlier version (format 2 under the
// staging key, no chunk) still finalizes, by copying.
func TestStagedInPlaceStillFinalizes(t *testing.T) {
	st := memStore(t)
	sb, err := st.Stage(stageBatch(), "kafka:t/0", 3, "tok")
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite it as an earlier version left it.
	if _, err := st.write(&encoded{delta: newDelta()}, &Batch{Stage: map[string][]byte{"kafka:t/0": sb.raw}}, &rawOps{del: [][]byte{sb.chunk}}); err != nil {
		t.Fatal(err)
	}
	staged, err := st.Staged()
	if err != nil || staged["kafka:t/0"] == nil || staged["kafka:t/0"].chunk != nil {
		t.Fatalf("Staged() = %v, %v", staged, err)
	}
	finalizeEqualsCommit(t, st, staged["kafka:t/0"], "in-place staged")
}

// Staging a second batch to an end a stored batch already reached is an
// error: its chunk holds final sequences.
func TestStageRefusesAnEndAlreadyStored(t *testing.T) {
	st := memStore(t)
	sb, err := st.Stage(stageBatch(), "kafka:t/0", 3, "tok")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Finalize(sb); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stage(stageBatch(), "kafka:t/0", 3, "tok2"); err == nil {
		t.Fatal("second stage to the same end: no error")
	}
}
