package tokenize

import (
	"unicode/utf8"
	"unsafe"
)

// SanitizeUTF8 replaces ill-formed UTF-8 exactly as Python's
// bytes.decode("utf-8", errors="replace") (and Rust's String::from_utf8_lossy) do: each
// maximal subpart of an ill-formed sequence becomes one U+FFFD. It returns the text and
// the number of replacements. Go's own conversions replace byte by byte instead, which
// would give different token ids for truncated multi-byte sequences.
func SanitizeUTF8(b []byte) (string, int) {
	if utf8.Valid(b) {
		return string(b), 0
	}
	return sanitize(unsafe.String(unsafe.SliceData(b), len(b)))
}

// sanitize is SanitizeUTF8 for a string already known to be invalid.
func sanitize(s string) (string, int) {
	out := make([]byte, 0, len(s)+16)
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError || size > 1 {
			out = append(out, s[i:i+size]...)
			i += size
			continue
		}
		out = append(out, "\uFFFD"...)
		n++
		i += maximalSubpart(s[i:])
	}
	return unsafe.String(unsafe.SliceData(out), len(out)), n
}

// maximalSubpart returns the length of the longest prefix of s (which starts with an
// ill-formed sequence) that is a prefix of some well-formed sequence, or 1.
func maximalSubpart(s string) int {
	c := s[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF) // allowed range of the second byte
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c == 0xED:
		need, hi = 2, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90
	case c == 0xF4:
		need, hi = 3, 0x8F
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	default:
		return 1
	}
	k := 1
	for ; k <= need && k < len(s); k++ {
		b := s[k]
		if k == 1 {
			if b < lo || b > hi {
				break
			}
		} else if b < 0x80 || b > 0xBF {
			break
		}
	}
	return k
}
