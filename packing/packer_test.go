package packing

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// randomDocs makes n documents with lengths spanning empty to several
// sequences, token values encoding (doc, position) so misplacement shows.
func randomDocs(rng *rand.Rand, n, seqLen int) []Doc {
	docs := make([]Doc, n)
	for i := range docs {
		var l int
		switch rng.IntN(10) {
		case 0:
			l = seqLen*2 + rng.IntN(seqLen*2) // long: split across sequences
		case 1:
			l = seqLen - 1 + rng.IntN(3) // around one sequence
		default:
			l = 1 + rng.IntN(seqLen/2)
		}
		toks := make([]uint32, l)
		for j := range toks {
			toks[j] = uint32(i*100000 + j + 1)
		}
		docs[i] = Doc{Key: fmt.Sprintf("doc-%d", i), Domain: []string{"code", "law", "math"}[i%3], Tokens: toks}
	}
	return docs
}

// reassemble collects every document's tokens from the spans, in sequence
// order, checking span invariants on the way.
func reassemble(t *testing.T, seqs []Sequence, cfg Config) map[string][]uint32 {
	t.Helper()
	got := map[string][]uint32{}
	open := map[string]bool{} // documents whose last span said "continues"
	for n, s := range seqs {
		if len(s.Tokens) != cfg.SeqLen {
			t.Fatalf("sequence %d has %d tokens, want %d", n, len(s.Tokens), cfg.SeqLen)
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("sequence %d: %v", n, err)
		}
		covered := make([]bool, len(s.Tokens))
		for _, sp := range s.Spans {
			if sp.ContinuesFromPrev != open[sp.DocKey] {
				t.Fatalf("sequence %d: span of %s has cont_prev=%v but the document's previous span said continues=%v", n, sp.DocKey, sp.ContinuesFromPrev, open[sp.DocKey])
			}
			if !sp.ContinuesFromPrev {
				if _, seen := got[sp.DocKey]; seen {
					t.Fatalf("document %s starts twice", sp.DocKey)
				}
			}
			got[sp.DocKey] = append(got[sp.DocKey], s.Tokens[sp.Start:sp.Start+sp.Length]...)
			open[sp.DocKey] = sp.ContinuesInNext
			for p := sp.Start; p < sp.Start+sp.Length; p++ {
				covered[p] = true
			}
		}
		for p, c := range covered {
			if !c && s.Tokens[p] != cfg.PAD {
				t.Fatalf("sequence %d position %d: uncovered but not PAD (%d)", n, p, s.Tokens[p])
			}
		}
		if cfg.Mode == Concat && n < len(seqs)-1 && s.Padding() != 0 {
			t.Fatalf("concat sequence %d (not the last) has %d padding", n, s.Padding())
		}
	}
	for k, o := range open {
		if o {
			t.Fatalf("document %s still says it continues after the last sequence", k)
		}
	}
	return got
}

func checkEveryTokenOnce(t *testing.T, docs []Doc, seqs []Sequence, cfg Config) {
	t.Helper()
	got := reassemble(t, seqs, cfg)
	if len(got) != len(docs) {
		t.Fatalf("%d documents in sequences, want %d", len(got), len(docs))
	}
	for _, d := range docs {
		want := append(append([]uint32(nil), d.Tokens...), cfg.EOS)
		if !reflect.DeepEqual(got[d.Key], want) {
			t.Fatalf("document %s: tokens differ (got %d, want %d)", d.Key, len(got[d.Key]), len(want))
		}
	}
}

func packAll(t *testing.T, cfg Config, docs []Doc) []Sequence {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []Sequence
	for _, d := range docs {
		out = append(out, p.Add(d)...)
	}
	return append(out, p.Flush()...)
}

func testConfig(mode Mode, seqLen int) Config {
	return Config{SeqLen: seqLen, Mode: mode, EOS: 7, AppendEOS: true, PAD: 9, MaxOpen: 4}
}

func TestEveryTokenOnceInOrder(t *testing.T) {
	for _, mode := range []Mode{Concat, BestFit} {
		for _, seqLen := range []int{2, 16, 128} {
			t.Run(fmt.Sprintf("%s/%d", mode, seqLen), func(t *testing.T) {
				cfg := testConfig(mode, seqLen)
				docs := randomDocs(rand.New(rand.NewPCG(1, uint64(seqLen))), 300, seqLen)
				checkEveryTokenOnce(t, docs, packAll(t, cfg, docs), cfg)
			})
		}
	}
}

func TestSplitDocumentsAreMarked(t *testing.T) {
	cfg := testConfig(Concat, 8)
	// 5 tokens + EOS = 6, then 5 + EOS straddles the boundary at 8.
	docs := []Doc{{Key: "a", Tokens: []uint32{1, 2, 3, 4, 5}}, {Key: "b", Tokens: []uint32{1, 2, 3, 4, 5}}}
	seqs := packAll(t, cfg, docs)
	if len(seqs) != 2 {
		t.Fatalf("want 2 sequences, got %d", len(seqs))
	}
	b0 := seqs[0].Spans[1]
	b1 := seqs[1].Spans[0]
	if b0.DocKey != "b" || !b0.ContinuesInNext || b0.ContinuesFromPrev || b0.Length != 2 {
		t.Fatalf("first part of b: %+v", b0)
	}
	if b1.DocKey != "b" || b1.ContinuesInNext || !b1.ContinuesFromPrev || b1.Length != 4 {
		t.Fatalf("second part of b: %+v", b1)
	}
	if seqs[1].Padding() != 4 {
		t.Fatalf("flushed last sequence: padding %d, want 4", seqs[1].Padding())
	}
}

func TestBestFitSplitsFewerDocuments(t *testing.T) {
	docs := randomDocs(rand.New(rand.NewPCG(2, 2)), 2000, 256)
	split := func(seqs []Sequence) (n int) {
		for _, s := range seqs {
			for _, sp := range s.Spans {
				if !sp.ContinuesFromPrev && sp.ContinuesInNext {
					n++
				}
			}
		}
		return n
	}
	concat := packAll(t, testConfig(Concat, 256), docs)
	bf := testConfig(BestFit, 256)
	bf.MaxOpen = 16
	best := packAll(t, bf, docs)
	longDocs := 0
	for _, d := range docs {
		if len(d.Tokens)+1 > 256 {
			longDocs++
		}
	}
	if split(best) != longDocs {
		t.Errorf("bestfit split %d documents; only the %d longer than a sequence should be", split(best), longDocs)
	}
	if split(best) >= split(concat) {
		t.Errorf("bestfit split %d documents, concat %d: bestfit should split fewer", split(best), split(concat))
	}
	pad := 0
	for _, s := range best {
		pad += s.Padding()
	}
	t.Logf("concat: %d seqs, %d split; bestfit: %d seqs, %d split, %.2f%% padding", len(concat), split(concat), len(best), split(best), 100*float64(pad)/float64(len(best)*256))
}

// A packer restored from its saved state continues exactly as the original:
// this is what lets the store resume a stream after a crash.
func TestStateRoundTripContinuesIdentically(t *testing.T) {
	for _, mode := range []Mode{Concat, BestFit} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := testConfig(mode, 64)
			docs := randomDocs(rand.New(rand.NewPCG(3, 3)), 400, 64)
			want := packAll(t, cfg, docs)
			rng := rand.New(rand.NewPCG(4, 4))
			p, _ := New(cfg)
			var got []Sequence
			for _, d := range docs {
				got = append(got, p.Add(d)...)
				if rng.IntN(5) == 0 {
					st, err := p.MarshalState()
					if err != nil {
						t.Fatal(err)
					}
					p, _ = New(cfg)
					if err := p.UnmarshalState(st); err != nil {
						t.Fatal(err)
					}
				}
			}
			got = append(got, p.Flush()...)
			if !reflect.DeepEqual(got, want) {
				t.Fatal("restored packer diverged from the uninterrupted one")
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	cfg := testConfig(BestFit, 32)
	docs := randomDocs(rand.New(rand.NewPCG(5, 5)), 500, 32)
	if !reflect.DeepEqual(packAll(t, cfg, docs), packAll(t, cfg, docs)) {
		t.Fatal("same input gave different sequences")
	}
}

func TestSequenceBinaryRoundTripAndCorruption(t *testing.T) {
	cfg := testConfig(BestFit, 16)
	seqs := packAll(t, cfg, randomDocs(rand.New(rand.NewPCG(6, 6)), 50, 16))
	for _, s := range seqs {
		b, _ := s.MarshalBinary()
		var back Sequence
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, s) {
			t.Fatalf("round trip changed the sequence")
		}
		for _, cut := range []int{0, 1, len(b) / 2, len(b) - 1} {
			if err := new(Sequence).UnmarshalBinary(b[:cut]); err == nil {
				t.Fatalf("truncated encoding (%d of %d bytes) decoded without error", cut, len(b))
			}
		}
	}
}

// Both encodings are pinned byte for byte: Fixed32 tokens are
// little-endian uint32 whatever the machine; Low16 tokens their low halves
// as little-endian uint16, then the high tokens' positions and high halves.
func TestSequenceBinaryLayout(t *testing.T) {
	s := Sequence{Tokens: []uint32{0x04030201, 7}, Spans: []Span{{DocKey: "d", Domain: "x", Start: 0, Length: 2, ContinuesInNext: true}}}
	spans := []byte{1, 1, 'd', 1, 'x', 0, 2, 2}
	fixed := append([]byte{1, 2, 1, 2, 3, 4, 7, 0, 0, 0}, spans...)
	if b := s.AppendEncoded([]byte("pre"), Fixed32); string(b[:3]) != "pre" || !reflect.DeepEqual(b[3:], fixed) {
		t.Fatalf("Fixed32 encoding % x, want % x", b[3:], fixed)
	}
	// One high token, at 0, its high half 0x0403 as a uvarint: 0x83 0x08.
	low16 := append([]byte{2, 2, 0x01, 0x02, 0x07, 0x00, 1, 0, 0x83, 0x08}, spans...)
	if b := s.AppendEncoded([]byte("pre"), Low16); string(b[:3]) != "pre" || !reflect.DeepEqual(b[3:], low16) {
		t.Fatalf("Low16 encoding % x, want % x", b[3:], low16)
	}
	if b, _ := s.MarshalBinary(); !reflect.DeepEqual(b, low16) {
		t.Fatalf("MarshalBinary % x, want the Low16 encoding", b)
	}
}

// Tokens survive both encodings whatever their size and place: high
// tokens first, last, in a row, in every position of a four-token store
// and past it; EncodedSize bounds each encoding; highTokens (AVX2 where
// the CPU has it) agrees with a plain count.
func TestEncodingsRoundTripEveryTokenSize(t *testing.T) {
	edges := []uint32{0, 1, 127, 128, 0xffff, 0x10000, 0x10001, 100277, 1 << 24, math.MaxUint32}
	r := rand.New(rand.NewPCG(9, 9))
	var cases [][]uint32
	for n := range 13 {
		for range 20 {
			toks := make([]uint32, n)
			for i := range toks {
				toks[i] = edges[r.IntN(len(edges))]
			}
			cases = append(cases, toks)
		}
	}
	cases = append(cases, dolma2Like(2048), []uint32{0x10000, 0x10000, 0x10000, 0x10000, 0x10000})
	for _, toks := range cases {
		high := 0
		for _, tok := range toks {
			if tok > 0xffff {
				high++
			}
		}
		if got := highTokens(toks); got != high {
			t.Fatalf("highTokens %d, want %d, of %v", got, high, toks)
		}
		s := Sequence{Tokens: toks}
		if len(toks) > 0 {
			s.Spans = []Span{{DocKey: "k", Start: 0, Length: len(toks)}}
		}
		for _, e := range []Encoding{Fixed32, Low16} {
			b := s.AppendEncoded(nil, e)
			if len(b) > s.EncodedSize(e) {
				t.Fatalf("encoding %d: %d bytes, EncodedSize promised at most %d", e, len(b), s.EncodedSize(e))
			}
			var back Sequence
			if err := back.UnmarshalBinary(b); err != nil {
				t.Fatalf("encoding %d of %v: %v", e, toks, err)
			}
			if !slices.Equal(back.Tokens, toks) {
				t.Fatalf("encoding %d: %v came back as %v", e, toks, back.Tokens)
			}
		}
	}
}

// A Low16 encoding's high-token list must name each token once, in order,
// inside the sequence, with a high half that fits: anything else is
// corruption, never other tokens.
func TestLow16RejectsBadHighTokens(t *testing.T) {
	lows := []byte{2, 3, 1, 0, 2, 0, 3, 0} // format, 3 tokens, lows 1 2 3
	for name, high := range map[string][]byte{
		"position past the end":   {1, 3, 1},
		"positions out of order":  {2, 2, 1, 1, 1},
		"position twice":          {2, 1, 1, 1, 1},
		"zero high half":          {1, 0, 0},
		"high half past 16 bits":  {1, 0, 0x80, 0x80, 0x04},
		"more than the tokens":    {4, 0, 1, 1, 1, 2, 1, 2, 1},
		"list cut short":          {2, 0, 1},
		"count past every length": {0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		b := append(append(slices.Clone(lows), high...), 0) // no spans
		if err := new(Sequence).UnmarshalBinary(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	good := append(append(slices.Clone(lows), 2, 0, 1, 2, 7), 0)
	var s Sequence
	if err := s.UnmarshalBinary(good); err != nil || !slices.Equal(s.Tokens, []uint32{0x10001, 2, 0x70003}) {
		t.Fatalf("valid high list: %v, tokens %v", err, s.Tokens)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{SeqLen: 1, Mode: Concat}, {SeqLen: 8, Mode: "zigzag"}, {SeqLen: 8, Mode: BestFit, MaxOpen: 300}} {
		if err := c.Validate(); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}

// FuzzPacker holds the packer's invariants for arbitrary document lengths:
// every token once and in order, spans never cross, replay identical.
func FuzzPacker(f *testing.F) {
	f.Add([]byte{3, 200, 1, 0, 17}, uint8(8), false)
	f.Add([]byte{255, 255, 1}, uint8(3), true)
	f.Fuzz(func(t *testing.T, lens []byte, seqLen uint8, bestfit bool) {
		if seqLen < 2 {
			return
		}
		mode := Concat
		if bestfit {
			mode = BestFit
		}
		cfg := testConfig(mode, int(seqLen))
		docs := make([]Doc, len(lens))
		for i, l := range lens {
			toks := make([]uint32, int(l))
			for j := range toks {
				toks[j] = uint32(i<<16 | j)
			}
			docs[i] = Doc{Key: fmt.Sprint(i), Tokens: toks}
		}
		seqs := packAll(t, cfg, docs)
		checkEveryTokenOnce(t, docs, seqs, cfg)
		if !reflect.DeepEqual(seqs, packAll(t, cfg, docs)) {
			t.Fatal("replay differs")
		}
	})
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

func fmtU(v uint64) string { return fmt.Sprint(v) }

// Recycling each batch's buffers once it has been copied out (as the
// ingester does after staging) leaves the packing unchanged, and the
// buffers are used again.
func TestRecycleKeepsOutput(t *testing.T) {
	for _, mode := range []Mode{Concat, BestFit} {
		cfg := testConfig(mode, 32)
		docs := randomDocs(rand.New(rand.NewPCG(7, 7)), 400, 32)
		want := packAll(t, cfg, docs)
		p, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var got []Sequence
		seen := map[*uint32]bool{}
		reused := 0
		for i, d := range docs {
			seqs := p.Add(d)
			for _, s := range seqs {
				if seen[&s.Tokens[:1][0]] {
					reused++
				}
				seen[&s.Tokens[:1][0]] = true
				c := s
				c.Tokens = append([]uint32(nil), s.Tokens...)
				got = append(got, c)
			}
			if i%3 == 0 {
				p.Recycle(seqs)
			}
		}
		got = append(got, p.Flush()...)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: recycling changed the sequences", mode)
		}
		if reused == 0 {
			t.Fatalf("%s: no recycled buffer was used again", mode)
		}
	}
}

// dolma2Like draws n token ids spread as dolma2's are on the bundled
// corpus: 16% below 128, 70% below 16384, 2.2% of 65536 and over.
func dolma2Like(n int) []uint32 {
	r := rand.New(rand.NewPCG(3, 3))
	toks := make([]uint32, n)
	for i := range toks {
		switch p := r.IntN(1000); {
		case p < 160:
			toks[i] = uint32(r.IntN(128))
		case p < 860:
			toks[i] = uint32(128 + r.IntN(16384-128))
		case p < 978:
			toks[i] = uint32(16384 + r.IntN(65536-16384))
		default:
			toks[i] = uint32(65536 + r.IntN(100278-65536))
		}
	}
	return toks
}

// BenchmarkAppendEncoded is staging's cost per 2048-token sequence in each
// encoding (sizing included), the buffer reused as staging's is not.
func BenchmarkAppendEncoded(b *testing.B) {
	s := Sequence{Tokens: dolma2Like(2048), Spans: []Span{{DocKey: "doc-1", Domain: "web", Length: 2048}}}
	for _, e := range []Encoding{Fixed32, Low16} {
		b.Run(fmt.Sprintf("encoding=%d", e), func(b *testing.B) {
			buf := make([]byte, 0, s.EncodedSize(Fixed32))
			b.SetBytes(4 * int64(len(s.Tokens)))
			for b.Loop() {
				buf = s.AppendEncoded(buf[:0:s.EncodedSize(e)], e)
			}
			b.ReportMetric(float64(len(buf))/float64(len(s.Tokens)), "bytes/token")
		})
	}
}

func BenchmarkHighTokens(b *testing.B) {
	toks := dolma2Like(2048)
	for _, f := range []struct {
		name string
		fn   func([]uint32) int
	}{{"scalar", highTokensScalar}, {"dispatched", highTokens}} {
		b.Run(f.name, func(b *testing.B) {
			b.SetBytes(4 * int64(len(toks)))
			for b.Loop() {
				f.fn(toks)
			}
		})
	}
}

// FuzzSequenceDecode: any bytes decode to a valid sequence or to
// ErrCorrupt, never a panic; what decodes encodes again (in both
// encodings) to a sequence that decodes the same.
func FuzzSequenceDecode(f *testing.F) {
	s := Sequence{Tokens: []uint32{0x04030201, 7, 70000, 3}, Spans: []Span{{DocKey: "d", Domain: "x", Start: 1, Length: 3, ContinuesFromPrev: true}}}
	f.Add(s.AppendEncoded(nil, Low16))
	f.Add(s.AppendEncoded(nil, Fixed32))
	f.Add([]byte{2, 3, 1, 0, 2, 0, 3, 0, 2, 0, 1, 2, 7, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Sequence
		if err := got.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		for _, e := range []Encoding{Fixed32, Low16} {
			var again Sequence
			if err := again.UnmarshalBinary(got.AppendEncoded(nil, e)); err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("encoding %d: re-encoded sequence decodes to %+v, %v; want %+v", e, again, err, got)
			}
		}
	})
}

// BenchmarkUnmarshalBinary is a reader's cost per 2048-token sequence in
// each encoding (the trainer decodes every sequence it reads).
func BenchmarkUnmarshalBinary(b *testing.B) {
	s := Sequence{Tokens: dolma2Like(2048), Spans: []Span{{DocKey: "doc-1", Domain: "web", Length: 2048}}}
	for _, e := range []Encoding{Fixed32, Low16} {
		b.Run(fmt.Sprintf("encoding=%d", e), func(b *testing.B) {
			enc := s.AppendEncoded(nil, e)
			b.SetBytes(4 * int64(len(s.Tokens)))
			for b.Loop() {
				var got Sequence
				if err := got.UnmarshalBinary(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
