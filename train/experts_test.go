package train

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing/store"
)

// trainedCheckpoint trains a tiny model a few steps on a synthetic store
// and returns the store directory and the checkpoint file.
func trainedCheckpoint(t *testing.T, router string) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "s")
	synthStore(t, dir, 24, 33, 64, 5)
	tr := newTrainer(t, trainedConfig(t, dir, router))
	steps(t, tr, 4)
	if err := tr.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(tr.CheckpointDir(), tr.prev.File)
	tr.Close()
	return dir, path
}

func trainedConfig(t *testing.T, dir, router string) Config {
	cfg := testConfig(t, dir)
	cfg.Model = tinyModel(router)
	cfg.Optim.LR = 2e-2
	return cfg
}

func openRO(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func loadModel(t *testing.T, path string) *Model {
	t.Helper()
	m, err := LoadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newInference(t *testing.T, m *Model, pool bool) *Inference {
	t.Helper()
	in, err := NewInference(m, InferenceOptions{Batch: 4, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// directLoss computes the per-domain mean NLL of set with its own graph
// (model.Forward logits, masked experts) and float64 log-softmax in Go:
// the oracle for Inference.Eval.
func directLoss(t *testing.T, m *Model, set *EvalSet, mask *tensors.Tensor, noPool bool) (float64, map[string]float64) {
	t.Helper()
	cfg := m.Info.Model
	vars := gmodel.NewStore()
	for n, w := range m.Weights {
		c, err := w.LocalClone()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := vars.CreateVariable("/"+n, c); err != nil {
			t.Fatal(err)
		}
	}
	e, err := gmodel.NewExec(testBackend(t), vars, func(s *gmodel.Scope, tok, seg, mk *Node) *Node {
		return model.Forward(s, cfg, model.Inputs{Tokens: tok, Segments: seg, ExpertMask: mk},
			model.Options{Logits: true, NoPool: noPool}).Logits
	})
	if err != nil {
		t.Fatal(err)
	}
	sums, counts := map[string]float64{}, map[string]float64{}
	var all, n float64
	for _, b := range set.Batches {
		tok, _ := model.Int32Tensor(b.Tokens)
		seg, _ := model.Int32Tensor(b.Segments)
		out, err := e.Exec(tok, seg, mask)
		if err != nil {
			t.Fatal(err)
		}
		logits := tensors.MustCopyFlatData[float32](out[0])
		v := cfg.VocabSize
		for r := range b.Rows() {
			for p := range cfg.SeqLen {
				if b.Labels[r][p] < 0 || b.Segments[r][p] < 0 {
					continue
				}
				row := logits[(r*cfg.SeqLen+p)*v : (r*cfg.SeqLen+p+1)*v]
				mx := math.Inf(-1)
				for _, x := range row {
					mx = math.Max(mx, float64(x))
				}
				var z float64
				for _, x := range row {
					z += math.Exp(float64(x) - mx)
				}
				nll := mx + math.Log(z) - float64(row[b.Labels[r][p]])
				sums[b.Domains[r][p]] += nll
				counts[b.Domains[r][p]]++
				all += nll
				n++
			}
		}
	}
	per := map[string]float64{}
	for d := range sums {
		per[d] = sums[d] / counts[d]
	}
	return all / n, per
}

func testBackend(t *testing.T) compute.Backend {
	t.Helper()
	b, err := NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func near(a, b, rel float64) bool { return math.Abs(a-b) <= rel*math.Max(math.Abs(b), 1e-12) }

// Inference.Eval's held-out losses (overall, per domain, per-domain pass)
// equal a direct computation from the model's logits, for the full model
// and an expert subset, with and without the EMO eval pool.
func TestEvalMatchesDirectComputation(t *testing.T) {
	dir, path := trainedCheckpoint(t, model.RouterEMO)
	m := loadModel(t, path)
	st := openRO(t, dir)
	sub, err := model.RandomSubset(m.Config(), 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, pool := range []bool{false, true} {
		in := newInference(t, m, pool)
		set, err := in.NewEvalSet(st, 0)
		if err != nil {
			t.Fatal(err)
		}
		if set.Sequences != 24 || len(set.Domains()) != 4 {
			t.Fatalf("eval set: %d sequences, domains %v", set.Sequences, set.Domains())
		}
		for _, s := range []*model.Subset{nil, &sub} {
			got, err := in.Eval(context.Background(), set, s)
			if err != nil {
				t.Fatal(err)
			}
			mask, _ := in.mask(s)
			want, wantDom := directLoss(t, m, set, mask, !pool)
			if !near(got.Loss, want, 1e-5) {
				t.Errorf("pool %v subset %v: loss %.7f, direct %.7f", pool, s != nil, got.Loss, want)
			}
			for d, w := range wantDom {
				if !near(got.Domains[d].Loss, w, 1e-5) {
					t.Errorf("pool %v subset %v domain %s: loss %.7f, direct %.7f", pool, s != nil, d, got.Domains[d].Loss, w)
				}
				dl, err := in.EvalDomain(context.Background(), set, d, s)
				if err != nil {
					t.Fatal(err)
				}
				if !near(dl.Loss, w, 1e-5) || dl.Tokens != got.Domains[d].Tokens {
					t.Errorf("EvalDomain(%s) = %+v, Eval gave %+v", d, dl, got.Domains[d])
				}
			}
		}
	}
}

// With the eval pool, Inference.Eval of a trainer checkpoint is the
// trainer's own held-out eval.
func TestEvalMatchesTrainerEval(t *testing.T) {
	dir, path := trainedCheckpoint(t, model.RouterEMO)
	evalDir := filepath.Join(t.TempDir(), "h")
	synthStore(t, evalDir, 12, 33, 64, 99)
	cfg := trainedConfig(t, dir, model.RouterEMO)
	cfg.EvalStore = evalDir
	tr := newTrainer(t, cfg) // resumes the checkpoint
	want, err := tr.Evaluate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := loadModel(t, path)
	in := newInference(t, m, true)
	set, err := in.NewEvalSet(openRO(t, evalDir), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := in.Eval(context.Background(), set, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !near(got.Loss, want.Loss, 1e-6) || got.Tokens != want.Tokens {
		t.Errorf("inference eval %.7f over %d tokens, trainer eval %.7f over %d", got.Loss, got.Tokens, want.Loss, want.Tokens)
	}
}

// A trainer checkpoint describes its model; a pruned checkpoint holds only
// the kept experts (file size falls by exactly their bytes), reads back
// with its config and subset, and computes what the masked model computes.
func TestPruneCheckpoint(t *testing.T) {
	dir, path := trainedCheckpoint(t, model.RouterEMO)
	m := loadModel(t, path)
	if m.Info.Format != FormatTrain || m.Info.Model.NumExperts != 9 || m.Info.Tokenizer != "synthetic" || m.Info.Step != 4 {
		t.Fatalf("checkpoint info %+v", m.Info)
	}
	cfg := m.Config()
	st := openRO(t, dir)
	in := newInference(t, m, false)
	docs, err := CalibrationDocs(st, CalibrationOptions{MinTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := in.Select(context.Background(), []CalibDoc{docs["beta"]}, 4)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	full := &Model{Info: m.Info, Weights: m.Weights} // weights only, for the size comparison
	fullBytes, err := full.Save(filepath.Join(tmp, "full.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.Prune(sub)
	if err != nil {
		t.Fatal(err)
	}
	prunedPath := filepath.Join(tmp, "pruned.safetensors")
	prunedBytes, err := p.Save(prunedPath)
	if err != nil {
		t.Fatal(err)
	}
	pm := loadModel(t, prunedPath)
	if pm.Info.Format != FormatPruned || pm.Info.Model.NumExperts != 4 || pm.Info.Model.TopK != 3 ||
		pm.Info.PrunedFrom != m.SHA256 || !reflect.DeepEqual(*pm.Info.Subset, sub) {
		t.Fatalf("pruned info %+v", pm.Info)
	}
	// Sizes: the tensor bytes fall by 4 bytes × the dropped parameters.
	dropped := int64(cfg.NLayers*(cfg.NumExperts-4)*(3*cfg.DModel*cfg.ExpertHidden+cfg.DModel)) * 4
	if got := dataBytes(t, filepath.Join(tmp, "full.safetensors")) - dataBytes(t, prunedPath); got != dropped {
		t.Errorf("tensor bytes fell by %d, want %d", got, dropped)
	}
	if want := pm.Info.Model.Params().Total * 4; dataBytes(t, prunedPath) != want {
		t.Errorf("pruned tensor bytes %d, want 4 × %d params", dataBytes(t, prunedPath), pm.Info.Model.Params().Total)
	}
	t.Logf("file bytes: full weights %d, pruned %d; params %d → %d", fullBytes, prunedBytes, cfg.Params().Total, pm.Info.Model.Params().Total)

	// pruned == masked, per domain.
	set, err := in.NewEvalSet(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	masked, err := in.Eval(context.Background(), set, &sub)
	if err != nil {
		t.Fatal(err)
	}
	pin := newInference(t, pm, false)
	pset, err := pin.NewEvalSet(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	pruned, err := pin.Eval(context.Background(), pset, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !near(pruned.Loss, masked.Loss, 1e-5) {
		t.Errorf("pruned loss %.7f, masked %.7f", pruned.Loss, masked.Loss)
	}
	for d, w := range masked.Domains {
		if !near(pruned.Domains[d].Loss, w.Loss, 1e-5) {
			t.Errorf("domain %s: pruned %.7f, masked %.7f", d, pruned.Domains[d].Loss, w.Loss)
		}
	}
	if _, err := pm.Prune(sub); err == nil {
		t.Error("pruning a pruned checkpoint accepted")
	}
}

// dataBytes is a safetensors file's size minus its header.
func dataBytes(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(b)) - 8 - int64(binary.LittleEndian.Uint64(b[:8]))
}

// Selection is deterministic and is the greedy rule applied to the
// router probabilities: layer 0's subset is the top K-1 of the
// unrestricted probabilities, layer 1's the top K-1 with layer 0
// restricted.
func TestSelectDeterministicAndGreedy(t *testing.T) {
	for _, router := range []string{model.RouterEMO, model.RouterStandard} {
		t.Run(router, func(t *testing.T) {
			dir, path := trainedCheckpoint(t, router)
			m := loadModel(t, path)
			cfg := m.Config()
			docs, err := CalibrationDocs(openRO(t, dir), CalibrationOptions{MinTokens: 8})
			if err != nil {
				t.Fatal(err)
			}
			calib := []CalibDoc{docs["gamma"]}
			in := newInference(t, m, false)
			a, err := in.Select(context.Background(), calib, 4)
			if err != nil {
				t.Fatal(err)
			}
			b, err := newInference(t, m, false).Select(context.Background(), calib, 4)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("two selections differ: %v / %v", a, b)
			}
			p0, n, err := in.RouterProbs(context.Background(), calib, nil)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(calib[0].Tokens) || a.Calibration.Tokens != n || a.Calibration.Docs[0] != calib[0].Key {
				t.Errorf("calibration %+v, %d tokens averaged, document has %d", a.Calibration, n, len(calib[0].Tokens))
			}
			if want := model.TopExperts(p0[0], 3); !reflect.DeepEqual(a.Layers[0], want) {
				t.Errorf("layer 0 kept %v, top-3 of the probabilities %v", a.Layers[0], want)
			}
			mask, _ := cfg.ExpertMask([][]int{a.Layers[0], nil})
			_, batches := in.calibBatches(calib)
			p1, _, err := in.routerProbs(context.Background(), batches, mask)
			if err != nil {
				t.Fatal(err)
			}
			if want := model.TopExperts(p1[1], 3); !reflect.DeepEqual(a.Layers[1], want) {
				t.Errorf("layer 1 kept %v, top-3 with layer 0 restricted %v", a.Layers[1], want)
			}
			var sum float64
			for _, v := range p0[0] {
				sum += v
			}
			if math.Abs(sum-1) > 1e-5 {
				t.Errorf("layer 0 mean probabilities sum to %v", sum)
			}
		})
	}
}

// A new run can start from a pruned checkpoint (continued training of a
// pruned model): its weights are the checkpoint's, it trains, and a resume
// naming another init checkpoint is refused.
func TestTrainFromPrunedCheckpoint(t *testing.T) {
	_, path := trainedCheckpoint(t, model.RouterEMO)
	m := loadModel(t, path)
	sub, _ := model.RandomSubset(m.Config(), 3, 7)
	p, err := m.Prune(sub)
	if err != nil {
		t.Fatal(err)
	}
	ppath := filepath.Join(t.TempDir(), "pruned.safetensors")
	if _, err := p.Save(ppath); err != nil {
		t.Fatal(err)
	}
	mc, err := InitModel(ppath)
	if err != nil {
		t.Fatal(err)
	}
	newDir := filepath.Join(t.TempDir(), "s2")
	synthStore(t, newDir, 24, 33, 64, 6)
	cfg := testConfig(t, newDir)
	cfg.Model, cfg.InitCheckpoint = mc, ppath
	tr := newTrainer(t, cfg)
	w, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	for n, v := range p.Weights {
		if !reflect.DeepEqual(w[n], tensors.MustCopyFlatData[float32](v)) {
			t.Fatalf("%s differs from the init checkpoint", n)
		}
	}
	ms := steps(t, tr, 2)
	if math.IsNaN(ms[1].Loss) || ms[1].Load[0] == nil || len(ms[1].Load[0]) != 2 {
		t.Fatalf("step metrics %+v", ms[1])
	}
	if err := tr.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	// Resume with the same init: fine; with none: another run.
	if tr2 := newTrainer(t, cfg); !tr2.Resumed() {
		t.Error("did not resume")
	} else {
		tr2.Close()
	}
	cfg.InitCheckpoint = ""
	if _, err := New(context.Background(), cfg); err == nil {
		t.Error("resume without the init checkpoint accepted")
	}
	// A config that is not the checkpoint's is refused.
	cfg.InitCheckpoint, cfg.ForceNew = ppath, true
	cfg.Model = m.Config()
	cfg.Model.VocabSize = 0
	if _, err := New(context.Background(), cfg); err == nil {
		t.Error("init checkpoint with another model config accepted")
	}
}

// Compare runs end to end on two tiny checkpoints: every domain gets a
// one-document subset per fraction, its "same" loss is the domain's loss
// with that subset, and the markdown names every domain and model.
func TestCompare(t *testing.T) {
	dir, emo := trainedCheckpoint(t, model.RouterEMO)
	_, std := trainedCheckpoint(t, model.RouterStandard)
	res, err := Compare(context.Background(), []CompareModel{{"EMO", emo}, {"standard", std}}, dir, dir,
		CompareOptions{Inference: InferenceOptions{Batch: 4}, Fractions: []float64{0.5, 0.25}, Calibration: CalibrationOptions{MinTokens: 8}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Domains) != 4 || len(res.Models) != 2 || len(res.Models[0].Keep) != 2 || res.Models[0].Keep[1].Keep != 2 {
		t.Fatalf("result %+v", res)
	}
	m := loadModel(t, emo)
	in := newInference(t, m, false)
	set, _ := in.NewEvalSet(openRO(t, dir), 0)
	kr := res.Models[0].Keep[0]
	for _, d := range res.Domains {
		got := kr.Domains[d]
		s := model.Subset{Keep: kr.Keep, NumExperts: 9, SharedExpert: true, Layers: got.Subset}
		want, err := in.EvalDomain(context.Background(), set, d, &s)
		if err != nil {
			t.Fatal(err)
		}
		if !near(got.Same, want.Loss, 1e-6) || !near(got.Full, res.Models[0].Full.Domains[d].Loss, 0) {
			t.Errorf("%s: same %.6f (direct %.6f), full %.6f", d, got.Same, want.Loss, got.Full)
		}
	}
	md := res.Markdown()
	for _, w := range append([]string{"EMO Δ 50% (K=5)", "standard Δ 25% (K=2)", "**mean**"}, res.Domains...) {
		if !strings.Contains(md, w) {
			t.Errorf("markdown lacks %q:\n%s", w, md)
		}
	}
	t.Log("\n" + md)
}
