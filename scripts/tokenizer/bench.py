#!/usr/bin/env python3
"""Tokenizer throughput: emopipe's Go tokenize vs Hugging Face tokenizers vs tiktoken.

Run through scripts/tokenizer/bench.sh. Builds >= 20 MB of real text (Go sources from
GOROOT, the Python standard library, man pages, /usr/share/common-licenses, and, when
apt-get can fetch them, the Jargon File and PARI/GP's TeX manual) in a temporary
directory, then for the bundled gpt2 and dolma2 (cl100k) tokenizers measures, on the
same documents and with 2 threads each:

  ours      Go EncodeBatch, GOMAXPROCS=2 (tokenize.TestCorpusThroughput)
  HF        tokenizers encode_batch(add_special_tokens=False), RAYON_NUM_THREADS=2,
            on the tokenizer.json that the Go tokenizer exports
  tiktoken  encode_ordinary_batch(num_threads=2) on the same ranks, built offline

Each tool gets a warm-up pass; then --runs rounds each time every tool once, in turn
(the Go side is a fresh test-binary process per round that warms up before its timed
pass), so that load from other processes on a shared machine hits all tools alike. The
table reports medians of wall time (throughput) and of process CPU time. All three must
produce identical ids on every document; mismatches are reported. Writes a markdown table
to stdout and to docs/benchmarks-tokenize.md.
"""
import argparse
import array
import base64
import datetime
import gzip
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402  (shared helpers: tiktoken encodings, go env)

import tiktoken  # noqa: E402
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def read_text(path):
    try:
        data = Path(path).read_bytes()
        if str(path).endswith(".gz"):
            data = gzip.decompress(data)
        return data.decode("utf-8")
    except (UnicodeDecodeError, OSError, EOFError):
        return None


def collect(patterns, budget, rng):
    import glob
    files = sorted({os.path.realpath(f) for p in patterns for f in glob.glob(p, recursive=True) if os.path.isfile(f)})
    rng.shuffle(files)
    out, n = [], 0
    for f in files:
        if n >= budget:
            break
        t = read_text(f)
        if not t:
            continue
        out.append(t)
        n += len(t.encode("utf-8"))
    return out, n


def build_corpus(tmp, mb):
    rng = random.Random(7)
    goroot = mg.go("env", "GOROOT")
    pylib = sorted(Path("/usr/lib").glob("python3.*"))[-1]
    share = mb * 1_000_000
    domains = []
    extra = Path(tmp) / "debs"
    extra.mkdir()
    r = subprocess.run(["apt-get", "download", "jargon-text", "pari-doc"], cwd=extra, capture_output=True)
    if r.returncode == 0:
        for deb in extra.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(extra / "x")], check=True)
    plan = [
        ("Go (GOROOT/src)", [f"{goroot}/src/**/*.go"], 0.35),
        ("Python stdlib", [f"{pylib}/**/*.py"], 0.30),
        ("man pages", ["/usr/share/man/man[1-8]/*.gz", "/usr/share/man/*/man[1-8]/*.gz"], 0.20),
        ("common-licenses", ["/usr/share/common-licenses/*"], 0.02),
        ("Jargon File", [str(extra / "x/usr/share/doc/jargon-text/jargon.txt.gz")], 0.08),
        ("PARI/GP TeX", [str(extra / "x/usr/share/pari/doc/*.tex")], 0.05),
    ]
    docs = []
    for name, pats, frac in plan:
        got, n = collect(pats, frac * share, rng)
        domains.append((name, len(got), n))
        docs += got
    # Top up with more Go code if a source was unavailable.
    total = sum(len(d.encode("utf-8")) for d in docs)
    if total < share:
        got, n = collect([f"{goroot}/src/**/*_test.go"], share - total, random.Random(8))
        domains.append(("Go tests (top-up)", len(got), n))
        docs += got
    rng.shuffle(docs)
    with open(Path(tmp) / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    return docs, domains


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    """Run fn once; return its result, wall seconds and process CPU seconds."""
    c, t = cpu_seconds(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, cpu_seconds() - c


def read_go_ids(path):
    data = array.array("I")
    data.frombytes(Path(path).read_bytes())
    if sys.byteorder != "little":
        data.byteswap()
    out, i = [], 0
    while i < len(data):
        n = data[i]
        out.append(data[i + 1:i + 1 + n].tolist())
        i += 1 + n
    return out


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=24, help="corpus size in MB (default 24)")
    ap.add_argument("--runs", type=int, default=3, help="timed passes per tool (median reported)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks-tokenize.md"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        docs, domains = build_corpus(tmp, args.mb)
        size = sum(len(d.encode("utf-8")) for d in docs)
        print(f"corpus: {len(docs)} documents, {size / 1e6:.1f} MB", file=sys.stderr)
        env = dict(mg.GO_ENV, GOMAXPROCS="2", EMOPIPE_TOKENIZE_BENCH=tmp, EMOPIPE_TOKENIZE_EXPORT=tmp,
                   EMOPIPE_TOKENIZE_BENCH_RUNS="1")
        load_before = loadavg()
        gotest = str(Path(tmp) / "tokenize.test")
        subprocess.run(["go", "test", "-c", "-o", gotest, "./tokenize/"], cwd=ROOT, env=mg.GO_ENV, check=True)
        subprocess.run([gotest, "-test.run", "^TestExportBundled$"], cwd=ROOT / "tokenize", env=env, check=True,
                       stdout=subprocess.DEVNULL)

        os.environ["RAYON_NUM_THREADS"] = "2"
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        specials = {"gpt2": {"<|endoftext|>": 50256}, "dolma2": {"<|endoftext|>": 100257, "<|pad|>": 100277}}
        kinds = {"gpt2": "gpt2", "dolma2": "cl100k"}
        hf = {n: Tokenizer.from_file(str(Path(tmp) / f"{n}.json")) for n in kinds}
        tt = {n: mg.tiktoken_encoding(kinds[n], specials[n]) for n in kinds}
        runs = {(n, impl): [] for n in kinds for impl in ("go", "hf", "tt")}  # (wall, cpu) per round
        ids = {}
        for n in kinds:  # warm-up passes; keep their ids for the comparison
            ids[(n, "hf")] = [e.ids for e in hf[n].encode_batch(docs, add_special_tokens=False)]
            ids[(n, "tt")] = tt[n].encode_ordinary_batch(docs, num_threads=2)
        go_load = {}
        for rnd in range(args.runs):
            subprocess.run([gotest, "-test.run", "^TestCorpusThroughput$", "-test.v"], cwd=ROOT / "tokenize",
                           env=env, check=True, stdout=sys.stderr)
            for r in json.loads((Path(tmp) / "go_results.json").read_text()):
                if r["tokenizer"] not in kinds:  # bundled without a reference to compare (dolma2-8k)
                    continue
                runs[(r["tokenizer"], "go")].append((r["seconds"][0], r["cpu_seconds"][0]))
                go_load[r["tokenizer"]] = r["load_seconds"]
            for n in kinds:
                _, w, c = timed(lambda: hf[n].encode_batch(docs, add_special_tokens=False))
                runs[(n, "hf")].append((w, c))
                _, w, c = timed(lambda: tt[n].encode_ordinary_batch(docs, num_threads=2))
                runs[(n, "tt")].append((w, c))
            print(f"round {rnd + 1}: " + ", ".join(f"{k[0]}/{k[1]} {v[-1][0]:.2f}s" for k, v in runs.items()),
                  file=sys.stderr)
        load_after = loadavg()

        rows, checks = [], []
        for n in kinds:
            go_ids = read_go_ids(Path(tmp) / f"go_{n}.ids")
            tokens = sum(len(x) for x in go_ids)
            bad_hf = [i for i in range(len(docs)) if go_ids[i] != ids[(n, "hf")][i]]
            bad_tt = [i for i in range(len(docs)) if go_ids[i] != ids[(n, "tt")][i]]
            checks.append((n, len(docs), bad_hf, bad_tt))
            med = {impl: (statistics.median(w for w, _ in runs[(n, impl)]),
                          statistics.median(c for _, c in runs[(n, impl)])) for impl in ("go", "hf", "tt")}
            for impl, label in (("go", "emopipe Go EncodeBatch"), ("hf", "HF tokenizers encode_batch"),
                                ("tt", "tiktoken encode_ordinary_batch")):
                w, c = med[impl]
                ours = impl == "go"
                rows.append((n, label, size / 1e6 / w, tokens / w, size / 1e6 / c if c > 0 else float("nan"),
                             med["hf"][0] / w if ours else None, med["tt"][0] / w if ours else None))
        del hf, ids

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        "# Tokenizer throughput (tokenize package)",
        "",
        f"Measured {datetime.date.today().isoformat()} by `scripts/tokenizer/bench.sh` on {cpu}, "
        f"{os.cpu_count()} CPUs visible, 2 threads per tool (Go GOMAXPROCS=2, HF RAYON_NUM_THREADS=2, "
        f"tiktoken num_threads=2). Load average before/after: {load_before} / {load_after} "
        "(the machine is shared; compare rows of the same run only).",
        f"Versions: {mg.go('version')}, tokenizers {tokenizers.__version__}, "
        f"tiktoken {tiktoken.__version__}, Python {platform.python_version()}.",
        "",
        f"Corpus: {len(docs)} documents, {size / 1e6:.1f} MB: "
        + ", ".join(f"{n} ({k} files, {b / 1e6:.1f} MB)" for n, k, b in domains) + ".",
        f"Each tool: a warm-up pass, then {args.runs} interleaved rounds over the whole corpus; medians. "
        "MB/s and tokens/s are wall-clock throughput with 2 threads; MB/CPU-s divides by the process's "
        "user+system time instead (less sensitive to other load). Ratios are of wall-clock throughput. "
        "Go bundled-tokenizer build time (merges derived from ranks): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in go_load.items()) + ".",
        "",
        "| tokenizer | implementation | MB/s | tokens/s | MB/CPU-s | ours/HF | ours/tiktoken |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, impl, mbs, tps, mbc, rhf, rtt in rows:
        lines.append(f"| {name} | {impl} | {mbs:.2f} | {tps / 1e6:.2f} M | {mbc:.2f} | "
                     f"{'' if rhf is None else f'{rhf:.1f}×'} | {'' if rtt is None else f'{rtt:.1f}×'} |")
    lines += ["", "Identical ids (Go vs each reference, per document):", ""]
    for name, n, bad_hf, bad_tt in checks:
        lines.append(f"- {name}: HF {n - len(bad_hf)}/{n}, tiktoken {n - len(bad_tt)}/{n}"
                     + (f" (HF mismatches: {bad_hf[:10]})" if bad_hf else "")
                     + (f" (tiktoken mismatches: {bad_tt[:10]})" if bad_tt else ""))
    md = "\n".join(lines) + "\n"
    print(md)
    Path(args.out).write_text(md, encoding="utf-8")
    return 1 if any(b or c for _, _, b, c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
