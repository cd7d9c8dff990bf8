package tokenize

import "unicode/utf8"

// byteLevel holds GPT-2's reversible byte↔rune mapping (bytes_to_unicode): printable
// Latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards. Vocabulary
// strings in a byte-level tokenizer.json are written in this alphabet; internally the
// package works on raw bytes and only converts at the JSON boundary.
type byteLevel struct {
	toRune [256]rune
	toByte map[rune]byte
}

func newByteLevel() *byteLevel {
	bl := &byteLevel{toByte: make(map[rune]byte, 256)}
	var printable [256]bool
	for b := '!'; b <= '~'; b++ {
		printable[b] = true
	}
	for b := 0xA1; b <= 0xAC; b++ {
		printable[b] = true
	}
	for b := 0xAE; b <= 0xFF; b++ {
		printable[b] = true
	}
	n := rune(0)
	for b := 0; b < 256; b++ {
		if printable[b] {
			bl.toRune[b] = rune(b)
		} else {
			bl.toRune[b] = 256 + n
			n++
		}
		bl.toByte[bl.toRune[b]] = byte(b)
	}
	return bl
}

// byteOrder lists the 256 bytes in the order GPT-2 assigned them ids (printable ranges
// first, then the rest), which is also the rank order of single bytes in tiktoken files.
func byteOrder() [256]byte {
	var order [256]byte
	var used [256]bool
	i := 0
	add := func(lo, hi int) {
		for b := lo; b <= hi; b++ {
			order[i] = byte(b)
			used[b] = true
			i++
		}
	}
	add('!', '~')
	add(0xA1, 0xAC)
	add(0xAE, 0xFF)
	for b := 0; b < 256; b++ {
		if !used[b] {
			order[i] = byte(b)
			i++
		}
	}
	return order
}

// encode returns the byte-level string of raw bytes b.
func (bl *byteLevel) encode(b []byte) string {
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = utf8.AppendRune(out, bl.toRune[c])
	}
	return string(out)
}

// decode maps a byte-level string back to raw bytes; ok is false when s holds a rune
// outside the alphabet (such a vocabulary entry can never be produced from bytes).
func (bl *byteLevel) decode(s string) (b []byte, ok bool) {
	b = make([]byte, 0, len(s))
	for _, r := range s {
		c, in := bl.toByte[r]
		if !in {
			return nil, false
		}
		b = append(b, c)
	}
	return b, true
}

// decodeForDecoder mirrors the ByteLevel decoder of Hugging Face tokenizers: a token
// whose every rune is in the alphabet becomes those bytes, any other token is copied
// as its UTF-8 text.
func (bl *byteLevel) decodeForDecoder(s string) []byte {
	if b, ok := bl.decode(s); ok {
		return b
	}
	return []byte(s)
}
