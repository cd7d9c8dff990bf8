package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/emopipe/emopipe/packing"
)

// With less free space than MinFree, a commit is refused with ErrDiskFull
// before anything is written (a Badger write that finds the disk full is
// a SIGBUS, not an error), and the store keeps what it held.
func TestCommitRefusedBelowMinFree(t *testing.T) {
	if _, ok := freeBytes(t.TempDir()); !ok {
		t.Skip("free space is not measured on this platform")
	}
	dir := t.TempDir()
	h := testHeader()
	st, err := Open(dir, &h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, st, 3)
	st.Close()

	st, err = Open(dir, &h, Options{MinFree: 1 << 62}) // more than any disk has
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Commit(&Batch{Sequences: []packing.Sequence{seq("x", 1, 2, 3, 4)}, Docs: []DocRecord{{Key: "x"}}})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("commit with too little free space: %v, want ErrDiskFull", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	st.Close()

	st, err = Open(dir, nil, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := st.NumSequences(); n != 3 {
		t.Fatalf("%d sequences after the refused commit, want the 3 before it", n)
	}
	if ok, _ := st.HasDoc("x"); ok {
		t.Fatal("the refused commit's document is in the store")
	}
}

// EMOPIPE_STORE_MIN_FREE_MB sets the margin when Options leave it; a value
// that is not a number is an error at Open, and 0 turns the check off.
func TestMinFreeFromEnvironment(t *testing.T) {
	if _, ok := freeBytes(t.TempDir()); !ok {
		t.Skip("free space is not measured on this platform")
	}
	h := testHeader()
	t.Setenv("EMOPIPE_STORE_MIN_FREE_MB", "lots")
	if st, err := Open(t.TempDir(), &h, Options{}); err == nil {
		st.Close()
		t.Fatal("EMOPIPE_STORE_MIN_FREE_MB=lots accepted")
	}
	for _, c := range []struct {
		env     string
		refused bool
	}{{"99999999999999", true}, {"0", false}} {
		t.Setenv("EMOPIPE_STORE_MIN_FREE_MB", c.env)
		st, err := Open(t.TempDir(), &h, Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.Commit(&Batch{Sequences: []packing.Sequence{seq("x", 1, 2, 3, 4)}})
		st.Close()
		if errors.Is(err, ErrDiskFull) != c.refused {
			t.Errorf("EMOPIPE_STORE_MIN_FREE_MB=%s: commit gave %v", c.env, err)
		}
	}
}

// Bytes damaged in the value log make the sequences they hold an error
// (packing.ErrCorrupt), never different tokens: Badger checks a value's
// checksum on read only when asked, and without it random bytes came back
// as token ids in the billions.
func TestDamagedValueLogIsAnErrorNotOtherTokens(t *testing.T) {
	dir := t.TempDir()
	h := testHeader()
	h.SeqLen = 1024 // 2 bytes a token (Low16): 2 KB a sequence, over the value threshold, in the value log
	st, err := Open(dir, &h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	for i := range 200 {
		toks := make([]uint32, h.SeqLen)
		for j := range toks {
			toks[j] = uint32(1000 + i*7 + j%50)
		}
		b.Sequences = append(b.Sequences, seq(fmt.Sprint(i), toks...))
	}
	if _, err := st.Commit(&b); err != nil {
		t.Fatal(err)
	}
	st.Close()

	logs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if len(logs) != 1 {
		t.Fatalf("value logs %v", logs)
	}
	f, err := os.OpenFile(logs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 64)
	for i := range junk {
		junk[i] = byte(i*37 + 11)
	}
	if _, err := f.WriteAt(junk, 100*2100); err != nil { // inside sequence ~100
		t.Fatal(err)
	}
	f.Close()

	st, err = Open(dir, nil, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	damaged := 0
	for i := range b.Sequences {
		got, err := st.Sequence(uint64(i))
		switch {
		case errors.Is(err, packing.ErrCorrupt):
			damaged++
		case err != nil:
			t.Fatalf("sequence %d: %v, want packing.ErrCorrupt", i, err)
		case !reflect.DeepEqual(got, b.Sequences[i]):
			t.Fatalf("sequence %d read back with other tokens and no error", i)
		}
	}
	if damaged == 0 {
		t.Fatal("no sequence reported damaged")
	}
}
