package train

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/gomlx/gomlx/core/tensors"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing/store"
)

// Modularity (emo-method.md §8, claim 5): do a model's experts align with
// document domains? Per layer, which experts each domain's tokens use, and
// the normalised mutual information between a document's domain and its
// experts.

// ModularityOptions configure Modularity.
type ModularityOptions struct {
	// Inference: backend, batch rows and routing (default: no pool, the
	// reference's inference routing).
	Inference InferenceOptions
	// Sequences caps the evaluated sequences, evenly spaced (0: all).
	Sequences int
	// PoolSize is n, the experts of a document's pool in the pool view: the
	// n routable experts with the largest router probability summed over
	// the document's tokens (EMO's pool rule, emo-method.md §3). Default:
	// the model's EvalPoolSize, else 2·k'; at most E'.
	PoolSize int
	// MinDocTokens leaves shorter document pieces out of the pool view
	// (default 16).
	MinDocTokens int
}

// ModularityReport is the modularity of one checkpoint on one store.
type ModularityReport struct {
	Checkpoint string `json:"checkpoint"`
	Router     string `json:"router"`
	// Routing is the routing used ("no pool" or "eval pool N").
	Routing string `json:"routing"`
	// Domains are the row labels of every Usage matrix.
	Domains []string `json:"domains"`
	// PoolSize is n of the pool view.
	PoolSize int `json:"pool_size"`
	// Tokens and Documents are the labelled tokens and the document pieces
	// (router segments with at least MinDocTokens tokens) measured.
	Tokens    int          `json:"tokens"`
	Documents int          `json:"documents"`
	Layers    []LayerUsage `json:"layers"`
}

// LayerUsage is one layer's domain × expert view.
type LayerUsage struct {
	Layer int `json:"layer"`
	// Usage[d][e] is the share of domain d's routed assignments (token ×
	// top-k' slot) that go to routable expert e; rows sum to 1. [D][E']
	Usage [][]float64 `json:"usage"`
	// TokenNMI is NMI(domain; expert) over routed assignments: 1 when every
	// domain has experts of its own, 0 when expert choice is independent of
	// the domain.
	TokenNMI float64 `json:"token_nmi"`
	// PoolNMI is NMI(domain; pool expert) over (document, expert in its
	// pool) pairs: how well a document's pool tells its domain.
	PoolNMI float64 `json:"pool_nmi"`
}

// NMI is the normalised mutual information of a joint count table
// (rows: one variable's values, columns: the other's):
// I(X;Y) / ((H(X)+H(Y))/2), in [0, 1] (the arithmetic normalisation,
// scikit-learn's default). 0 for independent variables, 1 when each
// determines the other; 0 when both entropies are 0.
func NMI(joint [][]float64) float64 {
	var total float64
	rows := make([]float64, len(joint))
	var cols []float64
	for i, r := range joint {
		if cols == nil {
			cols = make([]float64, len(r))
		}
		for j, v := range r {
			rows[i] += v
			cols[j] += v
			total += v
		}
	}
	if total == 0 {
		return 0
	}
	h := func(m []float64) float64 {
		var s float64
		for _, v := range m {
			if v > 0 {
				p := v / total
				s -= p * math.Log(p)
			}
		}
		return s
	}
	var mi float64
	for i, r := range joint {
		for j, v := range r {
			if v > 0 {
				mi += v / total * math.Log(v*total/(rows[i]*cols[j]))
			}
		}
	}
	den := (h(rows) + h(cols)) / 2
	if den <= 0 {
		return 0
	}
	return math.Max(0, math.Min(1, mi/den))
}

// Modularity routes st's sequences through m (full model) and measures,
// per layer, each domain's expert use and the NMI between document domain
// and routed experts (token view) and pool experts (pool view). Domains
// come from the documents' labels in the store.
func Modularity(ctx context.Context, m *Model, st *store.Store, o ModularityOptions) (ModularityReport, error) {
	in, err := NewInference(m, o.Inference)
	if err != nil {
		return ModularityReport{}, err
	}
	set, err := in.NewEvalSet(st, o.Sequences)
	if err != nil {
		return ModularityReport{}, err
	}
	cfg := m.Config()
	nl, ep, kp := cfg.NLayers, cfg.RoutableExperts(), cfg.RoutedTopK()
	n := o.PoolSize
	if n <= 0 {
		n = cfg.EvalPoolSize
		if cfg.Router != model.RouterEMO || n <= 0 {
			n = 2 * kp
		}
	}
	n = min(n, ep)
	if o.MinDocTokens <= 0 {
		o.MinDocTokens = 16
	}
	domains := set.Domains()
	di := map[string]int{}
	for i, d := range domains {
		di[d] = i
	}
	tokCounts := make([][][]float64, nl) // [L][D][E']
	poolCounts := make([][][]float64, nl)
	for l := range nl {
		tokCounts[l], poolCounts[l] = matrix(len(domains), ep), matrix(len(domains), ep)
	}
	mask, err := in.mask(nil)
	if err != nil {
		return ModularityReport{}, err
	}
	rep := ModularityReport{Checkpoint: m.Path, Router: cfg.Router, Routing: in.Routing(), Domains: domains, PoolSize: n}
	seqLen := cfg.SeqLen
	for _, b := range set.Batches {
		outs, err := in.run(ctx, inferRoutes, b, mask)
		if err != nil {
			return ModularityReport{}, err
		}
		raw, ex := float32s(outs[2]), int32s(outs[3]) // [L,B,S,E'], [L,B,S,k']
		for _, o := range outs {
			o.FinalizeAll()
		}
		rows := b.Rows()
		for r := range rows {
			// Document pieces of this row: router segment → (domain, tokens).
			type piece struct {
				dom    int
				tokens int
				sums   [][]float64 // [L][E']
			}
			pieces := map[int32]*piece{}
			for p := range seqLen {
				seg := b.Segments[r][p]
				if seg < 0 {
					continue
				}
				d, ok := di[b.Domains[r][p]]
				if !ok {
					continue
				}
				pc := pieces[seg]
				if pc == nil {
					pc = &piece{dom: d, sums: matrix(nl, ep)}
					pieces[seg] = pc
				}
				pc.tokens++
				for l := range nl {
					at := ((l*rows+r)*seqLen + p)
					for e := range ep {
						pc.sums[l][e] += float64(raw[at*ep+e])
					}
					if b.Labels[r][p] >= 0 {
						for j := range kp {
							tokCounts[l][d][ex[at*kp+j]]++
						}
					}
				}
				if b.Labels[r][p] >= 0 {
					rep.Tokens++
				}
			}
			segs := make([]int32, 0, len(pieces))
			for s := range pieces {
				segs = append(segs, s)
			}
			sort.Slice(segs, func(i, j int) bool { return segs[i] < segs[j] })
			for _, s := range segs {
				pc := pieces[s]
				if pc.tokens < o.MinDocTokens {
					continue
				}
				rep.Documents++
				for l := range nl {
					for _, e := range model.TopExperts(pc.sums[l], n) {
						poolCounts[l][pc.dom][e]++
					}
				}
			}
		}
	}
	for l := range nl {
		lu := LayerUsage{Layer: l, Usage: matrix(len(domains), ep), TokenNMI: NMI(tokCounts[l]), PoolNMI: NMI(poolCounts[l])}
		for d := range domains {
			var tot float64
			for _, v := range tokCounts[l][d] {
				tot += v
			}
			for e, v := range tokCounts[l][d] {
				lu.Usage[d][e] = frac64(v, tot)
			}
		}
		rep.Layers = append(rep.Layers, lu)
	}
	return rep, nil
}

func matrix(r, c int) [][]float64 {
	out := make([][]float64, r)
	for i := range out {
		out[i] = make([]float64, c)
	}
	return out
}

func int32s(t *tensors.Tensor) []int32 { return tensors.MustCopyFlatData[int32](t) }

// WriteModularity loads the checkpoint, measures its modularity on the
// store in evalStore (Modularity) and writes into dir one heat map per
// layer, modularity_layerNN.png (domains × routable experts, share of each
// domain's routed assignments, token and pool NMI in the title), and
// modularity.json (the report). It returns the report and the files
// written. `emopipe report` calls it.
func WriteModularity(ctx context.Context, checkpoint, evalStore, dir string, o ModularityOptions) (ModularityReport, []string, error) {
	m, err := LoadModel(checkpoint)
	if err != nil {
		return ModularityReport{}, nil, err
	}
	st, err := store.Open(evalStore, nil, store.Options{ReadOnly: true})
	if err != nil {
		return ModularityReport{}, nil, fmt.Errorf("train: modularity: %w", err)
	}
	defer st.Close()
	rep, err := Modularity(ctx, m, st, o)
	if err != nil {
		return rep, nil, err
	}
	files, err := rep.Write(dir)
	return rep, files, err
}

// Write writes the heat maps and modularity.json into dir.
func (rep ModularityReport) Write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	width := max(2, len(fmt.Sprint(len(rep.Layers)-1)))
	for _, lu := range rep.Layers {
		p := filepath.Join(dir, fmt.Sprintf("modularity_layer%0*d.png", width, lu.Layer))
		if err := usagePlot(p, rep, lu); err != nil {
			return files, fmt.Errorf("train: modularity plot: %w", err)
		}
		files = append(files, p)
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return files, err
	}
	p := filepath.Join(dir, "modularity.json")
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		return files, err
	}
	return append(files, p), nil
}

// labelTicks labels rows (or columns) with names.
type labelTicks struct{ names []string }

func (t labelTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := make([]plot.Tick, len(t.names))
	for i, n := range t.names {
		ts[i] = plot.Tick{Value: float64(i), Label: n}
	}
	return ts
}

func usagePlot(path string, rep ModularityReport, lu LayerUsage) error {
	ep := len(lu.Usage[0])
	g := loadGrid{lu.Usage}
	lo, hi := 0.0, 0.0
	for _, row := range lu.Usage {
		for _, v := range row {
			hi = max(hi, v)
		}
	}
	if hi <= lo {
		hi = lo + 1
	}
	cm := moreland.Kindlmann()
	cm.SetMin(lo)
	cm.SetMax(hi)
	hm := plotter.NewHeatMap(g, cm.Palette(255))
	hm.Min, hm.Max = lo, hi
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Layer %d: expert use by domain (%s router, %s) — token NMI %.3f, pool NMI %.3f (n=%d)",
		lu.Layer, rep.Router, rep.Routing, lu.TokenNMI, lu.PoolNMI, rep.PoolSize)
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = "routable expert"
	p.Y.Label.Text = "document domain"
	p.X.Tick.Marker = intTicks{n: ep}
	p.Y.Tick.Marker = labelTicks{rep.Domains}
	p.Add(hm)

	w, h := 9*vg.Inch, vg.Length(1.6+0.4*float64(len(rep.Domains)))*vg.Inch
	return writeHeatMap(path, p, cm, "share of the domain's routed assignments", w, h, 1.2*vg.Inch)
}
