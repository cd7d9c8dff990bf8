package tokenize

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func bundledT(t testing.TB, name string) *Tokenizer {
	t.Helper()
	tk, err := Bundled(name)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestBundled(t *testing.T) {
	tests := []struct {
		name       string
		want       string
		vocab      int
		eos        uint32
		pad        uint32
		hasPAD     bool
		helloWorld []uint32
	}{
		{name: "", want: "dolma2", vocab: 100278, eos: 100257, pad: 100277, hasPAD: true, helloWorld: []uint32{9906, 1917, 0}},
		{name: "dolma2", want: "dolma2", vocab: 100278, eos: 100257, pad: 100277, hasPAD: true, helloWorld: []uint32{9906, 1917, 0}},
		{name: "gpt2", want: "gpt2", vocab: 50257, eos: 50256, helloWorld: []uint32{15496, 995, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			tk := bundledT(t, tc.name)
			if tk.Name() != tc.want || tk.VocabSize() != tc.vocab {
				t.Errorf("Name, VocabSize = %q, %d; want %q, %d", tk.Name(), tk.VocabSize(), tc.want, tc.vocab)
			}
			if id, ok := tk.EOS(); !ok || id != tc.eos {
				t.Errorf("EOS = %d, %v; want %d", id, ok, tc.eos)
			}
			if id, ok := tk.PAD(); ok != tc.hasPAD || id != tc.pad {
				t.Errorf("PAD = %d, %v; want %d, %v", id, ok, tc.pad, tc.hasPAD)
			}
			if got := tk.Encode("Hello world!"); !slices.Equal(got, tc.helloWorld) {
				t.Errorf("Encode = %v, want %v", got, tc.helloWorld)
			}
			eos, _ := tk.EOS()
			if got := tk.Encode("a<|endoftext|>b"); len(got) != 3 || got[1] != eos {
				t.Errorf("special token in text: %v", got)
			}
			if s := tk.TokenString(eos); s != "<|endoftext|>" {
				t.Errorf("TokenString(EOS) = %q", s)
			}
			if id, ok := tk.TokenID("Ġworld"); !ok || id != tc.helloWorld[1] {
				t.Errorf("TokenID(Ġworld) = %d, %v", id, ok)
			}
			if len(tk.Warnings()) != 0 {
				t.Errorf("warnings: %v", tk.Warnings())
			}
		})
	}
	if _, err := Bundled("llama"); !errors.Is(err, ErrUnknownBundled) {
		t.Errorf("Bundled(llama) error = %v, want ErrUnknownBundled", err)
	}
	// Ids the vocabulary does not define (dolma2 has no 100256) decode to nothing, as HF.
	tk := bundledT(t, "dolma2")
	if tk.TokenString(100256) != "" || tk.TokenBytes(100256) != nil || tk.Decode([]uint32{9906, 100256, 1 << 30}) != "Hello" {
		t.Errorf("unknown ids are not skipped")
	}
}

// TestBundledMergesMatchHFConverter: deriving merges from ranks gives exactly the
// merges of the HF-converted cl100k tokenizer.json (same ids, same order).
func TestBundledMergesMatchHFConverter(t *testing.T) {
	hf, err := Load("testdata/cl100k.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	ours := bundledT(t, "dolma2")
	if !slices.Equal(hf.model.merges, ours.model.merges) {
		t.Fatalf("merges differ: %d vs %d", len(hf.model.merges), len(ours.model.merges))
	}
	if hf.model.byteID != ours.model.byteID {
		t.Fatal("byte ids differ")
	}
}

// TestExportRoundTrip: MarshalJSON then Parse gives the same fingerprint, for bundled
// and parsed tokenizers; tokenizers share a fingerprint only if they share goldens.
func TestExportRoundTrip(t *testing.T) {
	seen := map[string]goldenTokenizer{}
	for _, g := range loadManifest(t).Tokenizers {
		tk := goldenTokenizerFor(t, g)
		js, err := tk.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(js) {
			t.Fatalf("%s: MarshalJSON wrote invalid JSON", g.Name)
		}
		back, err := Parse(js, g.Name)
		if err != nil {
			t.Fatalf("%s: %v", g.Name, err)
		}
		if back.Fingerprint() != tk.Fingerprint() {
			t.Errorf("%s: fingerprint changed by export", g.Name)
		}
		if other, dup := seen[tk.Fingerprint()]; dup && other.Golden != g.Golden {
			t.Errorf("%s and %s share a fingerprint but not their goldens", g.Name, other.Name)
		}
		seen[tk.Fingerprint()] = g
	}
	a, b := goldenTokenizerFor(t, goldenTokenizer{Name: "gpt2", File: "gpt2.json.gz"}), bundledT(t, "gpt2")
	if a.Fingerprint() != b.Fingerprint() {
		t.Error("GPT-2's tokenizer.json and the bundled gpt2 should have the same fingerprint")
	}
	if c := bundledT(t, "dolma2"); c.Fingerprint() == b.Fingerprint() {
		t.Error("dolma2 and gpt2 share a fingerprint")
	}
}

// TestMergesPairFormat: merges written as ["a", "b"] pairs parse to the same tokenizer.
func TestMergesPairFormat(t *testing.T) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(readGzipJSON("testdata/gpt2.json.gz"), &doc); err != nil {
		t.Fatal(err)
	}
	var model map[string]json.RawMessage
	if err := json.Unmarshal(doc["model"], &model); err != nil {
		t.Fatal(err)
	}
	var merges []string
	if err := json.Unmarshal(model["merges"], &merges); err != nil {
		t.Fatal(err)
	}
	pairs := make([][]string, 0, len(merges))
	for _, m := range merges {
		pairs = append(pairs, strings.Split(m, " "))
	}
	model["merges"], _ = json.Marshal(pairs)
	doc["model"], _ = json.Marshal(model)
	js, _ := json.Marshal(doc)
	a, err := Parse(js, "pairs")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load("testdata/gpt2.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint() != b.Fingerprint() {
		t.Fatal("pair-format merges changed the tokenizer")
	}
}

// tinyTokenizerJSON is a valid byte-level BPE tokenizer.json with a handful of merges.
func tinyTokenizerJSON(t testing.TB) map[string]any {
	t.Helper()
	vocab := map[string]any{}
	order := byteOrder()
	for i, b := range order {
		vocab[string(bl.toRune[b])] = i
	}
	merges := []any{"Ġ t", "h e", "Ġt he"}
	for _, m := range merges {
		vocab[strings.ReplaceAll(m.(string), " ", "")] = len(vocab)
	}
	vocab["<|endoftext|>"] = len(vocab)
	return map[string]any{
		"version":    "1.0",
		"truncation": nil,
		"padding":    nil,
		"added_tokens": []any{map[string]any{"id": len(vocab) - 1, "content": "<|endoftext|>", "single_word": false,
			"lstrip": false, "rstrip": false, "normalized": false, "special": true}},
		"normalizer":     nil,
		"pre_tokenizer":  map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		"post_processor": nil,
		"decoder":        map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": merges},
	}
}

func TestParseTiny(t *testing.T) {
	js, _ := json.Marshal(tinyTokenizerJSON(t))
	tk, err := Parse(js, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	// "the" has no merge for t+h, so it is t,he; " the" is one token.
	got := tk.Encode("the the<|endoftext|>")
	want := []uint32{uint32(tk.model.byteID['t']), 257, 258, 259}
	if !slices.Equal(got, want) {
		t.Fatalf("Encode = %v, want %v", got, want)
	}
}

// TestParseErrors: every unsupported component is rejected with an error naming it.
func TestParseErrors(t *testing.T) {
	set := func(path string, v any) func(map[string]any) {
		return func(doc map[string]any) {
			keys := strings.Split(path, ".")
			m := doc
			for _, k := range keys[:len(keys)-1] {
				m = m[k].(map[string]any)
			}
			m[keys[len(keys)-1]] = v
		}
	}
	splitSeq := func(pattern, behavior string, invert, useRegex, prefix bool) map[string]any {
		return map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": pattern}, "behavior": behavior, "invert": invert},
			map[string]any{"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": useRegex}}}
	}
	tests := []struct {
		name        string
		edit        func(map[string]any)
		unsupported bool   // errors.Is(err, ErrUnsupported)
		mention     string // the error names this
	}{
		{"normalizer", set("normalizer", map[string]any{"type": "NFC"}), true, "normalizer"},
		{"pre_tokenizer Whitespace", set("pre_tokenizer", map[string]any{"type": "Whitespace"}), true, "Whitespace"},
		{"pre_tokenizer null", set("pre_tokenizer", nil), true, "pre_tokenizer"},
		{"ByteLevel without regex", set("pre_tokenizer.use_regex", false), true, "use_regex"},
		{"unknown regex", set("pre_tokenizer", splitSeq(`\w+|\s+`, "Isolated", false, false, false)), true, `\\w+`},
		{"tiktoken cl100k regex", set("pre_tokenizer", splitSeq(`'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`, "Isolated", false, false, false)), true, "pattern"},
		{"split behavior", set("pre_tokenizer", splitSeq(patCL100K, "MergedWithPrevious", false, false, false)), true, "MergedWithPrevious"},
		{"ByteLevel regex after Split", set("pre_tokenizer", splitSeq(patCL100K, "Isolated", false, true, false)), true, "use_regex=true"},
		{"prefix after Split", set("pre_tokenizer", splitSeq(patCL100K, "Isolated", false, false, true)), true, "add_prefix_space"},
		{"decoder null", set("decoder", nil), true, "decoder"},
		{"decoder WordPiece", set("decoder", map[string]any{"type": "WordPiece"}), true, "WordPiece"},
		{"post_processor", set("post_processor", map[string]any{"type": "Mystery"}), true, "Mystery"},
		{"truncation", set("truncation", map[string]any{"max_length": 512}), true, "truncation"},
		{"padding", set("padding", map[string]any{"strategy": "BatchLongest"}), true, "padding"},
		{"model WordPiece", set("model.type", "WordPiece"), true, "WordPiece"},
		{"dropout", set("model.dropout", 0.1), true, "dropout"},
		{"subword prefix", set("model.continuing_subword_prefix", "##"), true, "continuing_subword_prefix"},
		{"word suffix", set("model.end_of_word_suffix", "</w>"), true, "end_of_word_suffix"},
		{"version", set("version", "2.0"), true, "version"},
		{"byte missing", func(doc map[string]any) {
			delete(doc["model"].(map[string]any)["vocab"].(map[string]any), "Ā")
		}, true, "0x00"},
		{"merge out of vocab", set("model.merges", []any{"x y"}), false, `"xy" is not in the vocabulary`},
		{"bad merge line", set("model.merges", []any{"a b c"}), false, "merges[0]"},
		{"duplicate id", func(doc map[string]any) { doc["model"].(map[string]any)["vocab"].(map[string]any)["zzz"] = 5 }, false, "id 5"},
		{"no model", set("model", nil), false, "model"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := tinyTokenizerJSON(t)
			tc.edit(doc)
			js, _ := json.Marshal(doc)
			_, err := Parse(js, "tiny")
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			if errors.Is(err, ErrUnsupported) != tc.unsupported {
				t.Errorf("errors.Is(ErrUnsupported) = %v, want %v: %v", !tc.unsupported, tc.unsupported, err)
			}
			if !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), "tiny") {
				t.Errorf("error %q should mention %q and the tokenizer name", err, tc.mention)
			}
		})
	}
	for _, bad := range []string{"", "{", "[]", `{"model": 5}`, "\x1f\x8b garbage"} {
		if _, err := Parse([]byte(bad), "bad"); err == nil {
			t.Errorf("Parse(%q) accepted it", bad)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

// TestAddedIDMismatchFollowsHF: HF ignores the ids written in added_tokens (it
// numbers new tokens after the vocabulary) and only warns; so does Parse.
func TestAddedIDMismatchFollowsHF(t *testing.T) {
	doc := tinyTokenizerJSON(t)
	doc["added_tokens"] = append(doc["added_tokens"].([]any),
		map[string]any{"id": 9999, "content": "<new>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
	js, _ := json.Marshal(doc)
	tk, err := Parse(js, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	want := uint32(len(doc["model"].(map[string]any)["vocab"].(map[string]any)))
	if got := tk.Encode("<new>"); !slices.Equal(got, []uint32{want}) {
		t.Errorf("Encode(<new>) = %v, want [%d]", got, want)
	}
	if w := tk.Warnings(); len(w) != 1 || !strings.Contains(w[0], "9999") {
		t.Errorf("Warnings = %q", w)
	}
}

func TestLoadPlainAndGzip(t *testing.T) {
	plain := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(plain, readGzipJSON("testdata/gpt2.json.gz"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := Load(plain)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load("testdata/gpt2.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "tokenizer" || b.Name() != "gpt2" || a.Fingerprint() != b.Fingerprint() {
		t.Errorf("names %q %q, fingerprints equal: %v", a.Name(), b.Name(), a.Fingerprint() == b.Fingerprint())
	}
}

// TestConcurrentEncode: many goroutines sharing one Tokenizer get the same ids as a
// sequential pass (run with -race).
func TestConcurrentEncode(t *testing.T) {
	docs := loadGoldenDocs(t)
	tk := bundledT(t, "dolma2")
	want := make([][]uint32, len(docs))
	texts := make([]string, len(docs))
	for i, d := range docs {
		texts[i] = d.raw
		want[i] = tk.Encode(d.raw)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for k := 0; k < 200; k++ {
				i := r.IntN(len(docs))
				if got := tk.Encode(texts[i]); !slices.Equal(got, want[i]) {
					t.Errorf("goroutine %d doc %d differs", g, i)
					return
				}
			}
			for i, ids := range tk.EncodeBatch(texts[g*10 : g*10+30]) {
				if !slices.Equal(ids, want[g*10+i]) {
					t.Errorf("batch in goroutine %d doc %d differs", g, g*10+i)
					return
				}
			}
		}()
	}
	wg.Wait()
	batch := tk.EncodeBatch(texts)
	for i := range batch {
		if !slices.Equal(batch[i], want[i]) {
			t.Fatalf("EncodeBatch doc %d differs", i)
		}
	}
	// Results must not share writable capacity.
	batch[0] = append(batch[0], 1, 2, 3)
	if !slices.Equal(batch[1], want[1]) {
		t.Fatal("appending to one result changed another")
	}
	if len(tk.EncodeBatch(nil)) != 0 || len(tk.Encode("")) != 0 {
		t.Fatal("empty input gave tokens")
	}
}

func TestAppendEncode(t *testing.T) {
	tk := bundledT(t, "dolma2")
	dst := []uint32{7}
	dst = tk.AppendEncode(dst, "Hello")
	dst = tk.AppendEncode(dst, " world")
	if !slices.Equal(dst, []uint32{7, 9906, 1917}) {
		t.Fatal(dst)
	}
	allocs := testing.AllocsPerRun(100, func() { dst = tk.AppendEncode(dst[:0], "Hello world, again and again.") })
	if allocs > 0 {
		t.Errorf("AppendEncode allocated %.1f times per call", allocs)
	}
}

// TestCacheEviction: a full pretoken cache is dropped and rebuilt without changing ids.
func TestCacheEviction(t *testing.T) {
	tk := bundledT(t, "gpt2")
	e := newEncoder(tk)
	r := rand.New(rand.NewPCG(1, 2))
	var sb strings.Builder
	for i := 0; i < cacheMaxSlots; i++ {
		fmt.Fprintf(&sb, " w%x", r.Uint64())
	}
	text := sb.String()
	got := e.encode(nil, text)
	if e.cache.n >= cacheMaxSlots || len(e.cache.slots) > cacheMaxSlots {
		t.Fatalf("cache has %d entries in %d slots", e.cache.n, len(e.cache.slots))
	}
	if want := tk.Encode(text); !slices.Equal(got, want) {
		t.Fatal("ids changed across a cache reset")
	}
}

// TestPieceCacheTellsKeysApart: pieces whose slot keys hold the same word (the
// same bytes with trailing zero bytes, up to 8 bytes), that differ in one byte, or
// that share a long prefix
// come back with their own ids, in a full table (long probe runs), from the front
// (a second lookup, the front's slots shared by several pieces) and after the table
// grew.
func TestPieceCacheTellsKeysApart(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var pieces []string
	for range 800 {
		stem := string([]byte{byte(r.IntN(4)), byte(r.IntN(256))})
		for k := 0; len(stem)+k <= 8; k++ {
			pieces = append(pieces, stem+strings.Repeat("\x00", k))
		}
		for n := 3; n <= 8; n++ { // every byte counts, whatever the length
			b := []byte(stem + "\x00\x00\x00\x00\x00\x00")[:n]
			b[n-1-r.IntN(n-2)] = byte(1 + r.IntN(255))
			pieces = append(pieces, string(b))
		}
	}
	long := strings.Repeat("q", cacheMaxPiece)
	for k := 9; k <= 255; k += 7 {
		pieces = append(pieces, long[:k-1]+"x", long[:k])
	}
	ids := func(i int) []uint32 { // one id for most, several for some
		out := []uint32{uint32(i)}
		for k := 0; k < i%3-1; k++ {
			out = append(out, uint32(1e6+10*i+k))
		}
		return out
	}
	var c pieceCache
	check := func(when string) {
		t.Helper()
		for i, p := range pieces {
			got, ok := c.get([]uint32{7}, p)
			if want := append([]uint32{7}, ids(i)...); !ok || !slices.Equal(got, want) {
				t.Fatalf("%s: get(%q) = %v, %v; want %v", when, p, got, ok, want)
			}
		}
		if _, ok := c.get(nil, "\x09\x09\x09"); ok {
			t.Fatalf("%s: a piece never put was found", when)
		}
	}
	seen := map[string]bool{}
	for i, p := range pieces {
		if seen[p] {
			pieces[i] = fmt.Sprint("unique", i)
		}
		seen[pieces[i]] = true
		c.put(pieces[i], ids(i))
	}
	if 4*c.n < 2*len(c.slots) {
		t.Fatalf("%d entries in %d slots: the table should be over half full", c.n, len(c.slots))
	}
	check("full table")
	inFront := 0
	for i, p := range pieces {
		if len(p) <= cacheShortKey && len(ids(i)) == 1 {
			if key, h := cacheKey(p); c.frontSlot(h).holds(key, len(p)) {
				inFront++
			}
		}
	}
	if inFront < len(pieces)/4 {
		t.Fatalf("%d of %d pieces in the front after a lookup each", inFront, len(pieces))
	}
	check("from the front")
	for i := 0; len(c.slots) < 2*cacheMinSlots*4; i++ {
		c.put(fmt.Sprint("filler", i), []uint32{uint32(i)})
	}
	check("after growing")
}

// TestPreTokenizers pins pieces that distinguish the two regexes.
func TestPreTokenizers(t *testing.T) {
	split := func(next func(string, int) int, s string) []string {
		var out []string
		for i := 0; i < len(s); {
			j := next(s, i)
			out = append(out, s[i:j])
			i = j
		}
		return out
	}
	tests := []struct {
		in          string
		gpt2, cl100 []string
	}{
		{"Hello world", []string{"Hello", " world"}, []string{"Hello", " world"}},
		{"   x", []string{"  ", " x"}, []string{"  ", " x"}},
		{"a \n\n b", []string{"a", " \n\n", " b"}, []string{"a", " \n\n", " b"}},
		{"1234567", []string{"1234567"}, []string{"123", "456", "7"}},
		{"IT'S it's", []string{"IT", "'", "S", " it", "'s"}, []string{"IT", "'S", " it", "'s"}},
		{"\tfoo", []string{"\t", "foo"}, []string{"\tfoo"}},
		{".Hello", []string{".", "Hello"}, []string{".Hello"}},
		{"x  ", []string{"x", "  "}, []string{"x", "  "}},
		{"a!!\n\nb", []string{"a", "!!", "\n", "\n", "b"}, []string{"a", "!!\n\n", "b"}},
		{"'ſ", []string{"'", "ſ"}, []string{"'ſ"}},
		{"x\u3000y", []string{"x", "\u3000", "y"}, []string{"x", "\u3000y"}},
	}
	for _, tc := range tests {
		if got := split(nextGPT2, tc.in); !slices.Equal(got, tc.gpt2) {
			t.Errorf("gpt2 %q = %q, want %q", tc.in, got, tc.gpt2)
		}
		if got := split(nextCL100K, tc.in); !slices.Equal(got, tc.cl100) {
			t.Errorf("cl100k %q = %q, want %q", tc.in, got, tc.cl100)
		}
	}
}

// TestBPEPathsAgree: the quadratic and heap merge loops give the same ids.
func TestBPEPathsAgree(t *testing.T) {
	for _, name := range BundledNames() {
		m := bundledT(t, name).model
		r := rand.New(rand.NewPCG(3, 4))
		alphabets := []string{"ab", "aaaaab ", "the quick brown fox", "0123456789", "  \n\t", "日本語テキスト"}
		var sc bpeScratch
		for k := 0; k < 3000; k++ {
			alpha := alphabets[k%len(alphabets)]
			n := 2 + r.IntN(120)
			b := make([]byte, 0, n)
			for len(b) < n {
				b = append(b, alpha[r.IntN(len(alpha))])
			}
			w := string(b)
			short := slices.Clone(m.bpeShort(nil, w, &sc))
			heap := m.bpeHeap(nil, w, &sc)
			if !slices.Equal(short, heap) {
				t.Fatalf("%s %q: short %v heap %v", name, w, short, heap)
			}
		}
	}
}

func TestSanitizeUTF8(t *testing.T) {
	tests := []struct {
		in   string
		want string
		n    int
	}{
		{"plain", "plain", 0},
		{"\xe2\x82A", "\uFFFDA", 1},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD", 3},
		{"\xf0\x9f\x98", "\uFFFD", 1},
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD", 4},
		{"\xc0\xaf", "\uFFFD\uFFFD", 2},
		{"\xef\xbf\xbd\xff", "\uFFFD\uFFFD", 1},
		{"a\xf0\x9f\x98\x80\xf0\x9f", "a\U0001F600\uFFFD", 1},
	}
	for _, tc := range tests {
		got, n := SanitizeUTF8([]byte(tc.in))
		if got != tc.want || n != tc.n {
			t.Errorf("SanitizeUTF8(%q) = %q, %d; want %q, %d", tc.in, got, n, tc.want, tc.n)
		}
	}
}
