package tokenize

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Load reads a Hugging Face tokenizer.json, gzip-compressed or not. The tokenizer is
// named after the file (base name without .json/.gz).
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenize: load: %w", err)
	}
	name := filepath.Base(path)
	name = strings.TrimSuffix(name, ".gz")
	name = strings.TrimSuffix(name, ".json")
	return Parse(data, name)
}

// Parse builds a Tokenizer from the contents of a tokenizer.json (gzip is detected).
// Components that could make ids differ from Hugging Face tokenizers are rejected with
// an *UnsupportedError (errors.Is(err, ErrUnsupported)).
func Parse(data []byte, name string) (*Tokenizer, error) {
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("tokenize: %s: gunzip: %w", name, err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("tokenize: %s: gunzip: %w", name, err)
		}
	}
	t, err := parse(data)
	if err != nil {
		var ue *UnsupportedError
		if errors.As(err, &ue) {
			ue.Name = name
			return nil, ue
		}
		return nil, fmt.Errorf("tokenize: %s: %w", name, err)
	}
	t.name = name
	return t, nil
}

type hfFile struct {
	Version       *string         `json:"version"`
	Truncation    json.RawMessage `json:"truncation"`
	Padding       json.RawMessage `json:"padding"`
	AddedTokens   []hfAddedToken  `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

type hfAddedToken struct {
	ID         uint32 `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// hfComponent has the fields of every pre-tokenizer, normalizer, decoder and
// post-processor this package inspects.
type hfComponent struct {
	Type           string            `json:"type"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	Pattern        map[string]string `json:"pattern"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Normalizers    []json.RawMessage `json:"normalizers"`
	Processors     []json.RawMessage `json:"processors"`
}

type hfBPE struct {
	Type                    string            `json:"type"`
	Dropout                 *float64          `json:"dropout"`
	ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
	IgnoreMerges            *bool             `json:"ignore_merges"`
	Vocab                   map[string]uint32 `json:"vocab"`
	Merges                  json.RawMessage   `json:"merges"`
}

func isNull(raw json.RawMessage) bool {
	s := bytes.TrimSpace(raw)
	return len(s) == 0 || string(s) == "null"
}

func unsupported(field, format string, args ...any) error {
	return &UnsupportedError{Field: field, Detail: fmt.Sprintf(format, args...)}
}

func parse(data []byte) (*Tokenizer, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if f.Version != nil && *f.Version != "1.0" {
		return nil, unsupported("version", "%q (only 1.0)", *f.Version)
	}
	if !isNull(f.Truncation) {
		return nil, unsupported("truncation", "truncation changes encode output; set it to null")
	}
	if !isNull(f.Padding) {
		return nil, unsupported("padding", "padding changes encode output; set it to null")
	}
	if err := checkNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	pre, prefix, err := parsePreTokenizer(f.PreTokenizer)
	if err != nil {
		return nil, err
	}
	if err := checkDecoder(f.Decoder); err != nil {
		return nil, err
	}
	if err := checkPostProcessor("post_processor", f.PostProcessor); err != nil {
		return nil, err
	}
	if isNull(f.Model) {
		return nil, errors.New("tokenizer.json has no model")
	}
	var mj hfBPE
	if err := json.Unmarshal(f.Model, &mj); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if mj.Type != "" && mj.Type != "BPE" {
		return nil, unsupported("model.type", "%q (only byte-level BPE)", mj.Type)
	}
	if mj.Vocab == nil || isNull(mj.Merges) {
		return nil, errors.New("model: missing vocab or merges")
	}
	if mj.Dropout != nil && *mj.Dropout != 0 {
		return nil, unsupported("model.dropout", "%v (dropout makes encoding random)", *mj.Dropout)
	}
	if mj.ContinuingSubwordPrefix != nil && *mj.ContinuingSubwordPrefix != "" {
		return nil, unsupported("model.continuing_subword_prefix", "%q", *mj.ContinuingSubwordPrefix)
	}
	if mj.EndOfWordSuffix != nil && *mj.EndOfWordSuffix != "" {
		return nil, unsupported("model.end_of_word_suffix", "%q", *mj.EndOfWordSuffix)
	}
	merges, err := parseMerges(mj.Merges)
	if err != nil {
		return nil, err
	}
	m, err := newModelFromStrings(mj.Vocab, merges, mj.IgnoreMerges != nil && *mj.IgnoreMerges)
	if err != nil {
		return nil, err
	}
	added, warnings := assignAddedIDs(f.AddedTokens, mj.Vocab)
	post := f.PostProcessor
	if isNull(post) {
		post = nil
	}
	t := newTokenizer(m, pre, prefix, added, post)
	t.warnings = warnings
	return t, nil
}

// parseMerges accepts both serialisations: "a b" strings (with #version lines
// skipped, as HF does) and ["a", "b"] pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	var legacy []string
	if err := json.Unmarshal(raw, &legacy); err == nil {
		out := make([][2]string, 0, len(legacy))
		for _, line := range legacy {
			if strings.HasPrefix(line, "#version") {
				continue
			}
			parts := strings.Split(line, " ")
			if len(parts) != 2 {
				return nil, fmt.Errorf("model.merges[%d]: %q is not two space-separated tokens", len(out), line)
			}
			out = append(out, [2]string{parts[0], parts[1]})
		}
		return out, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("model.merges: neither strings nor pairs: %w", err)
	}
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("model.merges[%d]: %d elements, want 2", i, len(p))
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

// assignAddedIDs reproduces how HF tokenizers assigns ids when it loads added_tokens
// (AddedVocabulary::add_tokens): an entry already in the model vocabulary keeps that
// id, any other gets the next id after the model vocabulary's entry count, whatever
// the file says. HF only logs a warning when the file disagrees; so does this package
// (Tokenizer.Warnings), and the ids are HF's.
func assignAddedIDs(tokens []hfAddedToken, vocab map[string]uint32) (added []*AddedToken, warnings []string) {
	next := uint32(len(vocab))
	byContent := map[string]*AddedToken{}
	for _, tj := range tokens {
		if tj.Content == "" {
			continue
		}
		t := AddedToken{Content: tj.Content, SingleWord: tj.SingleWord, LStrip: tj.LStrip,
			RStrip: tj.RStrip, Normalized: tj.Normalized, Special: tj.Special}
		old := byContent[t.Content]
		if old != nil {
			t.ID = old.ID
		} else if v, ok := vocab[t.Content]; ok {
			t.ID = v
		} else {
			t.ID = next
			next++
		}
		if t.ID != tj.ID {
			warnings = append(warnings, fmt.Sprintf(
				"added token %q has id %d in the file; Hugging Face tokenizers (and this package) use %d", t.Content, tj.ID, t.ID))
		}
		if old != nil {
			*old = t // a later entry replaces the earlier one's flags, as in HF
			continue
		}
		p := &t
		byContent[t.Content] = p
		added = append(added, p)
	}
	return added, warnings
}

func checkNormalizer(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var c hfComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("normalizer: %w", err)
	}
	if c.Type == "Sequence" && len(c.Normalizers) == 0 {
		return nil
	}
	return unsupported("normalizer", "%q (only null)", c.Type)
}

func checkDecoder(raw json.RawMessage) error {
	if isNull(raw) {
		return unsupported("decoder", "null (only ByteLevel)")
	}
	var c hfComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("decoder: %w", err)
	}
	if c.Type != "ByteLevel" {
		return unsupported("decoder", "%q (only ByteLevel)", c.Type)
	}
	return nil
}

// checkPostProcessor accepts the post-processors that add nothing when
// add_special_tokens is false, which is how Encode is defined.
func checkPostProcessor(field string, raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var c hfComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	switch c.Type {
	case "ByteLevel", "TemplateProcessing", "RobertaProcessing", "BertProcessing":
		return nil
	case "Sequence":
		for i, p := range c.Processors {
			if err := checkPostProcessor(fmt.Sprintf("%s.processors[%d]", field, i), p); err != nil {
				return err
			}
		}
		return nil
	}
	return unsupported(field, "%q", c.Type)
}

// parsePreTokenizer recognises the two supported shapes:
//
//	ByteLevel{use_regex: true}                          → GPT-2 regex
//	Sequence[Split{known regex}, ByteLevel{use_regex: false}] → that regex
func parsePreTokenizer(raw json.RawMessage) (preKind, bool, error) {
	const field = "pre_tokenizer"
	if isNull(raw) {
		return 0, false, unsupported(field, "null (only byte-level pre-tokenizers)")
	}
	var c hfComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return 0, false, fmt.Errorf("%s: %w", field, err)
	}
	switch c.Type {
	case "ByteLevel":
		if c.UseRegex != nil && !*c.UseRegex {
			return 0, false, unsupported(field, "ByteLevel with use_regex=false and no Split before it")
		}
		return preGPT2, c.AddPrefixSpace != nil && *c.AddPrefixSpace, nil
	case "Sequence":
		if len(c.Pretokenizers) != 2 {
			return 0, false, unsupported(field, "Sequence of %d pre-tokenizers (only [Split, ByteLevel])", len(c.Pretokenizers))
		}
		var split, byteLevel hfComponent
		if err := json.Unmarshal(c.Pretokenizers[0], &split); err != nil {
			return 0, false, fmt.Errorf("%s.pretokenizers[0]: %w", field, err)
		}
		if err := json.Unmarshal(c.Pretokenizers[1], &byteLevel); err != nil {
			return 0, false, fmt.Errorf("%s.pretokenizers[1]: %w", field, err)
		}
		if split.Type != "Split" {
			return 0, false, unsupported(field+".pretokenizers[0]", "%q (only Split)", split.Type)
		}
		re, ok := split.Pattern["Regex"]
		if !ok || len(split.Pattern) != 1 {
			return 0, false, unsupported(field+".pretokenizers[0].pattern", "%v (only a Regex pattern)", split.Pattern)
		}
		kind, ok := splitPatterns[re]
		if !ok {
			return 0, false, unsupported(field+".pretokenizers[0].pattern",
				"regex %q (supported: the GPT-2 and cl100k patterns)", re)
		}
		// Every character starts a match of these regexes, so the pieces are the
		// matches whether they are isolated or kept by an inverted removal.
		if !(split.Behavior == "Isolated" && !split.Invert) && !(split.Behavior == "Removed" && split.Invert) {
			return 0, false, unsupported(field+".pretokenizers[0]",
				"behavior %q with invert=%v (only Isolated, or Removed with invert)", split.Behavior, split.Invert)
		}
		if byteLevel.Type != "ByteLevel" {
			return 0, false, unsupported(field+".pretokenizers[1]", "%q (only ByteLevel)", byteLevel.Type)
		}
		if byteLevel.UseRegex == nil || *byteLevel.UseRegex {
			return 0, false, unsupported(field+".pretokenizers[1]", "ByteLevel with use_regex=true after a Split")
		}
		if byteLevel.AddPrefixSpace != nil && *byteLevel.AddPrefixSpace {
			return 0, false, unsupported(field+".pretokenizers[1]", "ByteLevel with add_prefix_space=true after a Split")
		}
		return kind, false, nil
	}
	return 0, false, unsupported(field, "%q (only ByteLevel, or Sequence[Split, ByteLevel])", c.Type)
}
