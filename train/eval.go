package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
)

// EvalResult is the held-out loss at one step.
type EvalResult struct {
	Step int `json:"step"`
	// Loss is the mean next-token cross-entropy (nats) over Tokens
	// labelled held-out tokens, with eval routing (EMO: the eval pool size
	// per document).
	Loss   float64 `json:"loss"`
	Tokens int     `json:"tokens"`
	// Domains splits Loss by the domain of each token's document.
	Domains map[string]DomainLoss `json:"domains,omitempty"`
}

// DomainLoss is one domain's share of an evaluation.
type DomainLoss struct {
	Loss   float64 `json:"loss"`
	Tokens int     `json:"tokens"`
}

// openEval reads the held-out sequences once (store order), in batches of
// the micro-batch size; the last batch is filled with all-padding rows so
// every batch has the same shape (one compiled graph).
func (t *Trainer) openEval() error {
	es, err := store.Open(t.cfg.EvalStore, nil, store.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("train: eval store: %w", err)
	}
	t.evalSt = es
	eh, th := es.Header(), t.st.Header()
	if eh.SeqLen != th.SeqLen || eh.TokenizerFingerprint != th.TokenizerFingerprint {
		return fmt.Errorf("train: eval store %s (tokenizer %s, seq_len %d) does not match the training store (tokenizer %s, seq_len %d)",
			t.cfg.EvalStore, eh.Tokenizer, eh.SeqLen, th.Tokenizer, th.SeqLen)
	}
	n := int(es.NumSequences())
	if t.cfg.EvalSequences > 0 {
		n = min(n, t.cfg.EvalSequences)
	}
	if n == 0 {
		return fmt.Errorf("train: eval store %s holds no sequences", t.cfg.EvalStore)
	}
	ds, err := NewDataset(es, store.Cursor{}, DatasetOptions{Segments: t.cfg.Segments, AttnSegments: t.cfg.AttnSegments, Domains: true})
	if err != nil {
		return err
	}
	// An evenly spaced subset when capped: stores are often ordered by
	// source or domain, and the first n sequences would cover one domain.
	total := int(es.NumSequences())
	mb := t.cfg.Batch / t.cfg.Accum
	var b Batch
	for i := range n {
		idx := uint64(i * total / n)
		seq, err := es.Sequence(idx)
		if err != nil {
			return fmt.Errorf("train: eval store: %w", err)
		}
		ds.appendRow(&b, idx, &seq)
		if b.Rows() == mb || i == n-1 {
			for b.Rows() < mb {
				padRow(&b, t.cfg.Model.SeqLen, t.layout.attn)
			}
			t.evalBatches = append(t.evalBatches, b)
			b = Batch{}
		}
	}
	return nil
}

func padRow(b *Batch, s int, attn bool) {
	row := func(v int32) []int32 {
		r := make([]int32, s)
		for i := range r {
			r[i] = v
		}
		return r
	}
	b.Tokens = append(b.Tokens, row(0))
	b.Labels = append(b.Labels, row(model.IgnoreLabel))
	b.Segments = append(b.Segments, row(model.PaddingSegment))
	if attn {
		b.AttnSegments = append(b.AttnSegments, row(model.PaddingSegment))
	}
	b.Domains = append(b.Domains, make([]string, s))
	b.Seqs = append(b.Seqs, math.MaxUint64)
}

// Evaluate computes the held-out loss (per domain too) with the current
// weights, records it in the history and the metrics log.
func (t *Trainer) Evaluate(ctx context.Context) (EvalResult, error) {
	if len(t.evalBatches) == 0 {
		return EvalResult{}, errors.New("train: no eval store")
	}
	var acc nllSum
	for _, b := range t.evalBatches {
		if err := ctx.Err(); err != nil {
			return EvalResult{}, err
		}
		args, err := t.microInputs(kindEval, b, nil, nil, nil, nil)
		if err != nil {
			return EvalResult{}, err
		}
		outs, err := t.run(kindEval, args)
		if err != nil {
			return EvalResult{}, fmt.Errorf("train: eval: %w", err)
		}
		acc.add(b, float32s(outs[0]), t.cfg.Model.SeqLen, "")
		outs[0].FinalizeAll()
	}
	res := acc.result(t.step)
	t.history.Evals = append(t.history.Evals, res)
	if t.log != nil {
		if err := t.log.write(struct {
			Eval EvalResult `json:"eval"`
		}{res}); err != nil {
			return res, err
		}
	}
	t.publishEval(res)
	return res, nil
}

// nllSum adds up per-token NLLs of labelled real positions, overall and
// by domain.
type nllSum struct {
	sum float64
	n   int
	dom map[string]*[2]float64 // domain → {sum, tokens}
}

// add takes one batch's NLLs ([rows × seqLen], row-major), of the tokens
// of domain only ("" for all).
func (a *nllSum) add(b Batch, nll []float32, seqLen int, only string) {
	if a.dom == nil {
		a.dom = map[string]*[2]float64{}
	}
	for r := range b.Rows() {
		for p := range seqLen {
			if b.Labels[r][p] < 0 || b.Segments[r][p] < 0 || (only != "" && b.Domains[r][p] != only) {
				continue
			}
			v := float64(nll[r*seqLen+p])
			a.sum += v
			a.n++
			d := a.dom[b.Domains[r][p]]
			if d == nil {
				d = &[2]float64{}
				a.dom[b.Domains[r][p]] = d
			}
			d[0] += v
			d[1]++
		}
	}
}

// result is the mean loss, overall and per domain.
func (a *nllSum) result(step int) EvalResult {
	res := EvalResult{Step: step, Loss: frac64(a.sum, float64(a.n)), Tokens: a.n, Domains: map[string]DomainLoss{}}
	for k, d := range a.dom {
		res.Domains[k] = DomainLoss{Loss: d[0] / d[1], Tokens: int(d[1])}
	}
	return res
}

// UnigramEntropy is the entropy (nats) of the store's label tokens (real
// positions after the first of each row) over its first maxSeqs sequences
// (0: all): the loss of a model that knows only token frequencies. A
// trained LM must go well below it.
func UnigramEntropy(st *store.Store, maxSeqs int) (float64, error) {
	counts := map[uint32]float64{}
	var total float64
	err := st.Scan(0, func(n uint64, seq *packing.Sequence) error {
		if maxSeqs > 0 && n >= uint64(maxSeqs) {
			return store.ErrStop
		}
		seg := seq.Segments()
		for p := 1; p < len(seq.Tokens); p++ {
			if seg[p] >= 0 && seg[p-1] >= 0 {
				counts[seq.Tokens[p]]++
				total++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	keys := make([]uint32, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	var h float64
	for _, k := range keys {
		p := counts[k] / total
		h -= p * math.Log(p)
	}
	return h, nil
}
