// LLaMA transformer (Touvron et al. 2023) as the official LLaMA-Adapter code runs it
// (llama_adapter_v2_multimodal7b/llama/llama.py): pre-norm RMSNorm blocks, RoPE on adjacent
// pairs, causal attention with a KV cache, SwiGLU feed-forward. Weights are bound by their
// official names; other formats are renamed to these names by their loaders.
import Foundation
import AdapterCore

// MARK: - Weights

/// One transformer block's weights, named as in Meta's checkpoints.
public struct LlamaLayerWeights: @unchecked Sendable {
    /// `layers.N.attention_norm.weight`, converted to f32.
    public var attentionNorm: Tensor
    /// `layers.N.attention.wq.weight` [dim, dim].
    public var wq: Tensor
    /// `layers.N.attention.wk.weight` [kvDim, dim].
    public var wk: Tensor
    /// `layers.N.attention.wv.weight` [kvDim, dim].
    public var wv: Tensor
    /// `layers.N.attention.wo.weight` [dim, dim].
    public var wo: Tensor
    /// `layers.N.ffn_norm.weight`, converted to f32.
    public var ffnNorm: Tensor
    /// `layers.N.feed_forward.w1.weight` [hidden, dim] (gate).
    public var w1: Tensor
    /// `layers.N.feed_forward.w2.weight` [dim, hidden] (down).
    public var w2: Tensor
    /// `layers.N.feed_forward.w3.weight` [hidden, dim] (up).
    public var w3: Tensor
}

/// All weights of a LLaMA model.
public struct LlamaWeights: @unchecked Sendable {
    /// `tok_embeddings.weight` [vocab, dim], in its stored dtype.
    public var tokEmbeddings: Tensor
    /// Blocks in order.
    public var layers: [LlamaLayerWeights]
    /// `norm.weight`, converted to f32.
    public var norm: Tensor
    /// `output.weight` [vocab, dim] (the embedding when tied).
    public var output: Tensor

    /// Binds weights from a name → tensor lookup using official names, checking every shape against `config`.
    public static func bind(config c: LlamaConfig, source: String, lookup: (String) throws -> Tensor?) throws -> LlamaWeights {
        func get(_ name: String, _ shape: [Int]) throws -> Tensor {
            guard let t = try lookup(name) else { throw AdapterError.format("\(source): missing tensor '\(name)'") }
            guard t.shape == shape else {
                throw AdapterError.shape("\(source): tensor '\(name)' has shape \(t.shape) but the model configuration expects \(shape)")
            }
            return t
        }
        func norm(_ name: String) throws -> Tensor { try get(name, [c.dim]).toF32() }
        var layers: [LlamaLayerWeights] = []
        for i in 0..<c.nLayers {
            let p = "layers.\(i)."
            layers.append(LlamaLayerWeights(
                attentionNorm: try norm(p + "attention_norm.weight"),
                wq: try get(p + "attention.wq.weight", [c.dim, c.dim]),
                wk: try get(p + "attention.wk.weight", [c.kvDim, c.dim]),
                wv: try get(p + "attention.wv.weight", [c.kvDim, c.dim]),
                wo: try get(p + "attention.wo.weight", [c.dim, c.dim]),
                ffnNorm: try norm(p + "ffn_norm.weight"),
                w1: try get(p + "feed_forward.w1.weight", [c.hiddenDim, c.dim]),
                w2: try get(p + "feed_forward.w2.weight", [c.dim, c.hiddenDim]),
                w3: try get(p + "feed_forward.w3.weight", [c.hiddenDim, c.dim])))
        }
        let emb = try get("tok_embeddings.weight", [c.vocabSize, c.dim])
        let output = c.tiedEmbeddings ? emb : try get("output.weight", [c.vocabSize, c.dim])
        return LlamaWeights(tokEmbeddings: emb, layers: layers, norm: try norm("norm.weight"), output: output)
    }

    /// Bytes of weights read per decoded token (every matrix once), for the bandwidth bound.
    public var bytesPerToken: Int {
        var b = output.byteCount + norm.byteCount
        for l in layers {
            b += l.wq.byteCount + l.wk.byteCount + l.wv.byteCount + l.wo.byteCount
            b += l.w1.byteCount + l.w2.byteCount + l.w3.byteCount + l.attentionNorm.byteCount + l.ffnNorm.byteCount
        }
        return b
    }
}

// MARK: - KV cache

/// Keys and values of past positions, f32, laid out [layer][position][kvDim].
public final class KVCache: @unchecked Sendable {
    /// Positions the cache can hold.
    public let capacity: Int
    /// Positions filled so far.
    public var length: Int = 0
    let kvDim: Int
    let keys: [UnsafeMutablePointer<Float>]
    let values: [UnsafeMutablePointer<Float>]

    /// Allocates a cache for `capacity` positions of a model with `config`.
    public init(config: LlamaConfig, capacity: Int) {
        self.capacity = capacity
        kvDim = config.kvDim
        keys = (0..<config.nLayers).map { _ in .allocate(capacity: capacity * config.kvDim) }
        values = (0..<config.nLayers).map { _ in .allocate(capacity: capacity * config.kvDim) }
    }

    /// Adapter prompt keys/values per layer for this session (one image), or nil.
    public var prompts: AdapterPrompts?

    /// Forgets all positions (keeps the memory and the prompts).
    public func reset() { length = 0 }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }
}

// MARK: - Model

/// A LLaMA model ready for inference: weights, rotary tables and reusable scratch buffers.
public final class LlamaModel: @unchecked Sendable {
    /// Shapes and numerics.
    public let config: LlamaConfig
    /// Bound weights.
    public let weights: LlamaWeights
    /// Rotary tables for `2 * maxSeqLen` positions, as the official code precomputes.
    public let rope: RopeTable
    let pool: ThreadPool
    private var scratch: Scratch?
    /// The attached LLaMA-Adapter V2 parameters, if any.
    public private(set) var adapter: AdapterWeights?
    /// `--compat official`: reproduce the official plain `Transformer.forward`, whose softmax sits inside
    /// `if mask is not None` and is therefore skipped on one-token steps (without an adapter; the adapter
    /// path always builds a mask). Off by default: we do what the code intended.
    public var officialSoftmaxBug = false
    /// Activation precision of decoding mat-vecs against Q4_0/Q4_1/Q8_0 weights (`--int8-activations`).
    public var activations: ActivationPrecision = .f32

    /// Attaches an adapter (biases, scales, LoRA, trained norms, gates, prompts); it must fit this model.
    public func attach(adapter: AdapterWeights) throws {
        guard adapter.layers.count == config.nLayers else {
            throw AdapterError.shape("\(adapter.path): adapter has \(adapter.layers.count) layers but the model has \(config.nLayers)")
        }
        self.adapter = adapter
    }

    /// Wraps bound weights.
    public init(config: LlamaConfig, weights: LlamaWeights, pool: ThreadPool = .shared) throws {
        try config.validate()
        self.config = config
        self.weights = weights
        self.pool = pool
        rope = RopeTable(headDim: config.headDim, maxPos: 2 * config.maxSeqLen, theta: config.ropeTheta)
        BLAS.useSingleThread()
    }

    /// A new KV cache for up to `capacity` positions (default: the model's maximum sequence length).
    public func makeCache(capacity: Int? = nil) -> KVCache {
        KVCache(config: config, capacity: min(capacity ?? config.maxSeqLen, rope.maxPos))
    }

    /// Activation buffers for up to `T` positions, reused across calls to avoid allocating per token.
    final class Scratch {
        let T: Int
        let x, xb, q, k, v, att, ffA, ffB, logits: UnsafeMutablePointer<Float>
        let scores: UnsafeMutablePointer<Float>
        let scoreStride: Int
        init(config c: LlamaConfig, T: Int, maxPos: Int, threads: Int) {
            self.T = T
            x = .allocate(capacity: T * c.dim)
            xb = .allocate(capacity: T * c.dim)
            q = .allocate(capacity: T * c.dim)
            k = .allocate(capacity: T * c.kvDim)
            v = .allocate(capacity: T * c.kvDim)
            att = .allocate(capacity: T * c.dim)
            ffA = .allocate(capacity: T * c.hiddenDim)
            ffB = .allocate(capacity: T * c.hiddenDim)
            logits = .allocate(capacity: T * c.vocabSize)
            scoreStride = maxPos
            scores = .allocate(capacity: max(threads, 1) * maxPos)
        }
        deinit {
            for p in [x, xb, q, k, v, att, ffA, ffB, logits, scores] { p.deallocate() }
        }
    }

    private func scratch(for T: Int, cache: KVCache) -> Scratch {
        // A score row holds the cached positions, then the adapter prompt's scores and its head output.
        let needed = cache.capacity + (cache.prompts?.maxLength ?? 0) + config.headDim
        if let s = scratch, s.T >= T, s.scoreStride >= needed { return s }
        let s = Scratch(config: config, T: max(T, scratch?.T ?? 0), maxPos: max(needed, scratch?.scoreStride ?? 0),
                        threads: pool.threadCount)
        scratch = s
        return s
    }

    /// Runs `tokens` at positions `cache.length ..< cache.length + tokens.count`, appends their keys and
    /// values to `cache`, and returns logits [vocab] of the last position (or of all positions when `allLogits`).
    public func forward(tokens: [Int], cache: KVCache, allLogits: Bool = false) throws -> [Float] {
        Array(try forwardLogits(tokens: tokens, cache: cache, allLogits: allLogits))
    }

    /// As `forward`, but returns a view of the model's own logits buffer, valid until the next call;
    /// the decoding loop uses it to avoid allocating (and page-faulting) a vocabulary-sized array per token.
    public func forwardLogits(tokens: [Int], cache: KVCache, allLogits: Bool = false) throws -> UnsafeBufferPointer<Float> {
        let c = config
        let T = tokens.count
        let startPos = cache.length
        guard T > 0 else { throw AdapterError.invalidArgument("forward called with no tokens") }
        guard startPos + T <= cache.capacity else {
            throw AdapterError.invalidArgument("sequence of \(startPos + T) tokens exceeds the context of \(cache.capacity)")
        }
        for t in tokens where t < 0 || t >= c.vocabSize {
            throw AdapterError.invalidArgument("token id \(t) is outside the vocabulary of \(c.vocabSize)")
        }
        let s = scratch(for: T, cache: cache)
        let dim = c.dim
        let rowBytes = weights.tokEmbeddings.dtype.byteCount(elements: dim)
        for (t, id) in tokens.enumerated() {
            convertToFloat(dtype: weights.tokEmbeddings.dtype, src: weights.tokEmbeddings.data + id * rowBytes, dst: s.x + t * dim, count: dim)
        }
        for (l, layer) in weights.layers.enumerated() {
            attentionBlock(layer: layer, index: l, s: s, T: T, startPos: startPos, cache: cache)
            feedForwardBlock(layer: layer, index: l, s: s, T: T)
        }
        cache.length = startPos + T
        let rows = allLogits ? T : 1
        let first = allLogits ? 0 : T - 1
        rmsnormForward(out: s.xb, inp: s.x + first * dim, weight: (adapter?.norm ?? weights.norm).floats, T: rows, C: dim, eps: c.normEps)
        linearForward(out: s.logits, inp: s.xb, weight: weights.output, T: rows, activations: activations, pool: pool)
        return UnsafeBufferPointer(start: s.logits, count: rows * c.vocabSize)
    }

    private func attentionBlock(layer: LlamaLayerWeights, index l: Int, s: Scratch, T: Int, startPos: Int, cache: KVCache) {
        let c = config
        let dim = c.dim, kvDim = c.kvDim, hd = c.headDim
        let ad = adapter?.layers[l]
        rmsnormForward(out: s.xb, inp: s.x, weight: (ad?.attentionNorm ?? layer.attentionNorm).floats, T: T, C: dim, eps: c.normEps)
        linearGroup(outs: [s.q, s.k, s.v], inp: s.xb, weights: [layer.wq, layer.wk, layer.wv], extras: [ad?.wq, ad?.wk, ad?.wv], T: T)
        ropeForward(s.q, T: T, nHeads: c.nHeads, headDim: hd, startPos: startPos, table: rope)
        ropeForward(s.k, T: T, nHeads: c.nKVHeads, headDim: hd, startPos: startPos, table: rope)
        let kc = cache.keys[l], vc = cache.values[l]
        (kc + startPos * kvDim).update(from: s.k, count: T * kvDim)
        (vc + startPos * kvDim).update(from: s.v, count: T * kvDim)
        let scale = 1 / Float(hd).squareRoot()
        let group = c.nHeads / c.nKVHeads
        let nHeads = c.nHeads
        let prompt = cache.prompts?.layers[l]
        if T >= 16 {
            // Prefill: per head, S = Q Kᵀ over all cached positions (GEMM), causal mask, row softmax, O = S V.
            let nTot = startPos + T
            let mats = UnsafeMutablePointer<Float>.allocate(capacity: pool.threadCount * T * nTot)
            defer { mats.deallocate() }
            pool.run { ti, tn in
                let sm = mats + ti * T * nTot
                for h in (nHeads * ti / tn)..<(nHeads * (ti + 1) / tn) {
                    let kvh = h / group
                    BLAS.gemmABt(m: T, n: nTot, k: hd, a: s.q + h * hd, lda: dim, b: kc + kvh * hd, ldb: kvDim,
                                 c: sm, ldc: nTot, alpha: scale)
                    for t in 0..<T {
                        let row = sm + t * nTot, n = startPos + t + 1
                        softmaxInPlace(row, n)
                        (row + n).initialize(repeating: 0, count: nTot - n)
                    }
                    BLAS.gemmAB(m: T, n: hd, k: nTot, a: sm, lda: nTot, b: vc + kvh * hd, ldb: kvDim, c: s.att + h * hd, ldc: dim)
                }
            }
        }
        // Decoding (and short chunks): per (position, head) pair; each worker has its own score row.
        // The adapter prompt's own attention is added here in both cases.
        if T < 16 || prompt != nil {
            let full = T < 16
            let rawScores = officialSoftmaxBug && T == 1 && cache.prompts == nil
            pool.run { ti, tn in
                let scores = s.scores + ti * s.scoreStride
                let total = T * nHeads
                let lo = total * ti / tn, hi = total * (ti + 1) / tn
                for job in lo..<hi {
                    let t = job / nHeads, h = job % nHeads
                    let kvh = h / group
                    let q = s.q + t * dim + h * hd
                    let n = startPos + t + 1
                    let out = s.att + t * dim + h * hd
                    if full && rawScores {
                        out.initialize(repeating: 0, count: hd)
                        for p in 0..<n { axpy(dot(q, kc + p * kvDim + kvh * hd, hd) * scale, vc + p * kvDim + kvh * hd, out, hd) }
                    } else if full {
                        attendHead(q: q, keys: kc + kvh * hd, values: vc + kvh * hd, count: n, headDim: hd, stride: kvDim,
                                   scale: scale, scores: scores, out: out)
                    }
                    if let prompt {
                        // The adapter's own attention over the prompt (its own softmax), scaled by the
                        // per-head gate tanh(g_h) (times new_gate), added before wo (official llama.py).
                        let g = prompt.gate[h]
                        if prompt.length == 1 {
                            axpy(g, prompt.values + kvh * hd, out, hd)
                        } else {
                            let tmp = scores + n
                            attendHead(q: q, keys: prompt.keys + kvh * hd, values: prompt.values + kvh * hd, count: prompt.length,
                                       headDim: hd, stride: kvDim, scale: scale, scores: tmp, out: tmp + prompt.length)
                            axpy(g, tmp + prompt.length, out, hd)
                        }
                    }
                }
            }
        }
        linear(out: s.xb, inp: s.att, weight: layer.wo, extras: ad?.wo, T: T)
        addInPlace(s.x, s.xb, T * dim)
    }

    /// A frozen linear map with its adapter extras: y = s ⊙ (W x + b) + B(A x), or W(x ⊙ s) + b for input-side scales.
    func linear(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: Tensor, extras: LinearExtras?, T: Int) {
        guard let e = extras, !e.isEmpty else {
            linearForward(out: out, inp: inp, weight: weight, T: T, activations: activations, pool: pool)
            return
        }
        let K = weight.shape[1]
        if e.scaleOnInput, let sc = e.scale {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: T * K) { buf in
                let xs = buf.baseAddress!
                for t in 0..<T { for i in 0..<K { xs[t * K + i] = inp[t * K + i] * sc.floats[i] } }
                linearForward(out: out, inp: xs, weight: weight, bias: e.bias?.floats, T: T, pool: pool)
            }
            addLoRA(out: out, inp: inp, extras: e, T: T)
        } else {
            linearForward(out: out, inp: inp, weight: weight, T: T, activations: activations, pool: pool)
            finishOutput(out: out, inp: inp, extras: e, N: weight.shape[0], T: T)
        }
    }

    /// Several linear maps of one input (wq/wk/wv, or w1/w3). When decoding, their frozen parts run as one
    /// grouped mat-vec (one pool hand-off) and the output-side extras follow.
    func linearGroup(outs: [UnsafeMutablePointer<Float>], inp: UnsafePointer<Float>, weights: [Tensor], extras: [LinearExtras?], T: Int) {
        guard T == 1, !extras.contains(where: { $0?.scaleOnInput == true }) else {
            for i in weights.indices { linear(out: outs[i], inp: inp, weight: weights[i], extras: extras[i], T: T) }
            return
        }
        matvecGroup(outs: outs, x: inp, weights: weights, activations: activations, pool: pool)
        for i in weights.indices {
            if let e = extras[i], !e.isEmpty { finishOutput(out: outs[i], inp: inp, extras: e, N: weights[i].shape[0], T: T) }
        }
    }

    /// y = s ⊙ (y + b) + B(A x) on the frozen map's output y.
    private func finishOutput(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, extras e: LinearExtras, N: Int, T: Int) {
        if let b = e.bias { for t in 0..<T { addInPlace(out + t * N, b.floats, N) } }
        if let sc = e.scale { for t in 0..<T { for i in 0..<N { out[t * N + i] *= sc.floats[i] } } }
        addLoRA(out: out, inp: inp, extras: e, T: T)
    }

    /// y += B(A x) when the extras carry LoRA.
    private func addLoRA(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, extras e: LinearExtras, T: Int) {
        guard let a = e.loraA, let b = e.loraB else { return }
        let r = a.shape[0], N = b.shape[0]
        withUnsafeTemporaryAllocation(of: Float.self, capacity: T * r + T * N) { buf in
            let mid = buf.baseAddress!, up = mid + T * r
            linearForward(out: mid, inp: inp, weight: a, T: T, pool: pool)
            linearForward(out: up, inp: mid, weight: b, T: T, pool: pool)
            addInPlace(out, up, T * N)
        }
    }

    private func feedForwardBlock(layer: LlamaLayerWeights, index l: Int, s: Scratch, T: Int) {
        let c = config
        let ad = adapter?.layers[l]
        rmsnormForward(out: s.xb, inp: s.x, weight: (ad?.ffnNorm ?? layer.ffnNorm).floats, T: T, C: c.dim, eps: c.normEps)
        linearGroup(outs: [s.ffA, s.ffB], inp: s.xb, weights: [layer.w1, layer.w3], extras: [ad?.w1, ad?.w3], T: T)
        swigluForward(out: s.ffA, a: s.ffA, b: s.ffB, n: T * c.hiddenDim)
        linear(out: s.xb, inp: s.ffA, weight: layer.w2, extras: ad?.w2, T: T)
        addInPlace(s.x, s.xb, T * c.dim)
    }
}
