package tokenize

import (
	"math"
	"slices"
	"testing"
	"unicode/utf8"
)

func fuzzSeeds(f *testing.F) {
	for _, s := range []string{"", "Hello world!", "  \n\t x", "I'LL 's 1000000", "日本語 🇩🇪👨‍👩‍👧",
		"<|endoftext|>x<|pad|>", "\xe2\x82 \xff", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"} {
		f.Add(s)
	}
}

// FuzzEncodeDecode: Decode inverts Encode on valid UTF-8, Encode of invalid UTF-8 is
// Encode of its sanitized form, and EncodeBatch agrees with Encode.
func FuzzEncodeDecode(f *testing.F) {
	fuzzSeeds(f)
	toks := []*Tokenizer{bundledT(f, "dolma2"), bundledT(f, "gpt2")}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tk := range toks {
			ids := tk.Encode(s)
			clean, _ := SanitizeUTF8([]byte(s))
			if got := tk.Decode(ids); got != clean {
				t.Fatalf("%s: Decode(Encode(%q)) = %q", tk.Name(), s, got)
			}
			if !utf8.ValidString(s) && !slices.Equal(ids, tk.Encode(clean)) {
				t.Fatalf("%s: invalid input not encoded as its sanitized form", tk.Name())
			}
			if b := tk.EncodeBatch([]string{s, s}); !slices.Equal(b[0], ids) || !slices.Equal(b[1], ids) {
				t.Fatalf("%s: EncodeBatch differs", tk.Name())
			}
		}
	})
}

// FuzzMatchesRankBPE: the merges-based model gives, piece by piece, the ids of
// tiktoken's rank-based algorithm on the same ranks (the bundled tokenizers must agree
// with both Hugging Face and tiktoken).
func FuzzMatchesRankBPE(f *testing.F) {
	fuzzSeeds(f)
	type ref struct {
		tk    *Tokenizer
		next  func(string, int) int
		rank  map[string]uint32
		toks  [][]byte
		order []uint32
	}
	var refs []ref
	for _, name := range BundledNames() {
		tk := bundledT(f, name)
		r := ref{tk: tk, next: nextGPT2, rank: map[string]uint32{}}
		if tk.pre == preCL100K {
			r.next = nextCL100K
		}
		for id := 0; id < tk.model.size; id++ {
			if b, ok := tk.model.tokenBytes(uint32(id)); ok && len(b) > 0 && tk.addedByID[uint32(id)] == nil {
				r.rank[string(b)] = uint32(id)
			}
		}
		refs = append(refs, r)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		for _, r := range refs {
			var want []uint32
			var starts []int
			var pr []uint32
			for i := 0; i < len(s); {
				j := r.next(s, i)
				piece := []byte(s[i:j])
				if id, ok := r.rank[string(piece)]; ok {
					want = append(want, id) // tiktoken looks the whole piece up first
				} else {
					starts, pr = rankBPE(starts[:0], pr[:0], piece, r.rank, math.MaxUint32)
					for k, st := range starts {
						end := len(piece)
						if k+1 < len(starts) {
							end = starts[k+1]
						}
						want = append(want, r.rank[string(piece[st:end])])
					}
				}
				i = j
			}
			e := newEncoder(r.tk)
			if got := e.encodeText(nil, s); !slices.Equal(got, want) {
				t.Fatalf("%s %q: merges %v, ranks %v", r.tk.Name(), s, got, want)
			}
		}
	})
}
