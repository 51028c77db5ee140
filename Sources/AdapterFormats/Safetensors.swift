import AdapterCore
import Foundation

/// A `.safetensors` file, memory-mapped: a little-endian u64 header length N, N bytes of JSON
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`), then the data
/// buffer the offsets point into. Opening parses and validates the header: every range must lie inside
/// the file, match its dtype and shape, and not overlap another; duplicate names are refused. Tensors are
/// views into the map (no copy).
///
/// F32, F16 and BF16 tensors load as tensors. Others (I64, BOOL, F64, F8 ...) are listed in `tensorNames`
/// and `entry(_:)` but `info(_:)` returns nil for them and `tensor(_:)` throws `unsupported`.
public final class SafetensorsFile: TensorSource {
    /// One tensor record of the header.
    public struct Entry: Equatable, Sendable {
        /// Tensor name.
        public let name: String
        /// The dtype string as stored ("F32", "BF16", "I64" ...).
        public let dtypeName: String
        /// Our element type, or nil when the dtype cannot be loaded as a tensor.
        public let dtype: DType?
        /// Dimensions, outermost first.
        public let shape: [Int]
        /// Byte range relative to the start of the data buffer.
        public let dataOffsets: Range<Int>
    }

    /// Path of the file.
    public let path: String
    /// Absolute byte offset of the data buffer (8 + header length).
    public let dataOffset: Int
    /// Names of all tensors (loadable or not), sorted.
    public let tensorNames: [String]
    /// `__metadata__`, each value a `.string`.
    public let metadata: [String: MetadataValue]

    private let file: MappedFile
    private let storage: Storage
    private let entries: [String: Entry]

    /// Element size in bytes of the safetensors dtypes whose size is a whole number of bytes; used to check
    /// that each range matches its shape (sub-byte types such as F4 are only range-checked).
    private static let elementSizes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
        "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
        "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8,
    ]

    /// The dtypes of the format whose elements are smaller than a byte.
    private static let subByteTypes: Set<String> = ["F4", "F6_E2M3", "F6_E3M2"]

    private static let dtypes: [String: DType] = ["F32": .f32, "F16": .f16, "BF16": .bf16]

    /// Opens and validates `path`.
    public init(path: String) throws {
        self.path = path
        let file = try MappedFile(path: path)
        self.file = file
        storage = Storage(borrowing: file.base, byteCount: file.size, owner: file)

        var r = ByteReader(file.bytes, context: path)
        guard file.size >= 8 else {
            throw AdapterError.format("\(path): not a safetensors file (only \(file.size) bytes)")
        }
        let n64 = try r.u64("header length")
        guard let n = n64.checkedInt, n <= r.remaining else {
            throw AdapterError.format("\(path): truncated or not a safetensors file (header length \(n64) but the file has \(file.size) bytes)")
        }
        let headerBytes = try r.slice(n, "header")
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw AdapterError.format("\(path): not a safetensors file (the header does not start with '{')")
        }
        let header: SafetensorsJSON
        do {
            header = try SafetensorsJSON.parse(headerBytes)
        } catch let error as SafetensorsJSON.ParseError {
            throw AdapterError.format("\(path): corrupt safetensors header: \(error.message)")
        }
        guard case .object(let items) = header else {
            throw AdapterError.format("\(path): the safetensors header is not a JSON object")
        }
        dataOffset = 8 + n
        let dataSize = file.size - dataOffset

        var entries: [String: Entry] = [:]
        var metadata: [String: MetadataValue] = [:]
        for (name, value) in items {
            let shown = printable(name)
            if name == "__metadata__" {
                guard case .object(let meta) = value else {
                    throw AdapterError.format("\(path): __metadata__ is not an object")
                }
                for (k, v) in meta {
                    guard case .string(let s) = v else {
                        throw AdapterError.format("\(path): __metadata__ entry '\(printable(k))' is not a string")
                    }
                    metadata[k] = .string(s)
                }
                continue
            }
            guard case .object(let fields) = value else {
                throw AdapterError.format("\(path): header entry '\(shown)' is not an object")
            }
            func field(_ key: String) -> SafetensorsJSON? { fields.first { $0.0 == key }?.1 }
            guard case .string(let dtypeName)? = field("dtype") else {
                throw AdapterError.format("\(path): tensor '\(shown)' has no dtype")
            }
            guard case .array(let shapeItems)? = field("shape") else {
                throw AdapterError.format("\(path): tensor '\(shown)' has no shape")
            }
            var shape: [Int] = []
            var count = 1
            for item in shapeItems {
                guard let d = item.nonNegativeInt else {
                    throw AdapterError.format("\(path): tensor '\(shown)' has a bad shape entry")
                }
                let (product, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow else { throw AdapterError.format("\(path): tensor '\(shown)' has too many elements") }
                count = product
                shape.append(d)
            }
            guard case .array(let offsets)? = field("data_offsets"), offsets.count == 2,
                  let begin = offsets[0].nonNegativeInt, let end = offsets[1].nonNegativeInt else {
                throw AdapterError.format("\(path): tensor '\(shown)' has no valid data_offsets [begin, end]")
            }
            guard begin <= end else {
                throw AdapterError.format("\(path): tensor '\(shown)' has data_offsets [\(begin), \(end)] with begin after end")
            }
            guard end <= dataSize else {
                throw AdapterError.format("\(path): truncated or corrupt (tensor '\(shown)' needs bytes \(begin)..<\(end) of a \(dataSize)-byte data buffer)")
            }
            guard Self.elementSizes[dtypeName] != nil || Self.subByteTypes.contains(dtypeName) else {
                throw AdapterError.format("\(path): tensor '\(shown)' has dtype \(printable(dtypeName)), which is not a safetensors dtype")
            }
            if let size = Self.elementSizes[dtypeName] {
                let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
                guard !overflow, bytes == end - begin else {
                    throw AdapterError.format("\(path): tensor '\(shown)' (\(printable(dtypeName)), shape \(shape)) needs \(overflow ? "too many" : String(bytes)) bytes but data_offsets [\(begin), \(end)] span \(end - begin)")
                }
            }
            entries[name] = Entry(name: name, dtypeName: dtypeName, dtype: Self.dtypes[dtypeName], shape: shape,
                                  dataOffsets: begin..<end)
        }

        // No two tensors may share bytes: sort by start and compare neighbours (empty ranges hold no bytes).
        let ranges = entries.values.filter { !$0.dataOffsets.isEmpty }.sorted {
            ($0.dataOffsets.lowerBound, $0.name) < ($1.dataOffsets.lowerBound, $1.name)
        }
        for (a, b) in zip(ranges, ranges.dropFirst()) where b.dataOffsets.lowerBound < a.dataOffsets.upperBound {
            throw AdapterError.format("\(path): tensors '\(printable(a.name))' (bytes \(a.dataOffsets)) and '\(printable(b.name))' (bytes \(b.dataOffsets)) overlap")
        }

        self.entries = entries
        self.metadata = metadata
        tensorNames = entries.keys.sorted()
    }

    /// The header record of `name`, whatever its dtype.
    public func entry(_ name: String) -> Entry? { entries[name] }

    /// Element type and shape of `name`; nil when absent or its dtype is not F32/F16/BF16.
    public func info(_ name: String) -> TensorInfo? {
        guard let e = entries[name], let dtype = e.dtype else { return nil }
        return TensorInfo(dtype: dtype, shape: e.shape)
    }

    /// The tensor `name` as a view of the mapped file.
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else {
            throw AdapterError.format("\(path): no tensor named '\(printable(name))'")
        }
        guard let dtype = e.dtype else {
            throw AdapterError.unsupported("\(path): tensor '\(printable(name))' has dtype \(printable(e.dtypeName)), which is not supported (supported: F32, F16, BF16)")
        }
        return try Tensor(shape: e.shape, dtype: dtype, storage: storage, byteOffset: dataOffset + e.dataOffsets.lowerBound)
    }
}

/// The weights of a Hugging Face model folder: `model.safetensors`, or shards listed by
/// `model.safetensors.index.json` (`weight_map`: tensor name -> shard file), seen as one `TensorSource`.
/// Without either, every `*.safetensors` file in the folder is merged (a name in two files is an error).
/// `path` may also name the index file or a single `.safetensors` file.
///
/// Every shard is opened (headers only) up front, and every name of the weight map is checked to exist in
/// its shard, so a missing or truncated shard fails at open with its name.
public final class SafetensorsFolder: TensorSource {
    /// The folder (or the file it was opened from).
    public let path: String
    /// The opened files, in the order first referenced.
    public let shards: [SafetensorsFile]
    /// Names of all tensors, sorted.
    public let tensorNames: [String]
    /// The index's `metadata` (e.g. `total_size`), then each shard's `__metadata__` for keys not yet present.
    public let metadata: [String: MetadataValue]

    private let shardOf: [String: Int]

    /// Name of the single-file weights in a Hugging Face folder.
    public static let singleFileName = "model.safetensors"
    /// Name of the shard index in a Hugging Face folder.
    public static let indexFileName = "model.safetensors.index.json"

    /// Opens the folder (or index, or file) at `path`.
    public init(path: String) throws {
        self.path = path
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw AdapterError.io("\(path): no such file or folder")
        }
        let folder = URL(fileURLWithPath: path)
        var indexPath: String?
        var files: [String] = []
        if isDirectory.boolValue {
            let index = folder.appendingPathComponent(Self.indexFileName).path
            let single = folder.appendingPathComponent(Self.singleFileName).path
            if fm.fileExists(atPath: index) {
                indexPath = index
            } else if fm.fileExists(atPath: single) {
                files = [single]
            } else {
                let names = (try? fm.contentsOfDirectory(atPath: path)) ?? []
                files = names.filter { $0.hasSuffix(".safetensors") }.sorted().map { folder.appendingPathComponent($0).path }
                guard !files.isEmpty else {
                    throw AdapterError.format("\(path): no \(Self.singleFileName), \(Self.indexFileName) or other .safetensors file in the folder")
                }
            }
        } else if path.hasSuffix(".json") {
            indexPath = path
        } else {
            files = [path]
        }

        var shards: [SafetensorsFile] = []
        var shardOf: [String: Int] = [:]
        var metadata: [String: MetadataValue] = [:]
        if let indexPath {
            let base = URL(fileURLWithPath: indexPath).deletingLastPathComponent()
            let map = try MappedFile(path: indexPath)
            let json: SafetensorsJSON
            do {
                json = try SafetensorsJSON.parse(map.bytes)
            } catch let error as SafetensorsJSON.ParseError {
                throw AdapterError.format("\(indexPath): corrupt JSON: \(error.message)")
            }
            guard case .object(let top) = json else {
                throw AdapterError.format("\(indexPath): not a JSON object")
            }
            guard case .object(let weightMap)? = top.first(where: { $0.0 == "weight_map" })?.1 else {
                throw AdapterError.format("\(indexPath): no 'weight_map' object")
            }
            if case .object(let meta)? = top.first(where: { $0.0 == "metadata" })?.1 {
                for (k, v) in meta { metadata[k] = v.metadataValue }
            }
            var shardIndex: [String: Int] = [:]
            for (name, value) in weightMap {
                guard case .string(let file) = value else {
                    throw AdapterError.format("\(indexPath): weight_map entry '\(printable(name))' is not a file name")
                }
                // Shard names are plain file names next to the index; refuse paths leaving the folder.
                guard !file.isEmpty, !file.hasPrefix("/"), !file.split(separator: "/").contains("..") else {
                    throw AdapterError.format("\(indexPath): weight_map entry '\(printable(name))' names '\(printable(file))', which is outside the folder")
                }
                let i: Int
                if let known = shardIndex[file] {
                    i = known
                } else {
                    let shardPath = base.appendingPathComponent(file).path
                    guard fm.fileExists(atPath: shardPath) else {
                        throw AdapterError.io("\(indexPath): shard \(printable(file)) (holding '\(printable(name))') is missing")
                    }
                    i = shards.count
                    shards.append(try SafetensorsFile(path: shardPath))
                    shardIndex[file] = i
                }
                guard shards[i].entry(name) != nil else {
                    throw AdapterError.format("\(indexPath): weight_map puts '\(printable(name))' in \(printable(file)), which has no such tensor")
                }
                shardOf[name] = i
            }
        } else {
            for file in files {
                let shard = try SafetensorsFile(path: file)
                let i = shards.count
                shards.append(shard)
                for name in shard.tensorNames {
                    if let other = shardOf[name] {
                        throw AdapterError.format("\(path): tensor '\(printable(name))' is in both \(shards[other].path) and \(file)")
                    }
                    shardOf[name] = i
                }
            }
        }
        for shard in shards {
            for (k, v) in shard.metadata where metadata[k] == nil { metadata[k] = v }
        }
        self.shards = shards
        self.shardOf = shardOf
        self.metadata = metadata
        tensorNames = shardOf.keys.sorted()
    }

    /// The shard holding `name`.
    public func shard(of name: String) -> SafetensorsFile? { shardOf[name].map { shards[$0] } }

    /// Element type and shape of `name`; nil when absent or not F32/F16/BF16.
    public func info(_ name: String) -> TensorInfo? { shard(of: name)?.info(name) }

    /// The tensor `name` as a view of its shard's map.
    public func tensor(_ name: String) throws -> Tensor {
        guard let shard = shard(of: name) else {
            throw AdapterError.format("\(path): no tensor named '\(printable(name))'")
        }
        return try shard.tensor(name)
    }
}

/// A minimal strict JSON reader for safetensors headers and shard indexes. It keeps object members in
/// order and refuses duplicate keys (the format forbids them and a silent last-wins would hide a corrupt
/// header), bounds nesting depth (hostile input cannot overflow the stack), and reads integers exactly.
enum SafetensorsJSON {
    case object([(String, SafetensorsJSON)])
    case array([SafetensorsJSON])
    case string(String)
    /// A number: `exact` holds it when written as an integer that fits an Int.
    case number(Double, exact: Int?)
    case bool(Bool)
    case null

    struct ParseError: Error {
        let message: String
    }

    /// The value as a non-negative Int, if it is an integral number.
    var nonNegativeInt: Int? {
        if case .number(_, let exact?) = self, exact >= 0 { return exact }
        return nil
    }

    /// The value as metadata (keys are unique, so objects convert to dictionaries losslessly).
    var metadataValue: MetadataValue {
        switch self {
        case .object(let items): return .dict(Dictionary(items, uniquingKeysWith: { a, _ in a }).mapValues(\.metadataValue))
        case .array(let items): return .array(items.map(\.metadataValue))
        case .string(let s): return .string(s)
        case .number(let d, let exact): return exact.map { .int($0) } ?? .double(d)
        case .bool(let b): return .bool(b)
        case .null: return .none
        }
    }

    static let maxDepth = 64

    /// Parses one JSON value filling `bytes`; trailing whitespace is allowed (safetensors pads with spaces).
    static func parse(_ bytes: UnsafeRawBufferPointer) throws -> SafetensorsJSON {
        var p = Parser(bytes: bytes, i: 0)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == bytes.count else { throw p.fail("unexpected data after the JSON value") }
        return v
    }

    private struct Parser {
        let bytes: UnsafeRawBufferPointer
        var i: Int

        func fail(_ what: String) -> ParseError { ParseError(message: "\(what) at byte \(i)") }

        mutating func skipSpace() {
            while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
        }

        mutating func expect(_ c: UInt8) throws {
            skipSpace()
            guard i < bytes.count, bytes[i] == c else { throw fail("expected '\(Character(Unicode.Scalar(c)))'") }
            i += 1
        }

        mutating func value(depth: Int) throws -> SafetensorsJSON {
            guard depth < SafetensorsJSON.maxDepth else { throw fail("nesting too deep") }
            skipSpace()
            guard i < bytes.count else { throw fail("unexpected end") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var items: [(String, SafetensorsJSON)] = []
                var seen = Set<String>()
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(items) }
                while true {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                    let key = try string()
                    guard seen.insert(key).inserted else { throw fail("duplicate key '\(printable(key))'") }
                    try expect(UInt8(ascii: ":"))
                    items.append((key, try value(depth: depth + 1)))
                    skipSpace()
                    guard i < bytes.count else { throw fail("unterminated object") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(items) }
                    throw fail("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [SafetensorsJSON] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < bytes.count else { throw fail("unterminated array") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw fail("expected ',' or ']'")
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"):
                try literal("true"); return .bool(true)
            case UInt8(ascii: "f"):
                try literal("false"); return .bool(false)
            case UInt8(ascii: "n"):
                try literal("null"); return .null
            default:
                return try number()
            }
        }

        mutating func literal(_ word: String) throws {
            for c in word.utf8 {
                guard i < bytes.count, bytes[i] == c else { throw fail("invalid literal") }
                i += 1
            }
        }

        mutating func number() throws -> SafetensorsJSON {
            let start = i
            var integral = true
            if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
            let digitsStart = i
            while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) { i += 1 }
            guard i > digitsStart else { throw fail("invalid value") }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                integral = false
                i += 1
                let fracStart = i
                while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) { i += 1 }
                guard i > fracStart else { throw fail("invalid number") }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                integral = false
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                let expStart = i
                while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) { i += 1 }
                guard i > expStart else { throw fail("invalid number") }
            }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
            guard let d = Double(text) else { throw fail("invalid number") }
            return .number(d, exact: integral ? Int(text) : nil)
        }

        mutating func hex4() throws -> UInt32 {
            guard bytes.count - i >= 4 else { throw fail("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[i]
                let digit: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
                default: throw fail("invalid \\u escape")
                }
                v = v << 4 | UInt32(digit)
                i += 1
            }
            return v
        }

        /// A string starting at the opening quote. Plain runs are copied as UTF-8 (invalid bytes become
        /// U+FFFD); escapes are decoded, surrogate pairs joined.
        mutating func string() throws -> String {
            i += 1
            var out: [UInt8] = []
            while true {
                guard i < bytes.count else { throw fail("unterminated string") }
                let c = bytes[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                if c < 0x20 { throw fail("control character in string") }
                if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
                i += 1
                guard i < bytes.count else { throw fail("unterminated string") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar), bytes.count - i >= 6,
                       bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                        let save = i
                        i += 2
                        let low = try hex4()
                        if (0xDC00..<0xE000).contains(low) {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            i = save
                        }
                    }
                    out.append(contentsOf: String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8)
                default:
                    throw fail("invalid escape")
                }
            }
            return String(decoding: out, as: UTF8.self)
        }
    }
}
