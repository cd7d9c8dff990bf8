// Command emopipe packs, ingests and trains EMO mixture-of-experts models
// from files and Kafka streams. Each subcommand lives in its own file and
// only turns flags into a call to package pipelines.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		// A second signal stops at once (the default action), as kill -9
		// would: a stop waits for work in flight (an ingester's commit, at
		// most its StopGrace), which the next start settles anyway.
		stop()
	}()
	// EMOPIPE_CPUPROFILE=file profiles any command (benchmark work).
	if path := os.Getenv("EMOPIPE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	// EMOPIPE_TRACE=file writes a runtime execution trace (scheduling:
	// which goroutine waited for a CPU, and for how long).
	if path := os.Getenv("EMOPIPE_TRACE"); path != "" {
		if f, err := os.Create(path); err == nil {
			trace.Start(f)
			defer trace.Stop()
		}
	}
	err := newRootCmd().ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "emopipe:", err)
		pprof.StopCPUProfile()
		trace.Stop()
		os.Exit(1)
	}
}
