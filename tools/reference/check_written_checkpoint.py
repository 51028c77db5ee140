#!/usr/bin/env python3
"""Loads a checkpoint written by the Swift TorchCheckpointWriter with torch.load and compares it with the
expected values the Swift test exported (testExportForTorchCheck).

Usage:
    TORCH_WRITER_CHECK_DIR=/tmp/twc swift test --filter TorchCheckpointWriterTests/testExportForTorchCheck
    /usr/bin/python3 tools/reference/check_written_checkpoint.py /tmp/twc/adapter.pth /tmp/twc/expected.json

Prints keys, dtypes and shapes, then "OK" (exit 0) or the mismatches (exit 1). Not part of CI: it needs
torch (Debian's python3-torch 1.13 works).
"""
import json
import math
import sys
import zipfile

import torch

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def decode(expected):
    """JSON from the Swift test: ordered dicts are {"__ordered__": [[key, value], ...]}."""
    if isinstance(expected, dict) and "__ordered__" in expected:
        return [(k, decode(v)) for k, v in expected["__ordered__"]]
    if isinstance(expected, list):
        return [decode(v) for v in expected]
    return expected


def same_scalar(a, b):
    if isinstance(b, bool) or isinstance(a, bool):
        return type(a) is type(b) and a == b
    if isinstance(b, float):
        return isinstance(a, float) and (a == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(b, int):
        return type(a) is int and a == b
    return a == b


def compare(got, want, path, errors):
    if isinstance(want, list) and all(isinstance(e, tuple) for e in want) and (want or isinstance(got, dict)):
        if not isinstance(got, dict):
            errors.append(f"{path}: expected a dict, got {type(got).__name__}")
            return
        if list(got.keys()) != [k for k, _ in want]:
            errors.append(f"{path}: key order {list(got.keys())} != {[k for k, _ in want]}")
        for k, v in want:
            if k in got:
                compare(got[k], v, f"{path}.{k}", errors)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            errors.append(f"{path}: expected a list of {len(want)}, got {got!r}")
            return
        for i, (g, w) in enumerate(zip(got, want)):
            compare(g, w, f"{path}[{i}]", errors)
    elif not same_scalar(got, want):
        errors.append(f"{path}: {got!r} ({type(got).__name__}) != {want!r} ({type(want).__name__})")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pth, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)
    print(f"torch {torch.__version__}; {pth}")
    with zipfile.ZipFile(pth) as z:  # Python's own zip reader must accept the archive too (CRCs checked)
        bad = z.testzip()
        print("zip entries:", [(i.filename, i.header_offset, i.file_size) for i in z.infolist()])
        if bad is not None:
            sys.exit(f"FAIL: CRC mismatch in {bad}")

    # weights_only restricts unpickling to tensors and plain data, proving no stray globals are needed. torch
    # 1.13's weights-only unpickler lacks BINFLOAT (opcode 71), so a float in the config makes it fail on
    # files torch.save wrote itself; then the default unpickler is the reference.
    try:
        obj = torch.load(pth, map_location="cpu", weights_only=True)
        mode = "weights_only=True"
    except TypeError:
        obj = torch.load(pth, map_location="cpu")
        mode = "default unpickler (this torch has no weights_only)"
    except Exception as e:  # pickle.UnpicklingError
        obj = torch.load(pth, map_location="cpu")
        mode = f"default unpickler (weights_only=True refused: {str(e).split('error: ')[-1]})"
    print("loaded with", mode)

    errors = []
    if list(obj.keys()) != expected["top_keys"]:
        errors.append(f"top-level keys {list(obj.keys())} != {expected['top_keys']}")

    model = obj["model"]
    want_names = [name for name, _ in expected["model"]]
    if list(model.keys()) != want_names:
        errors.append(f"model key order {list(model.keys())} != {want_names}")
    for name, spec in expected["model"]:
        t = model.get(name)
        if not isinstance(t, torch.Tensor):
            errors.append(f"model.{name}: missing or not a tensor")
            continue
        print(f"  {name}: {t.dtype} {tuple(t.shape)} stride={t.stride()} contiguous={t.is_contiguous()}")
        if t.dtype != DTYPES[spec["dtype"]]:
            errors.append(f"model.{name}: dtype {t.dtype} != {spec['dtype']}")
        if list(t.shape) != spec["shape"]:
            errors.append(f"model.{name}: shape {list(t.shape)} != {spec['shape']}")
        if t.requires_grad:
            errors.append(f"model.{name}: requires_grad is set")
        got = t.float().flatten().tolist()
        if got != spec["values"]:
            errors.append(f"model.{name}: values {got[:8]} != {spec['values'][:8]}")

    print("config:", obj["config"])
    compare(obj["config"], decode(expected["config"]), "config", errors)

    if errors:
        print("FAIL")
        for e in errors:
            print("  " + e)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
