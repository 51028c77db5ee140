import AdapterCore

/// The value types of GGUF metadata (`gguf_type` in ggml's gguf.h); the raw value is the id in the file.
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    /// Unsigned 8-bit integer.
    case uint8 = 0
    /// Signed 8-bit integer.
    case int8 = 1
    /// Unsigned 16-bit integer.
    case uint16 = 2
    /// Signed 16-bit integer.
    case int16 = 3
    /// Unsigned 32-bit integer (most counts, e.g. `llama.block_count`).
    case uint32 = 4
    /// Signed 32-bit integer (e.g. `tokenizer.ggml.token_type`).
    case int32 = 5
    /// IEEE single (e.g. `llama.rope.freq_base`).
    case float32 = 6
    /// One byte, 0 or 1.
    case bool = 7
    /// u64 byte length, then UTF-8 bytes (no terminator).
    case string = 8
    /// u32 element type, u64 count, then the elements without their own type tags.
    case array = 9
    /// Unsigned 64-bit integer.
    case uint64 = 10
    /// Signed 64-bit integer.
    case int64 = 11
    /// IEEE double.
    case float64 = 12

    /// Fewest bytes one value of this type takes in the file: bounds an element count before anything is
    /// allocated, so a corrupt count cannot ask for terabytes.
    var minimumByteCount: Int {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string: return 8  // u64 length
        case .array: return 12  // u32 element type + u64 count
        }
    }
}

/// One tensor record of a GGUF file, whatever its type (also types this reader cannot load).
public struct GGUFTensorInfo: Equatable, Sendable {
    /// Tensor name.
    public let name: String
    /// ggml type id as stored (`ggml_type`).
    public let ggmlType: UInt32
    /// ggml's name for the type ("Q4_K", "F32"), or "type <id>" for ids this reader does not know.
    public let typeName: String
    /// Our element type, or nil when this reader cannot load the type.
    public let dtype: DType?
    /// Dimensions in ggml order: `dims[0]` (ne0) is the contiguous one.
    public let dims: [Int]
    /// Byte offset of the data relative to the start of the data section.
    public let offset: Int
    /// Size of the data in bytes, or nil when the type's block size is unknown.
    public let byteCount: Int?

    /// Dimensions outermost first (PyTorch order): `dims` reversed.
    public var shape: [Int] { dims.reversed() }
    /// Number of elements.
    public var elementCount: Int { dims.checkedElementCount ?? Int.max }
}

/// A GGUF file (llama.cpp's format, versions 2 and 3), memory-mapped. Opening parses the header, all
/// metadata and the tensor table, and checks every size and offset against the file, so a truncated or
/// corrupt file fails here with an `AdapterError` naming it. Tensors are views into the map (no copy);
/// quantized ones stay quantized.
///
/// Shapes are exposed in PyTorch order (ggml's dims reversed), so a Hugging Face `[out, in]` weight is
/// `[out, in]` here too. Tensors of types we cannot load are still listed (`tensorNames`, `tensorInfos`);
/// `info(_:)` returns nil for them and `tensor(_:)` throws an error naming the type.
///
/// Metadata arrays are kept typed (`[String]`, `[Int]`, `[Float]`): the 49152 tokens and ~49k merges of a
/// vocabulary load in milliseconds through `stringArray(_:)`, and `metadata` (the `TensorSource` view, with
/// every value wrapped as `MetadataValue`) is only built when first used.
public final class GGUFFile: TensorSource {
    /// Path of the file.
    public let path: String
    /// Format version (2 or 3).
    public let version: Int
    /// Alignment of tensor data (`general.alignment`, default 32).
    public let alignment: Int
    /// Absolute byte offset of the data section (tensor offsets are relative to it).
    public let dataOffset: Int
    /// All tensor records in file order.
    public let tensorInfos: [GGUFTensorInfo]
    /// Names of all tensors (loadable or not), sorted.
    public let tensorNames: [String]
    /// Metadata keys in file order.
    public let metadataKeys: [String]

    private let file: MappedFile
    private let storage: Storage
    private let infosByName: [String: Int]
    private let values: [String: RawValue]
    private let valueTypes: [String: GGUFValueType]

    /// The metadata section's bytes as stored (all key/value records, after the 24-byte header), so a writer
    /// can copy them unchanged, every value keeping its exact GGUF type. Valid while the file is open.
    public let rawMetadata: UnsafeRawBufferPointer

    /// The default of `general.alignment` (ggml's `GGUF_DEFAULT_ALIGNMENT`).
    public static let defaultAlignment = 32
    /// ggml's `GGML_MAX_DIMS`: llama.cpp refuses tensors with more dimensions.
    public static let maxDimensions = 4

    /// Metadata as read, arrays kept typed so large ones need no per-element wrapping.
    enum RawValue {
        case scalar(MetadataValue)
        case strings([String])
        case ints([Int])
        case floats([Float])
        case doubles([Double])
        case bools([Bool])
        case arrays([RawValue])

        var metadataValue: MetadataValue {
            switch self {
            case .scalar(let v): return v
            case .strings(let a): return .array(a.map { .string($0) })
            case .ints(let a): return .array(a.map { .int($0) })
            case .floats(let a): return .array(a.map { .double(Double($0)) })
            case .doubles(let a): return .array(a.map { .double($0) })
            case .bools(let a): return .array(a.map { .bool($0) })
            case .arrays(let a): return .array(a.map(\.metadataValue))
            }
        }
    }

    /// All metadata as `MetadataValue`s: integers of every width become `.int` (u64 values above `Int.max`
    /// become `.double`), f32/f64 `.double`, arrays `.array`. Built on first use.
    public private(set) lazy var metadata: [String: MetadataValue] = {
        values.mapValues(\.metadataValue)
    }()

    /// Opens and validates `path`.
    public init(path: String) throws {
        self.path = path
        let file = try MappedFile(path: path)
        self.file = file
        storage = Storage(borrowing: file.base, byteCount: file.size, owner: file)

        var r = ByteReader(file.bytes, context: path)
        guard file.size >= 4 else {
            throw AdapterError.format("\(path): not a GGUF file (only \(file.size) bytes)")
        }
        let magic = try r.u32("magic")
        guard magic == 0x4655_4747 else {  // "GGUF" read little-endian
            throw AdapterError.format("\(path): not a GGUF file (the magic number is not 'GGUF')")
        }
        let rawVersion = try r.u32("version")
        if rawVersion == 1 {
            throw AdapterError.unsupported("\(path): GGUF version 1 is not supported (only 2 and 3); convert the file again with a current llama.cpp")
        }
        if rawVersion & 0xFFFF == 0, (1...3).contains(rawVersion.byteSwapped) {
            throw AdapterError.unsupported("\(path): a big-endian GGUF file; only little-endian files are supported")
        }
        guard rawVersion == 2 || rawVersion == 3 else {
            throw AdapterError.unsupported("\(path): GGUF version \(rawVersion) is not supported (only 2 and 3)")
        }
        version = Int(rawVersion)
        let tensorCount64 = try r.u64("tensor count")
        let kvCount64 = try r.u64("metadata count")
        // Each record takes at least 24 (tensor) or 13 (key/value) bytes: reject counts the file cannot hold
        // before reserving anything.
        guard let tensorCount = tensorCount64.checkedInt, tensorCount <= r.remaining / 24 else {
            throw AdapterError.format("\(path): corrupt header (tensor count \(tensorCount64) does not fit in a \(file.size)-byte file)")
        }
        guard let kvCount = kvCount64.checkedInt, kvCount <= r.remaining / 13 else {
            throw AdapterError.format("\(path): corrupt header (metadata count \(kvCount64) does not fit in a \(file.size)-byte file)")
        }

        // Metadata.
        var values: [String: RawValue] = [:]
        var types: [String: GGUFValueType] = [:]
        var keys: [String] = []
        values.reserveCapacity(kvCount)
        keys.reserveCapacity(kvCount)
        for index in 0..<kvCount {
            let key = try Self.readString(&r, "key of metadata entry \(index)")
            guard values[key] == nil else {
                throw AdapterError.format("\(path): duplicate metadata key '\(printable(key))'")
            }
            let typeID = try r.u32("type of '\(printable(key))'")
            guard let type = GGUFValueType(rawValue: typeID) else {
                throw AdapterError.format("\(path): metadata '\(printable(key))' has unknown value type \(typeID)")
            }
            values[key] = try Self.readValue(&r, type: type, key: key, depth: 0)
            types[key] = type
            keys.append(key)
        }
        self.values = values
        valueTypes = types
        metadataKeys = keys
        rawMetadata = UnsafeRawBufferPointer(start: file.base + 24, count: r.position - 24)

        // Alignment.
        var alignment = Self.defaultAlignment
        if let a = values["general.alignment"] {
            guard case .scalar(let v) = a, let n = v.intValue, n > 0, n & (n - 1) == 0, n <= 1 << 30 else {
                throw AdapterError.format("\(path): general.alignment must be a power of two, got \(a.metadataValue)")
            }
            alignment = n
        }
        self.alignment = alignment

        // Tensor table.
        var infos: [GGUFTensorInfo] = []
        var byName: [String: Int] = [:]
        infos.reserveCapacity(tensorCount)
        for index in 0..<tensorCount {
            let name = try Self.readString(&r, "name of tensor \(index)")
            let shown = printable(name)
            guard byName[name] == nil else {
                throw AdapterError.format("\(path): duplicate tensor name '\(shown)'")
            }
            let nDims = try r.u32("dimension count of '\(shown)'")
            guard nDims <= UInt32(Self.maxDimensions) else {
                throw AdapterError.format("\(path): tensor '\(shown)' has \(nDims) dimensions (at most \(Self.maxDimensions))")
            }
            var dims: [Int] = []
            var elements = 1
            for _ in 0..<Int(nDims) {
                let d64 = try r.u64("dimensions of '\(shown)'")
                guard let d = d64.checkedInt else {
                    throw AdapterError.format("\(path): tensor '\(shown)' has an impossible dimension \(d64)")
                }
                let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow else {
                    throw AdapterError.format("\(path): tensor '\(shown)' has too many elements (dimensions overflow)")
                }
                elements = product
                dims.append(d)
            }
            let typeID = try r.u32("type of '\(shown)'")
            let offset64 = try r.u64("offset of '\(shown)'")
            guard let offset = offset64.checkedInt else {
                throw AdapterError.format("\(path): tensor '\(shown)' has an impossible offset \(offset64)")
            }
            let type = GGMLTypeTraits(id: typeID)
            var byteCount: Int?
            if let (blockSize, blockBytes) = type.sizes {
                let ne0 = dims.first ?? 1
                guard ne0 % blockSize == 0 else {
                    throw AdapterError.format("\(path): tensor '\(shown)' (\(type.name)) has \(ne0) elements per row, not a multiple of the block size \(blockSize)")
                }
                let (bytes, overflow) = (elements / blockSize).multipliedReportingOverflow(by: blockBytes)
                guard !overflow else {
                    throw AdapterError.format("\(path): tensor '\(shown)' is impossibly large")
                }
                byteCount = bytes
            }
            byName[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, ggmlType: typeID, typeName: type.name, dtype: type.dtype,
                                        dims: dims, offset: offset, byteCount: byteCount))
        }

        // The data section starts at the next multiple of the alignment.
        let (padded, overflow) = r.position.addingReportingOverflow(alignment - 1)
        guard !overflow else { throw AdapterError.format("\(path): corrupt header") }
        let dataOffset = padded / alignment * alignment
        self.dataOffset = dataOffset
        if !infos.isEmpty, dataOffset > file.size {
            throw AdapterError.format("\(path): truncated or corrupt (the tensor data section would start at byte \(dataOffset) but the file has \(file.size) bytes)")
        }
        let dataSize = file.size - min(dataOffset, file.size)
        for info in infos {
            let shown = printable(info.name)
            guard info.offset % alignment == 0 else {
                throw AdapterError.format("\(path): tensor '\(shown)' has offset \(info.offset), not a multiple of the alignment \(alignment)")
            }
            if let bytes = info.byteCount {
                guard info.offset <= dataSize, bytes <= dataSize - info.offset else {
                    throw AdapterError.format("\(path): truncated or corrupt (tensor '\(shown)' needs \(bytes) bytes at offset \(info.offset) of a \(dataSize)-byte data section)")
                }
            } else if info.offset > dataSize {
                throw AdapterError.format("\(path): truncated or corrupt (tensor '\(shown)' starts at byte \(info.offset) of a \(dataSize)-byte data section)")
            }
        }
        tensorInfos = infos
        infosByName = byName
        tensorNames = infos.map(\.name).sorted()
    }

    // MARK: - TensorSource

    /// Element type and PyTorch-order shape of `name`; nil when there is no such tensor or its ggml type
    /// cannot be loaded (see `tensorInfo(_:)` for those).
    public func info(_ name: String) -> TensorInfo? {
        guard let i = infosByName[name], let dtype = tensorInfos[i].dtype else { return nil }
        return TensorInfo(dtype: dtype, shape: tensorInfos[i].shape)
    }

    /// The full record of `name`, whatever its type.
    public func tensorInfo(_ name: String) -> GGUFTensorInfo? {
        infosByName[name].map { tensorInfos[$0] }
    }

    /// The tensor `name` as a view of the mapped file, in its stored type and PyTorch-order shape.
    public func tensor(_ name: String) throws -> Tensor {
        guard let i = infosByName[name] else {
            throw AdapterError.format("\(path): no tensor named '\(printable(name))'")
        }
        let info = tensorInfos[i]
        guard let dtype = info.dtype else {
            throw AdapterError.unsupported("\(path): tensor '\(printable(name))' has ggml type \(info.typeName) (id \(info.ggmlType)), which is not supported (supported: \(GGMLTypeTraits.supportedNames))")
        }
        return try Tensor(shape: info.shape, dtype: dtype, storage: storage, byteOffset: dataOffset + info.offset)
    }

    // MARK: - Typed metadata access

    /// The value type `key` was stored with (for arrays: `.array`), or nil when absent.
    public func valueType(_ key: String) -> GGUFValueType? { valueTypes[key] }

    /// The value of `key` as a `MetadataValue` (converting only this entry).
    public func value(_ key: String) -> MetadataValue? { values[key]?.metadataValue }

    /// The string stored under `key`, if it is a string.
    public func string(_ key: String) -> String? {
        if case .scalar(.string(let s))? = values[key] { return s }
        return nil
    }

    /// The integer stored under `key`, if it is an integer of any width that fits an `Int`.
    public func int(_ key: String) -> Int? {
        if case .scalar(.int(let v))? = values[key] { return v }
        return nil
    }

    /// The number stored under `key` (any integer or float type) as a Double.
    public func double(_ key: String) -> Double? {
        if case .scalar(let v)? = values[key] { return v.doubleValue }
        return nil
    }

    /// The flag stored under `key`, if it is a bool.
    public func bool(_ key: String) -> Bool? {
        if case .scalar(.bool(let b))? = values[key] { return b }
        return nil
    }

    /// The array of strings under `key` (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`), without
    /// per-element conversion.
    public func stringArray(_ key: String) -> [String]? {
        if case .strings(let a)? = values[key] { return a }
        return nil
    }

    /// The array of integers (any width) under `key` (`tokenizer.ggml.token_type`).
    public func intArray(_ key: String) -> [Int]? {
        if case .ints(let a)? = values[key] { return a }
        return nil
    }

    /// The array of floats (f32, or f64 rounded to f32) under `key` (`tokenizer.ggml.scores`).
    public func floatArray(_ key: String) -> [Float]? {
        switch values[key] {
        case .floats(let a)?: return a
        case .doubles(let a)?: return a.map { Float($0) }
        default: return nil
        }
    }

    /// The array of flags under `key`.
    public func boolArray(_ key: String) -> [Bool]? {
        if case .bools(let a)? = values[key] { return a }
        return nil
    }

    // MARK: - Architecture helpers

    /// `general.architecture` ("llama" for LLaMA-family models such as SmolLM2).
    public var architecture: String? { string("general.architecture") }

    /// The integer `<architecture>.<suffix>`, e.g. `architectureInt("block_count")` reads `llama.block_count`.
    public func architectureInt(_ suffix: String) -> Int? {
        architecture.flatMap { int("\($0).\(suffix)") }
    }

    /// The number `<architecture>.<suffix>` as a Double.
    public func architectureDouble(_ suffix: String) -> Double? {
        architecture.flatMap { double("\($0).\(suffix)") }
    }

    /// `<arch>.block_count`: number of transformer layers.
    public var blockCount: Int? { architectureInt("block_count") }
    /// `<arch>.context_length`: training context.
    public var contextLength: Int? { architectureInt("context_length") }
    /// `<arch>.embedding_length`: model width.
    public var embeddingLength: Int? { architectureInt("embedding_length") }
    /// `<arch>.feed_forward_length`: FFN hidden size.
    public var feedForwardLength: Int? { architectureInt("feed_forward_length") }
    /// `<arch>.attention.head_count`.
    public var headCount: Int? { architectureInt("attention.head_count") }
    /// `<arch>.attention.head_count_kv`; absent in files without grouped-query attention (then equal to
    /// `headCount`).
    public var headCountKV: Int? { architectureInt("attention.head_count_kv") ?? headCount }
    /// `<arch>.rope.dimension_count`: rotated dimensions per head.
    public var ropeDimensionCount: Int? { architectureInt("rope.dimension_count") }
    /// `<arch>.rope.freq_base` (RoPE theta); nil when absent (llama.cpp then uses 10000).
    public var ropeFreqBase: Double? { architectureDouble("rope.freq_base") }
    /// `<arch>.attention.layer_norm_rms_epsilon`.
    public var rmsNormEpsilon: Double? { architectureDouble("attention.layer_norm_rms_epsilon") }
    /// `<arch>.vocab_size`, else the length of `tokenizer.ggml.tokens`.
    public var vocabSize: Int? { architectureInt("vocab_size") ?? stringArray("tokenizer.ggml.tokens")?.count }

    // MARK: - Parsing

    /// A GGUF string: u64 byte length, then UTF-8 bytes (invalid sequences become U+FFFD).
    private static func readString(_ r: inout ByteReader, _ what: String) throws -> String {
        let n64 = try r.u64(what)
        guard let n = n64.checkedInt, n <= r.remaining else { throw r.truncated(what) }
        return String(decoding: try r.slice(n, what), as: UTF8.self)
    }

    /// Nested arrays deeper than this are treated as corrupt (each level recurses once).
    private static let maxArrayDepth = 16

    private static func readValue(_ r: inout ByteReader, type: GGUFValueType, key: String, depth: Int) throws -> RawValue {
        let what = "value of '\(printable(key))'"
        switch type {
        case .array:
            return try readArray(&r, key: key, depth: depth)
        case .string:
            return .scalar(.string(try readString(&r, what)))
        case .bool:
            return .scalar(.bool(try r.u8(what) != 0))
        case .float32:
            return .scalar(.double(Double(Float(bitPattern: try r.u32(what)))))
        case .float64:
            return .scalar(.double(Double(bitPattern: try r.u64(what))))
        case .uint64:
            let v = try r.u64(what)
            return .scalar(v.checkedInt.map { .int($0) } ?? .double(Double(v)))
        default:
            return .scalar(.int(try readInt(&r, type, what)))
        }
    }

    /// One integer of a width up to 64 bits (u64 already excluded or checked by the caller).
    @inline(__always)
    private static func readInt(_ r: inout ByteReader, _ type: GGUFValueType, _ what: String) throws -> Int {
        switch type {
        case .uint8: return Int(try r.u8(what))
        case .int8: return Int(Int8(bitPattern: try r.u8(what)))
        case .uint16: return Int(try r.u16(what))
        case .int16: return Int(Int16(bitPattern: try r.u16(what)))
        case .uint32: return Int(try r.u32(what))
        case .int32: return Int(Int32(bitPattern: try r.u32(what)))
        case .int64: return Int(Int64(bitPattern: try r.u64(what)))
        case .uint64: return Int(truncatingIfNeeded: try r.u64(what))
        default: return 0
        }
    }

    private static func readArray(_ r: inout ByteReader, key: String, depth: Int) throws -> RawValue {
        let shown = printable(key)
        guard depth < maxArrayDepth else {
            throw AdapterError.format("\(r.context): metadata '\(shown)' nests arrays more than \(maxArrayDepth) deep")
        }
        let typeID = try r.u32("array type of '\(shown)'")
        guard let type = GGUFValueType(rawValue: typeID) else {
            throw AdapterError.format("\(r.context): metadata array '\(shown)' has unknown element type \(typeID)")
        }
        let count64 = try r.u64("array length of '\(shown)'")
        guard let count = count64.checkedInt, count <= r.remaining / type.minimumByteCount else {
            throw AdapterError.format("\(r.context): truncated or corrupt (metadata array '\(shown)' claims \(count64) elements, more than the file holds)")
        }
        let what = "array '\(shown)'"
        switch type {
        case .string:
            var out: [String] = []
            out.reserveCapacity(count)
            for _ in 0..<count { out.append(try readString(&r, what)) }
            return .strings(out)
        case .array:
            var out: [RawValue] = []
            out.reserveCapacity(count)
            for _ in 0..<count { out.append(try readArray(&r, key: key, depth: depth + 1)) }
            return .arrays(out)
        case .bool:
            let bytes = try r.slice(count, what)
            return .bools(bytes.map { $0 != 0 })
        case .float32:
            let bytes = try r.slice(count * 4, what)
            return .floats((0..<count).map {
                Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
            })
        case .float64:
            let bytes = try r.slice(count * 8, what)
            return .doubles((0..<count).map {
                Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)))
            })
        case .uint64:
            let bytes = try r.slice(count * 8, what)
            let raw = (0..<count).map { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)) }
            // Values past Int.max cannot be Ints: keep the array, as doubles (lossy, but never seen in models).
            if raw.allSatisfy({ $0 <= UInt64(Int.max) }) { return .ints(raw.map { Int($0) }) }
            return .doubles(raw.map { Double($0) })
        default:
            let size = type.minimumByteCount
            var sub = ByteReader(try r.slice(count * size, what), context: r.context)
            var out: [Int] = []
            out.reserveCapacity(count)
            for _ in 0..<count { out.append(try readInt(&sub, type, what)) }
            return .ints(out)
        }
    }
}

/// Names, sizes and our element type for ggml type ids (`ggml_type`, sizes from `ggml_type_traits` /
/// gguf-py's `GGML_QUANT_SIZES`). Sizes of types we cannot load still let the reader bounds-check them.
struct GGMLTypeTraits {
    let name: String
    let sizes: (blockSize: Int, blockBytes: Int)?
    let dtype: DType?

    static let supportedNames = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K"

    private static let table: [UInt32: (String, Int, Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
        18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
        26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
        34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    ]

    private static let dtypes: [UInt32: DType] = [
        0: .f32, 1: .f16, 2: .q4_0, 3: .q4_1, 8: .q8_0, 12: .q4_K, 13: .q5_K, 14: .q6_K, 30: .bf16,
    ]

    init(id: UInt32) {
        if let (name, blockSize, blockBytes) = Self.table[id] {
            self.name = name
            sizes = (blockSize, blockBytes)
        } else {
            name = "type \(id)"
            sizes = nil
        }
        dtype = Self.dtypes[id]
    }
}

extension DType {
    /// The ggml type id of this dtype in GGUF files.
    public var ggmlTypeID: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 8
        case .q4_K: return 12
        case .q5_K: return 13
        case .q6_K: return 14
        case .bf16: return 30
        }
    }
}

/// Writes GGUF v3 files: a metadata section copied from another GGUF file, then tensor records and data
/// aligned to `general.alignment` (32 unless the metadata says otherwise), streamed to a temporary file that is
/// fsynced and renamed over the target.
public enum GGUFWriter {
    /// One tensor to write: GGUF name, stored dtype, PyTorch-order shape, and its bytes.
    public struct Entry {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var bytes: UnsafeRawBufferPointer
        /// Keeps whatever owns `bytes` alive until the file is written.
        public var owner: AnyObject?
        public init(name: String, dtype: DType, shape: [Int], bytes: UnsafeRawBufferPointer, owner: AnyObject?) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes; self.owner = owner
        }
    }

    /// Writes `tensors` with the metadata of `source` (its raw key/value records and count).
    public static func write(to path: String, metadataFrom source: GGUFFile, tensors: [Entry]) throws {
        let alignment = source.alignment
        var head: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
        u32(0x4655_4747); u32(3); u64(UInt64(tensors.count)); u64(UInt64(source.metadataKeys.count))
        head.append(contentsOf: source.rawMetadata)
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            guard t.bytes.count == t.dtype.byteCount(elements: t.shape.reduce(1, *)) else {
                throw AdapterError.shape("GGUF writer: '\(t.name)' has \(t.bytes.count) bytes for shape \(t.shape) \(t.dtype.rawValue)")
            }
            let name = Array(t.name.utf8)
            u64(UInt64(name.count)); head.append(contentsOf: name)
            u32(UInt32(t.shape.count))
            for d in t.shape.reversed() { u64(UInt64(d)) }
            u32(t.dtype.ggmlTypeID)
            u64(UInt64(offset))
            offsets.append(offset)
            offset += (t.bytes.count + alignment - 1) / alignment * alignment
        }
        while head.count % alignment != 0 { head.append(0) }
        try AtomicFile.write(to: path) { sink in
            try sink(UnsafeRawBufferPointer(start: head, count: head.count))
            let zeros = [UInt8](repeating: 0, count: alignment)
            for t in tensors {
                try sink(t.bytes)
                let pad = (alignment - t.bytes.count % alignment) % alignment
                if pad > 0 { try zeros.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<pad])) } }
            }
            withExtendedLifetime(tensors) {}
        }
    }
}
