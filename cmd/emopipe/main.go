// Command emopipe packs, ingests and trains EMO mixture-of-experts models
// from files and Kafka streams. Each subcommand lives in its own file and
// only turns flags into a call to package pipelines.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "emopipe:", err)
		os.Exit(1)
	}
}
