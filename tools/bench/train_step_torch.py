#!/usr/bin/env python3
"""PyTorch CPU timing of one LLaMA-Adapter V2 training step at SmolLM2-135M's shape, the baseline of
`llama-adapter bench --train --preset smollm2 --dtype f32`.

Model: LLaMA (official llama.py forward: RMSNorm, RoPE, causal attention, SwiGLU) with SmolLM2-135M-Instruct's
shape: dim 576, 30 layers, 9 query heads over 3 kv heads (GQA), FFN 1536, vocab 49152, tied embeddings; frozen
float32 weights (random; timing does not depend on values). Trained, as the Swift bench: the paper's Eq. 1
bias (wq, wo, w1, w2, w3) and scale (all seven maps) and both norms of every layer plus the final norm
(phase `finetune`), AdamW(betas 0.9/0.95, weight decay 0.05 except biases and 1-D).
Batch 2 x 128 tokens, the second half of each sequence labelled; loss = shifted cross-entropy, ignore 0.

Protocol: torch.set_num_threads(THREADS); one warm-up step, then the best of N steps (forward, backward,
optimizer step; wall clock). Prints one JSON line {"step_ms": best, "runs": [...], ...}.
Run (Debian's python3-torch): /usr/bin/python3 tools/bench/train_step_torch.py [--runs N] [--threads T]
"""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F

DIM, LAYERS, HEADS, KV_HEADS, HIDDEN, VOCAB = 576, 30, 9, 3, 1536, 49152
HD = DIM // HEADS


def rope(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--no-scale", action="store_true", help="bias + norm only (the official finetune phase's parameters)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    kv = KV_HEADS * HD
    shapes = {"wq": (DIM, DIM), "wk": (kv, DIM), "wv": (kv, DIM), "wo": (DIM, DIM), "w1": (HIDDEN, DIM), "w2": (DIM, HIDDEN), "w3": (HIDDEN, DIM)}
    frozen = [{k: torch.randn(s) * 0.02 for k, s in shapes.items()} for _ in range(LAYERS)]
    emb = torch.randn(VOCAB, DIM) * 0.02
    trained = []
    for _ in range(LAYERS):
        p = {"attn_norm": torch.ones(DIM), "ffn_norm": torch.ones(DIM)}
        for k, (o, _) in shapes.items():
            if not a.no_scale:
                p[k + "_scale"] = torch.ones(o)
            if k not in ("wk", "wv"):
                p[k + "_bias"] = torch.zeros(o)
        for t in p.values():
            t.requires_grad_(True)
        trained.append(p)
    norm = torch.ones(DIM, requires_grad=True)
    params = [t for p in trained for t in p.values()] + [norm]
    opt = torch.optim.AdamW([{"params": params, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95))
    S = a.tokens
    pos = torch.arange(S).float()[:, None] * (1.0 / (10000 ** (torch.arange(0, HD, 2).float() / HD)))[None]
    cos, sin = pos.cos()[None, :, None, :], pos.sin()[None, :, None, :]
    tokens = torch.randint(1, VOCAB, (a.batch, S))
    labels = tokens.clone()
    labels[:, : S // 2] = 0
    mask = torch.triu(torch.full((S, S), float("-inf")), 1)

    def lin(x, w, b, s):
        y = F.linear(x, w, b)
        return y if s is None else y * s

    def step():
        opt.zero_grad(set_to_none=True)
        h = F.embedding(tokens, emb)
        for f, p in zip(frozen, trained):
            x = rms(h, p["attn_norm"])
            q = lin(x, f["wq"], p["wq_bias"], p.get("wq_scale")).view(a.batch, S, HEADS, HD)
            k = lin(x, f["wk"], None, p.get("wk_scale")).view(a.batch, S, KV_HEADS, HD)
            v = lin(x, f["wv"], None, p.get("wv_scale")).view(a.batch, S, KV_HEADS, HD)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            k = k.repeat_interleave(HEADS // KV_HEADS, dim=2)
            v = v.repeat_interleave(HEADS // KV_HEADS, dim=2)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            att = torch.softmax(q @ k.transpose(2, 3) / HD ** 0.5 + mask, dim=-1) @ v
            h = h + lin(att.transpose(1, 2).reshape(a.batch, S, DIM), f["wo"], p["wo_bias"], p.get("wo_scale"))
            x = rms(h, p["ffn_norm"])
            g = F.silu(lin(x, f["w1"], p["w1_bias"], p.get("w1_scale"))) * lin(x, f["w3"], p["w3_bias"], p.get("w3_scale"))
            h = h + lin(g, f["w2"], p["w2_bias"], p.get("w2_scale"))
        out = F.linear(rms(h, norm), emb)[:, :-1]
        loss = F.cross_entropy(out.reshape(-1, VOCAB), labels[:, 1:].flatten(), ignore_index=0)
        loss.backward()
        opt.step()

    step()
    runs = []
    for _ in range(a.runs):
        t = time.perf_counter()
        step()
        runs.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"step_ms": min(runs), "runs": runs, "threads": a.threads, "batch": a.batch, "tokens": S,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
