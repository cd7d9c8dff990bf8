package pipelines

import (
	"bytes"
	"fmt"
	"sync"
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
	pending *keySet  // keys accepted but not yet committed, shared by all streams into st
	mine    []string // this stage's keys in pending
	batch   store.Batch
	// recordBytes estimates what the batch's documents and rejects add to
	// its commit transaction (see full).
	recordBytes int
}

// MaxIDBytes bounds a document id: the id is a key of the store's document
// index, and Badger refuses keys over 65,000 bytes, which failed the whole
// commit (and, in a stream, every retry of it). Longer ids are rejected
// (reason id_too_long). Real ids (names, URLs, hashes) are far shorter.
const MaxIDBytes = 4096

// A batch's commit is one Badger transaction, which holds at most about
// 100,000 entries and 9.6 MB of keys and small values (15% of the 64 MB
// memtable): a document or a reject is one entry. Without these bounds a
// stream of tiny documents (a word each) gathered more than that before
// its 128 sequences were full, and the commit failed. A batch is full at
// the first of the bounds; the 64 records handled between two looks at
// it stay far inside Badger's.
const (
	maxBatchRecords     = 32 << 10
	maxBatchRecordBytes = 4 << 20
)

// recordOverhead is a document's or reject's share of its commit beyond
// its strings: the key prefix, the JSON value's names and numbers, and
// Badger's entry header.
const recordOverhead = 96

// full reports whether the batch should be committed now: maxSequences
// sequences wait, or its documents and rejects near what one
// transaction can hold.
func (ps *packStage) full(maxSequences int) bool {
	return len(ps.batch.Sequences) >= maxSequences || ps.records() >= maxBatchRecords || ps.recordBytes >= maxBatchRecordBytes
}

// records is the number of documents and rejects in the batch.
func (ps *packStage) records() int { return len(ps.batch.Docs) + len(ps.batch.Rejects) }

// shortKey keeps a rejected document's key printable in the store and in
// dead-letter headers: ids over MaxIDBytes are cut (at a rune boundary)
// and marked with their length.
func shortKey(id string) string {
	if len(id) <= MaxIDBytes {
		return id
	}
	cut := 256
	for cut > 0 && !utf8.RuneStart(id[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", id[:cut], len(id))
}

func newPackStage(st *store.Store, p *packing.Packer, pending *keySet) *packStage {
	if pending == nil {
		pending = newKeySet()
	}
	return &packStage{st: st, packer: p, pending: pending}
}

// keySet holds the document keys accepted by any stream of a store but not
// yet committed, so that two partitions carrying the same id concurrently
// cannot both accept it. A key leaves the set only after its commit (or
// its batch's discard), so it is always in the set or in the store.
type keySet struct {
	mu   sync.Mutex
	keys map[string]bool
}

func newKeySet() *keySet { return &keySet{keys: map[string]bool{}} }

// reserve adds key unless present; it reports whether it was added.
func (k *keySet) reserve(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reserveLocked(key)
}

func (k *keySet) reserveLocked(key string) bool {
	if k.keys[key] {
		return false
	}
	k.keys[key] = true
	return true
}

func (k *keySet) release(keys []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range keys {
		delete(k.keys, key)
	}
}

// verdict is why a document cannot be accepted; an empty reason passes.
type verdict struct{ reason, detail string }

// check returns the reason a document cannot be accepted, or "". A
// document it passes is reserved: accept it next.
func (ps *packStage) check(d *ingest.Document) (reason, detail string, err error) {
	v, err := ps.checkAll([]ingest.Document{*d})
	if err != nil {
		return "", "", err
	}
	return v[0].reason, v[0].detail, nil
}

// checkAll is check for each of docs, in order (a second document with an
// id is the duplicate), with one lock of the pending keys and one store
// read for all of them: per document they cost more than tokenizing a
// short one. The documents it passes are reserved: accept them next.
func (ps *packStage) checkAll(docs []ingest.Document) ([]verdict, error) {
	out := make([]verdict, len(docs))
	reserved := make([]int, 0, len(docs))
	ps.pending.mu.Lock()
	for i := range docs {
		d := &docs[i]
		switch {
		case len(d.ID) > MaxIDBytes:
			out[i] = verdict{ingest.ReasonIDTooLong, fmt.Sprintf("id of %d bytes; at most %d", len(d.ID), MaxIDBytes)}
		case len(bytes.TrimSpace(d.Text)) == 0:
			out[i] = verdict{ingest.ReasonEmptyText, "no text after trimming whitespace"}
		case !utf8.Valid(d.Text):
			out[i] = verdict{ingest.ReasonInvalidUTF8, "text is not valid UTF-8 (use --invalid-utf8=replace to repair)"}
		case !ps.pending.reserveLocked(d.ID):
			out[i] = verdict{ingest.ReasonDuplicateID, "id seen earlier in this input"}
		default:
			reserved = append(reserved, i)
		}
	}
	ps.pending.mu.Unlock()
	// After reserving: a key that another stream releases has been
	// committed by then, so the store has it (see keySet).
	keys := make([]string, len(reserved))
	for j, i := range reserved {
		keys[j] = docs[i].ID
	}
	inStore, err := ps.st.HasDocs(keys)
	if err != nil {
		ps.pending.release(keys)
		return nil, err
	}
	var dups []string
	for j, i := range reserved {
		if inStore[j] {
			out[i] = verdict{ingest.ReasonDuplicateID, "id already in the store"}
			dups = append(dups, keys[j])
			continue
		}
		ps.mine = append(ps.mine, keys[j])
	}
	if len(dups) > 0 {
		ps.pending.release(dups)
	}
	return out, nil
}

func (ps *packStage) reject(r *ingest.Reject) {
	key := shortKey(r.DocKey)
	ps.batch.Rejects = append(ps.batch.Rejects, store.Reject{
		Source: r.Source, Position: r.Position, DocKey: key, Reason: r.Reason, Detail: r.Detail, Bytes: r.Bytes,
	})
	ps.recordBytes += len(r.Source) + len(r.Position) + len(key) + len(r.Reason) + len(r.Detail) + recordOverhead
}

// accept packs a checked document with its token ids.
func (ps *packStage) accept(d *ingest.Document, ids []uint32) {
	ps.batch.Docs = append(ps.batch.Docs, store.DocRecord{
		Key: d.ID, Domain: d.Domain, Source: d.Source, Position: d.Position,
		Tokens: len(ids), Bytes: len(d.Text), Time: d.Time,
	})
	ps.recordBytes += len(d.ID) + len(d.Domain) + len(d.Source) + len(d.Position) + recordOverhead
	ps.batch.Sequences = append(ps.batch.Sequences, ps.packer.Add(packing.Doc{Key: d.ID, Domain: d.Domain, Tokens: ids})...)
}

// commit writes the gathered batch with the stream's resume state.
func (ps *packStage) commit(source string, state []byte) error {
	ps.batch.Sources = map[string][]byte{source: state}
	if _, err := ps.st.Commit(&ps.batch); err != nil {
		return err
	}
	ps.reset()
	return nil
}

// detach hands the batch and its reserved keys over to a commit, which
// releases the keys when it is done, and starts an empty batch.
func (ps *packStage) detach() (store.Batch, []string) {
	b, keys := ps.batch, ps.mine
	ps.batch, ps.mine, ps.recordBytes = store.Batch{}, nil, 0
	return b, keys
}

// reset forgets the batch (committed or discarded) and releases its keys.
func (ps *packStage) reset() {
	ps.batch, ps.recordBytes = store.Batch{}, 0
	ps.pending.release(ps.mine)
	ps.mine = ps.mine[:0]
}

func (ps *packStage) pendingSequences() int { return len(ps.batch.Sequences) }
