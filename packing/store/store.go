package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/emopipe/emopipe/packing"
)

// FormatVersion is bumped whenever the key layout or an encoding changes.
// Version 2 stores sequences' tokens as 16-bit halves (packing.Low16),
// version 1 as uint32s. A store keeps the version it was created with: this emopipe
// reads and continues a version-1 store in its own encoding, so that the
// emopipe that made it can still read it.
const FormatVersion = 2

// Header fixes what every sequence in a store shares. A writer whose
// header differs in any field is refused.
type Header struct {
	FormatVersion        int          `json:"format_version"`
	Tokenizer            string       `json:"tokenizer"`
	TokenizerFingerprint string       `json:"tokenizer_fingerprint"`
	VocabSize            int          `json:"vocab_size"`
	SeqLen               int          `json:"seq_len"`
	Mode                 packing.Mode `json:"mode"`
	AppendEOS            bool         `json:"append_eos"`
	EOS                  uint32       `json:"eos"`
	PAD                  uint32       `json:"pad"`
	MaxOpen              int          `json:"max_open,omitempty"`
}

// PackingConfig is the packer configuration the header implies.
func (h Header) PackingConfig() packing.Config {
	return packing.Config{SeqLen: h.SeqLen, Mode: h.Mode, EOS: h.EOS, AppendEOS: h.AppendEOS, PAD: h.PAD, MaxOpen: h.MaxOpen}
}

// diff names the first field in which h and o differ, for a one-line error.
func (h Header) diff(o Header) string {
	a, b := fieldsOf(h), fieldsOf(o)
	for i := range a {
		if a[i][1] != b[i][1] {
			return fmt.Sprintf("%s is %s in the store, %s requested", a[i][0], a[i][1], b[i][1])
		}
	}
	return ""
}

func fieldsOf(h Header) [][2]string {
	short := h.TokenizerFingerprint
	if len(short) > 12 {
		short = short[:12]
	}
	return [][2]string{
		{"format_version", fmt.Sprint(h.FormatVersion)},
		{"tokenizer", fmt.Sprintf("%q (fingerprint %s)", h.Tokenizer, short)},
		{"vocab_size", fmt.Sprint(h.VocabSize)},
		{"seq_len", fmt.Sprint(h.SeqLen)},
		{"mode", string(h.Mode)},
		{"append_eos", fmt.Sprint(h.AppendEOS)},
		{"eos", fmt.Sprint(h.EOS)},
		{"pad", fmt.Sprint(h.PAD)},
		{"max_open", fmt.Sprint(h.MaxOpen)},
	}
}

// DocRecord is kept for every accepted document, written in the same
// transaction as the source position that follows it.
type DocRecord struct {
	Key      string `json:"-"`
	Domain   string `json:"domain,omitempty"`
	Source   string `json:"source"`
	Position string `json:"position"`
	Tokens   int    `json:"tokens"` // without the appended EOS
	Bytes    int    `json:"bytes"`
	// Time is the source's timestamp (Kafka record time, Unix ms), if any.
	Time int64 `json:"time,omitempty"`
}

// Reject is a record that was not packed, with why and where it came from.
type Reject struct {
	Source   string `json:"source"`
	Position string `json:"position"`
	DocKey   string `json:"doc,omitempty"`
	Reason   string `json:"reason"`
	Detail   string `json:"detail,omitempty"`
	Bytes    int    `json:"bytes"`
}

// MaxDomainStats bounds the domains that Stats counts one by one; the
// documents of further domains are counted together under OtherDomains.
// Stats are rewritten at every commit: with a domain per document (a
// domain field that names a URL, say) they grew with the store, and each
// commit cost as much as all the documents before it (200,000 documents
// of distinct domains packed in twice the time of one domain, into a
// store four times the size). Sequences keep every span's domain.
const MaxDomainStats = 1024

// OtherDomains is the Stats.Domains entry of the domains past the first
// MaxDomainStats.
const OtherDomains = "(other domains)"

// DomainStats counts accepted documents of one domain.
type DomainStats struct {
	Docs   uint64 `json:"docs"`
	Tokens uint64 `json:"tokens"`
	Bytes  uint64 `json:"bytes"`
}

// Stats are maintained in the same transactions as the data they count.
type Stats struct {
	Sequences uint64 `json:"sequences"`
	// Tokens are document tokens (EOS included) inside sequences.
	Tokens  uint64 `json:"tokens"`
	Padding uint64 `json:"padding"`
	// Docs counts accepted documents; SplitDocs those whose first span
	// continues in another sequence.
	Docs      uint64                  `json:"docs"`
	SplitDocs uint64                  `json:"split_docs"`
	Domains   map[string]*DomainStats `json:"domains"`
	Rejects   map[string]uint64       `json:"rejects"`
}

// Batch is everything one transaction makes durable together.
type Batch struct {
	Sequences []packing.Sequence
	Docs      []DocRecord
	Rejects   []Reject
	// Sources maps a source (a file set, a topic partition) to its resume
	// state: where to read next and the packer's unfinished tail. It must
	// describe exactly the input that produced the rest of the batch.
	Sources map[string][]byte
	// State holds trainer state entries (name → value) to write atomically
	// with the rest.
	State map[string][]byte
	// Stage saves staged values (source → encoded batch, see Store.Stage)
	// and Unstage deletes them, in the same transaction.
	Stage   map[string][]byte
	Unstage []string
}

// Options tune how the store is opened.
type Options struct {
	// InMemory keeps everything in memory (tests); dir is ignored.
	InMemory bool
	// ReadOnly opens an existing store for reading; Commit fails.
	ReadOnly bool
	// SyncWrites fsyncs every commit. Off by default: a killed process
	// loses nothing committed; only an OS crash can. Call Sync at
	// checkpoints instead.
	SyncWrites bool
	// MinFree is the free space, in bytes, on the store's file system
	// below which writes are refused (ErrDiskFull). Badger writes its files
	// through memory maps, and a write that finds the disk full is a
	// SIGBUS: the process dies with a fault, not an error. Zero means
	// $EMOPIPE_STORE_MIN_FREE_MB if set, else DefaultMinFree; negative
	// turns the check off.
	MinFree int64
}

// DefaultMinFree covers what Badger may write beyond a commit's own
// bytes before the next check: the rest of a memtable's write-ahead log
// (up to 128 MB) and its flush to a table.
const DefaultMinFree = 256 << 20

// Store is an open store. Its methods are safe for concurrent use; one
// process owns the directory.
type Store struct {
	db   *badger.DB
	dir  string
	hdr  Header
	opts Options

	mu      sync.Mutex // serialises commits; guards stats, next, rejects
	stats   Stats
	next    uint64
	rejects uint64
	notify  chan struct{} // closed and replaced after each commit that adds sequences
}

// Exists reports whether dir holds a store.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "MANIFEST"))
	return err == nil
}

// Open opens the store in dir, creating it with hdr when it does not exist.
// With an existing store, hdr (if not nil) must equal the stored header.
// A nil hdr opens an existing store whatever its header (readers).
func Open(dir string, hdr *Header, opts Options) (*Store, error) {
	if hdr != nil {
		h := *hdr
		h.FormatVersion = FormatVersion
		hdr = &h
	}
	if !opts.InMemory && !Exists(dir) {
		if hdr == nil || opts.ReadOnly {
			return nil, fmt.Errorf("open %s: %w (create it with emopipe pack or ingest)", dir, ErrNoStore)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create store %s: %w", dir, err)
		}
	}
	bo := badger.DefaultOptions(dir).
		WithLogger(quietLogger{}).
		WithInMemory(opts.InMemory).
		WithReadOnly(opts.ReadOnly).
		WithSyncWrites(opts.SyncWrites).
		// Sequences (about 2 bytes a token) go to the value log: fast appends,
		// and a batch of them stays well under the transaction size limit.
		WithValueThreshold(1 << 10).
		WithNumVersionsToKeep(1).
		// Writes are serialized by s.mu (and other processes by Badger's
		// directory lock), so transactions never conflict; tracking their
		// keys for conflicts cost a map insert per key, one per document.
		WithDetectConflicts(false).
		// Badger checks a value's CRC on read only when asked: without it,
		// 4 KB of random bytes written into a value log made a sequence
		// read back with token ids in the billions, and no error.
		WithVerifyValueChecksum(true)
	if opts.InMemory {
		bo = bo.WithDir("").WithValueDir("")
	}
	db, err := badger.Open(bo)
	if err != nil && !opts.ReadOnly && strings.Contains(err.Error(), "Create a new file") {
		// Only after Badger held the directory lock and failed on the file:
		// another process's memtable being created is never touched.
		if rerr := removeEmptyMemtables(dir); rerr != nil {
			return nil, fmt.Errorf("open store %s: %w", dir, rerr)
		}
		db, err = badger.Open(bo)
	}
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if opts.MinFree == 0 {
		opts.MinFree = DefaultMinFree
		if v := os.Getenv("EMOPIPE_STORE_MIN_FREE_MB"); v != "" {
			mb, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				db.Close()
				return nil, fmt.Errorf("EMOPIPE_STORE_MIN_FREE_MB=%q: want a whole number of MiB (0 or less: no check)", v)
			}
			opts.MinFree = max(min(mb, 1<<42)<<20, -1)
		}
	}
	s := &Store{db: db, dir: dir, opts: opts, notify: make(chan struct{})}
	if err := s.load(hdr); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// removeEmptyMemtables deletes zero-length memtable WAL files. Badger
// creates a memtable's file empty and then sizes it; a kill -9 between the
// two leaves a file that badger.Open refuses ("while opening fid: N err:
// Create a new file"), so the store could never be opened again. An empty
// WAL holds no writes: removing it loses nothing.
func removeEmptyMemtables(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".mem") || e.IsDir() {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Size() == 0 {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) load(want *Header) error {
	return s.db.Update(func(txn *badger.Txn) error {
		var stored Header
		err := getJSON(txn, keyHeader, &stored)
		switch {
		case errors.Is(err, ErrNotFound):
			if want == nil {
				return fmt.Errorf("open %s: %w (no header)", s.dir, ErrNoStore)
			}
			if s.opts.ReadOnly {
				return fmt.Errorf("open %s: %w", s.dir, ErrNoStore)
			}
			s.hdr = *want
			s.stats = Stats{Domains: map[string]*DomainStats{}, Rejects: map[string]uint64{}}
			return putJSON(txn, keyHeader, want)
		case err != nil:
			return err
		}
		if stored.FormatVersion > FormatVersion {
			return fmt.Errorf("store %s: %w: format_version %d was written by a newer emopipe (this one reads up to %d)", s.dir, ErrHeaderMismatch, stored.FormatVersion, FormatVersion)
		}
		if want != nil {
			w := *want
			w.FormatVersion = stored.FormatVersion // every older version is continued in its own
			if d := stored.diff(w); d != "" {
				return fmt.Errorf("store %s: %w: %s", s.dir, ErrHeaderMismatch, d)
			}
		}
		s.hdr = stored
		if err := getJSON(txn, keyStats, &s.stats); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if s.stats.Domains == nil {
			s.stats.Domains = map[string]*DomainStats{}
		}
		if s.stats.Rejects == nil {
			s.stats.Rejects = map[string]uint64{}
		}
		s.next = s.getU64(txn, keyNext)
		s.rejects = s.getU64(txn, keyRejN)
		return nil
	})
}

func (s *Store) getU64(txn *badger.Txn, key string) uint64 {
	it, err := txn.Get([]byte(key))
	if err != nil {
		return 0
	}
	v, _ := it.ValueCopy(nil)
	return u64(v)
}

// Header returns the store's header.
func (s *Store) Header() Header { return s.hdr }

// encoding is the sequence encoding the store's format version writes.
func (s *Store) encoding() packing.Encoding {
	if s.hdr.FormatVersion >= 2 {
		return packing.Low16
	}
	return packing.Fixed32
}

// Dir returns the store's directory ("" in memory).
func (s *Store) Dir() string { return s.dir }

// Stats returns a copy of the current statistics.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cloneStatsLocked()
}

// NumSequences is the number of committed sequences; they are numbered
// 0..NumSequences-1.
func (s *Store) NumSequences() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// Changed returns a channel closed at the next commit that adds sequences,
// so a trainer that has caught up can wait without polling.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notify
}

// Commit makes the batch durable in one transaction and returns the number
// given to its first sequence. Either all of it is in the store afterwards,
// or (on error, or if the process dies first) none of it.
func (s *Store) Commit(b *Batch) (first uint64, err error) {
	if err := s.checkSequences(b.Sequences); err != nil {
		return 0, err
	}
	e := encodeBatch(b)
	enc := s.encoding()
	for i := range b.Sequences {
		seq := &b.Sequences[i]
		e.seqs = append(e.seqs, seq.AppendEncoded(make([]byte, 0, seq.EncodedSize(enc)), enc))
		e.delta.addSequence(seq)
	}
	return s.write(e, b, nil)
}

// checkSequences refuses sequences that do not fit the header or whose
// spans are out of order.
func (s *Store) checkSequences(seqs []packing.Sequence) error {
	for i := range seqs {
		seq := &seqs[i]
		if len(seq.Tokens) != s.hdr.SeqLen {
			return fmt.Errorf("store: sequence of %d tokens in a store of seq_len %d", len(seq.Tokens), s.hdr.SeqLen)
		}
		if err := seq.Validate(); err != nil {
			return fmt.Errorf("store: sequence %d of the batch: %w", i, err)
		}
	}
	return nil
}

// encoded is a batch in the form it is stored: values ready to write, and
// what they add to the statistics.
type encoded struct {
	seqs    [][]byte // Sequence binary, in order
	docKeys []string
	docs    [][]byte // DocRecord JSON, by docKeys
	rejects [][]byte // Reject JSON, in order
	delta   Stats
}

func newDelta() Stats {
	return Stats{Domains: map[string]*DomainStats{}, Rejects: map[string]uint64{}}
}

// encodeBatch encodes a batch's documents and rejects; the caller adds
// the sequences.
func encodeBatch(b *Batch) *encoded {
	e := &encoded{delta: newDelta()}
	for _, d := range b.Docs {
		v := appendDocJSON(nil, &d)
		e.docKeys = append(e.docKeys, d.Key)
		e.docs = append(e.docs, v)
		e.delta.addDoc(d)
	}
	for _, r := range b.Rejects {
		v, _ := json.Marshal(r)
		e.rejects = append(e.rejects, v)
		e.delta.Rejects[r.Reason]++
	}
	return e
}

// appendDocJSON appends json.Marshal(d)'s bytes (TestAppendDocJSON holds
// that). A batch has a record per document, and encoding/json's reflection
// was 10 ms of a 22 MB ingest run; these fields are nearly always plain.
func appendDocJSON(b []byte, d *DocRecord) []byte {
	b = append(b, '{')
	if d.Domain != "" {
		b = append(b, `"domain":`...)
		b = appendJSONString(b, d.Domain)
		b = append(b, ',')
	}
	b = append(b, `"source":`...)
	b = appendJSONString(b, d.Source)
	b = append(b, `,"position":`...)
	b = appendJSONString(b, d.Position)
	b = append(b, `,"tokens":`...)
	b = strconv.AppendInt(b, int64(d.Tokens), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, int64(d.Bytes), 10)
	if d.Time != 0 {
		b = append(b, `,"time":`...)
		b = strconv.AppendInt(b, d.Time, 10)
	}
	return append(b, '}')
}

// appendJSONString quotes s as encoding/json does: plain printable ASCII
// as is, anything else through encoding/json itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func (st *Stats) addSequence(seq *packing.Sequence) {
	st.Sequences++
	st.Padding += uint64(seq.Padding())
	for _, sp := range seq.Spans {
		st.Tokens += uint64(sp.Length)
		if !sp.ContinuesFromPrev && sp.ContinuesInNext {
			st.SplitDocs++
		}
	}
}

func (st *Stats) addDoc(d DocRecord) {
	st.Docs++
	ds := st.Domains[d.Domain]
	if ds == nil {
		ds = &DomainStats{}
		st.Domains[d.Domain] = ds
	}
	ds.Docs++
	ds.Tokens += uint64(d.Tokens)
	ds.Bytes += uint64(d.Bytes)
}

// add merges a batch's delta into st.
func (st *Stats) add(d *Stats) {
	st.Sequences += d.Sequences
	st.Tokens += d.Tokens
	st.Padding += d.Padding
	st.Docs += d.Docs
	st.SplitDocs += d.SplitDocs
	// In key order: which domains fit under MaxDomainStats must not
	// depend on map iteration (same inputs, same store bytes).
	keys := make([]string, 0, len(d.Domains))
	for k := range d.Domains {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := d.Domains[k]
		ds := st.Domains[k]
		if ds == nil && len(st.Domains) >= MaxDomainStats {
			k = OtherDomains
			ds = st.Domains[k]
		}
		if ds == nil {
			ds = &DomainStats{}
			st.Domains[k] = ds
		}
		ds.Docs += v.Docs
		ds.Tokens += v.Tokens
		ds.Bytes += v.Bytes
	}
	for k, v := range d.Rejects {
		st.Rejects[k] += v
	}
}

// write commits an encoded batch with the rest of b (sources, state,
// staging) in one transaction.
// rawOps are key writes and deletes that go into a write's transaction
// beside its batch (chunks of staged batches, see stage.go).
type rawOps struct {
	set [][2][]byte
	del [][]byte
}

func (s *Store) write(e *encoded, b *Batch, raw *rawOps) (first uint64, err error) {
	if s.opts.ReadOnly {
		return 0, errors.New("store: commit on a read-only store")
	}
	if err := s.checkRoom(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	first = s.next
	stats := s.cloneStatsLocked()
	stats.add(&e.delta)
	rejects := s.rejects

	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	set := func(k, v []byte) {
		if err == nil {
			err = txn.Set(k, v)
		}
	}
	for i, v := range e.seqs {
		set(seqKey(first+uint64(i)), v)
	}
	for i, v := range e.docs {
		set([]byte(prefDoc+e.docKeys[i]), v)
	}
	for _, v := range e.rejects {
		set(rejKey(rejects), v)
		rejects++
	}
	for _, name := range sortedKeys(b.Sources) {
		set([]byte(prefSrc+name), b.Sources[name])
	}
	for _, name := range sortedKeys(b.State) {
		set([]byte(prefState+name), b.State[name])
	}
	for _, name := range sortedKeys(b.Stage) {
		set([]byte(prefStage+name), b.Stage[name])
	}
	for _, name := range b.Unstage {
		if err == nil {
			err = txn.Delete([]byte(prefStage + name))
		}
	}
	if raw != nil {
		for _, kv := range raw.set {
			set(kv[0], kv[1])
		}
		for _, k := range raw.del {
			if err == nil {
				err = txn.Delete(k)
			}
		}
	}
	next := first + uint64(len(e.seqs))
	// Staging alone changes no counter; everything else rewrites them.
	if len(e.seqs)+len(e.docs)+len(e.rejects)+len(b.Sources)+len(b.State) > 0 {
		set([]byte(keyNext), be64(next))
		set([]byte(keyRejN), be64(rejects))
		sv, _ := json.Marshal(stats)
		set([]byte(keyStats), sv)
	}
	if err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return 0, fmt.Errorf("store: batch of %d sequences and %d documents is too big for one transaction; commit smaller batches: %w", len(e.seqs), len(e.docs), err)
		}
		return 0, fmt.Errorf("store: commit: %w", err)
	}
	if err := txn.Commit(); err != nil {
		return 0, fmt.Errorf("store: commit: %w", err)
	}
	s.stats, s.next, s.rejects = stats, next, rejects
	if len(e.seqs) > 0 {
		close(s.notify)
		s.notify = make(chan struct{})
	}
	return first, nil
}

// checkRoom refuses a write when the store's file system is nearly full
// (see Options.MinFree): then the caller stops with an error and resumes
// from its last commit once there is room, instead of dying mid-write.
func (s *Store) checkRoom() error {
	if s.opts.InMemory || s.opts.MinFree <= 0 {
		return nil
	}
	free, ok := freeBytes(s.dir)
	if !ok || free >= s.opts.MinFree {
		return nil
	}
	return fmt.Errorf("store %s: %w: %d MiB free, writes stop below %d MiB (EMOPIPE_STORE_MIN_FREE_MB); free some space and run again to resume",
		s.dir, ErrDiskFull, free>>20, s.opts.MinFree>>20)
}

func (s *Store) cloneStatsLocked() Stats {
	c := s.stats
	c.Domains = make(map[string]*DomainStats, len(s.stats.Domains))
	for k, v := range s.stats.Domains {
		d := *v
		c.Domains[k] = &d
	}
	c.Rejects = make(map[string]uint64, len(s.stats.Rejects))
	for k, v := range s.stats.Rejects {
		c.Rejects[k] = v
	}
	return c
}

// Sequence reads sequence n.
func (s *Store) Sequence(n uint64) (packing.Sequence, error) {
	var seq packing.Sequence
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(seqKey(n))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("sequence %d: %w", n, ErrNotFound)
		} else if err != nil {
			return err
		}
		if err := decodeSeqItem(txn, it, &seq); err != nil {
			return fmt.Errorf("sequence %d: %w", n, err)
		}
		return nil
	})
	return seq, err
}

// Scan calls fn for sequences from, from+1, ... in order until fn returns
// an error or the committed sequences end. ErrStop from fn ends it cleanly.
func (s *Store) Scan(from uint64, fn func(n uint64, seq *packing.Sequence) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte(prefSeq)})
		defer it.Close()
		for it.Seek(seqKey(from)); it.Valid(); it.Next() {
			n := u64(it.Item().Key()[len(prefSeq):])
			var seq packing.Sequence
			if err := decodeSeqItem(txn, it.Item(), &seq); err != nil {
				return fmt.Errorf("sequence %d: %w", n, err)
			}
			if err := fn(n, &seq); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return err
			}
		}
		return nil
	})
}

// ErrStop ends a Scan or a walk early without error.
var ErrStop = errors.New("stop")

// Doc returns the record of an accepted document.
func (s *Store) Doc(key string) (DocRecord, error) {
	var d DocRecord
	err := s.db.View(func(txn *badger.Txn) error { return getJSON(txn, prefDoc+key, &d) })
	d.Key = key
	if err != nil {
		return d, fmt.Errorf("document %q: %w", key, err)
	}
	return d, nil
}

// HasDocs reports, for each key, whether a document with it was accepted:
// one read transaction for all of them.
func (s *Store) HasDocs(keys []string) ([]bool, error) {
	has := make([]bool, len(keys))
	var k []byte
	err := s.db.View(func(txn *badger.Txn) error {
		for i, key := range keys {
			k = append(append(k[:0], prefDoc...), key...)
			_, err := txn.Get(k)
			switch {
			case err == nil:
				has[i] = true
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
		}
		return nil
	})
	return has, err
}

// HasDoc reports whether a document with this key was accepted.
func (s *Store) HasDoc(key string) (bool, error) {
	has, err := s.HasDocs([]string{key})
	return has[0], err
}

// Docs calls fn for every accepted document in key order.
func (s *Store) Docs(fn func(d DocRecord) error) error {
	return s.walk(prefDoc, func(k, v []byte) error {
		var d DocRecord
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("document %q: %w", k, err)
		}
		d.Key = string(k)
		return fn(d)
	})
}

// Rejects calls fn for every rejected record in the order they were met.
func (s *Store) Rejects(fn func(r Reject) error) error {
	return s.walk(prefRej, func(_, v []byte) error {
		var r Reject
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		return fn(r)
	})
}

// SourceState returns the resume state saved for a source, or nil.
func (s *Store) SourceState(name string) ([]byte, error) {
	return s.get(prefSrc + name)
}

// Sources returns every source's resume state.
func (s *Store) Sources() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.walk(prefSrc, func(k, v []byte) error {
		out[string(k)] = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// Staged returns every staged batch by source.
func (s *Store) Staged() (map[string]*StagedBatch, error) {
	raw := map[string][]byte{}
	err := s.walk(prefStage, func(k, v []byte) error {
		raw[string(k)] = append([]byte(nil), v...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]*StagedBatch, len(raw))
	for src, v := range raw {
		var sb *StagedBatch
		if ck, ok := bytes.CutPrefix(v, []byte(chunkMarker)); ok {
			c, err := s.get(string(ck))
			if err == nil && c == nil {
				err = fmt.Errorf("staged batch of %s: chunk %q: %w", src, ck, ErrNotFound)
			}
			if err != nil {
				return nil, err
			}
			if sb, err = DecodeStaged(c); err != nil {
				return nil, err
			}
			sb.chunk = ck
		} else if sb, err = DecodeStaged(v); err != nil {
			return nil, err
		}
		if sb.Source != src {
			return nil, fmt.Errorf("staged batch under %s says source %s: %w", src, sb.Source, errCorruptStaged)
		}
		out[src] = sb
	}
	return out, nil
}

// State returns a trainer state entry, or nil if there is none.
func (s *Store) State(name string) ([]byte, error) {
	return s.get(prefState + name)
}

func (s *Store) get(key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		out, err = it.ValueCopy(nil)
		return err
	})
	return out, err
}

// walk iterates keys with a prefix; fn gets the key without the prefix.
func (s *Store) walk(prefix string, fn func(k, v []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()[len(prefix):]
			if err := it.Item().Value(func(v []byte) error { return fn(k, v) }); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return err
			}
		}
		return nil
	})
}

// Digest is a SHA-256 over every key and value in key order: two stores
// with equal digests hold the same logical content, whatever Badger's files
// look like.
func (s *Store) Digest() (string, error) {
	h := sha256.New()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if bytes.HasPrefix(k, []byte(prefChunk)) {
				continue // read through the references below
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if bytes.HasPrefix(k, []byte(prefSeq)) {
				// A sequence counts by its encoding, stored in place or
				// in a staged batch's chunk.
				if v, err = seqBytes(txn, v); err != nil {
					return fmt.Errorf("digest: %s: %w", k, err)
				}
			}
			fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(v))
			h.Write(v)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

// Sync forces committed data to disk (survives an OS crash).
func (s *Store) Sync() error {
	if s.opts.InMemory || s.opts.ReadOnly {
		return nil
	}
	return s.db.Sync()
}

// Close flushes and releases the directory. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	db := s.db
	s.db = nil
	s.mu.Unlock()
	if db == nil {
		return nil
	}
	return db.Close()
}

func getJSON(txn *badger.Txn, key string, v any) error {
	it, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	} else if err != nil {
		return err
	}
	return it.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

func putJSON(txn *badger.Txn, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set([]byte(key), b)
}

func sortedKeys(m map[string][]byte) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// quietLogger passes only Badger's warnings and errors on.
type quietLogger struct{}

func (quietLogger) Errorf(f string, a ...any)   { fmt.Fprintf(os.Stderr, "badger: "+f, a...) }
func (quietLogger) Warningf(f string, a ...any) { fmt.Fprintf(os.Stderr, "badger: "+f, a...) }
func (quietLogger) Infof(string, ...any)        {}
func (quietLogger) Debugf(string, ...any)       {}
