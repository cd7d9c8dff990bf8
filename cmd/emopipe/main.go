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
	err := newRootCmd().ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "emopipe:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}
