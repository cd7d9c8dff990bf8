package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emopipe/emopipe/model"
)

// The selective-expert commands end to end on a model trained a few steps:
// select (store and file calibration) → eval with the subset → prune →
// eval of the pruned checkpoint equals the masked eval → continued
// training from the pruned checkpoint; bad input is one error line.
func TestExpertsCommands(t *testing.T) {
	tmp := t.TempDir()
	cfgFile := filepath.Join(tmp, "model.yaml")
	if err := os.WriteFile(cfgFile, []byte(trainModel), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "s")
	packForTrain(t, dir)
	if _, e, err := emopipe(t, trainArgs(dir, cfgFile, 4)...); err != nil {
		t.Fatalf("train: %v\n%s", err, e)
	}
	state, _ := trainState(t, dir)
	ckpt := filepath.Join(dir, "checkpoints", state.Checkpoint.File)

	subset := filepath.Join(tmp, "go.json")
	if _, e, err := emopipe(t, "experts", "select", "--checkpoint", ckpt, "--calib-store", dir, "--domain", "go", "--keep", "4", "--out", subset); err != nil {
		t.Fatalf("select: %v\n%s", err, e)
	}
	s, err := model.ReadSubset(subset)
	if err != nil || s.Keep != 4 || len(s.Layers) != 2 || len(s.Layers[0]) != 3 || s.Calibration.Domain != "go" {
		t.Fatalf("subset %+v: %v", s, err)
	}
	calib := filepath.Join(tmp, "prompt.txt")
	os.WriteFile(calib, []byte("func main() {\n\tfmt.Println(\"hello, world\")\n}\n"), 0o644)
	if out, e, err := emopipe(t, "experts", "select", "--checkpoint", ckpt, "--calib", calib, "--keep", "25%", "--out", filepath.Join(tmp, "p.json")); err != nil || !strings.Contains(out, "keep 2 of 9") {
		t.Fatalf("select from a file: %v\n%s%s", err, out, e)
	}

	evalJSON := func(args ...string) evalReport {
		t.Helper()
		out, e, err := emopipe(t, append([]string{"eval", "--store", dir, "--sequences", "48", "--json"}, args...)...)
		if err != nil {
			t.Fatalf("eval %v: %v\n%s", args, err, e)
		}
		var r evalReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("eval output: %v\n%s", err, out)
		}
		return r
	}
	masked := evalJSON("--checkpoint", ckpt, "--subset", subset)
	if masked.Subset == nil || masked.Subset.Keep != 4 || len(masked.Full.Domains) == 0 || masked.Subset.Loss == masked.Full.Loss {
		t.Fatalf("eval with subset: %+v", masked)
	}
	if math.Abs(masked.Full.Perplexity-math.Exp(masked.Full.Loss)) > 1e-9 {
		t.Errorf("perplexity %v for loss %v", masked.Full.Perplexity, masked.Full.Loss)
	}

	pruned := filepath.Join(tmp, "pruned.safetensors")
	if out, e, err := emopipe(t, "experts", "prune", "--checkpoint", ckpt, "--subset", subset, "--out", pruned); err != nil {
		t.Fatalf("prune: %v\n%s", err, e)
	} else {
		t.Log(strings.TrimSpace(out))
	}
	p := evalJSON("--checkpoint", pruned)
	if p.NumExperts != 4 || math.Abs(p.Full.Loss-masked.Subset.Loss) > 1e-5*masked.Subset.Loss {
		t.Errorf("pruned model: %d experts, loss %.6f; masked subset loss %.6f", p.NumExperts, p.Full.Loss, masked.Subset.Loss)
	}
	for d, v := range masked.Subset.Domains {
		if math.Abs(p.Full.Domains[d].Loss-v.Loss) > 1e-5*v.Loss {
			t.Errorf("%s: pruned %.6f, masked %.6f", d, p.Full.Domains[d].Loss, v.Loss)
		}
	}

	dir2 := filepath.Join(tmp, "s2")
	packForTrain(t, dir2)
	if out, e, err := emopipe(t, "train", "--store", dir2, "--init-checkpoint", pruned, "--steps", "2", "--batch", "4", "--quiet"); err != nil {
		t.Fatalf("train from the pruned checkpoint: %v\n%s%s", err, out, e)
	}
	s2, _ := trainState(t, dir2)
	if s2.Run.Model.NumExperts != 4 || s2.Step != 2 {
		t.Errorf("continued training: %d experts, step %d", s2.Run.Model.NumExperts, s2.Step)
	}

	for _, args := range [][]string{
		{"experts", "select", "--checkpoint", ckpt, "--calib", calib, "--keep", "1", "--out", subset},
		{"experts", "select", "--checkpoint", ckpt, "--calib", calib, "--keep", "50", "--out", subset},
		{"experts", "prune", "--checkpoint", pruned, "--subset", subset, "--out", filepath.Join(tmp, "x")},
		{"eval", "--checkpoint", filepath.Join(tmp, "missing.safetensors"), "--store", dir},
		{"eval", "--checkpoint", ckpt},
		{"train", "--store", dir2, "--init-checkpoint", pruned, "--preset", "tiny"},
	} {
		_, e, err := emopipe(t, args...)
		if err == nil {
			t.Errorf("%v: no error", args)
			continue
		}
		if lines := strings.Split(strings.TrimSpace(e), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "emopipe: ") {
			t.Errorf("%v: want one error line, got %q", args, e)
		}
	}
}
