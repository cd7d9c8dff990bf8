package train_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gomlx/compute/gobackend"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/train"
)

// copyStore copies a closed store directory so a test can train in it
// (training writes its state into the store).
func copyStore(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "store")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// smallModel is a CPU-sized model for the real corpus (vocabulary from the
// store).
func smallModel(router string) model.Config {
	m := model.Tiny()
	m.VocabSize = 0
	m.DModel, m.NHeads, m.ExpertHidden = 64, 4, 64
	m.NumExperts, m.TopK = 9, 3 // 8 routable + shared, 2 routed
	m.PoolMin, m.PoolMax, m.EvalPoolSize = 2, 8, 4
	m.DispatchBlock = 32
	m.Router = router
	return m
}

// Both routers learn the real multi-domain corpus: held-out loss ends well
// below the unigram entropy of the training tokens (what a model that only
// knows token frequencies reaches) and far below its start.
func TestTrainsBelowUnigramEntropy(t *testing.T) {
	trainDir, heldDir := corpusStores(t)
	st, err := store.Open(trainDir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	uni, err := train.UnigramEntropy(st, 0)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, router := range []string{model.RouterEMO, model.RouterStandard} {
		t.Run(router, func(t *testing.T) {
			cfg := train.DefaultConfig()
			cfg.Store = copyStore(t, trainDir)
			cfg.Model = smallModel(router)
			cfg.Steps, cfg.Batch = 360, 8
			cfg.Optim.LR, cfg.Optim.Warmup = 2e-2, 10
			cfg.EvalStore, cfg.EvalEvery, cfg.EvalSequences = heldDir, 180, 96
			cfg.CheckpointEvery = 0
			if d := os.Getenv("EMOPIPE_TEST_REPORT"); d != "" { // keep the plots to look at
				cfg.ReportDir = filepath.Join(d, router)
			}
			start := time.Now()
			res, err := train.Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := train.New(context.Background(), cfg) // reopen: the history is in the store
			if err != nil {
				t.Fatal(err)
			}
			h := tr.History()
			tr.Close()
			first, last := h.Evals[0], h.Evals[len(h.Evals)-1]
			t.Logf("%s: %d steps in %s (%.0f tok/s); held-out loss %.3f -> %.3f; unigram entropy %.3f; train CE %.3f; plots %v",
				router, res.Steps, time.Since(start).Round(time.Second), res.TokensPerSec, first.Loss, last.Loss, uni, res.Last.CE, res.Plots)
			for d, v := range last.Domains {
				t.Logf("  %-10s %.3f (%d tokens)", d, v.Loss, v.Tokens)
			}
			// ~180k training tokens fit the CPU budget of this test: enough to go
			// clearly below the unigram entropy, not to converge (docs/train.md
			// has a longer run). How far below depends on the CPU: the go
			// backend's SIMD kernels round differently with AVX-512 and with
			// AVX2 only, and the trajectories part. The standard router ended
			// 0.37 nats below on the first machine and 0.25 on an AVX2-only
			// EPYC, where a margin of 0.25 failed by rounding.
			if !(last.Loss < uni-0.15) {
				t.Errorf("held-out loss %.3f is not well below the unigram entropy %.3f", last.Loss, uni)
			}
			if !(last.Loss < first.Loss-2) {
				t.Errorf("held-out loss only fell from %.3f to %.3f", first.Loss, last.Loss)
			}
			if len(last.Domains) != 7 {
				t.Errorf("eval has %d domains, want 7", len(last.Domains))
			}
		})
	}
}

// EMO's per-document pools on real batches from the store: every token's
// routed experts lie in its document's pool, all tokens of a document
// share one pool, and the pool has the drawn size (min(n, E')).
func TestPoolsOnRealBatches(t *testing.T) {
	trainDir, _ := corpusStores(t)
	st, err := store.Open(trainDir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := smallModel(model.RouterEMO)
	cfg.VocabSize, cfg.SeqLen = st.Header().VocabSize, st.Header().SeqLen-1
	for _, segMode := range []string{train.SegmentsSpans, train.SegmentsEOS} {
		ds, err := train.NewDataset(st, store.Cursor{Seed: 3, Shuffle: true}, train.DatasetOptions{Segments: segMode})
		if err != nil {
			t.Fatal(err)
		}
		be, err := gobackend.New("")
		if err != nil {
			t.Fatal(err)
		}
		vars := gmodel.NewStore()
		vars.SetParam(gmodel.ParamInitialSeed, int64(9))
		ep, kp := cfg.RoutableExperts(), cfg.RoutedTopK()
		exec, err := gmodel.NewExec(be, vars, func(s *gmodel.Scope, in []*Node) []*Node {
			out := model.Forward(s, cfg, model.Inputs{Tokens: in[0], Segments: in[1], PoolSizes: in[2]}, model.Options{Train: true, SkipHead: true})
			var res []*Node
			for _, l := range out.Layers {
				res = append(res, l.Experts, l.PoolMask)
			}
			return res
		})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 2))
		var docs, multi, rows int
		for batches := 0; batches < 60 && multi < 8; batches++ { // until enough rows hold several documents
			b, err := ds.Next(8)
			if err != nil {
				t.Fatal(err)
			}
			tok, _ := model.Int32Tensor(b.Tokens)
			seg, _ := model.Int32Tensor(b.Segments)
			s := cfg.SeqLen
			pools := cfg.SamplePoolSizes(r, b.Rows(), s)
			pv := tensors.MustCopyFlatData[int32](pools)
			rows += b.Rows()
			outs, err := exec.Exec(tok, seg, pools)
			if err != nil {
				t.Fatal(err)
			}
			for l := range cfg.NLayers {
				experts := tensors.MustCopyFlatData[int32](outs[2*l])
				mask := tensors.MustCopyFlatData[bool](outs[2*l+1])
				for row := range b.Rows() {
					first := map[int32]int{} // segment -> first position
					segs := b.Segments[row]
					for p := range s {
						sg := segs[p]
						if sg < 0 {
							continue
						}
						m := mask[(row*s+p)*ep : (row*s+p+1)*ep]
						for j := range kp {
							e := experts[(row*s+p)*kp+j]
							if !m[e] {
								t.Fatalf("%s layer %d row %d pos %d: expert %d outside the document's pool", segMode, l, row, p, e)
							}
						}
						f, seen := first[sg]
						if !seen {
							first[sg] = p
							n := int(pv[(l*b.Rows()+row)*s+int(sg)])
							size := 0
							for _, in := range m {
								if in {
									size++
								}
							}
							if size != min(n, ep) {
								t.Fatalf("%s layer %d row %d segment %d: pool of %d experts, drawn size %d", segMode, l, row, sg, size, n)
							}
							continue
						}
						fm := mask[(row*s+f)*ep : (row*s+f+1)*ep]
						for e := range ep {
							if fm[e] != m[e] {
								t.Fatalf("%s layer %d row %d segment %d: positions %d and %d have different pools", segMode, l, row, sg, f, p)
							}
						}
					}
					if l == 0 {
						docs += len(first)
						if len(first) > 1 {
							multi++
						}
					}
				}
			}
		}
		t.Logf("%s: %d documents in %d rows (%d rows with several documents), %d layers checked", segMode, docs, rows, multi, cfg.NLayers)
		if multi == 0 {
			t.Errorf("%s: no row held several documents; the check is vacuous", segMode)
		}
	}
}
