package tokenize

import (
	"unicode"
	"unicode/utf8"
)

// The pre-tokenizers below are hand-written equivalents of two backtracking regexes
// (Oniguruma in Hugging Face tokenizers, fancy-regex in tiktoken). Go's regexp has no
// lookahead, and a leftmost-first alternation is cheaper to walk by hand than to
// interpret: each scanner returns the end of the piece that the regex would match at i.
// Every character starts some alternative, so the pieces tile the text.

// preKind names a supported pre-tokenizer regex.
type preKind uint8

const (
	preGPT2   preKind = iota + 1 // GPT-2 / r50k / p50k
	preCL100K                    // cl100k_base (dolma2)
)

func (k preKind) String() string {
	switch k {
	case preGPT2:
		return "gpt2"
	case preCL100K:
		return "cl100k"
	}
	return "unknown"
}

// Regex sources as they appear in tokenizer.json files. Each was checked to produce
// the same ids as the hand-written scanner in Hugging Face tokenizers (see
// scripts/tokenizer/make_goldens.py).
const (
	patGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	// tiktoken's r50k spelling of the same pattern.
	patGPT2Tiktoken = `'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s`
	patCL100K       = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// tiktoken's cl100k spelling is deliberately absent: Oniguruma reads its
	// \p{N}{1,3}+ as repeated 1-3 digit runs, so HF splits numbers differently with it.
)

var splitPatterns = map[string]preKind{
	patGPT2:         preGPT2,
	patGPT2Tiktoken: preGPT2,
	patCL100K:       preCL100K,
}

// Character classes as the regexes see them: \p{L}, \p{N}, \s (Unicode White_Space,
// which is also Go's unicode.IsSpace), with \r and \n split out for cl100k.
const (
	clsOther     uint8 = iota // [^\s\p{L}\p{N}]
	clsLetter                 // \p{L}
	clsNumber                 // \p{N}
	clsSpace                  // \s other than \r \n
	clsNewline                // \r or \n
	clsMultibyte              // byteClass only: a UTF-8 lead or continuation byte
)

// byteClass classifies ASCII bytes directly; bytes ≥ 0x80 send the caller to the
// rune decoder.
var byteClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		if c < utf8.RuneSelf {
			t[c] = runeClass(rune(c))
		} else {
			t[c] = clsMultibyte
		}
	}
	return t
}()

func runeClass(r rune) uint8 {
	switch {
	case r == '\r' || r == '\n':
		return clsNewline
	case unicode.IsLetter(r):
		return clsLetter
	case unicode.IsNumber(r):
		return clsNumber
	case unicode.IsSpace(r):
		return clsSpace
	}
	return clsOther
}

// classAt returns the class and byte length of the character at s[i]; s is valid UTF-8.
// Small enough to inline; non-ASCII goes out of line.
func classAt(s string, i int) (uint8, int) {
	if c := byteClass[s[i]]; c != clsMultibyte {
		return c, 1
	}
	return classAtSlow(s, i)
}

func classAtSlow(s string, i int) (uint8, int) {
	r, size := utf8.DecodeRuneInString(s[i:])
	return runeClass(r), size
}

func isSpaceClass(c uint8) bool { return c >= clsSpace }

// scanClass returns the end of the run of class cls starting at i.
func scanClass(s string, i int, cls uint8) int {
	for i < len(s) {
		c := byteClass[s[i]]
		if c == cls {
			i++
			continue
		}
		if c != clsMultibyte {
			break
		}
		c, size := classAtSlow(s, i)
		if c != cls {
			break
		}
		i += size
	}
	return i
}

// scanWhitespace returns the end of the whitespace run starting at i, the start of its
// last character, and the start of its last \r or \n (-1 if none).
func scanWhitespace(s string, i int) (end, last, lastNL int) {
	last, lastNL = i, -1
	for i < len(s) {
		c, size := classAt(s, i)
		if !isSpaceClass(c) {
			break
		}
		if c == clsNewline {
			lastNL = i
		}
		last = i
		i += size
	}
	return i, last, lastNL
}

// nextGPT2 implements
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func nextGPT2(s string, i int) int {
	n := len(s)
	c := s[i]
	// Fast path for the commonest pieces: ASCII word or space + ASCII word.
	if cls := byteClass[c]; cls == clsLetter {
		return scanClass(s, i+1, clsLetter)
	} else if c == ' ' && i+1 < n && byteClass[s[i+1]] == clsLetter {
		return scanClass(s, i+2, clsLetter)
	}
	if c == '\'' && i+1 < n {
		switch s[i+1] {
		case 's', 't', 'm', 'd':
			return i + 2
		case 'r', 'v':
			if i+2 < n && s[i+2] == 'e' {
				return i + 3
			}
		case 'l':
			if i+2 < n && s[i+2] == 'l' {
				return i + 3
			}
		}
	}
	j := i
	if c == ' ' && i+1 < n {
		j = i + 1 // the optional leading space of the next three alternatives
	}
	cls, size := classAt(s, j)
	if !isSpaceClass(cls) {
		return scanClass(s, j+size, cls)
	}
	// \s+(?!\S) backtracks one character so the last space joins the next word; a
	// single space before a non-space falls through to \s+.
	end, last, _ := scanWhitespace(s, i)
	if end == n || last == i {
		return end
	}
	return last
}

// nextCL100K implements
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func nextCL100K(s string, i int) int {
	n := len(s)
	c := s[i]
	// Fast path for the commonest pieces: ASCII word or space + ASCII word.
	if cls := byteClass[c]; cls == clsLetter {
		return scanClass(s, i+1, clsLetter)
	} else if c == ' ' && i+1 < n && byteClass[s[i+1]] == clsLetter {
		return scanClass(s, i+2, clsLetter)
	}
	if c == '\'' && i+1 < n {
		switch s[i+1] {
		case 's', 'S', 't', 'T', 'm', 'M', 'd', 'D':
			return i + 2
		case 'r', 'R', 'v', 'V':
			if i+2 < n && (s[i+2] == 'e' || s[i+2] == 'E') {
				return i + 3
			}
		case 'l', 'L':
			if i+2 < n && (s[i+2] == 'l' || s[i+2] == 'L') {
				return i + 3
			}
		case 0xC5: // U+017F LATIN SMALL LETTER LONG S case-folds to s
			if i+2 < n && s[i+2] == 0xBF {
				return i + 3
			}
		}
	}
	cls, size := classAt(s, i)
	switch cls {
	case clsLetter:
		return scanClass(s, i+size, clsLetter)
	case clsNumber:
		j := i + size
		for k := 1; k < 3 && j < n; k++ {
			c2, size2 := classAt(s, j)
			if c2 != clsNumber {
				break
			}
			j += size2
		}
		return j
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+ with one leading non-letter.
	if cls != clsNewline && i+size < n {
		if c2, size2 := classAt(s, i+size); c2 == clsLetter {
			return scanClass(s, i+size+size2, clsLetter)
		}
	}
	// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	j, jcls, jsize := i, cls, size
	if c == ' ' && i+1 < n {
		j = i + 1
		jcls, jsize = classAt(s, j)
	}
	if jcls == clsOther {
		k := scanClass(s, j+jsize, clsOther)
		for k < n && (s[k] == '\r' || s[k] == '\n') {
			k++
		}
		return k
	}
	// Whitespace: \s*[\r\n]+ ends after the run's last newline; otherwise as GPT-2.
	end, last, lastNL := scanWhitespace(s, i)
	if lastNL >= 0 {
		return lastNL + 1
	}
	if end == n || last == i {
		return end
	}
	return last
}
