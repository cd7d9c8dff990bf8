package store

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/y"

	"github.com/emopipe/emopipe/packing"
)

// Staging supports a commit point outside the store. A Kafka ingester
// cannot commit its store and its consumer-group offset atomically, so it
// makes the group offset the commit point:
//
//  1. stage (Store.Stage): write the batch under the partition's staging
//     key (nothing visible: no sequence numbers, stats or documents yet);
//  2. commit the offset to Kafka;
//  3. finalize (Store.Finalize): commit the batch for real and delete the
//     staged copy in one transaction — or, if the offset commit failed,
//     delete it (Store.Discard).
//
// After a crash, a staged batch (Store.Staged, DecodeStaged) is finalized
// when Kafka's committed offset has reached the batch's end and discarded
// otherwise, so the store and the group agree on every record exactly
// once, also when another group member takes the partition over.
//
// A batch's sequences are written once. The staged value is a chunk (key
// prefChunk+source+end) and the staging key holds only a marker naming
// it; finalizing writes, under each sequence's number, a reference to its
// bytes in the chunk (a few dozen bytes) and keeps the chunk. Tokens are
// the bulk of an ingester's writes: copying them again at the final
// commit cost a second value-log write per batch, and the deleted staged
// copy stayed in the value log as garbage, doubling an ingested store's
// size on disk. Documents and rejects, small, are still copied. Batches
// staged by earlier versions (the whole value under the staging key) are
// finalized by copying, as then.

// StagedBatch is a batch of one source, encoded for staging and for its
// final commit. It is immutable.
type StagedBatch struct {
	// Source is the batch's source (a topic partition).
	Source string
	// End is the source position the batch reaches (a Kafka offset).
	End int64
	// Token identifies the commit that makes the batch final (it travels
	// as the Kafka offset commit's metadata).
	Token string

	raw    []byte // the staged value
	state  []byte // the source's resume state after the batch
	enc    *encoded
	seqLen int // tokens of every sequence (-1: they differ)
	// chunk is the key raw is stored under (nil: under the staging key,
	// as earlier versions staged), and seqOff the offset in raw of each
	// sequence's encoding.
	chunk  []byte
	seqOff []int
}

// chunkMarker starts a staging key's value that names the chunk holding
// the staged batch.
const chunkMarker = "emochunk\n"

// refFormat is the first byte of a sequence value that refers to a chunk
// (a packing.Sequence encoding starts with its format, 1): refFormat,
// uvarint key length, the chunk key, uvarint offset, uvarint length.
const refFormat = 0xC7

func appendSeqRef(b, chunk []byte, off, n int) []byte {
	b = append(b, refFormat)
	b = appendBytes(b, chunk)
	b = binary.AppendUvarint(b, uint64(off))
	return binary.AppendUvarint(b, uint64(n))
}

// seqBytes returns a sequence's encoding from its stored value: the value
// itself, or, for a reference, its bytes in the chunk (a copy).
func seqBytes(txn *badger.Txn, v []byte) ([]byte, error) {
	if len(v) == 0 || v[0] != refFormat {
		return v, nil
	}
	var out []byte
	err := withRef(txn, v, func(enc []byte) error {
		out = append([]byte(nil), enc...)
		return nil
	})
	return out, err
}

// withRef calls fn with the encoding a reference value points at, valid
// only during fn.
func withRef(txn *badger.Txn, ref []byte, fn func(enc []byte) error) error {
	r := stagedReader{b: ref[1:]}
	chunk := r.bytes()
	off, n := r.uvarint(), r.uvarint()
	if r.err != nil || len(r.b) != 0 {
		return fmt.Errorf("%w: sequence reference", packing.ErrCorrupt)
	}
	it, err := txn.Get(chunk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("chunk %q: %w", chunk, ErrNotFound)
	} else if err != nil {
		return err
	}
	return it.Value(func(c []byte) error {
		if off > uint64(len(c)) || n > uint64(len(c))-off {
			return fmt.Errorf("%w: reference past chunk %q", packing.ErrCorrupt, chunk)
		}
		return fn(c[off : off+n])
	})
}

// decodeSeqItem decodes a sequence item, following a reference.
func decodeSeqItem(txn *badger.Txn, it *badger.Item, seq *packing.Sequence) error {
	return damaged(it.Value(func(v []byte) error {
		if len(v) > 0 && v[0] == refFormat {
			return withRef(txn, v, seq.UnmarshalBinary)
		}
		return seq.UnmarshalBinary(v)
	}))
}

// damaged words Badger's checksum failure (its errors keep only the text
// of the cause) as packing.ErrCorrupt.
func damaged(err error) error {
	if err != nil && strings.Contains(err.Error(), y.ErrChecksumMismatch.Error()) {
		return fmt.Errorf("%w: its bytes in the value log fail their checksum (the store's files were damaged on disk)", packing.ErrCorrupt)
	}
	return err
}

// Sequences is the number of sequences the batch adds.
func (sb *StagedBatch) Sequences() int { return len(sb.enc.seqs) }

// Size is the staged value's length in bytes.
func (sb *StagedBatch) Size() int { return len(sb.raw) }

// The staged value, format 2:
//
//	magic "emostg2\n"
//	string source, varint end, string token, bytes state
//	uvarint n, n × (uint32 length, packing.Sequence binary)
//	uvarint n, n × (string key, bytes DocRecord JSON)
//	uvarint n, n × bytes Reject JSON
//
// where string and bytes are a uvarint length and the bytes, and uint32 is
// little-endian (a sequence is encoded in place, then its length filled
// in). Format 1 was gob (see decodeStagedGob); batches that a crash left in
// that format are still read.
const stagedMagic = "emostg2\n"

// Stage validates and encodes a single-source batch (its Sources must
// hold source's state) and writes it under source's staging key.
func (s *Store) Stage(b *Batch, source string, end int64, token string) (*StagedBatch, error) {
	state, ok := b.Sources[source]
	if !ok || len(b.Sources) != 1 || len(b.State)+len(b.Stage)+len(b.Unstage) > 0 {
		return nil, fmt.Errorf("store: stage %s: a staged batch carries the state of its one source and nothing else", source)
	}
	if err := s.checkSequences(b.Sequences); err != nil {
		return nil, err
	}
	e := encodeBatch(b)
	// One buffer, sized so that nothing moves: the final commit writes
	// slices of it.
	size := len(stagedMagic) + 6*binary.MaxVarintLen64 + len(source) + len(token) + len(state)
	enc := s.encoding()
	for i := range b.Sequences {
		size += 4 + b.Sequences[i].EncodedSize(enc)
	}
	for i, v := range e.docs {
		size += 2*binary.MaxVarintLen64 + len(e.docKeys[i]) + len(v)
	}
	for _, v := range e.rejects {
		size += binary.MaxVarintLen64 + len(v)
	}
	raw := make([]byte, 0, size)
	raw = append(raw, stagedMagic...)
	raw = appendString(raw, source)
	raw = binary.AppendVarint(raw, end)
	raw = appendString(raw, token)
	raw = appendBytes(raw, state)
	// Sequences are encoded straight into raw, each after a fixed-size
	// length that is filled in once the encoding is there.
	raw = binary.AppendUvarint(raw, uint64(len(b.Sequences)))
	seqOff := make([]int, 0, len(b.Sequences))
	for i := range b.Sequences {
		seq := &b.Sequences[i]
		at := len(raw)
		raw = append(raw, 0, 0, 0, 0)
		raw = seq.AppendEncoded(raw, enc)
		binary.LittleEndian.PutUint32(raw[at:], uint32(len(raw)-at-4))
		e.seqs = append(e.seqs, raw[at+4:len(raw):len(raw)])
		seqOff = append(seqOff, at+4)
		e.delta.addSequence(seq)
	}
	raw = binary.AppendUvarint(raw, uint64(len(e.docs)))
	for i, v := range e.docs {
		raw = appendString(raw, e.docKeys[i])
		raw = appendBytes(raw, v)
		e.docs[i] = raw[len(raw)-len(v) : len(raw) : len(raw)]
	}
	raw = binary.AppendUvarint(raw, uint64(len(e.rejects)))
	for _, v := range e.rejects {
		raw = appendBytes(raw, v)
	}
	ck := chunkKey(source, end)
	sb := &StagedBatch{Source: source, End: end, Token: token, raw: raw, state: state, enc: e, seqLen: s.hdr.SeqLen, chunk: ck, seqOff: seqOff}
	// A chunk holds sequences of a final batch once finalized: staging
	// over one would corrupt them (an end reached twice means the caller
	// lost track of its offsets).
	if c, err := s.get(string(ck)); err != nil {
		return nil, err
	} else if c != nil {
		return nil, fmt.Errorf("store: stage %s to %d: a batch ending there is already stored", source, end)
	}
	marker := append([]byte(chunkMarker), ck...)
	if _, err := s.write(&encoded{delta: newDelta()}, &Batch{Stage: map[string][]byte{source: marker}}, &rawOps{set: [][2][]byte{{ck, raw}}}); err != nil {
		return nil, err
	}
	return sb, nil
}

// Finalize commits a staged batch for real (sequences, documents,
// rejects, the source's state) and deletes its staged copy, in one
// transaction. It returns the number given to the batch's first sequence.
func (s *Store) Finalize(sb *StagedBatch) (first uint64, err error) {
	if len(sb.enc.seqs) > 0 && sb.seqLen != s.hdr.SeqLen {
		return 0, fmt.Errorf("store: staged batch of %s: sequences of %d tokens in a store of seq_len %d", sb.Source, sb.seqLen, s.hdr.SeqLen)
	}
	final := &Batch{Sources: map[string][]byte{sb.Source: sb.state}, Unstage: []string{sb.Source}}
	if sb.chunk == nil {
		return s.write(sb.enc, final, nil) // staged in place by an earlier version: copy
	}
	refs := *sb.enc
	refs.seqs = make([][]byte, len(sb.enc.seqs))
	buf := make([]byte, 0, len(refs.seqs)*(len(sb.chunk)+16))
	for i, v := range sb.enc.seqs {
		at := len(buf)
		buf = appendSeqRef(buf, sb.chunk, sb.seqOff[i], len(v))
		refs.seqs[i] = buf[at:len(buf):len(buf)]
	}
	return s.write(&refs, final, nil)
}

// Discard deletes source's staged batch, if any.
func (s *Store) Discard(source string) error {
	var raw rawOps
	if v, err := s.get(prefStage + source); err != nil {
		return err
	} else if ck, ok := bytes.CutPrefix(v, []byte(chunkMarker)); ok {
		raw.del = append(raw.del, ck)
	}
	_, err := s.write(&encoded{delta: newDelta()}, &Batch{Unstage: []string{source}}, &raw)
	return err
}

// DecodeStaged restores a staged batch from its stored value (Staged).
func DecodeStaged(raw []byte) (*StagedBatch, error) {
	if !bytes.HasPrefix(raw, []byte(stagedMagic)) {
		return decodeStagedGob(raw)
	}
	sb := &StagedBatch{raw: raw, enc: &encoded{delta: newDelta()}}
	r := stagedReader{b: raw[len(stagedMagic):]}
	sb.Source = string(r.bytes())
	sb.End = r.varint()
	sb.Token = string(r.bytes())
	sb.state = r.bytes()
	n := r.count()
	sb.seqLen = -1
	for i := 0; i < n && r.err == nil; i++ {
		enc := r.fixed()
		if r.err != nil {
			break
		}
		sb.seqOff = append(sb.seqOff, len(raw)-len(r.b)-len(enc))
		var seq packing.Sequence
		if err := seq.UnmarshalBinary(enc); err != nil {
			return nil, fmt.Errorf("staged batch of %s: sequence %d: %w", sb.Source, i, err)
		}
		if i == 0 {
			sb.seqLen = len(seq.Tokens)
		} else if len(seq.Tokens) != sb.seqLen {
			sb.seqLen = -1
		}
		sb.enc.seqs = append(sb.enc.seqs, enc)
		sb.enc.delta.addSequence(&seq)
	}
	n = r.count()
	for i := 0; i < n && r.err == nil; i++ {
		key, v := string(r.bytes()), r.bytes()
		var d DocRecord
		if err := json.Unmarshal(v, &d); err != nil {
			return nil, fmt.Errorf("staged batch of %s: document %q: %w", sb.Source, key, err)
		}
		sb.enc.docKeys = append(sb.enc.docKeys, key)
		sb.enc.docs = append(sb.enc.docs, v)
		sb.enc.delta.addDoc(d)
	}
	n = r.count()
	for i := 0; i < n && r.err == nil; i++ {
		v := r.bytes()
		var rj Reject
		if err := json.Unmarshal(v, &rj); err != nil {
			return nil, fmt.Errorf("staged batch of %s: reject %d: %w", sb.Source, i, err)
		}
		sb.enc.rejects = append(sb.enc.rejects, v)
		sb.enc.delta.Rejects[rj.Reason]++
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, fmt.Errorf("staged batch of %s: %w", sb.Source, errCorruptStaged)
	}
	return sb, nil
}

var errCorruptStaged = errors.New("corrupt staged batch")

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

type stagedReader struct {
	b   []byte
	err error
}

func (r *stagedReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorruptStaged
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *stagedReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorruptStaged
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a count of items that take at least one byte each.
func (r *stagedReader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errCorruptStaged
		return 0
	}
	return int(n)
}

func (r *stagedReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errCorruptStaged
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// fixed reads a uint32-length value.
func (r *stagedReader) fixed() []byte {
	if len(r.b) < 4 {
		r.err = errCorruptStaged
		return nil
	}
	n := binary.LittleEndian.Uint32(r.b)
	if uint64(n) > uint64(len(r.b)-4) {
		r.err = errCorruptStaged
		return nil
	}
	v := r.b[4 : 4+n : 4+n]
	r.b = r.b[4+n:]
	return v
}

// Format 1: gob of this struct. Kept for batches staged by earlier
// versions.
type stagedGob struct {
	Sequences [][]byte
	Docs      []stagedGobDoc
	Rejects   []Reject
	Source    string
	State     []byte
	End       int64
	Token     string
}

type stagedGobDoc struct {
	Key string
	DocRecord
}

func decodeStagedGob(raw []byte) (*StagedBatch, error) {
	var st stagedGob
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&st); err != nil {
		return nil, fmt.Errorf("staged batch: %w", err)
	}
	b := &Batch{Rejects: st.Rejects}
	for i, enc := range st.Sequences {
		var s packing.Sequence
		if err := s.UnmarshalBinary(enc); err != nil {
			return nil, fmt.Errorf("staged batch of %s: sequence %d: %w", st.Source, i, err)
		}
		b.Sequences = append(b.Sequences, s)
	}
	for _, d := range st.Docs {
		rec := d.DocRecord
		rec.Key = d.Key
		b.Docs = append(b.Docs, rec)
	}
	e := encodeBatch(b)
	sb := &StagedBatch{Source: st.Source, End: st.End, Token: st.Token, raw: raw, state: st.State, enc: e, seqLen: -1}
	for i := range b.Sequences {
		seq := &b.Sequences[i]
		e.seqs = append(e.seqs, st.Sequences[i])
		e.delta.addSequence(seq)
		if i == 0 {
			sb.seqLen = len(seq.Tokens)
		} else if len(seq.Tokens) != sb.seqLen {
			sb.seqLen = -1
		}
	}
	return sb, nil
}
