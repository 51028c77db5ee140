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
    /// Optional frozen biases of the maps (f32; GGUF `blk.N.attn_q.bias` and the like, as `export` writes them).
    public var biases: [LinearSlot: Tensor] = [:]

    /// A block from its tensors (norms f32, matrices in any dtype); `bind` checks shapes, this does not.
    public init(attentionNorm: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor, ffnNorm: Tensor, w1: Tensor, w2: Tensor, w3: Tensor) {
        self.attentionNorm = attentionNorm
        self.wq = wq; self.wk = wk; self.wv = wv; self.wo = wo
        self.ffnNorm = ffnNorm
        self.w1 = w1; self.w2 = w2; self.w3 = w3
    }

    /// The seven matrices (wq, wk, wv, wo, w1, w2, w3), for passes that transform each of them alike.
    public static var matrices: [WritableKeyPath<LlamaLayerWeights, Tensor>] { [\.wq, \.wk, \.wv, \.wo, \.w1, \.w2, \.w3] }
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

    /// Weights from their tensors (for models built in code: synthetic benchmarks, tests).
    public init(tokEmbeddings: Tensor, layers: [LlamaLayerWeights], norm: Tensor, output: Tensor) {
        self.tokEmbeddings = tokEmbeddings
        self.layers = layers
        self.norm = norm
        self.output = output
    }

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
            var layer = LlamaLayerWeights(
                attentionNorm: try norm(p + "attention_norm.weight"),
                wq: try get(p + "attention.wq.weight", [c.dim, c.dim]),
                wk: try get(p + "attention.wk.weight", [c.kvDim, c.dim]),
                wv: try get(p + "attention.wv.weight", [c.kvDim, c.dim]),
                wo: try get(p + "attention.wo.weight", [c.dim, c.dim]),
                ffnNorm: try norm(p + "ffn_norm.weight"),
                w1: try get(p + "feed_forward.w1.weight", [c.hiddenDim, c.dim]),
                w2: try get(p + "feed_forward.w2.weight", [c.dim, c.hiddenDim]),
                w3: try get(p + "feed_forward.w3.weight", [c.hiddenDim, c.dim]))
            let biasNames: [(LinearSlot, String, Int)] = [
                (.wq, "attention.wq.bias", c.dim), (.wk, "attention.wk.bias", c.kvDim), (.wv, "attention.wv.bias", c.kvDim),
                (.wo, "attention.wo.bias", c.dim), (.w1, "feed_forward.w1.bias", c.hiddenDim),
                (.w2, "feed_forward.w2.bias", c.dim), (.w3, "feed_forward.w3.bias", c.hiddenDim)]
            for (slot, name, n) in biasNames {
                if let b = try lookup(p + name) {
                    guard b.shape == [n] else { throw AdapterError.shape("\(source): tensor '\(p + name)' has shape \(b.shape), expected [\(n)]") }
                    layer.biases[slot] = b.toF32()
                }
            }
            layers.append(layer)
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

// MARK: - Model

/// One sequence of a batched forward: its next tokens, its state, and from which of its positions logits are
/// wanted (nil: the last position only).
public struct ForwardEntry {
    /// Tokens at positions state.length ..< state.length + tokens.count.
    public var tokens: [Int]
    /// The sequence's own state (cache, prompts, options).
    public var state: DecoderState
    /// First position whose logits are returned (nil: only the last).
    public var logitsFrom: Int?

    /// An entry.
    public init(tokens: [Int], state: DecoderState, logitsFrom: Int? = nil) {
        self.tokens = tokens
        self.state = state
        self.logitsFrom = logitsFrom
    }
}

/// A LLaMA model with its LLaMA-Adapter V2 parts, immutable once loaded: weights (base and adapter) are
/// bound at construction and nothing changes afterwards, so one model serves any number of sessions on
/// any threads. Everything that belongs to one sequence (KV cache, scratch, the current image's prompts,
/// compatibility and precision modes) lives in a `DecoderState`.
public final class LlamaModel: Sendable {
    /// Shapes and numerics.
    public let config: LlamaConfig
    /// Bound base weights.
    public let weights: LlamaWeights
    /// The LLaMA-Adapter V2 parameters (biases, scales, LoRA, trained norms, gates, prompts), if any.
    public let adapter: AdapterWeights?
    /// Rotary tables for `2 * maxSeqLen` positions, as the official code precomputes.
    public let rope: RopeTable
    /// The thread pool kernels run on.
    public let pool: ThreadPool

    /// Binds weights (and an adapter, which must fit them).
    public init(config: LlamaConfig, weights: LlamaWeights, adapter: AdapterWeights? = nil, pool: ThreadPool = .shared) throws {
        try config.validate()
        if let adapter, adapter.layers.count != config.nLayers {
            throw AdapterError.shape("\(adapter.path): adapter has \(adapter.layers.count) layers but the model has \(config.nLayers)")
        }
        self.config = config
        self.weights = weights
        self.adapter = adapter
        self.pool = pool
        rope = RopeTable(headDim: config.headDim, maxPos: 2 * config.maxSeqLen, theta: config.ropeTheta)
        BLAS.useSingleThread()
    }

    /// The same base weights with `adapter` bound (the base tensors are shared, not copied).
    public func with(adapter: AdapterWeights?) throws -> LlamaModel {
        try LlamaModel(config: config, weights: weights, adapter: adapter, pool: pool)
    }

    /// Prefill positions per pass by default: as many as keep a pass's f32 activations within 32 MB, at least 64
    /// (7B: 135, SmolLM2: 1065). 7B Q4_0/Q8_0/Q4_K_M prefilled 512 tokens 5-15% faster in pieces of 128 than in one
    /// pass (F16 and `--int8-activations` the same), and SmolLM2 ~8% slower in pieces of 128 than whole.
    public var autoPrefillChunk: Int {
        max(64, (32 << 20) / (4 * (5 * config.dim + 2 * config.kvDim + 3 * config.hiddenDim)))
    }

    /// Longest sequence a state of this model can hold.
    public var contextLength: Int { min(config.maxSeqLen, rope.maxPos) }

    /// Runs `tokens` at positions `state.length ..< state.length + tokens.count`, appends their keys and
    /// values to the state's cache and returns the logits [vocab] of the last position (all positions, [T, vocab],
    /// when `allLogits`). The buffer belongs to `state` and is valid until its next forward.
    /// With `record` (training; the state must be empty), the forward also saves what the backward needs;
    /// the arithmetic is the same as without it.
    /// `logitsFrom` (with `allLogits`) skips the logits of earlier positions (training: prompt positions carry no
    /// label, so their logits are never needed); the buffer then holds T − logitsFrom rows.
    public func forward(tokens: [Int], state s: DecoderState, allLogits: Bool = false, logitsFrom: Int = 0,
                        record: ForwardRecord? = nil) throws -> UnsafeBufferPointer<Float> {
        // A long prompt whose last logits are all that is wanted runs in pieces (`DecoderOptions.prefillChunk`),
        // checked whole first so a bad prompt leaves the state as it was. The pieces are of equal size (within one)
        // and longer than `matvecBatchLimit`, so each takes the prefill kernels a one-pass prefill takes: a short
        // last piece would take the mat-vecs (other bits) and, with `--compat official`, a one-token step.
        let chunk = max(s.options.prefillChunk > 0 ? s.options.prefillChunk : autoPrefillChunk, 2 * matvecBatchLimit + 2)
        if !allLogits, record == nil, tokens.count > chunk {
            try checkFits(tokens, state: s)
            let pieces = (tokens.count + chunk - 1) / chunk
            var start = 0
            for i in 0..<pieces - 1 {
                let end = tokens.count * (i + 1) / pieces
                _ = try forward(batch: [ForwardEntry(tokens: Array(tokens[start..<end]), state: s)])
                start = end
            }
            return try forward(batch: [ForwardEntry(tokens: Array(tokens[start...]), state: s)])[0]
        }
        return try forward(batch: [ForwardEntry(tokens: tokens, state: s, logitsFrom: allLogits ? logitsFrom : nil)], record: record)[0]
    }

    /// Several sequences in one pass: every linear map runs once over all their rows (one pass over the
    /// weights, GEMMs of Σ T rows), attention and RoPE per sequence on its own state (cache, prompts, options).
    /// Returns each entry's logits, in order, as views of one buffer owned by `workspace` (default: the first
    /// entry's state; valid until its next forward). A server whose batch changes every step passes one
    /// workspace so the scratch is not duplicated in every request's state. With `record` (training; all states
    /// empty) the rows are recorded packed, entry after entry (see `ForwardRecord.segments`).
    public func forward(batch: [ForwardEntry], record: ForwardRecord? = nil, workspace: DecoderState? = nil) throws -> [UnsafeBufferPointer<Float>] {
        let c = config
        guard let first = batch.first else { throw AdapterError.invalidArgument("forward called with no sequences") }
        var segments: [Segment] = []
        var R = 0, probsOffset = 0, scoreNeed = 0
        for e in batch {
            let T = e.tokens.count, startPos = e.state.length
            guard T > 0 else { throw AdapterError.invalidArgument("forward called with no tokens") }
            try checkFits(e.tokens, state: e.state)
            if let f = e.logitsFrom, f < 0 || f >= T { throw AdapterError.invalidArgument("logitsFrom \(f) outside 0..<\(T)") }
            if record != nil, startPos != 0 { throw AdapterError.invalidArgument("a recording forward needs empty states") }
            if segments.contains(where: { $0.state === e.state }) { throw AdapterError.invalidArgument("one state appears twice in a batch") }
            segments.append(Segment(offset: R, T: T, startPos: startPos, state: e.state, probsOffset: probsOffset))
            R += T
            probsOffset += c.nHeads * T * T
            scoreNeed = max(scoreNeed, e.state.cache.capacity + (e.state.prompts?.maxLength ?? 0) + c.headDim)
        }
        if let record {
            guard record.T >= R, record.layers.count == c.nLayers, record.probsCapacity >= probsOffset else {
                throw AdapterError.invalidArgument("a recording forward of \(R) rows needs a record for at least as many (and their attention)")
            }
            record.segments = segments.map { ForwardRecord.SegmentInfo(offset: $0.offset, T: $0.T, probsOffset: $0.probsOffset) }
        }
        let b = (workspace ?? first.state).buffers(model: self, T: R, scoreNeed: scoreNeed)
        let dim = c.dim
        let rowBytes = weights.tokEmbeddings.dtype.byteCount(elements: dim)
        for (e, seg) in zip(batch, segments) {
            for (t, id) in e.tokens.enumerated() {
                convertToFloat(dtype: weights.tokEmbeddings.dtype, src: weights.tokEmbeddings.data + id * rowBytes,
                               dst: b.x + (seg.offset + t) * dim, count: dim)
            }
        }
        let activations = first.state.options.activations
        // One sequence's rows are a prefill: float weights may take the GEMM kernel even for a few rows.
        let oneSequence = segments.count == 1
        for l in 0..<c.nLayers {
            let rec = record?.layers[l]
            attentionBlock(l, b: b, R: R, segments: segments, oneSequence: oneSequence, activations: activations, record: rec)
            feedForwardBlock(l, b: b, T: R, oneSequence: oneSequence, activations: activations, record: rec)
        }
        for seg in segments { seg.state.length = seg.startPos + seg.T }
        if let record { record.finalInput.update(from: b.x, count: R * dim) }
        // The rows whose logits are wanted, gathered (in order) into xb, then one output GEMM.
        var rows = 0
        var ranges: [(start: Int, count: Int)] = []
        for (e, seg) in zip(batch, segments) {
            let from = e.logitsFrom ?? (seg.T - 1)
            let n = seg.T - from
            rmsnormForward(out: b.xb + rows * dim, inp: b.x + (seg.offset + from) * dim, weight: (adapter?.norm ?? weights.norm).floats,
                           T: n, C: dim, eps: c.normEps)
            ranges.append((rows, n))
            rows += n
        }
        linearForward(out: b.logits, inp: b.xb, weight: weights.output, T: rows, activations: activations, oneSequence: oneSequence,
                      pool: pool)
        return ranges.map { UnsafeBufferPointer(start: b.logits + $0.start * c.vocabSize, count: $0.count * c.vocabSize) }
    }

    /// Throws unless `tokens` fit after the state's positions and are all in the vocabulary.
    func checkFits(_ tokens: [Int], state s: DecoderState) throws {
        guard s.length + tokens.count <= s.capacity else {
            throw AdapterError.invalidArgument("sequence of \(s.length + tokens.count) tokens exceeds the context of \(s.capacity)")
        }
        if let t = tokens.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            throw AdapterError.invalidArgument("token id \(t) is outside the vocabulary of \(config.vocabSize)")
        }
    }

    /// One sequence's place in a batched forward.
    struct Segment {
        let offset: Int, T: Int, startPos: Int
        let state: DecoderState
        let probsOffset: Int
    }

    /// As `forward`, copied into an array (safe to keep after `state` is gone, unlike `forward`'s view).
    public func forwardArray(tokens: [Int], state: DecoderState, allLogits: Bool = false, logitsFrom: Int = 0,
                             record: ForwardRecord? = nil) throws -> [Float] {
        try withExtendedLifetime(state) {
            Array(try forward(tokens: tokens, state: state, allLogits: allLogits, logitsFrom: logitsFrom, record: record))
        }
    }

    private func attentionBlock(_ l: Int, b: DecoderState.Buffers, R: Int, segments: [Segment], oneSequence: Bool, activations act: ActivationPrecision,
                                record rec: BlockRecord?) {
        let c = config
        let dim = c.dim, kvDim = c.kvDim, hd = c.headDim
        let layer = weights.layers[l]
        let ad = adapter?.layers[l]
        if let rec { rec.inp.update(from: b.x, count: R * dim) }
        let normed = rec?.attnNormed ?? b.xb
        rmsnormForward(out: normed, inp: b.x, weight: (ad?.attentionNorm ?? layer.attentionNorm).floats, T: R, C: dim, eps: c.normEps)
        let q = rec?.q ?? b.q, k = rec?.k ?? b.k, v = rec?.v ?? b.v
        linearGroup(outs: [q, k, v], inp: normed, weights: [layer.wq, layer.wk, layer.wv], biases: [layer.biases[.wq], layer.biases[.wk], layer.biases[.wv]],
                    extras: [ad?.wq, ad?.wk, ad?.wv],
                    preScale: rec.map { [$0.preScale[.wq], $0.preScale[.wk], $0.preScale[.wv]] }, T: R, oneSequence: oneSequence,
                    activations: act)
        let att = rec?.att ?? b.att
        for seg in segments {
            let T = seg.T, startPos = seg.startPos, s = seg.state
            let qs = q + seg.offset * dim, ks = k + seg.offset * kvDim, vs = v + seg.offset * kvDim
            ropeForward(qs, T: T, nHeads: c.nHeads, headDim: hd, startPos: startPos, table: rope)
            ropeForward(ks, T: T, nHeads: c.nKVHeads, headDim: hd, startPos: startPos, table: rope)
            let kc = s.cache.keys[l], vc = s.cache.values[l]
            (kc + startPos * kvDim).update(from: ks, count: T * kvDim)
            (vc + startPos * kvDim).update(from: vs, count: T * kvDim)
            let p = s.prompts?.layers[l]
            let prompt = p.map { GatedPrompt(keys: $0.keys, values: $0.values, length: $0.length, gates: $0.gates) }
            let record = rec.map { r -> AttentionRecord in
                var pp: UnsafeMutablePointer<Float>?
                if let pl = p, let base = r.promptProbs { pp = base + c.nHeads * pl.length * seg.offset }
                return AttentionRecord(probs: r.probs + seg.probsOffset, promptProbs: pp)
            }
            attentionForward(out: att + seg.offset * dim, outStride: dim, q: qs, qStride: dim, keys: kc, values: vc, kvStride: kvDim,
                             T: T, keyCount: startPos + T, mask: .causal(startPos: startPos),
                             nHeads: c.nHeads, nKVHeads: c.nKVHeads, headDim: hd,
                             normalize: !(s.options.compat == .official && T == 1 && s.prompts == nil),
                             prompt: prompt, record: record, scratch: b.scores, scratchStride: b.scoreStride, pool: pool)
        }
        linear(out: b.xb, inp: att, weight: layer.wo, bias: layer.biases[.wo], extras: ad?.wo, preScale: rec?.preScale[.wo], T: R,
               oneSequence: oneSequence, activations: act)
        addInPlace(b.x, b.xb, R * dim)
    }

    private func feedForwardBlock(_ l: Int, b: DecoderState.Buffers, T: Int, oneSequence: Bool, activations: ActivationPrecision,
                                  record rec: BlockRecord?) {
        let c = config
        let layer = weights.layers[l]
        let ad = adapter?.layers[l]
        if let rec { rec.mid.update(from: b.x, count: T * c.dim) }
        let normed = rec?.ffnNormed ?? b.xb
        rmsnormForward(out: normed, inp: b.x, weight: (ad?.ffnNorm ?? layer.ffnNorm).floats, T: T, C: c.dim, eps: c.normEps)
        let a = rec?.gate ?? b.ffA, u = rec?.up ?? b.ffB
        linearGroup(outs: [a, u], inp: normed, weights: [layer.w1, layer.w3], biases: [layer.biases[.w1], layer.biases[.w3]],
                    extras: [ad?.w1, ad?.w3],
                    preScale: rec.map { [$0.preScale[.w1], $0.preScale[.w3]] }, T: T, oneSequence: oneSequence, activations: activations)
        let h = rec?.hidden ?? b.ffA
        swigluForward(out: h, a: a, b: u, n: T * c.hiddenDim)
        linear(out: b.xb, inp: h, weight: layer.w2, bias: layer.biases[.w2], extras: ad?.w2, preScale: rec?.preScale[.w2], T: T,
               oneSequence: oneSequence, activations: activations)
        addInPlace(b.x, b.xb, T * c.dim)
    }

    /// A frozen linear map with its adapter extras: y = s ⊙ (W x + b) + B(A x), or W(x ⊙ s) + b for input-side
    /// scales. `preScale`, when given, receives W x + b before the output-side scale (the scale's backward needs it).
    /// `bias` is the base model's own (frozen) bias, added to W x before the adapter's extras.
    func linear(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: Tensor, bias: Tensor? = nil, extras: LinearExtras?,
                preScale: UnsafeMutablePointer<Float>? = nil, T: Int, oneSequence: Bool = false, activations: ActivationPrecision) {
        guard let e = extras, !e.isEmpty else {
            linearForward(out: out, inp: inp, weight: weight, bias: bias?.floats, T: T, activations: activations, oneSequence: oneSequence,
                          pool: pool)
            return
        }
        let K = weight.shape[1], N = weight.shape[0]
        if e.scaleOnInput, let sc = e.scale {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: T * K) { buf in
                let xs = buf.baseAddress!
                for t in 0..<T { for i in 0..<K { xs[t * K + i] = inp[t * K + i] * sc.floats[i] } }
                linearForward(out: out, inp: xs, weight: weight, bias: e.bias?.floats, T: T, pool: pool)
            }
            if let bias { for t in 0..<T { addInPlace(out + t * N, bias.floats, N) } }
            addLoRA(out: out, inp: inp, extras: e, T: T)
        } else {
            linearForward(out: out, inp: inp, weight: weight, bias: bias?.floats, T: T, activations: activations, oneSequence: oneSequence,
                          pool: pool)
            finishOutput(out: out, inp: inp, extras: e, N: N, T: T, preScale: preScale)
        }
    }

    /// Several linear maps of one input (wq/wk/wv, or w1/w3). When decoding (up to `matvecBatchLimit` rows),
    /// their frozen parts run as one grouped mat-vec (one pool hand-off) and the output-side extras follow. `preScale` (recording only)
    /// has one optional buffer per map.
    func linearGroup(outs: [UnsafeMutablePointer<Float>], inp: UnsafePointer<Float>, weights: [Tensor], biases: [Tensor?],
                     extras: [LinearExtras?], preScale: [UnsafeMutablePointer<Float>?]?, T: Int, oneSequence: Bool = false,
                     activations: ActivationPrecision) {
        guard T <= matvecBatchLimit, !extras.contains(where: { $0?.scaleOnInput == true }),
              !(oneSequence && weights.contains(where: { prefersGemm($0, T: T) })) else {
            for i in weights.indices {
                linear(out: outs[i], inp: inp, weight: weights[i], bias: biases[i], extras: extras[i], preScale: preScale?[i], T: T,
                       oneSequence: oneSequence, activations: activations)
            }
            return
        }
        matvecGroup(outs: outs, x: inp, T: T, weights: weights, activations: activations, pool: pool)
        for i in weights.indices {
            let N = weights[i].shape[0]
            if let b = biases[i] { for t in 0..<T { addInPlace(outs[i] + t * N, b.floats, N) } }
            if let e = extras[i], !e.isEmpty {
                finishOutput(out: outs[i], inp: inp, extras: e, N: weights[i].shape[0], T: T, preScale: preScale?[i])
            }
        }
    }

    /// y = s ⊙ (y + b) + B(A x) on the frozen map's output y.
    private func finishOutput(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, extras e: LinearExtras, N: Int, T: Int,
                              preScale: UnsafeMutablePointer<Float>?) {
        if let b = e.bias { for t in 0..<T { addInPlace(out + t * N, b.floats, N) } }
        if let sc = e.scale {
            preScale?.update(from: out, count: T * N)
            for t in 0..<T { for i in 0..<N { out[t * N + i] *= sc.floats[i] } }
        }
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
}
