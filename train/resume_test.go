package train

import (
	"math"
	"path/filepath"
	"testing"
	"time"
)

// N steps straight equal N/2 steps, a new Trainer resuming from the store,
// N/2 more: identical per-step losses and identical final weights and
// optimizer state, bit for bit (same process; the kill -9 version is in
// cmd/emopipe).
func TestResumeIsBitwise(t *testing.T) {
	for _, accum := range []int{1, 2} {
		t.Run(map[int]string{1: "accum1", 2: "accum2"}[accum], func(t *testing.T) {
			cfgFor := func(dir string) Config {
				c := testConfig(t, dir)
				c.Accum = accum
				c.Steps = 6
				return c
			}
			straightDir := filepath.Join(t.TempDir(), "a")
			synthStore(t, straightDir, 40, 33, 64, 1)
			start := time.Now()
			a := newTrainer(t, cfgFor(straightDir))
			ma := steps(t, a, 6)
			da, err := a.Digest()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("6 straight steps: %s", time.Since(start))

			resumedDir := filepath.Join(t.TempDir(), "b")
			synthStore(t, resumedDir, 40, 33, 64, 1)
			b := newTrainer(t, cfgFor(resumedDir))
			steps(t, b, 3)
			if err := b.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			steps(t, b, 1) // lost: not checkpointed
			b.Close()
			c := newTrainer(t, cfgFor(resumedDir))
			if !c.Resumed() || c.StepsDone() != 3 {
				t.Fatalf("resumed %v at %d, want step 3", c.Resumed(), c.StepsDone())
			}
			steps(t, c, 3)
			dc, err := c.Digest()
			if err != nil {
				t.Fatal(err)
			}
			ha, hc := a.History(), c.History()
			for i := range ma {
				if math.Float64bits(ha.Loss[i]) != math.Float64bits(hc.Loss[i]) {
					t.Errorf("step %d: loss %v straight, %v resumed", i+1, ha.Loss[i], hc.Loss[i])
				}
			}
			if len(hc.Loss) != 6 {
				t.Errorf("resumed history has %d steps, want 6", len(hc.Loss))
			}
			if da != dc {
				t.Errorf("final state digest differs: %s vs %s", da[:12], dc[:12])
			}
			t.Logf("losses %.4f ... %.4f", ha.Loss[0], ha.Loss[5])
		})
	}
}

// Same store + seed -> same losses; another seed -> other losses.
func TestSeedDeterminism(t *testing.T) {
	dir := synthStore(t, filepath.Join(t.TempDir(), "s"), 20, 33, 64, 1)
	run := func(seed uint64) []float64 {
		c := testConfig(t, dir)
		c.Seed = seed
		c.CheckpointDir = t.TempDir()
		tr := newTrainer(t, c)
		steps(t, tr, 3)
		h := tr.History().Loss
		tr.Close()
		return h
	}
	a, b, c := run(5), run(5), run(6)
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			t.Fatalf("seed 5 twice: step %d %v vs %v", i+1, a[i], b[i])
		}
	}
	if a[0] == c[0] {
		t.Fatalf("seeds 5 and 6 gave the same first loss %v", a[0])
	}
}
