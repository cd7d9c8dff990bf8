#!/usr/bin/env python3
"""Run allenai/EMO's OWN router / MoE / model code on emopipe's golden inputs.

make_goldens.py is a transcription of emo-method.md; this script is the
cross-check against the reference implementation itself (allenai/EMO at
commit fb077838, an OLMo-core fork). It imports the reference's modules from
--ref, builds them the way the release launch scripts configure them
(scripts/models/emo_1b14b_1t.sh: model-type
two-level_lb-batch_reduce-dp_sharedexp_randpool, 1 shared expert, pool drawn
from [min,max], eval pool, lb_loss_weight 0.1; stdmoe_1b14b_1t.sh:
moe_lbreducedp_sharedexp; both with OLMoE's z_loss_weight 0.001, LM-head
z-loss 1e-5, local_batch LB granularity and per-layer weights divided by
n_layers), feeds them the inputs stored in model/testdata/{moe,model}_goldens.json,
forces the per-document pool draws (torch.randint in the router) to the golden's
pool sizes, and compares every output the goldens hold. With --write it also
writes model/testdata/reference_{moe,model}_goldens.json: the same inputs with
the outputs the REFERENCE CODE produced (float32, as the reference casts the
router to float32), which model/reference_test.go checks the Go model against.

What runs is the reference's code: MoE (DroplessMoE + ParallelDroplessMLP +
its Triton gather/scatter kernels, run by Triton's CPU interpreter), the
routers' forward(), loss.py, RMSNorm, Attention (RoPE, SDPA), the Transformer's
EOS -> document_boundaries code and its LM head / cross-entropy / z-loss. Glue
that is not the reference's: stub modules for four packages the math never
uses (cached_path, dataclass_extensions, rich, bettermap: I/O, config
decoding, console), a pure-torch stand-in for the flash-attn varlen kernel
(intra-document causal SDPA; the EMO run uses flash_2 with document lengths)
with torch.cuda.is_available() reporting True while attention is built (else
it falls back to the torch backend, which refuses document lengths), and the
copy of the weights into the modules. Internals (masked logits, per-document
pool scores, scores, counts, LB, z) are read from the router's own frame with
sys.settrace, not recomputed; only raw_probs (P0) is the softmax of the
reference's logits.

The reference tree: the extracted /tmp/emo-ref/src holds only nn/ and tests;
the imports need the whole src/ (olmo_core.config, ops, kernels, distributed,
data). Export it read-only somewhere outside the repository, e.g.
    git -C <mirror of allenai/EMO> archive fb077838 -- src/olmo_core src/scripts \
        | tar -x -C /tmp/emo-full
and pass --ref /tmp/emo-full/src (the default tries /tmp/emo-ref/src, then
/tmp/emo-full/src). Nothing of the reference is copied into this repository.

Usage (from the repository root, torch + triton in the venv):
    scripts/.venv/bin/python scripts/emo_reference/run_reference.py [--ref DIR] [--write]
"""

import argparse
import hashlib
import json
import math
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.normpath(os.path.join(HERE, "..", "..", "model", "testdata"))
ROUTER_FILE = "olmo_core/nn/moe/twolevel_batchlb_reducedp_sharedexp_randpool_router.py"
STD_ROUTER_FILE = "olmo_core/nn/moe/router_lbreducedp_sharedexp.py"

# Release hyper-parameters (scripts/models/emo_1b14b_1t.sh, stdmoe_1b14b_1t.sh,
# src/scripts/train/olmoe-1B-7B_fsl.py, TransformerConfig.olmoe_1B_7B).
LB_WEIGHT = 0.1  # --model.block.feed_forward_moe.lb_loss_weight=${lb}, lb=1e-1
ROUTER_Z_WEIGHT = 0.001  # MoEConfig(z_loss_weight=0.001) in olmoe_1B_7B
LM_Z_WEIGHT = 1e-5  # TransformerTrainModuleConfig(z_loss_multiplier=1e-5)
IGNORE = -100


# ---------------------------------------------------------------- importing the reference

class _DummyMeta(type):
    def __getattr__(cls, n):
        if n.startswith("__"):
            raise AttributeError(n)
        return ()


class _Dummy(metaclass=_DummyMeta):
    """Stand-in for any class or function of a stubbed package."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Dummy()

    def __getattr__(self, n):
        return _Dummy()

    @classmethod
    def register(cls, *a, **k):
        return lambda c: c


class _Registrable:
    """dataclass_extensions.Registrable, as far as the model configs use it."""

    @classmethod
    def register(cls, name):
        return lambda c: c


class _StubModule(types.ModuleType):
    def __getattr__(self, n):
        if n.startswith("__"):
            raise AttributeError(n)
        if n == "Registrable":
            return _Registrable
        return type(n, (_Dummy,), {})


class _StubFinder:
    """Import hook: any module under the stubbed packages is a _StubModule."""

    def __init__(self, prefixes):
        self.prefixes = prefixes

    def find_spec(self, fullname, path=None, target=None):
        import importlib.machinery
        if fullname.split(".")[0] in self.prefixes:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _StubModule(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def setup_reference(ref):
    """Put the reference on sys.path; stub the 4 packages the math never touches."""
    os.environ.setdefault("TRITON_INTERPRET", "1")  # run the reference's Triton kernels on CPU
    sys.path.insert(0, ref)
    import importlib.util
    stubbed = [n for n in ("cached_path", "dataclass_extensions", "rich", "bettermap")
               if importlib.util.find_spec(n) is None]
    if stubbed:
        sys.meta_path.append(_StubFinder(set(stubbed)))

    import torch
    import olmo_core.ops.moe as ops
    if ops.kernels is None:
        raise SystemExit("reference Triton kernels not importable (need triton)")
    # The interpreter has no device to benchmark autotune configs on: keep the first.
    import triton.runtime.autotuner as autotuner
    for v in vars(ops.kernels).values():
        if isinstance(v, autotuner.Autotuner):
            v.configs = v.configs[:1]

    # flash-attn stand-in: the EMO run uses backend=flash_2 with document lengths
    # (varlen, causal inside each document). Same contract, plain torch.
    import olmo_core.nn.attention.flash_attn_api as fa

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0,
                               softmax_scale=None, causal=False, window_size=(-1, -1)):
        assert dropout_p == 0.0 and tuple(window_size) == (-1, -1) and torch.equal(cu_q, cu_k)
        out = torch.empty_like(q)
        cu = cu_q.tolist()
        for a, b in zip(cu[:-1], cu[1:]):
            qs, ks, vs = (t[a:b].transpose(0, 1) for t in (q, k, v))  # [H,len,D]
            o = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=causal,
                                                                 scale=softmax_scale)
            out[a:b] = o.transpose(0, 1)
        return out

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1)):
        assert dropout_p == 0.0 and tuple(window_size) == (-1, -1)
        o = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=softmax_scale)
        return o.transpose(1, 2)

    fa.flash_attn_2 = types.SimpleNamespace(flash_attn_varlen_func=flash_attn_varlen_func,
                                            flash_attn_func=flash_attn_func)
    return stubbed


def find_ref(arg):
    cands = [arg] if arg else ["/tmp/emo-ref/src", "/tmp/emo-full/src"]
    for c in cands:
        if os.path.exists(os.path.join(c, "olmo_core", "ops", "moe.py")) and \
                os.path.exists(os.path.join(c, ROUTER_FILE)):
            return c
    raise SystemExit(f"no complete allenai/EMO src/ tree in {cands}: the imports need olmo_core/"
                     "{config,ops,kernels,distributed,data}; export the whole src/ (see --help)")


# ---------------------------------------------------------------- golden JSON

def dec(j, torch, dtype=None):
    data = [float("-inf") if v == "-inf" else float("inf") if v == "inf" else v for v in j["data"]]
    if j["dtype"] == "bool":
        t = torch.tensor(data, dtype=torch.bool)
    elif j["dtype"] == "int32":
        t = torch.tensor(data, dtype=torch.long)
    else:
        t = torch.tensor(data, dtype=dtype or torch.float32)
    return t.reshape(j["shape"])


def enc(t, torch):
    t = torch.as_tensor(t).detach()
    if t.dtype == torch.bool:
        return {"shape": list(t.shape), "dtype": "bool", "data": [bool(v) for v in t.flatten().tolist()]}
    if not t.is_floating_point():
        return {"shape": list(t.shape), "dtype": "int32", "data": [int(v) for v in t.flatten().tolist()]}
    data = [v if math.isfinite(v) else ("-inf" if v < 0 else "inf") for v in t.double().flatten().tolist()]
    return {"shape": list(t.shape), "dtype": "float", "data": data}


# ---------------------------------------------------------------- instrumentation

class PoolFeeder:
    """Replaces torch.randint while the reference router runs: the randpool
    router draws `torch.randint(min, max + 1, (1,)).item()` once per document,
    in (row, document) order, and gets the golden's pool size instead."""

    def __init__(self, torch, sizes, lo, hi):
        self.torch, self.sizes, self.lo, self.hi = torch, list(sizes), lo, hi
        self.calls = 0

    def __enter__(self):
        self.orig = self.torch.randint

        def fake(low, high, size, *a, **k):
            assert (low, high, tuple(size)) == (self.lo, self.hi + 1, (1,)), (low, high, size)
            assert not a and not k
            n = self.sizes[self.calls]
            self.calls += 1
            return self.orig(n, n + 1, (1,))
        self.torch.randint = fake
        return self

    def __exit__(self, *exc):
        self.torch.randint = self.orig
        if exc[0] is None:
            assert self.calls == len(self.sizes), f"router drew {self.calls} pools, golden has {len(self.sizes)}"


class FrameSpy:
    """Wraps one router instance's forward and, only while it runs, traces its
    frame (sys.settrace): records every per-document `document_expert_probs`
    (with seq_idx/start/end) and the frame's locals at return, per call.
    Nothing is recomputed: these are the reference's own tensors."""

    def __init__(self, routers):
        self.routers, self.calls = routers, []

    def _local(self, frame, event, arg):
        cur = self.calls[-1]
        if event == "line" and "document_expert_probs" in frame.f_locals:
            t = frame.f_locals["document_expert_probs"]
            if id(t) not in cur["seen"]:
                cur["seen"].add(id(t))
                fl = frame.f_locals
                cur["docs"].append((fl["seq_idx"], fl["start"], fl["end"], t.detach().clone()))
        if event == "return":
            cur["locals"] = dict(frame.f_locals)
        return self._local

    def _wrap(self, router):
        orig = router.forward
        code = type(router).forward.__code__

        def traced(*a, **k):
            def glob(frame, event, arg):
                if event == "call" and frame.f_code is code and not entered:
                    entered.append(1)
                    self.calls.append({"seen": set(), "docs": [], "locals": None})
                    return self._local
                return None
            entered = []
            prev = sys.gettrace()
            sys.settrace(glob)
            try:
                return orig(*a, **k)
            finally:
                sys.settrace(prev)
        return traced

    def __enter__(self):
        for r in self.routers:
            r.forward = self._wrap(r)
        return self

    def __exit__(self, *exc):
        for r in self.routers:
            del r.forward  # back to the class's forward


def reference_boundaries(torch, ids, eos):
    """Transformer.forward's EOS -> document_boundaries, as model.py writes it
    (used for the MoE-only cases; the full-model cases run Transformer.forward)."""
    out = []
    for row in ids == eos:
        pos = torch.nonzero(row, as_tuple=True)[0]
        pos = pos[pos > 0]  # drop 0 to avoid empty [start:end]
        if pos.numel() > 1:
            pos = pos.unique(sorted=True)
        out.append(pos)
    return out


def doc_lens_batch(torch, ids, eos):
    """The data loader's doc_lens / max_doc_lens (generate_doc_lengths=true):
    olmo_core.data.utils.get_document_lengths per row, zero-padded."""
    from olmo_core.data.utils import get_document_lengths
    lens = [get_document_lengths(r, eos) for r in ids]
    n = max(len(l) for l in lens)
    doc_lens = torch.zeros(len(lens), n, dtype=torch.int32)
    for i, l in enumerate(lens):
        doc_lens[i, :len(l)] = l
    return doc_lens, [int(l.max()) for l in lens]


# ---------------------------------------------------------------- building reference modules

def router_config(kind, *, k, shared, eos, pool_min, pool_max, eval_pool):
    from olmo_core.nn.moe.router_lbreducedp_sharedexp import MoELinearLBReduceDPSharedExpRouterConfig
    from olmo_core.nn.moe.twolevel_batchlb_reducedp_sharedexp_randpool_router import (
        MoETwoLevelBatchLBReduceDPSharedExpRandPoolRouterConfig,
    )
    if kind == "emo":
        return MoETwoLevelBatchLBReduceDPSharedExpRandPoolRouterConfig(
            top_k=k, min_document_expert_pool=pool_min, max_document_expert_pool=pool_max,
            eval_document_expert_pool=eval_pool, eos_token_id=eos,
            num_shared_experts=1 if shared else 0)
    return MoELinearLBReduceDPSharedExpRouterConfig(top_k=k, num_shared_experts=1 if shared else 0)


def moe_config(kind, *, E, k, h, shared, eos, pool_min, pool_max, eval_pool):
    from olmo_core.nn.moe import MoEConfig, MoEType
    return MoEConfig(name=MoEType.dropless, num_experts=E, hidden_size=h,
                     router=router_config(kind, k=k, shared=shared, eos=eos, pool_min=pool_min,
                                          pool_max=pool_max, eval_pool=eval_pool),
                     lb_loss_weight=LB_WEIGHT, z_loss_weight=ROUTER_Z_WEIGHT)


def block_config(kind, *, E, k, h, shared, eos, n_heads, theta, pool_min, pool_max, eval_pool, docmask):
    from olmo_core.nn.attention import AttentionConfig
    from olmo_core.nn.attention.backend import AttentionBackendName
    from olmo_core.nn.layer_norm import LayerNormConfig, LayerNormType
    from olmo_core.nn.rope import RoPEConfig, RoPEType
    from olmo_core.nn.transformer import TransformerBlockConfig, TransformerBlockType
    ln = LayerNormConfig(name=LayerNormType.rms, eps=1e-6, bias=False)
    return TransformerBlockConfig(
        name=TransformerBlockType.moe,  # --model.block.name="moe"
        sequence_mixer=AttentionConfig(
            n_heads=n_heads, bias=False, rope=RoPEConfig(name=RoPEType.default, theta=theta),
            qk_norm=None,  # --model.block.sequence_mixer.qk_norm=null
            backend=AttentionBackendName.flash_2 if docmask else AttentionBackendName.torch),
        feed_forward_moe=moe_config(kind, E=E, k=k, h=h, shared=shared, eos=eos, pool_min=pool_min,
                                    pool_max=pool_max, eval_pool=eval_pool),
        layer_norm=ln)


def load_block(torch, blk, p, E, h, d, keep=None):
    """Copy emopipe-layout weights into a reference MoETransformerBlock.
    emopipe: router [E,d], w1/w3 [E,h,d], w2 [E,d,h] (PyTorch Linear layout);
    reference: router flat [E*d], w1/w3 (E*h, d), w2 (E*h, d) used as x @ w2[e]."""
    sel = torch.arange(E) if keep is None else torch.tensor(keep)
    with torch.no_grad():
        moe = blk.feed_forward_moe
        moe.router.weight.copy_(p["router"][sel].reshape(-1))
        mlp = moe.experts.mlp
        mlp.w1.copy_(p["w1"][sel].reshape(-1, d))
        mlp.w3.copy_(p["w3"][sel].reshape(-1, d))
        mlp.w2.copy_(p["w2"][sel].transpose(1, 2).reshape(-1, d))
        blk.feed_forward_norm.weight.copy_(p["feed_forward_norm"])
        if "attention_norm" in p:
            blk.attention_norm.weight.copy_(p["attention_norm"])
        for n in ("w_q", "w_k", "w_v", "w_out"):
            if n in p:
                getattr(blk.attention, n).weight.copy_(p[n])


# ---------------------------------------------------------------- running one MoE layer

def run_router_layer(torch, moe, xn, bounds, pools_per_doc, kind, *, eval_mode=False, div=None,
                     router_only=False):
    """moe.forward (or only its router) on xn [B,S,d] in train mode (losses
    computed), with the pool draws forced; returns the output and the router
    frame's captures."""
    router = moe.router
    B, S, _ = xn.shape
    div = torch.tensor(float(B * S)) if div is None else div
    moe.train(not eval_mode)
    if kind == "emo" and not eval_mode:
        feeder = PoolFeeder(torch, pools_per_doc, router.min_document_expert_pool, router.max_document_expert_pool)
    else:
        feeder = _null()
    kw = {"document_boundaries": bounds} if kind == "emo" else {}
    with feeder, FrameSpy([router]) as spy:
        out = (router if router_only else moe)(xn, loss_div_factor=div, **kw)
    assert len(spy.calls) == 1
    return out, spy.calls[0]


def pools_in_doc_order(pools, seg):
    """Golden pools [B,NSeg] (per segment slot) -> the reference's draw order:
    per row, per non-empty document, in order."""
    out = []
    for b in range(seg.shape[0]):
        for s in range(int(seg[b].max()) + 1):
            out.append(int(pools[b, s]))
    return out


def router_outputs(torch, cap, kind, B, S, ep, kp, nseg, shared, keep=None, ep_full=None):
    """The golden's names from the router frame's locals (reference tensors).
    ep: the reference's routable experts; keep: their ids among ep_full (subset)."""
    L = cap["locals"]
    ep_full = ep_full or ep
    cols = torch.arange(ep) if keep is None else torch.tensor(keep)

    def widen(t, fill):  # [..., ep] on kept experts -> [..., ep_full]
        if keep is None:
            return t
        o = torch.full((*t.shape[:-1], ep_full), fill, dtype=t.dtype)
        o[..., cols] = t
        return o

    masked = L["logits"].detach()  # masked in place by logits.masked_fill_
    scores = L["scores"].detach()
    w, idx = L["expert_weights"].detach(), L["expert_indices"].detach()
    if shared:  # the shared expert is appended last with weight 1.0 and index E-1
        assert torch.all(w[..., -1] == 1.0), "shared expert weight is not 1.0"
        assert torch.all(idx[..., -1] == ep), "shared expert index is not E-1"
        w, idx = w[..., :kp], idx[..., :kp]
    if keep is not None:
        idx = cols[idx]
    out = {"masked": widen(masked, float("-inf")), "probs": widen(scores, 0.0), "experts": idx,
           "gates": w}
    counts = L.get("dp_global_tot_batch_size_per_expert", L.get("dp_global_batch_size_per_expert_routing"))
    out["counts"] = widen(counts.detach(), 0)
    out["lb"] = L["lb_loss"].detach()
    out["router_z"] = L["z_loss"].detach()
    if kind == "emo":
        out["logits_mask"] = widen(L["logits_mask"], True)
        ps = torch.zeros(B, nseg, ep_full)
        seen = {}
        for (b, start, end, d) in cap["docs"]:
            s = seen.get(b, 0)
            seen[b] = s + 1
            ps[b, s] = widen(d, 0.0)
        out["pool_scores"] = ps
        out["doc_spans"] = [(b, st, en) for (b, st, en, _) in cap["docs"]]
    return out


# ---------------------------------------------------------------- comparison table

class Table:
    def __init__(self):
        self.rows = []
        self.fail = []

    def add(self, case, name, got, want, torch, exact=False, note="", known=False):
        """known: a difference this script explains (a convention, or a value
        rescaled to show the rest matches); kept out of the summary and the
        failure list, never out of the table."""
        n0 = len(self.rows)
        nf = len(self.fail)
        self._add(case, name, got, want, torch, exact, note)
        self.rows[n0] = self.rows[n0][:4] + (known,) + self.rows[n0][5:]
        if known:
            del self.fail[nf:]

    def _add(self, case, name, got, want, torch, exact, note):
        got = torch.as_tensor(got).detach()
        want = torch.as_tensor(want).detach()
        if tuple(got.shape) != tuple(want.shape):
            self.rows.append((case, name, "SHAPE", f"{tuple(got.shape)} vs {tuple(want.shape)}", "", note))
            self.fail.append((case, name))
            return
        if exact or not want.is_floating_point():
            bad = int((got.long() != want.long()).sum()) if not got.is_floating_point() else \
                int((got != want).sum())
            self.rows.append((case, name, "exact", f"{bad} differ", "", note))
            if bad:
                self.fail.append((case, name))
            return
        g, w = got.double(), want.double()
        fin = torch.isfinite(w)
        if not torch.equal(fin, torch.isfinite(g)) or not torch.equal(g[~fin], w[~fin]):
            self.rows.append((case, name, "INF", "infinite entries differ", "", note))
            self.fail.append((case, name))
            return
        if fin.sum() == 0:
            self.rows.append((case, name, "0", "0", "", note))
            return
        diff = (g[fin] - w[fin]).abs().max().item()
        scale = w[fin].abs().max().item()
        rel = diff / scale if scale > 0 else diff
        self.rows.append((case, name, f"{diff:.2e}", f"{rel:.2e}", "", note))
        if rel > 1e-5:
            self.fail.append((case, name))

    def summary(self):
        """Worst relative error per output over the cases (rescaled rows and
        rows with a note about a known convention difference excluded)."""
        worst = {}
        for c, n, a, r, known, note in self.rows:
            if known:
                continue
            key = n
            if r.endswith("differ"):
                worst.setdefault(key, [0, 0, "exact"])
                worst[key][0] = max(worst[key][0], int(r.split()[0]))
                worst[key][1] += 1
                continue
            try:
                v = float(r)
            except ValueError:
                continue
            worst.setdefault(key, [0.0, 0, "rel"])
            worst[key][0] = max(worst[key][0], v)
            worst[key][1] += 1
        print(f"\n{'output':24} {'cases':>5} {'worst':>12}")
        for n, (v, cnt, kind) in worst.items():
            print(f"{n:24} {cnt:5d} {(str(v) + ' differ') if kind == 'exact' else f'{v:.2e}':>12}")

    def print(self):
        print(f"{'case':34} {'output':16} {'max abs':>10} {'max rel':>12}  note")
        for c, n, a, r, known, note in self.rows:
            print(f"{c:34} {n:18} {a:>10} {r:>12}  {'[known] ' if known else ''}{note}")


# ---------------------------------------------------------------- MoE-layer cases

def run_moe_case(torch, case, table, args):
    """One case of moe_goldens.json through the reference MoETransformerBlock."""
    cfg, inp, gold = case["config"], case["inputs"], case["outputs"]
    name = case["name"]
    E, k, d, h, shared = cfg["num_experts"], cfg["top_k"], cfg["d_model"], cfg["expert_hidden"], cfg["shared_expert"]
    ep, kp = (E - 1, k - 1) if shared else (E, k)
    ids, seg = dec(inp["ids"], torch), dec(inp["segments"], torch)
    B, S = ids.shape
    p = {n: dec(inp[n], torch) for n in ("x", "attention_norm", "feed_forward_norm", "router", "w1", "w3", "w2")}
    if cfg["with_attention"]:
        p.update({n: dec(v, torch) for n, v in inp["attn"].items()})
    keep = None
    if "allowed" in inp:  # an expert subset = the reference's pruned model (sliced rows)
        allowed = dec(inp["allowed"], torch)
        keep = [i for i in range(ep) if bool(allowed[i])]
    n_keep = ep if keep is None else len(keep)
    E_ref = n_keep + (1 if shared else 0)
    sel = keep + ([ep] if shared else []) if keep is not None else None
    pool_min, pool_max = 1, 1 << 20  # draws are forced; the range only has to contain them
    eval_pool = cfg["eval_pool"] or None
    torch.manual_seed(0)
    blk = block_config(cfg["router"], E=E_ref, k=k, h=h, shared=shared, eos=cfg["eos"], n_heads=cfg["n_heads"],
                       theta=cfg["rope_theta"], pool_min=pool_min, pool_max=pool_max,
                       eval_pool=eval_pool if eval_pool else 64, docmask=True)
    with _pretend_cuda():
        blk = blk.build(d_model=d, block_idx=0, n_layers=1, init_device="cpu")
    load_block(torch, blk, p, E, h, d, keep=sel)
    moe = blk.feed_forward_moe
    bounds = reference_boundaries(torch, ids, cfg["eos"])
    nseg = S
    x = p["x"]
    if cfg["router"] == "emo":
        pools = dec(inp["pools"], torch) if "pools" in inp else torch.full((B, nseg), eval_pool)
        per_doc = pools_in_doc_order(pools, seg)
    else:
        per_doc = []

    # The attention half (with_attention): reference Attention with document lengths.
    if cfg["with_attention"]:
        doc_lens, max_doc_lens = doc_lens_batch(torch, ids, cfg["eos"])
        from olmo_core.data.utils import get_cumulative_document_lengths
        cu = get_cumulative_document_lengths(doc_lens)
        blk.train()
        hmid = x + blk.attention(blk.attention_norm(x), cu_doc_lens=cu, max_doc_len=max(max_doc_lens))
    else:
        hmid = x
    xn = blk.feed_forward_norm(hmid)
    out, cap = run_router_layer(torch, moe, xn, bounds, per_doc, cfg["router"])
    if cfg["with_attention"]:
        # Whole block forward must agree with the pieces (same pools again).
        full, _ = None, None
        doc_lens, max_doc_lens = doc_lens_batch(torch, ids, cfg["eos"])
        from olmo_core.data.utils import get_cumulative_document_lengths
        cu = get_cumulative_document_lengths(doc_lens)
        with PoolFeeder(torch, per_doc, pool_min, pool_max) if cfg["router"] == "emo" else _null():
            kw = {"document_boundaries": bounds} if cfg["router"] == "emo" else {}
            full = blk(x, loss_div_factor=torch.tensor(float(B * S)), cu_doc_lens=cu,
                       max_doc_len=max(max_doc_lens), **kw)
        assert torch.allclose(full, hmid + out, rtol=0, atol=1e-6)
    r = router_outputs(torch, cap, cfg["router"], B, S, n_keep, kp, nseg, shared, keep=keep, ep_full=ep)
    with torch.no_grad():
        logits = blk.feed_forward_moe.router.get_expert_logits(xn)[..., :n_keep]
    if keep is not None:
        lg = torch.full((B, S, ep), float("-inf"))
        lg[..., torch.tensor(keep)] = logits
        logits = lg
    res = {"logits": logits, "raw_probs": torch.softmax(logits, -1), "probs": r["probs"],
           "experts": r["experts"], "gates": r["gates"], "counts": r["counts"], "lb": r["lb"],
           "router_z": r["router_z"], "moe_out": out.detach(), "block_out": (hmid + out).detach()}
    notes = {"raw_probs": "softmax of the reference logits"}
    if keep is not None:
        notes["lb"] = notes["lb_local_1row"] = f"reference: LB over the {n_keep} kept experts, scale {n_keep}/{kp}"
    # Local LB, one row per "rank": the same router on each row alone (no all-reduce
    # at world size 1), mean over rows = what FSDP's gradient mean gives.
    loc = []
    for b in range(B):
        off = sum(int(seg[bb].max()) + 1 for bb in range(b))
        nd = int(seg[b].max()) + 1
        _, cb = run_router_layer(torch, moe, xn[b:b + 1].detach(), bounds[b:b + 1], per_doc[off:off + nd],
                                 cfg["router"], router_only=True)
        loc.append(cb["locals"]["lb_loss"].detach())
    res["lb_local_1row"] = torch.stack(loc).mean()
    if cfg["router"] == "emo":
        res["pool_mask"] = ~r["logits_mask"]
        res["pool_scores"] = r["pool_scores"]
        # Segments: the documents the router iterated over = the golden's segments.
        segs = torch.full((B, S), -1, dtype=torch.long)
        cnt = {}
        for (b, st, en) in r["doc_spans"]:
            segs[b, st:en] = cnt.get(b, 0)
            cnt[b] = cnt.get(b, 0) + 1
        table.add(name, "segments", segs, seg, torch, exact=True, note="router's document spans")
        # Eval mode: the fixed eval pool, no draws.
        if eval_pool:
            o2, c2 = run_router_layer(torch, moe, xn.detach(), bounds, [], "emo", eval_mode=True, router_only=True)
            table.add(name, "eval-mode experts", o2[1][..., :kp], cap["locals"]["expert_indices"][..., :kp], torch,
                      exact=True, note="router.eval() with eval_document_expert_pool")
            table.add(name, "eval-mode gates", o2[0][..., :kp], cap["locals"]["expert_weights"][..., :kp], torch,
                      note="router.eval() with eval_document_expert_pool")
    if keep is not None and "pool_mask" in res:
        # The pruned reference has no columns for removed experts: kept columns only.
        res["pool_mask_kept"] = res.pop("pool_mask")[..., torch.tensor(keep)]
    for n, want in gold.items():
        g = dec(want, torch, torch.float64)
        if n == "pool_mask" and keep is not None:
            table.add(name, n, res["pool_mask_kept"], g[..., torch.tensor(keep)], torch, exact=True,
                      note="kept experts only")
            continue
        if n not in res:
            table.add(name, n, torch.tensor(0.0), torch.tensor(0.0), torch, note="NOT COMPARED")
            continue
        if n in ("lb", "lb_local_1row") and keep is not None:
            # Go/transcription scale E'/k' with all E' experts; the reference's pruned model n_keep/k'.
            table.add(name, n + " x E'/kept", res[n] * ep / n_keep, g, torch, note="reference rescaled to E'/k'")
        table.add(name, n, res[n], g, torch, exact=n in ("experts", "pool_mask", "counts"), note=notes.get(n, ""),
                  known=keep is not None and n in ("lb", "lb_local_1row"))
    return res


class _pretend_cuda:
    """Attention falls back to the torch backend when no GPU is visible; the
    EMO run used flash_2 (document masking), served here by the CPU stand-in."""

    def __enter__(self):
        import torch
        self.orig = torch.cuda.is_available
        torch.cuda.is_available = lambda: True

    def __exit__(self, *a):
        import torch
        torch.cuda.is_available = self.orig
        return False


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ---------------------------------------------------------------- whole-model cases

def model_config(case):
    from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig
    from olmo_core.nn.attention.backend import AttentionBackendName
    c = case["config"]
    mc = TransformerConfig.olmoe_1B_7B(
        vocab_size=c["vocab_size"], d_model=c["d_model"], n_layers=c["n_layers"], n_heads=c["n_heads"],
        num_experts=c["num_experts"], top_k=c["top_k"], block_name=TransformerBlockType.moe, qk_norm=False,
        rope_theta=c["rope_theta"],
        attn_backend=AttentionBackendName.flash_2 if c["doc_attention_mask"] else AttentionBackendName.torch)
    moe = mc.block.feed_forward_moe
    moe.hidden_size = c["expert_hidden"]
    moe.lb_loss_weight = LB_WEIGHT
    moe.router = router_config(c["router"], k=c["top_k"], shared=True, eos=c["eos"], pool_min=1,
                               pool_max=1 << 20, eval_pool=64)
    return mc


def run_model_case(torch, case, table, args, all_labelled):
    """A whole tiny model through the reference Transformer.forward."""
    c, inp, gold = case["config"], case["inputs"], case["outputs"]
    name = case["name"] + ("/all-labelled" if all_labelled else "")
    V, d, L, E, k, h = c["vocab_size"], c["d_model"], c["n_layers"], c["num_experts"], c["top_k"], c["expert_hidden"]
    ep, kp = E - 1, k - 1
    ids = dec(inp["ids"], torch)
    B, S = ids.shape
    labels = dec(inp["labels"], torch).masked_fill(dec(inp["labels"], torch) < 0, IGNORE)
    if all_labelled:  # an S+1-token window: the last position is labelled too
        labels[:, -1] = torch.arange(B) % (V - 1) + 1
    torch.manual_seed(0)
    with _pretend_cuda():
        model = model_config(case).build(init_device="cpu")
    with torch.no_grad():
        model.embeddings.weight.copy_(dec(inp["embeddings"], torch))
        model.lm_head.norm.weight.copy_(dec(inp["lm_head_norm"], torch))
        model.lm_head.w_out.weight.copy_(dec(inp["lm_head"], torch))
    for l in range(L):
        p = {n: dec(inp[f"blocks.{l}.{n}"], torch) for n in
             ("attention_norm", "feed_forward_norm", "w_q", "w_k", "w_v", "w_out", "router", "w1", "w3", "w2")}
        load_block(torch, model.blocks[str(l)], p, E, h, d)
    model.train()
    seg = dec(inp["segments"], torch)
    per_doc = []
    if c["router"] == "emo":
        pools = dec(inp["pools"], torch)
        for l in range(L):
            per_doc += pools_in_doc_order(pools[l], seg)
    kw = {}
    if c["doc_attention_mask"]:
        doc_lens, max_doc_lens = doc_lens_batch(torch, ids, c["eos"])
        kw = {"doc_lens": doc_lens, "max_doc_lens": max_doc_lens}
    n_lab = (labels != IGNORE).sum()
    spy = FrameSpy([model.blocks[str(l)].feed_forward_moe.router for l in range(L)])
    with (PoolFeeder(torch, per_doc, 1, 1 << 20) if c["router"] == "emo" else _null()), spy:
        # As TransformerTrainModule.train_batch calls it (one micro-batch = the whole batch).
        out = model(ids, labels=labels, ignore_index=IGNORE, loss_reduction="sum",
                    z_loss_multiplier=LM_Z_WEIGHT, loss_div_factor=n_lab, return_logits=True, **kw)
    assert len(spy.calls) == L
    logits, ce, lmz = out.logits.detach(), out.ce_loss.detach(), out.z_loss.detach()
    lmz_unweighted = lmz / LM_Z_WEIGHT
    rs = [router_outputs(torch, cap, c["router"], B, S, ep, kp, S, True) for cap in spy.calls]
    rz = torch.stack([r["router_z"] for r in rs])
    lb = torch.stack([r["lb"] for r in rs])
    # Weights as the reference applies them: MoEBase divides lb/z weights by n_layers.
    blk0 = model.blocks["0"].feed_forward_moe.router
    assert math.isclose(blk0.lb_loss_weight, LB_WEIGHT / L) and math.isclose(blk0.z_loss_weight, ROUTER_Z_WEIGHT / L)
    aux = (blk0.z_loss_weight * rz.sum() + blk0.lb_loss_weight * lb.sum() + lmz)
    # The routers' own metric accumulators agree with the frame values.
    for l in range(L):
        r = model.blocks[str(l)].feed_forward_moe.router
        assert torch.allclose(r.load_balancing_loss, lb[l]) and torch.allclose(r.z_loss, rz[l])
    res = {"logits": logits, "ce": ce, "lm_head_z": lmz_unweighted, "aux": aux, "loss": ce + aux,
           "router_z": rz, "lb": lb, "counts": torch.stack([r["counts"] for r in rs])}
    for l, r in enumerate(rs):
        res[f"experts.{l}"] = r["experts"]
        res[f"gates.{l}"] = r["gates"]
    if c["router"] == "emo":
        segs = torch.full((B, S), -1, dtype=torch.long)
        cnt = {}
        for (b, st, en) in rs[0]["doc_spans"]:
            segs[b, st:en] = cnt.get(b, 0)
            cnt[b] = cnt.get(b, 0) + 1
        table.add(name, "segments", segs, seg, torch, exact=True, note="Transformer.forward's EOS boundaries")
    note = "" if all_labelled else f"ref divides by labelled tokens {int(n_lab)} = B(S-1), golden by B*S"
    for n, want in gold.items():
        if all_labelled and n in ("ce", "lm_head_z", "loss"):
            continue  # other labels than the golden's: nothing to compare
        g = dec(want, torch, torch.float64)
        exact = n == "counts" or n.startswith("experts")
        conv = not all_labelled and n in ("router_z", "lb", "aux", "loss")
        table.add(name, n, res[n], g, torch, exact=exact, note=note if conv else "", known=conv)
        if not all_labelled and n in ("router_z", "lb"):
            table.add(name, n + " x(S-1)/S", res[n] * n_lab / (B * S), g, torch, note="reference rescaled to /B*S")
    return res, labels


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default=None, help="allenai/EMO src/ directory (default /tmp/emo-ref/src, /tmp/emo-full/src)")
    ap.add_argument("--goldens", default=TESTDATA, help="directory of moe_goldens.json / model_goldens.json")
    ap.add_argument("--write", action="store_true", help="write reference_{moe,model}_goldens.json there")
    args = ap.parse_args()
    ref = find_ref(args.ref)
    stubbed = setup_reference(ref)
    import torch
    torch.set_grad_enabled(True)
    sha = {f: hashlib.sha256(open(os.path.join(ref, f), "rb").read()).hexdigest()[:16]
           for f in (ROUTER_FILE, STD_ROUTER_FILE, "olmo_core/nn/moe/loss.py", "olmo_core/nn/moe/moe.py")}
    print(f"reference: {ref} (stubbed: {', '.join(stubbed) or 'none'}); torch {torch.__version__}")
    for f, s in sha.items():
        print(f"  sha256[:16] {s}  {f}")

    table = Table()
    with open(os.path.join(args.goldens, "moe_goldens.json")) as f:
        moe_gold = json.load(f)
    with open(os.path.join(args.goldens, "model_goldens.json")) as f:
        model_gold = json.load(f)

    ref_moe_cases, ref_model_cases = [], []
    for case in moe_gold["cases"]:
        res = run_moe_case(torch, case, table, args)
        rc = {"name": case["name"], "config": case["config"], "inputs": case["inputs"],
              "outputs": {n: enc(v, torch) for n, v in res.items() if n in case["outputs"] or n == "pool_mask_kept"}}
        ref_moe_cases.append(rc)
    for case in model_gold["cases"]:
        run_model_case(torch, case, table, args, all_labelled=False)
        res, labels = run_model_case(torch, case, table, args, all_labelled=True)
        inputs = dict(case["inputs"])
        inputs["labels"] = enc(labels.masked_fill(labels == IGNORE, -1), torch)
        ref_model_cases.append({"name": case["name"], "config": case["config"], "inputs": inputs,
                                "outputs": {n: enc(v, torch) for n, v in res.items()}})
    table.print()
    table.summary()
    if table.fail:
        print("\nabove 1e-5 (relative to the tensor's largest magnitude) or mismatched:")
        for c, n in table.fail:
            print(f"  {c}: {n}")

    if args.write:
        meta = {"generator": "scripts/emo_reference/run_reference.py",
                "reference": "allenai/EMO fb077838 (OLMo-core fork), its own code", "torch": torch.__version__,
                "sha256_16": sha,
                "settings": {"lb_loss_weight": LB_WEIGHT, "router_z_loss_weight": ROUTER_Z_WEIGHT,
                             "lm_head_z_loss_weight": LM_Z_WEIGHT, "lb_granularity": "local_batch",
                             "loss_div_factor": "B*S (MoE cases); labelled tokens = B*S (model cases: every position labelled)",
                             "dtype": "float32 (the reference casts router logits to float32)"}}
        with open(os.path.join(args.goldens, "reference_moe_goldens.json"), "w") as f:
            json.dump({**meta, "segments": moe_gold["segments"], "cases": ref_moe_cases}, f)
        with open(os.path.join(args.goldens, "reference_model_goldens.json"), "w") as f:
            json.dump({**meta, "cases": ref_model_cases}, f)
        print("wrote", os.path.join(args.goldens, "reference_{moe,model}_goldens.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
