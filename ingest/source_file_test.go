package ingest

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zst(b []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	return enc.EncodeAll(b, nil)
}

func drain(t *testing.T, s *FileSource) (docs []Document, rejects []Reject, positions []FilePos) {
	t.Helper()
	for {
		it, err := s.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		positions = append(positions, it.Next)
		if it.Doc != nil {
			docs = append(docs, *it.Doc)
		} else {
			rejects = append(rejects, *it.Reject)
		}
	}
}

const jsonl = `{"id":"a","text":"alpha","domain":"x"}
{"id":7,"text":"seven"}

{"text":"no id"}
{"id":"b","text":
{"id":"c"}
{"id":"d","text":""}
{"id":"e","text":42}
`

func TestFormatsAndRejects(t *testing.T) {
	dir := t.TempDir()
	files := []string{
		writeFile(t, filepath.Join(dir, "a.jsonl"), []byte(jsonl)),
		writeFile(t, filepath.Join(dir, "b.jsonl.gz"), gz([]byte(`{"id":"gz","text":"zipped"}`+"\n"))),
		writeFile(t, filepath.Join(dir, "c.ndjson.zst"), zst([]byte(`{"id":"zs","text":"zstd"}`))),
		writeFile(t, filepath.Join(dir, "d.txt"), []byte("plain text file\n")),
		writeFile(t, filepath.Join(dir, "e.txt.gz"), gz([]byte("gzipped text"))),
		writeFile(t, filepath.Join(dir, "bin.txt"), append([]byte("\x7fELF"), make([]byte, 100)...)),
		filepath.Join(dir, "missing.txt"),
	}
	cfg := DefaultFileConfig()
	cfg.Domain = "fallback"
	docs, rejects, _ := drain(t, NewFileSource(files, cfg, FilePos{}))
	var ids []string
	for _, d := range docs {
		ids = append(ids, d.ID+"="+string(d.Text)+"@"+d.Domain)
	}
	want := []string{"a=alpha@x", "7=seven@fallback", files[0] + ":4=no id@fallback", "d=@fallback",
		"gz=zipped@fallback", "zs=zstd@fallback", files[3] + "=plain text file\n@fallback", files[4] + "=gzipped text@fallback"}
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("docs\n got %q\nwant %q", ids, want)
	}
	var reasons []string
	for _, r := range rejects {
		reasons = append(reasons, r.Reason+"@"+r.Position)
	}
	wantR := []string{"malformed_json@line 5", "missing_text@line 6", "missing_text@line 8", "binary@file", "unreadable@file"}
	if !reflect.DeepEqual(reasons, wantR) {
		t.Fatalf("rejects\n got %q\nwant %q", reasons, wantR)
	}
}

// Resuming at any reported position yields exactly the rest of the items.
func TestResumeAtEveryPosition(t *testing.T) {
	dir := t.TempDir()
	files := []string{
		writeFile(t, filepath.Join(dir, "a.jsonl"), []byte(jsonl)),
		writeFile(t, filepath.Join(dir, "b.txt"), []byte("b")),
		writeFile(t, filepath.Join(dir, "c.jsonl.gz"), gz([]byte("{\"text\":\"1\"}\n\n{\"text\":\"2\"}\n"))),
	}
	cfg := DefaultFileConfig()
	all, allRej, pos := drain(t, NewFileSource(files, cfg, FilePos{}))
	total := len(all) + len(allRej)
	for i, p := range pos {
		docs, rej, _ := drain(t, NewFileSource(files, cfg, p))
		if got := len(docs) + len(rej); got != total-i-1 {
			t.Fatalf("resume at %+v (after item %d): %d items, want %d", p, i, got, total-i-1)
		}
		if len(docs) > 0 && !reflect.DeepEqual(docs[len(docs)-1], all[len(all)-1]) {
			t.Fatalf("resume at %+v ends with a different document", p)
		}
	}
}

func TestOversizeRecordIsRejectedNotBuffered(t *testing.T) {
	dir := t.TempDir()
	big := `{"id":"big","text":"` + strings.Repeat("x", 3<<20) + `"}`
	f := writeFile(t, filepath.Join(dir, "a.jsonl"), []byte(big+"\n"+`{"id":"ok","text":"fine"}`+"\n"))
	txt := writeFile(t, filepath.Join(dir, "big.txt"), bytes.Repeat([]byte("y"), 2<<20))
	cfg := DefaultFileConfig()
	cfg.MaxDocBytes = 1 << 20
	docs, rejects, _ := drain(t, NewFileSource([]string{f, txt}, cfg, FilePos{}))
	if len(docs) != 1 || docs[0].ID != "ok" {
		t.Fatalf("docs %v", docs)
	}
	if len(rejects) != 2 || rejects[0].Reason != ReasonOversize || rejects[1].Reason != ReasonOversize || rejects[0].Bytes < 3<<20 {
		t.Fatalf("rejects %+v", rejects)
	}
}

func TestTruncatedGzipKeepsWhatWasRead(t *testing.T) {
	dir := t.TempDir()
	var lines strings.Builder
	for i := 0; i < 2000; i++ {
		lines.WriteString(`{"text":"line number ` + strings.Repeat("z", i%50) + `"}` + "\n")
	}
	data := gz([]byte(lines.String()))
	f := writeFile(t, filepath.Join(dir, "t.jsonl.gz"), data[:len(data)*2/3])
	next := writeFile(t, filepath.Join(dir, "u.txt"), []byte("after"))
	docs, rejects, _ := drain(t, NewFileSource([]string{f, next}, DefaultFileConfig(), FilePos{}))
	if len(docs) < 100 || len(docs) >= 2001 {
		t.Fatalf("%d documents read from a truncated archive", len(docs))
	}
	if string(docs[len(docs)-1].Text) != "after" {
		t.Fatal("the file after the truncated one was not read")
	}
	if len(rejects) != 1 || rejects[0].Reason != ReasonDecompress {
		t.Fatalf("rejects %+v", rejects)
	}
}

func TestInvalidUTF8InJSON(t *testing.T) {
	line := []byte("{\"id\":\"u\",\"text\":\"ok \xff\xfe bad\"}")
	if _, rej := DefaultFields().ParseJSON(line, "x"); rej == nil || rej.Reason != ReasonInvalidUTF8 {
		t.Fatalf("reject = %+v, want invalid_utf8", rej)
	}
}

func TestCustomFields(t *testing.T) {
	f := Fields{ID: "doc_id", Text: "body", Domain: "src"}
	d, rej := f.ParseJSON([]byte(`{"doc_id":"q","body":"hello","src":"law"}`), "x")
	if rej != nil || d.ID != "q" || string(d.Text) != "hello" || d.Domain != "law" {
		t.Fatalf("%+v %+v", d, rej)
	}
}

func TestExpandPathsSortsAndRecurses(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "b", "2.txt"), []byte("x"))
	writeFile(t, filepath.Join(dir, "a.txt"), []byte("x"))
	writeFile(t, filepath.Join(dir, "b", "1.txt"), []byte("x"))
	got, err := ExpandPaths([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "a.txt"), filepath.Join(dir, "b", "1.txt"), filepath.Join(dir, "b", "2.txt")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
	if _, err := ExpandPaths([]string{filepath.Join(dir, "nope")}); err == nil {
		t.Fatal("missing input accepted")
	}
}
