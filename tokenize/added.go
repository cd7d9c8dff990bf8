package tokenize

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// AddedToken is an entry of tokenizer.json's added_tokens, with the id Hugging Face
// tokenizers assigns to it.
type AddedToken struct {
	ID         uint32
	Content    string
	SingleWord bool // match only when not inside a word (\w on either side)
	LStrip     bool // swallow whitespace on the left
	RStrip     bool // swallow whitespace on the right
	Normalized bool // matched after the non-normalized tokens, on the remaining text
	Special    bool // only affects HF decode(skip_special_tokens=True); kept for export
}

// addedMatcher finds added tokens in text with Hugging Face AddedVocabulary semantics:
// leftmost-longest matches (aho-corasick MatchKind::LeftmostLongest), then the
// single_word / lstrip / rstrip adjustments of AddedVocabulary::find_matches.
type addedMatcher struct {
	first [256]bool
	// byFirst holds, per first byte, candidates sorted longest first.
	byFirst [256][]*AddedToken
	// firstByte is set when every pattern starts with the same byte (the usual "<|").
	firstByte int
	any       bool
}

func newAddedMatcher(tokens []*AddedToken) *addedMatcher {
	m := &addedMatcher{firstByte: -1}
	for _, t := range tokens {
		c := t.Content[0]
		m.first[c] = true
		m.byFirst[c] = append(m.byFirst[c], t)
		m.any = true
	}
	n := 0
	for c := range m.byFirst {
		if l := m.byFirst[c]; len(l) > 0 {
			sort.SliceStable(l, func(i, j int) bool { return len(l[i].Content) > len(l[j].Content) })
			n++
			m.firstByte = c
		}
	}
	if n != 1 {
		m.firstByte = -1
	}
	return m
}

// find returns the leftmost-longest match in s at or after from.
func (m *addedMatcher) find(s string, from int) (start int, tok *AddedToken) {
	for i := from; i < len(s); i++ {
		if m.firstByte >= 0 {
			k := strings.IndexByte(s[i:], byte(m.firstByte))
			if k < 0 {
				return -1, nil
			}
			i += k
		} else if !m.first[s[i]] {
			continue
		}
		for _, t := range m.byFirst[s[i]] {
			if strings.HasPrefix(s[i:], t.Content) {
				return i, t
			}
		}
	}
	return -1, nil
}

// addedSplit is one piece of the text: an added token or plain text.
type addedSplit struct {
	start, end int
	tok        *AddedToken // nil for text
}

// split appends the pieces of s, reproducing AddedVocabulary::find_matches including
// its offset arithmetic: the search resumes at the raw match end even when rstrip
// extended the piece.
func (m *addedMatcher) split(dst []addedSplit, s string) []addedSplit {
	startOffset := 0
	for from := 0; from < len(s); {
		start, tok := m.find(s, from)
		if tok == nil {
			break
		}
		stop := start + len(tok.Content)
		from = stop
		if tok.SingleWord {
			startSpace := start == 0 || !endsWithWord(s[:start])
			stopSpace := stop == len(s) || !startsWithWord(s[stop:])
			if !startSpace || !stopSpace {
				continue
			}
		}
		if tok.LStrip {
			start = max(trailingSpaceStart(s[:start]), startOffset)
		}
		if tok.RStrip {
			stop += leadingSpaceLen(s[stop:])
		}
		if startOffset < start {
			dst = append(dst, addedSplit{start: startOffset, end: start})
		}
		dst = append(dst, addedSplit{start: start, end: stop, tok: tok})
		startOffset = stop
	}
	if startOffset != len(s) {
		dst = append(dst, addedSplit{start: startOffset, end: len(s)})
	}
	return dst
}

// isWordRune is Rust regex's Unicode \w: Alphabetic, marks, decimal numbers,
// connector punctuation and join controls.
func isWordRune(r rune) bool {
	if r < utf8.RuneSelf {
		return r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
	}
	return unicode.IsLetter(r) || unicode.In(r, unicode.Nl, unicode.Other_Alphabetic, unicode.M,
		unicode.Nd, unicode.Pc, unicode.Join_Control)
}

func endsWithWord(s string) bool {
	r, size := utf8.DecodeLastRuneInString(s)
	return size > 0 && isWordRune(r)
}

func startsWithWord(s string) bool {
	r, size := utf8.DecodeRuneInString(s)
	return size > 0 && isWordRune(r)
}

// trailingSpaceStart is the start of the run of whitespace that ends s.
func trailingSpaceStart(s string) int {
	i := len(s)
	for i > 0 {
		r, size := utf8.DecodeLastRuneInString(s[:i])
		if !unicode.IsSpace(r) {
			break
		}
		i -= size
	}
	return i
}

// leadingSpaceLen is the length of the run of whitespace that starts s.
func leadingSpaceLen(s string) int {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += size
	}
	return i
}
