#!/usr/bin/env python3
"""Write the GGUF and safetensors fixtures for the AdapterFormats tests.

Run with the project venv (gguf-py 0.19 and numpy; no torch needed):
    /work/main/.cache/venv/bin/python tools/reference/make_gguf_fixtures.py

Deterministic (fixed seeds). Outputs, all under Tests/Fixtures/:

gguf/tiny.gguf.bin       GGUF v3, default alignment (32): one tensor of every supported type (f32, f16, bf16,
                         q8_0, q4_0, q4_1, q4_K, q5_K, q6_K; 1-D, 2-D and 3-D shapes) and metadata of every
                         value type (u8 ... f64, bool, string, arrays of each, nested arrays), llama.* keys and a
                         300-entry tokenizer.ggml.tokens array.
gguf/align64.gguf.bin    GGUF v3 with general.alignment = 64, one f32 tensor and two tensors of types the Swift
                         reader does not support (Q5_0 and I32): listing must work, loading must name the type.
gguf/expected.json       per tensor: name, type, ggml type id, PyTorch-order shape, dequantized values
                         (from gguf.quants.dequantize, the reference) and, for q8_0/q4_0/q4_1, the f32 source
                         values the stored blocks were quantized from (gguf.quants.quantize). Also
                         `quantize_cases`: f32 inputs with tie and edge values and the exact bytes gguf-py's
                         bit-exact reference quantizers produce for them (hex).
safetensors/single.safetensors   F32, F16, BF16, 0-d, empty and I64 tensors, __metadata__, header padded with
                                 spaces (written by hand with struct + json, the format is that simple).
safetensors/sharded/             a 2-shard Hugging Face folder with model.safetensors.index.json (weight_map).
safetensors/expected.json        the values of every tensor of the files above.

The .gguf fixtures carry a `.bin` suffix because the repository's .gitignore ignores `*.gguf`.
The K-quant blocks are random bytes with small, valid f16 super-block scales: gguf-py cannot quantize K-quants,
but its dequantizers are the reference we compare against.
"""
import json
import os
import struct

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures")
GGUF_DIR = os.path.join(FIXTURES, "gguf")
ST_DIR = os.path.join(FIXTURES, "safetensors")

# Our DType raw values for the ggml types the Swift reader supports.
TYPE_NAMES = {
    Q.F32: "f32", Q.F16: "f16", Q.BF16: "bf16", Q.Q8_0: "q8_0", Q.Q4_0: "q4_0", Q.Q4_1: "q4_1",
    Q.Q4_K: "q4_K", Q.Q5_K: "q5_K", Q.Q6_K: "q6_K",
}


def floats(a):
    """f32 values as Python floats (exact: every f32 is a double)."""
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def random_k_blocks(rng, qtype, n_blocks):
    """Random K-quant blocks whose f16 scale fields hold small finite values (random bytes there could be
    inf/NaN, which would make the comparison meaningless)."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    def f16(values):
        return np.asarray(values, dtype=np.float16).view(np.uint8).reshape(n_blocks, 2)
    if qtype in (Q.Q4_K, Q.Q5_K):
        # d and dmin lead the block.
        blocks[:, 0:2] = f16(rng.uniform(0.001, 0.05, n_blocks))
        blocks[:, 2:4] = f16(rng.uniform(0.001, 0.05, n_blocks))
    elif qtype == Q.Q6_K:
        # d is the last field.
        blocks[:, type_size - 2:type_size] = f16(rng.uniform(-0.01, 0.01, n_blocks))
    else:
        raise ValueError(qtype)
    return blocks


def make_tiny_gguf(rng):
    path = os.path.join(GGUF_DIR, "tiny.gguf.bin")
    w = gguf.GGUFWriter(path, arch="llama")
    # Metadata of every value type.
    w.add_name("tiny fixture")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ✓ wörld")
    w.add_key_value("test.empty_string", "", V.STRING)  # add_string() skips empty strings
    w.add_uint64("test.u64", 2**40 + 3)
    w.add_int64("test.i64", -(2**40) - 7)
    w.add_float64("test.f64", 3.141592653589793)
    w.add_key_value("test.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.arr_i8", [-1, 2, -128], V.ARRAY, sub_type=V.INT8)
    w.add_key_value("test.arr_u16", [0, 65535], V.ARRAY, sub_type=V.UINT16)
    w.add_key_value("test.arr_i16", [-32768, 32767], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("test.arr_u32", [7, 4294967295], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("test.arr_i32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.arr_u64", [2**50, 0], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.arr_i64", [-(2**50), 5], V.ARRAY, sub_type=V.INT64)
    w.add_key_value("test.arr_f32", [0.5, -1.25, 0.1], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.arr_f64", [0.1, -2.5], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("test.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("test.arr_str", ["a", "", "ç✓"], V.ARRAY, sub_type=V.STRING)
    # Nested arrays: an array of arrays of i32, and an array of arrays of strings.
    w.add_key_value("test.arr_nested", [[1, 2], [3]], V.ARRAY)
    w.add_key_value("test.arr_nested_str", [["x", "y"], ["z"]], V.ARRAY)
    # llama.* keys (the architecture key comes from arch="llama").
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_feed_forward_length(256)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    w.add_vocab_size(300)
    w.add_tokenizer_model("gpt2")
    tokens = [f"tok{i}" for i in range(297)] + ["<|im_start|>", "é", "Ġthe"]
    w.add_token_list(tokens)
    w.add_token_types([1] * 300)
    w.add_token_merges(["a b", "Ġ t", "th e"])
    w.add_add_bos_token(False)

    records = []

    def add(name, qtype, shape, data_bytes=None, values=None):
        """Adds a tensor. `shape` is PyTorch order; gguf-py takes numpy shapes (also PyTorch order) and
        writes the reversed ggml dims itself."""
        if qtype == Q.F32:
            arr = values.astype(np.float32).reshape(shape)
            w.add_tensor(name, arr)
            raw = arr.view(np.uint8).ravel()
        elif qtype == Q.F16:
            arr = values.astype(np.float16).reshape(shape)
            w.add_tensor(name, arr)
            raw = arr.view(np.uint8).ravel()
        else:
            raw = data_bytes.reshape(*shape[:-1], -1)
            w.add_tensor(name, raw, raw_dtype=qtype)
        if qtype in (Q.F32, Q.F16):
            deq = arr.astype(np.float32)
        else:
            deq = gguf.quants.dequantize(raw, qtype)
        rec = {"name": name, "type": TYPE_NAMES[qtype], "ggml_type": int(qtype), "shape": list(shape),
               "values": floats(deq)}
        records.append(rec)
        return rec

    add("f32.vector", Q.F32, [32], values=rng.standard_normal(32).astype(np.float32))
    add("f32.matrix", Q.F32, [4, 32], values=rng.standard_normal(128).astype(np.float32))
    add("f32.cube", Q.F32, [2, 3, 32], values=rng.standard_normal(192).astype(np.float32))
    add("f16.matrix", Q.F16, [3, 64], values=rng.standard_normal(192).astype(np.float32))
    src = rng.standard_normal(64).astype(np.float32)
    add("bf16.matrix", Q.BF16, [2, 32], data_bytes=gguf.quants.quantize(src.reshape(2, 32), Q.BF16))
    for qtype, name in [(Q.Q8_0, "q8_0.matrix"), (Q.Q4_0, "q4_0.matrix"), (Q.Q4_1, "q4_1.matrix")]:
        src = (rng.standard_normal((4, 64)) * rng.uniform(0.1, 3.0, (4, 1))).astype(np.float32)
        src[0, :32] = 0.0  # an all-zero block: d = 0 and the 0 branch of `id`
        src[1, 5] = -7.0   # a block whose largest magnitude is negative (q4_0's d is signed)
        rec = add(name, qtype, [4, 64], data_bytes=gguf.quants.quantize(src, qtype))
        rec["source"] = floats(src)
    for qtype, name in [(Q.Q4_K, "q4_K.matrix"), (Q.Q5_K, "q5_K.matrix"), (Q.Q6_K, "q6_K.matrix")]:
        blocks = random_k_blocks(rng, qtype, 4)
        add(name, qtype, [2, 512], data_bytes=blocks.reshape(2, -1))
    # A 3-D quantized tensor: the last PyTorch dim is ggml's ne0, the block axis.
    blocks = random_k_blocks(rng, Q.Q6_K, 2)
    add("q6_K.cube", Q.Q6_K, [2, 1, 256], data_bytes=blocks.reshape(2, 1, -1))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return records, tokens


def make_align64_gguf(rng):
    path = os.path.join(GGUF_DIR, "align64.gguf.bin")
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_custom_alignment(64)
    values = rng.standard_normal(8).astype(np.float32)
    w.add_tensor("first", values[:5].copy())  # 20 bytes: the next tensor starts at 64
    src = rng.standard_normal(32).astype(np.float32)
    w.add_tensor("q5_0.unsupported", gguf.quants.quantize(src, Q.Q5_0), raw_dtype=Q.Q5_0)
    w.add_tensor("i32.unsupported", np.arange(6, dtype=np.int32).reshape(2, 3))
    w.add_tensor("last", values[5:].copy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"first": floats(values[:5]), "last": floats(values[5:])}


def quantize_cases(rng):
    """Inputs that exercise the rounding rules, with the bytes gguf-py's bit-exact quantizers give."""
    cases = []
    ties = np.array([127.0, 2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5] + [0.0] * 24, dtype=np.float32)
    neg_max = rng.standard_normal(32).astype(np.float32)
    neg_max[7] = -9.0
    pos_max = rng.standard_normal(32).astype(np.float32)
    pos_max[3] = 9.0
    eights = np.array([-8.0, 8.0, 7.0, -7.0, 4.0, -4.0, 0.0, 1.0] * 4, dtype=np.float32)
    tiny = (rng.standard_normal(32) * 1e-6).astype(np.float32)  # d far below f16's normal range
    huge = (rng.standard_normal(32) * 60000.0).astype(np.float32)
    const = np.full(32, 3.0, dtype=np.float32)  # q4_1: max == min, d = 0
    zeros = np.zeros(32, dtype=np.float32)
    inputs = np.concatenate([ties, neg_max, pos_max, eights, tiny, huge, const, zeros])
    for qtype, name in [(Q.Q8_0, "q8_0"), (Q.Q4_0, "q4_0"), (Q.Q4_1, "q4_1")]:
        out = gguf.quants.quantize(inputs.reshape(1, -1), qtype)
        cases.append({"type": name, "input": floats(inputs), "bytes_hex": bytes(out.ravel()).hex()})
    return cases


# ---------------------------------------------------------------- safetensors

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def bf16_bytes(values):
    """Round-to-nearest-even f32 -> bf16, as torch does."""
    return gguf.quants.quantize(np.asarray(values, dtype=np.float32), Q.BF16).tobytes()


def write_safetensors(path, entries, metadata=None, pad_to=8):
    """entries: list of (name, dtype string, shape, raw bytes). Writes the header JSON right-padded with
    spaces so the data starts at a multiple of `pad_to`, as the reference writer does."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    blob = b""
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blob += raw
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((-(8 + len(text))) % pad_to)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(blob)


def make_safetensors(rng):
    expected = {}
    a = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float16)
    c_src = rng.standard_normal((2, 2)).astype(np.float32)
    c_raw = bf16_bytes(c_src)
    c_vals = (np.frombuffer(c_raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    scalar = np.array(2.5, dtype=np.float32)
    empty = np.zeros((0, 3), dtype=np.float32)
    ints = np.array([1, -2, 3], dtype=np.int64)
    entries = [
        ("model.a", "F32", [2, 3], a.tobytes()),
        ("model.b", "F16", [4], b.tobytes()),
        ("model.c", "BF16", [2, 2], c_raw),
        ("scalar", "F32", [], scalar.tobytes()),
        ("empty", "F32", [0, 3], empty.tobytes()),
        ("ints", "I64", [3], ints.tobytes()),
    ]
    write_safetensors(os.path.join(ST_DIR, "single.safetensors"), entries,
                      metadata={"format": "pt", "note": "fixture ✓"})
    expected["single"] = {
        "metadata": {"format": "pt", "note": "fixture ✓"},
        "tensors": [
            {"name": "model.a", "type": "f32", "shape": [2, 3], "values": floats(a)},
            {"name": "model.b", "type": "f16", "shape": [4], "values": floats(b.astype(np.float32))},
            {"name": "model.c", "type": "bf16", "shape": [2, 2], "values": floats(c_vals)},
            {"name": "scalar", "type": "f32", "shape": [], "values": [2.5]},
            {"name": "empty", "type": "f32", "shape": [0, 3], "values": []},
        ],
        "unsupported": [{"name": "ints", "dtype": "I64", "shape": [3]}],
    }

    shard_dir = os.path.join(ST_DIR, "sharded")
    os.makedirs(shard_dir, exist_ok=True)
    w1 = rng.standard_normal((3, 4)).astype(np.float32)
    w2 = rng.standard_normal((4,)).astype(np.float16)
    w3 = rng.standard_normal((2, 4)).astype(np.float32)
    shard1 = "model-00001-of-00002.safetensors"
    shard2 = "model-00002-of-00002.safetensors"
    write_safetensors(os.path.join(shard_dir, shard1),
                      [("layers.0.weight", "F32", [3, 4], w1.tobytes()), ("layers.0.bias", "F16", [4], w2.tobytes())],
                      metadata={"format": "pt"})
    write_safetensors(os.path.join(shard_dir, shard2),
                      [("lm_head.weight", "F32", [2, 4], w3.tobytes())], metadata={"format": "pt"})
    index = {
        "metadata": {"total_size": w1.nbytes + w2.nbytes + w3.nbytes},
        "weight_map": {"layers.0.weight": shard1, "layers.0.bias": shard1, "lm_head.weight": shard2},
    }
    with open(os.path.join(shard_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    expected["sharded"] = {
        "tensors": [
            {"name": "layers.0.weight", "type": "f32", "shape": [3, 4], "values": floats(w1)},
            {"name": "layers.0.bias", "type": "f16", "shape": [4], "values": floats(w2.astype(np.float32))},
            {"name": "lm_head.weight", "type": "f32", "shape": [2, 4], "values": floats(w3)},
        ],
        "total_size": index["metadata"]["total_size"],
    }
    with open(os.path.join(ST_DIR, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    os.makedirs(GGUF_DIR, exist_ok=True)
    os.makedirs(ST_DIR, exist_ok=True)
    rng = np.random.default_rng(20240611)
    records, tokens = make_tiny_gguf(rng)
    align = make_align64_gguf(rng)
    expected = {
        "tensors": records,
        "tokens": tokens,
        "align64": align,
        "quantize_cases": quantize_cases(rng),
    }
    with open(os.path.join(GGUF_DIR, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False)
        f.write("\n")
    make_safetensors(rng)
    total = 0
    for root, _, files in os.walk(os.path.join(FIXTURES, "gguf")):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in files)
    for root, _, files in os.walk(ST_DIR):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in files)
    print(f"wrote GGUF and safetensors fixtures: {total} bytes")


if __name__ == "__main__":
    main()
