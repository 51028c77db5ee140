import Foundation
import AdapterCore
import AdapterVision

/// Keys and values of the adapter prompts for one session (one image), per layer. They depend only on the
/// adapter and the image, so they are computed once per image instead of at every step as the official
/// code does. Immutable once built, so sessions of one image may share them.
public final class AdapterPrompts: @unchecked Sendable {
    /// One layer's prompt.
    public struct Layer: @unchecked Sendable {
        /// Prompt keys [length, kvDim] (through wk, without bias, LoRA or RoPE).
        public let keys: UnsafeMutablePointer<Float>
        /// Prompt values [length, kvDim].
        public let values: UnsafeMutablePointer<Float>
        /// Number of prompt tokens.
        public let length: Int
        /// Effective gate per query head (`adaptionGate`: tanh(gate_h), times new_gate for prompts longer than one).
        public let gates: UnsafeMutablePointer<Float>
    }

    /// Per model layer; nil where no prompt enters.
    public let layers: [Layer?]
    /// Longest prompt.
    public var maxLength: Int { layers.compactMap { $0?.length }.max() ?? 0 }

    init(layers: [Layer?]) { self.layers = layers }

    deinit {
        for l in layers.compactMap({ $0 }) { l.keys.deallocate(); l.values.deallocate(); l.gates.deallocate() }
    }
}

extension LlamaModel {
    /// The visual query tokens [queryLen, dim] for CLIP features [tokens, clipDim] (official `forward_visual`).
    /// With `record` (training) it saves what the visual branch's backward needs; same arithmetic.
    public func visualQuery(clipFeatures: Tensor, record: VisualRecord? = nil) throws -> Tensor {
        guard let a = adapter, let v = a.visual else { throw AdapterError.invalidArgument("the adapter has no visual branch") }
        let clipDim = v.clipProjWeight.shape[1], vd = a.config.vEmbedDim, ql = a.config.queryLen
        guard clipFeatures.shape.count == 2, clipFeatures.shape[1] == clipDim else {
            throw AdapterError.shape("CLIP features have shape \(clipFeatures.shape) but clip_proj expects width \(clipDim)")
        }
        let n = clipFeatures.shape[0], T = ql + n
        if let record, record.n != n || record.blocks.count != v.blocks.count {
            throw AdapterError.invalidArgument("visual record for \(record.n) CLIP tokens used with \(n)")
        }
        let x = Tensor(zeros: [T, vd])
        let xp = x.floats
        xp.update(from: v.visualQuery.floats, count: ql * vd)
        let feats = clipFeatures.toF32()
        record?.features = feats
        let projected = record?.projected ?? xp + ql * vd
        linearForward(out: projected, inp: feats.floats, weight: v.clipProjWeight, bias: v.clipProjBias.floats, T: n, pool: pool)
        layerNormForward(out: xp + ql * vd, inp: projected, weight: v.clipProjNormWeight.floats, bias: v.clipProjNormBias.floats,
                         T: n, C: vd, eps: 1e-5)
        for (i, b) in v.blocks.enumerated() { encoderBlockForward(xp, T: T, block: b, record: record?.blocks[i], pool: pool) }
        if let record { record.blocksOut.update(from: xp, count: ql * vd) }
        let out = Tensor(zeros: [ql, config.dim])
        let vproj = record?.visualProjected ?? out.floats
        linearForward(out: vproj, inp: xp, weight: v.visualProjWeight, bias: v.visualProjBias.floats, T: ql, pool: pool)
        layerNormForward(out: out.floats, inp: vproj, weight: v.visualProjNormWeight.floats, bias: v.visualProjNormBias.floats,
                         T: ql, C: config.dim, eps: 1e-5)
        return out
    }

    /// The tokens [length, dim] that enter each layer's adaption prompt (nil where none enters), before
    /// wk/wv: `release` adds the visual query to adapter_query[i] in the last queryLayer layers; `early(K)`
    /// gives layers 0..<K the visual query alone. Shapes are checked by `makePrompts`.
    public func promptSources(visualQuery: Tensor?, fusion: Fusion) -> [[Float]?] {
        let c = config
        var sources = [[Float]?](repeating: nil, count: c.nLayers)
        guard let a = adapter else { return sources }
        let ac = a.config, ql = ac.queryLen
        if let aq = a.adapterQuery {
            for i in 0..<ac.queryLayer {
                var p = Array(UnsafeBufferPointer(start: aq.floats + i * ql * c.dim, count: ql * c.dim))
                if fusion == .release, let vq = visualQuery {
                    for j in 0..<p.count { p[j] += vq.floats[j] }
                }
                sources[c.nLayers - ac.queryLayer + i] = p
            }
        }
        if case .early(let k) = fusion, let vq = visualQuery {
            for l in 0..<k {
                sources[l] = Array(UnsafeBufferPointer(start: vq.floats, count: ql * c.dim))
            }
        }
        return sources
    }

    /// Builds the per-layer prompts of the model's adapter, with `visualQuery` [queryLen, dim] if given.
    /// `release`: layer (nLayers - queryLayer + i) gets adapter_query[i] + visualQuery.
    /// `early(K)`: layers 0..<K get the visual query alone; the last queryLayer layers get adapter_query[i].
    public func makePrompts(visualQuery: Tensor?, fusion: Fusion = .release) throws -> AdapterPrompts? {
        guard let a = adapter else { return nil }
        let c = config, ac = a.config, ql = ac.queryLen
        if case .early(let k) = fusion, k < 0 || k + ac.queryLayer > c.nLayers {
            throw AdapterError.invalidArgument("early fusion into \(k) layers overlaps the last \(ac.queryLayer) adapter layers of a \(c.nLayers)-layer model")
        }
        if let vq = visualQuery, vq.shape != [ql, c.dim] {
            throw AdapterError.shape("visual query has shape \(vq.shape), expected [\(ql), \(c.dim)]")
        }
        let sources = promptSources(visualQuery: visualQuery, fusion: fusion)
        var layers: [AdapterPrompts.Layer?] = []
        for (l, src) in sources.enumerated() {
            guard let src else { layers.append(nil); continue }
            let la = a.layers[l]
            let n = src.count / c.dim
            let k = UnsafeMutablePointer<Float>.allocate(capacity: n * c.kvDim)
            let v = UnsafeMutablePointer<Float>.allocate(capacity: n * c.kvDim)
            // The prompt goes through wk/wv with their scales and biases (the 65B release's code; under the
            // paper's Eq. 1 the scale belongs to the linear layer) but never through LoRA (the multimodal
            // release applies LoRA to token keys/values only). The multimodal release has no wk/wv extras.
            var ek = la.wk, ev = la.wv
            ek.loraA = nil; ek.loraB = nil; ev.loraA = nil; ev.loraB = nil
            src.withUnsafeBufferPointer { sp in
                linear(out: k, inp: sp.baseAddress!, weight: weights.layers[l].wk, bias: weights.layers[l].biases[.wk], extras: ek, T: n,
                       activations: .f32)
                linear(out: v, inp: sp.baseAddress!, weight: weights.layers[l].wv, bias: weights.layers[l].biases[.wv], extras: ev, T: n,
                       activations: .f32)
            }
            let gates = UnsafeMutablePointer<Float>.allocate(capacity: c.nHeads)
            for h in 0..<c.nHeads { gates[h] = la.gate.map { adaptionGate($0.floats[h], newGate: la.newGate, promptLength: n) } ?? 0 }
            layers.append(AdapterPrompts.Layer(keys: k, values: v, length: n, gates: gates))
        }
        return AdapterPrompts(layers: layers)
    }
}

/// What the visual branch's backward needs from one recording `visualQuery` (one image).
public final class VisualRecord {
    /// CLIP tokens.
    public let n: Int
    /// CLIP features in f32 [n, clipDim] (input of clip_proj), set by the forward.
    public internal(set) var features: Tensor?
    /// clip_proj output [n, vEmbedDim] (input of clip_proj_norm).
    public let projected: UnsafeMutablePointer<Float>
    /// Per visual block.
    public let blocks: [EncoderBlockRecord]
    /// The first queryLen rows after the last block [queryLen, vEmbedDim] (input of visual_proj).
    public let blocksOut: UnsafeMutablePointer<Float>
    /// visual_proj output [queryLen, dim] (input of visual_proj_norm).
    public let visualProjected: UnsafeMutablePointer<Float>

    /// Buffers for `model`'s visual branch over `clipTokens` CLIP tokens.
    public init(model: LlamaModel, clipTokens n: Int) throws {
        guard let a = model.adapter, let v = a.visual else { throw AdapterError.invalidArgument("the adapter has no visual branch") }
        let vd = a.config.vEmbedDim, ql = a.config.queryLen
        self.n = n
        projected = .allocate(capacity: n * vd)
        blocks = v.blocks.map { EncoderBlockRecord(block: $0, T: ql + n) }
        blocksOut = .allocate(capacity: ql * vd)
        visualProjected = .allocate(capacity: ql * model.config.dim)
    }

    deinit { projected.deallocate(); blocksOut.deallocate(); visualProjected.deallocate() }
}
