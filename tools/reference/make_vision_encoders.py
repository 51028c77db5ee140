#!/usr/bin/env python3
"""Golden fixtures for the Hugging Face vision encoders (DINOv2, SigLIP, CLIP) and their slow image processors.

Run with the reference venv (Debian torch 1.13, transformers 4.46.3, numpy, Pillow 9.4, safetensors):
    .venv-ref/bin/python tools/reference/make_vision_encoders.py
The script refuses other transformers / Pillow versions, because the byte-level behaviour of the slow (PIL
based) image processors and of the position-embedding interpolation is what the fixtures pin down.
The venv's numpy is 2.x while Debian's torch was built against numpy 1.x: the "compiled using NumPy 1.x"
warning printed at import is expected, and tensors cross between torch and numpy through bytes (to_torch /
to_numpy below) instead of torch.from_numpy / .numpy().

The Swift side must load a transformers checkpoint directory (config.json + model.safetensors +
preprocessor_config.json), preprocess a PNG exactly like the slow processor does, and run the tower. These
fixtures give it a tiny random model of each family, three test images and the reference tensors:

Writes Tests/Fixtures/vision/ (about 0.6 MB, mostly the three model.safetensors):
  square.png, wide.png, tall.png   50x50, 71x45, 37x60 RGB pictures (seeded gradients, waves and shapes)
  dinov2_tiny/                     Dinov2Model (hidden 32, 2 layers, 4 heads, patch 14, image_size 56 so the
                                   stored position grid is 4x4) + BitImageProcessor (shortest_edge 48, crop
                                   42x56 -> grid 3x4, so position embeddings are interpolated to a non-square
                                   grid; the 48-wide resizes of square.png and tall.png are narrower than the
                                   56-wide crop, so center_crop zero-pads them)
  siglip_tiny/                     SiglipVisionModel (hidden 32, 2 layers, 4 heads, image 32, patch 8, with the
                                   attention-pooling head) + SiglipImageProcessor (resize to 32x32, no crop)
  clip_hf_tiny/                    CLIPVisionModel (hidden 32, 2 layers, 4 heads, image 28, patch 7, quick_gelu)
                                   + CLIPImageProcessor (shortest_edge 28, crop 28, CLIP mean/std)
  each model directory also has, for I in square/wide/tall:
    pixels_I.npy    float32 (3, H, W): processor(images=Image.open(I).convert("RGB"), return_tensors="np")
                    ["pixel_values"][0] with the slow processor class
    hidden_I.npy    float32 (tokens, 32): model(pixel_values=pixels[None]).last_hidden_state[0]
  clip_hf_tiny/features_I.npy       post_layernorm applied to ALL tokens of last_hidden_state (what the
                                    official LLaMA-Adapter does with ln_post)
  dinov2_tiny/pos_embed_interpolated.npy  float32 (1 + 3*4, 32): the position embeddings the model adds for a
                                    42x56 input (CLS row + bicubic-interpolated 3x4 grid), to test the
                                    interpolation on its own
  expected.json                    shapes per model and image, DINOv2's grids, resize/crop geometry, and the
                                   float32-vs-float64 differences of the forward passes (for Swift tolerances)

Weights are float32, seeded, and re-drawn after construction so that nothing is a no-op: linear weights
N(0, 0.2), patch-embedding convs N(0, 0.05), biases N(0, 0.05), LayerNorm weights 1 + N(0, 0.1) and biases
N(0, 0.05), DINOv2 LayerScale lambda1 U(0.5, 1.5), class tokens / position embeddings / mask token / SigLIP probe
N(0, 1). Every file is written from fixed seeds; rerunning rewrites the same bytes.

Before it finishes the script checks (and stops with an error otherwise):
  - every parameter differs from its fresh-init value (the re-draw rules missed nothing);
  - the processors reloaded with AutoImageProcessor.from_pretrained(dir, use_fast=False) are the slow classes
    and give bit-identical pixels; the models reloaded with from_pretrained give bit-identical hidden states;
  - a hand-written numpy/PIL pipeline (Image.resize on uint8, floor-offset crop with zero padding,
    float64 * (1/255) -> float32, float32 (x - mean) / std) reproduces every pixel tensor bit for bit;
  - DINOv2's interpolated position embeddings equal F.interpolate(size=(3, 4), bicubic, align_corners=False)
    exactly; a float64 numpy bicubic (A = -0.75, source = (dst + 0.5) * in / out - 0.5, clamped indices)
    matches torch's float64 bicubic within 1e-12 and the float32 one within 1e-5; the result differs from
    simply taking the top-left 3x4 of the stored grid (so the interpolation matters);
  - LayerScale matters (the output changes by > 0.1 with lambda1 set to 1);
  - the fixtures total less than 1 MB.
"""
import json
import math
import os
import shutil
import sys

import numpy as np
import PIL
import torch
import transformers
from PIL import Image, ImageDraw
from transformers import (AutoImageProcessor, BitImageProcessor, CLIPImageProcessor, CLIPVisionConfig,
                          CLIPVisionModel, Dinov2Config, Dinov2Model, SiglipImageProcessor, SiglipVisionConfig,
                          SiglipVisionModel)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "..", "Tests", "Fixtures", "vision"))

IMAGES = {"square": (50, 50), "wide": (71, 45), "tall": (37, 60)}  # (width, height)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
BICUBIC = 3

torch.set_num_threads(1)  # same reduction order on every machine


def check(cond, msg):
    if not cond:
        sys.exit("CHECK FAILED: " + msg)


# ---------------------------------------------------------------------------------------------------- images

def make_image(name, width, height, seed):
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    chans = []
    for _ in range(3):
        a, b, c = rng.uniform(-1, 1, size=3)
        fx, fy, ph = rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0), rng.uniform(0, 2 * math.pi)
        val = 0.5 + 0.3 * (a * u + b * v + c * u * v) + 0.2 * np.sin(2 * math.pi * (fx * u + fy * v) + ph)
        chans.append(val)
    arr = np.clip(np.stack(chans, axis=-1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    for k in range(4):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.1, 0.3) * min(width, height)
        colour = tuple(int(t) for t in rng.randint(0, 256, size=3))
        box = [int(cx - r), int(cy - r), int(cx + r), int(cy + r)]
        if k % 3 == 0:
            draw.ellipse(box, fill=colour)
        elif k % 3 == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=colour)
    path = os.path.join(OUT, name + ".png")
    img.save(path)
    return path


# ---------------------------------------------------------------------------------------------------- weights

def redraw(model, seed):
    """Re-draws every parameter from a dedicated generator, in named_parameters order."""
    g = torch.Generator().manual_seed(seed)
    norm_names = ("norm", "layernorm", "layrnorm", "layer_norm")
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
            is_norm = any(s in parent.lower() for s in norm_names) and p.dim() == 1
            if "lambda1" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif leaf in ("cls_token", "mask_token", "position_embeddings", "class_embedding", "probe") \
                    or name.endswith("position_embedding.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif is_norm and leaf == "weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif leaf.endswith("bias") or p.dim() == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif p.dim() == 4:  # patch-embedding conv
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


# ---------------------------------------------------------------------------------------------------- processors

def manual_pixels(path, kind, cfg):
    """The slow processor pipeline written out by hand (transformers 4.46.3 image_transforms.py)."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if "shortest_edge" in cfg["size"]:
        s = cfg["size"]["shortest_edge"]
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = s, int(s * long / short)
        oh, ow = (new_long, new_short) if w <= h else (new_short, new_long)
    else:
        oh, ow = cfg["size"]["height"], cfg["size"]["width"]
    arr = np.array(img.resize((ow, oh), resample=BICUBIC, reducing_gap=None))  # uint8 HWC
    geom = {"input_hw": [h, w], "resized_hw": [oh, ow]}
    if cfg.get("do_center_crop"):
        ch, cw = cfg["crop_size"]["height"], cfg["crop_size"]["width"]
        top, left = (oh - ch) // 2, (ow - cw) // 2
        if top >= 0 and left >= 0 and top + ch <= oh and left + cw <= ow:
            arr = arr[top:top + ch, left:left + cw]
            geom.update(crop_top=top, crop_left=left, padded=False)
        else:
            nh, nw = max(ch, oh), max(cw, ow)
            tp, lp = math.ceil((nh - oh) / 2), math.ceil((nw - ow) / 2)
            big = np.zeros((nh, nw, 3), np.uint8)
            big[tp:tp + oh, lp:lp + ow] = arr
            t2, l2 = top + tp, left + lp
            arr = big[max(0, t2):min(nh, t2 + ch), max(0, l2):min(nw, l2 + cw)]
            geom.update(crop_top=top, crop_left=left, pad_top=tp, pad_left=lp, padded=True)
    x = (arr.astype(np.float64) * cfg["rescale_factor"]).astype(np.float32)
    mean = np.array(cfg["image_mean"], dtype=np.float32)
    std = np.array(cfg["image_std"], dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)), geom


# ---------------------------------------------------------------------------------------------------- bicubic

def numpy_bicubic(grid, out_h, out_w):
    """float64 bicubic, A = -0.75, align_corners=False, clamped indices (torch's upsample_bicubic2d)."""
    A = -0.75

    def weights(t):
        def c1(x):  # |x| <= 1
            return ((A + 2) * x - (A + 3)) * x * x + 1

        def c2(x):  # 1 < |x| < 2
            return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
        return [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)]

    def axis(in_n, out_n):
        scale = in_n / out_n
        rows = []
        for d in range(out_n):
            src = (d + 0.5) * scale - 0.5
            i0 = math.floor(src)
            t = src - i0
            rows.append([(min(max(i0 - 1 + k, 0), in_n - 1), wk) for k, wk in enumerate(weights(t))])
        return rows

    g = grid.astype(np.float64)  # (C, H, W)
    ry, rx = axis(g.shape[1], out_h), axis(g.shape[2], out_w)
    out = np.zeros((g.shape[0], out_h, out_w))
    for oy, wy in enumerate(ry):
        for ox, wx in enumerate(rx):
            for iy, a in wy:
                for ix, b in wx:
                    out[:, oy, ox] += a * b * g[:, iy, ix]
    return out


# ---------------------------------------------------------------------------------------------------- models

def build(kind):
    if kind == "dinov2_tiny":
        torch.manual_seed(1001)
        config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4,
                              patch_size=14, image_size=56, layerscale_value=1.0, hidden_act="gelu",
                              layer_norm_eps=1e-6, qkv_bias=True)
        model = Dinov2Model(config)
        proc = BitImageProcessor(do_resize=True, size={"shortest_edge": 48}, resample=BICUBIC, do_center_crop=True,
                                 crop_size={"height": 42, "width": 56}, do_rescale=True, rescale_factor=1 / 255,
                                 do_normalize=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                                 do_convert_rgb=True)
        seed = 2001
    elif kind == "siglip_tiny":
        torch.manual_seed(1002)
        config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=32, patch_size=8, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
        model = SiglipVisionModel(config)
        proc = SiglipImageProcessor(do_resize=True, size={"height": 32, "width": 32}, resample=BICUBIC,
                                    do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                    image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
        seed = 2002
    elif kind == "clip_hf_tiny":
        torch.manual_seed(1003)
        config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=28, patch_size=7, hidden_act="quick_gelu", layer_norm_eps=1e-5)
        model = CLIPVisionModel(config)
        proc = CLIPImageProcessor(do_resize=True, size={"shortest_edge": 28}, resample=BICUBIC, do_center_crop=True,
                                  crop_size={"height": 28, "width": 28}, do_rescale=True, rescale_factor=1 / 255,
                                  do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
        seed = 2003
    else:
        raise ValueError(kind)
    fresh = {n: p.detach().clone() for n, p in model.named_parameters()}
    redraw(model, seed)
    for n, p in model.named_parameters():
        check(not torch.equal(p, fresh[n]), f"{kind}: parameter {n} was not re-drawn")
    model.eval()
    return model.float(), proc


# Debian's torch 1.13 is built against numpy 1.x but the venv has numpy 2, so torch.from_numpy / .numpy() fail
# ("Numpy is not available"). These two bridges copy the exact float bytes / values instead.
def to_torch(arr):
    arr = np.ascontiguousarray(arr)
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[arr.dtype]
    return torch.frombuffer(bytearray(arr.tobytes()), dtype=dtype).reshape(arr.shape)


def to_numpy(t):
    t = t.detach().contiguous()
    dtype = {torch.float32: np.float32, torch.float64: np.float64}[t.dtype]
    return np.array(t.tolist(), dtype=dtype).reshape(tuple(t.shape))  # float -> Python float -> float is exact


def forward(model, kind, pixels):
    with torch.no_grad():
        out = model(pixel_values=to_torch(pixels)[None]).last_hidden_state
        feats = model.vision_model.post_layernorm(out) if kind == "clip_hf_tiny" else None
    return out, feats


def save_npy(path, arr):
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    np.save(path, arr)


def main():
    check(transformers.__version__ == "4.46.3", f"need transformers 4.46.3, have {transformers.__version__}")
    check(PIL.__version__ == "9.4.0", f"need Pillow 9.4.0, have {PIL.__version__}")
    os.makedirs(OUT, exist_ok=True)

    paths = {}
    for k, (name, (w, h)) in enumerate(IMAGES.items()):
        paths[name] = make_image(name, w, h, seed=500 + k)
        im = Image.open(paths[name])
        check(im.mode == "RGB" and im.size == (w, h), f"{name}.png mode/size")
        a = np.asarray(im).astype(np.float64)
        check(a.std() > 20, f"{name}.png is too flat")

    expected = {"transformers": transformers.__version__, "pillow": PIL.__version__, "torch": torch.__version__,
                "images": {n: {"width": w, "height": h} for n, (w, h) in IMAGES.items()}, "models": {}}

    for kind in ("dinov2_tiny", "siglip_tiny", "clip_hf_tiny"):
        d = os.path.join(OUT, kind)
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        model, proc = build(kind)
        model.save_pretrained(d, safe_serialization=True)
        proc.save_pretrained(d)
        check(sorted(os.listdir(d)) == ["config.json", "model.safetensors", "preprocessor_config.json"],
              f"{kind}: unexpected files {os.listdir(d)}")

        reproc = AutoImageProcessor.from_pretrained(d, use_fast=False)
        check(type(reproc) is type(proc), f"{kind}: reloaded processor is {type(reproc).__name__}")
        remodel = type(model).from_pretrained(d).eval()
        cfg = json.load(open(os.path.join(d, "preprocessor_config.json")))
        model64 = type(model).from_pretrained(d).eval().double()

        entry = {"class": type(model).__name__, "processor": type(proc).__name__, "images": {}}
        max64 = {"hidden": 0.0}
        for name, path in paths.items():
            image = Image.open(path).convert("RGB")
            pixels = proc(images=image, return_tensors="np")["pixel_values"][0]
            check(pixels.dtype == np.float32, f"{kind}/{name}: pixel dtype {pixels.dtype}")
            again = reproc(images=Image.open(path).convert("RGB"), return_tensors="np")["pixel_values"][0]
            check(np.array_equal(pixels, again), f"{kind}/{name}: reloaded processor differs")
            manual, geom = manual_pixels(path, kind, cfg)
            check(manual.shape == pixels.shape and np.array_equal(manual, pixels),
                  f"{kind}/{name}: hand-written pipeline differs (max {np.abs(manual - pixels).max()})")
            save_npy(os.path.join(d, f"pixels_{name}.npy"), pixels)

            hidden, feats = forward(model, kind, pixels)
            hidden2, _ = forward(remodel, kind, pixels)
            check(torch.equal(hidden, hidden2), f"{kind}/{name}: reloaded model differs")
            with torch.no_grad():
                h64 = model64(pixel_values=to_torch(pixels).double()[None]).last_hidden_state
            max64["hidden"] = max(max64["hidden"], float((hidden.double() - h64).abs().max()))
            check(float(hidden.std()) > 0.3, f"{kind}/{name}: degenerate hidden states")
            save_npy(os.path.join(d, f"hidden_{name}.npy"), to_numpy(hidden[0]))
            img_entry = {"pixels_shape": list(pixels.shape), "hidden_shape": list(hidden[0].shape), **geom}
            if feats is not None:
                with torch.no_grad():
                    f64 = model64.vision_model.post_layernorm(h64)
                max64["features"] = max(max64.get("features", 0.0), float((feats.double() - f64).abs().max()))
                save_npy(os.path.join(d, f"features_{name}.npy"), to_numpy(feats[0]))
                img_entry["features_shape"] = list(feats[0].shape)
            if kind == "dinov2_tiny":
                ps = model.config.patch_size
                img_entry["grid"] = [pixels.shape[1] // ps, pixels.shape[2] // ps]
                check(img_entry["grid"] == [3, 4], f"dinov2 grid {img_entry['grid']}")
            entry["images"][name] = img_entry
        entry["f32_vs_f64_max_abs"] = max64

        if kind == "dinov2_tiny":
            emb = model.embeddings
            n_pos = emb.position_embeddings.shape[1] - 1
            side = int(round(n_pos ** 0.5))
            with torch.no_grad():
                dummy = torch.zeros(1, 1 + 12, 32)
                pe = emb.interpolate_pos_encoding(dummy, 42, 56)
                grid = emb.position_embeddings[:, 1:].reshape(1, side, side, 32).permute(0, 3, 1, 2)
                ref = torch.nn.functional.interpolate(grid.float(), size=(3, 4), mode="bicubic", align_corners=False)
                ref = torch.cat([emb.position_embeddings[:, :1], ref.permute(0, 2, 3, 1).reshape(1, -1, 32)], dim=1)
                check(torch.equal(pe, ref), "dinov2: interpolate_pos_encoding != F.interpolate(size=(3,4))")
                np_ref = numpy_bicubic(to_numpy(grid[0]), 3, 4).transpose(1, 2, 0).reshape(-1, 32)
                err = float(np.abs(np_ref - to_numpy(pe[0, 1:].double())).max())
                check(err < 1e-5, f"dinov2: numpy bicubic differs from the float32 interpolation by {err}")
                t64 = torch.nn.functional.interpolate(grid.double(), size=(3, 4), mode="bicubic", align_corners=False)
                err64 = float(np.abs(np_ref - to_numpy(t64[0]).transpose(1, 2, 0).reshape(-1, 32)).max())
                check(err64 < 1e-12, f"dinov2: numpy bicubic differs from torch's float64 bicubic by {err64}")
                naive = grid[:, :, :3, :4].permute(0, 2, 3, 1).reshape(1, -1, 32)
                check(float((naive - pe[:, 1:]).abs().max()) > 0.1, "dinov2: interpolation is a no-op")
                # LayerScale must matter.
                px = to_torch(np.load(os.path.join(d, "pixels_square.npy")))[None]
                base = model(pixel_values=px).last_hidden_state
                saved = [(l.layer_scale1.lambda1.clone(), l.layer_scale2.lambda1.clone()) for l in model.encoder.layer]
                for l in model.encoder.layer:
                    l.layer_scale1.lambda1.fill_(1.0)
                    l.layer_scale2.lambda1.fill_(1.0)
                ls_delta = float((model(pixel_values=px).last_hidden_state - base).abs().max())
                for l, (a, b) in zip(model.encoder.layer, saved):
                    l.layer_scale1.lambda1.copy_(a)
                    l.layer_scale2.lambda1.copy_(b)
                check(ls_delta > 0.1, f"dinov2: LayerScale is nearly a no-op ({ls_delta})")
            save_npy(os.path.join(d, "pos_embed_interpolated.npy"), to_numpy(pe[0]))
            entry["stored_position_grid"] = [side, side]
            entry["interpolated_grid"] = [3, 4]
            entry["pos_embed_interpolated_shape"] = list(pe[0].shape)
            entry["numpy_f64_bicubic_vs_torch_f32_max_abs"] = err
            entry["numpy_f64_bicubic_vs_torch_f64_max_abs"] = err64
            entry["layerscale_effect_max_abs"] = ls_delta
        if kind == "siglip_tiny":
            check(model.config.image_size == 32, "siglip image size")
            for v in entry["images"].values():
                check(v["pixels_shape"] == [3, 32, 32], "siglip pixels must match config.image_size")
        expected["models"][kind] = entry
        print(kind, json.dumps({n: (v["pixels_shape"], v["hidden_shape"]) for n, v in entry["images"].items()}),
              "f32 vs f64:", max64)

    expected["schema"] = ("models[M].images[I]: pixels_shape (3,H,W) of pixels_I.npy, hidden_shape of hidden_I.npy "
                          "(and features_shape of features_I.npy for CLIP), input_hw, resized_hw (after resize, before "
                          "crop), crop_top/crop_left (floor((resized - crop) / 2), may be negative) and, when the "
                          "crop is larger than the resized image, padded=true with pad_top/pad_left (ceil of half the "
                          "difference; zeros are added to the uint8 image before rescale/normalize); grid for DINOv2. "
                          "f32_vs_f64_max_abs: float32 forward vs float64 forward on the same weights and pixels.")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")

    total = 0
    for root, _, files in os.walk(OUT):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    check(total < 1_000_000, f"fixtures total {total} bytes")
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
