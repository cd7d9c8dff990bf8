#!/usr/bin/env bash
# Build emopipe's labelled multi-domain corpus of REAL text.
#
#   scripts/corpus/build.sh OUTDIR [--mb-per-domain N] [--domains a,b,...] [--keep-tmp]
#
# Sources: Go source from GOROOT, the Python 3 stdlib, and Debian packages
# fetched with `apt-get download` and unpacked with `dpkg-deb -x` into a
# temporary directory (nothing is installed; the temp dir is removed at the
# end).  Writes OUTDIR/<domain>.jsonl and OUTDIR/manifest.json.  See
# docs/corpus.md.
#
# Requirements: bash, python3 (stdlib only), apt-get + dpkg-deb with package
# lists present (run `apt-get update` once on a fresh machine), and for best
# results man-db (man) + groff + col (bsdextrautils) to render man pages.
set -euo pipefail

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

OUTDIR=""
MB=3
DOMAINS="go,python,man,scripture,legal,math,dictionary"
KEEP_TMP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mb-per-domain) MB="${2:?--mb-per-domain needs a value}"; shift 2 ;;
    --mb-per-domain=*) MB="${1#*=}"; shift ;;
    --domains) DOMAINS="${2:?--domains needs a value}"; shift 2 ;;
    --domains=*) DOMAINS="${1#*=}"; shift ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h|--help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) if [ -z "$OUTDIR" ]; then OUTDIR="$1"; shift; else echo "extra argument: $1" >&2; usage; fi ;;
  esac
done
[ -n "$OUTDIR" ] || usage

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: python3 is required (set PYTHON=...)" >&2
  exit 1
fi

# Deterministic environment for every tool we run.
export LC_ALL=C.UTF-8 LANG=C.UTF-8 TZ=UTC

TMP="$(mktemp -d "${TMPDIR:-/tmp}/emopipe-corpus.XXXXXX")"
cleanup() {
  if [ "$KEEP_TMP" = 1 ]; then echo "kept temp dir: $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- packages
PACKAGES=(manpages manpages-dev bible-kjv-text bible-kjv pari-doc dict-gcide jargon-text)
mkdir -p "$TMP/debs" "$TMP/x"
# Let apt's unprivileged _apt user write the download dir (avoids the
# "Download is performed unsandboxed as root" warning).
chmod 755 "$TMP"
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$TMP/debs"; fi
: > "$TMP/debs.tsv"
have_apt=1
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "WARNING: apt-get/dpkg-deb not found: package-based domains (man, scripture, math, dictionary) will be skipped" >&2
  have_apt=0
fi
if [ "$have_apt" = 1 ]; then
  for pkg in "${PACKAGES[@]}"; do
    if (cd "$TMP/debs" && apt-get download -q "$pkg" >"$TMP/apt-$pkg.log" 2>&1); then
      deb="$(ls "$TMP/debs/${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
      if [ -z "$deb" ]; then
        echo "WARNING: apt-get download $pkg produced no .deb; skipping it" >&2
        continue
      fi
      ver="$(dpkg-deb -f "$deb" Version)"
      dpkg-deb -x "$deb" "$TMP/x/$pkg"
      printf '%s\t%s\t%s\n' "$pkg" "$ver" "$TMP/x/$pkg" >> "$TMP/debs.tsv"
      echo "package $pkg=$ver" >&2
    else
      echo "WARNING: could not download package '$pkg' (is it in your apt sources? run 'apt-get update' first); continuing without it:" >&2
      sed 's/^/    /' "$TMP/apt-$pkg.log" | tail -n 3 >&2
    fi
  done
fi

# ---------------------------------------------------------------- GOROOT
GOROOT_DIR=""
if command -v go >/dev/null 2>&1; then
  GOROOT_DIR="$(GOTOOLCHAIN=local GOFLAGS= go env GOROOT 2>/dev/null || true)"
fi
if [ -z "$GOROOT_DIR" ] || [ ! -d "$GOROOT_DIR/src" ]; then
  for d in /usr/local/go /usr/lib/go; do
    if [ -d "$d/src" ]; then GOROOT_DIR="$d"; break; fi
  done
fi
if [ -z "$GOROOT_DIR" ]; then
  echo "WARNING: no Go installation found (go env GOROOT, /usr/local/go, /usr/lib/go); the go domain will be skipped" >&2
fi
echo "GOROOT=${GOROOT_DIR:-<none>}" >&2

# ---------------------------------------------------------------- assemble
mkdir -p "$OUTDIR"
"$PY" "$HERE/build_corpus.py" "$OUTDIR" \
  --mb-per-domain "$MB" \
  --goroot "$GOROOT_DIR" \
  --debs "$TMP/debs.tsv" \
  --domains "$DOMAINS"
