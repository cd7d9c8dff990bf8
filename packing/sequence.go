package packing

import (
	"encoding/binary"
	"errors"
	"fmt"
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

const seqFormat = 1

var nativeLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// ErrCorrupt marks bytes that do not decode to a valid Sequence.
var ErrCorrupt = errors.New("packing: corrupt sequence encoding")

// MarshalBinary encodes the sequence compactly: a version byte, the token
// count, tokens as little-endian uint32 (so a value can be copied straight
// into a .npy shard), then the spans.
func (s *Sequence) MarshalBinary() ([]byte, error) {
	return s.AppendBinary(make([]byte, 0, s.BinarySize()))
}

// BinarySize bounds the length of the sequence's encoding from above, so
// that a caller can size one buffer for many AppendBinary calls.
func (s *Sequence) BinarySize() int {
	n := 1 + binary.MaxVarintLen64 + 4*len(s.Tokens) + binary.MaxVarintLen64
	for _, sp := range s.Spans {
		n += 4*binary.MaxVarintLen64 + len(sp.DocKey) + len(sp.Domain) + 1
	}
	return n
}

// AppendBinary appends MarshalBinary's encoding to b.
func (s *Sequence) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, seqFormat)
	b = binary.AppendUvarint(b, uint64(len(s.Tokens)))
	if nativeLittleEndian && len(s.Tokens) > 0 {
		// The tokens' memory is already the encoding: one copy.
		b = append(b, unsafe.Slice((*byte)(unsafe.Pointer(&s.Tokens[0])), 4*len(s.Tokens))...)
	} else {
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
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote. It copies, so b may be
// reused by the caller (Badger values are only valid inside a transaction).
func (s *Sequence) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	if v := r.byte(); v != seqFormat {
		return fmt.Errorf("%w: format %d", ErrCorrupt, v)
	}
	nt := r.uvarint()
	if r.err != nil || nt > uint64(len(b))/4 {
		return fmt.Errorf("%w: token count", ErrCorrupt)
	}
	s.Tokens = make([]uint32, nt)
	for i := range s.Tokens {
		s.Tokens[i] = r.uint32()
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
	return s.Validate()
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
