#!/usr/bin/python3
"""Golden fixtures for the image path (AdapterVision: decoding, Pillow bicubic, CLIP transform).

Run with Debian 12's Python, which has the reference stack (nothing pip-installed):
    /usr/bin/python3 tools/reference/make_image_fixtures.py
OpenCV 4.6.0 (python3-opencv, linked to libjpeg-turbo 2.1.5 and libpng 1.6.39), Pillow 9.4.0,
torch 1.13.1, torchvision 0.14.1, numpy 1.24. The script refuses other versions of cv2/PIL/torchvision
because their byte-level behaviour is what the fixtures pin down.

The official LLaMA-Adapter pipeline is reproduced literally:
    bgr = cv2.imread(path)                      # IMREAD_COLOR: B, G, R uint8, EXIF orientation applied
    img = Image.fromarray(bgr)                  # PIL labels it "RGB", so channel 0 is blue
    x = clip_transform(img)                     # openai/CLIP clip/clip.py _transform(224)
The "rgb" variant converts with cv2.cvtColor(bgr, COLOR_BGR2RGB) first.

Writes Tests/Fixtures/images/ (about 1.5 MB):
  *.jpg, *.png          input images (made here, deterministic)
  expected.json         per image: cv2-decoded size, CRC-32 of the decoded BGR bytes, per-channel sums,
                        sampled pixels; Pillow resize cases (CRC-32 of the output, samples); CLIP
                        tensors (CRC-32 of the float32 bytes, CRC-32 of the 8-bit crop, resized size,
                        crop offsets, sampled values, mean, mean |x|); EXIF orientation cases (APP1
                        payloads in hex inserted after SOI of progressive.jpg, and cv2's result)
  photo_bgr.npy         full (3, 224, 224) float32 tensor for photo.jpg (official BGR order)
  rgba_bgr.npy          full (3, 224, 224) float32 tensor for rgba.png
  palette_decoded.npy   cv2.imread output (uint8, H x W x 3, BGR) of palette.png
  resize_small.npy      Pillow output (uint8) of one resize case, for diagnostics
Rerunning rewrites the same bytes.
"""
import json
import os
import struct
import sys
import zlib

import cv2
import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "Tests", "Fixtures", "images")

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def require_versions():
    problems = []
    if cv2.__version__ != "4.6.0":
        problems.append(f"cv2 {cv2.__version__} (want 4.6.0)")
    if PIL.__version__ != "9.4.0":
        problems.append(f"Pillow {PIL.__version__} (want 9.4.0)")
    if not torchvision.__version__.startswith("0.14"):
        problems.append(f"torchvision {torchvision.__version__} (want 0.14)")
    if problems:
        sys.exit("make_image_fixtures.py: reference stack differs: " + ", ".join(problems))


def _convert_image_to_rgb(image):
    return image.convert("RGB")


def clip_transform(n_px):
    """openai/CLIP clip/clip.py _transform, verbatim."""
    return Compose([
        Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(n_px),
        _convert_image_to_rgb,
        ToTensor(),
        Normalize(MEAN, STD),
    ])


def crc(array):
    return zlib.crc32(np.ascontiguousarray(array).tobytes()) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------- images

def smooth_rgb(h, w, seed, noise=0.0):
    """A photo-like picture: gradients, a few soft blobs and stripes, optional noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0)
    for _ in range(4):
        cy, cx, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(min(h, w) / 8, min(h, w) / 3)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rad ** 2))
        col = rng.uniform(-120, 120, 3)
        r, g, b = r + col[0] * blob, g + col[1] * blob, b + col[2] * blob
    img = np.stack([r, g, b], axis=-1)
    img[(x.astype(int) // 9 + y.astype(int) // 13) % 5 == 0] += 40  # hard edges for the resampler
    if noise:
        img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_interlaced_png(path, rgb):
    """An 8-bit RGB PNG with Adam7 interlacing; every reduced-image row uses filter type 0."""
    h, w, _ = rgb.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = rgb[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        raw += b"".join(b"\0" + row.tobytes() for row in sub)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)
    assert np.array_equal(np.array(Image.open(path)), rgb), "interlaced PNG round trip"


def make_images():
    os.makedirs(OUT, exist_ok=True)
    files = {}

    # 320x240 photo-like JPEG (gradients + noise), baseline 4:2:0 as PIL writes by default.
    Image.fromarray(smooth_rgb(240, 320, 1, noise=6)).save(os.path.join(OUT, "photo.jpg"), quality=90)

    # 200x300 RGBA PNG: colour under fully and partly transparent pixels must survive (cv2 strips alpha).
    rgb = smooth_rgb(300, 200, 2)
    alpha = np.zeros((300, 200), np.uint8)
    alpha[:, :] = (np.arange(200)[None, :] * 255 // 199).astype(np.uint8)
    alpha[100:150, :] = 0
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(os.path.join(OUT, "rgba.png"))

    # 250x250 greyscale PNG.
    Image.fromarray(smooth_rgb(250, 250, 3)[..., 1]).save(os.path.join(OUT, "gray.png"))

    # 123x120 palette PNG with tRNS (resized width 229: crop offset round(2.5) = 2, half to even).
    pal = Image.fromarray(smooth_rgb(120, 123, 4)).quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.save(os.path.join(OUT, "palette.png"), transparency=bytes([0, 255, 128, 7, 200]))

    # 121x120 16-bit RGB PNG (resized width 225: crop offset round(0.5) = 0). cv2.imwrite takes BGR.
    g16 = smooth_rgb(120, 121, 5).astype(np.uint16) * 257
    yy, xx = np.mgrid[0:120, 0:121]
    g16 = g16 + ((xx * 37 + yy * 11) % 257).astype(np.uint16)[..., None]  # low byte varies (v >> 8 vs round)
    cv2.imwrite(os.path.join(OUT, "rgb16.png"), g16[..., ::-1])

    # 16x16 PNG: enlarged to 224x224.
    Image.fromarray(smooth_rgb(16, 16, 6, noise=20)).save(os.path.join(OUT, "tiny.png"))

    # JPEG stored 203x200 with EXIF orientation 6: cv2 rotates it to 200x203 (resized 224x227,
    # crop top round(1.5) = 2).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth_rgb(200, 203, 7, noise=4)).save(os.path.join(OUT, "exif6.jpg"), quality=92, exif=exif.tobytes())

    # Small decode-only cases.
    Image.fromarray(smooth_rgb(40, 48, 8)[..., 0]).save(os.path.join(OUT, "gray.jpg"), quality=90)
    cmyk = np.dstack([smooth_rgb(40, 48, 9), smooth_rgb(40, 48, 10)[..., :1]])
    Image.fromarray(cmyk, "CMYK").save(os.path.join(OUT, "cmyk.jpg"), quality=90)
    Image.fromarray(smooth_rgb(48, 64, 11, noise=8)).save(os.path.join(OUT, "progressive.jpg"), quality=85, progressive=True)
    Image.fromarray(smooth_rgb(30, 40, 12)[..., :2], "LA").save(os.path.join(OUT, "la.png"))
    cv2.imwrite(os.path.join(OUT, "gray16.png"), smooth_rgb(30, 40, 13)[..., 0].astype(np.uint16) * 251 + 3)
    Image.fromarray(smooth_rgb(21, 37, 14)[..., 0] > 128).save(os.path.join(OUT, "bilevel.png"))
    exif8 = Image.Exif()
    exif8[0x0112] = 8
    Image.fromarray(smooth_rgb(20, 30, 15)).save(os.path.join(OUT, "exif8.png"), exif=exif8.tobytes())

    # Adam7-interlaced PNG (neither PIL nor cv2 writes one): encoded by hand below.
    write_interlaced_png(os.path.join(OUT, "interlaced.png"), smooth_rgb(27, 33, 17, noise=10))

    # Source for the resampler cases: noise is the hardest case for bit-exactness.
    noise = np.random.default_rng(16).integers(0, 256, (83, 97, 3), dtype=np.uint8)
    Image.fromarray(noise).save(os.path.join(OUT, "resize_src.png"))
    return files


# --------------------------------------------------------------------------------------- expected

def samples_hwc(arr, count, seed):
    rng = np.random.default_rng(seed)
    h, w = arr.shape[:2]
    ys = rng.integers(0, h, count)
    xs = rng.integers(0, w, count)
    return [[int(y), int(x)] + [int(v) for v in arr[y, x]] for y, x in zip(ys, xs)]


def decode_case(name, seed):
    bgr = cv2.imread(os.path.join(OUT, name))
    assert bgr is not None and bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3, name
    return {
        "file": name,
        "width": int(bgr.shape[1]),
        "height": int(bgr.shape[0]),
        "crc32_bgr": crc(bgr),
        "channel_sums_bgr": [int(bgr[..., c].astype(np.int64).sum()) for c in range(3)],
        "samples_yx_bgr": samples_hwc(bgr, 64, seed),
    }


def check_decoder_facts():
    """The cv2 behaviour the Swift decoder copies; fail loudly if this stack behaves differently."""
    rgba = np.array(Image.open(os.path.join(OUT, "rgba.png")))
    assert np.array_equal(cv2.imread(os.path.join(OUT, "rgba.png"))[..., ::-1], rgba[..., :3]), "alpha is dropped"
    b16 = cv2.imread(os.path.join(OUT, "rgb16.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv2.imread(os.path.join(OUT, "rgb16.png")), (b16 >> 8).astype(np.uint8)), "16-bit keeps the high byte"
    assert cv2.imread(os.path.join(OUT, "exif6.jpg")).shape[:2] == (203, 200), "JPEG EXIF orientation applied"
    assert cv2.imread(os.path.join(OUT, "exif8.png")).shape[:2] == (30, 20), "PNG eXIf orientation applied"
    gray = np.array(Image.open(os.path.join(OUT, "gray.png")))
    assert np.array_equal(cv2.imread(os.path.join(OUT, "gray.png")), np.repeat(gray[..., None], 3, 2)), "grey replicated"


def resize_cases():
    src = cv2.imread(os.path.join(OUT, "resize_src.png"))
    big = cv2.imread(os.path.join(OUT, "rgba.png"))
    cases = []
    plan = [
        ("resize_src.png", src, [(224, 191), (50, 40), (33, 97), (1, 1), (97, 20), (300, 83), (5, 200), (96, 84)]),
        ("rgba.png", big, [(224, 336), (149, 224), (7, 1000), (201, 299)]),
    ]
    small = None
    for source, arr, sizes in plan:
        pil = Image.fromarray(arr)  # channel order is irrelevant: channels are resampled alike
        for k, (w, h) in enumerate(sizes):
            out = np.array(pil.resize((w, h), Image.BICUBIC))
            assert out.shape == (h, w, 3)
            if (source, w, h) == ("resize_src.png", 50, 40):
                small = out
            cases.append({
                "source": source, "width": w, "height": h, "crc32": crc(out),
                "samples_yx": samples_hwc(out, 32, 1000 + 17 * k + w),
            })
    np.save(os.path.join(OUT, "resize_small.npy"), small)
    return cases


def preprocess_case(name, channels, size, seed, save_as=None):
    bgr = cv2.imread(os.path.join(OUT, name))
    arr = bgr if channels == "bgr" else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    img = Image.fromarray(arr)
    x = clip_transform(size)(img)
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, size, size)
    resized = Resize(size, interpolation=InterpolationMode.BICUBIC)(img)
    crop = np.array(CenterCrop(size)(resized))
    # The crop determines the tensor: recompute ToTensor + Normalize from it and require identity.
    again = Normalize(MEAN, STD)(ToTensor()(Image.fromarray(crop)))
    assert torch.equal(again, x)
    w, h = resized.size
    flat = x.numpy().reshape(-1)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(flat.size, 300, replace=False))
    if save_as:
        np.save(os.path.join(OUT, save_as), x.numpy())
    return {
        "file": name, "channels": channels, "size": size,
        "resized_width": w, "resized_height": h,
        "crop_left": int(round((w - size) / 2.0)), "crop_top": int(round((h - size) / 2.0)),
        "crc32_crop": crc(crop),  # crop as uint8 H x W x 3 in the PIL image's channel order
        "crc32_tensor": crc(x.numpy().astype("<f4")),
        "mean": float(flat.astype(np.float64).mean()),
        "mean_abs": float(np.abs(flat.astype(np.float64)).mean()),
        "samples": [[int(i), float(flat[i])] for i in idx],
        "npy": save_as,
    }


def tiff_orientation(order, value, field_type=3, count=1, extra_entries=()):
    """A minimal TIFF block with IFD0 = [orientation entry] + extra entries."""
    e = "<" if order == "II" else ">"
    entries = [struct.pack(e + "HHI", 0x0112, field_type, count) +
               (struct.pack(e + "HH", value, 0) if field_type == 3 else struct.pack(e + "I", value))]
    entries += list(extra_entries)
    return order.encode() + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", len(entries)) + b"".join(entries) + b"\0\0\0\0"


def orientation_cases():
    """cv2's EXIF handling on JPEG: each case inserts APP1 segments right after SOI of progressive.jpg.
    The Swift test rebuilds the same bytes from the hex payloads and compares decoded CRCs."""
    base = open(os.path.join(OUT, "progressive.jpg"), "rb").read()
    exif = b"Exif\0\0"
    plan = [(f"II orientation {o}", [exif + tiff_orientation("II", o)]) for o in range(0, 10)]
    plan += [(f"MM orientation {o}", [exif + tiff_orientation("MM", o)]) for o in (3, 6, 8)]
    plan += [
        ("XMP APP1 first: only the first APP1 is read", [b"http://ns.adobe.com/xap/1.0/\0<x/>", exif + tiff_orientation("II", 6)]),
        ("identifier not checked: any 6 bytes", [b"XXXXXX" + tiff_orientation("II", 6)]),
        ("LONG field read as 16 bits (II)", [exif + tiff_orientation("II", 6, field_type=4)]),
        ("LONG field read as 16 bits (MM): high half is 0", [exif + tiff_orientation("MM", 6, field_type=4)]),
        ("first orientation entry wins", [exif + tiff_orientation("II", 6, extra_entries=[struct.pack("<HHIHH", 0x0112, 3, 1, 3, 0)])]),
        ("IFD claims 3 entries but ends after the first", [exif + b"II" + struct.pack("<HIH", 42, 8, 3) +
            struct.pack("<HHIHH", 0x0112, 3, 1, 8, 0)]),
        ("bad tag mark", [exif + b"II" + struct.pack("<HI", 43, 8) + tiff_orientation("II", 6)[8:]]),
        ("mixed byte-order mark is read as Motorola", [exif + b"IM" + tiff_orientation("MM", 6)[2:]]),
        ("string tag out of range before orientation stops the walk", [exif + b"II" + struct.pack("<HIH", 42, 8, 2) +
            struct.pack("<HHII", 0x010F, 2, 100, 5000) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + b"\0\0\0\0"]),
        ("string tag out of range after orientation keeps it", [exif + b"II" + struct.pack("<HIH", 42, 8, 2) +
            struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<HHII", 0x010F, 2, 100, 5000) + b"\0\0\0\0"]),
        ("rational tag out of range before orientation stops the walk", [exif + b"II" + struct.pack("<HIH", 42, 8, 2) +
            struct.pack("<HHII", 0x011A, 5, 1, 4000) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + b"\0\0\0\0"]),
    ]
    cases = []
    for label, payloads in plan:
        data = base[:2] + b"".join(b"\xff\xe1" + struct.pack(">H", len(p) + 2) + p for p in payloads) + base[2:]
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        cases.append({"label": label, "app1_hex": [p.hex() for p in payloads],
                      "width": int(bgr.shape[1]), "height": int(bgr.shape[0]), "crc32_bgr": crc(bgr)})
    return cases


def main():
    require_versions()
    torch.set_num_threads(1)
    make_images()
    check_decoder_facts()

    decode_files = ["photo.jpg", "rgba.png", "gray.png", "palette.png", "rgb16.png", "tiny.png", "exif6.jpg",
                    "gray.jpg", "cmyk.jpg", "progressive.jpg", "la.png", "gray16.png", "bilevel.png", "exif8.png", "interlaced.png",
                    "resize_src.png"]
    decode = [decode_case(f, 10 + i) for i, f in enumerate(decode_files)]
    np.save(os.path.join(OUT, "palette_decoded.npy"), cv2.imread(os.path.join(OUT, "palette.png")))

    preprocess = [
        preprocess_case("photo.jpg", "bgr", 224, 1, save_as="photo_bgr.npy"),
        preprocess_case("rgba.png", "bgr", 224, 2, save_as="rgba_bgr.npy"),
        preprocess_case("photo.jpg", "rgb", 224, 3),
        preprocess_case("rgba.png", "rgb", 224, 4),
        preprocess_case("gray.png", "bgr", 224, 5),
        preprocess_case("palette.png", "bgr", 224, 6),
        preprocess_case("rgb16.png", "bgr", 224, 7),
        preprocess_case("tiny.png", "bgr", 224, 8),
        preprocess_case("exif6.jpg", "bgr", 224, 9),
        preprocess_case("photo.jpg", "bgr", 336, 10),
    ]
    expected = {
        "generator": "tools/reference/make_image_fixtures.py",
        "versions": {"cv2": cv2.__version__, "PIL": PIL.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__},
        "mean": list(MEAN), "std": list(STD),
        "decode": decode,
        "resize": resize_cases(),
        "preprocess": preprocess,
        "orientation": orientation_cases(),
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
