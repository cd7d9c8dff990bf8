package tokenize

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"unicode/utf8"
)

// The goldens come only from the reference implementations; there is no -update flag.
const regenerate = "regenerate with scripts/tokenizer/make_goldens.py (see its docstring) and review the diff"

type goldenDoc struct {
	I            int    `json:"i"`
	Domain       string `json:"domain"`
	Source       string `json:"source"`
	Text         string `json:"text"`
	B64          string `json:"b64"`
	Replacements int    `json:"replacements"`
	raw          string // the bytes to encode: Text, or the invalid UTF-8 behind B64
}

type goldenTokenizer struct {
	Name         string `json:"name"`
	File         string `json:"file"`
	Bundled      string `json:"bundled"`
	ExportSHA256 string `json:"export_sha256"`
	Golden       string `json:"golden"`
	// Overrides applied to File before parsing, exactly as the script applied them.
	AddedTokensExtra []json.RawMessage `json:"added_tokens_extra"`
	PreTokenizer     json.RawMessage   `json:"pre_tokenizer"`
	RoundTrip        *bool             `json:"round_trip"`
}

type goldenManifest struct {
	Documents  int               `json:"documents"`
	Tokenizers []goldenTokenizer `json:"tokenizers"`
}

func readJSONLines(name string, each func(line []byte) error) error {
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		return fmt.Errorf("%w (%s)", err, regenerate)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		if err := each(sc.Bytes()); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// goldenDocs is read once per test binary; the documents are never modified.
var goldenDocs = sync.OnceValues(func() ([]goldenDoc, error) {
	var docs []goldenDoc
	err := readJSONLines("golden_texts.jsonl.gz", func(line []byte) error {
		var d goldenDoc
		if err := json.Unmarshal(line, &d); err != nil {
			return err
		}
		d.raw = d.Text
		if d.B64 != "" {
			b, err := base64.StdEncoding.DecodeString(d.B64)
			if err != nil {
				return err
			}
			d.raw = string(b)
		}
		docs = append(docs, d)
		return nil
	})
	return docs, err
})

func loadGoldenDocs(t testing.TB) []goldenDoc {
	t.Helper()
	docs, err := goldenDocs()
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

func loadManifest(t testing.TB) goldenManifest {
	t.Helper()
	data, err := os.ReadFile("testdata/goldens.json")
	if err != nil {
		t.Fatalf("%v (%s)", err, regenerate)
	}
	var m goldenManifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func loadGoldenIDs(t testing.TB, name string) [][]uint32 {
	t.Helper()
	var out [][]uint32
	err := readJSONLines(name, func(line []byte) error {
		var rec struct {
			I   int      `json:"i"`
			IDs []uint32 `json:"ids"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return err
		}
		if rec.I != len(out) {
			return fmt.Errorf("record %d out of order", rec.I)
		}
		out = append(out, rec.IDs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var goldenTokenizers sync.Map // manifest name -> *Tokenizer

// goldenTokenizerFor loads a manifest entry; for a bundled tokenizer it also checks that
// MarshalJSON still writes the file the goldens were made from.
func goldenTokenizerFor(t testing.TB, g goldenTokenizer) *Tokenizer {
	t.Helper()
	if tk, ok := goldenTokenizers.Load(g.Name); ok {
		return tk.(*Tokenizer)
	}
	tk, err := loadGoldenTokenizer(g)
	if err != nil {
		t.Fatal(err)
	}
	goldenTokenizers.Store(g.Name, tk)
	return tk
}

func loadGoldenTokenizer(g goldenTokenizer) (*Tokenizer, error) {
	if g.Bundled != "" {
		tk, err := Bundled(g.Bundled)
		if err != nil {
			return nil, err
		}
		js, err := tk.MarshalJSON()
		if err != nil {
			return nil, err
		}
		if sum := sha256.Sum256(js); hex.EncodeToString(sum[:]) != g.ExportSHA256 {
			return nil, fmt.Errorf("MarshalJSON of bundled %s changed since the goldens were made; %s", g.Bundled, regenerate)
		}
		return tk, nil
	}
	path := filepath.Join("testdata", g.File)
	if g.AddedTokensExtra == nil && g.PreTokenizer == nil {
		return Load(path)
	}
	js := readGzipJSON(path)
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, err
	}
	if g.AddedTokensExtra != nil {
		var added []json.RawMessage
		if err := json.Unmarshal(doc["added_tokens"], &added); err != nil {
			return nil, err
		}
		doc["added_tokens"], _ = json.Marshal(append(added, g.AddedTokensExtra...))
	}
	if g.PreTokenizer != nil {
		doc["pre_tokenizer"] = g.PreTokenizer
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return Parse(js, g.Name)
}

func readGzipJSON(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		panic(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		panic(err)
	}
	return data
}

// describeMismatch shows where two id sequences first differ, as token strings.
func describeMismatch(tk *Tokenizer, got, want []uint32) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	show := func(ids []uint32) []string {
		lo, hi := max(0, i-3), min(len(ids), i+5)
		var out []string
		for _, id := range ids[lo:hi] {
			out = append(out, fmt.Sprintf("%d:%q", id, tk.TokenString(id)))
		}
		return out
	}
	return fmt.Sprintf("first difference at token %d of %d/%d\n  got  %v\n  want %v", i, len(got), len(want), show(got), show(want))
}

// TestGolden: every document encodes to exactly the ids Hugging Face tokenizers gave.
func TestGolden(t *testing.T) {
	docs := loadGoldenDocs(t)
	m := loadManifest(t)
	if m.Documents != len(docs) || len(docs) < 300 {
		t.Fatalf("manifest says %d documents, golden_texts has %d; %s", m.Documents, len(docs), regenerate)
	}
	for _, g := range m.Tokenizers {
		t.Run(g.Name, func(t *testing.T) {
			tk := goldenTokenizerFor(t, g)
			want := loadGoldenIDs(t, g.Golden)
			if len(want) != len(docs) {
				t.Fatalf("%s has %d records for %d documents; %s", g.Golden, len(want), len(docs), regenerate)
			}
			bad := 0
			for i, d := range docs {
				got := tk.Encode(d.raw)
				if !slices.Equal(got, want[i]) {
					bad++
					if bad <= 5 {
						t.Errorf("doc %d (%s %s): %s", i, d.Domain, d.Source, describeMismatch(tk, got, want[i]))
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d/%d documents differ from Hugging Face tokenizers", bad, len(docs))
			}
		})
	}
}

// TestGoldenBatch: EncodeBatch and an Encoder return the goldens in order.
func TestGoldenBatch(t *testing.T) {
	docs := loadGoldenDocs(t)
	texts := make([]string, len(docs))
	for i, d := range docs {
		texts[i] = d.raw
	}
	for _, g := range loadManifest(t).Tokenizers {
		t.Run(g.Name, func(t *testing.T) {
			tk := goldenTokenizerFor(t, g)
			want := loadGoldenIDs(t, g.Golden)
			got := tk.EncodeBatch(texts)
			for i := range want {
				if !slices.Equal(got[i], want[i]) {
					t.Fatalf("doc %d: %s", i, describeMismatch(tk, got[i], want[i]))
				}
			}
			// So does a batch on a set number of goroutines.
			for _, workers := range []int{1, 3} {
				got := tk.EncodeBatchN(texts, workers)
				for i := range want {
					if !slices.Equal(got[i], want[i]) {
						t.Fatalf("%d workers, doc %d: %s", workers, i, describeMismatch(tk, got[i], want[i]))
					}
				}
			}
			// An Encoder (one goroutine's, as the ingester's pool uses)
			// gives the same ids, and later results leave earlier ones be.
			enc := tk.NewEncoder()
			defer enc.Close()
			for i := range texts {
				got[i] = enc.Encode(texts[i])
			}
			for i := range want {
				if !slices.Equal(got[i], want[i]) {
					t.Fatalf("Encoder, doc %d: %s", i, describeMismatch(tk, got[i], want[i]))
				}
			}
		})
	}
}

// TestGoldenRoundTrip: Decode(Encode(x)) == x for valid UTF-8.
func TestGoldenRoundTrip(t *testing.T) {
	docs := loadGoldenDocs(t)
	for _, g := range loadManifest(t).Tokenizers {
		t.Run(g.Name, func(t *testing.T) {
			if g.RoundTrip != nil && !*g.RoundTrip {
				t.Skip("lstrip/rstrip tokens swallow whitespace and add_prefix_space adds it")
			}
			tk := goldenTokenizerFor(t, g)
			for _, d := range docs {
				if got := tk.Decode(tk.Encode(d.Text)); got != d.Text {
					t.Errorf("doc %d (%s): round trip changed the text", d.I, d.Domain)
				}
			}
		})
	}
}

// TestSanitizeUTF8Golden: replacement matches Python's errors="replace" on every
// invalid-UTF-8 document.
func TestSanitizeUTF8Golden(t *testing.T) {
	n := 0
	for _, d := range loadGoldenDocs(t) {
		if d.B64 == "" {
			continue
		}
		if !utf8.ValidString(d.raw) {
			n++
		}
		got, k := SanitizeUTF8([]byte(d.raw))
		if got != d.Text || k != d.Replacements {
			t.Errorf("doc %d: SanitizeUTF8 = %q, %d; Python: %q, %d", d.I, got, k, d.Text, d.Replacements)
		}
	}
	if n < 10 {
		t.Fatalf("only %d invalid-UTF-8 documents", n)
	}
}
