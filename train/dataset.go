package train

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
)

// Batch is one (micro-)batch on the Go side: B rows of S positions.
// Inputs are a stored sequence's first S tokens, labels its last S (the
// store's sequences hold S+1 tokens).
type Batch struct {
	// Tokens are the input ids. [B][S]
	Tokens [][]int32
	// Labels are the next tokens, model.IgnoreLabel where the position or
	// its successor is padding. [B][S]
	Labels [][]int32
	// Segments are the router's document segments, model.PaddingSegment at
	// padding. [B][S]
	Segments [][]int32
	// AttnSegments are the attention mask's documents; nil means Segments. [B][S]
	AttnSegments [][]int32
	// Domains is the domain of each position's document ("" for padding). [B][S]
	Domains [][]string
	// Seqs are the sequence numbers the rows came from.
	Seqs []uint64
	// Starts are the keys of the documents whose first token is in the
	// batch (freshness: when a streamed document is first trained on).
	Starts []string
}

// Rows is B.
func (b *Batch) Rows() int { return len(b.Tokens) }

// slice returns rows [i,j) (sharing memory).
func (b *Batch) slice(i, j int) Batch {
	out := Batch{Tokens: b.Tokens[i:j], Labels: b.Labels[i:j], Segments: b.Segments[i:j], Seqs: b.Seqs[i:j]}
	if b.AttnSegments != nil {
		out.AttnSegments = b.AttnSegments[i:j]
	}
	if b.Domains != nil {
		out.Domains = b.Domains[i:j]
	}
	return out
}

// counts returns the labelled real positions (the CE's tokens) and the real
// (non-padding) positions.
func (b *Batch) counts() (labelled, real int) {
	for r := range b.Segments {
		for p, s := range b.Segments[r] {
			if s >= 0 {
				real++
				if b.Labels[r][p] >= 0 {
					labelled++
				}
			}
		}
	}
	return labelled, real
}

// Dataset turns a store's sequences into batches. The order is the store
// reader's (seeded shuffle, epoch after epoch), so batches are a pure
// function of the cursor.
type Dataset struct {
	st       *store.Store
	r        *store.Reader
	waited   time.Duration
	hdr      store.Header
	segments string
	attn     string
	domains  bool
}

// DatasetOptions choose the segmentation (Config.Segments, AttnSegments).
type DatasetOptions struct {
	Segments     string
	AttnSegments string
	// Domains fills Batch.Domains (evaluation).
	Domains bool
}

// NewDataset reads st from cursor c.
func NewDataset(st *store.Store, c store.Cursor, o DatasetOptions) (*Dataset, error) {
	hdr := st.Header()
	if hdr.SeqLen < 2 {
		return nil, fmt.Errorf("train: store %s has seq_len %d; need at least 2 (inputs + shifted labels)", st.Dir(), hdr.SeqLen)
	}
	if o.Segments == "" {
		o.Segments = SegmentsSpans
	}
	return &Dataset{st: st, r: st.NewReader(c), hdr: hdr, segments: o.Segments, attn: o.AttnSegments, domains: o.Domains}, nil
}

// Cursor is the position of the next batch.
func (d *Dataset) Cursor() store.Cursor { return d.r.Cursor() }

// SeqLen is the model's sequence length S (the store's minus one).
func (d *Dataset) SeqLen() int { return d.hdr.SeqLen - 1 }

// ErrStreamEnded: a following dataset caught up with a store that will
// not grow any more.
var ErrStreamEnded = errors.New("train: caught up with the stream, and it has ended")

// Next reads the next b sequences into a batch.
func (d *Dataset) Next(b int) (Batch, error) {
	return d.NextWait(context.Background(), b, nil)
}

// NextWait is Next that, on a following cursor (store.Cursor.Follow),
// waits for the store to grow when it has caught up: until a commit adds
// sequences (Store.Changed: no polling), ctx ends (its error), or done is
// closed (ErrStreamEnded). A batch is read whole or not at all: on an error
// the cursor is back where the batch began, so a checkpoint taken then
// skips nothing.
func (d *Dataset) NextWait(ctx context.Context, b int, done <-chan struct{}) (Batch, error) {
	var out Batch
	start := d.r.Cursor()
	for len(out.Tokens) < b {
		changed := d.st.Changed() // before Next: a commit in between closes it
		n, seq, err := d.r.Next()
		if errors.Is(err, store.ErrCaughtUp) {
			t0 := time.Now()
			select {
			case <-changed:
			case <-ctx.Done():
				err = ctx.Err()
			case <-done:
				if d.st.NumSequences() > d.r.Cursor().Pos {
					continue // the last commit raced with the end
				}
				err = ErrStreamEnded
			}
			d.waited += time.Since(t0)
			if err == store.ErrCaughtUp {
				continue
			}
			d.r = d.st.NewReader(start)
			return Batch{}, err
		}
		if err != nil {
			if errors.Is(err, store.ErrEmpty) {
				return Batch{}, fmt.Errorf("train: %w", err)
			}
			return Batch{}, fmt.Errorf("train: read batch: %w", err)
		}
		d.appendRow(&out, n, &seq)
	}
	return out, nil
}

// TakeWaited returns the time NextWait spent waiting for data since the
// last call.
func (d *Dataset) TakeWaited() time.Duration {
	w := d.waited
	d.waited = 0
	return w
}

// appendRow converts one stored sequence into a batch row.
func (d *Dataset) appendRow(out *Batch, n uint64, seq *packing.Sequence) {
	s := len(seq.Tokens) - 1
	full := seq.Segments() // [S+1] span index or -1
	tok := make([]int32, s)
	lbl := make([]int32, s)
	for p := range s {
		tok[p] = int32(seq.Tokens[p])
		lbl[p] = int32(seq.Tokens[p+1])
		if full[p] < 0 || full[p+1] < 0 {
			lbl[p] = model.IgnoreLabel
		}
	}
	seg := full[:s:s]
	eos := int32(d.hdr.EOS)
	if d.segments == SegmentsEOS {
		seg = model.SegmentsFromEOS([][]int32{tok}, eos)[0]
		keepPadding(seg, full)
	}
	out.Tokens = append(out.Tokens, tok)
	out.Labels = append(out.Labels, lbl)
	out.Segments = append(out.Segments, seg)
	out.Seqs = append(out.Seqs, n)
	for _, sp := range seq.Spans {
		if !sp.ContinuesFromPrev {
			out.Starts = append(out.Starts, sp.DocKey)
		}
	}
	switch d.attn {
	case SegmentsEOS:
		a := model.DocumentsFromEOS([][]int32{tok}, eos)[0]
		keepPadding(a, full)
		out.AttnSegments = append(out.AttnSegments, a)
	case SegmentsSpans:
		if d.segments != SegmentsSpans {
			out.AttnSegments = append(out.AttnSegments, full[:s:s])
		}
	}
	if d.domains {
		dom := make([]string, s)
		for p := range s {
			if full[p] >= 0 {
				dom[p] = seq.Spans[full[p]].Domain
			}
		}
		out.Domains = append(out.Domains, dom)
	}
}

// keepPadding marks padding positions of full in seg: EOS segmentation
// knows nothing of padding (the reference has none).
func keepPadding(seg, full []int32) {
	for p := range seg {
		if full[p] < 0 {
			seg[p] = model.PaddingSegment
		}
	}
}
