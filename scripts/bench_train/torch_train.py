#!/usr/bin/env python3
"""The emopipe EMO model and training step in PyTorch, for the CPU benchmark.

Same model as emopipe's model package (docs/model.md): pre-norm blocks of
RoPE attention (no biases, document mask) and a SwiGLU MoE with a shared
expert, EMO per-document pools (scatter-add of P0, top-n per segment, -inf
mask), top-k' gates not renormalised, router z, LM-head z and load-balancing
losses with the same weights; AdamW (betas 0.9/0.95, eps 1e-8, wd 0.1 except
embeddings and norm weights), global-norm clipping 1.0, the same cosine
schedule. Experts run dropless by sorting assignments by expert and looping
over experts (index_select + matmul), the usual CPU formulation.

Reads the store's .npy export (tokens + spans) and the model config that the
Go benchmark printed, times one warm-up step + N steps, prints one JSON line.

    python torch_train.py --shards DIR --go-json go.json --steps 5 --threads 2
"""

import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def load_rows(shards, n):
    """First n rows: tokens [n, S+1] int64 and router segments [n, S+1] (span index, -1 padding)."""
    toks, segs = [], []
    for tf in sorted(glob.glob(os.path.join(shards, "shard_*.tokens.npy"))):
        t = np.load(tf).astype(np.int64)
        sp = np.load(tf.replace(".tokens.npy", ".spans.npy"))
        seg = np.full(t.shape, -1, dtype=np.int64)
        last_row, idx = -1, 0
        for row, start, length, _, _ in sp:
            idx = idx + 1 if row == last_row else 0
            last_row = row
            seg[row, start:start + length] = idx
        toks.append(t)
        segs.append(seg)
        if sum(len(x) for x in toks) >= n:
            break
    return np.concatenate(toks)[:n], np.concatenate(segs)[:n]


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_tables(seq, dh, theta):
    inv = 1.0 / (theta ** (torch.arange(0, dh, 2, dtype=torch.float32) / dh))
    ang = torch.outer(torch.arange(seq, dtype=torch.float32), inv)
    ang = torch.cat([ang, ang], -1)
    return ang.cos(), ang.sin()


def rope(x, cos, sin):  # x [B,H,S,dh], rotate-half
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * cos + rot * sin


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, H = c["d_model"], c["n_heads"]
        dh = c.get("head_dim") or d // H
        E, h = c["num_experts"], c["expert_hidden"]
        std = c["init_std"]
        self.c, self.H, self.dh = c, H, dh
        self.attention_norm = RMSNorm(d, c["norm_eps"])
        self.feed_forward_norm = RMSNorm(d, c["norm_eps"])
        p = lambda *s: torch.nn.Parameter(torch.randn(*s) * std)
        self.w_q, self.w_k, self.w_v, self.w_out = p(H * dh, d), p(H * dh, d), p(H * dh, d), p(d, H * dh)
        self.router = torch.nn.Parameter(torch.nn.init.trunc_normal_(torch.empty(E, d), std=std, a=-3 * std, b=3 * std))
        self.w1, self.w3, self.w2 = p(E, h, d), p(E, h, d), p(E, d, h)

    def attn(self, x, mask, cos, sin):
        B, S, _ = x.shape
        q = (x @ self.w_q.T).view(B, S, self.H, self.dh).transpose(1, 2)
        k = (x @ self.w_k.T).view(B, S, self.H, self.dh).transpose(1, 2)
        v = (x @ self.w_v.T).view(B, S, self.H, self.dh).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return o.transpose(1, 2).reshape(B, S, -1) @ self.w_out.T

    def moe(self, x, seg, valid, pools):
        c = self.c
        B, S, d = x.shape
        E = c["num_experts"]
        ep = E - 1 if c["shared_expert"] else E
        kp = c["top_k"] - 1 if c["shared_expert"] else c["top_k"]
        logits = (x @ self.router.T)[..., :ep]                       # [B,S,E']
        p0 = torch.softmax(logits, -1)
        masked = logits
        if pools is not None:                                        # §3 per-document pool
            nseg = pools.shape[1]
            segc = seg.clamp(min=0)
            d_s = torch.zeros(B, nseg, ep).scatter_add_(1, segc[..., None].expand(B, S, ep),
                                                       (p0.detach() * valid[..., None]))
            order = torch.argsort(d_s, dim=-1, descending=True, stable=True)
            rank = torch.empty_like(order).scatter_(-1, order, torch.arange(ep).expand_as(order))
            keep = rank < pools.clamp(max=ep)[..., None]             # [B,NSeg,E']
            keep_tok = torch.gather(keep, 1, segc[..., None].expand(B, S, ep)) | ~valid[..., None]
            masked = logits.masked_fill(~keep_tok, float("-inf"))
        sc = torch.softmax(masked, -1)
        gates, idx = torch.topk(sc, kp, -1)                          # not renormalised
        gates = gates * valid[..., None]
        # Dropless dispatch: sort (token, slot) assignments by expert.
        xf = x.reshape(-1, d)
        flat_idx, flat_g = idx.reshape(-1), gates.reshape(-1)
        tok = torch.arange(B * S).repeat_interleave(kp)
        order = torch.argsort(flat_idx, stable=True)
        counts = torch.bincount(flat_idx, minlength=ep).tolist()
        y = torch.zeros_like(xf)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            sel = order[start:start + n]
            start += n
            t = tok[sel]
            xe = xf.index_select(0, t)
            he = F.silu(xe @ self.w1[e].T) * (xe @ self.w3[e].T)
            y.index_add_(0, t, (he @ self.w2[e].T) * flat_g[sel][:, None])
        if c["shared_expert"]:
            y = y + (F.silu(xf @ self.w1[E - 1].T) * (xf @ self.w3[E - 1].T)) @ self.w2[E - 1].T
        # Statistics for the losses (over real tokens).
        vf = valid.float()
        cnt = (F.one_hot(idx, ep).sum(-2) * vf[..., None]).sum((0, 1)).detach()
        T = vf.sum().clamp(min=1)
        P = (sc * vf[..., None]).sum((0, 1)) / T
        lb = (ep / kp) * (cnt * P).sum() / T
        lse = torch.logsumexp(masked, -1)
        rz = (lse.pow(2) * vf).sum() / T
        return y.view(B, S, d), lb, rz

    def forward(self, x, mask, seg, valid, pools, cos, sin):
        h = x + self.attn(self.attention_norm(x), mask, cos, sin)
        y, lb, rz = self.moe(self.feed_forward_norm(h), seg, valid, pools)
        return h + y, lb, rz


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        V, d = c["vocab_size"], c["d_model"]
        self.embeddings = torch.nn.Parameter(torch.randn(V, d) * c["init_std"])
        self.blocks = torch.nn.ModuleList([Block(c) for _ in range(c["n_layers"])])
        self.lm_head_norm = RMSNorm(d, c["norm_eps"])
        self.w_out = torch.nn.Parameter(torch.randn(V, d) * c["init_std"])
        dh = c.get("head_dim") or d // c["n_heads"]
        self.cos, self.sin = rope_tables(c["seq_len"], dh, c["rope_theta"])

    def forward(self, tokens, seg, labels, pools):
        c = self.c
        B, S = tokens.shape
        valid = seg >= 0
        causal = torch.ones(S, S, dtype=torch.bool).tril()
        if c["doc_attention_mask"]:
            mask = (seg[:, :, None] == seg[:, None, :]) & causal
        else:
            mask = causal.expand(B, S, S)
        mask = mask | torch.eye(S, dtype=torch.bool)  # padding rows attend to themselves (no NaN)
        mask = mask[:, None]
        h = self.embeddings[tokens]
        lbs, rzs = [], []
        for l, blk in enumerate(self.blocks):
            h, lb, rz = blk(h, mask, seg, valid, pools[l] if pools is not None else None, self.cos, self.sin)
            lbs.append(lb)
            rzs.append(rz)
        logits = self.lm_head_norm(h) @ self.w_out.T
        use = (labels >= 0) & valid
        lse = torch.logsumexp(logits, -1)
        picked = logits.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        n = use.float().sum().clamp(min=1)
        ce = ((lse - picked) * use).sum() / n
        lmz = (lse.pow(2) * use).sum() / n
        L = c["n_layers"]
        aux = c["router_z_loss_weight"] / L * sum(rzs) + c["lb_loss_weight"] / L * sum(lbs) + c["lm_head_z_loss_weight"] * lmz
        return ce + aux, ce


def flops_per_token(c, seq):
    """Config.FLOPsPerToken: 6 × active non-embedding params + attention."""
    d, V, L, E, h, k = c["d_model"], c["vocab_size"], c["n_layers"], c["num_experts"], c["expert_hidden"], c["top_k"]
    hd = c["n_heads"] * (c.get("head_dim") or d // c["n_heads"])
    expert = 3 * d * h
    per_layer = 4 * d * hd + 2 * d + d * E + E * expert
    total = V * d + L * per_layer + d + d * V
    active = total - L * E * expert + L * k * expert
    return 6 * (active - V * d) + 12 * L * hd * seq


def lr_at(o, s):
    t = s + 1
    if t <= o["warmup"]:
        return o["lr"] * t / o["warmup"]
    floor = o["lr"] * o["min_lr_ratio"]
    if t >= o["schedule_steps"]:
        return floor
    frac = (t - o["warmup"]) / (o["schedule_steps"] - o["warmup"])
    return floor + (o["lr"] - floor) * 0.5 * (1 + math.cos(math.pi * frac))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", required=True)
    ap.add_argument("--go-json", required=True, help="the Go benchmark's output (model config, batch, peak)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shuffle", action="store_true", help="random rows (learning-curve checks) instead of the first ones")
    ap.add_argument("--log-every", type=int, default=0, help="print the mean CE every N steps (to stderr)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    g = json.load(open(a.go_json))
    c, o, B = g["model"], g["optim"], g["batch"]
    S = c["seq_len"]
    rows, segs = load_rows(a.shards, 10**9 if a.shuffle else B * (a.steps + 1))
    if a.shuffle:
        perm = np.random.default_rng(7).permutation(len(rows))
        rows, segs = rows[perm], segs[perm]
    model = Model(c)
    decay = [p for n, p in model.named_parameters() if not ("embeddings" in n or "norm" in n)]
    no_decay = [p for n, p in model.named_parameters() if "embeddings" in n or "norm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    rng = np.random.default_rng(1)
    E = c["num_experts"]

    def step(i):
        t = torch.from_numpy(rows[i * B:(i + 1) * B])
        sg = torch.from_numpy(segs[i * B:(i + 1) * B])
        tokens, labels, seg = t[:, :S], t[:, 1:].clone(), sg[:, :S]
        labels[(sg[:, :S] < 0) | (sg[:, 1:] < 0)] = -1
        pools = None
        if c["router"] == "emo":
            pools = torch.from_numpy(rng.integers(c["pool_min"], c["pool_max"] + 1, size=(c["n_layers"], B, S)))
        for grp in opt.param_groups:
            grp["lr"] = lr_at(o, i)
        loss, ce = model(tokens, seg, labels, pools)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o["clip_norm"])
        opt.step()
        return float(loss.detach()), int((seg >= 0).sum()), float(ce.detach())

    t0 = time.perf_counter()
    step(0)
    warm = time.perf_counter() - t0
    tokens, secs, last, ces = 0, 0.0, 0.0, []
    for i in range(1, a.steps + 1):
        t0 = time.perf_counter()
        last, n, ce = step(i)
        secs += time.perf_counter() - t0
        tokens += n
        ces.append(ce)
        if a.log_every and i % a.log_every == 0:
            print(f"step {i} mean CE {np.mean(ces[-a.log_every:]):.3f}", file=sys.stderr)
    tps = tokens / secs
    fpt = flops_per_token(c, S)
    out = {"impl": f"PyTorch {torch.__version__} (eager, CPU)", "threads": torch.get_num_threads(),
           "batch": B, "seq_len": S, "steps": a.steps, "warmup_s": warm, "s_per_step": secs / a.steps,
           "tokens_per_s": tps, "flops_per_token": fpt, "model_flops_per_s": tps * fpt, "last_loss": last,
           "params": sum(p.numel() for p in model.parameters())}
    if g.get("peak_flops"):
        out["mfu"] = tps * fpt / g["peak_flops"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
