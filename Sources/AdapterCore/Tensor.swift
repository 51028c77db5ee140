/// A dense, row-major tensor: a shape, an element type and a byte range of a `Storage`.
/// Value type; copies share storage. Mutation goes through `mutableData` and is only meant for
/// tensors the caller allocated (weights from mapped files are read-only).
public struct Tensor: @unchecked Sendable {
    /// Dimensions, outermost first (PyTorch order).
    public var shape: [Int]
    /// Element type of the stored bytes.
    public var dtype: DType
    /// Backing bytes.
    public let storage: Storage
    /// Byte offset of the first element inside `storage`.
    public let byteOffset: Int
    /// Q4_0/Q4_1/Q8_0 weights: the whole 16-row panels repacked for the integer GEMM of the `--int8-activations`
    /// mode (`packedForInt8`), nil otherwise. The ggml rows in `storage` stay the reference for every other path.
    public var int8Panels: Int8Panels?

    /// Wraps existing storage; checks the byte range fits.
    public init(shape: [Int], dtype: DType, storage: Storage, byteOffset: Int = 0) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else { throw AdapterError.shape("negative dimension in shape \(shape)") }
        // Shapes come from files: their product may overflow in this order even when another order (GGUF's
        // reversed dimensions) checked it, e.g. [2^40, 2^40, 0].
        guard let count = shape.checkedElementCount else { throw AdapterError.shape("tensor of shape \(shape) has too many elements") }
        if dtype.isQuantized {
            guard let last = shape.last, last % dtype.blockSize == 0 else {
                throw AdapterError.shape("\(dtype.rawValue) tensor of shape \(shape): last dimension must be a multiple of \(dtype.blockSize)")
            }
        }
        let bytes = dtype.byteCount(elements: count)
        guard byteOffset >= 0, byteOffset <= storage.byteCount, bytes <= storage.byteCount - byteOffset else {
            throw AdapterError.format("tensor of shape \(shape) (\(dtype.rawValue)) needs \(bytes) bytes at offset \(byteOffset) but its storage has \(storage.byteCount)")
        }
        self.shape = shape
        self.dtype = dtype
        // The C kernels read elements (and the f16 scales of quantized blocks) through typed pointers, which
        // C requires to be aligned; files may place data anywhere (zip entries, safetensors offsets, a GGUF
        // with general.alignment 1). Such rare tensors are copied once into aligned memory.
        let alignment = dtype == .f32 ? 4 : 2
        if Int(bitPattern: storage.base + byteOffset) % alignment != 0 {
            let copy = Storage(uninitializedBytes: bytes)
            copy.base.copyMemory(from: storage.base + byteOffset, byteCount: bytes)
            self.storage = copy
            self.byteOffset = 0
        } else {
            self.storage = storage
            self.byteOffset = byteOffset
        }
    }

    /// A new zero-filled tensor.
    public init(zeros shape: [Int], dtype: DType = .f32) {
        let count = shape.reduce(1, *)
        self.shape = shape
        self.dtype = dtype
        self.storage = Storage(zeroedBytes: dtype.byteCount(elements: count))
        self.byteOffset = 0
    }

    /// A new tensor whose bytes the caller fills.
    public init(uninitialized shape: [Int], dtype: DType) {
        self.shape = shape
        self.dtype = dtype
        self.storage = Storage(uninitializedBytes: dtype.byteCount(elements: shape.reduce(1, *)))
        self.byteOffset = 0
    }

    /// A new f32 tensor holding `values`.
    public init(_ values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "value count does not match shape")
        self.init(zeros: shape, dtype: .f32)
        values.withUnsafeBufferPointer { src in
            mutableData.copyMemory(from: src.baseAddress!, byteCount: values.count * 4)
        }
    }

    /// Number of elements.
    public var count: Int { shape.checkedElementCount ?? Int.max }
    /// Number of stored bytes.
    public var byteCount: Int { dtype.byteCount(elements: count) }
    /// Pointer to the first stored byte.
    public var data: UnsafeRawPointer { UnsafeRawPointer(storage.base + byteOffset) }
    /// Mutable pointer to the first stored byte.
    public var mutableData: UnsafeMutableRawPointer { storage.base + byteOffset }

    /// f32 view; traps if the tensor is not f32 (an internal invariant, not user input).
    public var floats: UnsafeMutablePointer<Float> {
        precondition(dtype == .f32, "expected an f32 tensor, got \(dtype)")
        return mutableData.assumingMemoryBound(to: Float.self)
    }

    /// The same bytes seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        guard newShape.allSatisfy({ $0 >= 0 }), newShape.checkedElementCount == count else {
            throw AdapterError.shape("cannot reshape \(shape) to \(newShape)")
        }
        return try Tensor(shape: newShape, dtype: dtype, storage: storage, byteOffset: byteOffset)
    }

    /// Row `i` of the outermost dimension as a tensor sharing storage.
    public func slice(_ i: Int) -> Tensor {
        let inner = Array(shape.dropFirst())
        let rowBytes = dtype.byteCount(elements: inner.reduce(1, *))
        return try! Tensor(shape: inner, dtype: dtype, storage: storage, byteOffset: byteOffset + i * rowBytes)
    }

    /// All elements converted to f32 (dequantized for block types).
    public func toFloatArray() -> [Float] {
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { dst in
            convertToFloat(dtype: dtype, src: data, dst: dst.baseAddress!, count: count)
        }
        return out
    }

    /// A new f32 tensor with the same values.
    public func toF32() -> Tensor {
        if dtype == .f32 { return self }
        let out = Tensor(zeros: shape, dtype: .f32)
        convertToFloat(dtype: dtype, src: data, dst: out.floats, count: count)
        return out
    }
}

extension Array where Element == Int {
    /// Elements of a tensor of this shape: 0 when any dimension is 0 (whatever the others), nil when the
    /// product overflows. Shapes read from files go through this instead of `reduce(1, *)`, which traps.
    public var checkedElementCount: Int? {
        if contains(0) { return 0 }
        var n = 1
        for d in self {
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            n = p
        }
        return n
    }

    /// The sum of the element counts of several shapes, saturating at Int.max (parameter counts for display).
    public static func totalElements(_ shapes: [[Int]]) -> Int {
        shapes.reduce(0) { sum, shape in
            let (s, o) = sum.addingReportingOverflow(shape.checkedElementCount ?? Int.max)
            return o ? Int.max : s
        }
    }
}
