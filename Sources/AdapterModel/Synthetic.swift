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
    public static func synthetic(config c: LlamaConfig, dtype: DType = .f16) -> LlamaWeights {
        func make(_ shape: [Int]) -> Tensor { SyntheticTensors.make(shape, dtype) }
        func norm() -> Tensor { SyntheticTensors.constant(c.dim, 1) }
        let layers = (0..<c.nLayers).map { _ in
            LlamaLayerWeights(attentionNorm: norm(), wq: make([c.dim, c.dim]), wk: make([c.kvDim, c.dim]),
                              wv: make([c.kvDim, c.dim]), wo: make([c.dim, c.dim]), ffnNorm: norm(),
                              w1: make([c.hiddenDim, c.dim]), w2: make([c.dim, c.hiddenDim]), w3: make([c.hiddenDim, c.dim]))
        }
        let emb = make([c.vocabSize, c.dim])
        return LlamaWeights(tokEmbeddings: emb, layers: layers, norm: norm(), output: c.tiedEmbeddings ? emb : make([c.vocabSize, c.dim]))
    }
}

extension AdapterWeights {
    /// A BIAS-style adapter with made-up values for a model of shape `c` (biases on wq/wo/w1/w2/w3, trained
    /// norms, gates, `queryLen` × `queryLayer` prompts), for measuring the adapter's decode overhead.
    public static func syntheticBias(config c: LlamaConfig, queryLen: Int = 10, queryLayer: Int? = nil) -> AdapterWeights {
        var ac = AdapterConfig()
        ac.wBias = true
        ac.queryLen = queryLen
        ac.queryLayer = queryLayer ?? max(1, c.nLayers - 1)
        let layers = (0..<c.nLayers).map { _ -> LayerAdapter in
            var l = LayerAdapter()
            l.wq.bias = SyntheticTensors.constant(c.dim, 0.01)
            l.wo.bias = SyntheticTensors.constant(c.dim, 0.01)
            l.w1.bias = SyntheticTensors.constant(c.hiddenDim, 0.01)
            l.w2.bias = SyntheticTensors.constant(c.dim, 0.01)
            l.w3.bias = SyntheticTensors.constant(c.hiddenDim, 0.01)
            l.attentionNorm = SyntheticTensors.constant(c.dim, 1)
            l.ffnNorm = SyntheticTensors.constant(c.dim, 1)
            l.gate = SyntheticTensors.constant(c.nHeads, 0.1)
            return l
        }
        return AdapterWeights(config: ac, layers: layers, adapterQuery: SyntheticTensors.make([ac.queryLen * ac.queryLayer, c.dim], .f32),
                              visual: nil, norm: SyntheticTensors.constant(c.dim, 1), path: "<synthetic>", kind: "BIAS",
                              parameterCount: 0)
    }
}
