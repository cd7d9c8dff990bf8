package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
)

// synthStore writes a store of n sequences of seqLen tokens over a small
// vocabulary: documents of a few kinds (each a noisy arithmetic walk with
// its own stride), packed several to a row with EOS between them, and some
// rows padded at the end, so segments, padding and EOS handling are all
// exercised. Fast unit tests train on it; the real-corpus tests use the
// packed sample.
func synthStore(t testing.TB, dir string, n, seqLen, vocab int, seed uint64) string {
	t.Helper()
	const eos, pad = 1, 0
	hdr := &store.Header{Tokenizer: "synthetic", TokenizerFingerprint: fmt.Sprintf("synth-v%d", vocab), VocabSize: vocab,
		SeqLen: seqLen, Mode: packing.Concat, AppendEOS: true, EOS: eos, PAD: pad}
	st, err := store.Open(dir, hdr, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := rand.New(rand.NewPCG(seed, 7))
	domains := []string{"alpha", "beta", "gamma", "delta"}
	var seqs []packing.Sequence
	doc := 0
	for i := range n {
		seq := packing.Sequence{Tokens: make([]uint32, seqLen)}
		p := 0
		end := seqLen
		if i%5 == 4 {
			end = seqLen - 1 - r.IntN(seqLen/3) // padded tail
		}
		for p < end {
			kind := r.IntN(len(domains))
			length := min(end-p, 4+r.IntN(seqLen/2))
			stride := 1 + kind*3
			x := 2 + r.IntN(vocab-2)
			for j := range length {
				tok := uint32(2 + (x+j*stride)%(vocab-2))
				if r.IntN(10) == 0 {
					tok = uint32(2 + r.IntN(vocab-2))
				}
				if j == length-1 {
					tok = eos
				}
				seq.Tokens[p+j] = tok
			}
			seq.Spans = append(seq.Spans, packing.Span{DocKey: fmt.Sprintf("d%d", doc), Domain: domains[kind], Start: p, Length: length})
			doc++
			p += length
		}
		for q := end; q < seqLen; q++ {
			seq.Tokens[q] = pad
		}
		seqs = append(seqs, seq)
	}
	if _, err := st.Commit(&store.Batch{Sequences: seqs}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tinyModel is a very small EMO config for the synthetic store.
func tinyModel(router string) model.Config {
	m := model.Tiny()
	m.VocabSize = 0
	m.DModel = 32
	m.NHeads = 2
	m.NumExperts = 9 // 8 routable + shared
	m.TopK = 3
	m.ExpertHidden = 32
	m.PoolMin, m.PoolMax, m.EvalPoolSize = 2, 8, 4
	m.DispatchBlock = 16
	m.Router = router
	return m
}

func testConfig(t testing.TB, storeDir string) Config {
	t.Helper()
	c := DefaultConfig()
	c.Store = storeDir
	c.Model = tinyModel(model.RouterEMO)
	c.Steps = 6
	c.Batch = 4
	c.Optim.LR = 3e-3
	c.Optim.Warmup = 2
	c.CheckpointEvery = 3
	c.EvalEvery = 0
	c.ReportDir = filepath.Join(t.TempDir(), "report")
	return c
}

func newTrainer(t testing.TB, cfg Config) *Trainer {
	t.Helper()
	tr, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func steps(t testing.TB, tr *Trainer, n int) []StepMetrics {
	t.Helper()
	var out []StepMetrics
	for range n {
		m, err := tr.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// maxDiff returns max |got-want| and max |want|, for tolerances relative
// to a tensor's scale.
func maxDiff(got, want []float32) (worst, scale float64) {
	for i := range want {
		scale = max(scale, math.Abs(float64(want[i])))
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
	}
	return worst, scale
}
