#!/usr/bin/env python3
"""Generate the bad-input fixtures in testdata/bad/ (deterministic).

    python3 scripts/corpus/make_bad.py [--out testdata/bad]

Every byte is derived from constants in this file (pseudo-random bytes come
from a SHA-256 counter stream), so re-running reproduces identical files.
Also writes testdata/bad/README.md describing each case and the expected
treatment by the packer.  Standard library only (the .zst files are built
by hand as zstd frames with raw blocks, which any zstd decoder accepts).
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "..", "testdata", "bad"))


def prng_bytes(seed, n):
    out, i = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(b"%s:%d" % (seed, i)).digest()
        i += 1
    return bytes(out[:n])


def gz(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def zstd_raw(data):
    """A valid single-segment zstd frame holding data in raw blocks."""
    n = len(data)
    if n < 256:
        fhd, fcs = 0x20, struct.pack("<B", n)            # FCS flag 0, 1 byte
    elif n < 65536 + 256:
        fhd, fcs = 0x60, struct.pack("<H", n - 256)      # FCS flag 1, 2 bytes
    else:
        fhd, fcs = 0xA0, struct.pack("<I", n)            # FCS flag 2, 4 bytes
    out = bytearray(b"\x28\xb5\x2f\xfd") + bytes([fhd]) + fcs
    maxblk = 128 * 1024
    chunks = [data[i:i + maxblk] for i in range(0, n, maxblk)] or [b""]
    for k, c in enumerate(chunks):
        last = 1 if k == len(chunks) - 1 else 0
        hdr = last | (0 << 1) | (len(c) << 3)            # block type 0 = raw
        out += struct.pack("<I", hdr)[:3] + c
    return bytes(out)


def rec(id_, text, domain):
    return json.dumps({"id": id_, "text": text, "domain": domain},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


GOOD_1 = ("In the beginning God created the heaven and the earth. And the earth was "
          "without form, and void; and darkness was upon the face of the deep.")
GOOD_2 = ("package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello, "
          "world\")\n}\n")
GOOD_3 = ("Permission is granted to copy and distribute verbatim copies of this "
          "document, but changing it is not allowed.  Ünïcödé survives: café, "
          "naïve, Ω, 日本語.")

# (line bytes, id shown in README, expected treatment)
BAD_JSONL = [
    (rec("good-1", GOOD_1, "scripture"), "good-1", "packed"),
    (b'{"id":"malformed","text":"this line is cut off, "domain":', "malformed",
     "rejected: malformed JSON"),
    (b'{"id":"no-text","domain":"go"}', "no-text", 'rejected: missing "text"'),
    (b'{"id":"empty-text","text":"","domain":"go"}', "empty-text", "rejected: empty text"),
    (b'{"id":"null-text","text":null,"domain":"man"}', "null-text",
     'rejected: "text" is null (not a string)'),
    (b'{"id":"number-text","text":42,"domain":"math"}', "number-text",
     'rejected: "text" is a number (not a string)'),
    (rec("good-2", GOOD_2, "go"), "good-2", "packed"),
    (b'{"id":"bad-utf8","text":"caf\xff\xfe au lait \xc3\x28 \xed\xa0\x80","domain":"legal"}',
     "bad-utf8",
     "rejected: invalid UTF-8 (raw bytes \\xff\\xfe, \\xc3\\x28 and an encoded surrogate "
     "\\xed\\xa0\\x80 inside the JSON string). NB: Go's encoding/json silently replaces "
     "invalid UTF-8 with U+FFFD, so the packer must check utf8.Valid on the raw line"),
    (rec("good-1", "A different text that reuses the id good-1; the first occurrence wins.",
         "legal"), "good-1 (again)", "rejected: duplicate id (first occurrence, line 1, is kept)"),
    (rec("i" * 4097, "A fine text whose id is one byte over the limit.", "legal"),
     "iii… (4097 bytes)",
     "rejected: id too long (over 4096 bytes; Badger refuses keys over 65,000, "
     "which failed the whole commit)"),
    (rec("good-3", GOOD_3, "legal"), "good-3",
     "packed (last line has NO trailing newline: must still be read)"),
]


def main():
    ap = argparse.ArgumentParser(description="generate testdata/bad fixtures")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    out = args.out
    os.makedirs(os.path.join(out, "nested"), exist_ok=True)
    files = {}

    # bad.jsonl: no newline after the last line on purpose.
    files["bad.jsonl"] = b"\n".join(l for l, _, _ in BAD_JSONL)

    # binary.txt: a well-formed ELF64 x86-64 executable header + program
    # header followed by pseudo-random bytes; 4 KiB, has NUL bytes.
    ehdr = (b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\x00" * 8 +
            struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, 1, 64, 0, 0))
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 4096, 4096, 0x1000)
    files["binary.txt"] = ehdr + phdr + prng_bytes(b"emopipe-binary", 4096 - len(ehdr) - len(phdr))

    # invalid_utf8.txt: mostly ASCII prose with Latin-1 and other invalid sequences.
    files["invalid_utf8.txt"] = (
        b"This file looks like text but is not valid UTF-8.\n"
        b"Latin-1 encoded: caf\xe9, na\xefve, \xa9 2024, se\xf1or.\n"
        b"Byte-order-mark-like garbage: \xff\xfe\n"
        b"Bad continuation: \xc3\x28; overlong slash: \xc0\xaf; surrogate: \xed\xa0\x80;\n"
        b"Truncated sequence at end of line: \xe2\x82\n"
        b"The rest is fine ASCII so that a sniffing heuristic cannot call it binary.\n")

    # good / truncated compressed JSONL
    lines = [rec("gz-%02d" % i, "Line %d of a gzip-compressed JSONL file. %s" % (i, GOOD_1),
                 "scripture") for i in range(1, 21)]
    good = b"\n".join(lines) + b"\n"
    files["good.jsonl.gz"] = gz(good)
    full = gz(b"\n".join(l.replace(b'"gz-', b'"tgz-') for l in lines) + b"\n")
    files["truncated.jsonl.gz"] = full[:len(full) * 6 // 10]   # no trailer, stream cut
    zlines = [l.replace(b'"gz-', b'"zst-').replace(b"gzip-", b"zstd-") for l in lines]
    files["good.jsonl.zst"] = zstd_raw(b"\n".join(zlines) + b"\n")
    tz = zstd_raw(b"\n".join(l.replace(b'"zst-', b'"tzst-') for l in zlines) + b"\n")
    files["truncated.jsonl.zst"] = tz[:len(tz) * 6 // 10]

    files["empty.txt"] = b""
    files["empty.jsonl"] = b""
    files["good.txt"] = (GOOD_3 + "\n\n" + GOOD_1 + "\n").encode("utf-8")
    files["nested/ok.txt"] = ("A valid UTF-8 text file one directory down, to check that "
                              "directories are walked recursively.\n").encode("utf-8")

    for name, data in sorted(files.items()):
        assert len(data) < 50 * 1024, name
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    # README
    rows = []
    for i, (_, id_, what) in enumerate(BAD_JSONL, 1):
        rows.append("| %d | `%s` | %s |" % (i, id_, what))
    readme = README.format(bad_rows="\n".join(rows),
                           sizes="\n".join("| `%s` | %d |" % (n, len(d)) for n, d in sorted(files.items())))
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme)
    for n, d in sorted(files.items()):
        print("%-22s %6d bytes" % (n, len(d)))
    return 0


README = """# Bad-input fixtures for the packer

Generated by `python3 scripts/corpus/make_bad.py` (deterministic: re-running
it rewrites identical bytes; do not edit these files by hand).  Inputs the
packer accepts: JSONL (one object per line with `id`, `text`, `domain`),
`.txt` files, directories (walked recursively), and `.gz` / `.zst`
compressed versions of those.  Large inputs (e.g. a 100 MB file) are not
committed: tests generate them on the fly.

## Files and expected treatment

| file | expected treatment |
|---|---|
| `bad.jsonl` | line by line, see the table below: **3 documents packed** (`good-1`, `good-2`, `good-3`), **8 lines rejected**, each with its reason; the file as a whole is not fatal |
| `binary.txt` | **rejected: binary** (4 KiB: a valid ELF64 x86-64 header + program header, then pseudo-random bytes; contains NUL bytes and is not UTF-8) |
| `invalid_utf8.txt` | **rejected: invalid UTF-8** (Latin-1 `\\xe9`, `\\xff\\xfe`, bad continuation `\\xc3\\x28`, overlong `\\xc0\\xaf`, surrogate `\\xed\\xa0\\x80`, truncated `\\xe2\\x82`; no NUL bytes, mostly ASCII, so a binary sniffer alone does not catch it) |
| `truncated.jsonl.gz` | **rejected: `decompress_error`** (gzip cut at 60% of its bytes: no trailer, decoder reports unexpected EOF). emopipe keeps whole records decoded before the break and records one reject for the rest of the file, so nothing is silently treated as complete; ids are `tgz-01`..`tgz-20` so tests can see which records were recovered (with this file: none, the break comes inside the first deflate block) |
| `truncated.jsonl.zst` | **rejected: truncated/corrupt compressed stream** (zstd frame cut at 60%: unexpected EOF); ids `tzst-01`..`tzst-20` |
| `empty.txt` | **rejected: `empty_text`** (an empty plain-text document; not a fatal error) |
| `empty.jsonl` | **no document** (zero lines; skipped with reason "empty", not a fatal error) |
| `good.txt` | **packed**: one document, valid UTF-8 with non-ASCII characters |
| `good.jsonl.gz` | **packed**: 20 documents `gz-01`..`gz-20` (domain `scripture`) |
| `good.jsonl.zst` | **packed**: 20 documents `zst-01`..`zst-20` (a zstd frame made of raw blocks, valid for any decoder) |
| `nested/ok.txt` | **packed**: one document (checks recursion into sub-directories) |

Packing the whole directory `testdata/bad/` should therefore yield
3 + 1 + 20 + 20 + 1 = **45 documents** plus this README (a text file like any other) and report the rejected inputs
above (8 JSONL lines, `binary.txt`, `invalid_utf8.txt`, the two truncated
streams) with their reasons; `empty.txt` is rejected as empty text and `empty.jsonl` holds no record. The exact expectations are asserted in pipelines/bad_input_test.go.

## `bad.jsonl`, line by line

The file has 11 lines and deliberately **no newline after the last one**.

| line | id | expected treatment |
|---|---|---|
{bad_rows}

## Sizes (bytes)

| file | bytes |
|---|---|
{sizes}
"""

if __name__ == "__main__":
    sys.exit(main())
