#!/usr/bin/env python3
"""Golden vectors for emopipe's model package (model/testdata/*.json).

A PyTorch transcription of the EMO router / MoE math as docs emo-method.md
describes the reference (github.com/allenai/EMO, OLMo-core), written the way
the reference writes it: torch.softmax, torch.topk, scatter_add_ pools, -inf
masks. It is NOT the reference itself (that repository cannot be fetched
here); a cross-check against the real allenai/EMO code is still due.

Every computation runs in float64 from float32-rounded inputs, so the goldens
are the exact math; the Go side (float32) must match to ~1e-5 relative.
Each case is checked for margins (top-k and pool boundaries) large enough
that float32 rounding cannot flip an index.

Usage (from the repository root):
    python3 -m venv scripts/.venv && scripts/.venv/bin/pip install torch numpy
    scripts/.venv/bin/python scripts/emo_reference/make_goldens.py
"""

import json
import math
import os
import sys

import torch

torch.set_default_dtype(torch.float64)
NEG_INF = float("-inf")
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "model", "testdata")


# ---------------------------------------------------------------- helpers

def f32(t):
    """Round to float32 and back: the values the Go side receives."""
    return t.to(torch.float32).to(torch.float64)


def enc(t):
    """A tensor as {"shape", "dtype", "data"} (flat, row-major)."""
    t = torch.as_tensor(t)
    if t.dtype == torch.bool:
        return {"shape": list(t.shape), "dtype": "bool", "data": [bool(v) for v in t.flatten().tolist()]}
    if not t.is_floating_point():
        return {"shape": list(t.shape), "dtype": "int32", "data": [int(v) for v in t.flatten().tolist()]}
    # JSON has no infinities: masked logits are written as the strings "-inf"/"inf".
    data = [v if math.isfinite(v) else ("-inf" if v < 0 else "inf") for v in t.flatten().tolist()]
    return {"shape": list(t.shape), "dtype": "float", "data": data}


def short_inputs(d):
    """Inputs are float32 values: 9 significant digits are exact (smaller files)."""
    for v in d.values():
        if "dtype" not in v:
            short_inputs(v)
        elif v["dtype"] == "float":
            v["data"] = [float("%.9g" % x) if isinstance(x, float) else x for x in v["data"]]
    return d


# ---------------------------------------------------------------- segments (emo-method.md §2)

def segments_from_eos(ids, eos):
    """Router segments: seg[b,t] = number of EOS at positions 1..t (§9).
    EOS at p > 0 starts the next segment; one at position 0 starts nothing."""
    is_eos = ids == eos
    is_eos[:, 0] = False
    return is_eos.long().cumsum(-1)


def segments_from_eos_literal(ids, eos):
    """§2 as written: pos = sorted {p: ids[p]==EOS, p>0}; segments [0,p1),[p1,p2),...,[pn,S)."""
    out = torch.zeros_like(ids)
    for b in range(ids.shape[0]):
        pos = [p for p in range(1, ids.shape[1]) if int(ids[b, p]) == eos]
        bounds = [0] + pos + [ids.shape[1]]
        for s in range(len(bounds) - 1):
            out[b, bounds[s]:bounds[s + 1]] = s
    return out


def documents_from_eos(ids, eos):
    """Attention documents: EOS is counted in the preceding document."""
    is_eos = (ids == eos).long()
    return is_eos.cumsum(-1) - is_eos


# ---------------------------------------------------------------- blocks

def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def linear(x, w):
    """PyTorch's Linear without bias: w is [out, in] (so are all weights here)."""
    return x @ w.T


def swiglu(x, w1, w3, w2):
    return linear(torch.nn.functional.silu(linear(x, w1)) * linear(x, w3), w2)


def emo_route(x, w_router, seg, pools, kp, ep, allowed=None):
    """§1, §3, §4. x [B,S,d] (normalised), w_router [E,d], seg [B,S],
    pools [B,NSeg] long or None, allowed [E'] bool or None."""
    logits = linear(x, w_router)[..., :ep]                 # [B,S,E'] §1
    if allowed is not None:
        logits = logits.masked_fill(~allowed, NEG_INF)      # pruned experts
    p0 = torch.softmax(logits, dim=-1)
    out = {"logits": logits, "raw_probs": p0}
    masked = logits
    if pools is not None:
        B, S = seg.shape
        nseg = pools.shape[1]
        # §3 literal: per segment, softmax over its tokens, sum, keep the top n.
        keep_seg = torch.zeros(B, nseg, ep, dtype=torch.bool)
        scores = torch.zeros(B, nseg, ep)
        for b in range(B):
            for s in range(nseg):
                tok = (seg[b] == s).nonzero().flatten()
                if len(tok) == 0:
                    continue
                d_s = torch.softmax(logits[b, tok, :], dim=-1).sum(0)
                scores[b, s] = d_s
                n = int(pools[b, s])
                if n >= ep:
                    keep_seg[b, s] = True
                else:
                    keep_seg[b, s, torch.topk(d_s, n).indices] = True
        # §9 vectorised form: scatter-add P0 into [B,nseg,E'] must agree.
        d_vec = torch.zeros(B, nseg, ep).scatter_add_(1, seg[..., None].expand(B, S, ep), p0.detach())
        assert torch.allclose(d_vec, scores, rtol=1e-12, atol=1e-12)
        keep_tok = torch.gather(keep_seg, 1, seg[..., None].expand(B, S, ep))
        masked = logits.masked_fill(~keep_tok, NEG_INF)      # §3.4
        out.update(pool_scores=scores, pool_mask=keep_tok, keep_seg=keep_seg)
    sc = torch.softmax(masked, dim=-1)                      # §4 renormalised over the pool
    w, idx = torch.topk(sc, kp, dim=-1)                     # not renormalised
    out.update(masked=masked, probs=sc, experts=idx, gates=w)
    return out


def check_margins(r, kp, pools, seg, ep, tag):
    """Refuse goldens whose indices float32 rounding could flip."""
    sc = r["probs"]
    srt = torch.sort(sc, dim=-1, descending=True).values
    gap = (srt[..., kp - 1] - srt[..., kp]) / srt[..., 0]
    assert gap.min() > 1e-4, f"{tag}: top-k margin {gap.min():.3g}"
    if pools is not None:
        d = r["pool_scores"]
        B, nseg = pools.shape
        for b in range(B):
            for s in range(nseg):
                n = int(pools[b, s])
                if n >= ep or not bool((seg[b] == s).any()):
                    continue
                v = torch.sort(d[b, s], descending=True).values
                rel = (v[n - 1] - v[n]) / v[0]
                assert rel > 1e-4, f"{tag}: pool margin {rel:.3g} at row {b} seg {s} n {n}"


def lb_loss(experts, probs, valid, ep, kp):
    """§5: LB = (E'/k') Σ_i c_i P_i / T, c = routed counts (no grad), P = mean Sc."""
    v = valid.to(probs.dtype)
    c = (torch.nn.functional.one_hot(experts, ep).sum(-2) * v[..., None]).sum((0, 1))
    t = v.sum()
    p = (probs * v[..., None]).sum((0, 1)) / t
    return (ep / kp) * (c * p).sum() / t, c


def lb_loss_local(experts, probs, valid, ep, kp, rows):
    """Local ablation: counts, P and T per group of `rows` rows; mean over groups."""
    vals = []
    for g0 in range(0, experts.shape[0], rows):
        vals.append(lb_loss(experts[g0:g0 + rows], probs[g0:g0 + rows], valid[g0:g0 + rows], ep, kp)[0])
    return torch.stack(vals).mean()


def router_z(masked, valid):
    lse = torch.logsumexp(masked, dim=-1)
    v = valid.to(lse.dtype)
    return (lse.pow(2) * v).sum() / v.sum()


def moe_forward(x, r, w1, w3, w2, shared, ep):
    """y = Σ_j w_j SwiGLU_{idx_j}(x) + 1.0·SwiGLU_shared(x), token by token."""
    B, S, d = x.shape
    y = torch.zeros(B, S, d)
    for b in range(B):
        for t in range(S):
            for j in range(r["experts"].shape[-1]):
                e = int(r["experts"][b, t, j])
                y[b, t] += r["gates"][b, t, j] * swiglu(x[b, t], w1[e], w3[e], w2[e])
            if shared:
                y[b, t] += swiglu(x[b, t], w1[ep], w3[ep], w2[ep])
    return y


def rope(x, theta):
    """OLMo-core rotate-half RoPE on x [B,H,S,dh], positions 0..S-1 of the row."""
    S, dh = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dh, 2) / dh))
    freqs = torch.outer(torch.arange(S, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
    rot = torch.cat((-x2, x1), dim=-1)
    return x * emb.cos() + rot * emb.sin()


def attention(x, p, n_heads, theta, attn_seg, doc_mask):
    B, S, d = x.shape
    q, k, v = linear(x, p["w_q"]), linear(x, p["w_k"]), linear(x, p["w_v"])
    dh = q.shape[-1] // n_heads
    q, k, v = (t.view(B, S, n_heads, dh).transpose(1, 2) for t in (q, k, v))
    q, k = rope(q, theta), rope(k, theta)
    causal = torch.tril(torch.ones(S, S, dtype=torch.bool))
    if doc_mask:
        allowed = (attn_seg[:, :, None] == attn_seg[:, None, :]) & causal
    else:
        allowed = causal.expand(B, S, S)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
    scores = scores.masked_fill(~allowed[:, None], NEG_INF)
    o = torch.softmax(scores, dim=-1) @ v
    return linear(o.transpose(1, 2).reshape(B, S, n_heads * dh), p["w_out"])


# ---------------------------------------------------------------- cases

def rand(g, *shape, std=1.0):
    return f32(torch.randn(*shape, generator=g) * std)


def moe_layer_case(name, seed, *, E, shared, k, d, h, B, S, eos, n_docs, router, pools_spec,
                   eval_pool=None, allowed=None, with_attention=False, n_heads=2, theta=10000.0):
    """One block's MoE (and optionally the attention before it) on random data."""
    for attempt in range(200):
        g = torch.Generator().manual_seed(seed + attempt)
        ep = E - 1 if shared else E
        kp = k - 1 if shared else k
        ids = torch.randint(0, 40, (B, S), generator=g)
        for b in range(B):  # n_docs EOS per row at random positions (one maybe at 0)
            pos = torch.randperm(S, generator=g)[: n_docs[b]]
            ids[b, pos] = eos
        seg = segments_from_eos(ids, eos)
        assert torch.equal(seg, segments_from_eos_literal(ids, eos))
        nseg = S
        if router == "emo":
            if eval_pool is not None:
                pools = torch.full((B, nseg), eval_pool, dtype=torch.long)
            else:
                pools = torch.tensor(pools_spec, dtype=torch.long)[torch.randint(0, len(pools_spec), (B, nseg), generator=g)]
        else:
            pools = None
        params = {
            "x": rand(g, B, S, d),
            "attention_norm": f32(1 + 0.1 * torch.randn(d, generator=g)),
            "feed_forward_norm": f32(1 + 0.1 * torch.randn(d, generator=g)),
            "router": rand(g, E, d, std=0.5),
            "w1": rand(g, E, h, d, std=0.3),
            "w3": rand(g, E, h, d, std=0.3),
            "w2": rand(g, E, d, h, std=0.3),
        }
        attn = None
        x = params["x"]
        if with_attention:
            attn = {n: rand(g, d, d, std=0.3) for n in ("w_q", "w_k", "w_v", "w_out")}
            docs = documents_from_eos(ids, eos)
            hmid = x + attention(rms_norm(x, params["attention_norm"], 1e-6), attn, n_heads, theta, docs, True)
        else:
            hmid = x
        xn = rms_norm(hmid, params["feed_forward_norm"], 1e-6)
        allow = torch.tensor(allowed) if allowed is not None else None
        r = emo_route(xn, params["router"], seg, pools, kp, ep, allow)
        try:
            check_margins(r, kp, pools, seg, ep, name)
        except AssertionError as e:
            print("  retry:", e)
            continue
        valid = torch.ones(B, S, dtype=torch.bool)
        lb, counts = lb_loss(r["experts"], r["probs"], valid, ep, kp)
        y = moe_forward(xn, r, params["w1"], params["w3"], params["w2"], shared, ep)
        case = {
            "name": name,
            "config": {"num_experts": E, "shared_expert": shared, "top_k": k, "d_model": d,
                       "expert_hidden": h, "router": router, "eos": eos, "n_heads": n_heads,
                       "rope_theta": theta, "with_attention": with_attention,
                       "eval_pool": eval_pool or 0},
            "inputs": {"ids": enc(ids), "segments": enc(seg), "x": enc(x),
                       "attention_norm": enc(params["attention_norm"]),
                       "feed_forward_norm": enc(params["feed_forward_norm"]),
                       "router": enc(params["router"]), "w1": enc(params["w1"]),
                       "w3": enc(params["w3"]), "w2": enc(params["w2"])},
            "outputs": {"logits": enc(r["logits"]), "raw_probs": enc(r["raw_probs"]),
                        "probs": enc(r["probs"]), "experts": enc(r["experts"]),
                        "gates": enc(r["gates"]), "counts": enc(counts),
                        "lb": enc(lb), "lb_local_1row": enc(lb_loss_local(r["experts"], r["probs"], valid, ep, kp, 1)),
                        "router_z": enc(router_z(r["masked"], valid)),
                        "moe_out": enc(y), "block_out": enc(hmid + y)},
        }
        if with_attention:
            case["inputs"]["attn"] = {n: enc(v) for n, v in attn.items()}
            case["inputs"]["attn_segments"] = enc(documents_from_eos(ids, eos))
        if pools is not None:
            case["inputs"]["pools"] = enc(pools)
            case["outputs"]["pool_scores"] = enc(r["pool_scores"])
            case["outputs"]["pool_mask"] = enc(r["pool_mask"])
        if allow is not None:
            case["inputs"]["allowed"] = enc(allow)
        short_inputs(case["inputs"])
        print(f"{name}: seed {seed + attempt}, segments/row {[int(seg[b].max()) + 1 for b in range(B)]}")
        return case
    raise SystemExit(f"{name}: no seed with safe margins")


def model_case(name, seed, *, router, doc_mask, V=50, d=32, L=2, H=4, E=9, k=3, h=48, B=2, S=32,
               eos=0, pools_spec=(2, 3, 4, 6, 8, 12), theta=10000.0):
    """A whole tiny model: embeddings, L blocks, final norm, LM head, losses."""
    ep, kp = E - 1, k - 1
    for attempt in range(200):
        g = torch.Generator().manual_seed(seed + attempt)
        ids = torch.randint(1, V, (B, S), generator=g)
        for b, n in enumerate((3, 1)):
            ids[b, torch.randperm(S, generator=g)[:n]] = eos
        seg = segments_from_eos(ids, eos)
        docs = documents_from_eos(ids, eos)
        labels = torch.cat([ids[:, 1:], torch.full((B, 1), -1)], dim=1)
        pools = torch.tensor(pools_spec)[torch.randint(0, len(pools_spec), (L, B, S), generator=g)] if router == "emo" else None
        p = {"embeddings": rand(g, V, d, std=1.0), "lm_head_norm": f32(1 + 0.1 * torch.randn(d, generator=g)),
             "lm_head": rand(g, V, d, std=0.2), "blocks": []}
        for _ in range(L):
            p["blocks"].append({
                "attention_norm": f32(1 + 0.1 * torch.randn(d, generator=g)),
                "feed_forward_norm": f32(1 + 0.1 * torch.randn(d, generator=g)),
                "w_q": rand(g, d, d, std=0.2), "w_k": rand(g, d, d, std=0.2),
                "w_v": rand(g, d, d, std=0.2), "w_out": rand(g, d, d, std=0.2),
                "router": rand(g, E, d, std=0.5),
                "w1": rand(g, E, h, d, std=0.2), "w3": rand(g, E, h, d, std=0.2), "w2": rand(g, E, d, h, std=0.2),
            })
        x = p["embeddings"][ids]
        valid = torch.ones(B, S, dtype=torch.bool)
        layers, ok = [], True
        for l, bp in enumerate(p["blocks"]):
            hmid = x + attention(rms_norm(x, bp["attention_norm"], 1e-6), bp, H, theta, docs, doc_mask)
            xn = rms_norm(hmid, bp["feed_forward_norm"], 1e-6)
            r = emo_route(xn, bp["router"], seg, pools[l] if pools is not None else None, kp, ep)
            try:
                check_margins(r, kp, pools[l] if pools is not None else None, seg, ep, f"{name} layer {l}")
            except AssertionError as e:
                print("  retry:", e)
                ok = False
                break
            lb, counts = lb_loss(r["experts"], r["probs"], valid, ep, kp)
            layers.append({"experts": r["experts"], "gates": r["gates"], "lb": lb, "counts": counts,
                           "z": router_z(r["masked"], valid)})
            x = hmid + moe_forward(xn, r, bp["w1"], bp["w3"], bp["w2"], True, ep)
        if not ok:
            continue
        logits = linear(rms_norm(x, p["lm_head_norm"], 1e-6), p["lm_head"])
        use = labels >= 0
        lse = torch.logsumexp(logits, -1)
        ce = torch.nn.functional.cross_entropy(logits[use], labels[use])
        lmz = lse[use].pow(2).mean()
        aux = 0.001 / L * sum(l["z"] for l in layers) + 0.1 / L * sum(l["lb"] for l in layers) + 1e-5 * lmz
        inputs = {"ids": enc(ids), "segments": enc(seg), "attn_segments": enc(docs), "labels": enc(labels),
                  "embeddings": enc(p["embeddings"]), "lm_head_norm": enc(p["lm_head_norm"]),
                  "lm_head": enc(p["lm_head"])}
        if pools is not None:
            inputs["pools"] = enc(pools)
        for l, bp in enumerate(p["blocks"]):
            for n, v in bp.items():
                inputs[f"blocks.{l}.{n}"] = enc(v)
        outputs = {"logits": enc(logits), "ce": enc(ce), "lm_head_z": enc(lmz), "aux": enc(aux), "loss": enc(ce + aux),
                   "router_z": enc(torch.stack([l["z"] for l in layers])), "lb": enc(torch.stack([l["lb"] for l in layers])),
                   "counts": enc(torch.stack([l["counts"] for l in layers]))}
        for l, lay in enumerate(layers):
            outputs[f"experts.{l}"] = enc(lay["experts"])
            outputs[f"gates.{l}"] = enc(lay["gates"])
        print(f"{name}: seed {seed + attempt}")
        return {"name": name, "config": {"vocab_size": V, "d_model": d, "n_layers": L, "n_heads": H, "num_experts": E,
                                         "top_k": k, "expert_hidden": h, "router": router, "doc_attention_mask": doc_mask,
                                         "rope_theta": theta, "eos": eos},
                "inputs": short_inputs(inputs), "outputs": outputs}
    raise SystemExit(f"{name}: no seed with safe margins")


def main():
    os.makedirs(OUT, exist_ok=True)
    # §2 segmentation on hand-made rows: EOS at 0, adjacent EOS, EOS last.
    ids = torch.tensor([[7, 3, 0, 4, 5, 0, 0, 9],
                        [0, 1, 2, 3, 0, 5, 6, 0],
                        [1, 2, 3, 4, 5, 6, 7, 8]])
    segs = {"eos": 0, "ids": enc(ids), "segments": enc(segments_from_eos(ids, 0)),
            "documents": enc(documents_from_eos(ids, 0))}
    assert torch.equal(segments_from_eos(ids, 0), segments_from_eos_literal(ids, 0))

    common = dict(d=16, h=24, B=2, S=24, eos=0, n_docs=[4, 2])
    cases = [
        moe_layer_case("emo_e9_shared_k3", 100, E=9, shared=True, k=3, router="emo",
                       pools_spec=[2, 3, 5, 8, 12], **common),
        moe_layer_case("emo_e9_shared_k3_bigpools", 200, E=9, shared=True, k=3, router="emo",
                       pools_spec=[8, 9, 100], **common),
        moe_layer_case("standard_e9_shared_k3", 300, E=9, shared=True, k=3, router="standard",
                       pools_spec=None, **common),
        moe_layer_case("emo_e8_noshared_k3", 400, E=8, shared=False, k=3, router="emo",
                       pools_spec=[3, 4, 6, 8, 9], **common),
        moe_layer_case("emo_e9_eval_pool4", 500, E=9, shared=True, k=3, router="emo",
                       pools_spec=None, eval_pool=4, **common),
        moe_layer_case("emo_e9_subset", 600, E=9, shared=True, k=3, router="emo",
                       pools_spec=[2, 3, 5, 8], allowed=[True, False, True, True, False, True, True, False], **common),
        moe_layer_case("emo_e9_block", 700, E=9, shared=True, k=3, router="emo",
                       pools_spec=[2, 3, 5, 8, 12], with_attention=True, **common),
    ]
    with open(os.path.join(OUT, "moe_goldens.json"), "w") as f:
        json.dump({"generator": "scripts/emo_reference/make_goldens.py", "torch": torch.__version__,
                   "segments": segs, "cases": cases}, f)
    models = [model_case("model_emo_docmask", 1000, router="emo", doc_mask=True),
              model_case("model_standard_causal", 2000, router="standard", doc_mask=False)]
    with open(os.path.join(OUT, "model_goldens.json"), "w") as f:
        json.dump({"generator": "scripts/emo_reference/make_goldens.py", "torch": torch.__version__,
                   "cases": models}, f)
    print("wrote", os.path.abspath(OUT))


if __name__ == "__main__":
    sys.exit(main())
