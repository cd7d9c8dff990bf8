package tokenize

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"
)

// Tokenizer encodes text to token ids exactly as Hugging Face tokenizers does for a
// byte-level BPE tokenizer.json (encode(text, add_special_tokens=False)). It is
// immutable after construction and safe for concurrent use; per-goroutine state
// (scratch buffers and a pretoken cache) lives in pooled encoders.
type Tokenizer struct {
	name string
	pre  preKind
	// addPrefixSpace is ByteLevel's add_prefix_space: each text segment between added
	// tokens gets a leading space unless it has one.
	addPrefixSpace bool
	model          *model

	// Added tokens in tokenizer.json order; matched in two passes like HF.
	added          []*AddedToken
	matchRaw       *addedMatcher // normalized=false tokens
	matchNorm      *addedMatcher // normalized=true tokens (no normalizer: same text)
	addedByID      map[uint32]*AddedToken
	postRaw        json.RawMessage // post_processor, re-emitted by MarshalJSON
	vocabSize      int
	eos, pad       uint32
	hasEOS, hasPAD bool

	// Decoded bytes per id (HF ByteLevel decoder rules), for Decode.
	dec    []byte
	decOff []uint32
	known  []bool

	warnings []string

	pool        encoderPool
	fingerprint func() string
	tokenIDs    func() map[string]uint32
}

// Name is the bundled name, or the name given to Parse/Load.
func (t *Tokenizer) Name() string { return t.name }

// VocabSize is the largest id plus one (model vocabulary and added tokens).
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// EOS returns the id of <|endoftext|>, if the tokenizer has it.
func (t *Tokenizer) EOS() (uint32, bool) { return t.eos, t.hasEOS }

// PAD returns the id of <|pad|>, if the tokenizer has it.
func (t *Tokenizer) PAD() (uint32, bool) { return t.pad, t.hasPAD }

// Warnings lists what Parse noticed but tolerated because Hugging Face tokenizers
// tolerates it too (it logs the same warnings), e.g. an added token whose id in the
// file differs from the id HF gives it.
func (t *Tokenizer) Warnings() []string { return slices.Clone(t.warnings) }

// AddedTokens returns the added tokens in tokenizer.json order.
func (t *Tokenizer) AddedTokens() []AddedToken {
	out := make([]AddedToken, len(t.added))
	for i, a := range t.added {
		out[i] = *a
	}
	return out
}

// Fingerprint is the hex SHA-256 of a canonical form of everything that decides ids:
// pre-tokenizer kind, model vocabulary, merges in rank order and added tokens with the
// flags that affect matching. Equal fingerprints mean identical Encode and Decode; the
// bundled "gpt2" and GPT-2's own tokenizer.json have the same fingerprint, and so do a
// tokenizer and its MarshalJSON export.
func (t *Tokenizer) Fingerprint() string { return t.fingerprint() }

// TokenString returns the token as Hugging Face's id_to_token spells it (byte-level
// alphabet, e.g. "Ġthe"; added tokens verbatim), or "" for an unknown id.
func (t *Tokenizer) TokenString(id uint32) string {
	if a := t.addedByID[id]; a != nil {
		return a.Content
	}
	s, _ := t.model.tokenString(id)
	return s
}

// TokenBytes returns the bytes id decodes to (nil for an unknown id). The slice is
// shared; do not modify it.
func (t *Tokenizer) TokenBytes(id uint32) []byte {
	if int(id) >= len(t.known) || !t.known[id] {
		return nil
	}
	return t.dec[t.decOff[id]:t.decOff[id+1]:t.decOff[id+1]]
}

// TokenID returns the id of a token written as TokenString writes it.
func (t *Tokenizer) TokenID(token string) (uint32, bool) {
	id, ok := t.tokenIDs()[token]
	return id, ok
}

// Decode concatenates the tokens' bytes and replaces ill-formed UTF-8 as
// String::from_utf8_lossy does; unknown ids are skipped and special tokens are kept
// (HF decode with skip_special_tokens=False). For valid UTF-8 text,
// Decode(Encode(text)) == text unless the tokenizer adds prefix spaces or has added
// tokens that strip whitespace (neither is the case for the bundled tokenizers).
func (t *Tokenizer) Decode(ids []uint32) string {
	n := 0
	for _, id := range ids {
		if int(id) < len(t.known) {
			n += int(t.decOff[id+1] - t.decOff[id])
		}
	}
	buf := make([]byte, 0, n)
	for _, id := range ids {
		if int(id) < len(t.known) && t.known[id] {
			buf = append(buf, t.dec[t.decOff[id]:t.decOff[id+1]]...)
		}
	}
	if !utf8.Valid(buf) {
		s, _ := sanitize(unsafe.String(unsafe.SliceData(buf), len(buf)))
		return s
	}
	return unsafe.String(unsafe.SliceData(buf), len(buf))
}

// Encode returns the token ids of text, as HF encode(text, add_special_tokens=False):
// added and special tokens written in the text are recognised, and no post-processor
// tokens are added. Invalid UTF-8 is first replaced as SanitizeUTF8 does.
func (t *Tokenizer) Encode(text string) []uint32 {
	e := t.pool.get(t)
	ids := e.encode(e.out[:0], text)
	out := make([]uint32, len(ids))
	copy(out, ids)
	e.out = ids
	t.pool.put(e)
	return out
}

// AppendEncode appends the ids of text to dst and returns the extended slice; it
// allocates nothing once dst has room.
func (t *Tokenizer) AppendEncode(dst []uint32, text string) []uint32 {
	e := t.pool.get(t)
	dst = e.encode(dst, text)
	t.pool.put(e)
	return dst
}

// Encoder tokenizes on one long-lived goroutine, as each of EncodeBatch's
// workers does: one encoder (and pretoken cache) for its whole life, ids
// encoded into a reused buffer and copied into shared chunks. A pool of
// such goroutines tokenizes like EncodeBatch without its barrier at the end
// of each batch. Not safe for concurrent use.
type Encoder struct {
	t  *Tokenizer
	e  *encoder
	sl slab
}

// NewEncoder takes an encoder from the tokenizer's pool; Close returns it.
func (t *Tokenizer) NewEncoder() *Encoder { return &Encoder{t: t, e: t.pool.get(t)} }

// Encode returns the ids of text. The result shares memory with other
// results of this Encoder but is capped: appending to it copies.
func (x *Encoder) Encode(text string) []uint32 {
	x.e.out = x.e.encode(x.e.out[:0], text)
	return x.sl.keep(x.e.out)
}

// Close returns the encoder, with its warm cache, to the tokenizer's pool.
func (x *Encoder) Close() {
	if x.e != nil {
		x.t.pool.put(x.e)
		x.e = nil
	}
}

// EncodeBatch encodes texts in parallel on GOMAXPROCS goroutines; out[i] holds the ids
// of texts[i]. Memory beyond the result is bounded by one encoder per goroutine.
func (t *Tokenizer) EncodeBatch(texts []string) [][]uint32 {
	return t.EncodeBatchN(texts, 0)
}

// EncodeBatchN is EncodeBatch on at most workers goroutines (≤ 0: GOMAXPROCS), for a
// caller that leaves cores to other work.
func (t *Tokenizer) EncodeBatchN(texts []string, workers int) [][]uint32 {
	out := make([][]uint32, len(texts))
	total := 0
	for _, s := range texts {
		total += len(s)
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, len(texts))
	if workers <= 1 || total < 64<<10 {
		e := t.pool.get(t)
		var sl slab
		for i, s := range texts {
			e.out = e.encode(e.out[:0], s)
			out[i] = sl.keep(e.out)
		}
		t.pool.put(e)
		return out
	}
	// Documents are handed out in small groups so that a few huge documents at the end
	// of the batch do not leave the other workers idle for long.
	step := max(1, min(64, len(texts)/(workers*16)))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := t.pool.get(t)
			var sl slab
			for {
				lo := int(next.Add(int64(step))) - step
				if lo >= len(texts) {
					break
				}
				for i := lo; i < min(lo+step, len(texts)); i++ {
					e.out = e.encode(e.out[:0], texts[i])
					out[i] = sl.keep(e.out)
				}
			}
			t.pool.put(e)
		}()
	}
	wg.Wait()
	return out
}

// slab copies results of small documents into shared chunks: one allocation per
// ~64K ids instead of one per document. Each result is capped so appends cannot
// overwrite a neighbour.
type slab struct{ buf []uint32 }

func (s *slab) keep(ids []uint32) []uint32 {
	n := len(ids)
	if n > 4096 {
		out := make([]uint32, n)
		copy(out, ids)
		return out
	}
	if cap(s.buf)-len(s.buf) < n {
		s.buf = make([]uint32, 0, 64<<10)
	}
	off := len(s.buf)
	s.buf = append(s.buf, ids...)
	return s.buf[off : off+n : off+n]
}

// encoderPool keeps per-goroutine encoders (and their warm caches) between calls.
// Unlike sync.Pool it survives garbage collections; it holds at most GOMAXPROCS idle
// encoders so memory stays bounded.
type encoderPool struct {
	mu   sync.Mutex
	free []*encoder
}

func (p *encoderPool) get(t *Tokenizer) *encoder {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		e := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return e
	}
	p.mu.Unlock()
	return newEncoder(t)
}

func (p *encoderPool) put(e *encoder) {
	if cap(e.out) > 1<<20 {
		e.out = nil
	}
	p.mu.Lock()
	// Keep more encoders than cores: several concurrent EncodeBatch calls
	// (one per Kafka partition) would otherwise drop most encoders, and
	// with them their warm pretoken caches, after every batch.
	if len(p.free) < 4*runtime.GOMAXPROCS(0) {
		p.free = append(p.free, e)
	}
	p.mu.Unlock()
}

// newTokenizer finishes construction from a model and added tokens with final ids.
func newTokenizer(m *model, pre preKind, addPrefixSpace bool, added []*AddedToken, post json.RawMessage) *Tokenizer {
	t := &Tokenizer{
		pre:            pre,
		addPrefixSpace: addPrefixSpace,
		model:          m,
		added:          added,
		addedByID:      make(map[uint32]*AddedToken, len(added)),
		postRaw:        post,
		vocabSize:      m.size,
	}
	var raw, norm []*AddedToken
	for _, a := range added {
		t.addedByID[a.ID] = a
		t.vocabSize = max(t.vocabSize, int(a.ID)+1)
		if a.Normalized {
			norm = append(norm, a)
		} else {
			raw = append(raw, a)
		}
	}
	if len(raw) > 0 {
		t.matchRaw = newAddedMatcher(raw)
	}
	if len(norm) > 0 {
		t.matchNorm = newAddedMatcher(norm)
	}
	t.known = make([]bool, t.vocabSize)
	t.decOff = make([]uint32, t.vocabSize+1)
	for id := 0; id < t.vocabSize; id++ {
		t.decOff[id] = uint32(len(t.dec))
		if a := t.addedByID[uint32(id)]; a != nil {
			t.dec = append(t.dec, bl.decodeForDecoder(a.Content)...)
			t.known[id] = true
		} else if b, ok := m.tokenBytes(uint32(id)); ok {
			t.dec = append(t.dec, b...)
			t.known[id] = true
		} else if s, ok := m.tokenString(uint32(id)); ok {
			t.dec = append(t.dec, bl.decodeForDecoder(s)...)
			t.known[id] = true
		}
	}
	t.decOff[t.vocabSize] = uint32(len(t.dec))
	if id, ok := t.lookup("<|endoftext|>"); ok {
		t.eos, t.hasEOS = id, true
	}
	if id, ok := t.lookup("<|pad|>"); ok {
		t.pad, t.hasPAD = id, true
	}
	t.fingerprint = sync.OnceValue(t.computeFingerprint)
	t.tokenIDs = sync.OnceValue(func() map[string]uint32 {
		ids := make(map[string]uint32, t.vocabSize)
		for id := 0; id < m.size; id++ {
			if s, ok := m.tokenString(uint32(id)); ok {
				ids[s] = uint32(id)
			}
		}
		for _, a := range t.added {
			ids[a.Content] = a.ID
		}
		return ids
	})
	return t
}

// lookup finds a token by its text among added tokens, then the model vocabulary.
func (t *Tokenizer) lookup(content string) (uint32, bool) {
	for _, a := range t.added {
		if a.Content == content {
			return a.ID, true
		}
	}
	for id, s := range t.model.odd {
		if s == content {
			return id, true
		}
	}
	raw, ok := bl.decode(content)
	if !ok {
		return 0, false
	}
	m := t.model
	for id := 0; id < m.size; id++ {
		if b, ok := m.tokenBytes(uint32(id)); ok && string(b) == string(raw) {
			return uint32(id), true
		}
	}
	return 0, false
}

func (t *Tokenizer) computeFingerprint() string {
	h := sha256.New()
	var buf []byte
	u32 := func(v uint32) { buf = binary.LittleEndian.AppendUint32(buf, v) }
	str := func(s []byte) { u32(uint32(len(s))); buf = append(buf, s...) }
	flag := func(b bool) {
		if b {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
	}
	flush := func() { h.Write(buf); buf = buf[:0] }
	buf = append(buf, "emopipe/tokenize fingerprint v1\x00"...)
	buf = append(buf, byte(t.pre))
	flag(t.addPrefixSpace)
	flag(t.model.ignoreMerges)
	m := t.model
	u32(uint32(m.size))
	for id := 0; id < m.size; id++ {
		if !m.has[id] {
			continue
		}
		u32(uint32(id))
		if s, odd := m.odd[uint32(id)]; odd {
			flag(true)
			str([]byte(s))
		} else {
			flag(false)
			str(m.tok[m.tokOff[id]:m.tokOff[id+1]])
		}
		if len(buf) > 1<<16 {
			flush()
		}
	}
	u32(uint32(len(m.merges)))
	for _, mg := range m.merges {
		u32(mg.left)
		u32(mg.right)
		u32(mg.id)
		if len(buf) > 1<<16 {
			flush()
		}
	}
	added := slices.Clone(t.added)
	slices.SortFunc(added, func(a, b *AddedToken) int { return cmp.Compare(a.ID, b.ID) })
	// Without a normalizer, "normalized" only decides which of two matching passes a
	// token is in; if all tokens are in the same pass it changes nothing. "special"
	// only matters to HF's decode(skip_special_tokens=True), which Decode is not.
	uniform := true
	for _, a := range added {
		uniform = uniform && a.Normalized == added[0].Normalized
	}
	u32(uint32(len(added)))
	for _, a := range added {
		u32(a.ID)
		str([]byte(a.Content))
		flag(a.SingleWord)
		flag(a.LStrip)
		flag(a.RStrip)
		flag(a.Normalized && !uniform)
	}
	flush()
	return hex.EncodeToString(h.Sum(nil))
}
