package packing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unsafe"
)

// Span is the part of one document that lies inside one sequence.
type Span struct {
	// DocKey identifies the document across the store (source-unique id).
	DocKey string `json:"doc"`
	// Domain is the document's label (code, law, ...), possibly empty.
	Domain string `json:"domain,omitempty"`
	// Start and Length locate the span's tokens in Sequence.Tokens.
	Start  int `json:"start"`
	Length int `json:"length"`
	// ContinuesFromPrev: the document began in an earlier sequence.
	ContinuesFromPrev bool `json:"cont_prev,omitempty"`
	// ContinuesInNext: the document goes on in a later sequence. In concat
	// mode "later" is always the next sequence; in best-fit mode it is the
	// next sequence that holds a span with the same DocKey.
	ContinuesInNext bool `json:"cont_next,omitempty"`
}

// Sequence is one fixed-length training example. Positions covered by no
// span are padding.
type Sequence struct {
	Tokens []uint32 `json:"tokens"`
	Spans  []Span   `json:"spans"`
}

// Padding is the number of positions no span covers.
func (s *Sequence) Padding() int {
	used := 0
	for _, sp := range s.Spans {
		used += sp.Length
	}
	return len(s.Tokens) - used
}

// Segments returns, per position, the index of the span that covers it, or
// -1 for padding. The trainer uses it as the router's document segment id.
func (s *Sequence) Segments() []int32 {
	seg := make([]int32, len(s.Tokens))
	for i := range seg {
		seg[i] = -1
	}
	for j, sp := range s.Spans {
		for p := sp.Start; p < sp.Start+sp.Length; p++ {
			seg[p] = int32(j)
		}
	}
	return seg
}

// Validate checks that spans lie inside the sequence, in order, without
// overlap. It guards every decode from the store.
func (s *Sequence) Validate() error {
	end := 0
	for i, sp := range s.Spans {
		if sp.Length <= 0 || sp.Start < end || sp.Start+sp.Length > len(s.Tokens) {
			return fmt.Errorf("span %d (%q start %d length %d) is out of order or outside %d tokens", i, sp.DocKey, sp.Start, sp.Length, len(s.Tokens))
		}
		end = sp.Start + sp.Length
	}
	return nil
}

// Encoding names a sequence encoding by its first byte. Readers take
// every encoding; a store writes the one its format_version implies.
type Encoding byte

const (
	// Fixed32: tokens as little-endian uint32 (stores of format_version 1,
	// and the packer's saved tail).
	Fixed32 Encoding = 1
	// Low16: each token's low 16 bits as a little-endian uint16, then the
	// positions and high bits of the tokens of 65536 and over (2.2% of
	// dolma2's tokens on the bundled corpus, none of a 16-bit vocabulary's).
	// About 2.07 bytes a token instead of 4: half the store on disk, and
	// half the bytes the ingester copies, checksums and writes into
	// Badger's value log for every token. Varints (LEB128) were 1.97
	// bytes a token but 6 times slower to write (docs/benchmarks.md,
	// fourteenth session).
	Low16 Encoding = 2
)

var nativeLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// ErrCorrupt marks bytes that do not decode to a valid Sequence.
var ErrCorrupt = errors.New("packing: corrupt sequence encoding")

// MarshalBinary encodes the sequence compactly (Low16): a version byte,
// the token count, the tokens, then the spans.
func (s *Sequence) MarshalBinary() ([]byte, error) {
	return s.AppendEncoded(make([]byte, 0, s.EncodedSize(Low16)), Low16), nil
}

// EncodedSize bounds the length of the sequence's encoding e from above
// (closely: a few bytes a span and a high token over), so that a caller
// can size one buffer for many AppendEncoded calls.
func (s *Sequence) EncodedSize(e Encoding) int {
	n := 1 + 2*binary.MaxVarintLen64
	if e == Low16 {
		n += 2*len(s.Tokens) + binary.MaxVarintLen64 + maxHighLen*highTokens(s.Tokens)
	} else {
		n += 4 * len(s.Tokens)
	}
	for _, sp := range s.Spans {
		n += 4*binary.MaxVarintLen64 + len(sp.DocKey) + len(sp.Domain) + 1
	}
	return n
}

// AppendEncoded appends the sequence's encoding e to b (Fixed32 for any e
// but Low16).
func (s *Sequence) AppendEncoded(b []byte, e Encoding) []byte {
	if e != Low16 {
		e = Fixed32
	}
	b = append(b, byte(e))
	b = binary.AppendUvarint(b, uint64(len(s.Tokens)))
	switch {
	case e == Low16:
		b = appendLow16Tokens(b, s.Tokens)
	case nativeLittleEndian && len(s.Tokens) > 0:
		// The tokens' memory is already the encoding: one copy.
		b = append(b, unsafe.Slice((*byte)(unsafe.Pointer(&s.Tokens[0])), 4*len(s.Tokens))...)
	default:
		for _, t := range s.Tokens {
			b = binary.LittleEndian.AppendUint32(b, t)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(s.Spans)))
	for _, sp := range s.Spans {
		b = binary.AppendUvarint(b, uint64(len(sp.DocKey)))
		b = append(b, sp.DocKey...)
		b = binary.AppendUvarint(b, uint64(len(sp.Domain)))
		b = append(b, sp.Domain...)
		b = binary.AppendUvarint(b, uint64(sp.Start))
		b = binary.AppendUvarint(b, uint64(sp.Length))
		var flags byte
		if sp.ContinuesFromPrev {
			flags |= 1
		}
		if sp.ContinuesInNext {
			flags |= 2
		}
		b = append(b, flags)
	}
	return b
}

// maxHighLen bounds a high token's entry in Low16: its position and its
// high 16 bits, as uvarints.
const maxHighLen = binary.MaxVarintLen32 + 3

// highTokens counts the tokens of 65536 and over (AVX2 where the CPU has
// it: sequence_amd64.go).
var highTokens = highTokensScalar

func highTokensScalar(toks []uint32) int {
	n := 0
	for _, t := range toks {
		n += int((0 - t>>16) >> 31) // t>>16 != 0, without a branch
	}
	return n
}

// appendLow16Tokens appends the tokens in Low16: the low halves, then
// the count of high tokens and, for each, its position and high half as
// uvarints.
func appendLow16Tokens(b []byte, toks []uint32) []byte {
	at := len(b)
	b = slices.Grow(b, 2*len(toks))[:at+2*len(toks)]
	high := putLowHalves(b[at:], toks)
	b = binary.AppendUvarint(b, uint64(high))
	if high == 0 {
		return b
	}
	b = slices.Grow(b, maxHighLen*high)
	n := putHighTokens(b[len(b):len(b)+maxHighLen*high], toks)
	return b[:len(b)+n]
}

// putLowHalves writes each token's low half into out (2 bytes a token)
// and returns the number of high tokens (AVX2 where the CPU has it).
var putLowHalves = putLowHalvesScalar

// putLowHalvesScalar writes four tokens to a 64-bit store.
func putLowHalvesScalar(out []byte, toks []uint32) int {
	high := 0
	i := 0
	for ; i+4 <= len(toks); i += 4 {
		t := toks[i : i+4 : i+4]
		if (t[0]|t[1]|t[2]|t[3])>>16 != 0 {
			high += highTokensScalar(t)
		}
		binary.LittleEndian.PutUint64(out[2*i:], uint64(t[0]&0xffff)|uint64(t[1]&0xffff)<<16|uint64(t[2]&0xffff)<<32|uint64(t[3])<<48)
	}
	high += highTokensScalar(toks[i:])
	for ; i < len(toks); i++ {
		binary.LittleEndian.PutUint16(out[2*i:], uint16(toks[i]))
	}
	return high
}

// putHighTokens writes each high token's position and high half into out
// (room for maxHighLen bytes each) and returns the bytes written (AVX2
// where the CPU has it).
var putHighTokens = func(out []byte, toks []uint32) int { return putHighTokensScalar(out, toks, 0) }

// putHighTokensScalar numbers the tokens from first.
func putHighTokensScalar(out []byte, toks []uint32, first int) int {
	p := 0
	for i, t := range toks {
		if t>>16 != 0 {
			p += binary.PutUvarint(out[p:], uint64(first+i))
			p += binary.PutUvarint(out[p:], uint64(t>>16))
		}
	}
	return p
}

// UnmarshalBinary decodes a sequence in either encoding (bytes that are no
// valid sequence give ErrCorrupt). It copies, so b may be
// reused by the caller (Badger values are only valid inside a transaction).
func (s *Sequence) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	e := Encoding(r.byte())
	if e != Fixed32 && e != Low16 {
		return fmt.Errorf("%w: format %d", ErrCorrupt, e)
	}
	nt := r.uvarint()
	if r.err != nil || e == Low16 && nt > uint64(len(r.b))/2 || e == Fixed32 && nt > uint64(len(r.b))/4 {
		return fmt.Errorf("%w: token count", ErrCorrupt)
	}
	s.Tokens = make([]uint32, nt)
	if e == Low16 {
		r.low16Tokens(s.Tokens)
	} else {
		for i := range s.Tokens {
			s.Tokens[i] = r.uint32()
		}
	}
	ns := r.uvarint()
	if r.err != nil || ns > uint64(len(b)) {
		return fmt.Errorf("%w: span count", ErrCorrupt)
	}
	s.Spans = make([]Span, ns)
	for i := range s.Spans {
		sp := &s.Spans[i]
		sp.DocKey = r.str()
		sp.Domain = r.str()
		sp.Start = int(r.uvarint())
		sp.Length = int(r.uvarint())
		f := r.byte()
		sp.ContinuesFromPrev, sp.ContinuesInNext = f&1 != 0, f&2 != 0
	}
	if r.err != nil || len(r.b) != 0 {
		return fmt.Errorf("%w: trailing or short data", ErrCorrupt)
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.err = ErrCorrupt
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = ErrCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

// low16Tokens decodes len(toks) tokens in Low16. High tokens must come in
// increasing positions with non-zero high halves: one encoding a sequence.
func (r *reader) low16Tokens(toks []uint32) {
	lows := r.b[:2*len(toks)]
	for i := range toks {
		toks[i] = uint32(binary.LittleEndian.Uint16(lows[2*i:]))
	}
	r.b = r.b[len(lows):]
	n := r.uvarint()
	if n > uint64(len(toks)) {
		r.err = ErrCorrupt
		return
	}
	next := uint64(0) // the lowest position the next high token may have
	for range n {
		pos, hi := r.uvarint(), r.uvarint()
		if r.err != nil || pos < next || pos >= uint64(len(toks)) || hi == 0 || hi > 0xffff {
			r.err = ErrCorrupt
			return
		}
		toks[pos] |= uint32(hi) << 16
		next = pos + 1
	}
}

func (r *reader) uint32() uint32 {
	if len(r.b) < 4 {
		r.err = ErrCorrupt
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = ErrCorrupt
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
