package model

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

func TestPresetsValidate(t *testing.T) {
	for _, name := range []string{"tiny", "small", "ref1b14b"} {
		c, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Preset("huge"); err == nil {
		t.Error("unknown preset accepted")
	}
}

// The release shape has 13.6B parameters, ~0.68B of them outside the experts
// (emo-method.md §7), and uses 8 of 128 experts per token.
func TestParamCounts(t *testing.T) {
	p := Ref1B14B().Params()
	if math.Abs(float64(p.Total)/1e9-13.6) > 0.05 {
		t.Errorf("Ref1B14B total %.3fB, want ~13.6B", float64(p.Total)/1e9)
	}
	if non := float64(p.Total-p.Experts) / 1e9; math.Abs(non-0.68) > 0.02 {
		t.Errorf("Ref1B14B non-expert %.3fB, want ~0.68B", non)
	}
	// Active: non-expert + 16 layers x 8 experts x 3·2048·1024 = 0.68B + 0.81B.
	if act := float64(p.Active) / 1e9; math.Abs(act-1.49) > 0.01 {
		t.Errorf("Ref1B14B active %.3fB, want ~1.49B", act)
	}
	if s := float64(Small().Params().Total) / 1e6; s < 90 || s > 115 {
		t.Errorf("Small has %.1fM parameters, want ~100M", s)
	}
	// FLOPs: 6 x active non-embedding weights + attention.
	c := Tiny()
	f := c.FLOPsPerToken(128)
	pt := c.Params()
	want := 6*float64(pt.Active-pt.Embedding) + 12*2*128*128
	if f != want {
		t.Errorf("FLOPsPerToken = %g, want %g", f, want)
	}
}

// Params matches the variables Forward actually creates.
func TestParamCountMatchesStore(t *testing.T) {
	cfg := testConfig()
	tb := makeBatch(rand.New(rand.NewPCG(1, 1)), cfg.VocabSize, 1, 16, 0)
	store := newStore(1)
	run(t, store, forwardSpec{cfg: cfg, opts: Options{Logits: true}, outputs: func(o Outputs) []*Node { return []*Node{o.Logits} }}, baseArgs(tb)...)
	n := 0
	for v := range store.IterVariables() {
		if v.Trainable && v.DType() == dtypes.Float32 { // not the RNG state
			n += v.Shape().Size()
		}
	}
	if int64(n) != cfg.Params().Total {
		t.Errorf("store holds %d parameters, Params().Total = %d", n, cfg.Params().Total)
	}
}

func TestConfigFiles(t *testing.T) {
	dir := t.TempDir()
	// Round trip of every preset through YAML.
	for _, c := range []Config{Tiny(), Small(), Ref1B14B()} {
		got, err := ParseConfig([]byte(c.YAML()), false)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("YAML round trip of %s changed it:\n%+v\n%+v", c.Preset, got, c)
		}
	}
	yml := filepath.Join(dir, "m.yaml")
	os.WriteFile(yml, []byte("preset: tiny\nvocab_size: 50304\nrouter: standard\n"), 0o644)
	c, err := LoadConfig(yml)
	if err != nil {
		t.Fatal(err)
	}
	want := Tiny()
	want.VocabSize, want.Router = 50304, RouterStandard
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadConfig = %+v, want %+v", c, want)
	}
	js := filepath.Join(dir, "m.json")
	os.WriteFile(js, []byte(`{"preset":"small","n_layers":4}`), 0o644)
	if c, err := LoadConfig(js); err != nil || c.NLayers != 4 || c.DModel != 256 {
		t.Errorf("LoadConfig(json) = %+v, %v", c, err)
	}
	for name, body := range map[string]string{
		"unknown key": "preset: tiny\nd_modle: 3\n",
		"no sizes":    "router: emo\n",
		"bad router":  "preset: tiny\nrouter: fancy\n",
		"small pools": "preset: tiny\npool_min: 1\n",
		"bad top_k":   "preset: tiny\ntop_k: 17\n",
		"bad dtype":   "preset: tiny\ndtype: bfloat16\n",
	} {
		p := filepath.Join(dir, "bad.yaml")
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := LoadConfig(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSamplePoolSizes(t *testing.T) {
	c := Tiny()
	a := c.SamplePoolSizes(rand.New(rand.NewPCG(1, 2)), 3, 10)
	b := c.SamplePoolSizes(rand.New(rand.NewPCG(1, 2)), 3, 10)
	if !reflect.DeepEqual(a.Shape().Dimensions, []int{c.NLayers, 3, 10}) {
		t.Fatalf("shape %v", a.Shape())
	}
	va, vb := tensors.MustCopyFlatData[int32](a), tensors.MustCopyFlatData[int32](b)
	seen := map[int32]bool{}
	for i, v := range va {
		if v < int32(c.PoolMin) || v > int32(c.PoolMax) || v != vb[i] {
			t.Fatalf("pool size %d (replay %d) outside [%d,%d]", v, vb[i], c.PoolMin, c.PoolMax)
		}
		seen[v] = true
	}
	if !seen[int32(c.PoolMin)] || !seen[int32(c.PoolMax)] {
		t.Errorf("bounds never drawn in %d draws: %v", len(va), seen)
	}
}

func TestSegmentsFromEOS(t *testing.T) {
	for _, tc := range []struct {
		name           string
		ids, seg, docs []int32
	}{
		{"no eos", []int32{5, 6, 7}, []int32{0, 0, 0}, []int32{0, 0, 0}},
		{"eos at 0 starts nothing", []int32{9, 6, 9, 7}, []int32{0, 0, 1, 1}, []int32{0, 1, 1, 2}},
		{"adjacent eos", []int32{1, 9, 9, 2}, []int32{0, 1, 2, 2}, []int32{0, 0, 1, 2}},
		{"eos last", []int32{1, 2, 9}, []int32{0, 0, 1}, []int32{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SegmentsFromEOS([][]int32{tc.ids}, 9)[0]; !reflect.DeepEqual(got, tc.seg) {
				t.Errorf("segments %v, want %v", got, tc.seg)
			}
			if got := DocumentsFromEOS([][]int32{tc.ids}, 9)[0]; !reflect.DeepEqual(got, tc.docs) {
				t.Errorf("documents %v, want %v", got, tc.docs)
			}
		})
	}
}

func TestExpertMaskAndTry(t *testing.T) {
	c := Tiny()
	if _, err := c.ExpertMask([][]int{{0, 1}}); err == nil {
		t.Error("wrong layer count accepted")
	}
	if _, err := c.ExpertMask([][]int{{}, nil}); err == nil {
		t.Error("empty subset accepted")
	}
	if _, err := c.ExpertMask([][]int{{0}, nil}); err != nil { // fewer than k': pruned top_k = K (PruneConfig)
		t.Errorf("subset smaller than k' rejected: %v", err)
	}
	if _, err := c.ExpertMask([][]int{{0, 15}, nil}); err == nil {
		t.Error("the shared expert (15) accepted as routable")
	}
	m, err := c.ExpertMask([][]int{{0, 3}, nil})
	if err != nil {
		t.Fatal(err)
	}
	v := tensors.MustCopyFlatData[bool](m)
	if !v[0] || v[1] || !v[3] || !v[15] || !v[29] {
		t.Errorf("mask %v", v)
	}
	err = Try(func() { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Try = %v", err)
	}
}
