package pipelines

import (
	"bytes"
	"fmt"
	"unicode/utf8"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/tokenize"
)

// UTF8Policy says what happens to text that is not valid UTF-8.
type UTF8Policy string

const (
	// UTF8Reject records the document as rejected (reason invalid_utf8).
	UTF8Reject UTF8Policy = "reject"
	// UTF8Replace replaces invalid bytes with U+FFFD exactly as Python's
	// bytes.decode("utf-8", "replace") does, so ids match Hugging Face
	// tokenizers run on Python-decoded text.
	UTF8Replace UTF8Policy = "replace"
)

// Repair returns the FileConfig.Repair hook for the policy.
func (p UTF8Policy) Repair() func([]byte) []byte {
	if p != UTF8Replace {
		return nil
	}
	return func(b []byte) []byte {
		if utf8.Valid(b) {
			return b
		}
		s, _ := tokenize.SanitizeUTF8(b)
		return []byte(s)
	}
}

// Validate rejects unknown policies.
func (p UTF8Policy) Validate() error {
	if p != UTF8Reject && p != UTF8Replace {
		return fmt.Errorf("invalid-utf8 policy %q: want %q or %q", p, UTF8Reject, UTF8Replace)
	}
	return nil
}

// HeaderFor is the store header that a tokenizer and packing config imply.
func HeaderFor(tok *tokenize.Tokenizer, pc packing.Config) store.Header {
	return store.Header{
		FormatVersion:        store.FormatVersion,
		Tokenizer:            tok.Name(),
		TokenizerFingerprint: tok.Fingerprint(),
		VocabSize:            tok.VocabSize(),
		SeqLen:               pc.SeqLen,
		Mode:                 pc.Mode,
		AppendEOS:            pc.AppendEOS,
		EOS:                  pc.EOS,
		PAD:                  pc.PAD,
		MaxOpen:              pc.MaxOpen,
	}
}

// PackingFor completes a packing config with the tokenizer's EOS and PAD:
// EOS is appended when the tokenizer has one; PAD falls back to EOS.
func PackingFor(tok *tokenize.Tokenizer, pc packing.Config) packing.Config {
	eos, hasEOS := tok.EOS()
	pc.EOS, pc.AppendEOS = eos, hasEOS
	pc.PAD = eos
	if pad, ok := tok.PAD(); ok {
		pc.PAD = pad
	}
	if pc.Mode == packing.Concat {
		pc.MaxOpen = 0
	} else if pc.MaxOpen == 0 {
		pc.MaxOpen = packing.DefaultConfig().MaxOpen
	}
	return pc
}

// packStage accepts documents of one ordered stream: it validates them,
// lays their tokens into sequences and gathers everything into the batch
// that the next commit makes durable together with the stream's position.
type packStage struct {
	st      *store.Store
	packer  *packing.Packer
	pending map[string]bool // doc keys accepted since the last commit
	batch   store.Batch
}

func newPackStage(st *store.Store, p *packing.Packer) *packStage {
	return &packStage{st: st, packer: p, pending: map[string]bool{}}
}

// check returns the reason a document cannot be accepted, or "".
func (ps *packStage) check(d *ingest.Document) (reason, detail string, err error) {
	switch {
	case len(bytes.TrimSpace(d.Text)) == 0:
		return ingest.ReasonEmptyText, "no text after trimming whitespace", nil
	case !utf8.Valid(d.Text):
		return ingest.ReasonInvalidUTF8, "text is not valid UTF-8 (use --invalid-utf8=replace to repair)", nil
	case ps.pending[d.ID]:
		return ingest.ReasonDuplicateID, "id seen earlier in this input", nil
	}
	dup, err := ps.st.HasDoc(d.ID)
	if err != nil {
		return "", "", err
	}
	if dup {
		return ingest.ReasonDuplicateID, "id already in the store", nil
	}
	return "", "", nil
}

func (ps *packStage) reject(r *ingest.Reject) {
	ps.batch.Rejects = append(ps.batch.Rejects, store.Reject{
		Source: r.Source, Position: r.Position, DocKey: r.DocKey, Reason: r.Reason, Detail: r.Detail, Bytes: r.Bytes,
	})
}

// accept packs a checked document with its token ids.
func (ps *packStage) accept(d *ingest.Document, ids []uint32) {
	ps.pending[d.ID] = true
	ps.batch.Docs = append(ps.batch.Docs, store.DocRecord{
		Key: d.ID, Domain: d.Domain, Source: d.Source, Position: d.Position,
		Tokens: len(ids), Bytes: len(d.Text), Time: d.Time,
	})
	ps.batch.Sequences = append(ps.batch.Sequences, ps.packer.Add(packing.Doc{Key: d.ID, Domain: d.Domain, Tokens: ids})...)
}

// commit writes the gathered batch with the stream's resume state.
func (ps *packStage) commit(source string, state []byte) error {
	ps.batch.Sources = map[string][]byte{source: state}
	if _, err := ps.st.Commit(&ps.batch); err != nil {
		return err
	}
	ps.batch = store.Batch{}
	clear(ps.pending)
	return nil
}

func (ps *packStage) pendingSequences() int { return len(ps.batch.Sequences) }
