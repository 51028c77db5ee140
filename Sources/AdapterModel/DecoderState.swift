// Per-sequence state of the decoder, separate from the immutable model: the KV cache, scratch buffers,
// the current image's adaption prompts and the modes that change the arithmetic. A server holds one per
// request on a single shared `LlamaModel`; training holds one per sequence it records.
import Foundation
import AdapterCore

/// Which behaviour of the official code to reproduce where it differs from what the code intended.
public enum Compatibility: String, Sendable, CaseIterable {
    /// Do what the official code intended (default).
    case standard
    /// `--compat official`: reproduce the official bugs (the plain forward's softmax sits inside
    /// `if mask is not None`, so it is skipped on one-token steps without an adapter prompt; the trainer's
    /// text-only prompts built from a one-element tuple).
    case official
}

/// Modes of one sequence's forward passes.
public struct DecoderOptions: Sendable, Equatable {
    /// Official-bug compatibility.
    public var compat: Compatibility
    /// Activation precision of decoding mat-vecs against Q4_0/Q4_1/Q8_0 weights (`--int8-activations`).
    public var activations: ActivationPrecision

    /// Prompt positions per pass of a long prefill (llama.cpp's micro-batch; 0: `LlamaModel.autoPrefillChunk`; at
    /// least 34): a longer prompt runs in equal pieces of at most this many, so the prefill's activations stay this
    /// size whatever the prompt's length. Every kernel computes a position independently of the positions run beside it, so the pieces give
    /// the logits of one pass bit for bit (`PrefillChunkTests`).
    public var prefillChunk: Int

    /// Activations at f32 precision (f32 FMAs, or three 8-bit levels on repacked weights), unless told otherwise.
    public init(compat: Compatibility = .standard, activations: ActivationPrecision = .f32, prefillChunk: Int = 0) {
        self.compat = compat
        self.activations = activations
        self.prefillChunk = prefillChunk
    }
}

/// Keys and values of past positions, f32, laid out [layer][position][kvDim].
public final class KVCache {
    /// Positions the cache can hold.
    public let capacity: Int
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

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }
}

/// One sequence's state on a shared model: KV cache, scratch, adaption prompts, options. Not thread-safe:
/// one state is used by one task at a time (many states may run on one model concurrently).
public final class DecoderState {
    /// The KV cache.
    public let cache: KVCache
    /// Positions filled so far.
    public internal(set) var length = 0
    /// Adapter prompts of the current image (nil: no adapter prompt enters).
    public var prompts: AdapterPrompts?
    /// Modes of this sequence's forwards.
    public var options: DecoderOptions
    private var scratch: Buffers?

    /// Positions the state can hold.
    public var capacity: Int { cache.capacity }

    /// Bytes this state owns (KV cache and scratch); the model's weights are not among them.
    public var byteCount: Int {
        let kv = 2 * cache.keys.count * cache.capacity * cache.kvDim * 4
        return kv + (scratch?.byteCount ?? 0)
    }

    /// A state for `model` holding up to `capacity` positions (default: the model's context length).
    public init(model: LlamaModel, capacity: Int? = nil, prompts: AdapterPrompts? = nil, options: DecoderOptions = DecoderOptions()) {
        cache = KVCache(config: model.config, capacity: min(capacity ?? model.contextLength, model.contextLength))
        self.prompts = prompts
        self.options = options
    }

    /// Forgets all positions (keeps the memory, the prompts and the options).
    public func reset() { length = 0 }

    /// Drops positions after `newLength` (a chat turn that diverges from what the cache saw).
    public func truncate(to newLength: Int) { length = min(length, max(0, newLength)) }

    /// Replaces this state's positions with the first `positions` of `other` (same model): a server reuses
    /// the keys and values of a prompt prefix another request already computed.
    public func copyPrefix(of other: DecoderState, positions: Int) {
        let n = min(positions, other.length, capacity)
        precondition(other.cache.kvDim == cache.kvDim && other.cache.keys.count == cache.keys.count, "states of different models")
        for l in 0..<cache.keys.count {
            cache.keys[l].update(from: other.cache.keys[l], count: n * cache.kvDim)
            cache.values[l].update(from: other.cache.values[l], count: n * cache.kvDim)
        }
        length = n
    }

    /// Activation buffers for up to `T` positions, reused across calls so the decoding loop allocates nothing.
    final class Buffers {
        let T: Int
        let x, xb, q, k, v, att, ffA, ffB, logits: UnsafeMutablePointer<Float>
        /// Per-thread rows for the per-position attention path: keys, prompt scores, one head's output.
        let scores: UnsafeMutablePointer<Float>
        let scoreStride: Int
        let byteCount: Int
        init(config c: LlamaConfig, T: Int, scoreStride: Int, threads: Int) {
            self.T = T
            byteCount = 4 * (T * (5 * c.dim + 2 * c.kvDim + 2 * c.hiddenDim + c.vocabSize) + max(threads, 1) * scoreStride)
            x = .allocate(capacity: T * c.dim)
            xb = .allocate(capacity: T * c.dim)
            q = .allocate(capacity: T * c.dim)
            k = .allocate(capacity: T * c.kvDim)
            v = .allocate(capacity: T * c.kvDim)
            att = .allocate(capacity: T * c.dim)
            ffA = .allocate(capacity: T * c.hiddenDim)
            ffB = .allocate(capacity: T * c.hiddenDim)
            logits = .allocate(capacity: T * c.vocabSize)
            self.scoreStride = scoreStride
            scores = .allocate(capacity: max(threads, 1) * scoreStride)
        }
        deinit {
            for p in [x, xb, q, k, v, att, ffA, ffB, logits, scores] { p.deallocate() }
        }
    }

    func buffers(model: LlamaModel, T: Int, scoreNeed: Int? = nil) -> Buffers {
        let needed = scoreNeed ?? (cache.capacity + (prompts?.maxLength ?? 0) + model.config.headDim)
        if let s = scratch, s.T >= T, s.scoreStride >= needed { return s }
        let s = Buffers(config: model.config, T: max(T, scratch?.T ?? 0), scoreStride: max(needed, scratch?.scoreStride ?? 0),
                        threads: model.pool.threadCount)
        scratch = s
        return s
    }
}

// MARK: - Recording for the backward

/// The seven linear maps of a block, for per-map records.
public enum LinearSlot: Int, CaseIterable, Sendable {
    case wq, wk, wv, wo, w1, w2, w3
}

/// What one block's backward needs, saved by a recording forward (llm.c's activation buffers for one
/// layer). All f32, T positions; nil where the model has no such part.
public final class BlockRecord {
    /// Block input (residual stream) [T, dim].
    public let inp: UnsafeMutablePointer<Float>
    /// attention_norm output [T, dim] (input of wq/wk/wv).
    public let attnNormed: UnsafeMutablePointer<Float>
    /// Rotated queries [T, dim], rotated keys and values [T, kvDim].
    public let q, k, v: UnsafeMutablePointer<Float>
    /// Attention probabilities: per recorded sequence [nHeads, T_i, T_i], sequences one after another.
    public let probs: UnsafeMutablePointer<Float>
    /// Adaption-prompt probabilities, when a prompt enters this layer: per sequence [nHeads, T_i, promptLength]
    /// at offset nHeads · promptLength · (the sequence's first row).
    public let promptProbs: UnsafeMutablePointer<Float>?
    /// Attention output before wo [T, dim].
    public let att: UnsafeMutablePointer<Float>
    /// Residual stream after attention [T, dim].
    public let mid: UnsafeMutablePointer<Float>
    /// ffn_norm output [T, dim] (input of w1/w3).
    public let ffnNormed: UnsafeMutablePointer<Float>
    /// w1 output (SwiGLU gate) and w3 output (up) [T, hidden].
    public let gate, up: UnsafeMutablePointer<Float>
    /// silu(gate)·up [T, hidden] (input of w2).
    public let hidden: UnsafeMutablePointer<Float>
    /// W x + b before the output-side scale, per linear map that has one [T, out].
    public let preScale: [LinearSlot: UnsafeMutablePointer<Float>]
    private let all: [UnsafeMutablePointer<Float>]

    init(config c: LlamaConfig, T: Int, probsCapacity: Int, promptLength: Int?, scaled: [LinearSlot: Int]) {
        func buf(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            p.initialize(repeating: 0, count: max(n, 1))
            return p
        }
        inp = buf(T * c.dim); attnNormed = buf(T * c.dim)
        q = buf(T * c.dim); k = buf(T * c.kvDim); v = buf(T * c.kvDim)
        probs = buf(probsCapacity)
        promptProbs = promptLength.map { buf(c.nHeads * T * $0) }
        att = buf(T * c.dim); mid = buf(T * c.dim); ffnNormed = buf(T * c.dim)
        gate = buf(T * c.hiddenDim); up = buf(T * c.hiddenDim); hidden = buf(T * c.hiddenDim)
        preScale = scaled.mapValues { buf(T * $0) }
        all = [inp, attnNormed, q, k, v, probs, att, mid, ffnNormed, gate, up, hidden] + (promptProbs.map { [$0] } ?? [])
            + Array(preScale.values)
    }

    deinit { all.forEach { $0.deallocate() } }
}

/// Everything a model-level backward needs from one recording forward: rows of one or more sequences packed
/// one after another (`segments`), as a batched forward ran them.
public final class ForwardRecord {
    /// Rows the record can hold (a forward of fewer rows lays its buffers out for its own length, so one record
    /// serves batches of any size up to this).
    public let T: Int
    /// Floats available for attention probabilities (Σ nHeads · T_i² over the sequences).
    public let probsCapacity: Int
    /// Per block.
    public let layers: [BlockRecord]
    /// Residual stream before the final norm [rows, dim].
    public let finalInput: UnsafeMutablePointer<Float>

    /// Where one sequence's rows and attention probabilities sit.
    public struct SegmentInfo: Sendable, Equatable {
        /// First row.
        public let offset: Int
        /// Rows.
        public let T: Int
        /// Offset of its [nHeads, T, T] probabilities in each block's `probs`.
        public let probsOffset: Int
    }
    /// The sequences of the last recording forward, in order.
    public internal(set) var segments: [SegmentInfo] = []

    /// Buffers for a recording forward of up to `T` rows through `model`, each sequence at most `maxSequence`
    /// long (default `T`: one sequence), with adaption prompts laid out like `prompts`.
    public init(model: LlamaModel, T: Int, prompts: AdapterPrompts?, maxSequence: Int? = nil) {
        let c = model.config
        self.T = T
        probsCapacity = c.nHeads * T * min(maxSequence ?? T, T)
        layers = (0..<c.nLayers).map { [probsCapacity] l in
            var scaled: [LinearSlot: Int] = [:]
            if let ad = model.adapter?.layers[l] {
                let extras: [(LinearSlot, LinearExtras, Int)] = [
                    (.wq, ad.wq, c.dim), (.wk, ad.wk, c.kvDim), (.wv, ad.wv, c.kvDim), (.wo, ad.wo, c.dim),
                    (.w1, ad.w1, c.hiddenDim), (.w2, ad.w2, c.dim), (.w3, ad.w3, c.hiddenDim)]
                for (slot, e, n) in extras where e.scale != nil && !e.scaleOnInput { scaled[slot] = n }
            }
            return BlockRecord(config: c, T: T, probsCapacity: probsCapacity, promptLength: prompts?.layers[l]?.length, scaled: scaled)
        }
        finalInput = .allocate(capacity: T * c.dim)
    }

    deinit { finalInput.deallocate() }
}
