import AdapterCore

/// Named model shapes for benchmarks and tests, with weights made up on the spot (no files needed).
public enum ModelPreset: String, CaseIterable, Sendable {
    case tiny, smollm2, llama7b = "7b"

    /// The configuration of the preset.
    public var config: LlamaConfig {
        switch self {
        case .tiny:
            return LlamaConfig(dim: 64, nLayers: 2, nHeads: 4, vocabSize: 400, multipleOf: 32, maxSeqLen: 512)
        case .smollm2:
            return LlamaConfig(dim: 576, nLayers: 30, nHeads: 9, nKVHeads: 3, vocabSize: 49152, hiddenDim: 1536,
                               normEps: 1e-5, ropeTheta: 100000, maxSeqLen: 2048, tiedEmbeddings: true)
        case .llama7b:
            return LlamaConfig(dim: 4096, nLayers: 32, nHeads: 32, vocabSize: 32000, multipleOf: 256, maxSeqLen: 512)
        }
    }
}

extension LlamaWeights {
    /// Weights of the right shapes filled with small pseudo-random values in `dtype` (f32, f16 or bf16).
    /// A 64K-value random block is tiled, which is enough for speed and memory measurements.
    public static func synthetic(config c: LlamaConfig, dtype: DType = .f16, seed: UInt64 = 1) -> LlamaWeights {
        var state = seed | 1
        var block = [Float](repeating: 0, count: 65536)
        for i in block.indices {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            block[i] = (Float(state % 20001) / 10000 - 1) * 0.04
        }
        var half = [UInt16](repeating: 0, count: block.count)
        block.withUnsafeBufferPointer { b in half.withUnsafeMutableBufferPointer { h in
            convertToHalf(src: b.baseAddress!, dst: h.baseAddress!, count: b.count)
        } }
        func make(_ shape: [Int], _ dt: DType) -> Tensor {
            let count = shape.reduce(1, *)
            let t = Tensor(uninitialized: shape, dtype: dt)
            var done = 0
            while done < count {
                let n = min(block.count, count - done)
                switch dt {
                case .f32:
                    block.withUnsafeBufferPointer { (t.mutableData + done * 4).copyMemory(from: $0.baseAddress!, byteCount: n * 4) }
                case .f16:
                    half.withUnsafeBufferPointer { (t.mutableData + done * 2).copyMemory(from: $0.baseAddress!, byteCount: n * 2) }
                case .bf16:
                    let p = (t.mutableData + done * 2).assumingMemoryBound(to: UInt16.self)
                    for i in 0..<n { p[i] = UInt16(truncatingIfNeeded: block[i].bitPattern >> 16) }
                default:
                    fatalError("synthetic weights support f32, f16 and bf16")
                }
                done += n
            }
            return t
        }
        func norm() -> Tensor { Tensor([Float](repeating: 1, count: c.dim), shape: [c.dim]) }
        let layers = (0..<c.nLayers).map { _ in
            LlamaLayerWeights(attentionNorm: norm(), wq: make([c.dim, c.dim], dtype), wk: make([c.kvDim, c.dim], dtype),
                              wv: make([c.kvDim, c.dim], dtype), wo: make([c.dim, c.dim], dtype), ffnNorm: norm(),
                              w1: make([c.hiddenDim, c.dim], dtype), w2: make([c.dim, c.hiddenDim], dtype),
                              w3: make([c.hiddenDim, c.dim], dtype))
        }
        let emb = make([c.vocabSize, c.dim], dtype)
        return LlamaWeights(tokEmbeddings: emb, layers: layers, norm: norm(),
                            output: c.tiedEmbeddings ? emb : make([c.vocabSize, c.dim], dtype))
    }
}
