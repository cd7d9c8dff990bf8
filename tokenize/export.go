package tokenize

import (
	"bytes"
	"cmp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MarshalJSON writes a Hugging Face tokenizer.json that encodes and decodes like t
// (format version 1.0, readable by tokenizers ≥ 0.13). Merges use the "a b" string
// form unless a token contains a space. Special tokens are also listed in the model
// vocabulary so that HF keeps their ids when the vocabulary has gaps (HF numbers added
// tokens missing from the vocabulary after the vocabulary's entry count).
func (t *Tokenizer) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	m := t.model
	b.Grow(m.size*16 + len(m.merges)*16)
	b.WriteString("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [")
	added := slices.Clone(t.added)
	slices.SortFunc(added, func(a, b *AddedToken) int { return cmp.Compare(a.ID, b.ID) })
	for i, a := range added {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n    {\"id\": ")
		b.WriteString(strconv.FormatUint(uint64(a.ID), 10))
		b.WriteString(", \"content\": ")
		writeJSONString(&b, a.Content)
		b.WriteString(", \"single_word\": " + strconv.FormatBool(a.SingleWord))
		b.WriteString(", \"lstrip\": " + strconv.FormatBool(a.LStrip))
		b.WriteString(", \"rstrip\": " + strconv.FormatBool(a.RStrip))
		b.WriteString(", \"normalized\": " + strconv.FormatBool(a.Normalized))
		b.WriteString(", \"special\": " + strconv.FormatBool(a.Special) + "}")
	}
	b.WriteString("\n  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": ")
	switch t.pre {
	case preGPT2:
		b.WriteString(`{"type": "ByteLevel", "add_prefix_space": ` + strconv.FormatBool(t.addPrefixSpace) +
			`, "trim_offsets": true, "use_regex": true}`)
	case preCL100K:
		b.WriteString(`{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": `)
		writeJSONString(&b, patCL100K)
		b.WriteString(`}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}`)
	}
	b.WriteString(",\n  \"post_processor\": ")
	if t.postRaw != nil {
		b.Write(t.postRaw)
	} else {
		b.WriteString("null")
	}
	b.WriteString(",\n  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true}")
	b.WriteString(",\n  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n" +
		"    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n" +
		"    \"byte_fallback\": false,\n    \"ignore_merges\": " + strconv.FormatBool(m.ignoreMerges) + ",\n    \"vocab\": {")
	first := true
	for id := 0; id < m.size; id++ {
		s, ok := m.tokenString(uint32(id))
		if !ok {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString("\n      ")
		writeJSONString(&b, s)
		b.WriteString(": ")
		b.WriteString(strconv.Itoa(id))
	}
	b.WriteString("\n    },\n    \"merges\": [")
	strs := make([][2]string, len(m.merges))
	pairs := false
	for i, mg := range m.merges {
		l, _ := m.tokenString(mg.left)
		r, _ := m.tokenString(mg.right)
		strs[i] = [2]string{l, r}
		pairs = pairs || strings.Contains(l, " ") || strings.Contains(r, " ")
	}
	for i, s := range strs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n      ")
		if pairs {
			b.WriteByte('[')
			writeJSONString(&b, s[0])
			b.WriteString(", ")
			writeJSONString(&b, s[1])
			b.WriteByte(']')
		} else {
			writeJSONString(&b, s[0]+" "+s[1])
		}
	}
	b.WriteString("\n    ]\n  }\n}\n")
	return b.Bytes(), nil
}

// writeJSONString writes s as a JSON string, escaping only what JSON requires (no
// HTML escaping, unlike encoding/json), like serde_json.
func writeJSONString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			_, size := utf8.DecodeRuneInString(s[i:])
			b.WriteString(s[i : i+size])
			i += size
			continue
		}
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			} else {
				b.WriteByte(c)
			}
		}
		i++
	}
	b.WriteByte('"')
}
