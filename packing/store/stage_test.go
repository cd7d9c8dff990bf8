package store

import (
	"bytes"
	"encoding/gob"
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
		if err != nil || len(staged) != 1 || !bytes.Equal(staged["kafka:t/0"], sb.raw) {
			t.Fatalf("Staged() = %d batches, %v", len(staged), err)
		}
		if restart {
			if sb, err = DecodeStaged(staged["kafka:t/0"]); err != nil {
				t.Fatal(err)
			}
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

		// Discard leaves the store as it was.
		st2 := memStore(t)
		if _, err := st2.Stage(stageBatch(), "kafka:t/0", 3, "tok"); err != nil {
			t.Fatal(err)
		}
		if err := st2.Discard("kafka:t/0"); err != nil {
			t.Fatal(err)
		}
		if digest(t, st2) != empty {
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
	st := memStore(t)
	if _, err := st.Finalize(sb); err != nil {
		t.Fatal(err)
	}
	direct := memStore(t)
	direct.Commit(stageBatch())
	if digest(t, st) != digest(t, direct) {
		t.Fatal("format-1 batch finalized differently from a direct commit")
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
