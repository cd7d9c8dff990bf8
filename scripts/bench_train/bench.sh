#!/usr/bin/env bash
# Training throughput: emopipe (Go, GoMLX go backend) vs the same model and
# optimizer in PyTorch (torch_train.py), on the same packed data, in the same
# run, CPU threads = 2. Writes docs/benchmarks-train.md.
#
#   scripts/bench_train/bench.sh            # tiny and small
#   REPS=5 STEPS=8 scripts/bench_train/bench.sh
#
# Each configuration runs REPS times per implementation, interleaved
# (Go, PyTorch, Go, ...), so background load hits both alike; the table
# reports the best and the median throughput. The first step of each run
# (graph compilation / allocator warm-up) is not timed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto} GOEXPERIMENT=simd
REPS=${REPS:-3}
STEPS=${STEPS:-5}
OUT=${OUT:-docs/benchmarks-train.md}
PY=${PY:-scripts/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

go build -o "$work/emopipe" ./cmd/emopipe
go build -o "$work/bench" ./scripts/bench_train

# name preset router store-seq-len batch steps
configs=(
  "tiny tiny emo 129 8 $STEPS"
  "tiny-standard tiny standard 129 8 $STEPS"
  "small small emo 257 4 $(( STEPS < 3 ? STEPS : 3 ))"
)
for c in "${configs[@]}"; do
  read -r name preset router seq batch steps <<<"$c"
  st="$work/store-$seq"
  if [ ! -d "$st" ]; then
    "$work/emopipe" pack testdata/corpus/sample.jsonl.gz --store "$st" --seq-len "$seq" --tokenizer dolma2-8k --quiet >/dev/null
    "$work/emopipe" export "$st" --shards "$work/npy-$seq" >/dev/null 2>&1
  fi
  for rep in $(seq "$REPS"); do
    echo "bench: $name rep $rep/$REPS" >&2
    "$work/bench" --store "$st" --preset "$preset" --router "$router" --batch "$batch" --steps "$steps" \
      | sed "s/^{/{\"name\":\"$name\",/" >>"$work/go.jsonl"
    tail -n1 "$work/go.jsonl" >"$work/last-go.json"
    "$PY" -W ignore scripts/bench_train/torch_train.py --shards "$work/npy-$seq" --go-json "$work/last-go.json" \
      --steps "$steps" --threads 2 | sed "s/^{/{\"name\":\"$name\",/" >>"$work/torch.jsonl"
  done
done

"$PY" - "$work/go.jsonl" "$work/torch.jsonl" "$OUT" <<'EOF'
import json, statistics, sys, platform, subprocess
go = [json.loads(l) for l in open(sys.argv[1])]
pt = [json.loads(l) for l in open(sys.argv[2])]
names = list(dict.fromkeys(r["name"] for r in go))
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = ["# Training throughput: emopipe vs PyTorch (CPU)", "",
         f"Machine: {cpu}, 2 cores; Go backend `go` (GOEXPERIMENT=simd), PyTorch threads = 2. "
         "Same model (params equal), same optimizer (AdamW with decay exemptions, clip 1.0, cosine schedule), "
         "same packed data (dolma2-8k, vocabulary 8194), same batch. "
         f"{len([r for r in go if r['name']==names[0]])} interleaved runs per row; "
         "tokens/s counts real tokens per optimizer step (data, forward, backward, clip, update) after one untimed warm-up step. "
         "MFU = tokens/s × FLOPs/token (model.Config.FLOPsPerToken) / peak, peak = 2 cores × 2 GHz × 16 fp32 FLOP/cycle = 64 GFLOP/s "
         "(AVX2 FMA, an assumption: the VM reports no clock). Background load on the machine varies; compare the best columns.", "",
         "| config | params | seq × batch | emopipe tok/s best (median) | PyTorch tok/s best (median) | ratio best (median) | emopipe MFU | PyTorch MFU | emopipe first step |",
         "|---|---|---|---|---|---|---|---|---|"]
for n in names:
    g = [r for r in go if r["name"] == n]
    p = [r for r in pt if r["name"] == n]
    gb, gm = max(r["tokens_per_s"] for r in g), statistics.median(r["tokens_per_s"] for r in g)
    pb, pm = max(r["tokens_per_s"] for r in p), statistics.median(r["tokens_per_s"] for r in p)
    gmfu = max(r.get("mfu", 0) for r in g)
    pmfu = max(r.get("mfu", 0) for r in p)
    m = g[0]
    if p[0]["params"] != m["params"]:
        print(f"warning: {n}: PyTorch model has {p[0]['params']} parameters, emopipe {m['params']}", file=sys.stderr)
    lines.append(f"| {n} ({m['model']['router']}, d {m['model']['d_model']}, {m['model']['n_layers']} layers, "
                 f"{m['model']['num_experts']} experts top-{m['model']['top_k']}) | {m['params']/1e6:.1f}M "
                 f"({m['active_params']/1e6:.1f}M active) | {m['seq_len']} × {m['batch']} | {gb:,.0f} ({gm:,.0f}) | {pb:,.0f} ({pm:,.0f}) | "
                 f"{gb/pb:.2f}× ({gm/pm:.2f}×) | {100*gmfu:.1f}% | {100*pmfu:.1f}% | {min(r['warmup_s'] for r in g):.1f} s |")
lines += ["", "Regenerate: `scripts/bench_train/bench.sh` (REPS, STEPS, OUT environment variables).", ""]
open(sys.argv[3], "w").write("\n".join(lines))
print("\n".join(lines))
EOF
