// Model-level backward, llm.c style: one recording forward (LlamaModel.forward with a ForwardRecord, the
// inference forward itself) and one backward that walks the blocks in reverse over the per-layer kernels,
// accumulating into the trained parameters' gradients. Frozen base weights of any dtype get no gradient
// buffer; gradients flow through them (`linearBackward` converts tiles of them on the fly).
import Foundation
import AdapterCore
import AdapterModel
import AdapterVision

/// The trained parameters around one linear map (Eq. 1 bias and scale, LoRA), looked up by official name.
struct LinearParams {
    var bias, scale, loraA, loraB: Parameter?
    var withoutLoRA: LinearParams { var p = self; p.loraA = nil; p.loraB = nil; return p }
}

/// One block's adapter parameters.
struct LayerParams {
    var maps: [LinearParams]  // indexed by LinearSlot.rawValue
    var gate, newGate, attentionNorm, ffnNorm: Parameter?
    var all: [Parameter] {
        maps.flatMap { [$0.bias, $0.scale, $0.loraA, $0.loraB].compactMap { $0 } }
            + [gate, newGate, attentionNorm, ffnNorm].compactMap { $0 }
    }
}

/// The visual branch's parameters.
struct VisualParams {
    struct Block { var ln1W, ln1B, qkvW, qkvB, projW, projB, ln2W, ln2B, fc1W, fc1B, fc2W, fc2B: Parameter? }
    var clipProjW, clipProjB, clipProjNormW, clipProjNormB, visualQuery: Parameter?
    var blocks: [Block]
    var visualProjW, visualProjB, visualProjNormW, visualProjNormB: Parameter?
    var all: [Parameter] {
        [clipProjW, clipProjB, clipProjNormW, clipProjNormB, visualQuery, visualProjW, visualProjB, visualProjNormW, visualProjNormB]
            .compactMap { $0 }
            + blocks.flatMap { [$0.ln1W, $0.ln1B, $0.qkvW, $0.qkvB, $0.projW, $0.projB, $0.ln2W, $0.ln2B, $0.fc1W, $0.fc1B, $0.fc2W, $0.fc2B].compactMap { $0 } }
    }
}

/// Name → parameter map in the shape the backward walks, resolved once per run.
struct ParameterMap {
    var layers: [LayerParams]
    var norm: Parameter?
    var adapterQuery: Parameter?
    var visual: VisualParams

    init(store: ParameterStore, config c: LlamaConfig) {
        func find(_ n: String) -> Parameter? {
            store[n] ?? (n.hasPrefix("llama.") ? store[String(n.dropFirst(6))] : nil)
        }
        layers = (0..<c.nLayers).map { i in
            let p = "llama.layers.\(i)."
            let names: [(String, String)] = [("attention", "wq"), ("attention", "wk"), ("attention", "wv"), ("attention", "wo"),
                                             ("feed_forward", "w1"), ("feed_forward", "w2"), ("feed_forward", "w3")]
            let maps = names.map { (module, short) in
                LinearParams(bias: find(p + "\(module).\(short).bias") ?? find(p + "\(module).\(short)_bias"),
                             scale: find(p + "\(module).\(short).scale") ?? find(p + "\(module).\(short)_scale"),
                             loraA: find(p + "\(module).lora_\(short)_l1.weight"), loraB: find(p + "\(module).lora_\(short)_l2.weight"))
            }
            return LayerParams(maps: maps, gate: find(p + "attention.gate"), newGate: find(p + "attention.new_gate"),
                               attentionNorm: find(p + "attention_norm.weight"), ffnNorm: find(p + "ffn_norm.weight"))
        }
        norm = find("llama.norm.weight")
        adapterQuery = find("adapter_query.weight")
        var blocks: [VisualParams.Block] = []
        var i = 0
        while store["visual_blocks.\(i).norm1.weight"] != nil {
            let p = "visual_blocks.\(i)."
            blocks.append(.init(ln1W: store[p + "norm1.weight"], ln1B: store[p + "norm1.bias"],
                                qkvW: store[p + "attn.qkv.weight"], qkvB: store[p + "attn.qkv.bias"],
                                projW: store[p + "attn.proj.weight"], projB: store[p + "attn.proj.bias"],
                                ln2W: store[p + "norm2.weight"], ln2B: store[p + "norm2.bias"],
                                fc1W: store[p + "mlp.fc1.weight"], fc1B: store[p + "mlp.fc1.bias"],
                                fc2W: store[p + "mlp.fc2.weight"], fc2B: store[p + "mlp.fc2.bias"]))
            i += 1
        }
        visual = VisualParams(clipProjW: store["clip_proj.weight"], clipProjB: store["clip_proj.bias"],
                              clipProjNormW: store["clip_proj_norm.weight"], clipProjNormB: store["clip_proj_norm.bias"],
                              visualQuery: store["visual_query.weight"], blocks: blocks,
                              visualProjW: store["visual_proj.weight"], visualProjB: store["visual_proj.bias"],
                              visualProjNormW: store["visual_proj_norm.weight"], visualProjNormB: store["visual_proj_norm.bias"])
    }
}

/// Scratch of one sequence's backward, sized for T positions.
final class BackwardScratch {
    let T: Int
    let dx, dn, datt, dq, dFinal: UnsafeMutablePointer<Float>
    let dk, dv: UnsafeMutablePointer<Float>
    let dh, dgate, dup: UnsafeMutablePointer<Float>
    init(config c: LlamaConfig, T: Int) {
        self.T = T
        dx = .allocate(capacity: T * c.dim); dn = .allocate(capacity: T * c.dim); datt = .allocate(capacity: T * c.dim)
        dq = .allocate(capacity: T * c.dim); dFinal = .allocate(capacity: T * c.dim)
        dk = .allocate(capacity: T * c.kvDim); dv = .allocate(capacity: T * c.kvDim)
        dh = .allocate(capacity: T * c.hiddenDim); dgate = .allocate(capacity: T * c.hiddenDim); dup = .allocate(capacity: T * c.hiddenDim)
    }
    deinit { [dx, dn, datt, dq, dFinal, dk, dv, dh, dgate, dup].forEach { $0.deallocate() } }
}

/// Backward through a frozen linear map with its adapter extras (LlamaModel.linear's forward):
/// output side y = s ⊙ (W x + b) + B(A x), or input side y = W (x ⊙ s) + b + B(A x). Accumulates dInp (when
/// given) and the gradients of the parameters in `active` groups. `preScale` is W x + b saved by the
/// forward; when nil and the scale is trained it is recomputed.
func linearExtrasBackward(dInp: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                          preScale: UnsafePointer<Float>?, weight: Tensor, baseBias: Tensor? = nil, extras e: LinearExtras?, params: LinearParams,
                          active: Set<Int>, T: Int, pool: ThreadPool) {
    let N = weight.shape[0], K = weight.shape[1]
    let dB = params.bias?.gradient(active: active), dS = params.scale?.gradient(active: active)
    func columnSum(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
        for t in 0..<T { addInPlace(dst, src + t * N, N) }
    }
    if let e, e.scaleOnInput, let s = e.scale {
        if let dB { columnSum(dOut, into: dB) }
        if dInp != nil || dS != nil {
            let tmp = UnsafeMutablePointer<Float>.allocate(capacity: T * K)
            defer { tmp.deallocate() }
            tmp.initialize(repeating: 0, count: T * K)
            linearBackward(dInp: tmp, dWeight: nil, dBias: nil, dOut: dOut, inp: nil, weight: weight, T: T, pool: pool)
            for t in 0..<T {
                for i in 0..<K {
                    dS?[i] += tmp[t * K + i] * inp[t * K + i]
                    dInp?[t * K + i] += tmp[t * K + i] * s.floats[i]
                }
            }
        }
    } else {
        var dPre = dOut
        var owned: UnsafeMutablePointer<Float>?
        defer { owned?.deallocate() }
        if let s = e?.scale {
            if let dS {
                var pre = preScale
                var preOwned: UnsafeMutablePointer<Float>?
                defer { preOwned?.deallocate() }
                if pre == nil {
                    preOwned = .allocate(capacity: T * N)
                    linearForward(out: preOwned!, inp: inp, weight: weight, bias: e?.bias?.floats, T: T, pool: pool)
                    if let baseBias { for t in 0..<T { addInPlace(preOwned! + t * N, baseBias.floats, N) } }
                    pre = UnsafePointer(preOwned!)
                }
                for t in 0..<T { for i in 0..<N { dS[i] += dOut[t * N + i] * pre![t * N + i] } }
            }
            owned = .allocate(capacity: T * N)
            for t in 0..<T { for i in 0..<N { owned![t * N + i] = dOut[t * N + i] * s.floats[i] } }
            dPre = UnsafePointer(owned!)
        }
        if let dB { columnSum(dPre, into: dB) }
        if let dInp { linearBackward(dInp: dInp, dWeight: nil, dBias: nil, dOut: dPre, inp: nil, weight: weight, T: T, pool: pool) }
    }
    if let a = e?.loraA, let b = e?.loraB {
        let dA = params.loraA?.gradient(active: active), dLB = params.loraB?.gradient(active: active)
        guard dInp != nil || dA != nil || dLB != nil else { return }
        let r = a.shape[0]
        let mid = UnsafeMutablePointer<Float>.allocate(capacity: 2 * T * r)
        defer { mid.deallocate() }
        let dMid = mid + T * r
        dMid.initialize(repeating: 0, count: T * r)
        linearForward(out: mid, inp: inp, weight: a, T: T, pool: pool)
        linearBackward(dInp: dMid, dWeight: dLB, dBias: nil, dOut: dOut, inp: mid, weight: b, T: T, pool: pool)
        linearBackward(dInp: dInp, dWeight: dA, dBias: nil, dOut: dMid, inp: inp, weight: a, T: T, pool: pool)
    }
}

/// The backward of one recorded sequence through the language model.
struct LanguageBackward {
    let model: LlamaModel
    let params: ParameterMap
    let active: Set<Int>
    /// Blocks below this index need no gradient (nothing trained sits at or below them).
    let lowestLayer: Int

    /// One recorded sequence, as the backward needs it: its state (prompts), its prompt source tokens per layer
    /// and the first position that has logits (and so a loss gradient).
    struct Sequence {
        let state: DecoderState
        let sources: [[Float]?]
        let logitsFrom: Int
    }

    /// Runs the backward of a (packed) recording forward from `dLogits`: each sequence's rows logitsFrom ..< T,
    /// sequences one after another, as the forward returned them. Returns, per sequence, the gradient of each
    /// layer's prompt source tokens [length, dim] (nil where no prompt enters or none is needed).
    func run(record: ForwardRecord, sequences: [Sequence], needSourceGrad: Bool, dLogits: UnsafePointer<Float>,
             scratch s: BackwardScratch) -> [[[Float]?]] {
        let c = model.config, dim = c.dim, pool = model.pool
        let segs = record.segments
        precondition(segs.count == sequences.count, "one Sequence per recorded segment")
        let R = segs.last.map { $0.offset + $0.T } ?? 0
        precondition(R <= record.T && R <= s.T, "backward over more rows than recorded")
        let ad = model.adapter
        var dSources = [[[Float]?]](repeating: [[Float]?](repeating: nil, count: c.nLayers), count: segs.count)
        guard lowestLayer < c.nLayers || params.norm?.gradient(active: active) != nil else { return dSources }
        // Output projection (frozen) over the rows that have logits, once, then scattered to their positions.
        let rows = zip(segs, sequences).reduce(0) { $0 + $1.0.T - $1.1.logitsFrom }
        s.dn.initialize(repeating: 0, count: rows * dim)
        linearBackward(dInp: s.dn, dWeight: nil, dBias: nil, dOut: dLogits, inp: nil, weight: model.weights.output, T: rows, pool: pool)
        s.dFinal.initialize(repeating: 0, count: R * dim)
        var r = 0
        for (seg, q) in zip(segs, sequences) {
            let n = seg.T - q.logitsFrom
            (s.dFinal + (seg.offset + q.logitsFrom) * dim).update(from: s.dn + r * dim, count: n * dim)
            r += n
        }
        s.dx.initialize(repeating: 0, count: R * dim)
        rmsnormBackward(dInp: s.dx, dWeight: params.norm?.gradient(active: active), dOut: s.dFinal, inp: record.finalInput,
                        weight: (ad?.norm ?? model.weights.norm).floats, T: R, C: dim, eps: c.normEps)
        var l = c.nLayers - 1
        while l >= lowestLayer {
            blockBackward(l, record: record.layers[l], R: R, segments: segs, sequences: sequences, needSourceGrad: needSourceGrad,
                          dSources: &dSources, needInput: l > lowestLayer, s: s)
            l -= 1
        }
        return dSources
    }

    private func blockBackward(_ l: Int, record rec: BlockRecord, R: Int, segments: [ForwardRecord.SegmentInfo], sequences: [Sequence],
                               needSourceGrad: Bool, dSources: inout [[[Float]?]], needInput: Bool, s: BackwardScratch) {
        let c = model.config, dim = c.dim, kvDim = c.kvDim, hid = c.hiddenDim, pool = model.pool
        let T = R
        let w = model.weights.layers[l]
        let ad = model.adapter?.layers[l]
        let lp = params.layers[l]
        func slot(_ x: LinearSlot) -> LinearParams { lp.maps[x.rawValue] }
        // Feed-forward: out = mid + w2(silu(w1 n) * w3 n), n = ffn_norm(mid). s.dx holds d(out) and becomes d(mid).
        s.dh.initialize(repeating: 0, count: T * hid)
        linearExtrasBackward(dInp: s.dh, dOut: s.dx, inp: rec.hidden, preScale: rec.preScale[.w2], weight: w.w2, baseBias: w.biases[.w2],
                             extras: ad?.w2, params: slot(.w2), active: active, T: T, pool: pool)
        s.dgate.initialize(repeating: 0, count: T * hid)
        s.dup.initialize(repeating: 0, count: T * hid)
        swigluBackward(dA: s.dgate, dB: s.dup, dOut: s.dh, a: rec.gate, b: rec.up, n: T * hid)
        s.dn.initialize(repeating: 0, count: T * dim)
        linearExtrasBackward(dInp: s.dn, dOut: s.dgate, inp: rec.ffnNormed, preScale: rec.preScale[.w1], weight: w.w1, baseBias: w.biases[.w1],
                             extras: ad?.w1, params: slot(.w1), active: active, T: T, pool: pool)
        linearExtrasBackward(dInp: s.dn, dOut: s.dup, inp: rec.ffnNormed, preScale: rec.preScale[.w3], weight: w.w3, baseBias: w.biases[.w3],
                             extras: ad?.w3, params: slot(.w3), active: active, T: T, pool: pool)
        rmsnormBackward(dInp: s.dx, dWeight: lp.ffnNorm?.gradient(active: active), dOut: s.dn, inp: rec.mid,
                        weight: (ad?.ffnNorm ?? w.ffnNorm).floats, T: T, C: dim, eps: c.normEps)
        // Attention: mid = inp + wo(att), att = softmax(q kᵀ) v + g·softmax(q kpᵀ) vp, per sequence.
        s.datt.initialize(repeating: 0, count: T * dim)
        linearExtrasBackward(dInp: s.datt, dOut: s.dx, inp: rec.att, preScale: rec.preScale[.wo], weight: w.wo, baseBias: w.biases[.wo],
                             extras: ad?.wo, params: slot(.wo), active: active, T: T, pool: pool)
        s.dq.initialize(repeating: 0, count: T * dim)
        s.dk.initialize(repeating: 0, count: T * kvDim)
        s.dv.initialize(repeating: 0, count: T * kvDim)
        for (i, (seg, sq)) in zip(segments, sequences).enumerated() {
            let o = seg.offset, Ti = seg.T
            let dq = s.dq + o * dim, dk = s.dk + o * kvDim, dv = s.dv + o * kvDim, dOut = UnsafePointer(s.datt + o * dim)
            let q = UnsafePointer(rec.q + o * dim)
            attentionBackward(dq: dq, dk: dk, dv: dv, dOut: dOut, q: q, k: rec.k + o * kvDim, v: rec.v + o * kvDim,
                              probs: rec.probs + seg.probsOffset, T: Ti, nHeads: c.nHeads, nKVHeads: c.nKVHeads, headDim: c.headDim, pool: pool)
            if let prompt = sq.state.prompts?.layers[l], let ppBase = rec.promptProbs {
                let L = prompt.length
                let pp = ppBase + c.nHeads * L * o
                let source = sq.sources[l]
                let dGate = lp.gate?.gradient(active: active)
                let dNewGate = adaptionPromptUsesNewGate(promptLength: L) ? lp.newGate?.gradient(active: active) : nil
                // Prompt keys/values need a gradient for the prompt sources and for trained wk/wv scales (the prompt
                // goes through them too).
                let wantSource = needSourceGrad && source != nil
                let wantKV = wantSource || (source != nil && (slotTrains(slot(.wk).withoutLoRA) || slotTrains(slot(.wv).withoutLoRA)))
                var dpk = [Float](repeating: 0, count: wantKV ? L * kvDim : 0)
                var dpv = [Float](repeating: 0, count: wantKV ? L * kvDim : 0)
                // Effective gates are zero where no gate tensor exists (the forward's rule).
                let rawGate = ad?.gate.map { Array(UnsafeBufferPointer(start: $0.floats, count: c.nHeads)) }
                let gateValues = rawGate ?? [Float](repeating: 0, count: c.nHeads)
                dpk.withUnsafeMutableBufferPointer { kb in
                    dpv.withUnsafeMutableBufferPointer { vb in
                        gateValues.withUnsafeBufferPointer { g in
                            adaptionPromptAttentionBackward(dq: dq, dPromptKeys: wantKV ? kb.baseAddress : nil,
                                                            dPromptValues: wantKV ? vb.baseAddress : nil,
                                                            dGate: rawGate == nil ? nil : dGate, dNewGate: dNewGate, dOut: dOut,
                                                            q: q, promptKeys: prompt.keys, promptValues: prompt.values, probs: pp,
                                                            gate: g.baseAddress!, newGate: ad?.newGate, T: Ti, L: L,
                                                            nHeads: c.nHeads, nKVHeads: c.nKVHeads, headDim: c.headDim, pool: pool)
                        }
                    }
                }
                if wantKV, let source {
                    var d = [Float](repeating: 0, count: wantSource ? L * dim : 0)
                    var ek = ad?.wk, ev = ad?.wv
                    ek?.loraA = nil; ek?.loraB = nil; ev?.loraA = nil; ev?.loraB = nil
                    source.withUnsafeBufferPointer { src in
                        d.withUnsafeMutableBufferPointer { db in
                            dpk.withUnsafeBufferPointer { kb in
                                linearExtrasBackward(dInp: wantSource ? db.baseAddress : nil, dOut: kb.baseAddress!, inp: src.baseAddress!,
                                                     preScale: nil, weight: w.wk, baseBias: w.biases[.wk], extras: ek,
                                                     params: slot(.wk).withoutLoRA, active: active, T: L, pool: pool)
                            }
                            dpv.withUnsafeBufferPointer { vb in
                                linearExtrasBackward(dInp: wantSource ? db.baseAddress : nil, dOut: vb.baseAddress!, inp: src.baseAddress!,
                                                     preScale: nil, weight: w.wv, baseBias: w.biases[.wv], extras: ev,
                                                     params: slot(.wv).withoutLoRA, active: active, T: L, pool: pool)
                            }
                        }
                    }
                    if wantSource { dSources[i][l] = d }
                }
            }
            ropeBackward(dq, T: Ti, nHeads: c.nHeads, headDim: c.headDim, startPos: 0, table: model.rope)
            ropeBackward(dk, T: Ti, nHeads: c.nKVHeads, headDim: c.headDim, startPos: 0, table: model.rope)
        }
        s.dn.initialize(repeating: 0, count: T * dim)
        let trainsNorm = lp.attentionNorm?.gradient(active: active) != nil
        let needN = needInput || trainsNorm
        let qkvNeedsGrad = needN || [LinearSlot.wq, .wk, .wv].contains { slotTrains(slot($0)) }
        if qkvNeedsGrad {
            let dn: UnsafeMutablePointer<Float>? = needN ? s.dn : nil
            linearExtrasBackward(dInp: dn, dOut: s.dq, inp: rec.attnNormed, preScale: rec.preScale[.wq], weight: w.wq, baseBias: w.biases[.wq],
                                 extras: ad?.wq, params: slot(.wq), active: active, T: T, pool: pool)
            linearExtrasBackward(dInp: dn, dOut: s.dk, inp: rec.attnNormed, preScale: rec.preScale[.wk], weight: w.wk, baseBias: w.biases[.wk],
                                 extras: ad?.wk, params: slot(.wk), active: active, T: T, pool: pool)
            linearExtrasBackward(dInp: dn, dOut: s.dv, inp: rec.attnNormed, preScale: rec.preScale[.wv], weight: w.wv, baseBias: w.biases[.wv],
                                 extras: ad?.wv, params: slot(.wv), active: active, T: T, pool: pool)
        }
        if needN {
            rmsnormBackward(dInp: s.dx, dWeight: lp.attentionNorm?.gradient(active: active), dOut: s.dn, inp: rec.inp,
                            weight: (ad?.attentionNorm ?? w.attentionNorm).floats, T: T, C: dim, eps: c.normEps)
        }
    }

    private func slotTrains(_ p: LinearParams) -> Bool {
        [p.bias, p.scale, p.loraA, p.loraB].contains { q in q.map { $0.group.map(active.contains) ?? false } ?? false }
    }

    /// The lowest block whose parameters (or prompt sources) are trained in `active`: the backward stops there.
    static func lowestTrainedLayer(params: ParameterMap, active: Set<Int>, promptLayers: [Bool], sourcesTrained: Bool) -> Int {
        func trained(_ p: Parameter?) -> Bool { p?.group.map(active.contains) ?? false }
        for (l, lp) in params.layers.enumerated() {
            if lp.all.contains(where: trained) { return l }
            if sourcesTrained && promptLayers[l] { return l }
        }
        return params.layers.count
    }
}

/// Backward of the visual branch (LlamaModel.visualQuery) for one image, from the gradient of its output
/// visual query [queryLen, dim]. CLIP is frozen, so nothing flows further down.
func visualBackward(model: LlamaModel, record rec: VisualRecord, dQuery: UnsafePointer<Float>, params vp: VisualParams,
                    active: Set<Int>) {
    guard let a = model.adapter, let v = a.visual, let feats = rec.features else { return }
    let vd = a.config.vEmbedDim, ql = a.config.queryLen, n = rec.n, T = ql + n, dim = model.config.dim, pool = model.pool
    func g(_ p: Parameter?) -> UnsafeMutablePointer<Float>? { p?.gradient(active: active) }
    let dvp = UnsafeMutablePointer<Float>.allocate(capacity: ql * dim)
    let dx = UnsafeMutablePointer<Float>.allocate(capacity: T * vd)
    let dproj = UnsafeMutablePointer<Float>.allocate(capacity: n * vd)
    defer { dvp.deallocate(); dx.deallocate(); dproj.deallocate() }
    dvp.initialize(repeating: 0, count: ql * dim)
    dx.initialize(repeating: 0, count: T * vd)
    dproj.initialize(repeating: 0, count: n * vd)
    layerNormBackward(dInp: dvp, dWeight: g(vp.visualProjNormW), dBias: g(vp.visualProjNormB), dOut: dQuery, inp: rec.visualProjected,
                      weight: v.visualProjNormWeight.floats, T: ql, C: dim, eps: 1e-5)
    linearBackward(dInp: dx, dWeight: g(vp.visualProjW), dBias: g(vp.visualProjB), dOut: dvp, inp: rec.blocksOut,
                   weight: v.visualProjWeight, T: ql, pool: pool)
    for i in stride(from: v.blocks.count - 1, through: 0, by: -1) {
        encoderBlockBackward(dx: dx, record: rec.blocks[i], block: v.blocks[i], params: vp.blocks[i], active: active, pool: pool)
    }
    if let dq = g(vp.visualQuery) { addInPlace(dq, dx, ql * vd) }
    let wantsProj = [vp.clipProjW, vp.clipProjB, vp.clipProjNormW, vp.clipProjNormB].contains { $0?.group.map(active.contains) ?? false }
    guard wantsProj else { return }
    layerNormBackward(dInp: dproj, dWeight: g(vp.clipProjNormW), dBias: g(vp.clipProjNormB), dOut: dx + ql * vd, inp: rec.projected,
                      weight: v.clipProjNormWeight.floats, T: n, C: vd, eps: 1e-5)
    linearBackward(dInp: nil, dWeight: g(vp.clipProjW), dBias: g(vp.clipProjB), dOut: dproj, inp: feats.floats,
                   weight: v.clipProjWeight, T: n, pool: pool)
}

/// Backward of `encoderBlockForward` (timm/CLIP pre-norm block), in place on dx [T, dim]: d(output) in,
/// d(input) out.
func encoderBlockBackward(dx: UnsafeMutablePointer<Float>, record rec: EncoderBlockRecord, block w: EncoderBlockWeights,
                          params p: VisualParams.Block, active: Set<Int>, pool: ThreadPool) {
    let T = rec.T, d = w.dim, h = w.hidden, heads = w.heads
    func g(_ q: Parameter?) -> UnsafeMutablePointer<Float>? { q?.gradient(active: active) }
    let buf = UnsafeMutablePointer<Float>.allocate(capacity: 2 * T * h + 5 * T * d)
    defer { buf.deallocate() }
    buf.initialize(repeating: 0, count: 2 * T * h + 5 * T * d)
    let dact = buf, dpre = buf + T * h, dn = buf + 2 * T * h, datt = dn + T * d, dqkv = datt + T * d
    linearBackward(dInp: dact, dWeight: g(p.fc2W), dBias: g(p.fc2B), dOut: dx, inp: rec.act, weight: w.fc2Weight, T: T, pool: pool)
    switch w.activation {
    case .gelu: geluBackward(dInp: dpre, dOut: dact, inp: rec.pre, n: T * h)
    case .quickGelu: quickGeluBackward(dInp: dpre, dOut: dact, inp: rec.pre, n: T * h)
    case .geluTanh: preconditionFailure("the adapter's visual blocks use exact GELU")
    }
    linearBackward(dInp: dn, dWeight: g(p.fc1W), dBias: g(p.fc1B), dOut: dpre, inp: rec.ln2, weight: w.fc1Weight, T: T, pool: pool)
    layerNormBackward(dInp: dx, dWeight: g(p.ln2W), dBias: g(p.ln2B), dOut: dn, inp: rec.mid, weight: w.ln2Weight.floats, T: T, C: d, eps: w.eps)
    linearBackward(dInp: datt, dWeight: g(p.projW), dBias: g(p.projB), dOut: dx, inp: rec.att, weight: w.projWeight, T: T, pool: pool)
    attentionBackward(dq: dqkv, dk: dqkv + d, dv: dqkv + 2 * d, dOut: datt, q: rec.qkv, k: rec.qkv + d, v: rec.qkv + 2 * d,
                      probs: rec.probs, qStride: 3 * d, kvStride: 3 * d, causal: false, T: T, nHeads: heads, nKVHeads: heads,
                      headDim: d / heads, pool: pool)
    dn.initialize(repeating: 0, count: T * d)
    linearBackward(dInp: dn, dWeight: g(p.qkvW), dBias: g(p.qkvB), dOut: dqkv, inp: rec.ln1, weight: w.qkvWeight, T: T, pool: pool)
    layerNormBackward(dInp: dx, dWeight: g(p.ln1W), dBias: g(p.ln1B), dOut: dn, inp: rec.inp, weight: w.ln1Weight.floats, T: T, C: d, eps: w.eps)
}
