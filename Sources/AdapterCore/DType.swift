/// Element types a tensor may be stored in. Compute is always f32; other types are converted inside kernels.
public enum DType: String, Sendable, CaseIterable, Codable {
    case f32, f16, bf16, q8_0, q4_0, q4_1, q4_K, q5_K, q6_K

    /// Number of logical elements in one storage block (1 for plain types).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q8_0, .q4_0, .q4_1: return 32
        case .q4_K, .q5_K, .q6_K: return 256
        }
    }

    /// Bytes used by one storage block.
    public var blockBytes: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q8_0: return 34
        case .q4_0: return 18
        case .q4_1: return 20
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        }
    }

    /// True for block-quantized types.
    public var isQuantized: Bool { blockSize > 1 }

    /// Bytes needed to store `count` elements (count must be a multiple of `blockSize`).
    public func byteCount(elements count: Int) -> Int { (count / blockSize) * blockBytes }
}
