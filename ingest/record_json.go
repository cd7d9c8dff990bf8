package ingest

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// parseFast decodes the usual record in one pass over its bytes: a JSON
// object whose member names carry no escapes and which names the id, text
// and domain fields at most once each, with a string text. It copies the
// text once (unescaping it) and allocates nothing else of its size.
//
// It answers ok only for records that encoding/json decodes to the same
// Document (FuzzParseFast holds that). Everything else — any syntax error,
// an escaped member name, a repeated field, a text that is not a string, a
// lone surrogate escape — goes to the general decoder in ParseJSON, which
// also writes every reject. The caller has checked that line is valid
// UTF-8.
func (f Fields) parseFast(line []byte, fallbackID string) (doc Document, ok bool) {
	if f.ID == f.Text || f.ID == f.Domain || f.Text == f.Domain {
		return doc, false
	}
	s := jsonScanner{b: line}
	s.space()
	if !s.eat('{') {
		return doc, false
	}
	doc.ID = fallbackID
	var seenID, seenText, seenDomain bool
	for {
		s.space()
		key, esc, ok := s.str()
		if !ok || esc {
			return doc, false
		}
		s.space()
		if !s.eat(':') {
			return doc, false
		}
		s.space()
		switch {
		case string(key) == f.Text:
			if seenText || s.peek() != '"' {
				return doc, false
			}
			seenText = true
			if doc.Text, ok = s.text(); !ok {
				return doc, false
			}
		case string(key) == f.ID:
			if seenID {
				return doc, false
			}
			seenID = true
			id, ok := s.scalar()
			if !ok {
				return doc, false
			}
			if id != "" {
				doc.ID = id
			}
		case string(key) == f.Domain:
			if seenDomain {
				return doc, false
			}
			seenDomain = true
			if doc.Domain, ok = s.scalar(); !ok {
				return doc, false
			}
		default:
			if !s.skip(0) {
				return doc, false
			}
		}
		s.space()
		if s.eat(',') {
			continue
		}
		if !s.eat('}') {
			return doc, false
		}
		break
	}
	s.space()
	return doc, seenText && s.i == len(s.b)
}

// jsonScanner is a strict JSON scanner over one record: every method
// reports false on anything RFC 8259 does not allow.
type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *jsonScanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *jsonScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

const (
	lo8 = 0x0101010101010101
	hi8 = 0x8080808080808080
)

// special8 flags, in the high bit of each byte, the bytes of x (read
// little-endian) that a string scan has to stop at: quotes, backslashes
// and control characters. The lowest flag is exact; flags above it may be
// false.
func special8(x uint64) uint64 {
	q := x ^ (lo8 * '"')
	bs := x ^ (lo8 * '\\')
	m := (q - lo8) &^ q
	m |= (bs - lo8) &^ bs
	m |= (x - lo8*0x20) &^ x
	return m & hi8
}

// str scans a string and returns its raw content (between the quotes) and
// whether it holds escapes; the escapes are checked, not decoded.
func (s *jsonScanner) str() (raw []byte, esc, ok bool) {
	if !s.eat('"') {
		return nil, false, false
	}
	start := s.i
	b := s.b
	i := s.i
	for {
		for i+8 <= len(b) {
			m := special8(binary.LittleEndian.Uint64(b[i:]))
			if m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		if i >= len(b) {
			return nil, false, false
		}
		switch c := b[i]; {
		case c == '"':
			s.i = i + 1
			return b[start:i], esc, true
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return nil, false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, ok := hex4(b[i+2:]); !ok {
					return nil, false, false
				}
				i += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			i++
		}
	}
}

// text scans a string and decodes it in the same pass into a new slice:
// eight bytes at a time while there is nothing to decode. Lone surrogates
// report false: encoding/json's replacement rules for them stay with
// encoding/json.
func (s *jsonScanner) text() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	b := s.b[s.i:]
	// The text is most of the record: size for the rest of it rather than
	// scan twice. Decoding never lengthens, so o <= i throughout.
	out := make([]byte, len(b))
	i, o := 0, 0
	wide := copyPlain != nil
	for {
		if wide && i+32 <= len(b) {
			i, o = copyPlain(b, out, i, o)
		}
		// copyPlain stops at a special byte, or within 32 bytes of the
		// end: only then has the eight-byte loop anything to do.
		for (!wide || i+32 > len(b)) && i+8 <= len(b) && o+8 <= len(out) {
			x := binary.LittleEndian.Uint64(b[i:])
			binary.LittleEndian.PutUint64(out[o:], x)
			if m := special8(x); m != 0 {
				// Keep the bytes before the first special one.
				k := bits.TrailingZeros64(m) / 8
				i, o = i+k, o+k
				break
			}
			i, o = i+8, o+8
		}
		if i >= len(b) {
			return nil, false
		}
		switch c := b[i]; {
		case c == '"':
			s.i += i + 1
			return out[:o:o], true
		case c == '\\':
			if i+1 >= len(b) {
				return nil, false
			}
			i += 2
			switch b[i-1] {
			case '"', '\\', '/':
				out[o] = b[i-1]
			case 'b':
				out[o] = '\b'
			case 'f':
				out[o] = '\f'
			case 'n':
				out[o] = '\n'
			case 'r':
				out[o] = '\r'
			case 't':
				out[o] = '\t'
			case 'u':
				r, ok := hex4(b[i:])
				if !ok {
					return nil, false
				}
				i += 4
				if utf8.RuneLen(r) < 0 { // a surrogate: a pair, or encoding/json decides
					if r > 0xdbff || i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
						return nil, false
					}
					r2, ok := hex4(b[i+2:])
					if !ok || r2 < 0xdc00 || r2 > 0xdfff {
						return nil, false
					}
					r = 0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00)
					i += 6
				}
				o += utf8.EncodeRune(out[o:], r) - 1
			default:
				return nil, false
			}
			o++
		case c < 0x20:
			return nil, false
		default:
			out[o] = c
			i, o = i+1, o+1
		}
	}
}

// copyPlain, where the CPU has a vector unit for it, copies b[i:] to
// out[o:] in wide steps up to the first byte special8 would flag and
// returns the new positions; the eight-byte loop finishes the rest. It may
// write past the copied bytes within out (the decoding overwrites them).
var copyPlain func(b, out []byte, i, o int) (int, int)

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// unquote copies a string's raw content (checked by str), decoding its
// escapes. Lone surrogates report false: encoding/json's replacement rules
// for them stay with encoding/json.
func unquote(raw []byte, esc bool) ([]byte, bool) {
	out := make([]byte, 0, len(raw))
	if !esc {
		return append(out, raw...), true
	}
	for {
		k := bytes.IndexByte(raw, '\\')
		if k < 0 {
			return append(out, raw...), true
		}
		out = append(out, raw[:k]...)
		c := raw[k+1]
		raw = raw[k+2:]
		switch c {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, _ := hex4(raw)
			raw = raw[4:]
			if utf8.RuneLen(r) < 0 { // a surrogate: a pair, or encoding/json decides
				r2, ok := rune(0), len(raw) >= 6 && raw[0] == '\\' && raw[1] == 'u'
				if ok {
					r2, _ = hex4(raw[2:])
				}
				if !ok || r < 0xd800 || r > 0xdbff || r2 < 0xdc00 || r2 > 0xdfff {
					return nil, false
				}
				r = 0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00)
				raw = raw[6:]
			}
			out = utf8.AppendRune(out, r)
		default: // '"', '\\', '/'
			out = append(out, c)
		}
	}
}

// scalar reads an id or domain: a string (decoded), a number (its
// literal, as json.Number keeps it) or null ("").
func (s *jsonScanner) scalar() (string, bool) {
	switch c := s.peek(); {
	case c == '"':
		raw, esc, ok := s.str()
		if !ok {
			return "", false
		}
		if !esc {
			return string(raw), true
		}
		v, ok := unquote(raw, esc)
		return string(v), ok
	case c == '-' || '0' <= c && c <= '9':
		start := s.i
		if !s.number() {
			return "", false
		}
		return string(s.b[start:s.i]), true
	case c == 'n':
		return "", s.literal("null")
	}
	return "", false
}

func (s *jsonScanner) literal(lit string) bool {
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return true
	}
	return false
}

func (s *jsonScanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jsonScanner) number() bool {
	s.eat('-')
	if s.eat('0') {
		if c := s.peek(); '0' <= c && c <= '9' {
			return false
		}
	} else if !s.digits() {
		return false
	}
	if s.eat('.') && !s.digits() {
		return false
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if !s.eat('+') {
			s.eat('-')
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// maxDepth bounds nesting in skipped values; deeper records take the
// general path (encoding/json has its own limit).
const maxDepth = 64

// skip scans over any value.
func (s *jsonScanner) skip(depth int) bool {
	if depth > maxDepth {
		return false
	}
	switch c := s.peek(); {
	case c == '"':
		_, _, ok := s.str()
		return ok
	case c == '{':
		s.i++
		s.space()
		if s.eat('}') {
			return true
		}
		for {
			s.space()
			if _, _, ok := s.str(); !ok {
				return false
			}
			s.space()
			if !s.eat(':') {
				return false
			}
			s.space()
			if !s.skip(depth + 1) {
				return false
			}
			s.space()
			if s.eat('}') {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case c == '[':
		s.i++
		s.space()
		if s.eat(']') {
			return true
		}
		for {
			s.space()
			if !s.skip(depth + 1) {
				return false
			}
			s.space()
			if s.eat(']') {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}
