import AdapterCore

/// Element types of PyTorch storages, named after the `torch.*Storage` classes a pickle refers to.
public enum TorchScalarType: String, Sendable, CaseIterable {
    /// `FloatStorage`.
    case float32
    /// `HalfStorage`.
    case float16
    /// `BFloat16Storage`.
    case bfloat16
    /// `DoubleStorage`.
    case float64
    /// `LongStorage`.
    case int64
    /// `IntStorage`.
    case int32
    /// `ShortStorage`.
    case int16
    /// `CharStorage`.
    case int8
    /// `ByteStorage`.
    case uint8
    /// `BoolStorage`.
    case bool

    /// Maps a storage class name (`FloatStorage`, `HalfStorage`, ...) to its element type.
    public init?(storageClass: String) {
        switch storageClass {
        case "FloatStorage": self = .float32
        case "HalfStorage": self = .float16
        case "BFloat16Storage": self = .bfloat16
        case "DoubleStorage": self = .float64
        case "LongStorage": self = .int64
        case "IntStorage": self = .int32
        case "ShortStorage": self = .int16
        case "CharStorage": self = .int8
        case "ByteStorage": self = .uint8
        case "BoolStorage": self = .bool
        default: return nil
        }
    }

    /// Bytes per element.
    public var elementSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }

    /// The tensor element type, for the types our kernels handle (f32, f16, bf16).
    public var dtype: DType? {
        switch self {
        case .float32: return .f32
        case .float16: return .f16
        case .bfloat16: return .bf16
        default: return nil
        }
    }
}

/// One storage of a PyTorch archive (`data/<key>`), resolved to bytes of the mapped file. Several tensors
/// may view the same storage at different offsets.
public final class TorchStorage {
    /// The archive key (`data/<key>`).
    public let key: String
    /// Element type recorded in the pickle.
    public let scalarType: TorchScalarType
    /// Device tag recorded at save time (`cpu`, `cuda:0`); informational only.
    public let location: String
    /// Number of elements.
    public let count: Int
    /// The bytes (at least `count * elementSize`), usually borrowed from the memory map.
    public let bytes: Storage

    /// Wraps resolved bytes; throws when they are shorter than `count` elements.
    public init(key: String, scalarType: TorchScalarType, location: String, count: Int, bytes: Storage, source: String) throws {
        let (needed, overflow) = count.multipliedReportingOverflow(by: scalarType.elementSize)
        guard count >= 0, !overflow, needed <= bytes.byteCount else {
            throw AdapterError.format("\(source): storage '\(printable(key))' declares \(count) \(scalarType.rawValue) elements but its archive entry holds \(bytes.byteCount) bytes (truncated or corrupt)")
        }
        self.key = key
        self.scalarType = scalarType
        self.location = location
        self.count = count
        self.bytes = bytes
    }
}

/// A tensor as a PyTorch pickle describes it (`_rebuild_tensor_v2(storage, offset, size, stride, ...)`):
/// cheap to hold, validated on creation, turned into a `Tensor` only on request.
public struct TorchTensor {
    /// The storage viewed.
    public let storage: TorchStorage
    /// Offset of the first element, in elements.
    public let storageOffset: Int
    /// Dimensions, outermost first.
    public let shape: [Int]
    /// Strides in elements.
    public let strides: [Int]
    /// Whether the tensor was saved as requiring gradients (informational).
    public let requiresGrad: Bool
    /// File the tensor came from, for error messages.
    public let source: String

    /// Checks that every addressed element lies inside the storage, with overflow-safe arithmetic, so later
    /// reads cannot leave the mapped entry.
    public init(storage: TorchStorage, storageOffset: Int, shape: [Int], strides: [Int], requiresGrad: Bool, source: String) throws {
        let bad = { (why: String) in AdapterError.format("\(source): invalid tensor on storage '\(storage.key)': \(why)") }
        guard shape.count == strides.count else { throw bad("size and stride differ in length") }
        guard shape.count <= 64 else { throw bad("\(shape.count) dimensions (at most 64)") }
        guard shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }), storageOffset >= 0 else {
            throw bad("negative size, stride or offset")
        }
        var count = 1
        var last = storageOffset
        for (n, s) in zip(shape, strides) {
            let (c, o1) = count.multipliedReportingOverflow(by: n)
            guard !o1 else { throw bad("element count overflows") }
            count = c
            if n > 0 {
                let (span, o2) = (n - 1).multipliedReportingOverflow(by: s)
                let (l, o3) = last.addingReportingOverflow(span)
                guard !o2, !o3 else { throw bad("extent overflows") }
                last = l
            }
        }
        if count > 0 {
            guard last < storage.count else {
                throw bad("elements up to index \(last) but the storage has \(storage.count)")
            }
            let (bytes, o4) = count.multipliedReportingOverflow(by: storage.scalarType.elementSize)
            guard !o4 else { throw bad("byte count overflows") }
            // More elements than the storage holds means an expanded (stride-0) view: a few bytes in the file
            // that would become gigabytes when read. Real checkpoints never need a large one.
            guard count <= storage.count || bytes <= Self.expandedViewLimit else {
                throw bad("a \(shape) view repeats \(storage.count) stored elements (stride 0); reading it would take \(bytes / 1_048_576) MiB (at most \(Self.expandedViewLimit / 1_048_576) MiB)")
            }
        }
        self.storage = storage
        self.storageOffset = storageOffset
        self.shape = shape
        self.strides = strides
        self.requiresGrad = requiresGrad
        self.source = source
    }

    /// Largest expanded (stride-0) view, in bytes, that a checkpoint may ask to materialise.
    public static let expandedViewLimit = 64 << 20

    /// Element type of the storage.
    public var scalarType: TorchScalarType { storage.scalarType }

    /// Number of elements.
    public var count: Int { shape.checkedElementCount ?? Int.max }

    /// True when the strides are row-major (dimensions of size 1 may have any stride).
    public var isContiguous: Bool {
        var expected = 1
        for (n, s) in zip(shape, strides).reversed() where n != 1 {
            if s != expected { return false }
            expected *= n
        }
        return true
    }

    /// Shape and kernel dtype, or nil for element types kept as metadata (int64, f64, bool, ...).
    public var info: TensorInfo? {
        scalarType.dtype.map { TensorInfo(dtype: $0, shape: shape) }
    }

    /// The tensor as an AdapterCore `Tensor`: a view of the storage when contiguous and aligned (no copy),
    /// otherwise a contiguous copy. Only f32, f16 and bf16 are supported; `name` is used in errors.
    public func materialize(name: String) throws -> Tensor {
        guard let dtype = scalarType.dtype else {
            throw AdapterError.unsupported("\(source): tensor '\(printable(name))' has element type \(scalarType.rawValue); only float32, float16 and bfloat16 tensors are supported")
        }
        let size = scalarType.elementSize
        let byteOffset = storageOffset * size
        let aligned = Int(bitPattern: storage.bytes.base + byteOffset) % size == 0
        if isContiguous && (aligned || count == 0) {
            return try Tensor(shape: shape, dtype: dtype, storage: storage.bytes, byteOffset: count == 0 ? 0 : byteOffset)
        }
        let out = Storage(zeroedBytes: count * size)
        var dst = out.base
        let src = UnsafeRawPointer(storage.bytes.base)
        forEachRun { start, run, stride in
            if stride == 1 {
                dst.copyMemory(from: src + start * size, byteCount: run * size)
                dst += run * size
            } else {
                for i in 0..<run {
                    dst.copyMemory(from: src + (start + i * stride) * size, byteCount: size)
                    dst += size
                }
            }
        }
        return try Tensor(shape: shape, dtype: dtype, storage: out, byteOffset: 0)
    }

    /// All elements in row-major order as numbers (ints for integer types, bools for bool, doubles for
    /// floating types), nested by shape as `tensor.tolist()` would; a 0-dim tensor gives a scalar.
    public func listValue() -> MetadataValue {
        var flat: [MetadataValue] = []
        flat.reserveCapacity(count)
        let size = scalarType.elementSize
        let src = UnsafeRawPointer(storage.bytes.base)
        forEachRun { start, run, stride in
            for i in 0..<run {
                flat.append(Self.element(src + (start + i * stride) * size, scalarType))
            }
        }
        func nest(_ dims: ArraySlice<Int>, _ from: Int) -> (MetadataValue, Int) {
            guard let n = dims.first else { return (flat[from], from + 1) }
            var items: [MetadataValue] = []
            items.reserveCapacity(n)
            var at = from
            for _ in 0..<n {
                let (v, next) = nest(dims.dropFirst(), at)
                items.append(v)
                at = next
            }
            return (.array(items), at)
        }
        if count == 0 { return shape.isEmpty ? .none : nestEmpty(shape[...]) }
        return nest(shape[...], 0).0
    }

    private func nestEmpty(_ dims: ArraySlice<Int>) -> MetadataValue {
        guard let n = dims.first, n > 0 else { return .array([]) }
        return .array(Array(repeating: nestEmpty(dims.dropFirst()), count: n))
    }

    private static func element(_ p: UnsafeRawPointer, _ type: TorchScalarType) -> MetadataValue {
        switch type {
        case .float32: return .double(Double(p.loadUnaligned(as: Float.self)))
        case .float64: return .double(p.loadUnaligned(as: Double.self))
        case .float16, .bfloat16:
            var bits = p.loadUnaligned(as: UInt16.self)
            var f: Float = 0
            convertToFloat(dtype: type == .float16 ? .f16 : .bf16, src: &bits, dst: &f, count: 1)
            return .double(Double(f))
        case .int64: return .int(Int(p.loadUnaligned(as: Int64.self)))
        case .int32: return .int(Int(p.loadUnaligned(as: Int32.self)))
        case .int16: return .int(Int(p.loadUnaligned(as: Int16.self)))
        case .int8: return .int(Int(p.load(as: Int8.self)))
        case .uint8: return .int(Int(p.load(as: UInt8.self)))
        case .bool: return .bool(p.load(as: UInt8.self) != 0)
        }
    }

    /// Calls `body(start, run, stride)` for each innermost row in row-major order: `run` elements starting
    /// at element index `start` of the storage, `stride` apart.
    func forEachRun(_ body: (Int, Int, Int) -> Void) {
        if count == 0 { return }
        guard let innerN = shape.last, let innerS = strides.last else {
            body(storageOffset, 1, 1)
            return
        }
        let outerDims = shape.count - 1
        var index = [Int](repeating: 0, count: outerDims)
        var start = storageOffset
        while true {
            body(start, innerN, innerS)
            var d = outerDims - 1
            while d >= 0 {
                index[d] += 1
                start += strides[d]
                if index[d] < shape[d] { break }
                start -= strides[d] * shape[d]
                index[d] = 0
                d -= 1
            }
            if d < 0 { return }
        }
    }
}
