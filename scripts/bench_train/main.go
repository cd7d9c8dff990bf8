// Command bench_train measures emopipe's training throughput on a packed
// store: one warm-up step (graph compilation), then timed optimizer steps
// through train.Trainer (data, count passes, forward, backward, clipping,
// AdamW), printed as one JSON object. bench.sh runs it beside the PyTorch
// implementation of the same model (torch_train.py) and writes
// docs/benchmarks-train.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/train"
)

func main() {
	storeDir := flag.String("store", "", "packed store (seq_len = model seq + 1); copied, not modified")
	preset := flag.String("preset", "tiny", "model preset (tiny, small)")
	configFile := flag.String("config", "", "model config file (instead of --preset)")
	router := flag.String("router", model.RouterEMO, "emo or standard")
	batch := flag.Int("batch", 8, "sequences per step")
	steps := flag.Int("steps", 5, "timed steps (after one warm-up step)")
	peak := flag.Float64("peak-flops", 0, "peak FLOP/s for MFU (0: the train package's CPU estimate)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the timed steps")
	backend := flag.String("backend", "go", "compute backend (go, go:OPTIONS, xla:/abs/plugin.so)")
	flag.Parse()
	if err := run(*storeDir, *preset, *configFile, *router, *backend, *batch, *steps, *peak, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "bench_train:", err)
		os.Exit(1)
	}
}

func run(storeDir, preset, configFile, router, backend string, batch, steps int, peak float64, cpuprofile string) error {
	if storeDir == "" {
		return fmt.Errorf("--store is required")
	}
	tmp, err := os.MkdirTemp("", "bench-train")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	work := filepath.Join(tmp, "store")
	if err := os.CopyFS(work, os.DirFS(storeDir)); err != nil {
		return err
	}
	m, err := model.Preset(preset)
	if configFile != "" {
		m, err = model.LoadConfig(configFile)
	}
	if err != nil {
		return err
	}
	m.VocabSize = 0
	m.Router = router
	cfg := train.DefaultConfig()
	cfg.Store, cfg.Model, cfg.Batch, cfg.Steps = work, m, batch, steps+1
	cfg.PeakFLOPs, cfg.Backend = peak, backend
	cfg.CheckpointEvery, cfg.ReportDir = 0, filepath.Join(tmp, "report")
	ctx := context.Background()
	tr, err := train.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer tr.Close()
	start := time.Now()
	if _, err := tr.Step(ctx); err != nil {
		return err
	}
	warm := time.Since(start)
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var tokens int
	var secs float64
	var last train.StepMetrics
	for range steps {
		sm, err := tr.Step(ctx)
		if err != nil {
			return err
		}
		tokens += sm.Tokens
		secs += sm.Seconds
		last = sm
	}
	c := tr.Config()
	fpt := c.Model.FLOPsPerToken(c.Model.SeqLen)
	tps := float64(tokens) / secs
	out := map[string]any{
		"impl": "emopipe (Go, GoMLX go backend)", "preset": preset, "router": router,
		"params": c.Model.Params().Total, "active_params": c.Model.Params().Active,
		"vocab": c.Model.VocabSize, "seq_len": c.Model.SeqLen, "batch": batch, "steps": steps,
		"warmup_s": warm.Seconds(), "s_per_step": secs / float64(steps), "tokens_per_s": tps,
		"flops_per_token": fpt, "model_flops_per_s": tps * fpt, "last_loss": last.Loss,
		"threads": runtime.GOMAXPROCS(0),
	}
	if last.MFU > 0 { // MFU is proportional to throughput: rescale the last step's to the mean
		out["mfu"] = last.MFU * tps / last.TokensPerSec
		out["peak_flops"] = tps * fpt / out["mfu"].(float64)
	}
	out["model"] = c.Model
	out["optim"] = c.Optim
	return json.NewEncoder(os.Stdout).Encode(out)
}
