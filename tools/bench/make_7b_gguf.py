#!/usr/bin/env python3
"""Writes a GGUF of LLaMA-7B's shape with random f16 weights, for speed comparisons with llama.cpp on the
very same file (`llama-adapter bench --model FILE --compare-llamacpp BUILD`). Tensors are streamed one at a
time, so the 13.5 GB file never sits in memory. Quantize it with llama.cpp's own tool for the other types:

    python3 tools/bench/make_7b_gguf.py /tmp/llama7b.f16.gguf          # needs `pip install gguf numpy`
    LLAMA=/path/to/llama.cpp/build/bin
    $LLAMA/llama-quantize /tmp/llama7b.f16.gguf /tmp/llama7b.q8_0.gguf q8_0
    $LLAMA/llama-quantize /tmp/llama7b.f16.gguf /tmp/llama7b.q4_0.gguf q4_0

Weights are N(0, 0.02) (norms 1), as an untrained model's; decode and prefill speed do not depend on the
values. The vocabulary is 32000 SentencePiece-style pieces (<unk>, <s>, </s>, 256 byte pieces, fillers).
Options: --layers N (default 32) for a quicker file of the same widths.
"""
import argparse

import numpy as np
import gguf

DIM, FFN, HEADS, VOCAB, LAYERS = 4096, 11008, 32, 32000, 32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    w = gguf.GGUFWriter(a.out, "llama")
    w.add_context_length(4096)
    w.add_embedding_length(DIM)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(DIM // HEADS)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    while len(tokens) < VOCAB:
        tokens.append(f"\u2581t{len(tokens)}".encode("utf-8"))
        types.append(1)
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(VOCAB - 259)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    shapes = [("token_embd.weight", (VOCAB, DIM), np.float16)]
    for i in range(a.layers):
        shapes += [(f"blk.{i}.attn_norm.weight", (DIM,), np.float32), (f"blk.{i}.ffn_norm.weight", (DIM,), np.float32)]
        shapes += [(f"blk.{i}.{n}.weight", (DIM, DIM), np.float16) for n in ("attn_q", "attn_k", "attn_v", "attn_output")]
        shapes += [(f"blk.{i}.ffn_gate.weight", (FFN, DIM), np.float16), (f"blk.{i}.ffn_down.weight", (DIM, FFN), np.float16),
                   (f"blk.{i}.ffn_up.weight", (FFN, DIM), np.float16)]
    shapes += [("output_norm.weight", (DIM,), np.float32), ("output.weight", (VOCAB, DIM), np.float16)]
    for name, shape, dt in shapes:
        w.add_tensor_info(name, shape, np.dtype(dt), int(np.prod(shape)) * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, dt in shapes:
        if dt == np.float32:
            t = np.ones(shape, dtype=np.float32)
        else:
            t = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
        w.write_tensor_data(t)
    w.close()
    print("wrote", a.out)


if __name__ == "__main__":
    main()
