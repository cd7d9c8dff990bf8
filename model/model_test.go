package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

// testConfig is Tiny with a small vocabulary and short rows: the LM head of
// the real vocabulary would dominate every test's time.
func testConfig() Config {
	c := Tiny()
	c.VocabSize = 96
	c.SeqLen = 48
	c.DispatchBlock = 16
	return c
}

const testEOS = 0

// testBatch is a fixed batch: b rows of seqLen tokens with several EOS
// (hence documents) per row, EOS segmentation, next-token labels, and
// optionally `pad` padding positions at the end of the last row.
type testBatch struct {
	tokens, segs, docs, labels [][]int32
}

func makeBatch(r *rand.Rand, vocab, b, seqLen, pad int) testBatch {
	var tb testBatch
	for range b {
		row := make([]int32, seqLen)
		for p := range row {
			row[p] = int32(1 + r.IntN(vocab-1))
		}
		for range 1 + r.IntN(4) { // 1-4 EOS per row
			row[r.IntN(seqLen)] = testEOS
		}
		tb.tokens = append(tb.tokens, row)
	}
	tb.segs = SegmentsFromEOS(tb.tokens, testEOS)
	tb.docs = DocumentsFromEOS(tb.tokens, testEOS)
	for _, row := range tb.tokens {
		lbl := make([]int32, seqLen)
		copy(lbl, row[1:])
		lbl[seqLen-1] = IgnoreLabel
		tb.labels = append(tb.labels, lbl)
	}
	last := b - 1
	for p := seqLen - pad; p < seqLen; p++ {
		tb.segs[last][p], tb.docs[last][p], tb.labels[last][p] = PaddingSegment, PaddingSegment, IgnoreLabel
		tb.tokens[last][p] = 0
	}
	return tb
}

func mustT(rows [][]int32) *tensors.Tensor {
	t, err := Int32Tensor(rows)
	if err != nil {
		panic(err)
	}
	return t
}

// forwardFn builds an exec function: inputs are tokens, segments, attention
// segments, labels, then optional pools / counts / mask per `with`.
type forwardSpec struct {
	cfg                   Config
	opts                  Options
	pools, counts, subset bool
	outputs               func(o Outputs) []*Node
}

func (f forwardSpec) fn() func(s *gmodel.Scope, in []*Node) []*Node {
	return func(s *gmodel.Scope, in []*Node) []*Node {
		fin := Inputs{Tokens: in[0], Segments: in[1], AttnSegments: in[2], Labels: in[3]}
		i := 4
		if f.pools {
			fin.PoolSizes = in[i]
			i++
		}
		if f.counts {
			fin.LBCounts = in[i]
			i++
		}
		if f.subset {
			fin.ExpertMask = in[i]
		}
		return f.outputs(Forward(s, f.cfg, fin, f.opts))
	}
}

func run(t *testing.T, store *gmodel.Store, f forwardSpec, args ...any) []*tensors.Tensor {
	t.Helper()
	exec, err := gmodel.NewExec(backend(t), store, f.fn())
	if err != nil {
		t.Fatal(err)
	}
	var out []*tensors.Tensor
	if err := Try(func() { out = exec.MustExec(args...) }); err != nil {
		t.Fatal(err)
	}
	return out
}

func newStore(seed int64) *gmodel.Store {
	s := gmodel.NewStore()
	s.SetParam(gmodel.ParamInitialSeed, seed)
	return s
}

func baseArgs(tb testBatch) []any {
	return []any{mustT(tb.tokens), mustT(tb.segs), mustT(tb.docs), mustT(tb.labels)}
}

func fill3(l, b, n int, v int32) *tensors.Tensor {
	d := make([]int32, l*b*n)
	for i := range d {
		d[i] = v
	}
	return tensors.FromFlatDataAndDimensions(d, l, b, n)
}

func assertAllClose(t *testing.T, name string, got, want *tensors.Tensor, rel float64) {
	t.Helper()
	e := maxRelErr(flatFloat(got), flatFloat(want))
	if !(e <= rel) {
		t.Errorf("%s: max relative error %.3g > %.1g", name, e, rel)
	}
}

func assertEqual(t *testing.T, name string, got, want *tensors.Tensor) {
	t.Helper()
	g, w := flatFloat(got), flatFloat(want)
	if len(g) != len(w) {
		t.Fatalf("%s: %d values, want %d", name, len(g), len(w))
	}
	for i := range g {
		if g[i] != w[i] {
			t.Fatalf("%s[%d] = %v, want %v", name, i, g[i], w[i])
		}
	}
}

// With n >= E' for every segment, EMO routing is the standard router
// (emo-method.md §9), bit for bit.
func TestEMOWithFullPoolsIsStandard(t *testing.T) {
	cfg := testConfig()
	tb := makeBatch(rand.New(rand.NewPCG(1, 2)), cfg.VocabSize, 3, cfg.SeqLen, 0)
	store := newStore(7)
	outs := func(o Outputs) []*Node {
		return []*Node{o.Logits, o.Loss, o.Layers[0].Experts, o.Layers[1].Gates, o.LB}
	}
	emo := forwardSpec{cfg: cfg, opts: Options{Logits: true, Train: true}, pools: true, outputs: outs}
	std := cfg
	std.Router = RouterStandard
	ref := run(t, store, forwardSpec{cfg: std, opts: Options{Logits: true}, outputs: outs}, baseArgs(tb)...)
	for _, n := range []int32{int32(cfg.RoutableExperts()), 1000} {
		got := run(t, store, emo, append(baseArgs(tb), fill3(cfg.NLayers, 3, cfg.SeqLen, n))...)
		for i := range ref {
			assertEqual(t, "output", got[i], ref[i])
		}
	}
	// NoPool: the released model's inference routing.
	got := run(t, store, forwardSpec{cfg: cfg, opts: Options{Logits: true, NoPool: true}, outputs: outs}, baseArgs(tb)...)
	for i := range ref {
		assertEqual(t, "no-pool output", got[i], ref[i])
	}
}

// Uniform routing gives LB = 1: zero router weights make every Sc uniform
// (without pools: with pools Sc is uniform over each pool only).
func TestUniformRoutingLBIsOne(t *testing.T) {
	cfg := testConfig()
	cfg.Router = RouterStandard
	tb := makeBatch(rand.New(rand.NewPCG(3, 4)), cfg.VocabSize, 2, cfg.SeqLen, 5)
	store := newStore(1)
	for l := range cfg.NLayers {
		z := tensors.FromShape(shapes.Make(dtypes.Float32, cfg.NumExperts, cfg.DModel))
		setVar(t, store, "/blocks/"+twoDigits(l)+"/feed_forward_moe/router/weight", z)
	}
	for _, rows := range []int{0, 1} {
		out := run(t, store, forwardSpec{cfg: cfg, opts: Options{LBGroupRows: rows, Train: true},
			outputs: func(o Outputs) []*Node { return []*Node{o.LB} }}, baseArgs(tb)...)
		for _, v := range flatFloat(out[0]) {
			if math.Abs(v-1) > 1e-6 {
				t.Errorf("group rows %d: LB = %v, want 1", rows, v)
			}
		}
	}
	// And with uniform counts but non-uniform probabilities.
	lb := MustExecOnce(backend(t), func(probSums, counts *Node) *Node {
		st := layerStats{counts: counts, probSums: probSums, tokens: ReduceSum(probSums, -1)}
		return loadBalance(st, nil, 0, 4, 2)
	}, [][]float32{{0.7, 0.1, 0.1, 0.1}, {0.2, 0.3, 0.4, 0.1}}, [][]float32{{1, 0, 1, 0}, {0, 1, 0, 1}})
	if v := flatFloat(lb)[0]; math.Abs(v-1) > 1e-6 {
		t.Errorf("uniform counts: LB = %v, want 1", v)
	}
}

func twoDigits(l int) string { return string([]byte{byte('0' + l/10), byte('0' + l%10)}) }

// Pruning experts (dropping their weights and router columns) equals
// masking their logits to -inf, for the standard and the EMO router.
func TestSubsetEqualsPruning(t *testing.T) {
	for _, router := range []string{RouterStandard, RouterEMO} {
		t.Run(router, func(t *testing.T) {
			cfg := testConfig()
			cfg.Router = router
			b := 3
			tb := makeBatch(rand.New(rand.NewPCG(5, 6)), cfg.VocabSize, b, cfg.SeqLen, 4)
			keep := [][]int{{0, 3, 4, 7, 11, 14}, {1, 2, 5, 6, 9, 12}}
			store := newStore(11)
			outs := func(o Outputs) []*Node {
				return []*Node{o.Logits, o.Layers[0].Experts, o.Layers[1].Experts, o.Layers[0].Gates, o.Layers[1].Gates}
			}
			pools := fill3(cfg.NLayers, b, cfg.SeqLen, 4) // narrower than the kept subsets
			mask, err := cfg.ExpertMask(keep)
			if err != nil {
				t.Fatal(err)
			}
			full := forwardSpec{cfg: cfg, opts: Options{Logits: true}, pools: router == RouterEMO, subset: true, outputs: outs}
			args := baseArgs(tb)
			if router == RouterEMO {
				args = append(args, pools)
			}
			masked := run(t, store, full, append(args, mask)...)

			// The pruned model: a config with len(keep) routable experts and sliced weights.
			pcfg := cfg
			pcfg.NumExperts = len(keep[0]) + 1
			pcfg.PoolMax = pcfg.RoutableExperts()
			pstore := gmodel.NewStore()
			for v := range store.IterVariables() {
				val := v.MustValue()
				path := v.Path()
				switch {
				case hasSuffix(path, "router/weight"):
					val = pickAxis(val, 0, withShared(keep[layerOf(path)], cfg.NumExperts))
				case hasSuffix(path, "experts/w1"), hasSuffix(path, "experts/w2"), hasSuffix(path, "experts/w3"):
					val = pickAxis(val, 0, withShared(keep[layerOf(path)], cfg.NumExperts))
				}
				setVar(t, pstore, path, val)
			}
			pruned := run(t, pstore, forwardSpec{cfg: pcfg, opts: Options{Logits: true}, pools: router == RouterEMO, outputs: outs}, args...)
			assertAllClose(t, "logits", pruned[0], masked[0], 1e-6)
			for l := range cfg.NLayers {
				got := flatFloat(pruned[1+l])
				want := flatFloat(masked[1+l])
				for i := range got {
					if keep[l][int(got[i])] != int(want[i]) {
						t.Fatalf("layer %d assignment %d: pruned expert %v (= %d), masked model chose %v", l, i, got[i], keep[l][int(got[i])], want[i])
					}
				}
				assertAllClose(t, "gates", pruned[3+l], masked[3+l], 1e-6)
			}
		})
	}
}

func hasSuffix(s, suf string) bool { return len(s) >= len(suf) && s[len(s)-len(suf):] == suf }

func layerOf(path string) int { // "/blocks/NN/..."
	return int(path[8]-'0')*10 + int(path[9]-'0')
}

func withShared(keep []int, e int) []int { return append(append([]int{}, keep...), e-1) }

// pickAxis keeps the given indices of one axis of a float32 tensor.
func pickAxis(t *tensors.Tensor, axis int, idx []int) *tensors.Tensor {
	dims := t.Shape().Dimensions
	src := tensors.MustCopyFlatData[float32](t)
	outer, inner := 1, 1
	for i := range axis {
		outer *= dims[i]
	}
	for i := axis + 1; i < len(dims); i++ {
		inner *= dims[i]
	}
	var dst []float32
	for o := range outer {
		for _, j := range idx {
			base := (o*dims[axis] + j) * inner
			dst = append(dst, src[base:base+inner]...)
		}
	}
	nd := append([]int{}, dims...)
	nd[axis] = len(idx)
	return tensors.FromFlatDataAndDimensions(dst, nd...)
}

// Dense and dispatch expert compute give the same outputs and gradients,
// with padding and several documents per row.
func TestDenseEqualsDispatch(t *testing.T) {
	cfg := testConfig()
	b := 3
	tb := makeBatch(rand.New(rand.NewPCG(7, 8)), cfg.VocabSize, b, cfg.SeqLen, 9)
	pools := cfg.SamplePoolSizes(rand.New(rand.NewPCG(9, 9)), b, cfg.SeqLen)
	store := newStore(3)
	var paths []string
	outs := func(o Outputs) []*Node {
		g := o.Loss.Graph()
		nodes := []*Node{o.Logits, o.Loss, o.Aux, o.Counts}
		var vars []*Node
		paths = paths[:0]
		for v := range store.IterVariables() {
			if v.InUseByGraph(g) {
				paths = append(paths, v.Path())
				vars = append(vars, v.NodeValue(g))
			}
		}
		return append(nodes, Gradient(o.Loss, vars...)...)
	}
	var res [2][]*tensors.Tensor
	for i, mode := range []string{DispatchDense, DispatchSorted} {
		res[i] = run(t, store, forwardSpec{cfg: cfg, opts: Options{Logits: true, Train: true, Dispatch: mode}, pools: true, outputs: outs},
			append(baseArgs(tb), pools)...)
	}
	names := append([]string{"logits", "loss", "aux", "counts"}, paths...)
	for i := range res[0] {
		assertAllClose(t, names[i], res[1][i], res[0][i], 1e-5)
		for _, v := range flatFloat(res[1][i]) {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s: non-finite value", names[i])
			}
		}
	}
	if len(paths) < 10 {
		t.Fatalf("only %d variables got gradients", len(paths))
	}
}

// Every token's chosen experts lie inside its document's pool, pools are one
// per (row, segment, layer), and their size is min(n, E').
func TestChosenExpertsInsideDocumentPool(t *testing.T) {
	cfg := testConfig()
	b := 4
	tb := makeBatch(rand.New(rand.NewPCG(10, 11)), cfg.VocabSize, b, cfg.SeqLen, 6)
	pools := cfg.SamplePoolSizes(rand.New(rand.NewPCG(12, 13)), b, cfg.SeqLen)
	store := newStore(5)
	out := run(t, store, forwardSpec{cfg: cfg, opts: Options{Train: true}, pools: true, outputs: func(o Outputs) []*Node {
		var n []*Node
		for _, r := range o.Layers {
			n = append(n, r.Experts, r.PoolMask)
		}
		return append(n, o.PoolSizes)
	}}, append(baseArgs(tb), pools)...)
	ep, kp := cfg.RoutableExperts(), cfg.RoutedTopK()
	drawn := tensors.MustCopyFlatData[int32](pools)
	eff := tensors.MustCopyFlatData[int32](out[2*cfg.NLayers])
	docs := 0
	for l := range cfg.NLayers {
		experts := tensors.MustCopyFlatData[int32](out[2*l])
		mask := flatFloat(out[2*l+1])
		for row := range b {
			poolOf := map[int32]string{}
			for p := range cfg.SeqLen {
				seg := tb.segs[row][p]
				tok := row*cfg.SeqLen + p
				m := mask[tok*ep : (tok+1)*ep]
				key := ""
				size := 0
				for _, v := range m {
					key += map[bool]string{true: "1", false: "0"}[v != 0]
					if v != 0 {
						size++
					}
				}
				if seg < 0 {
					if size != ep {
						t.Fatalf("padding token restricted to %d experts", size)
					}
					continue
				}
				if prev, ok := poolOf[seg]; ok && prev != key {
					t.Fatalf("layer %d row %d segment %d: two different pools", l, row, seg)
				} else if !ok {
					docs++
				}
				poolOf[seg] = key
				n := int(drawn[(l*b+row)*cfg.SeqLen+int(seg)])
				if size != min(n, ep) || int(eff[(l*b+row)*cfg.SeqLen+int(seg)]) != min(n, ep) {
					t.Fatalf("layer %d row %d segment %d: pool of %d experts, drawn %d", l, row, seg, size, n)
				}
				for j := range kp {
					if m[experts[tok*kp+j]] == 0 {
						t.Fatalf("layer %d token %d: expert %d outside its pool", l, tok, experts[tok*kp+j])
					}
				}
			}
		}
	}
	if docs < 2*b {
		t.Fatalf("only %d (layer, document) pools checked", docs)
	}
}

// Padding (segment PaddingSegment) is invisible: whatever token ids the
// padded positions hold, losses, counts, pools and LB stay the same, with
// intra-document and with plain causal attention. Padding sits at the start
// of a row so that causal attention could see it if it were not masked.
func TestPaddingIsIgnored(t *testing.T) {
	for _, docMask := range []bool{true, false} {
		cfg := testConfig()
		cfg.DocAttentionMask = docMask
		const pad = 10
		var outs [2][]*tensors.Tensor
		for i := range outs {
			tb := makeBatch(rand.New(rand.NewPCG(20, 21)), cfg.VocabSize, 2, cfg.SeqLen, 0)
			for p := range pad {
				tb.segs[1][p], tb.docs[1][p], tb.labels[1][p] = PaddingSegment, PaddingSegment, IgnoreLabel
				tb.tokens[1][p] = int32(1 + (p*7+i*13)%(cfg.VocabSize-1)) // differs between the two runs
			}
			store := newStore(9)
			spec := forwardSpec{cfg: cfg, opts: Options{Train: true}, pools: true, outputs: func(o Outputs) []*Node {
				return []*Node{o.CE, o.Counts, o.LB, o.RouterZ, o.PoolSizes, o.Tokens, o.LMHeadZ}
			}}
			outs[i] = run(t, store, spec, append(baseArgs(tb), fill3(cfg.NLayers, 2, cfg.SeqLen, 5))...)
		}
		for j, n := range []string{"CE", "counts", "LB", "router z", "pool sizes", "tokens", "LM-head z"} {
			assertAllClose(t, n, outs[1][j], outs[0][j], 1e-6)
		}
		if got := flatFloat(outs[0][5])[0]; got != float64(2*cfg.SeqLen-pad) {
			t.Errorf("real tokens = %v, want %d", got, 2*cfg.SeqLen-pad)
		}
		var sum float64
		for _, v := range flatFloat(outs[0][1]) {
			sum += v
		}
		if want := float64(cfg.NLayers * (2*cfg.SeqLen - pad) * cfg.RoutedTopK()); sum != want {
			t.Errorf("counts sum to %v, want %v (padding must not count)", sum, want)
		}
	}
}

// The three load-balancing count sources agree where they should: counts
// fed back from this batch equal in-graph global counts; one group of all
// rows equals global; per-row groups differ.
func TestLoadBalanceCountSources(t *testing.T) {
	cfg := testConfig()
	b := 4
	tb := makeBatch(rand.New(rand.NewPCG(30, 31)), cfg.VocabSize, b, cfg.SeqLen, 0)
	pools := cfg.SamplePoolSizes(rand.New(rand.NewPCG(32, 33)), b, cfg.SeqLen)
	store := newStore(13)
	lbOf := func(opts Options, counts *tensors.Tensor) *tensors.Tensor {
		opts.Train = true
		spec := forwardSpec{cfg: cfg, opts: opts, pools: true, counts: counts != nil,
			outputs: func(o Outputs) []*Node { return []*Node{o.LB, o.Counts} }}
		args := append(baseArgs(tb), pools)
		if counts != nil {
			args = append(args, counts)
		}
		return run(t, store, spec, args...)[0]
	}
	spec := forwardSpec{cfg: cfg, opts: Options{SkipHead: true, Train: true}, pools: true,
		outputs: func(o Outputs) []*Node { return []*Node{o.Counts} }}
	counts := run(t, store, spec, append(baseArgs(tb), pools)...)[0]
	global := lbOf(Options{}, nil)
	assertAllClose(t, "fed-back counts", lbOf(Options{}, counts), global, 1e-6)
	assertAllClose(t, "one group", lbOf(Options{LBGroupRows: b}, nil), global, 1e-7)
	local := lbOf(Options{LBGroupRows: 1}, nil)
	if maxRelErr(flatFloat(local), flatFloat(global)) < 1e-4 {
		t.Errorf("local LB %v equals global %v", flatFloat(local), flatFloat(global))
	}
}

// Pool-size slots past a batch's last segment change nothing: the trainer
// gives its graphs only as many slots as the batch's segments need
// (train.segmentSlots), and the losses, counts and logits must then be
// those of the full, sequence-length-wide draw.
func TestPoolSlotsPastTheSegmentsChangeNothing(t *testing.T) {
	cfg := testConfig()
	b := 3
	tb := makeBatch(rand.New(rand.NewPCG(21, 22)), cfg.VocabSize, b, cfg.SeqLen, 5)
	top := int32(0)
	for _, row := range tb.segs {
		for _, s := range row {
			top = max(top, s)
		}
	}
	slots := int(top) + 1
	if slots >= cfg.SeqLen {
		t.Fatalf("test batch uses all %d slots", slots)
	}
	full := cfg.SamplePoolSizes(rand.New(rand.NewPCG(23, 24)), b, cfg.SeqLen)
	all := tensors.MustCopyFlatData[int32](full)
	var cut []int32
	for l := range cfg.NLayers {
		for r := range b {
			base := (l*b + r) * cfg.SeqLen
			cut = append(cut, all[base:base+slots]...)
		}
	}
	narrow := tensors.FromFlatDataAndDimensions(cut, cfg.NLayers, b, slots)
	outs := func(o Outputs) []*Node { return []*Node{o.Loss, o.Aux, o.Counts, o.Logits} }
	store := newStore(7)
	var res [2][]*tensors.Tensor
	for i, pools := range []*tensors.Tensor{full, narrow} {
		res[i] = run(t, store, forwardSpec{cfg: cfg, opts: Options{Logits: true, Train: true}, pools: true, outputs: outs},
			append(baseArgs(tb), pools)...)
	}
	for i, name := range []string{"loss", "aux", "counts", "logits"} {
		a, b := flatFloat(res[0][i]), flatFloat(res[1][i])
		for j := range a {
			if a[j] != b[j] {
				t.Fatalf("%s[%d]: %v with %d slots, %v with %d", name, j, a[j], cfg.SeqLen, b[j], slots)
			}
		}
	}
}
