package tokenize

import "unicode/utf8"

// encoder is the per-goroutine state of a Tokenizer.
type encoder struct {
	t      *Tokenizer
	m      *model
	sc     bpeScratch
	cache  pieceCache
	splits [2][]addedSplit
	out    []uint32
}

func newEncoder(t *Tokenizer) *encoder {
	return &encoder{t: t, m: t.model}
}

func (e *encoder) encode(dst []uint32, text string) []uint32 {
	if !utf8.ValidString(text) {
		text, _ = sanitize(text)
	}
	return e.encodeAdded(dst, text, 0)
}

// encodeAdded extracts added tokens: pass 0 uses the normalized=false tokens on the
// whole text, pass 1 the normalized=true tokens on what remains, as HF's
// AddedVocabulary::extract_and_normalize (with no normalizer) does.
func (e *encoder) encodeAdded(dst []uint32, text string, pass int) []uint32 {
	if pass == 2 {
		return e.encodeText(dst, text)
	}
	m := e.t.matchRaw
	if pass == 1 {
		m = e.t.matchNorm
	}
	if m == nil {
		return e.encodeAdded(dst, text, pass+1)
	}
	splits := m.split(e.splits[pass][:0], text)
	for _, sp := range splits {
		if sp.tok != nil {
			dst = append(dst, sp.tok.ID)
		} else if sp.end > sp.start {
			dst = e.encodeAdded(dst, text[sp.start:sp.end], pass+1)
		}
	}
	e.splits[pass] = splits[:0]
	return dst
}

// encodeText pre-tokenizes one segment without added tokens and BPE-encodes each
// piece.
func (e *encoder) encodeText(dst []uint32, s string) []uint32 {
	if len(s) == 0 {
		return dst
	}
	if e.t.addPrefixSpace && s[0] != ' ' {
		s = " " + s
	}
	switch e.t.pre {
	case preGPT2:
		for i := 0; i < len(s); {
			j := nextGPT2(s, i)
			dst = e.piece(dst, s[i:j])
			i = j
		}
	case preCL100K:
		for i := 0; i < len(s); {
			j := nextCL100K(s, i)
			dst = e.piece(dst, s[i:j])
			i = j
		}
	}
	return dst
}

func (e *encoder) piece(dst []uint32, p string) []uint32 {
	m := e.m
	if len(p) == 1 {
		return append(dst, m.byteID[p[0]])
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[p]; ok {
			return append(dst, id)
		}
	}
	if len(p) > cacheMaxPiece {
		return m.bpe(dst, p, &e.sc)
	}
	if out, ok := e.cache.get(dst, p); ok {
		return out
	}
	start := len(dst)
	dst = m.bpe(dst, p, &e.sc)
	e.cache.put(p, dst[start:])
	return dst
}
