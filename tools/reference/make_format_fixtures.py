#!/usr/bin/env python3
"""Write small PyTorch checkpoint fixtures for the AdapterFormats tests into Tests/Fixtures/formats/.

Run with Debian's python3 (python3-torch 1.13). Deterministic: fixed seeds, fixed contents.

Good inputs (values recorded in expected.json, flattened row-major after .contiguous()):
  mixed.pth           {'model': OrderedDict(f32, f16, bf16, transpose, shared storage, 0-dim, Parameter,
                       int64, f64), 'config': {...}}
  module_state.pth    an nn.Module.state_dict() (an OrderedDict carrying `_metadata`, restored via BUILD)
  zip64.pth           mixed.pth rewritten by hand with every ZIP64 structure (torch only emits them past 4 GB)
  shards/consolidated.0{0,1}.pth   a tiny LLaMA split the way Meta's model-parallel checkpoints are
  torchscript.pt      a scripted module (TorchScript archive, for the opt-in object mode)
Bad inputs:
  forbidden_global.pth  data.pkl does GLOBAL 'os system' + REDUCE (crafted by hand; never unpickled here)
  truncated.pth         first 60% of mixed.pth
  legacy.pth            torch.save(..., _use_new_zipfile_serialization=False)
  compressed.zip        a torch archive whose data.pkl is DEFLATED
  big_endian.pth        mixed.pth with a `byteorder` entry saying 'big' (torch >= 2.1 writes this entry)
"""
import collections
import json
import os
import re
import struct
import sys
import zipfile
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "Tests", "Fixtures", "formats")

DTYPE_NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


def tensor_record(name, t):
    t = t.detach()
    return {
        "name": name,
        "dtype": DTYPE_NAMES[t.dtype],
        "shape": list(t.shape),
        "values": [float(v) for v in t.contiguous().float().flatten().tolist()],
    }


def save(obj, relpath, **kw):
    path = os.path.join(OUT, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(obj, path, **kw)
    return path


def make_mixed():
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(4, 6, generator=g)
    shared = torch.arange(10, dtype=torch.float32) * 0.5 - 2.0
    model = collections.OrderedDict()
    model["layers.0.attention.wq.weight"] = torch.randn(4, 4, generator=g)
    model["layers.0.attention.wq.bias"] = torch.randn(4, generator=g).half()
    model["layers.0.feed_forward.w1.weight"] = torch.randn(3, 4, generator=g).bfloat16()
    # A transpose: stride (1, 6), not contiguous; torch saves the whole storage plus the strides.
    model["transposed"] = base.t()
    # Two views of one storage at different element offsets (plus a strided one).
    model["shared_a"] = shared[2:6]
    model["shared_b"] = shared[5:10].view(5)
    model["shared_strided"] = shared[1::3]
    model["scalar"] = torch.tensor(3.25)
    model["half_scalar"] = torch.tensor(-1.5, dtype=torch.float16)
    model["param"] = torch.nn.Parameter(torch.randn(2, 3, generator=g))
    model["empty"] = torch.zeros(0, 4)
    model["ids"] = torch.arange(6, dtype=torch.int64).view(2, 3)
    model["f64"] = torch.tensor([1.5, -2.25], dtype=torch.float64)
    model["flag"] = torch.tensor([True, False, True])
    config = {"w_bias": True, "w_lora": False, "lora_rank": 16, "eps": 1e-6, "name": "tiny",
              "layers": [1, 2, 3], "nothing": None, "big": 2**40}
    obj = {"model": model, "config": config}
    path = save(obj, "mixed.pth")

    float_names = [k for k, v in model.items() if v.dtype in DTYPE_NAMES]
    record = {
        "file": "mixed.pth",
        "keyPath": ["model"],
        "tensors": [tensor_record(k, model[k]) for k in sorted(float_names)],
        "nonFloat": {"ids": model["ids"].tolist(), "f64": model["f64"].tolist(), "flag": model["flag"].tolist()},
        "config": config,
    }
    return path, record


def make_module_state():
    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    sd = net.state_dict()
    save(sd, "module_state.pth")
    return {
        "file": "module_state.pth",
        "keyPath": [],
        "tensors": [tensor_record(k, v) for k, v in sorted(sd.items())],
    }


def write_zip64(entries, path, align=64):
    """A STORED zip in which every size/offset goes through ZIP64: 0xFFFFFFFF in the 32-bit fields, ZIP64
    extra fields in local and central headers, an EOCD64 record and locator; local headers also carry an
    'FB' pad so data starts 64-byte aligned, as PyTorch's writer does."""
    out = bytearray()
    cd = bytearray()
    for name, data in entries:
        off = len(out)
        nameb = name.encode()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        z64 = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        hdr = 30 + len(nameb) + len(z64) + 4
        pad = (-(off + hdr)) % align
        extra = z64 + struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(nameb), len(extra))
        out += nameb + extra + data
        cz64 = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF,
                          0xFFFFFFFF, len(nameb), len(cz64), 0, 0, 0, 0, 0xFFFFFFFF)
        cd += nameb + cz64
    cd_off = len(out)
    out += cd
    eocd64 = len(out)
    n = len(entries)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(cd), cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as f:
        f.write(out)


def read_entries(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def make_zip64(mixed_path):
    entries = [("zip64/" + n.split("/", 1)[1], d) for n, d in read_entries(mixed_path)]
    path = os.path.join(OUT, "zip64.pth")
    write_zip64(entries, path)
    # The crafted file must be readable by both Python's zipfile and torch itself.
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
    torch.load(path)


def make_shards():
    g = torch.Generator().manual_seed(99)
    dim, hidden, vocab = 8, 12, 10
    full = collections.OrderedDict()
    full["tok_embeddings.weight"] = torch.randn(vocab, dim, generator=g).half()
    for name, shape in [("attention.wq.weight", (dim, dim)), ("attention.wk.weight", (dim, dim)),
                        ("attention.wv.weight", (dim, dim)), ("attention.wo.weight", (dim, dim)),
                        ("feed_forward.w1.weight", (hidden, dim)), ("feed_forward.w2.weight", (dim, hidden)),
                        ("feed_forward.w3.weight", (hidden, dim))]:
        full["layers.0." + name] = torch.randn(*shape, generator=g).half()
    full["layers.0.attention_norm.weight"] = torch.randn(dim, generator=g).half()
    full["layers.0.ffn_norm.weight"] = torch.randn(dim, generator=g).half()
    full["norm.weight"] = torch.randn(dim, generator=g).half()
    full["output.weight"] = torch.randn(vocab, dim, generator=g).half()
    full["rope.freqs"] = torch.randn(2, generator=g)

    def split_dim(name):
        if any(p in name for p in ["attention.wq", "attention.wk", "attention.wv", "feed_forward.w1",
                                   "feed_forward.w3", "output.weight"]):
            return 0
        if any(p in name for p in ["attention.wo", "feed_forward.w2", "tok_embeddings"]):
            return 1
        return None

    for rank in range(2):
        shard = collections.OrderedDict()
        for k, v in full.items():
            d = split_dim(k)
            shard[k] = v.clone() if d is None else v.chunk(2, dim=d)[rank].clone()
        save(shard, f"shards/consolidated.0{rank}.pth")
    return {"dir": "shards", "tensors": [tensor_record(k, v) for k, v in sorted(full.items())]}


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 2)
        self.scale = torch.nn.Parameter(torch.tensor([0.5, 2.0]))

    def forward(self, x):
        return self.proj(x) * self.scale


def make_torchscript():
    torch.manual_seed(3)
    m = torch.jit.script(Tiny())
    path = os.path.join(OUT, "torchscript.pt")
    m.save(path)
    sd = m.state_dict()
    return {"file": "torchscript.pt", "tensors": [tensor_record(k, v) for k, v in sorted(sd.items())]}


def make_forbidden():
    # GLOBAL 'os system', the argument tuple, REDUCE, STOP: what a malicious __reduce__ produces. Written by
    # hand (pickle.dumps would name the module 'posix'), and never unpickled here.
    pkl = (b"\x80\x02" + b"cos\nsystem\n" + b"q\x00" + b"X\x0a\x00\x00\x00echo pwned" + b"q\x01"
           + b"\x85" + b"q\x02" + b"R" + b"q\x03" + b".")
    path = os.path.join(OUT, "forbidden_global.pth")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("forbidden_global/data.pkl"), pkl)
        z.writestr(zipfile.ZipInfo("forbidden_global/byteorder"), "little")
        z.writestr(zipfile.ZipInfo("forbidden_global/version"), "3\n")


def make_truncated(mixed_path):
    with open(mixed_path, "rb") as f:
        data = f.read()
    with open(os.path.join(OUT, "truncated.pth"), "wb") as f:
        f.write(data[: int(len(data) * 0.6)])


def make_legacy():
    path = save({"w": torch.arange(4, dtype=torch.float32)}, "legacy.pth", _use_new_zipfile_serialization=False)
    # Legacy storage keys are memory addresses; renumber them (BINUNICODE 'X' + u32 length + digits) so the
    # fixture is the same on every run.
    with open(path, "rb") as f:
        data = f.read()
    keys = {}

    def renumber(m):
        digits = m.group(2)
        if struct.unpack("<I", m.group(1))[0] != len(digits):
            return m.group(0)
        new = keys.setdefault(digits, str(len(keys)).encode())
        return b"X" + struct.pack("<I", len(new)) + new

    data = re.sub(rb"X(.{4})(\d{6,})", renumber, data, flags=re.S)
    with open(path, "wb") as f:
        f.write(data)
    assert torch.equal(torch.load(path)["w"], torch.arange(4, dtype=torch.float32))


def make_compressed(mixed_path):
    path = os.path.join(OUT, "compressed.zip")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in read_entries(mixed_path):
            name = "compressed/" + name.split("/", 1)[1]
            kind = zipfile.ZIP_DEFLATED if name.endswith("data.pkl") else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(name), data, compress_type=kind)


def make_big_endian(mixed_path):
    path = os.path.join(OUT, "big_endian.pth")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in read_entries(mixed_path):
            z.writestr(zipfile.ZipInfo("big_endian/" + name.split("/", 1)[1]), data)
        z.writestr(zipfile.ZipInfo("big_endian/byteorder"), "big")


def main():
    # TorchScript code generation iterates sets of names: fix the hash seed so torchscript.pt is reproducible.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))
    os.makedirs(OUT, exist_ok=True)
    mixed_path, mixed = make_mixed()
    expected = {
        "mixed": mixed,
        "module_state": make_module_state(),
        "shards": make_shards(),
        "torchscript": make_torchscript(),
    }
    make_zip64(mixed_path)
    make_forbidden()
    make_truncated(mixed_path)
    make_legacy()
    make_compressed(mixed_path)
    make_big_endian(mixed_path)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    total = 0
    for root, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in files)
    print(f"wrote fixtures to {os.path.normpath(OUT)} ({total} bytes)")


if __name__ == "__main__":
    main()
