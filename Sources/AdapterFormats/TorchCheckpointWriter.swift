import AdapterCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A value `TorchCheckpointWriter` can pickle: the subset of Python objects an adapter checkpoint holds
/// (`{'model': {name: tensor}, 'config': {...}}`). Dicts are ordered lists of pairs because state dicts keep
/// insertion order and `torch.load` users see that order.
public indirect enum PickleWriteValue: Sendable {
    /// A dense f32, f16 or bf16 tensor, saved as a contiguous CPU tensor with `requires_grad=False`.
    case tensor(Tensor)
    /// Python `True` / `False`.
    case bool(Bool)
    /// A Python int.
    case int(Int)
    /// A Python float.
    case double(Double)
    /// A Python str.
    case string(String)
    /// Python `None`.
    case none
    /// A Python dict with string keys, in the given order (duplicate keys are refused).
    case dict([(String, PickleWriteValue)])
    /// A Python list.
    case list([PickleWriteValue])
}

/// Writes `torch.save`-compatible zip checkpoints (the layout of torch 1.13: `<stem>/data.pkl`,
/// `<stem>/data/<key>`, `<stem>/version`; pickle protocol 2; STORED, 64-byte aligned entries; ZIP64 when
/// needed), readable by `torch.load` and by `TorchCheckpoint`. Writes are atomic: a temporary file in the
/// target directory is fsynced and renamed over the destination, so a failure never leaves a partial file.
public enum TorchCheckpointWriter {
    /// Saves the top-level dict `root` to `path`, like `torch.save(dict(root), path)`. Throws an
    /// `AdapterError` (one line) for unsupported values (quantized tensors, duplicate keys) or I/O failures;
    /// an existing file at `path` is then left untouched.
    public static func write(_ root: [(String, PickleWriteValue)], to path: String) throws {
        try write(root, to: path, options: Options())
    }

    /// Knobs for tests only: they exercise code paths that real inputs reach only at > 4 GB or on I/O failure.
    struct Options {
        /// Emit ZIP64 extra fields and end records for every entry even when nothing overflows 32 bits.
        var forceZip64 = false
        /// Throw an I/O error just before the entry whose name ends with this suffix is written.
        var failBeforeEntry: String? = nil
    }

    static func write(_ root: [(String, PickleWriteValue)], to path: String, options: Options) throws {
        // Everything that can be refused for content reasons is checked here, before the disk is touched.
        var pickler = CheckpointPickler()
        try pickler.emitRoot(root)

        let (directory, fileName) = splitPath(path)
        var stem = fileName
        if let dot = stem.lastIndex(of: ".") { stem = String(stem[..<dot]) }
        // torch names the archive folder after the file's stem; an empty stem would give names like
        // "/data.pkl", which readers reject, so fall back to the name torch uses for in-memory buffers.
        if stem.isEmpty || stem.contains("/") { stem = "archive" }

        var entries: [ZipEntryPayload] = [.init(name: stem + "/data.pkl", bytes: .owned(pickler.out))]
        for (i, t) in pickler.storages.enumerated() {
            entries.append(.init(name: "\(stem)/data/\(i)", bytes: .tensor(t)))
        }
        entries.append(.init(name: stem + "/version", bytes: .owned(Array("3\n".utf8))))

        var st = stat()
        let existingMode: mode_t? = stat(path, &st) == 0 ? st.st_mode : nil
        if let mode = existingMode, (mode & S_IFMT) == S_IFDIR {
            throw AdapterError.io("cannot write checkpoint \(path): it is a directory")
        }
        // A device, FIFO or socket is never replaced by a rename.
        if let mode = existingMode, (mode & S_IFMT) != S_IFREG {
            throw AdapterError.io("cannot write checkpoint \(path): it exists and is not a regular file")
        }

        let tempPath = directory + "/." + fileName + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw AdapterError.io("cannot write checkpoint \(path): cannot create a temporary file in \(directory): \(errnoText())")
        }
        var fdOpen = true
        // An interrupt (SIGINT/SIGTERM handlers call AtomicFile.removeTemporaryFiles) must not leave it behind.
        let slot = AtomicFile.track(tempPath)
        defer { AtomicFile.untrack(slot) }
        do {
            // Replacing a file keeps its permissions, as an in-place overwrite would.
            if let mode = existingMode { _ = fchmod(fd, mode & 0o7777) }
            var sink = FileSink(fd: fd, path: path)
            try ZipWriter.write(entries, to: &sink, options: options)
            guard fsync(fd) == 0 else { throw AdapterError.io("cannot write checkpoint \(path): fsync failed: \(errnoText())") }
            fdOpen = false
            guard close(fd) == 0 else { throw AdapterError.io("cannot write checkpoint \(path): close failed: \(errnoText())") }
            guard rename(tempPath, path) == 0 else {
                throw AdapterError.io("cannot write checkpoint \(path): rename from temporary file failed: \(errnoText())")
            }
        } catch {
            if fdOpen { close(fd) }
            unlink(tempPath)
            if let e = error as? AdapterError { throw e }
            throw AdapterError.io("cannot write checkpoint \(path): \(error)")
        }
        // Makes the rename itself durable; best effort, since some file systems refuse fsync on directories.
        let dfd = open(directory, O_RDONLY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    static func splitPath(_ path: String) -> (directory: String, file: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }

    // MARK: - CRC-32

    /// Slicing-by-8 tables for the reflected CRC-32 polynomial 0xEDB88320 (zip, PNG, gzip): 8 × 256 entries,
    /// table k advancing a byte through k further zero bytes, so eight bytes are folded per step.
    static let crcTables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let prev = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (prev >> 8) ^ t[Int(prev & 0xFF)]
            }
        }
        return t
    }()

    /// CRC-32 of `bytes` continuing from `crc` (0 for a fresh checksum), as stored in zip headers.
    static func crc32(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        var c = ~crc
        guard let base = bytes.baseAddress else { return crc }
        let n = bytes.count
        var i = 0
        crcTables.withUnsafeBufferPointer { t in
            while i + 8 <= n {
                let one = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt32.self)) ^ c
                let two = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
                c = t[7 * 256 + Int(one & 0xFF)] ^ t[6 * 256 + Int((one >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((one >> 16) & 0xFF)] ^ t[4 * 256 + Int(one >> 24)]
                    ^ t[3 * 256 + Int(two & 0xFF)] ^ t[2 * 256 + Int((two >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((two >> 16) & 0xFF)] ^ t[Int(two >> 24)]
                i += 8
            }
            while i < n {
                c = t[Int((c ^ UInt32(base.load(fromByteOffset: i, as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                i += 1
            }
        }
        return ~c
    }

    /// CRC-32 of a byte array.
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { crc32($0) }
    }
}

// MARK: - Pickle protocol 2

/// Emits the pickle stream `torch.save` produces, minus memoization: the value is a tree, so no object is
/// referenced twice and BINPUT/BINGET would only save a few bytes per repeated global.
struct CheckpointPickler {
    var out: [UInt8] = [0x80, 0x02] // PROTO 2
    /// Tensors whose bytes become `data/<index>`, in first-use order (torch numbers storages the same way).
    var storages: [Tensor] = []
    private var storageIndex: [StorageIdentity: Int] = [:]

    /// Tensors viewing the same bytes share one storage entry, as tied weights do in torch.save.
    private struct StorageIdentity: Hashable {
        let storage: ObjectIdentifier
        let byteOffset: Int
        let byteCount: Int
        let dtype: DType
    }

    mutating func emitRoot(_ root: [(String, PickleWriteValue)]) throws {
        try emitDict(root, path: "")
        out.append(0x2E) // STOP
    }

    private mutating func emit(_ v: PickleWriteValue, path: String) throws {
        switch v {
        case .none: out.append(0x4E)
        case .bool(let b): out.append(b ? 0x88 : 0x89) // NEWTRUE / NEWFALSE
        case .int(let i): emitInt(i)
        case .double(let d):
            out.append(0x47) // BINFLOAT, big-endian
            withUnsafeBytes(of: d.bitPattern.bigEndian) { out.append(contentsOf: $0) }
        case .string(let s): emitString(s)
        case .dict(let entries): try emitDict(entries, path: path)
        case .list(let items):
            out.append(0x5D) // EMPTY_LIST
            // Batches of 1000 like CPython's pickler, which keeps the unpickler's stack small.
            var start = 0
            while start < items.count {
                out.append(0x28) // MARK
                for (i, item) in items[start..<min(start + 1000, items.count)].enumerated() {
                    try emit(item, path: "\(path)[\(start + i)]")
                }
                out.append(0x65) // APPENDS
                start += 1000
            }
        case .tensor(let t): try emitTensor(t, path: path)
        }
    }

    private mutating func emitDict(_ entries: [(String, PickleWriteValue)], path: String) throws {
        out.append(0x7D) // EMPTY_DICT
        var seen = Set<String>()
        var start = 0
        while start < entries.count {
            out.append(0x28) // MARK
            for (key, value) in entries[start..<min(start + 1000, entries.count)] {
                let child = path.isEmpty ? key : path + "." + key
                guard seen.insert(key).inserted else {
                    throw AdapterError.invalidArgument("cannot save checkpoint: duplicate key '\(printable(child))'")
                }
                emitString(key)
                try emit(value, path: child)
            }
            out.append(0x75) // SETITEMS
            start += 1000
        }
    }

    private mutating func emitInt(_ i: Int) {
        if i >= 0 && i < 0x100 {
            out.append(0x4B); out.append(UInt8(i)) // BININT1
        } else if i >= 0 && i < 0x1_0000 {
            out.append(0x4D) // BININT2
            withUnsafeBytes(of: UInt16(i).littleEndian) { out.append(contentsOf: $0) }
        } else if let v = Int32(exactly: i) {
            out.append(0x4A) // BININT (signed)
            withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
        } else {
            // LONG1: minimal little-endian two's complement, dropping sign-extension bytes.
            var bytes = withUnsafeBytes(of: Int64(i).littleEndian) { Array($0) }
            while bytes.count > 1 {
                let last = bytes[bytes.count - 1], prevHigh = bytes[bytes.count - 2] & 0x80
                if (last == 0x00 && prevHigh == 0) || (last == 0xFF && prevHigh != 0) { bytes.removeLast() } else { break }
            }
            out.append(0x8A); out.append(UInt8(bytes.count))
            out.append(contentsOf: bytes)
        }
    }

    private mutating func emitString(_ s: String) {
        let utf8 = Array(s.utf8)
        out.append(0x58) // BINUNICODE
        withUnsafeBytes(of: UInt32(utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: utf8)
    }

    private mutating func emitGlobal(_ module: String, _ name: String) {
        out.append(0x63) // GLOBAL
        out.append(contentsOf: Array((module + "\n" + name + "\n").utf8))
    }

    private mutating func emitIntTuple(_ values: [Int]) {
        switch values.count {
        case 0: out.append(0x29) // EMPTY_TUPLE
        case 1...3:
            values.forEach { emitInt($0) }
            out.append([0x85, 0x86, 0x87][values.count - 1]) // TUPLE1/2/3
        default:
            out.append(0x28)
            values.forEach { emitInt($0) }
            out.append(0x74) // TUPLE
        }
    }

    /// `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`, the storage being
    /// the persistent id `('storage', torch.<X>Storage, key, 'cpu', numel)`.
    private mutating func emitTensor(_ t: Tensor, path: String) throws {
        let storageClass: String
        switch t.dtype {
        case .f32: storageClass = "FloatStorage"
        case .f16: storageClass = "HalfStorage"
        case .bf16: storageClass = "BFloat16Storage"
        default:
            throw AdapterError.unsupported("cannot save tensor '\(printable(path))' as a PyTorch checkpoint: element type \(t.dtype.rawValue) is block-quantized and PyTorch has no such dtype; dequantize it to f32/f16/bf16 first")
        }
        guard t.shape.allSatisfy({ $0 >= 0 }), t.byteOffset >= 0, t.byteOffset + t.byteCount <= t.storage.byteCount else {
            throw AdapterError.shape("cannot save tensor '\(printable(path))': shape \(t.shape) does not fit its storage")
        }
        let identity = StorageIdentity(storage: ObjectIdentifier(t.storage), byteOffset: t.byteOffset,
                                       byteCount: t.byteCount, dtype: t.dtype)
        let key: Int
        if let k = storageIndex[identity] {
            key = k
        } else {
            key = storages.count
            storageIndex[identity] = key
            storages.append(t)
        }
        // Contiguous strides as torch computes them: size-0 dimensions count as 1.
        var strides = [Int](repeating: 1, count: t.shape.count)
        var step = 1
        for d in t.shape.indices.reversed() { strides[d] = step; step *= max(t.shape[d], 1) }

        emitGlobal("torch._utils", "_rebuild_tensor_v2")
        out.append(0x28) // MARK (arguments)
        out.append(0x28) // MARK (persistent id)
        emitString("storage")
        emitGlobal("torch", storageClass)
        emitString(String(key))
        emitString("cpu")
        emitInt(t.count)
        out.append(0x74) // TUPLE
        out.append(0x51) // BINPERSID
        emitInt(0) // storage_offset
        emitIntTuple(t.shape)
        emitIntTuple(strides)
        out.append(0x89) // requires_grad = False
        emitGlobal("collections", "OrderedDict") // backward_hooks = OrderedDict()
        out.append(0x29) // EMPTY_TUPLE
        out.append(0x52) // REDUCE
        out.append(0x74) // TUPLE
        out.append(0x52) // REDUCE
    }
}

// MARK: - Zip

/// One archive entry and where its bytes live (tensor data is written straight from the tensor, uncopied).
struct ZipEntryPayload {
    enum Bytes {
        case owned([UInt8])
        case tensor(Tensor)
    }
    let name: String
    let bytes: Bytes

    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch bytes {
        case .owned(let a): return try a.withUnsafeBytes(body)
        case .tensor(let t): return try body(UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
        }
    }
}

/// Appends to a file descriptor, tracking the offset (zip headers need absolute offsets).
struct FileSink {
    let fd: Int32
    let path: String
    private(set) var offset: UInt64 = 0

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            // Linux writes at most ~2 GiB per call, and any write may be partial or interrupted.
            let n = sysWrite(fd, p, min(left, 1 << 30))
            if n < 0 {
                if errno == EINTR { continue }
                throw AdapterError.io("cannot write checkpoint \(path): \(TorchCheckpointWriter.errnoText())")
            }
            if n == 0 { throw AdapterError.io("cannot write checkpoint \(path): write made no progress") }
            p += n
            left -= n
            offset += UInt64(n)
        }
    }

    mutating func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }
}

#if canImport(Glibc)
private func sysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { Glibc.write(fd, p, n) }
#else
private func sysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { Darwin.write(fd, p, n) }
#endif

/// Little-endian field appender for zip records.
struct LEBytes {
    var bytes: [UInt8] = []
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
}

/// The zip container as PyTorch's `PyTorchStreamWriter` lays it out: STORED entries, data aligned to 64 bytes
/// by an `FB` extra field (so readers can mmap tensors), central directory, ZIP64 records past 4 GiB.
enum ZipWriter {
    static let alignment: UInt64 = 64
    static let max32: UInt64 = 0xFFFF_FFFF

    private struct Written {
        let name: [UInt8]
        let crc: UInt32
        let size: UInt64
        let offset: UInt64
    }

    static func write(_ entries: [ZipEntryPayload], to sink: inout FileSink, options: TorchCheckpointWriter.Options) throws {
        var written: [Written] = []
        for entry in entries {
            if let suffix = options.failBeforeEntry, entry.name.hasSuffix(suffix) {
                throw AdapterError.io("cannot write checkpoint \(sink.path): injected failure before \(entry.name)")
            }
            let name = Array(entry.name.utf8)
            let offset = sink.offset
            try entry.withBytes { data in
                let size = UInt64(data.count)
                let crc = TorchCheckpointWriter.crc32(data)
                // Sizes go in a ZIP64 extra when they do not fit; the local header then must carry both.
                let zip64Sizes = options.forceZip64 || size >= max32
                var extra = LEBytes()
                if zip64Sizes {
                    extra.u16(0x0001); extra.u16(16); extra.u64(size); extra.u64(size)
                }
                let start = offset + 30 + UInt64(name.count) + UInt64(extra.bytes.count) + 4
                let pad = (alignment - start % alignment) % alignment
                extra.u16(0x4246); extra.u16(UInt16(pad)) // "FB", PyTorch's padding field
                extra.bytes.append(contentsOf: [UInt8](repeating: 0x5A, count: Int(pad))) // 'Z' like PyTorch

                var h = LEBytes()
                h.u32(0x0403_4B50)
                h.u16(zip64Sizes ? 45 : 20) // version needed
                h.u16(flags)
                h.u16(0) // STORED
                h.u16(0); h.u16(0) // time, date: zero like torch, so output is reproducible
                h.u32(crc)
                h.u32(zip64Sizes ? UInt32(max32) : UInt32(size))
                h.u32(zip64Sizes ? UInt32(max32) : UInt32(size))
                h.u16(UInt16(name.count))
                h.u16(UInt16(extra.bytes.count))
                h.bytes.append(contentsOf: name)
                h.bytes.append(contentsOf: extra.bytes)
                try sink.write(h.bytes)
                precondition(sink.offset % alignment == 0, "zip entry data must be 64-byte aligned")
                try sink.write(data)
                written.append(Written(name: name, crc: crc, size: size, offset: offset))
            }
        }

        let cdOffset = sink.offset
        for w in written {
            let bigSize = options.forceZip64 || w.size >= max32
            let bigOffset = options.forceZip64 || w.offset >= max32
            var extra = LEBytes()
            if bigSize || bigOffset {
                // Only the saturated fields appear, in the order: original size, stored size, offset.
                extra.u16(0x0001); extra.u16(UInt16((bigSize ? 16 : 0) + (bigOffset ? 8 : 0)))
                if bigSize { extra.u64(w.size); extra.u64(w.size) }
                if bigOffset { extra.u64(w.offset) }
            }
            var h = LEBytes()
            h.u32(0x0201_4B50)
            let version: UInt16 = (bigSize || bigOffset) ? 45 : 20
            h.u16(version) // made by (MS-DOS attributes, like torch)
            h.u16(version) // needed
            h.u16(flags)
            h.u16(0)
            h.u16(0); h.u16(0)
            h.u32(w.crc)
            h.u32(bigSize ? UInt32(max32) : UInt32(w.size))
            h.u32(bigSize ? UInt32(max32) : UInt32(w.size))
            h.u16(UInt16(w.name.count))
            h.u16(UInt16(extra.bytes.count))
            h.u16(0) // comment
            h.u16(0) // disk
            h.u16(0) // internal attributes
            h.u32(0) // external attributes
            h.u32(bigOffset ? UInt32(max32) : UInt32(w.offset))
            h.bytes.append(contentsOf: w.name)
            h.bytes.append(contentsOf: extra.bytes)
            try sink.write(h.bytes)
        }
        let cdSize = sink.offset - cdOffset
        let count = UInt64(written.count)
        let zip64 = options.forceZip64 || cdOffset >= max32 || cdSize >= max32 || count >= 0xFFFF
            || written.contains { $0.size >= max32 || $0.offset >= max32 }

        var end = LEBytes()
        if zip64 {
            let recordOffset = sink.offset
            end.u32(0x0606_4B50)
            end.u64(44) // size of the rest of this record
            end.u16(45); end.u16(45)
            end.u32(0); end.u32(0) // this disk, disk with the central directory
            end.u64(count); end.u64(count)
            end.u64(cdSize); end.u64(cdOffset)
            end.u32(0x0706_4B50) // locator
            end.u32(0)
            end.u64(recordOffset)
            end.u32(1) // total disks
        }
        // In ZIP64 archives the classic record saturates fields that overflow (all of them when forced), which
        // tells readers to take the values from the ZIP64 record.
        let sat = options.forceZip64
        end.u32(0x0605_4B50)
        end.u16(0); end.u16(0)
        let count16: UInt16 = sat || count >= 0xFFFF ? 0xFFFF : UInt16(count)
        end.u16(count16); end.u16(count16)
        end.u32(sat || cdSize >= max32 ? UInt32(max32) : UInt32(cdSize))
        end.u32(sat || cdOffset >= max32 ? UInt32(max32) : UInt32(cdOffset))
        end.u16(0) // comment
        try sink.write(end.bytes)
    }

    /// Bit 11 marks UTF-8 names (set by torch too); no data descriptor, since sizes are known up front.
    static let flags: UInt16 = 0x0800
}
