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

# The main job on the bundled corpus with embedded defaults: pack the real
# multi-domain sample (and its held-out split), show the store, and train a
# tiny EMO model on the CPU for a minute; plots land in $(STORE)/train.
# (emopipe run, the streaming version of this, is the next milestone.)
demo: build
	rm -rf $(STORE) $(STORE)-heldout
	$(BIN) pack testdata/corpus/sample.jsonl.gz --store $(STORE) --seq-len 129 --tokenizer dolma2-8k
	$(BIN) pack testdata/corpus/heldout.jsonl.gz --store $(STORE)-heldout --seq-len 129 --tokenizer dolma2-8k --quiet
	$(BIN) inspect $(STORE) --seq 1 | cut -c1-300
	$(BIN) train --store $(STORE) --eval-store $(STORE)-heldout --preset tiny --steps 60 --eval-every 30
	@echo "loss curve and expert load: $(STORE)/train/loss.png $(STORE)/train/expert_load.png"

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
