package train

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing/store"
)

// The comparison behind the EMO paper's claim (emo-method.md §8, claim 2):
// for each checkpoint and each domain, select an expert subset from ONE
// calibration document of the domain, keep 50/25/12.5% of the experts, and
// measure the held-out loss increase on that domain.

// CompareOptions configure Compare.
type CompareOptions struct {
	// Inference: backend, batch rows and routing (default: no pool).
	Inference InferenceOptions
	// Fractions of the experts to keep (K = round(f·E), shared expert
	// counted). Default 0.5, 0.25, 0.125.
	Fractions []float64
	// Sequences caps the held-out sequences, evenly spaced (0: all).
	Sequences int
	// Calibration picks the calibration documents (one per domain).
	Calibration CalibrationOptions
	// Seed draws the random-subset control.
	Seed uint64
	// Progress receives one line per step (nil: none).
	Progress io.Writer
}

// CompareModel names a checkpoint to compare.
type CompareModel struct {
	Name, Checkpoint string
}

// CompareResult is the comparison of several checkpoints.
type CompareResult struct {
	// Domains are the held-out domains that have a calibration document.
	Domains []string `json:"domains"`
	// Calibration is each domain's calibration document (key, tokens).
	Calibration map[string]model.Calibration `json:"calibration"`
	Routing     string                       `json:"routing"`
	Sequences   int                          `json:"sequences"`
	Models      []ModelComparison            `json:"models"`
}

// ModelComparison is one checkpoint's numbers.
type ModelComparison struct {
	Name       string `json:"name"`
	Checkpoint string `json:"checkpoint"`
	Router     string `json:"router"`
	NumExperts int    `json:"num_experts"`
	// Full is the full model's held-out loss (per domain too).
	Full EvalResult    `json:"full"`
	Keep []KeepResults `json:"keep"`
}

// KeepResults are the losses with K experts per layer.
type KeepResults struct {
	Fraction float64 `json:"fraction"`
	Keep     int     `json:"keep"`
	// Domains: per held-out domain, its loss with the subset selected from
	// its own calibration document (Same), from the next domain's in
	// sorted order (Other), and with a random subset (Random); Subset is
	// the Same subset.
	Domains map[string]SubsetLosses `json:"domains"`
	// Mean increases over domains (unweighted), nats.
	MeanSame   float64 `json:"mean_same_delta"`
	MeanOther  float64 `json:"mean_other_delta"`
	MeanRandom float64 `json:"mean_random_delta"`
}

// SubsetLosses are one domain's losses at one K.
type SubsetLosses struct {
	Full   float64 `json:"full"`
	Same   float64 `json:"same"`
	Other  float64 `json:"other"`
	Random float64 `json:"random"`
	Subset [][]int `json:"subset"`
}

// Compare loads each checkpoint and, for each fraction and held-out
// domain, selects a subset from the domain's calibration document
// (CalibrationDocs on calibStore: one document per domain), evaluates the
// domain's held-out loss (evalStore) with it, with another domain's subset
// and with a random subset. The checkpoints must share the tokenizer.
func Compare(ctx context.Context, models []CompareModel, evalStore, calibStore string, o CompareOptions) (CompareResult, error) {
	if len(o.Fractions) == 0 {
		o.Fractions = []float64{0.5, 0.25, 0.125}
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	logf := func(format string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", a...)
		}
	}
	es, err := store.Open(evalStore, nil, store.Options{ReadOnly: true})
	if err != nil {
		return CompareResult{}, fmt.Errorf("train: compare: eval store: %w", err)
	}
	defer es.Close()
	cs, err := store.Open(calibStore, nil, store.Options{ReadOnly: true})
	if err != nil {
		return CompareResult{}, fmt.Errorf("train: compare: calibration store: %w", err)
	}
	defer cs.Close()
	calib, err := CalibrationDocs(cs, o.Calibration)
	if err != nil {
		return CompareResult{}, err
	}
	res := CompareResult{Calibration: map[string]model.Calibration{}}
	for _, cm := range models {
		m, err := LoadModel(cm.Checkpoint)
		if err != nil {
			return res, err
		}
		in, err := NewInference(m, o.Inference)
		if err != nil {
			return res, err
		}
		set, err := in.NewEvalSet(es, o.Sequences)
		if err != nil {
			return res, err
		}
		if res.Domains == nil {
			for _, d := range set.Domains() {
				if c, ok := calib[d]; ok {
					res.Domains = append(res.Domains, d)
					res.Calibration[d] = model.Calibration{Source: calibStore, Docs: []string{c.Key}, Domain: d, Tokens: len(c.Tokens)}
				}
			}
			if len(res.Domains) == 0 {
				return res, fmt.Errorf("train: compare: no held-out domain has a calibration document in %s", calibStore)
			}
			res.Routing, res.Sequences = in.Routing(), set.Sequences
		}
		cfg := m.Config()
		mc := ModelComparison{Name: cm.Name, Checkpoint: cm.Checkpoint, Router: cfg.Router, NumExperts: cfg.NumExperts}
		if mc.Full, err = in.Eval(ctx, set, nil); err != nil {
			return res, err
		}
		logf("compare: %s full model: held-out loss %.4f", cm.Name, mc.Full.Loss)
		for _, f := range o.Fractions {
			k := cfg.KeepForFraction(f)
			kr := KeepResults{Fraction: f, Keep: k, Domains: map[string]SubsetLosses{}}
			subs := map[string]model.Subset{}
			for _, d := range res.Domains {
				if subs[d], err = in.Select(ctx, []CalibDoc{calib[d]}, k); err != nil {
					return res, err
				}
			}
			rnd, err := model.RandomSubset(cfg, k, o.Seed)
			if err != nil {
				return res, err
			}
			for i, d := range res.Domains {
				other := subs[res.Domains[(i+1)%len(res.Domains)]]
				same := subs[d]
				sl := SubsetLosses{Full: mc.Full.Domains[d].Loss, Subset: same.Layers}
				for _, x := range []struct {
					s   *model.Subset
					dst *float64
				}{{&same, &sl.Same}, {&other, &sl.Other}, {&rnd, &sl.Random}} {
					dl, err := in.EvalDomain(ctx, set, d, x.s)
					if err != nil {
						return res, err
					}
					*x.dst = dl.Loss
				}
				kr.Domains[d] = sl
				nd := float64(len(res.Domains))
				kr.MeanSame += (sl.Same - sl.Full) / nd
				kr.MeanOther += (sl.Other - sl.Full) / nd
				kr.MeanRandom += (sl.Random - sl.Full) / nd
			}
			logf("compare: %s keep %d of %d: mean loss increase %+.4f (same-domain calibration), %+.4f (other domain), %+.4f (random)",
				cm.Name, k, cfg.NumExperts, kr.MeanSame, kr.MeanOther, kr.MeanRandom)
			mc.Keep = append(mc.Keep, kr)
		}
		res.Models = append(res.Models, mc)
	}
	return res, nil
}

// Markdown renders the comparison: the per-domain loss increase with a
// one-document same-domain subset (the paper's table), then the controls.
func (r CompareResult) Markdown() string {
	var b strings.Builder
	if len(r.Models) == 0 {
		return ""
	}
	pct := func(f float64) string {
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", 100*f), "0"), ".") + "%"
	}
	fmt.Fprintf(&b, "Held-out loss increase (nats/token) per domain when each layer keeps K of E experts (shared expert counted), selected greedily layer by layer from ONE calibration document of the domain; routing: %s; %d held-out sequences.\n\n", r.Routing, r.Sequences)
	b.WriteString("| domain |")
	for _, m := range r.Models {
		fmt.Fprintf(&b, " %s full |", m.Name)
	}
	for i, k := range r.Models[0].Keep {
		for _, m := range r.Models {
			kk := k.Keep
			if i < len(m.Keep) {
				kk = m.Keep[i].Keep
			}
			fmt.Fprintf(&b, " %s Δ %s (K=%d) |", m.Name, pct(k.Fraction), kk)
		}
	}
	b.WriteString("\n|---|")
	for range len(r.Models) * (1 + len(r.Models[0].Keep)) {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	row := func(name string, full func(m ModelComparison) float64, delta func(k KeepResults) float64) {
		fmt.Fprintf(&b, "| %s |", name)
		for _, m := range r.Models {
			fmt.Fprintf(&b, " %.3f |", full(m))
		}
		for i := range r.Models[0].Keep {
			for _, m := range r.Models {
				if i < len(m.Keep) {
					fmt.Fprintf(&b, " %+.3f |", delta(m.Keep[i]))
				} else {
					b.WriteString(" |")
				}
			}
		}
		b.WriteString("\n")
	}
	for _, d := range r.Domains {
		row(d, func(m ModelComparison) float64 { return m.Full.Domains[d].Loss },
			func(k KeepResults) float64 { s := k.Domains[d]; return s.Same - s.Full })
	}
	row("**mean**", func(m ModelComparison) float64 {
		var s float64
		for _, d := range r.Domains {
			s += m.Full.Domains[d].Loss
		}
		return s / float64(len(r.Domains))
	}, func(k KeepResults) float64 { return k.MeanSame })

	b.WriteString("\nControls: mean loss increase over the domains with the subset selected from the domain's own document (same), from another domain's document (other: the next domain in sorted order) and a random subset (random, one per K).\n\n")
	b.WriteString("| model | keep | same | other | random |\n|---|---|---|---|---|\n")
	for _, m := range r.Models {
		for _, k := range m.Keep {
			fmt.Fprintf(&b, "| %s | %s (K=%d of %d) | %+.3f | %+.3f | %+.3f |\n", m.Name, pct(k.Fraction), k.Keep, m.NumExperts, k.MeanSame, k.MeanOther, k.MeanRandom)
		}
	}
	cal := make([]string, 0, len(r.Calibration))
	for _, d := range r.Domains {
		c := r.Calibration[d]
		cal = append(cal, fmt.Sprintf("%s: `%s` (%d tokens)", d, strings.Join(c.Docs, ","), c.Tokens))
	}
	sort.Strings(cal)
	fmt.Fprintf(&b, "\nCalibration documents: %s.\n", strings.Join(cal, "; "))
	return b.String()
}
