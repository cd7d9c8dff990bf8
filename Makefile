# Every entry point sets the toolchain: GoMLX v0.28 needs Go 1.27 (fetched
# by GOTOOLCHAIN=auto; these machines default to local) and the SIMD
# experiment makes the pure-Go backend ~7x faster.
export GOTOOLCHAIN := auto
export GOEXPERIMENT := simd

BIN := bin/emopipe
STORE ?= /tmp/emopipe-run

.PHONY: build run run-fresh test test-unit bench kafka-install clean

build:
	go build -o $(BIN) ./cmd/emopipe

# The main job with embedded defaults: `emopipe run` starts an in-process
# Kafka-protocol broker, streams the bundled real multi-domain corpus into
# it, ingests it exactly once into the store and trains a tiny EMO model on
# the CPU as the sequences land (150 steps, a few minutes on 2 cores). The
# report (loss, expert load, expert x domain plots, summary) lands in
# $(STORE)/report. Running it again resumes (and, once done, only redraws).
run: build
	$(BIN) run --store $(STORE)

# Start over.
run-fresh: build
	rm -rf $(STORE)
	$(BIN) run --store $(STORE)

# All tests: unit, integration against a real Apache Kafka broker (started
# by scripts/kafka/kafka.sh), end-to-end CLI tests.
test:
	scripts/kafka/kafka.sh install >/dev/null
	EMOPIPE_KAFKA=1 go test -count=1 -timeout 60m ./...

test-unit:
	go test -count=1 ./...

bench:
	scripts/bench/all.sh

clean:
	rm -rf bin
