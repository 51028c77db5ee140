import Foundation
import AdapterCore

/// Shape and numerics of a LLaMA-family transformer (LLaMA-1/2, SmolLM2-style GQA models).
public struct LlamaConfig: Codable, Equatable, Sendable {
    /// Model width.
    public var dim: Int
    /// Number of transformer blocks.
    public var nLayers: Int
    /// Number of query heads.
    public var nHeads: Int
    /// Number of key/value heads (equal to `nHeads` without grouped-query attention).
    public var nKVHeads: Int
    /// Vocabulary size (rows of the embedding).
    public var vocabSize: Int
    /// Hidden width of the SwiGLU feed-forward block.
    public var hiddenDim: Int
    /// RMSNorm epsilon.
    public var normEps: Float
    /// RoPE base.
    public var ropeTheta: Float
    /// Longest sequence the model is meant for (the official adapter code uses 512).
    public var maxSeqLen: Int
    /// True when the output projection reuses the token embedding.
    public var tiedEmbeddings: Bool

    /// Width of one attention head.
    public var headDim: Int { dim / nHeads }
    /// Width of the key/value projections.
    public var kvDim: Int { nKVHeads * headDim }

    /// Creates a configuration; `hiddenDim` defaults to LLaMA's rule for `multipleOf`.
    public init(dim: Int, nLayers: Int, nHeads: Int, nKVHeads: Int? = nil, vocabSize: Int, hiddenDim: Int? = nil,
                multipleOf: Int = 256, ffnDimMultiplier: Double? = nil, normEps: Float = 1e-6,
                ropeTheta: Float = 10000, maxSeqLen: Int = 2048, tiedEmbeddings: Bool = false) {
        self.dim = dim
        self.nLayers = nLayers
        self.nHeads = nHeads
        self.nKVHeads = nKVHeads ?? nHeads
        self.vocabSize = vocabSize
        self.hiddenDim = hiddenDim ?? LlamaConfig.llamaHiddenDim(dim: dim, multipleOf: multipleOf, ffnDimMultiplier: ffnDimMultiplier)
        self.normEps = normEps
        self.ropeTheta = ropeTheta
        self.maxSeqLen = maxSeqLen
        self.tiedEmbeddings = tiedEmbeddings
    }

    /// The official FeedForward width: int(2*4*dim/3), times the optional multiplier, rounded up to `multipleOf`.
    /// Out-of-range inputs (from a corrupt params.json) give 0, which `validate` refuses, instead of trapping.
    public static func llamaHiddenDim(dim: Int, multipleOf: Int, ffnDimMultiplier: Double?) -> Int {
        guard dim > 0, dim <= 1 << 20, multipleOf > 0, multipleOf <= 1 << 20 else { return 0 }
        var hidden = Int(2 * (4 * dim) / 3)
        if let m = ffnDimMultiplier {
            let scaled = m * Double(hidden)
            guard scaled.isFinite, scaled >= 1, scaled <= Double(1 << 24) else { return 0 }
            hidden = Int(scaled)
        }
        return multipleOf * ((hidden + multipleOf - 1) / multipleOf)
    }

    /// Checks internal consistency (head divisibility); throws a readable error.
    public func validate() throws {
        guard dim > 0, nLayers > 0, nHeads > 0, nKVHeads > 0, vocabSize > 0, hiddenDim > 0, maxSeqLen > 0 else {
            throw AdapterError.shape("model configuration has a non-positive size: \(self)")
        }
        guard dim <= 1 << 17, nLayers <= 4096, nHeads <= dim, vocabSize <= 1 << 24, hiddenDim <= 1 << 20, maxSeqLen <= 1 << 20 else {
            throw AdapterError.shape("model configuration has an implausible size (dim \(dim), layers \(nLayers), heads \(nHeads), vocab \(vocabSize), ffn \(hiddenDim), context \(maxSeqLen))")
        }
        guard normEps.isFinite, normEps > 0, ropeTheta.isFinite, ropeTheta > 0 else {
            throw AdapterError.shape("model configuration has norm_eps \(normEps) and rope_theta \(ropeTheta); both must be positive and finite")
        }
        guard dim % nHeads == 0 else { throw AdapterError.shape("dim \(dim) is not divisible by n_heads \(nHeads)") }
        guard nHeads % nKVHeads == 0 else { throw AdapterError.shape("n_heads \(nHeads) is not divisible by n_kv_heads \(nKVHeads)") }
        guard headDim % 2 == 0 else { throw AdapterError.shape("head dimension \(headDim) must be even for RoPE") }
    }
}

/// The keys of Meta's `params.json` (LLaMA-1 and LLaMA-2).
public struct MetaParams: Codable, Sendable {
    public var dim: Int
    public var n_layers: Int
    public var n_heads: Int
    public var n_kv_heads: Int?
    public var vocab_size: Int?
    public var multiple_of: Int?
    public var ffn_dim_multiplier: Double?
    public var norm_eps: Double?
    public var rope_theta: Double?
    /// LLaMA-3.1's scaled RoPE: not implemented, refused at load.
    public var use_scaled_rope: Bool?

    /// Reads and decodes a `params.json` file.
    public static func load(path: String) throws -> MetaParams {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AdapterError.io("cannot read \(path)")
        }
        do { return try JSONDecoder().decode(MetaParams.self, from: data) } catch {
            throw AdapterError.format("\(path) is not a valid params.json: \(error)")
        }
    }
}
