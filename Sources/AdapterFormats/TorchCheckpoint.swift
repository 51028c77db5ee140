import AdapterCore

/// A PyTorch checkpoint written by `torch.save` (zip format, torch >= 1.6), exposing one dict of the saved
/// object as a `TensorSource`. Tensors are views of the memory-mapped file (entries are stored
/// uncompressed and 64-byte aligned); non-contiguous ones are copied when requested.
///
/// The saved object is often nested (`{'model': {...}, 'config': {...}}`); `keyPath` selects the dict
/// whose tensor entries become the tensors. Its other entries, and the sibling entries of every dict on
/// the way down (such as `config`), become `metadata`; entries of the selected dict win on a name clash.
/// Integer, float64 and bool tensors are metadata too (as nested lists), since kernels take only
/// f32/f16/bf16.
public final class TorchCheckpoint: TensorSource {
    /// Path of the file.
    public let path: String
    /// The whole unpickled object.
    public let root: PickleValue
    /// Keys followed from `root` to the dict exposed as tensors.
    public let keyPath: [String]
    /// Names of the f32/f16/bf16 tensors of the selected dict, sorted.
    public let tensorNames: [String]
    private let tensors: [String: TorchTensor]
    private let otherTensors: [String: TorchTensor]

    /// Non-tensor entries. Integer/f64/bool tensors of the selected dict become nested lists (up to 2^20
    /// elements); tensors deeper inside (optimizer state and the like) only when tiny, else a
    /// `<tensor ...>` description, so reading a config never converts megabytes.
    public let metadata: [String: MetadataValue]

    /// Opens `path` and exposes the dict at `keyPath` (empty: the top-level object; nil: chosen by
    /// `defaultKeyPath(for:)`, which finds the weights of both plain state dicts and `{'model': ...}` files).
    public convenience init(path: String, keyPath: [String]? = nil, options: PickleOptions = .checkpoint) throws {
        let root = try Self.load(path: path, options: options)
        try self.init(root: root, keyPath: keyPath ?? Self.defaultKeyPath(for: root), path: path)
    }

    /// Exposes the dict at `keyPath` of an already loaded object (see `load(path:options:)`), so several
    /// views of one file need only one parse.
    public init(root: PickleValue, keyPath: [String], path: String) throws {
        self.path = path
        self.root = root
        self.keyPath = keyPath
        var node = root
        var inherited: [(String, PickleValue)] = []
        for (depth, key) in keyPath.enumerated() {
            guard let entries = node.dictEntries else {
                let at = keyPath[..<depth].joined(separator: ".")
                throw AdapterError.format("\(path): '\(at.isEmpty ? "<root>" : at)' is a \(node.kindName), not a dict")
            }
            guard let next = node[key] else {
                let keys = printable(entries.prefix(20).map(\.key.keyString).joined(separator: ", "), limit: 200)
                throw AdapterError.format("\(path): no entry '\(printable(key))' in the checkpoint (keys there: \(keys))")
            }
            for e in entries where e.key.stringValue != key { inherited.append((e.key.keyString, e.value)) }
            node = next
        }
        guard let entries = node.dictEntries else {
            throw AdapterError.format("\(path): the checkpoint's \(keyPath.isEmpty ? "top-level object" : "'\(keyPath.joined(separator: "."))'") is a \(node.kindName), not a dict of tensors")
        }
        var tensors: [String: TorchTensor] = [:]
        var other: [String: TorchTensor] = [:]
        var meta: [(String, PickleValue)] = inherited
        for e in entries {
            let name = e.key.keyString
            if case .tensor(let t) = e.value {
                if t.scalarType.dtype != nil { tensors[name] = t; continue }
                other[name] = t
            }
            meta.append((name, e.value))
        }
        self.tensors = tensors
        self.otherTensors = other
        self.tensorNames = tensors.keys.sorted()
        // Converted now rather than lazily so the source can be shared across threads.
        var metadata: [String: MetadataValue] = [:]
        for (k, v) in meta {
            if case .tensor(let t) = v, t.count <= 1 << 20 {
                metadata[k] = t.listValue()
            } else {
                metadata[k] = v.metadataValue(tensorElementLimit: 64)
            }
        }
        self.metadata = metadata
    }

    /// Element type and shape of `name`, or nil when it is not an f32/f16/bf16 tensor.
    public func info(_ name: String) -> TensorInfo? {
        tensors[name]?.info
    }

    /// The tensor `name`: a view of the mapped file when contiguous, else a contiguous copy.
    public func tensor(_ name: String) throws -> Tensor {
        if let t = tensors[name] { return try t.materialize(name: name) }
        if let t = otherTensors[name] { return try t.materialize(name: name) }
        throw AdapterError.format("\(path): no tensor named '\(printable(name))'")
    }

    /// The undecoded tensor record for `name` (any element type), for callers that need strides or ints.
    public func torchTensor(_ name: String) -> TorchTensor? {
        tensors[name] ?? otherTensors[name]
    }

    /// The key path that most likely holds the weights: `[]` when the top level has tensors, else the first
    /// of `model`, `state_dict`, `module` that is a dict with tensors (official adapter checkpoints use
    /// `model`), else `[]`.
    public static func defaultKeyPath(for root: PickleValue) -> [String] {
        func hasTensors(_ v: PickleValue?) -> Bool {
            v?.dictEntries?.contains { if case .tensor = $0.value { return true } else { return false } } ?? false
        }
        if hasTensors(root) { return [] }
        for key in ["model", "state_dict", "module"] where hasTensors(root[key]) { return [key] }
        return []
    }

    // MARK: - Loading

    /// The magic number that starts pre-1.6 (non-zip) `torch.save` files, as pickled by protocol 2:
    /// PROTO 2, LONG1 of 10 bytes holding 0x1950a86a20f9469cfc6c little-endian.
    static let legacyMagic: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    /// Unpickles the object saved in `path`, resolving tensors to views of the memory-mapped file. The
    /// values keep the map alive. Refuses legacy (pre-zip) files, big-endian files, compressed entries and
    /// any global outside the allow-list of `options`.
    ///
    /// `pickle` and `storageFolder` name the entries inside the archive folder; TorchScript archives also
    /// hold `constants.pkl`, whose tensors live in `constants/`.
    public static func load(path: String, options: PickleOptions = .checkpoint, pickle: String = "data.pkl",
                            storageFolder: String = "data/") throws -> PickleValue {
        let file = try MappedFile(path: path)
        let head = Array(file.bytes.prefix(64))
        if head.first == 0x80 {
            // Legacy files start with the pickled magic number: LONG1, 10 bytes (after PROTO and maybe FRAME).
            let magic = Array(legacyMagic[2...])
            let isLegacy = head.count >= magic.count && (0...(head.count - magic.count)).contains { Array(head[$0..<($0 + magic.count)]) == magic }
            if isLegacy {
                throw AdapterError.unsupported("\(path): legacy PyTorch serialization format (pre-1.6, magic 0x1950a86a20f9469cfc6c) is not supported; re-save it with torch.save in PyTorch >= 1.6")
            }
            throw AdapterError.unsupported("\(path): a raw pickle, not a PyTorch zip checkpoint")
        }
        let archive = try ZipArchive(file: file)
        let prefix = try archivePrefix(archive)

        if let entry = archive.entry(named: prefix + "byteorder") {
            let text = String(decoding: try archive.data(of: entry), as: UTF8.self)
                .split(whereSeparator: \.isWhitespace).first.map(String.init) ?? ""
            if text == "big" {
                throw AdapterError.unsupported("\(path): saved on a big-endian machine (byteorder 'big'); only little-endian checkpoints are supported")
            }
            guard text == "little" else {
                throw AdapterError.format("\(path): unknown byteorder '\(text.prefix(20))'")
            }
        }
        if archive.entry(named: prefix + "constants.pkl") != nil, !options.allowTorchScriptObjects {
            throw AdapterError.unsupported("\(path): a TorchScript archive (it has constants.pkl), not a torch.save checkpoint; open it with the TorchScript loader")
        }
        guard let pickleEntry = archive.entry(named: prefix + pickle) else {
            throw AdapterError.format("\(path): no \(printable(pickle)) entry")
        }
        let pickleBytes = try archive.data(of: pickleEntry)

        var storages: [String: TorchStorage] = [:]
        let unpickler = Unpickler(source: path, options: options) { pid in
            try resolveStorage(pid, archive: archive, folder: prefix + storageFolder, cache: &storages)
        }
        return try unpickler.load(pickleBytes)
    }

    /// The folder every entry sits in (`<stem>/`); any single-level prefix holding a `data.pkl` is
    /// accepted, preferring the file's stem, since renamed files keep their original folder name.
    static func archivePrefix(_ archive: ZipArchive) throws -> String {
        let candidates = archive.entries.compactMap { e -> String? in
            guard e.name.hasSuffix("/data.pkl") else { return nil }
            let folder = String(e.name.dropLast("/data.pkl".count))
            return folder.isEmpty || folder.contains("/") ? nil : folder + "/"
        }
        guard !candidates.isEmpty else {
            throw AdapterError.format("\(archive.path): not a PyTorch checkpoint (no '<name>/data.pkl' entry in the zip)")
        }
        let file = archive.path.split(separator: "/").last.map(String.init) ?? ""
        let stem = file.contains(".") ? String(file[..<file.lastIndex(of: ".")!]) : file
        return candidates.first { $0 == stem + "/" } ?? candidates.sorted()[0]
    }

    /// `persistent_load` for torch.save: `('storage', torch.<X>Storage, key, location, numel)` resolves to
    /// the entry `<folder><key>` as a borrowed view; repeated keys return the same storage (shared storages).
    static func resolveStorage(_ pid: PickleValue, archive: ZipArchive, folder: String,
                               cache: inout [String: TorchStorage]) throws -> PickleValue {
        let path = archive.path
        guard case .tuple(let items) = pid, items.count == 5 else {
            throw AdapterError.format("\(path): unexpected persistent id (expected a 5-tuple ('storage', type, key, location, numel))")
        }
        let typename: String? = {
            switch items[0] {
            case .string(let s): return s
            case .bytes(let b): return String(decoding: b, as: UTF8.self)
            default: return nil
            }
        }()
        guard typename == "storage" else {
            throw AdapterError.format("\(path): unknown persistent id kind '\(items[0].keyString)'")
        }
        guard case .global(let module, let cls) = items[1], module == "torch" else {
            throw AdapterError.format("\(path): persistent id has no storage class")
        }
        guard let scalar = TorchScalarType(storageClass: cls) else {
            throw AdapterError.unsupported("\(path): storage type torch.\(cls) is not supported")
        }
        let key: String
        switch items[2] {
        case .string(let s): key = s
        case .int(let i): key = String(i)
        default: throw AdapterError.format("\(path): persistent id has a bad storage key")
        }
        let location = items[3].stringValue ?? items[3].keyString
        guard let numel = items[4].intValue, numel >= 0 else {
            throw AdapterError.format("\(path): storage '\(printable(key))' has a bad element count")
        }
        if let cached = cache[key] {
            guard cached.scalarType == scalar, cached.count == numel else {
                throw AdapterError.format("\(path): storage '\(printable(key))' is used with two different types or sizes")
            }
            return .storage(cached)
        }
        guard let entry = archive.entry(named: folder + key) else {
            throw AdapterError.format("\(path): storage '\(printable(key))' is missing from the archive (no \(printable(folder + key)); truncated?)")
        }
        let storage = try TorchStorage(key: key, scalarType: scalar, location: location, count: numel,
                                       bytes: try archive.storage(of: entry), source: path)
        cache[key] = storage
        return .storage(storage)
    }
}
