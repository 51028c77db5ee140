#!/usr/bin/env python3
"""Writes Tests/Fixtures/hostile/pth/*.pth: torch.save-layout zips whose pickles are malformed or malicious.

Each file is what a stranger could hand a user as a checkpoint: code-execution payloads (os.system and friends
through GLOBAL, STACK_GLOBAL, INST, OBJ, NEWOBJ), broken pickles (unknown opcode, no STOP, stack underflow, a
missing memo entry, a string longer than the file), and tensors that lie (shapes larger than their storage,
(2^40, 0), overflowing or negative sizes, stride-0 views that would expand to gigabytes, offsets past the end,
unknown storage types, a storage file that is not in the archive). `ok.pth` is the valid control.

Needs only the standard library (no torch): torch's globals are written as names, never imported.
The Swift catalogue test (MalformedInputCatalogueTests) loads each file with `inspect` and as an adapter, and
asserts one `error:` line, exit status 1, and that no payload ran (its marker file does not appear).
"""
import io
import os
import struct
import sys
import zipfile

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "hostile", "pth")
MARKER = "/tmp/llama-adapter-hostile-payload-ran"


class P:
    """A tiny protocol-2 pickle assembler."""

    def __init__(self):
        self.b = bytearray(b"\x80\x02")

    def op(self, raw):
        self.b += raw
        return self

    def global_(self, module, name):
        return self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def unicode(self, s):
        e = s.encode()
        return self.op(b"X" + struct.pack("<I", len(e)) + e)

    def int_(self, i):
        if 0 <= i < 256:
            return self.op(b"K" + bytes([i]))
        if -(2**31) <= i < 2**31:
            return self.op(b"J" + struct.pack("<i", i))
        n = (i.bit_length() + 8) // 8
        return self.op(b"\x8a" + bytes([n]) + i.to_bytes(n, "little", signed=True))

    def tuple_(self, items):
        self.op(b"(")
        for it in items:
            self.int_(it)
        return self.op(b"t")

    def tensor(self, storage="FloatStorage", key="0", numel=4, offset=0, size=(2, 2), stride=(2, 1)):
        """torch._utils._rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())."""
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.op(b"(")
        # persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
        self.op(b"(").unicode("storage").global_("torch", storage).unicode(key).unicode("cpu").int_(numel).op(b"t")
        self.op(b"Q")
        self.int_(offset)
        self.tuple_(size)
        self.tuple_(stride)
        self.op(b"\x89")  # False
        self.global_("collections", "OrderedDict").op(b")R")
        return self.op(b"tR")

    def state_dict(self, tensors):
        """{'name': tensor, ...} for a list of (name, callable adding the tensor)."""
        self.op(b"}(")
        for name, add in tensors:
            self.unicode(name)
            add(self)
        return self.op(b"u")

    def stop(self):
        return bytes(self.b + b".")


def write(name, pickle_bytes, storages=None):
    os.makedirs(OUT, exist_ok=True)
    storages = {"0": struct.pack("<4f", 1, 2, 3, 4)} if storages is None else storages
    with zipfile.ZipFile(os.path.join(OUT, name), "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        for k, v in storages.items():
            z.writestr(f"archive/data/{k}", v)
        z.writestr("archive/version", "3\n")


def one(name="llama.layers.0.attention.wq.bias", **kw):
    return P().state_dict([(name, lambda p: p.tensor(**kw))]).stop()


def payload(build):
    p = P()
    build(p)
    return p.stop()


def main():
    cmd = f"touch {MARKER}"
    write("ok.pth", one())
    # Code execution: every route pickle offers to call a function.
    write("os_system.pth", payload(lambda p: p.global_("os", "system").op(b"(").unicode(cmd).op(b"tR")))
    write("posix_system.pth", payload(lambda p: p.global_("posix", "system").op(b"(").unicode(cmd).op(b"tR")))
    write("builtins_eval.pth", payload(lambda p: p.global_("builtins", "eval").op(b"(")
                                       .unicode(f"__import__('os').system('{cmd}')").op(b"tR")))
    write("subprocess_popen.pth", payload(lambda p: p.global_("subprocess", "Popen").op(b"((").unicode("touch")
                                          .unicode(MARKER).op(b"ltR")))
    write("stack_global.pth", payload(lambda p: p.unicode("os").unicode("system").op(b"\x93(").unicode(cmd).op(b"tR")))
    write("inst.pth", payload(lambda p: p.op(b"(").unicode(cmd).op(b"ios\nsystem\n")))
    write("obj.pth", payload(lambda p: p.op(b"(").global_("os", "system").unicode(cmd).op(b"o")))
    write("newobj.pth", payload(lambda p: p.global_("os", "system").op(b"(").unicode(cmd).op(b"t\x81")))
    write("reduce_in_state_dict.pth", P().state_dict([("x", lambda p: p.global_("os", "system").op(b"(").unicode(cmd).op(b"tR"))]).stop())
    # Broken pickles.
    write("unknown_opcode.pth", bytes(P().op(b"\xff").b) + b".")
    write("no_stop.pth", bytes(one()[:-1]))
    write("empty_pickle.pth", b"")
    write("stack_underflow.pth", payload(lambda p: p.op(b"R")))
    write("memo_missing.pth", payload(lambda p: p.op(b"h\x07")))
    write("huge_unicode.pth", bytes(P().op(b"X" + struct.pack("<I", 0x7FFFFFFF) + b"abc").b))
    write("huge_binbytes.pth", bytes(P().op(b"\x8e" + struct.pack("<Q", 1 << 62)).b))
    write("huge_long.pth", bytes(P().op(b"\x8b" + struct.pack("<i", 0x7FFFFFF0)).b))
    write("deep_nesting.pth", bytes(P().op(b"(" * 200000).b) + b".")
    write("deep_lists.pth", bytes(P().op(b"]" * 100000 + b"a" * 99999).b) + b".")
    write("mark_without_tuple.pth", payload(lambda p: p.op(b"(t" * 3 + b"e")))
    write("setitems_odd.pth", payload(lambda p: p.op(b"}(").unicode("a").op(b"u")))
    write("not_a_dict.pth", payload(lambda p: p.int_(7)))
    write("int_keys.pth", payload(lambda p: p.op(b"}(").int_(3).tensor().op(b"u")))
    # Tensors that lie about their data.
    write("numel_lie.pth", one(numel=1000))
    write("size_larger_than_storage.pth", one(size=(64, 64), stride=(64, 1)))
    write("shape_2p40_by_0.pth", one(size=(1 << 40, 0), stride=(0, 1), numel=0), {"0": b""})
    write("shape_overflow.pth", one(size=(1 << 62, 4), stride=(4, 1)))
    write("negative_size.pth", one(size=(-1,), stride=(1,)))
    write("negative_stride.pth", one(size=(2, 2), stride=(-2, 1)))
    write("stride0_expand.pth", one(size=(1 << 20, 1 << 12), stride=(0, 0), numel=1), {"0": struct.pack("<f", 1)})
    write("stride0_half.pth", one(storage="HalfStorage", size=(1 << 16, 1 << 16), stride=(0, 0), numel=1), {"0": b"\x00\x3c"})
    write("offset_beyond.pth", one(offset=1000))
    write("negative_offset.pth", one(offset=-3))
    write("unknown_storage.pth", one(storage="WeirdStorage"))
    write("missing_storage_file.pth", one(key="9"))
    write("odd_half_bytes.pth", one(storage="HalfStorage", numel=4), {"0": b"\x00\x3c\x00"})
    write("huge_numel.pth", one(numel=1 << 61))
    write("negative_numel.pth", one(numel=-4))
    write("rank_9.pth", one(size=(1,) * 9, stride=(1,) * 9))
    write("size_stride_mismatch.pth", one(size=(2, 2), stride=(1,)))


if __name__ == "__main__":
    sys.exit(main())
