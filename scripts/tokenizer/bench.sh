#!/usr/bin/env bash
# Tokenizer throughput: Go tokenize vs Hugging Face tokenizers vs tiktoken, 2 threads
# each, on >= 20 MB of real text; writes docs/benchmarks-tokenize.md. See bench.py.
#   scripts/tokenizer/bench.sh [--mb 24] [--runs 3]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/scripts/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
	python3 -m venv "$venv"
	"$venv/bin/pip" install -q tokenizers tiktoken
fi
export GOTOOLCHAIN=auto GOEXPERIMENT=simd
exec "$venv/bin/python" "$root/scripts/tokenizer/bench.py" "$@"
