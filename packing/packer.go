package packing

import (
	"errors"
	"fmt"
	"sync"
)

// Mode chooses how documents are laid into sequences.
type Mode string

const (
	// Concat is the reference's packing: documents (each followed by EOS)
	// are concatenated and cut into contiguous chunks, so most documents
	// straddle two sequences and no position is padding (until Flush).
	Concat Mode = "concat"
	// BestFit keeps up to Config.MaxOpen sequences open and puts each
	// document into the open sequence it fills most tightly, so short
	// documents are never split; it costs padding, which the store reports.
	// Documents longer than a sequence are still cut into full sequences and
	// only their remainder is placed.
	BestFit Mode = "bestfit"
)

// Config controls a Packer. Zero fields take DefaultConfig's values.
type Config struct {
	// SeqLen is the number of tokens per sequence. Default 2048.
	SeqLen int `yaml:"seq_len" json:"seq_len"`
	// Mode is Concat (default) or BestFit.
	Mode Mode `yaml:"mode" json:"mode"`
	// EOS is appended to every document when AppendEOS is set (default true
	// when the tokenizer has an EOS token; the pipeline decides).
	EOS       uint32 `yaml:"eos" json:"eos"`
	AppendEOS bool   `yaml:"append_eos" json:"append_eos"`
	// PAD fills positions no document covers.
	PAD uint32 `yaml:"pad" json:"pad"`
	// MaxOpen is how many partly filled sequences BestFit keeps before it
	// pads and emits the fullest. More means less padding and a larger
	// unfinished tail in the store. Default 16.
	MaxOpen int `yaml:"max_open" json:"max_open"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{SeqLen: 2048, Mode: Concat, AppendEOS: true, MaxOpen: 16}
}

// Validate rejects settings the packer cannot honour.
func (c Config) Validate() error {
	switch {
	case c.SeqLen < 2:
		return fmt.Errorf("packing: seq_len %d is too small (need at least 2)", c.SeqLen)
	case c.SeqLen > 1<<20:
		return fmt.Errorf("packing: seq_len %d is too large (at most %d)", c.SeqLen, 1<<20)
	case c.Mode != Concat && c.Mode != BestFit:
		return fmt.Errorf("packing: unknown mode %q (want %q or %q)", c.Mode, Concat, BestFit)
	case c.Mode == BestFit && (c.MaxOpen < 1 || c.MaxOpen > 255):
		return fmt.Errorf("packing: max_open %d must be between 1 and 255", c.MaxOpen)
	}
	return nil
}

// Doc is one tokenised document ready to pack.
type Doc struct {
	Key    string
	Domain string
	Tokens []uint32 // without EOS: the packer appends it
}

// Packer lays documents into sequences. It is pure: the same Config and the
// same documents in the same order give the same sequences. It is not safe
// for concurrent use; one packer serves one ordered stream (one source
// partition), and its unfinished tail is saved with MarshalState in the same
// store transaction as the sequences it has emitted.
type Packer struct {
	cfg  Config
	open []*Sequence // partly filled sequences, oldest first
	// free holds token buffers handed back by Recycle. A new buffer
	// costs zeroing and fresh pages (20 MB for a 22 MB ingest run, ~15 ms).
	free sync.Pool
}

// tokens returns an empty buffer for one sequence.
func (p *Packer) tokens() []uint32 {
	if b, ok := p.free.Get().(*[]uint32); ok {
		return (*b)[:0]
	}
	return make([]uint32, 0, p.cfg.SeqLen)
}

// Recycle takes back the token buffers of sequences the caller is done
// with: nothing may read or keep seqs[i].Tokens afterwards. The ingester
// calls it once a batch is encoded into the store's staged copy. Safe to
// call from any goroutine.
func (p *Packer) Recycle(seqs []Sequence) {
	for i := range seqs {
		if t := seqs[i].Tokens; cap(t) == p.cfg.SeqLen {
			seqs[i].Tokens = nil
			p.free.Put(&t)
		}
	}
}

// New returns a packer with an empty tail.
func New(cfg Config) (*Packer, error) {
	if cfg.MaxOpen == 0 {
		cfg.MaxOpen = DefaultConfig().MaxOpen
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Packer{cfg: cfg}, nil
}

// Config returns the packer's configuration.
func (p *Packer) Config() Config { return p.cfg }

// Add packs one document and returns the sequences it completed, in order.
// The returned sequences are owned by the caller. A document with no tokens
// (and no EOS) is ignored.
func (p *Packer) Add(d Doc) []Sequence {
	toks := docTokens{toks: d.Tokens, eos: p.cfg.EOS, hasEOS: p.cfg.AppendEOS}
	if toks.len() == 0 {
		return nil
	}
	if p.cfg.Mode == BestFit {
		return p.addBestFit(d, toks)
	}
	return p.addConcat(d, toks)
}

// docTokens is a document's tokens followed by the EOS the packer appends,
// without copying them to append it.
type docTokens struct {
	toks   []uint32
	eos    uint32
	hasEOS bool
}

func (t docTokens) len() int {
	if t.hasEOS {
		return len(t.toks) + 1
	}
	return len(t.toks)
}

// take appends the first n tokens (n <= t.len()) to dst and returns the
// rest.
func (t docTokens) take(dst []uint32, n int) ([]uint32, docTokens) {
	k := min(n, len(t.toks))
	dst = append(dst, t.toks[:k]...)
	t.toks = t.toks[k:]
	if n > k {
		dst = append(dst, t.eos)
		t.hasEOS = false
	}
	return dst, t
}

func (p *Packer) addConcat(d Doc, toks docTokens) []Sequence {
	var out []Sequence
	L := p.cfg.SeqLen
	first := true
	for toks.len() > 0 {
		if len(p.open) == 0 {
			p.open = append(p.open, &Sequence{Tokens: p.tokens()})
		}
		cur := p.open[0]
		n := min(L-len(cur.Tokens), toks.len())
		cur.Spans = append(cur.Spans, Span{
			DocKey: d.Key, Domain: d.Domain, Start: len(cur.Tokens), Length: n,
			ContinuesFromPrev: !first, ContinuesInNext: n < toks.len(),
		})
		cur.Tokens, toks = toks.take(cur.Tokens, n)
		first = false
		if len(cur.Tokens) == L {
			out = append(out, *cur)
			p.open = p.open[:0]
		}
	}
	return out
}

func (p *Packer) addBestFit(d Doc, toks docTokens) []Sequence {
	var out []Sequence
	L := p.cfg.SeqLen
	first := true
	// Whole sequences first: a long document fills them alone.
	for toks.len() >= L {
		seq := Sequence{Tokens: p.tokens()}
		more := toks.len() > L
		seq.Tokens, toks = toks.take(seq.Tokens, L)
		seq.Spans = []Span{{DocKey: d.Key, Domain: d.Domain, Length: L, ContinuesFromPrev: !first, ContinuesInNext: more}}
		out = append(out, seq)
		first = false
	}
	if toks.len() == 0 {
		return out
	}
	// The remainder goes where it leaves the least room (earliest on ties).
	n := toks.len()
	best := -1
	for i, s := range p.open {
		room := L - len(s.Tokens)
		if room >= n && (best < 0 || room < L-len(p.open[best].Tokens)) {
			best = i
		}
	}
	if best < 0 {
		p.open = append(p.open, &Sequence{Tokens: p.tokens()})
		best = len(p.open) - 1
	}
	s := p.open[best]
	s.Spans = append(s.Spans, Span{DocKey: d.Key, Domain: d.Domain, Start: len(s.Tokens), Length: n, ContinuesFromPrev: !first})
	s.Tokens, _ = toks.take(s.Tokens, n)
	if len(s.Tokens) == L {
		out = append(out, *s)
		p.open = append(p.open[:best], p.open[best+1:]...)
	}
	if len(p.open) > p.cfg.MaxOpen {
		fullest := 0
		for i, s := range p.open {
			if len(s.Tokens) > len(p.open[fullest].Tokens) {
				fullest = i
			}
		}
		out = append(out, p.pad(p.open[fullest]))
		p.open = append(p.open[:fullest], p.open[fullest+1:]...)
	}
	return out
}

func (p *Packer) pad(s *Sequence) Sequence {
	for len(s.Tokens) < p.cfg.SeqLen {
		s.Tokens = append(s.Tokens, p.cfg.PAD)
	}
	return *s
}

// Flush pads and returns every unfinished sequence, oldest first, leaving
// the tail empty. Call it at the end of a finite input (not when a stream
// merely pauses: the tail is kept in the store instead).
func (p *Packer) Flush() []Sequence {
	out := make([]Sequence, 0, len(p.open))
	for _, s := range p.open {
		out = append(out, p.pad(s))
	}
	p.open = nil
	return out
}

// TailTokens is the number of tokens waiting in unfinished sequences.
func (p *Packer) TailTokens() int {
	n := 0
	for _, s := range p.open {
		n += len(s.Tokens)
	}
	return n
}

// MarshalState encodes the unfinished tail so that a packer restored from it
// continues exactly as this one would.
func (p *Packer) MarshalState() ([]byte, error) {
	var b []byte
	b = append(b, byte(len(p.open)))
	for _, s := range p.open {
		// Fixed32, small as a tail is: every emopipe version reads it.
		b = appendBytes(b, s.AppendEncoded(nil, Fixed32))
	}
	return b, nil
}

// UnmarshalState replaces the tail with one saved by MarshalState.
func (p *Packer) UnmarshalState(b []byte) error {
	p.open = nil
	if len(b) == 0 {
		return nil
	}
	r := reader{b: b[1:]}
	for i := 0; i < int(b[0]); i++ {
		n := r.uvarint()
		if r.err != nil || n > uint64(len(r.b)) {
			return errors.New("packing: corrupt packer state")
		}
		var s Sequence
		if err := s.UnmarshalBinary(r.b[:n]); err != nil {
			return fmt.Errorf("packing: packer state: %w", err)
		}
		if len(s.Tokens) >= p.cfg.SeqLen {
			return fmt.Errorf("packing: packer state holds a %d-token sequence, longer than seq_len %d", len(s.Tokens), p.cfg.SeqLen)
		}
		full := make([]uint32, len(s.Tokens), p.cfg.SeqLen)
		copy(full, s.Tokens)
		s.Tokens = full
		p.open = append(p.open, &s)
		r.b = r.b[n:]
	}
	if len(r.b) != 0 {
		return errors.New("packing: trailing bytes in packer state")
	}
	return nil
}

func appendBytes(b, v []byte) []byte {
	b = appendUvarint(b, uint64(len(v)))
	return append(b, v...)
}
