# Every entry point sets the toolchain: GoMLX v0.28 needs Go 1.27 (fetched
# by GOTOOLCHAIN=auto; these machines default to local) and the SIMD
# experiment makes the pure-Go backend ~7x faster.
export GOTOOLCHAIN := auto
export GOEXPERIMENT := simd

BIN := bin/emopipe
STORE ?= /tmp/emopipe-demo

.PHONY: build demo test test-unit bench kafka-install clean

build:
	go build -o $(BIN) ./cmd/emopipe

# The main job on the bundled corpus with embedded defaults.
demo: build
	rm -rf $(STORE)
	$(BIN) pack testdata/corpus/sample.jsonl.gz --store $(STORE) --seq-len 1024
	$(BIN) inspect $(STORE) --seq 1 | cut -c1-400

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
