#!/usr/bin/env python3
"""Writes the tiny LLaMA fixture (Tests/Fixtures/tiny_llama/model) again in Hugging Face layout:
config.json + model.safetensors (f16), with wq/wk permuted for rotate-half RoPE exactly as transformers'
convert_llama_weights_to_hf.py `permute` does. The Swift test checks both layouts give the same logits.

Run: /usr/bin/python3 tools/reference/make_tiny_hf.py   (Debian python3-torch)
"""
import json
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "..", "Tests", "Fixtures", "tiny_llama", "model")
OUT = os.path.join(HERE, "..", "..", "Tests", "Fixtures", "tiny_llama", "hf")


def permute(w, n_heads):
    dim1, dim2 = w.shape
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        b = t.numpy().tobytes()
        header[name] = {"dtype": {torch.float16: "F16", torch.float32: "F32"}[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    params = json.load(open(os.path.join(SRC, "params.json")))
    sd = torch.load(os.path.join(SRC, "consolidated.00.pth"), map_location="cpu")
    n_heads = params["n_heads"]
    out = {"model.embed_tokens.weight": sd["tok_embeddings.weight"], "model.norm.weight": sd["norm.weight"],
           "lm_head.weight": sd["output.weight"]}
    names = {"attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
             "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
             "feed_forward.w3": "mlp.up_proj"}
    for i in range(params["n_layers"]):
        for k, v in names.items():
            w = sd[f"layers.{i}.{k}.weight"]
            if k in ("attention.wq", "attention.wk"):
                w = permute(w, n_heads)
            out[f"model.layers.{i}.{v}.weight"] = w
    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "model.safetensors"), out)
    dim = params["dim"]
    hidden = sd["layers.0.feed_forward.w1.weight"].shape[0]
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
               "intermediate_size": hidden, "num_attention_heads": n_heads, "num_key_value_heads": n_heads,
               "num_hidden_layers": params["n_layers"], "rms_norm_eps": params["norm_eps"], "rope_theta": 10000.0,
               "vocab_size": sd["tok_embeddings.weight"].shape[0], "tie_word_embeddings": False,
               "max_position_embeddings": 512, "torch_dtype": "float16"},
              open(os.path.join(OUT, "config.json"), "w"), indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
