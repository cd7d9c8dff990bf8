#!/usr/bin/env python3
"""Cut the small committed sample of the corpus built by build.sh.

    python3 scripts/corpus/sample.py OUTDIR [--out testdata/corpus]

Reads OUTDIR/manifest.json and OUTDIR/<domain>.jsonl and writes

    <out>/sample.jsonl.gz     ~90% of the picked documents (the bundled corpus)
    <out>/heldout.jsonl.gz    ~10% of the picked documents, per domain (eval)
    <out>/sample_manifest.json  counts, bytes, licences, sha256 of both files

Selection is deterministic (no randomness): per domain, documents whose text
is between --min-doc and a size cap are taken evenly spaced over the
domain's file order; the size cap is lowered step by step until the domain
fits in --domain-bytes.  The held-out split is, per domain, the
round(n * --heldout-frac) picked documents with the smallest
sha256(id) (hex).  Records keep the corpus schema
{id, text, domain, source, license}.  Standard library only.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "..", "testdata", "corpus"))
SIZE_CAPS = [16384, 12288, 10240, 8192, 7168, 6144, 5120, 4096, 3072, 2048]


def blen(s):
    return len(s.encode("utf-8"))


def pick_domain(docs, n, min_doc, budget):
    for cap in SIZE_CAPS:
        cands = [d for d in docs if min_doc <= blen(d["text"]) <= cap
                 and len(d["text"].strip()) >= min_doc // 2]
        if len(cands) <= n:
            chosen = cands
        else:
            idx = sorted({(i * len(cands)) // n for i in range(n)})
            chosen = [cands[i] for i in idx]
        if sum(blen(d["text"]) for d in chosen) <= budget:
            return chosen, cap
    return chosen, cap


def write_gz(path, records):
    buf = io.BytesIO()
    # mtime=0 and no file name in the header: byte-for-byte reproducible.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        for r in records:
            gz.write((json.dumps({"id": r["id"], "text": r["text"], "domain": r["domain"],
                                  "source": r["source"], "license": r["license"]},
                                 ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return data


def main():
    ap = argparse.ArgumentParser(description="cut the committed corpus sample")
    ap.add_argument("outdir", help="directory written by scripts/corpus/build.sh")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--docs-per-domain", type=int, default=100)
    ap.add_argument("--domain-bytes", type=int, default=520 * 1024)
    ap.add_argument("--min-doc", type=int, default=400)
    ap.add_argument("--heldout-frac", type=float, default=0.1)
    args = ap.parse_args()

    manifest = json.load(open(os.path.join(args.outdir, "manifest.json"), encoding="utf-8"))
    domains = sorted(manifest["domains"])
    os.makedirs(args.out, exist_ok=True)
    sample, heldout, summary = [], [], {}
    for dom in domains:
        path = os.path.join(args.outdir, manifest["domains"][dom]["file"])
        docs = [json.loads(l) for l in open(path, encoding="utf-8")]
        chosen, cap = pick_domain(docs, args.docs_per_domain, args.min_doc, args.domain_bytes)
        k = int(round(len(chosen) * args.heldout_frac))
        by_hash = sorted(chosen, key=lambda d: hashlib.sha256(d["id"].encode("utf-8")).hexdigest())
        held_ids = {d["id"] for d in by_hash[:k]}
        s = [d for d in chosen if d["id"] not in held_ids]
        h = [d for d in chosen if d["id"] in held_ids]
        sample.extend(s)
        heldout.extend(h)
        lic = {}
        for d in chosen:
            lic[d["license"]] = lic.get(d["license"], 0) + 1
        summary[dom] = {
            "sample_docs": len(s), "sample_bytes": sum(blen(d["text"]) for d in s),
            "heldout_docs": len(h), "heldout_bytes": sum(blen(d["text"]) for d in h),
            "doc_bytes_range": [args.min_doc, cap],
            "corpus_docs": len(docs),
            "licenses": dict(sorted(lic.items())),
            "sources": manifest["domains"][dom].get("sources", []),
        }
    sdata = write_gz(os.path.join(args.out, "sample.jsonl.gz"), sample)
    hdata = write_gz(os.path.join(args.out, "heldout.jsonl.gz"), heldout)
    out = {
        "generator": "scripts/corpus/sample.py",
        "parameters": {"docs_per_domain": args.docs_per_domain,
                       "domain_bytes": args.domain_bytes, "min_doc": args.min_doc,
                       "heldout_frac": args.heldout_frac,
                       "mb_per_domain": manifest.get("mb_per_domain")},
        "packages": manifest.get("packages", {}),
        "go_version": manifest["domains"].get("go", {}).get("go_version"),
        "files": {
            "sample.jsonl.gz": {"docs": len(sample),
                                "bytes": sum(blen(d["text"]) for d in sample),
                                "gz_bytes": len(sdata),
                                "sha256": hashlib.sha256(sdata).hexdigest()},
            "heldout.jsonl.gz": {"docs": len(heldout),
                                 "bytes": sum(blen(d["text"]) for d in heldout),
                                 "gz_bytes": len(hdata),
                                 "sha256": hashlib.sha256(hdata).hexdigest()},
        },
        "domains": summary,
    }
    with open(os.path.join(args.out, "sample_manifest.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("%-11s %6s %9s %6s %9s" % ("domain", "sample", "bytes", "held", "bytes"))
    for dom in domains:
        e = summary[dom]
        print("%-11s %6d %9d %6d %9d" % (dom, e["sample_docs"], e["sample_bytes"],
                                         e["heldout_docs"], e["heldout_bytes"]))
    for name, e in out["files"].items():
        print("%s: %d docs, %d text bytes, %d bytes gzipped" % (name, e["docs"], e["bytes"], e["gz_bytes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
