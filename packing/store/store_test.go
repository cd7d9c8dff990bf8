package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/emopipe/emopipe/packing"
)

func testHeader() Header {
	return Header{Tokenizer: "t", TokenizerFingerprint: "abc", VocabSize: 100, SeqLen: 4, Mode: packing.Concat, AppendEOS: true, EOS: 1, PAD: 2}
}

func seq(doc string, toks ...uint32) packing.Sequence {
	return packing.Sequence{Tokens: toks, Spans: []packing.Span{{DocKey: doc, Domain: "d", Length: len(toks)}}}
}

func TestHeaderMismatchRefused(t *testing.T) {
	dir := t.TempDir()
	h := testHeader()
	st, err := Open(dir, &h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	other := h
	other.TokenizerFingerprint = "def"
	_, err = Open(dir, &other, Options{})
	if !errors.Is(err, ErrHeaderMismatch) {
		t.Fatalf("writer with another tokenizer: err = %v, want ErrHeaderMismatch", err)
	}
	t.Log(err)
	other = h
	other.SeqLen = 8
	if _, err = Open(dir, &other, Options{}); !errors.Is(err, ErrHeaderMismatch) {
		t.Fatalf("writer with another seq_len: err = %v", err)
	}
	st, err = Open(dir, &h, Options{})
	if err != nil {
		t.Fatalf("same header refused: %v", err)
	}
	st.Close()
}

func TestSecondProcessIsLockedOut(t *testing.T) {
	dir := t.TempDir()
	h := testHeader()
	st, err := Open(dir, &h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := Open(dir, &h, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestOpenMissingStore(t *testing.T) {
	if _, err := Open(t.TempDir(), nil, Options{ReadOnly: true}); !errors.Is(err, ErrNoStore) {
		t.Fatalf("err = %v, want ErrNoStore", err)
	}
}

func TestCommitPersistsEverythingTogether(t *testing.T) {
	dir := t.TempDir()
	h := testHeader()
	st, err := Open(dir, &h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := &Batch{
		Sequences: []packing.Sequence{seq("a", 5, 6, 7, 1), seq("b", 8, 1, 2, 2)},
		Docs:      []DocRecord{{Key: "a", Domain: "d", Tokens: 3, Bytes: 10}, {Key: "b", Domain: "d", Tokens: 1, Bytes: 3}},
		Rejects:   []Reject{{Source: "f", Position: "line 3", Reason: "malformed_json"}},
		Sources:   map[string][]byte{"files:x": []byte("pos")},
	}
	b.Sequences[1].Spans[0].Length = 2 // two padding positions
	first, err := st.Commit(b)
	if err != nil || first != 0 {
		t.Fatalf("commit: %d %v", first, err)
	}
	st.Close()

	st, err = Open(dir, nil, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := st.NumSequences(); n != 2 {
		t.Fatalf("NumSequences = %d", n)
	}
	got, err := st.Sequence(1)
	if err != nil || !reflect.DeepEqual(got, b.Sequences[1]) {
		t.Fatalf("sequence 1 = %+v, %v", got, err)
	}
	s := st.Stats()
	if s.Sequences != 2 || s.Tokens != 6 || s.Padding != 2 || s.Docs != 2 || s.Rejects["malformed_json"] != 1 || s.Domains["d"].Docs != 2 {
		t.Fatalf("stats %+v", s)
	}
	if v, _ := st.SourceState("files:x"); string(v) != "pos" {
		t.Fatalf("source state %q", v)
	}
	if ok, _ := st.HasDoc("b"); !ok {
		t.Fatal("doc b missing")
	}
	var rej []Reject
	st.Rejects(func(r Reject) error { rej = append(rej, r); return nil })
	if len(rej) != 1 || rej[0].Position != "line 3" {
		t.Fatalf("rejects %+v", rej)
	}
	if _, err := st.Commit(&Batch{}); err == nil {
		t.Fatal("commit on a read-only store succeeded")
	}
}

func TestCommitRejectsBadSequences(t *testing.T) {
	h := testHeader()
	st, err := Open("", &h, Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Commit(&Batch{Sequences: []packing.Sequence{seq("a", 1, 2)}}); err == nil {
		t.Fatal("short sequence accepted")
	}
	bad := seq("a", 1, 2, 3, 4)
	bad.Spans[0].Length = 9
	if _, err := st.Commit(&Batch{Sequences: []packing.Sequence{bad}}); err == nil {
		t.Fatal("span past the end accepted")
	}
	if st.NumSequences() != 0 || st.Stats().Sequences != 0 {
		t.Fatal("failed commit left data behind")
	}
}

func fill(t *testing.T, st *Store, n int) {
	t.Helper()
	var b Batch
	for i := 0; i < n; i++ {
		b.Sequences = append(b.Sequences, seq(fmt.Sprint(i), uint32(i), 0, 0, 0))
	}
	if _, err := st.Commit(&b); err != nil {
		t.Fatal(err)
	}
}

func TestReaderShuffleCoversEachSequenceOncePerEpoch(t *testing.T) {
	h := testHeader()
	st, _ := Open("", &h, Options{InMemory: true})
	defer st.Close()
	fill(t, st, 50)
	r := st.NewReader(Cursor{Seed: 42, Shuffle: true})
	var epoch0, epoch1 []uint64
	for i := 0; i < 100; i++ {
		n, s, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if uint64(s.Tokens[0]) != n {
			t.Fatalf("sequence %d holds %d", n, s.Tokens[0])
		}
		if i < 50 {
			epoch0 = append(epoch0, n)
		} else {
			epoch1 = append(epoch1, n)
		}
	}
	for _, ep := range [][]uint64{epoch0, epoch1} {
		seen := map[uint64]bool{}
		for _, n := range ep {
			seen[n] = true
		}
		if len(seen) != 50 {
			t.Fatalf("epoch covered %d distinct sequences, want 50", len(seen))
		}
	}
	if reflect.DeepEqual(epoch0, epoch1) {
		t.Fatal("epochs share one order; each epoch should reshuffle")
	}
	sorted := true
	for i := 1; i < 50; i++ {
		sorted = sorted && epoch0[i] > epoch0[i-1]
	}
	if sorted {
		t.Fatal("shuffled order is the store order")
	}
	if r.Cursor().Epoch != 1 || r.Cursor().Pos != 50 {
		t.Fatalf("cursor %+v", r.Cursor())
	}
}

// A reader rebuilt from a saved cursor yields exactly what the original
// would have: the trainer's resume depends on it.
func TestReaderResumesFromCursor(t *testing.T) {
	h := testHeader()
	st, _ := Open("", &h, Options{InMemory: true})
	defer st.Close()
	fill(t, st, 30)
	ref := st.NewReader(Cursor{Seed: 7, Shuffle: true})
	var want []uint64
	for i := 0; i < 75; i++ {
		n, _, _ := ref.Next()
		want = append(want, n)
	}
	r := st.NewReader(Cursor{Seed: 7, Shuffle: true})
	var got []uint64
	for i := 0; i < 75; i++ {
		if i%11 == 0 {
			b, _ := r.Cursor().MarshalText()
			var c Cursor
			if err := c.UnmarshalText(b); err != nil {
				t.Fatal(err)
			}
			r = st.NewReader(c)
		}
		n, _, _ := r.Next()
		got = append(got, n)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatal("resumed reader diverged")
	}
}

func TestReaderGrowingStoreJoinsNextEpoch(t *testing.T) {
	h := testHeader()
	st, _ := Open("", &h, Options{InMemory: true})
	defer st.Close()
	r := st.NewReader(Cursor{Seed: 1})
	if _, _, err := r.Next(); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty store: %v", err)
	}
	fill(t, st, 3)
	r.Next()
	fill(t, st, 3) // sequences 3..5 arrive mid-epoch
	for i := 0; i < 2; i++ {
		if n, _, _ := r.Next(); n > 2 {
			t.Fatalf("new sequence %d read before the epoch of 3 ended", n)
		}
	}
	if n, _, _ := r.Next(); r.Cursor().Epoch != 1 || r.Cursor().EpochSize != 6 || n != 0 {
		t.Fatalf("second epoch: n=%d cursor %+v", n, r.Cursor())
	}
}

func TestPermutationIsPinned(t *testing.T) {
	// Regression pin: if this changes, every saved cursor resumes into a
	// different data order. Change it only with a store format bump.
	if got, want := Permutation(1, 0, 8), []uint32{0, 3, 1, 2, 4, 6, 5, 7}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Permutation(1,0,8) = %v, want %v", got, want)
	}
	if got, want := Permutation(1, 1, 8), []uint32{2, 1, 5, 3, 6, 7, 0, 4}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Permutation(1,1,8) = %v, want %v", got, want)
	}
}

func TestDigestTracksContent(t *testing.T) {
	h := testHeader()
	a, _ := Open("", &h, Options{InMemory: true})
	b, _ := Open("", &h, Options{InMemory: true})
	defer a.Close()
	defer b.Close()
	fill(t, a, 5)
	fill(t, b, 5)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatal("equal content, different digests")
	}
	fill(t, b, 1)
	db, _ = b.Digest()
	if da == db {
		t.Fatal("different content, equal digests")
	}
}

func TestFollowingReaderReadsEachSequenceOnceInCommitOrder(t *testing.T) {
	h := testHeader()
	st, _ := Open("", &h, Options{InMemory: true})
	defer st.Close()
	r := st.NewReader(Cursor{Follow: true, Seed: 3, Shuffle: true}) // Seed/Shuffle ignored
	if _, _, err := r.Next(); !errors.Is(err, ErrCaughtUp) {
		t.Fatalf("empty store: %v, want ErrCaughtUp", err)
	}
	changed := st.Changed()
	fill(t, st, 3)
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by a commit that added sequences")
	}
	var got []uint64
	read := func() {
		for {
			n, _, err := r.Next()
			if errors.Is(err, ErrCaughtUp) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, n)
		}
	}
	read()
	fill(t, st, 4)
	// A reader resumed from the cursor goes on where the first stopped.
	b, _ := r.Cursor().MarshalText()
	var c Cursor
	if err := c.UnmarshalText(b); err != nil {
		t.Fatal(err)
	}
	r = st.NewReader(c)
	read()
	want := []uint64{0, 1, 2, 3, 4, 5, 6}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	if c := r.Cursor(); c.Epoch != 0 || c.Pos != 7 {
		t.Fatalf("cursor %+v: a following reader never starts a second pass", c)
	}
}

// Badger creates a memtable's WAL file empty and sizes it next; a kill -9
// in between leaves a zero-length .mem file that Badger itself then
// refuses to open ("Create a new file"). Such a file holds no writes, so
// the store opens past it with everything it had.
func TestOpenAfterKillBetweenMemtableCreateAndSize(t *testing.T) {
	dir := t.TempDir()
	h := testHeader()
	st, err := Open(dir, &h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, st, 5)
	want, _ := st.Digest()
	st.Close()
	if err := os.WriteFile(filepath.Join(dir, "00007.mem"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = Open(dir, nil, Options{})
	if err != nil {
		t.Fatalf("reopen after an interrupted memtable creation: %v", err)
	}
	defer st.Close()
	if got, _ := st.Digest(); got != want || st.NumSequences() != 5 {
		t.Fatalf("store changed: %d sequences", st.NumSequences())
	}
}

// appendDocJSON writes the bytes json.Marshal writes, for plain fields and
// for every kind of character encoding/json escapes.
func TestAppendDocJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"", "kafka:t/3", "offset 17", "code", "a\"b", `c\d`, "<&>", "\n\t\x00\x1f", "é", "\u2028\u2029", "\x7f", "\xff", "😀"}
	pick := func() string {
		s := ""
		for range r.IntN(4) {
			s += pieces[r.IntN(len(pieces))]
		}
		return s
	}
	for range 5000 {
		d := DocRecord{Key: pick(), Domain: pick(), Source: pick(), Position: pick(),
			Tokens: r.IntN(1 << 20), Bytes: r.IntN(1<<30) - 1<<20, Time: r.Int64N(1<<45) * int64(r.IntN(2))}
		want, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendDocJSON(nil, &d); string(got) != string(want) {
			t.Fatalf("%+v:\n got %s\nwant %s", d, got, want)
		}
	}
}

// Stats count at most MaxDomainStats domains one by one, the rest
// together, and which ones is the same in every store built alike.
func TestStatsBoundTheDomainsTheyCount(t *testing.T) {
	const n = MaxDomainStats + 500
	build := func() (Stats, string) {
		h := testHeader()
		st, err := Open(t.TempDir(), &h, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for c := 0; c < 3; c++ { // over several commits
			var b Batch
			for i := c; i < n; i += 3 {
				key := fmt.Sprintf("doc-%d", i)
				b.Sequences = append(b.Sequences, seq(key, 5, 6, 7, 1))
				b.Docs = append(b.Docs, DocRecord{Key: key, Domain: fmt.Sprintf("domain-%05d", i), Tokens: 3, Bytes: 10})
			}
			if _, err := st.Commit(&b); err != nil {
				t.Fatal(err)
			}
		}
		d, err := st.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return st.Stats(), d
	}
	s1, d1 := build()
	if len(s1.Domains) != MaxDomainStats+1 {
		t.Fatalf("%d domain entries, want %d and %q", len(s1.Domains), MaxDomainStats, OtherDomains)
	}
	var docs uint64
	for _, ds := range s1.Domains {
		docs += ds.Docs
	}
	if docs != n || s1.Docs != n {
		t.Fatalf("domains count %d documents (store %d), want %d", docs, s1.Docs, n)
	}
	if o := s1.Domains[OtherDomains]; o == nil || o.Docs == 0 {
		t.Fatalf("no documents under %q", OtherDomains)
	}
	s2, d2 := build()
	if !reflect.DeepEqual(s1, s2) || d1 != d2 {
		t.Fatal("two stores built alike differ in which domains they count")
	}
}

// A store keeps its format version's sequence encoding: a new store writes
// Low16 tokens, a version-1 store is continued (committed and staged) in
// uint32 tokens that its own emopipe reads, and a store from a newer
// emopipe is refused with the version named.
func TestFormatVersionPicksTheEncoding(t *testing.T) {
	h := testHeader()
	firstByte := func(st *Store, key []byte) byte {
		t.Helper()
		v, err := st.get(string(key))
		if err != nil || len(v) == 0 {
			t.Fatalf("%q: %v, %d bytes", key, err, len(v))
		}
		return v[0]
	}
	setVersion := func(dir string, v int) {
		t.Helper()
		st, err := Open(dir, &h, Options{})
		if err != nil {
			t.Fatal(err)
		}
		old := st.Header()
		old.FormatVersion = v
		if err := st.db.Update(func(txn *badger.Txn) error { return putJSON(txn, keyHeader, old) }); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	for _, tc := range []struct {
		version int
		enc     packing.Encoding
	}{{FormatVersion, packing.Low16}, {1, packing.Fixed32}} {
		dir := t.TempDir()
		setVersion(dir, tc.version)
		st, err := Open(dir, &h, Options{})
		if err != nil {
			t.Fatalf("version %d: %v", tc.version, err)
		}
		if got := st.Header().FormatVersion; got != tc.version {
			t.Fatalf("opened a version-%d store as version %d", tc.version, got)
		}
		want := seq("a", 5, 300, 70000, 1)
		if _, err := st.Commit(&Batch{Sequences: []packing.Sequence{want}}); err != nil {
			t.Fatal(err)
		}
		if b := firstByte(st, seqKey(0)); b != byte(tc.enc) {
			t.Errorf("version %d: committed sequence in encoding %d, want %d", tc.version, b, tc.enc)
		}
		sb, err := st.Stage(stageBatch(), "kafka:t/0", 3, "tok")
		if err != nil {
			t.Fatal(err)
		}
		if b := sb.enc.seqs[0][0]; b != byte(tc.enc) {
			t.Errorf("version %d: staged sequence in encoding %d, want %d", tc.version, b, tc.enc)
		}
		if _, err := st.Finalize(sb); err != nil {
			t.Fatal(err)
		}
		for n := range st.NumSequences() {
			if _, err := st.Sequence(n); err != nil {
				t.Fatalf("version %d: sequence %d: %v", tc.version, n, err)
			}
		}
		if got, _ := st.Sequence(0); !reflect.DeepEqual(got, want) {
			t.Errorf("version %d: read back %+v, want %+v", tc.version, got, want)
		}
		st.Close()
	}
	dir := t.TempDir()
	setVersion(dir, FormatVersion+1)
	_, err := Open(dir, &h, Options{})
	if !errors.Is(err, ErrHeaderMismatch) || !strings.Contains(err.Error(), "newer emopipe") {
		t.Fatalf("store of a newer version: err = %v", err)
	}
	if _, err := Open(dir, nil, Options{ReadOnly: true}); !errors.Is(err, ErrHeaderMismatch) {
		t.Fatalf("reading a store of a newer version: err = %v", err)
	}
}
