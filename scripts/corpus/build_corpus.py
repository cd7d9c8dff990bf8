#!/usr/bin/env python3
"""Assemble emopipe's labelled multi-domain corpus of real text.

Called by scripts/corpus/build.sh, which downloads and unpacks the Debian
packages (apt-get download + dpkg-deb -x into a temporary directory) and
passes their locations here.  Standard library only.

Output: OUTDIR/<domain>.jsonl (one JSON object per line with the keys id,
text, domain, source, license) and OUTDIR/manifest.json.

Everything is deterministic: inputs are walked in sorted path order, the
per-domain size budget is met with a deterministic "spread" selection over
that order (no randomness), and no timestamps are written.  Same package
versions in -> same bytes out.
"""

import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys

MIB = 1024 * 1024
MAX_DOC = 64 * 1024          # hard upper bound for one document (bytes)
MIN_DOC = 64                 # drop sections shorter than this (bytes)

DOMAINS = ["go", "python", "man", "scripture", "legal", "math", "dictionary"]
REQUIRED_DOMAINS_OK = 5

LICENSES = {
    "go": "BSD-3-Clause",
    "python": "PSF-2.0",
    "man": "per-page (SPDX id from the page header)",
    "scripture": "public-domain",
    "legal": "verbatim-copying",
    "math": "GPL-2.0-or-later",
    "dictionary": "GPL-2.0-or-later (GCIDE) / public-domain (Jargon File)",
}

_SURROGATE_RE = re.compile("[\udc80-\udcff]")
_CTRL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def warn(msg):
    print("WARNING: " + msg, file=sys.stderr, flush=True)


def info(msg):
    print(msg, file=sys.stderr, flush=True)


def blen(s):
    return len(s.encode("utf-8"))


def decode_text(data):
    """Return str if data is plausible UTF-8 text, else None (binary/invalid)."""
    if b"\x00" in data:
        return None
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if s and len(_CTRL_RE.findall(s)) > max(8, len(s) // 200):
        return None
    return s


# --------------------------------------------------------------------------
# Splitting into natural sections


def _cut(text, regex):
    """Cut text at the END of every match of regex (so pieces concatenate
    back to text)."""
    pieces, last = [], 0
    for m in regex.finditer(text):
        if m.end() > last and m.end() < len(text):
            pieces.append(text[last:m.end()])
            last = m.end()
    pieces.append(text[last:])
    return [p for p in pieces if p]


_PARA_RE = re.compile(r"\n[ \t]*\n")
_LINE_RE = re.compile(r"\n")


def _hard_split(piece, hard):
    """Split a piece larger than hard bytes at blank lines, then lines,
    then characters."""
    if blen(piece) <= hard:
        return [piece]
    for rx in (_PARA_RE, _LINE_RE):
        sub = _cut(piece, rx)
        if len(sub) > 1:
            out = []
            for s in _pack(sub, hard):
                out.extend(_hard_split(s, hard) if blen(s) > hard else [s])
            return out
    # no line breaks at all: cut on characters
    out, cur, n = [], [], 0
    for ch in piece:
        b = len(ch.encode("utf-8"))
        if n + b > hard:
            out.append("".join(cur))
            cur, n = [], 0
        cur.append(ch)
        n += b
    if cur:
        out.append("".join(cur))
    return out


def _pack(pieces, target):
    """Greedily merge consecutive pieces while the result stays <= target."""
    out, cur, n = [], [], 0
    for p in pieces:
        b = blen(p)
        if cur and n + b > target:
            out.append("".join(cur))
            cur, n = [], 0
        cur.append(p)
        n += b
    if cur:
        out.append("".join(cur))
    return out


def split_sections(text, boundary, target, hard=MAX_DOC):
    """Split text at natural boundaries (regex; cut after each match) into
    sections, merge consecutive sections up to `target` bytes, never exceed
    `hard` bytes.  The returned pieces concatenate back to text."""
    if blen(text) <= target:
        return [text]
    pieces = _cut(text, boundary) if boundary is not None else [text]
    fine = []
    for p in pieces:
        fine.extend(_hard_split(p, hard))
    return _pack(fine, target)


# Boundaries (cut after the match): a blank line followed by a top-level,
# non-indented line that does not close a block.
CODE_BOUNDARY = re.compile(r"\n[ \t]*\n(?=[^\s})\]])")
# Rendered man page: before a section heading (upper-case line at column 0).
MAN_BOUNDARY = re.compile(r"\n(?=[A-Z][A-Z0-9 ,/-]*\n)")
# TeX: before a sectioning command.
TEX_BOUNDARY = re.compile(
    r"\n(?=\\(?:chapter|section|subsection|subsubsection|subsec|subsubsec|"
    r"subsubsubsec|appendix|newpage|bigskip)\b)")
# Plain prose / licences: paragraphs.
PARA_BOUNDARY = re.compile(r"\n[ \t]*\n")
# GCIDE (dictd text): an entry starts after a blank line at column 0.
GCIDE_BOUNDARY = re.compile(r"\n\n(?=\S)")
# Jargon File lexicon entries look like "   :term: n."
JARGON_BOUNDARY = re.compile(r"\n\n(?=   :[^:\n]{1,80}:)|\n\n(?=\S)")


# --------------------------------------------------------------------------
# Units and deterministic selection


class Unit:
    """A selectable unit (usually one file); docs are its sections."""

    def __init__(self, docs):
        self.docs = docs  # list of dicts
        self.size = sum(blen(d["text"]) for d in docs)


def make_docs(base_id, text, domain, source, license_, boundary, target):
    parts = split_sections(text, boundary, target)
    docs = []
    if len(parts) == 1:
        if blen(parts[0].strip()) >= MIN_DOC:
            docs.append(dict(id=base_id, text=parts[0], domain=domain,
                             source=source, license=license_))
        return docs
    for i, p in enumerate(parts, 1):
        if blen(p.strip()) < MIN_DOC:
            continue
        docs.append(dict(id="%s#%d" % (base_id, i), text=p, domain=domain,
                         source=source, license=license_))
    return docs


MAX_UNIT = 256 * 1024  # a single file contributes at most its first ~256 KB


def cap_unit(u):
    """Keep only the leading sections of a very large unit (e.g. a 1.5 MB
    copyright file) so that one file cannot dominate a domain."""
    if u.size <= MAX_UNIT:
        return u
    docs, n = [], 0
    for d in u.docs:
        b = blen(d["text"])
        if docs and n + b > MAX_UNIT:
            break
        docs.append(d)
        n += b
    return Unit(docs)


def _stride_pick(units, f):
    """Units i with floor((i+1)*f) > floor(i*f): an even spread, by count,
    of about a fraction f of the (sorted) units."""
    return [u for i, u in enumerate(units)
            if math.floor((i + 1) * f) > math.floor(i * f)]


def spread_select(units, budget):
    """Deterministically pick units evenly spread over their sorted order
    (uniform by count, so not biased towards small or large files) with the
    smallest stride fraction whose total reaches `budget` bytes (so the
    result is budget plus at most a little)."""
    total = sum(u.size for u in units)
    if total <= budget:
        return list(units), total
    units = [cap_unit(u) for u in units]
    lo, hi = 0.0, 1.0
    best = list(units)
    for _ in range(48):
        mid = (lo + hi) / 2
        pick = _stride_pick(units, mid)
        if sum(u.size for u in pick) >= budget:
            hi, best = mid, pick
        else:
            lo = mid
    return best, total


# --------------------------------------------------------------------------
# Domain collectors.  Each returns (units, meta) where meta holds the
# sources / notes that go into the manifest.


def walk_sorted(root, suffix, skip_dir=None):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if not (skip_dir and skip_dir(d)))
        for f in sorted(filenames):
            if f.endswith(suffix):
                p = os.path.join(dirpath, f)
                if os.path.isfile(p) and not os.path.islink(p):
                    out.append(p)
    return sorted(out)


_GENERATED_RE = re.compile(r"^// Code generated .* DO NOT EDIT\.$", re.M)


def collect_go(args, stats):
    goroot = args.goroot
    if not goroot or not os.path.isdir(os.path.join(goroot, "src")):
        warn("go: no GOROOT with a src/ directory found; skipping domain")
        return None
    version = "unknown"
    vf = os.path.join(goroot, "VERSION")
    if os.path.isfile(vf):
        version = open(vf, encoding="utf-8", errors="replace").readline().strip()
    src = os.path.join(goroot, "src")
    files = walk_sorted(src, ".go",
                        skip_dir=lambda d: d == "testdata" or d.startswith((".", "_")))
    units = []
    for p in files:
        data = open(p, "rb").read()
        text = decode_text(data)
        if text is None:
            stats["skipped_not_text"] += 1
            continue
        if _GENERATED_RE.search(text[:4096]):
            stats["skipped_generated"] += 1
            continue
        rel = os.path.relpath(p, goroot)
        docs = make_docs("go:" + rel, text, "go", p, LICENSES["go"],
                         CODE_BOUNDARY, MAX_DOC)
        if docs:
            units.append(Unit(docs))
    return units, {"sources": ["%s (%s), *.go excluding testdata/ and "
                               "'Code generated ... DO NOT EDIT' files" % (src, version)],
                   "go_version": version}


def collect_python(args, stats):
    roots = []
    for d in sorted(os.listdir("/usr/lib")):
        if re.fullmatch(r"python3\.\d+", d) and os.path.isdir(os.path.join("/usr/lib", d)):
            roots.append(os.path.join("/usr/lib", d))
    if not roots:
        warn("python: no /usr/lib/python3.N found; skipping domain")
        return None
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages",
            "__pycache__"}
    units = []
    for root in roots:
        files = walk_sorted(root, ".py", skip_dir=lambda d: d in skip or d.startswith("."))
        for p in files:
            text = decode_text(open(p, "rb").read())
            if text is None:
                stats["skipped_not_text"] += 1
                continue
            rel = os.path.relpath(p, "/usr/lib")
            docs = make_docs("python:" + rel, text, "python", p,
                             LICENSES["python"], CODE_BOUNDARY, MAX_DOC)
            if docs:
                units.append(Unit(docs))
    return units, {"sources": ["%s/**/*.py excluding test/, tests/, idle_test/, "
                               "site-packages/, dist-packages/" % r for r in roots]}


# ---- man pages


_SPDX_RE = re.compile(r"SPDX-License-Identifier:\s*(\S.*?)\s*$", re.M)
_LIC_START_RE = re.compile(r"%%%LICENSE_START\(([^)]*)\)")


def man_header(src):
    """Leading roff comment block (the page's copyright/licence header),
    returned as plain text, and the licence id found in it."""
    lines = []
    for line in src.split("\n"):
        if line.startswith(("'\\\" t", "'\\\" e", "'\\\" p", "'\\\" r")) and not lines:
            continue  # preprocessor hint line
        m = re.match(r"^[.']\\\"( ?)(.*)$", line)
        if m:
            lines.append(m.group(2).rstrip())
            continue
        if line.strip() in ("", "."):
            lines.append("")
            continue
        break
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    header = "\n".join(lines)
    lic = None
    m = _SPDX_RE.search(header)
    if m:
        lic = m.group(1).strip()
    else:
        m = _LIC_START_RE.search(header)
        if m:
            lic = m.group(1).strip()
    return header, lic


def _first_request_is_so(src):
    for line in src.split("\n"):
        s = line.strip()
        if not s or s.startswith((".\\\"", "'\\\"")) or s == ".":
            continue
        return s.startswith(".so ")
    return False


_OVERSTRIKE_RE = re.compile(".\x08")


def render_man(path, method):
    env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8", MANWIDTH="80",
               MAN_DISABLE_SECCOMP="1", MANPAGER="cat", PAGER="cat",
               MAN_KEEP_FORMATTING="", GROFF_NO_SGR="1")
    env.pop("MANOPT", None)
    env.pop("MANROFFOPT", None)
    if method == "man":
        p = subprocess.run(["man", "-l", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    else:  # groff
        import gzip
        src = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
        p = subprocess.run(["groff", "-k", "-t", "-e", "-Tutf8", "-man",
                            "-rLL=80n", "-rLT=80n", "-P-c"],
                           input=src, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, env=env)
    out = p.stdout
    if p.returncode != 0 or not out.strip():
        return None
    if shutil.which("col"):
        c = subprocess.run(["col", "-bx"], input=out, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, env=env)
        if c.returncode == 0:
            out = c.stdout
    text = out.decode("utf-8", errors="replace")
    text = _OVERSTRIKE_RE.sub("", text)
    text = "\n".join(l.rstrip() for l in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"
    return text


def collect_man(args, stats):
    import gzip
    pkgs = [p for p in ("manpages", "manpages-dev") if p in args.debs]
    if not pkgs:
        warn("man: packages manpages/manpages-dev unavailable; skipping domain")
        return None
    if shutil.which("man"):
        method = "man"
    elif shutil.which("groff"):
        method = "groff"
    else:
        method = "roff"
        warn("man: neither man nor groff found; keeping roff source")
    pages = []
    for pkg in pkgs:
        root = os.path.join(args.debs[pkg]["root"], "usr/share/man")
        if not os.path.isdir(root):
            continue
        for p in walk_sorted(root, ".gz"):
            rel = os.path.relpath(p, root)[:-3]
            if not re.match(r"man\d/", rel):
                continue  # translated pages, if any
            pages.append((rel, pkg, p))
    pages.sort()
    work = []
    for rel, pkg, p in pages:
        raw = gzip.open(p).read()
        src = decode_text(raw)
        if src is None:
            stats["skipped_not_text"] += 1
            continue
        if _first_request_is_so(src):
            stats["skipped_so_link"] += 1
            continue
        work.append((rel, pkg, p, src))

    def one(item):
        rel, pkg, p, src = item
        header, lic = man_header(src)
        if method == "roff":
            body = src
        else:
            body = render_man(p, method)
            if body is None:
                return None
        text = (header + "\n\n" + body) if (header and method != "roff") else body
        return rel, pkg, p, text, lic or "see-header"

    workers = max(1, min(8, (os.cpu_count() or 1) * 2))
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(one, work))
    units = []
    for item, r in zip(work, results):
        if r is None:
            stats["skipped_render_failed"] += 1
            continue
        rel, pkg, p, text, lic = r
        ver = args.debs[pkg]["version"]
        docs = make_docs("man:" + rel, text, "man",
                         "%s=%s:/%s" % (pkg, ver, os.path.relpath(p, args.debs[pkg]["root"])),
                         lic, MAN_BOUNDARY, MAX_DOC)
        if docs:
            units.append(Unit(docs))
    render = {
        "man": "man -l PAGE (man-db, MANWIDTH=80, LC_ALL=C.UTF-8) | col -bx; "
               "leading roff comment block (licence header) prepended as plain text",
        "groff": "groff -k -t -e -Tutf8 -man -rLL=80n | col -bx; leading roff "
                 "comment block (licence header) prepended as plain text",
        "roff": "roff source kept verbatim (no renderer available)",
    }[method]
    return units, {"sources": ["%s=%s" % (p, args.debs[p]["version"]) for p in pkgs],
                   "render": render}


# ---- scripture

KJV_BOOKS = [
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua",
    "Judges", "Ruth", "1 Samuel", "2 Samuel", "1 Kings", "2 Kings",
    "1 Chronicles", "2 Chronicles", "Ezra", "Nehemiah", "Esther", "Job",
    "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon", "Isaiah",
    "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos",
    "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai",
    "Zechariah", "Malachi",
    "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians",
    "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
    "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus",
    "Philemon", "Hebrews", "James", "1 Peter", "2 Peter", "1 John", "2 John",
    "3 John", "Jude", "Revelation",
]

_VERSE_RE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def collect_scripture(args, stats):
    if "bible-kjv-text" not in args.debs:
        warn("scripture: bible-kjv-text unavailable; skipping domain")
        return None
    data_dir = os.path.join(args.debs["bible-kjv-text"]["root"], "usr/lib")
    bible = None
    if "bible-kjv" in args.debs:
        cand = os.path.join(args.debs["bible-kjv"]["root"], "usr/bin/bible")
        if os.access(cand, os.X_OK):
            bible = cand
    if bible is None and shutil.which("bible"):
        bible = shutil.which("bible")
    if bible is None:
        warn("scripture: the `bible` decoder (package bible-kjv) is unavailable; skipping")
        return None
    # -f turns pretty-printing off: one verse per line, "Ge1:1 In the ...".
    p = subprocess.run([bible, "-f", "-p", data_dir, "Gen1:1-Rev22:21"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, cwd=data_dir)
    text = p.stdout.decode("utf-8", errors="replace") if p.returncode == 0 else ""
    # book -> chapter -> [lines]
    books, order = {}, []
    for line in text.split("\n"):
        m = _VERSE_RE.match(line.rstrip())
        if not m:
            continue
        ab, ch, vs, body = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        if ab not in books:
            books[ab] = {}
            order.append(ab)
        books[ab].setdefault(ch, []).append("%d:%d %s" % (ch, vs, body))
    if len(order) != len(KJV_BOOKS):
        warn("scripture: decoder output had %d books (want %d); skipping "
             "(bible rc=%d: %s)" % (len(order), len(KJV_BOOKS), p.returncode,
                                     p.stderr.decode(errors="replace")[:200]))
        return None
    src_txt = "bible-kjv-text=%s (decoded with bible-kjv=%s)" % (
        args.debs["bible-kjv-text"]["version"],
        args.debs.get("bible-kjv", {}).get("version", "system"))
    units = []
    for bi, ab in enumerate(order):
        name = KJV_BOOKS[bi]
        chapters = books[ab]
        # Greedy chapter groups of <= ~8 KB (a whole chapter is never cut,
        # except Psalm 119 which is split by the generic splitter).
        groups, cur, n = [], [], 0
        for ch in sorted(chapters):
            block = "\n".join(chapters[ch]) + "\n"
            b = blen(block)
            if cur and n + b > 8192:
                groups.append(cur)
                cur, n = [], 0
            cur.append((ch, block))
            n += b
        if cur:
            groups.append(cur)
        docs = []
        slug = name.replace(" ", "")
        for g in groups:
            c0, c1 = g[0][0], g[-1][0]
            rng = "%d" % c0 if c0 == c1 else "%d-%d" % (c0, c1)
            title = "%s %s" % (name, rng.replace("-", "\u2013"))
            body = title + "\n\n" + "".join(b for _, b in g)
            if len(groups) == 1:
                did = "scripture:kjv/%s" % slug
            else:
                did = "scripture:kjv/%s/%s" % (slug, rng)
            for k, part in enumerate(split_sections(body, _LINE_RE, MAX_DOC)):
                docs.append(dict(id=did if k == 0 else "%s#%d" % (did, k + 1),
                                 text=part, domain="scripture", source=src_txt,
                                 license=LICENSES["scripture"]))
        # each chapter group is its own selectable unit
        units.extend(Unit([d]) for d in docs)
    return units, {"sources": [src_txt],
                   "format": "one document per book or group of whole chapters "
                             "(<= ~8 KB); first line is the title, then one verse per "
                             "line as 'chapter:verse text'"}


# ---- legal


def collect_legal(args, stats):
    cands = []
    cl = "/usr/share/common-licenses"
    if os.path.isdir(cl):
        for f in sorted(os.listdir(cl)):
            p = os.path.join(cl, f)
            if os.path.isfile(p):
                cands.append(("legal:common-licenses/" + f, p, p))
    docroot = "/usr/share/doc"
    if os.path.isdir(docroot):
        for pkg in sorted(os.listdir(docroot)):
            p = os.path.join(docroot, pkg, "copyright")
            if os.path.isfile(p):
                cands.append(("legal:doc/%s/copyright" % pkg, p, p))
    # copyright files of the packages downloaded for this build (so that the
    # domain does not depend only on what happens to be installed)
    for pkg in sorted(args.debs):
        p = os.path.join(args.debs[pkg]["root"], "usr/share/doc", pkg, "copyright")
        if os.path.isfile(p):
            cands.append(("legal:doc/%s/copyright" % pkg, p,
                          "%s=%s:/usr/share/doc/%s/copyright" % (pkg, args.debs[pkg]["version"], pkg)))
    seen_hash, seen_id, units = set(), set(), []
    for did, p, src in cands:
        if did in seen_id:
            continue
        data = open(p, "rb").read()
        h = hashlib.sha256(data).digest()
        if h in seen_hash:
            stats["skipped_duplicate"] += 1
            continue
        text = decode_text(data)
        if text is None:
            stats["skipped_not_text"] += 1
            continue
        seen_hash.add(h)
        seen_id.add(did)
        docs = make_docs(did, text, "legal", src, LICENSES["legal"],
                         PARA_BOUNDARY, MAX_DOC)
        if docs:
            units.append(Unit(docs))
    return units, {"sources": [cl + "/*", docroot + "/*/copyright (installed packages)",
                               "usr/share/doc/*/copyright of the downloaded packages"],
                   "note": "depends on the set of installed packages; exact duplicates "
                           "(by content hash) are kept once"}


# ---- math


def collect_math(args, stats):
    if "pari-doc" not in args.debs:
        warn("math: pari-doc unavailable; skipping domain")
        return None
    root = args.debs["pari-doc"]["root"]
    docdir = os.path.join(root, "usr/share/pari/doc")
    ver = args.debs["pari-doc"]["version"]
    units = []
    for p in walk_sorted(docdir, ".tex"):
        text = decode_text(open(p, "rb").read())
        if text is None:
            stats["skipped_not_text"] += 1
            continue
        rel = os.path.relpath(p, docdir)
        docs = make_docs("math:pari/" + rel, text, "math",
                         "pari-doc=%s:/usr/share/pari/doc/%s" % (ver, rel),
                         LICENSES["math"], TEX_BOUNDARY, 8192)
        # each section is its own selectable unit (two chapter files hold
        # most of the text)
        units.extend(Unit([d]) for d in docs)
    return units, {"sources": ["pari-doc=%s:/usr/share/pari/doc/*.tex" % ver],
                   "format": "TeX source split before \\section/\\subsec/... commands, "
                             "consecutive sections merged up to ~8 KB"}


# ---- dictionary


def collect_dictionary(args, stats):
    import gzip
    gcide_units, jargon_units, sources = [], [], []
    if "dict-gcide" in args.debs:
        ver = args.debs["dict-gcide"]["version"]
        p = os.path.join(args.debs["dict-gcide"]["root"], "usr/share/dictd/gcide.dict.dz")
        if os.path.isfile(p):
            # dictzip is gzip-compatible.  A handful of entries contain stray
            # cp1252 bytes: decode with surrogateescape and drop exactly
            # those entries (not valid UTF-8).
            raw = gzip.open(p).read().decode("utf-8", errors="surrogateescape")
            entries = []
            for e in _cut(raw, GCIDE_BOUNDARY):
                if _SURROGATE_RE.search(e) or decode_text(e.encode("utf-8")) is None:
                    stats["skipped_not_text"] += 1
                    continue
                entries.append(e)
            if entries:
                src = "dict-gcide=%s:/usr/share/dictd/gcide.dict.dz" % ver
                sources.append(src)
                for i, part in enumerate(_pack(entries, 4096), 1):
                    if blen(part.strip()) < MIN_DOC:
                        continue
                    gcide_units.append(Unit([dict(id="dictionary:gcide#%d" % i, text=part,
                                            domain="dictionary", source=src,
                                            license="GPL-2.0-or-later")]))
    else:
        warn("dictionary: dict-gcide unavailable")
    if "jargon-text" in args.debs:
        ver = args.debs["jargon-text"]["version"]
        p = os.path.join(args.debs["jargon-text"]["root"],
                         "usr/share/doc/jargon-text/jargon.txt.gz")
        if os.path.isfile(p):
            text = decode_text(gzip.open(p).read())
            if text is not None:
                src = "jargon-text=%s:/usr/share/doc/jargon-text/jargon.txt.gz" % ver
                sources.append(src)
                for i, part in enumerate(split_sections(text, JARGON_BOUNDARY, 4096), 1):
                    if blen(part.strip()) < MIN_DOC:
                        continue
                    jargon_units.append(Unit([dict(id="dictionary:jargon#%d" % i, text=part,
                                            domain="dictionary", source=src,
                                            license="public-domain")]))
    else:
        warn("dictionary: jargon-text unavailable")
    if not gcide_units and not jargon_units:
        warn("dictionary: no source available; skipping (optional) domain")
        return None
    # The Jargon File (1.7 MB) would be a ~4% sliver of GCIDE (40 MB) under a
    # proportional pick, so each source gets half the budget (all of a source
    # that is smaller than its half; the rest goes to the other).
    half = args.budget // 2
    jtotal = sum(u.size for u in jargon_units)
    jpick, _ = spread_select(jargon_units, min(half, jtotal) if gcide_units else args.budget)
    gpick, _ = spread_select(gcide_units, args.budget - sum(u.size for u in jpick))
    total = jtotal + sum(u.size for u in gcide_units)
    return gpick + jpick, {"sources": sources,
                           "preselected": (total, len(gcide_units) + len(jargon_units)),
                           "format": "consecutive dictionary entries merged up to ~4 KB; "
                                     "budget split between GCIDE and the Jargon File"}


COLLECTORS = {
    "go": collect_go,
    "python": collect_python,
    "man": collect_man,
    "scripture": collect_scripture,
    "legal": collect_legal,
    "math": collect_math,
    "dictionary": collect_dictionary,
}


# --------------------------------------------------------------------------


def load_debs(path):
    """debs.tsv written by build.sh: package<TAB>version<TAB>extracted-root"""
    debs = {}
    if path and os.path.isfile(path):
        for line in open(path, encoding="utf-8"):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                debs[parts[0]] = {"version": parts[1], "root": parts[2]}
    return debs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--mb-per-domain", type=float, default=3.0)
    ap.add_argument("--goroot", default="")
    ap.add_argument("--debs", default="", help="debs.tsv from build.sh")
    ap.add_argument("--domains", default=",".join(DOMAINS))
    args = ap.parse_args()
    args.debs = load_debs(args.debs)
    budget = args.budget = int(args.mb_per_domain * MIB)
    min_ok = min(2 * MIB, budget)
    os.makedirs(args.outdir, exist_ok=True)

    manifest = {
        "generator": "scripts/corpus/build.sh",
        "schema": {"id": "stable unique id", "text": "document text (UTF-8)",
                   "domain": "domain label", "source": "package=version:path or path",
                   "license": "short SPDX-ish licence id"},
        "mb_per_domain": args.mb_per_domain,
        "budget_bytes_per_domain": budget,
        "max_doc_bytes": MAX_DOC,
        "packages": {k: v["version"] for k, v in sorted(args.debs.items())},
        "domains": {},
        "skipped_domains": {},
    }
    wanted = [d for d in args.domains.split(",") if d]
    for domain in wanted:
        # remove any stale output for this domain first
        out_path = os.path.join(args.outdir, domain + ".jsonl")
        if os.path.exists(out_path):
            os.remove(out_path)
        stats = {k: 0 for k in ("skipped_not_text", "skipped_generated",
                                "skipped_so_link", "skipped_render_failed",
                                "skipped_duplicate")}
        info("[%s] collecting ..." % domain)
        res = COLLECTORS[domain](args, stats)
        if res is None:
            manifest["skipped_domains"][domain] = "source unavailable (see warnings)"
            continue
        units, meta = res
        ncand = len(units)
        if "preselected" in meta:
            chosen = units
            total, ncand = meta.pop("preselected")
        else:
            chosen, total = spread_select(units, budget)
        docs = [d for u in chosen for d in u.docs]
        ids = set()
        nbytes = 0
        with open(out_path, "w", encoding="utf-8", newline="\n") as f:
            for d in docs:
                if d["id"] in ids:
                    raise SystemExit("duplicate id %r" % d["id"])
                ids.add(d["id"])
                nbytes += blen(d["text"])
                f.write(json.dumps({"id": d["id"], "text": d["text"],
                                    "domain": d["domain"], "source": d["source"],
                                    "license": d["license"]},
                                   ensure_ascii=False, separators=(",", ":")) + "\n")
        sha = hashlib.sha256(open(out_path, "rb").read()).hexdigest()
        lic_counts = {}
        for d in docs:
            lic_counts[d["license"]] = lic_counts.get(d["license"], 0) + 1
        entry = {
            "file": domain + ".jsonl",
            "docs": len(docs),
            "units": len(chosen),
            "bytes": nbytes,
            "file_bytes": os.path.getsize(out_path),
            "sha256": sha,
            "candidate_units": ncand,
            "candidate_bytes": total,
            "license": LICENSES[domain],
            "licenses": dict(sorted(lic_counts.items())),
            "reached_min": nbytes >= min_ok,
        }
        entry.update(meta)
        entry["skipped"] = {k: v for k, v in stats.items() if v}
        manifest["domains"][domain] = entry
        if not entry["reached_min"]:
            warn("%s: only %d bytes (< %d)" % (domain, nbytes, min_ok))

    ok = [d for d, e in manifest["domains"].items() if e["reached_min"]]
    manifest["domains_reaching_min"] = ok
    manifest["min_bytes"] = min_ok
    with open(os.path.join(args.outdir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")

    print("%-11s %7s %12s %12s  %s" % ("domain", "docs", "text_bytes", "candidates", "licence"))
    for d, e in manifest["domains"].items():
        print("%-11s %7d %12d %12d  %s%s" % (d, e["docs"], e["bytes"], e["candidate_bytes"],
                                             e["license"], "" if e["reached_min"] else "  (BELOW MIN)"))
    for d, why in manifest["skipped_domains"].items():
        print("%-11s  SKIPPED: %s" % (d, why))
    print("total: %d docs, %d bytes of text in %d domains -> %s" % (
        sum(e["docs"] for e in manifest["domains"].values()),
        sum(e["bytes"] for e in manifest["domains"].values()),
        len(manifest["domains"]), args.outdir))
    if len(ok) < min(REQUIRED_DOMAINS_OK, len(wanted)):
        print("FAIL: only %d domains reached %d bytes (need %d)" % (
            len(ok), min_ok, min(REQUIRED_DOMAINS_OK, len(wanted))), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
