#!/usr/bin/env bash
# Runs every benchmark that docs/benchmarks.md reports, each measuring
# emopipe against its reference in the same run, and prints the tables.
# Needs: Python venv for HF tokenizers/tiktoken/torch (scripts/.venv, made by
# scripts/tokenizer/bench.sh), Java + Maven for Kafka, the real corpus
# (built into $CORPUS by scripts/corpus/build.sh if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
export GOTOOLCHAIN=auto GOEXPERIMENT=simd
CORPUS=${CORPUS:-/tmp/emopipe-corpus}
[ -f "$CORPUS/manifest.json" ] || scripts/corpus/build.sh "$CORPUS" >&2
go build -o bin/emopipe ./cmd/emopipe

echo "## Tokenizer"
scripts/tokenizer/bench.sh >&2
sed -n '3,$p' docs/benchmarks-tokenize.md

echo "## Ingest (real Apache Kafka broker)"
dir=$(mktemp -d)
scripts/kafka/kafka.sh install >&2
brokers=$(scripts/kafka/kafka.sh start --port 0 --dir "$dir" --partitions 4 | sed -n 's/^KAFKA_BROKERS=//p')
trap 'scripts/kafka/kafka.sh stop --dir "$dir" >/dev/null 2>&1; rm -rf "$dir"' EXIT
# The broker was just started: its JIT compiles for minutes, on the same
# cores. Warm-up runs of the data path let it settle first.
bin/emopipe bench ingest --brokers "$brokers" --rounds 6 --warmup 12 "$CORPUS"/*.jsonl
echo "### Sustained: 30 copies of the corpus (667 MB), runs of 10-15 s"
bin/emopipe bench ingest --brokers "$brokers" --copies 30 --rounds 2 --warmup 1 --lag-seconds 10 "$CORPUS"/*.jsonl
echo "### Short documents (about 300 bytes): per-record costs"
bin/emopipe bench ingest --brokers "$brokers" --rounds 3 --warmup 2 --lag-seconds 5 --split-bytes 300 "$CORPUS"/*.jsonl

if [ -x scripts/bench_train/bench.sh ]; then
  echo "## Trainer"
  scripts/bench_train/bench.sh
fi

echo "## emopipe run: input stall and freshness (embedded broker)"
scripts/bench_run/bench.sh
