package main

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/train"
)

// trainModel is a model small enough that a CPU step takes a fraction of a
// second.
const trainModel = `preset: tiny
d_model: 32
n_heads: 2
num_experts: 9
top_k: 3
expert_hidden: 32
pool_min: 2
pool_max: 8
eval_pool_size: 4
dispatch_block: 16
`

// packForTrain packs the sample with the small-vocabulary tokenizer at
// seq_len 33.
func packForTrain(t *testing.T, dir string) {
	t.Helper()
	if _, e, err := emopipe(t, "pack", sample, "--store", dir, "--seq-len", "33", "--tokenizer", "dolma2-8k", "--quiet"); err != nil {
		t.Fatalf("pack: %v\n%s", err, e)
	}
}

func trainArgs(dir, cfgFile string, steps int) []string {
	return []string{"train", "--store", dir, "--config", cfgFile, "--steps", itoa(steps), "--batch", "4",
		"--checkpoint-every", "2", "--lr", "3e-3", "--quiet"}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func trainState(t *testing.T, dir string) (*train.State, *train.History) {
	t.Helper()
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, h, err := train.LoadState(st)
	if err != nil || s == nil {
		t.Fatalf("no trainer state in %s: %v", dir, err)
	}
	return s, h
}

// Training killed with SIGKILL at random moments and resumed gives the
// same per-step losses and the same final weights and optimizer state
// (checkpoint sha256) as an uninterrupted run.
func TestTrainSurvivesKill9(t *testing.T) {
	const steps = 10
	cfgFile := filepath.Join(t.TempDir(), "model.yaml")
	if err := os.WriteFile(cfgFile, []byte(trainModel), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(t.TempDir(), "ref")
	packForTrain(t, ref)
	start := time.Now()
	if _, e, err := emopipe(t, trainArgs(ref, cfgFile, steps)...); err != nil {
		t.Fatalf("train: %v\n%s", err, e)
	}
	t.Logf("uninterrupted: %d steps in %s", steps, time.Since(start).Round(time.Millisecond))
	refState, refHist := trainState(t, ref)

	dir := filepath.Join(t.TempDir(), "killed")
	packForTrain(t, dir)
	logPath := filepath.Join(dir, "train", "metrics.jsonl")
	kills := 0
	for _, atStep := range []int{3, 6} {
		cmd := exec.Command(binary, trainArgs(dir, cfgFile, steps)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			b, _ := os.ReadFile(logPath)
			if strings.Count(string(b), `"step":`) >= atStep {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			kills++
		} else if err != nil {
			t.Fatalf("train run ended with %v before the kill", err)
		}
	}
	if kills == 0 {
		t.Fatal("no run was killed: the test did not test anything")
	}
	if _, e, err := emopipe(t, trainArgs(dir, cfgFile, steps)...); err != nil {
		t.Fatalf("resume: %v\n%s", err, e)
	}
	s, h := trainState(t, dir)
	if s.Step != steps || len(h.Loss) != steps {
		t.Fatalf("resumed run ended at step %d with %d losses", s.Step, len(h.Loss))
	}
	for i := range refHist.Loss {
		if math.Float64bits(refHist.Loss[i]) != math.Float64bits(h.Loss[i]) {
			t.Errorf("step %d: loss %v uninterrupted, %v after kill -9", i+1, refHist.Loss[i], h.Loss[i])
		}
	}
	if s.Checkpoint.SHA256 != refState.Checkpoint.SHA256 {
		t.Errorf("final checkpoint differs: %s vs %s", s.Checkpoint.SHA256[:12], refState.Checkpoint.SHA256[:12])
	}
	// The metrics log reads like the uninterrupted one (lost steps dropped).
	steps1, _, err := train.ReadMetricsLog(filepath.Join(dir, "train", "metrics.jsonl"))
	if err != nil || len(steps1) != steps {
		t.Errorf("metrics log: %d steps, %v", len(steps1), err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "checkpoints"))
	if len(ents) > 2 {
		t.Errorf("%d files in checkpoints/, want the last 2", len(ents))
	}
	t.Logf("%d kills; losses %.4f ... %.4f identical; final sha256 %s", kills, h.Loss[0], h.Loss[steps-1], s.Checkpoint.SHA256[:12])
}

// A different model on a store that holds a run, a missing PJRT plugin,
// and a bad flag each give one error line.
func TestTrainOneLineErrors(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "model.yaml")
	os.WriteFile(cfgFile, []byte(trainModel), 0o644)
	dir := filepath.Join(t.TempDir(), "s")
	packForTrain(t, dir)
	if _, e, err := emopipe(t, trainArgs(dir, cfgFile, 1)...); err != nil {
		t.Fatalf("train: %v\n%s", err, e)
	}
	cases := []struct {
		args []string
		want string
	}{
		{append(trainArgs(dir, cfgFile, 2), "--router", "standard"), "--force-new"},
		{append(trainArgs(dir, cfgFile, 2), "--batch", "8"), "batch: 4 in the store, 8 requested"},
		{append(trainArgs(filepath.Join(t.TempDir(), "x"), cfgFile, 2), "--force-new"), "no emopipe store"},
		{append(trainArgs(dir, cfgFile, 2), "--backend", "xla:/nonexistent/pjrt_plugin.so"), "/nonexistent/pjrt_plugin.so"},
		{append(trainArgs(dir, cfgFile, 2), "--backend", "xla:relative.so"), "absolute"},
		{append(trainArgs(dir, cfgFile, 2), "--backend", "xla:"+cfgFile), "failed to load"}, // a file, not a plugin
		{append(trainArgs(dir, cfgFile, 2), "--backend", "tpu"), "want go or xla"},
		{append(trainArgs(dir, cfgFile, 2), "--accum", "3"), "multiple of accum"},
	}
	for _, c := range cases {
		_, errOut, err := emopipe(t, c.args...)
		if err == nil {
			t.Errorf("%v: succeeded", c.args)
			continue
		}
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "emopipe: ") || !strings.Contains(lines[0], c.want) {
			t.Errorf("%v: want one error line mentioning %q, got:\n%s", c.args[len(c.args)-2:], c.want, errOut)
		}
	}
	// --force-new starts over with another model.
	if _, e, err := emopipe(t, append(trainArgs(dir, cfgFile, 1), "--router", "standard", "--force-new")...); err != nil {
		t.Fatalf("--force-new: %v\n%s", err, e)
	}
	if s, _ := trainState(t, dir); s.Run.Model.Router != "standard" || s.Step != 1 {
		t.Errorf("after --force-new: router %s step %d", s.Run.Model.Router, s.Step)
	}
}
