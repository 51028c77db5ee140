/// Made-up tensors for benchmarks: a 64K-value pseudo-random block tiled over the tensor (enough for
/// speed and memory measurements; no file needed).
public enum SyntheticTensors {
    private static let block: [Float] = {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        return (0..<65536).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return (Float(state % 20001) / 10000 - 1) * 0.04
        }
    }()
    private static let half: [UInt16] = {
        var h = [UInt16](repeating: 0, count: block.count)
        block.withUnsafeBufferPointer { b in h.withUnsafeMutableBufferPointer { convertToHalf(src: b.baseAddress!, dst: $0.baseAddress!, count: b.count) } }
        return h
    }()

    /// A tensor of `shape` in f32, f16 or bf16 filled with small values.
    public static func make(_ shape: [Int], _ dtype: DType) -> Tensor {
        let count = shape.reduce(1, *)
        let t = Tensor(uninitialized: shape, dtype: dtype)
        var done = 0
        while done < count {
            let n = min(block.count, count - done)
            switch dtype {
            case .f32:
                block.withUnsafeBufferPointer { (t.mutableData + done * 4).copyMemory(from: $0.baseAddress!, byteCount: n * 4) }
            case .f16:
                half.withUnsafeBufferPointer { (t.mutableData + done * 2).copyMemory(from: $0.baseAddress!, byteCount: n * 2) }
            case .bf16:
                let p = (t.mutableData + done * 2).assumingMemoryBound(to: UInt16.self)
                for i in 0..<n { p[i] = UInt16(truncatingIfNeeded: block[i].bitPattern >> 16) }
            default:
                preconditionFailure("synthetic tensors are f32, f16 or bf16")
            }
            done += n
        }
        return t
    }

    /// An f32 vector of `n` copies of `value` (norm weights, scales).
    public static func constant(_ n: Int, _ value: Float) -> Tensor {
        Tensor([Float](repeating: value, count: n), shape: [n])
    }
}
