package pipelines

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emopipe/emopipe/packing/store"
)

// bigFiles writes a 100 MB plain-text document and a JSONL file whose
// first record is 100 MB, followed by a good record.
func bigFiles(t *testing.T, dir string) {
	t.Helper()
	line := strings.Repeat("all work and no play makes jack a dull boy ", 2_400_000) // ~103 MB
	if err := os.WriteFile(filepath.Join(dir, "huge.txt"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "huge.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"id":"huge","text":"` + line + "\"}\n")
	f.WriteString(`{"id":"after-huge","text":"small and fine"}` + "\n")
	f.Close()
}

func TestBadInputIsRejectedAndCountedAndGoodIsPacked(t *testing.T) {
	extra := t.TempDir()
	bigFiles(t, extra)
	if err := os.Symlink(filepath.Join(extra, "does-not-exist"), filepath.Join(extra, "broken-link.txt")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res, err := Pack(context.Background(), packCfg(t, dir, "../testdata/bad", extra))
	if err != nil {
		t.Fatalf("bad input stopped the pack: %v", err)
	}
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	byReason := map[string][]string{}
	st.Rejects(func(r store.Reject) error {
		byReason[r.Reason] = append(byReason[r.Reason], filepath.Base(r.Source)+"@"+r.Position)
		if r.Reason == "id_too_long" && (len(r.DocKey) > 300 || !strings.HasSuffix(r.DocKey, "(4097 bytes)")) {
			t.Errorf("the reject of a 4097-byte id keeps %d bytes of it: %.40q...", len(r.DocKey), r.DocKey)
		}
		return nil
	})
	want := map[string]int{
		"malformed_json":   1, // bad.jsonl line 2
		"missing_text":     3, // lines 3 (no field), 5 (null), 6 (number)
		"empty_text":       2, // line 4, empty.txt
		"invalid_utf8":     2, // line 8, invalid_utf8.txt
		"duplicate_id":     1, // line 9
		"id_too_long":      1, // line 10
		"binary":           1, // binary.txt
		"decompress_error": 2, // truncated .gz and .zst
		"oversize":         2, // huge.txt, huge.jsonl line 1
		"unreadable":       1, // broken-link.txt
	}
	for reason, n := range want {
		if len(byReason[reason]) != n {
			t.Errorf("%s: %d rejects %v, want %d", reason, len(byReason[reason]), byReason[reason], n)
		}
	}
	stats := st.Stats()
	total := 0
	for _, n := range want {
		total += n
	}
	if res.Rejects != total || int(sum(stats.Rejects)) != total {
		t.Errorf("rejects counted %d (store %d), want %d", res.Rejects, sum(stats.Rejects), total)
	}
	for _, id := range []string{"good-1", "good-2", "good-3", "gz-01", "gz-20", "zst-01", "zst-20", "after-huge"} {
		if ok, _ := st.HasDoc(id); !ok {
			t.Errorf("good document %s was not packed", id)
		}
	}
	for _, f := range []string{"good.txt", filepath.Join("nested", "ok.txt")} {
		if ok, _ := st.HasDoc(filepath.Join("../testdata/bad", f)); !ok {
			t.Errorf("good file %s was not packed", f)
		}
	}
	// Records read before a truncated stream broke are whole records; the
	// rest of the file is reported, not guessed at.
	var fromTruncated int
	var keys []string
	st.Docs(func(d store.DocRecord) error {
		if strings.Contains(d.Source, "truncated") {
			fromTruncated++
		}
		keys = append(keys, d.Key)
		return nil
	})
	if got := int(stats.Docs) - fromTruncated; got != 3+20+20+1+1+1+1 { // + README.md, a text file like any other
		t.Errorf("%d documents packed from the intact inputs, want 47: %q", got, keys)
	}
	t.Logf("rejects: %v; %d docs (%d recovered from truncated streams)", byReason, stats.Docs, fromTruncated)
}

func TestInvalidUTF8ReplacePolicyPacksRepairedText(t *testing.T) {
	dir := t.TempDir()
	cfg := packCfg(t, dir, "../testdata/bad/bad.jsonl", "../testdata/bad/invalid_utf8.txt")
	cfg.InvalidUTF8 = UTF8Replace
	if _, err := Pack(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	st, _ := store.Open(dir, nil, store.Options{ReadOnly: true})
	defer st.Close()
	for _, id := range []string{"bad-utf8", "../testdata/bad/invalid_utf8.txt"} {
		if ok, _ := st.HasDoc(id); !ok {
			t.Errorf("%s not packed under the replace policy", id)
		}
	}
	if st.Stats().Rejects["invalid_utf8"] != 0 {
		t.Error("invalid UTF-8 still rejected under the replace policy")
	}
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}
