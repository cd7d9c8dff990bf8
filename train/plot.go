package train

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// PlotInputs are what the report plots draw.
type PlotInputs struct {
	// Steps are the per-step metrics (StepMetrics.CE and .Load are used).
	Steps []StepMetrics
	// Evals are held-out evaluations.
	Evals []EvalResult
	// Unigram is the unigram entropy of the training tokens (0: not drawn).
	Unigram float64
	// Title names the run in the plot titles.
	Title string
	// LoadWindow is how many final steps the expert-load heatmap averages
	// (default 50).
	LoadWindow int
}

// WritePlots writes loss.png (train CE per step, its moving average, held-
// out loss, unigram entropy) and expert_load.png (layer × expert load
// relative to uniform, averaged over the last steps) into dir and returns
// their paths.
func WritePlots(dir string, in PlotInputs) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	if len(in.Steps) > 0 || len(in.Evals) > 0 {
		p := filepath.Join(dir, "loss.png")
		if err := lossPlot(p, in); err != nil {
			return paths, fmt.Errorf("train: loss plot: %w", err)
		}
		paths = append(paths, p)
	}
	if len(in.Steps) > 0 && len(in.Steps[len(in.Steps)-1].Load) > 0 {
		p := filepath.Join(dir, "expert_load.png")
		if err := loadPlot(p, in); err != nil {
			return paths, fmt.Errorf("train: expert load plot: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func lossPlot(path string, in PlotInputs) error {
	p := plot.New()
	p.Title.Text = "Loss" + titleSuffix(in.Title)
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = "optimizer step"
	p.Y.Label.Text = "cross-entropy (nats/token)"
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	lo, hi := 1e9, -1e9
	track := func(v float64) { lo, hi = min(lo, v), max(hi, v) }

	if n := len(in.Steps); n > 0 {
		raw := make(plotter.XYs, n)
		for i, s := range in.Steps {
			raw[i] = plotter.XY{X: float64(s.Step), Y: s.CE}
			track(s.CE)
		}
		l, err := plotter.NewLine(raw)
		if err != nil {
			return err
		}
		l.Color = color.RGBA{R: 120, G: 160, B: 220, A: 255}
		l.Width = vg.Points(0.7)
		p.Add(l)
		p.Legend.Add("train CE (per step)", l)
		if w := max(1, n/20); w > 1 {
			avg := make(plotter.XYs, 0, n)
			var sum float64
			for i, s := range in.Steps {
				sum += s.CE
				if i >= w {
					sum -= in.Steps[i-w].CE
				}
				if i >= w-1 {
					avg = append(avg, plotter.XY{X: float64(s.Step), Y: sum / float64(w)})
				}
			}
			la, err := plotter.NewLine(avg)
			if err != nil {
				return err
			}
			la.Color = color.RGBA{B: 160, A: 255}
			la.Width = vg.Points(2)
			p.Add(la)
			p.Legend.Add(fmt.Sprintf("train CE (mean of %d steps)", w), la)
		}
	}
	if len(in.Evals) > 0 {
		pts := make(plotter.XYs, len(in.Evals))
		for i, e := range in.Evals {
			pts[i] = plotter.XY{X: float64(e.Step), Y: e.Loss}
			track(e.Loss)
		}
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		l.Color, s.Color = color.RGBA{R: 210, G: 80, A: 255}, color.RGBA{R: 210, G: 80, A: 255}
		l.Width = vg.Points(2)
		s.Shape = draw.CircleGlyph{}
		p.Add(l, s)
		p.Legend.Add("held-out CE", l, s)
	}
	if in.Unigram > 0 {
		track(in.Unigram)
		f := plotter.NewFunction(func(float64) float64 { return in.Unigram })
		f.Color = color.Gray{Y: 90}
		f.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
		f.Width = vg.Points(1.5)
		p.Add(f)
		p.Legend.Add(fmt.Sprintf("unigram entropy of training tokens (%.2f)", in.Unigram), f)
	}
	p.Y.Min, p.Y.Max = max(0, lo-0.3), hi+0.3
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// loadGrid is a layer × expert grid for the heat map.
type loadGrid struct{ v [][]float64 }

func (g loadGrid) Dims() (c, r int)   { return len(g.v[0]), len(g.v) }
func (g loadGrid) Z(c, r int) float64 { return g.v[r][c] }
func (g loadGrid) X(c int) float64    { return float64(c) }
func (g loadGrid) Y(r int) float64    { return float64(r) }
func (g loadGrid) minMax() (lo, hi float64) {
	lo, hi = g.v[0][0], g.v[0][0]
	for _, row := range g.v {
		for _, x := range row {
			lo, hi = min(lo, x), max(hi, x)
		}
	}
	return lo, hi
}

func loadPlot(path string, in PlotInputs) error {
	win := in.LoadWindow
	if win <= 0 {
		win = 50
	}
	steps := in.Steps[max(0, len(in.Steps)-win):]
	nl, ep := len(steps[0].Load), len(steps[0].Load[0])
	v := make([][]float64, nl)
	for l := range nl {
		v[l] = make([]float64, ep)
		for _, s := range steps {
			for e := range ep {
				v[l][e] += s.Load[l][e] * float64(ep) / float64(len(steps)) // 1 = uniform
			}
		}
	}
	g := loadGrid{v}
	lo, hi := g.minMax()
	lo, hi = min(lo, 1), max(hi, 1)
	if hi-lo < 1e-9 {
		hi = lo + 1
	}
	cm := moreland.SmoothBlueRed()
	cm.SetMin(lo)
	cm.SetMax(hi)

	hm := plotter.NewHeatMap(g, cm.Palette(255))
	hm.Min, hm.Max = lo, hi
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Expert load relative to uniform (1.0), steps %d–%d%s", steps[0].Step, steps[len(steps)-1].Step, titleSuffix(in.Title))
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = "routable expert"
	p.Y.Label.Text = "layer"
	p.X.Tick.Marker = intTicks{n: ep}
	p.Y.Tick.Marker = intTicks{n: nl}
	p.Add(hm)

	w, h := 8*vg.Inch, vg.Length(2.2+0.35*float64(nl))*vg.Inch
	return writeHeatMap(path, p, cm, "load / uniform load", w, h, 0.6*vg.Inch)
}

// writeHeatMap draws a heat-map plot of size w × h with its colour bar
// (labelled barLabel, indented by barLeft to sit under the map) below it
// into a PNG file.
func writeHeatMap(path string, p *plot.Plot, cm palette.ColorMap, barLabel string, w, h, barLeft vg.Length) error {
	cb := plot.New()
	cb.Add(&plotter.ColorBar{ColorMap: cm})
	cb.HideY()
	cb.X.Padding = 0
	cb.X.Label.Text = barLabel

	barH := 0.9 * vg.Inch
	img := vgimg.New(w, h+barH)
	dc := draw.New(img)
	p.Draw(draw.Crop(dc, 0, 0, barH, 0))
	cb.Draw(draw.Crop(dc, barLeft, -0.3*vg.Inch, 0, -h))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// intTicks labels every integer (or every few when there are many).
type intTicks struct{ n int }

func (t intTicks) Ticks(lo, hi float64) []plot.Tick {
	every := max(1, t.n/16)
	var ts []plot.Tick
	for i := 0; i < t.n; i++ {
		lbl := ""
		if i%every == 0 {
			lbl = strconv.Itoa(i)
		}
		ts = append(ts, plot.Tick{Value: float64(i), Label: lbl})
	}
	return ts
}

func titleSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " — " + s
}
