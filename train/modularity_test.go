package train

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/emopipe/emopipe/model"
)

func TestNMIHandCases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		joint [][]float64
		want  float64
	}{
		// Each domain has its own expert(s): the expert tells the domain.
		{"aligned", [][]float64{{5, 0, 0}, {0, 3, 0}, {0, 0, 7}}, 1},
		{"aligned, two experts each", [][]float64{{2, 2, 0, 0}, {0, 0, 1, 3}}, 2 * math.Ln2 / (math.Ln2 + (-(0.25*math.Log(0.25))*2 - 0.125*math.Log(0.125) - 0.375*math.Log(0.375)))},
		// Expert use is the same distribution in every domain.
		{"independent", [][]float64{{1, 2, 3}, {2, 4, 6}}, 0},
		{"one domain", [][]float64{{1, 2, 3}}, 0},
		{"empty", [][]float64{{0, 0}, {0, 0}}, 0},
		// p = [[.5, 0], [.25, .25]]: H(X) = ln 2, H(Y) = H(.75, .25) = 0.562335,
		// I = .5 ln(4/3) + .25 ln(2/3) + .25 ln 2 = 0.215762; NMI = I / 0.627741.
		{"partial", [][]float64{{2, 0}, {1, 1}}, 0.215762 / 0.627741},
	} {
		if got := NMI(tc.joint); math.Abs(got-tc.want) > 1e-5 {
			t.Errorf("%s: NMI = %.6f, want %.6f", tc.name, got, tc.want)
		}
	}
}

// Modularity on a tiny trained checkpoint: one heat map per layer plus the
// JSON, usage rows are distributions over the experts, every labelled
// token is counted once, NMIs lie in [0, 1].
func TestModularityFiles(t *testing.T) {
	dir, path := trainedCheckpoint(t, model.RouterEMO)
	out := t.TempDir()
	rep, files, err := WriteModularity(context.Background(), path, dir, out, ModularityOptions{Inference: InferenceOptions{Batch: 4}, MinDocTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 || filepath.Base(files[0]) != "modularity_layer00.png" || filepath.Base(files[2]) != "modularity.json" {
		t.Fatalf("files %v", files)
	}
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.Size() < 1000 && filepath.Ext(f) == ".png" {
			t.Errorf("%s: %v", f, err)
		}
	}
	b, _ := os.ReadFile(files[2])
	var back ModularityReport
	if err := json.Unmarshal(b, &back); err != nil || len(back.Layers) != 2 || back.Layers[1].PoolNMI != rep.Layers[1].PoolNMI {
		t.Fatalf("modularity.json: %v %+v", err, back)
	}
	m := loadModel(t, path)
	in := newInference(t, m, false)
	set, _ := in.NewEvalSet(openRO(t, dir), 0)
	ev, err := in.Eval(context.Background(), set, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Tokens != ev.Tokens || len(rep.Domains) != 4 || rep.PoolSize != 4 || rep.Documents == 0 {
		t.Errorf("report: %d tokens (eval %d), domains %v, pool %d, %d documents", rep.Tokens, ev.Tokens, rep.Domains, rep.PoolSize, rep.Documents)
	}
	for _, lu := range rep.Layers {
		for d, row := range lu.Usage {
			var s float64
			for _, v := range row {
				s += v
			}
			if math.Abs(s-1) > 1e-9 {
				t.Errorf("layer %d domain %s: usage sums to %v", lu.Layer, rep.Domains[d], s)
			}
		}
		if lu.TokenNMI < 0 || lu.TokenNMI > 1 || lu.PoolNMI < 0 || lu.PoolNMI > 1 {
			t.Errorf("layer %d: NMI %v %v", lu.Layer, lu.TokenNMI, lu.PoolNMI)
		}
	}
	t.Logf("NMI token/pool: L0 %.3f/%.3f L1 %.3f/%.3f", rep.Layers[0].TokenNMI, rep.Layers[0].PoolNMI, rep.Layers[1].TokenNMI, rep.Layers[1].PoolNMI)
}
