package pipelines

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/tokenize"
)

// InspectOptions select what Inspect reports beyond the statistics.
type InspectOptions struct {
	// Sequence, if not negative, is decoded with its boundaries marked.
	Sequence int64
	// Tokenizer decodes it; nil means the bundled tokenizer the header
	// names, if its fingerprint matches.
	Tokenizer *tokenize.Tokenizer
	// Rejects is how many rejected records to list (the count is always
	// complete).
	Rejects int
}

// InspectReport is what `emopipe inspect` prints.
type InspectReport struct {
	Dir        string                `json:"dir"`
	Header     store.Header          `json:"header"`
	Stats      store.Stats           `json:"stats"`
	PaddingPct float64               `json:"padding_pct"`
	SplitPct   float64               `json:"split_docs_pct"`
	Sources    map[string]SourceView `json:"sources"`
	Rejects    []store.Reject        `json:"rejects,omitempty"`
	Sequence   *SequenceView         `json:"sequence,omitempty"`
}

// SourceView is a source's resume state as far as inspect understands it.
type SourceView struct {
	Bytes int             `json:"state_bytes"`
	State json.RawMessage `json:"state,omitempty"`
}

// SequenceView is one decoded sequence.
type SequenceView struct {
	N      uint64         `json:"n"`
	Spans  []packing.Span `json:"spans"`
	Tokens []uint32       `json:"tokens"`
	// Text is the decoded sequence with boundaries marked; empty when no
	// matching tokenizer is available.
	Text    string `json:"text,omitempty"`
	Padding int    `json:"padding"`
}

// Inspect opens a store read-only and summarises it.
func Inspect(dir string, opt InspectOptions) (*InspectReport, error) {
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	r := &InspectReport{Dir: dir, Header: st.Header(), Stats: st.Stats(), Sources: map[string]SourceView{}}
	if total := r.Stats.Sequences * uint64(r.Header.SeqLen); total > 0 {
		r.PaddingPct = 100 * float64(r.Stats.Padding) / float64(total)
	}
	if r.Stats.Docs > 0 {
		r.SplitPct = 100 * float64(r.Stats.SplitDocs) / float64(r.Stats.Docs)
	}
	srcs, err := st.Sources()
	if err != nil {
		return nil, err
	}
	for name, raw := range srcs {
		v := SourceView{Bytes: len(raw)}
		// Tails are large and binary: show their token count instead.
		var fs fileState
		var ps partitionState
		switch {
		case strings.HasPrefix(name, "files:") && json.Unmarshal(raw, &fs) == nil:
			v.State, _ = json.Marshal(struct {
				Files      int            `json:"files"`
				Pos        ingest.FilePos `json:"pos"`
				Done       bool           `json:"done"`
				TailTokens int            `json:"tail_tokens"`
			}{len(fs.Files), fs.Pos, fs.Done, tailTokens(r.Header, fs.Tail)})
		case strings.HasPrefix(name, "kafka:") && json.Unmarshal(raw, &ps) == nil:
			v.State, _ = json.Marshal(struct {
				Next       int64 `json:"next_offset"`
				TailTokens int   `json:"tail_tokens"`
			}{ps.Next, tailTokens(r.Header, ps.Tail)})
		}
		r.Sources[name] = v
	}
	if opt.Rejects > 0 {
		err := st.Rejects(func(rj store.Reject) error {
			if len(r.Rejects) >= opt.Rejects {
				return store.ErrStop
			}
			r.Rejects = append(r.Rejects, rj)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if opt.Sequence >= 0 && r.Stats.Sequences > 0 {
		n := uint64(opt.Sequence)
		seq, err := st.Sequence(n)
		if err != nil {
			return nil, err
		}
		v := &SequenceView{N: n, Spans: seq.Spans, Tokens: seq.Tokens, Padding: seq.Padding()}
		tok := opt.Tokenizer
		if tok == nil {
			tok, _ = tokenize.Bundled(r.Header.Tokenizer)
		}
		if tok != nil && tok.Fingerprint() == r.Header.TokenizerFingerprint {
			v.Text = MarkBoundaries(tok, &seq)
		} else if opt.Tokenizer != nil {
			return nil, errors.New("inspect: the given tokenizer's fingerprint differs from the store's")
		}
		r.Sequence = v
	}
	return r, nil
}

// MarkBoundaries decodes a sequence, marking where each span starts and
// ends and where padding is.
func MarkBoundaries(tok *tokenize.Tokenizer, s *packing.Sequence) string {
	var b strings.Builder
	at := 0
	for _, sp := range s.Spans {
		if sp.Start > at {
			fmt.Fprintf(&b, "⟦pad ×%d⟧", sp.Start-at)
		}
		cont := ""
		if sp.ContinuesFromPrev {
			cont = " …continued"
		}
		fmt.Fprintf(&b, "⟦doc %s", sp.DocKey)
		if sp.Domain != "" {
			fmt.Fprintf(&b, " [%s]", sp.Domain)
		}
		fmt.Fprintf(&b, " tokens %d..%d%s⟧", sp.Start, sp.Start+sp.Length, cont)
		b.WriteString(tok.Decode(s.Tokens[sp.Start : sp.Start+sp.Length]))
		if sp.ContinuesInNext {
			b.WriteString("⟦continues…⟧")
		} else {
			b.WriteString("⟦/doc⟧")
		}
		at = sp.Start + sp.Length
	}
	if at < len(s.Tokens) {
		fmt.Fprintf(&b, "⟦pad ×%d⟧", len(s.Tokens)-at)
	}
	return b.String()
}

// WriteText prints the report for people.
func (r *InspectReport) WriteText(w io.Writer) {
	h, s := r.Header, r.Stats
	fp := h.TokenizerFingerprint
	if len(fp) > 16 {
		fp = fp[:16]
	}
	fmt.Fprintf(w, "store      %s (format %d)\n", r.Dir, h.FormatVersion)
	fmt.Fprintf(w, "tokenizer  %s (fingerprint %s, vocab %d, eos %d, pad %d)\n", h.Tokenizer, fp, h.VocabSize, h.EOS, h.PAD)
	fmt.Fprintf(w, "packing    %s, seq_len %d", h.Mode, h.SeqLen)
	if h.Mode == packing.BestFit {
		fmt.Fprintf(w, ", max_open %d", h.MaxOpen)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "documents  %d accepted, %d split across sequences (%.1f%%)\n", s.Docs, s.SplitDocs, r.SplitPct)
	fmt.Fprintf(w, "sequences  %d (%d tokens, %d padding = %.2f%%)\n", s.Sequences, s.Tokens, s.Padding, r.PaddingPct)
	if len(s.Domains) > 0 {
		fmt.Fprintf(w, "domains    %-14s %8s %12s %12s\n", "", "docs", "tokens", "bytes")
		for _, d := range sortedDomains(s.Domains) {
			ds := s.Domains[d]
			name := d
			if name == "" {
				name = "(none)"
			}
			fmt.Fprintf(w, "           %-14s %8d %12d %12d\n", name, ds.Docs, ds.Tokens, ds.Bytes)
		}
	}
	var nrej uint64
	for _, n := range s.Rejects {
		nrej += n
	}
	fmt.Fprintf(w, "rejects    %d", nrej)
	for _, k := range sortedCounts(s.Rejects) {
		fmt.Fprintf(w, "  %s=%d", k, s.Rejects[k])
	}
	fmt.Fprintln(w)
	for _, rj := range r.Rejects {
		fmt.Fprintf(w, "           %s %s: %s", rj.Source, rj.Position, rj.Reason)
		if rj.Detail != "" {
			fmt.Fprintf(w, " (%s)", rj.Detail)
		}
		fmt.Fprintln(w)
	}
	names := make([]string, 0, len(r.Sources))
	for n := range r.Sources {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "source     %s %s (state %d bytes)\n", n, r.Sources[n].State, r.Sources[n].Bytes)
	}
	if v := r.Sequence; v != nil {
		fmt.Fprintf(w, "\nsequence %d: %d spans, %d padding\n", v.N, len(v.Spans), v.Padding)
		if v.Text != "" {
			fmt.Fprintln(w, v.Text)
		} else {
			fmt.Fprintf(w, "(no matching tokenizer to decode; pass --tokenizer) ids: %v\n", v.Tokens)
		}
	}
}

func sortedDomains(m map[string]*store.DomainStats) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sortedCounts(m map[string]uint64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ExportShards writes every sequence of a store as .npy shards.
func ExportShards(storeDir, outDir string, perShard int, progress io.Writer) ([]string, error) {
	st, err := store.Open(storeDir, nil, store.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	w, err := packing.NewShardWriter(outDir, st.Header().SeqLen, perShard)
	if err != nil {
		return nil, err
	}
	prog := NewProgress(progress)
	total := st.NumSequences()
	err = st.Scan(0, func(n uint64, seq *packing.Sequence) error {
		prog.Update(func() string { return fmt.Sprintf("export %s %d/%d sequences", Bar(int64(n), int64(total)), n, total) })
		return w.Write(seq)
	})
	files, cerr := w.Close()
	if err = errors.Join(err, cerr); err != nil {
		return files, fmt.Errorf("export shards: %w", err)
	}
	prog.Done(fmt.Sprintf("exported %d sequences to %d files in %s", total, len(files), outDir))
	return files, nil
}

func tailTokens(h store.Header, tail []byte) int {
	p, err := packing.New(h.PackingConfig())
	if err != nil || p.UnmarshalState(tail) != nil {
		return -1
	}
	return p.TailTokens()
}
