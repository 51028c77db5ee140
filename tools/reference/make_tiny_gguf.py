#!/usr/bin/env python3
"""Writes the tiny LLaMA fixture (Tests/Fixtures/tiny_llama/model + tokenizer.model) as a llama.cpp GGUF:
architecture `llama`, tensors renamed to `blk.N.*`, f16 matrices and f32 norms (as llama.cpp's converter
does), and the SentencePiece vocabulary as `tokenizer.ggml.model = "llama"` with tokens, scores and token
types. The Swift test checks that this GGUF gives the official folder's logits and token ids.

Run: /usr/bin/python3 tools/reference/make_tiny_gguf.py   (Debian torch + sentencepiece; the `gguf` package
is taken from .cache/venv, see tools/reference/README.md)
"""
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.extend(glob.glob(os.path.join(ROOT, ".cache", "venv", "lib", "python3*", "site-packages")))

import numpy as np  # noqa: E402
import sentencepiece as spm  # noqa: E402
import torch  # noqa: E402
import gguf  # noqa: E402

SRC = os.path.join(ROOT, "Tests", "Fixtures", "tiny_llama")
OUT = os.path.join(SRC, "tiny_llama.f16.gguf.bin")


def main():
    params = json.load(open(os.path.join(SRC, "model", "params.json")))
    sd = torch.load(os.path.join(SRC, "model", "consolidated.00.pth"), map_location="cpu")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(SRC, "tokenizer.model"))
    w = gguf.GGUFWriter(OUT, "llama")
    dim, n_layers, n_heads = params["dim"], params["n_layers"], params["n_heads"]
    hidden = sd["layers.0.feed_forward.w1.weight"].shape[0]
    w.add_context_length(512)
    w.add_embedding_length(dim)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(hidden)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_heads)
    w.add_layer_norm_rms_eps(params["norm_eps"])
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(dim // n_heads)
    w.add_tokenizer_model("llama")
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_unused(i):
            types.append(5)
        elif sp.is_byte(i):
            types.append(6)
        else:
            types.append(1)
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    def f16(t):
        return t.to(torch.float16).numpy()

    def f32(t):
        return t.to(torch.float32).numpy()

    w.add_tensor("token_embd.weight", f16(sd["tok_embeddings.weight"]))
    names = {"attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v", "attention.wo": "attn_output",
             "feed_forward.w1": "ffn_gate", "feed_forward.w2": "ffn_down", "feed_forward.w3": "ffn_up"}
    for i in range(n_layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", f32(sd[f"layers.{i}.attention_norm.weight"]))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", f32(sd[f"layers.{i}.ffn_norm.weight"]))
        for k, v in names.items():
            w.add_tensor(f"blk.{i}.{v}.weight", f16(sd[f"layers.{i}.{k}.weight"]))
    w.add_tensor("output_norm.weight", f32(sd["norm.weight"]))
    w.add_tensor("output.weight", f16(sd["output.weight"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
