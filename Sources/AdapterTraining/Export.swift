// `export`: a text-only adapter folded into a GGUF that llama.cpp's LLaMA loader runs unchanged. Eq. 1
// y = s ⊙ (W x + b) becomes W' = diag(s) W and b' = s ⊙ b; biases go into the optional `attn_q.bias`,
// `attn_output.bias`, `ffn_gate.bias`, `ffn_down.bias`, `ffn_up.bias` tensors llama.cpp's LLaMA loader
// accepts; trained norms replace the base's. What llama.cpp cannot express is refused.
import Foundation
import AdapterCore
import AdapterFormats
import AdapterModel

/// What an export did.
public struct ExportReport: Sendable {
    /// Weight matrices whose rows were scaled.
    public var scaledMatrices = 0
    /// Of those, matrices whose scaling is rounded (block scales or f16/bf16 values re-rounded): not bit-exact.
    public var roundedMatrices = 0
    /// Matrices with LoRA merged (W + B·A, written as f16, or f32 for an f32 base: a merged matrix is no longer
    /// the stored quantization).
    public var loraMerged = 0
    /// Bias tensors added.
    public var biases = 0
    /// Norm weights replaced.
    public var norms = 0
}

/// Folds `adapter` into the GGUF model at `basePath` and writes the result to `out`.
public func exportMergedGGUF(basePath: String, adapter a: AdapterWeights, to out: String) throws -> ExportReport {
    guard try FileFormat.detect(path: basePath) == .gguf else {
        throw AdapterError.unsupported("export needs a .gguf base model (convert it with llama.cpp's convert_hf_to_gguf.py first): \(basePath)")
    }
    let file = try GGUFFile(path: basePath)
    let loaded = try ModelLoader.load(path: basePath)
    let c = loaded.model.config
    guard a.layers.count == c.nLayers else { throw AdapterError.shape("\(a.path): adapter has \(a.layers.count) layers, the model \(c.nLayers)") }
    if a.visual != nil {
        throw AdapterError.unsupported("\(a.path) has a visual branch; llama.cpp's LLaMA has no place for it (export text-only adapters: bias, scale, norms)")
    }
    if let q = a.adapterQuery, a.layers.contains(where: { l in l.gate.map { g in (0..<g.count).contains { g.floats[$0] != 0 } } ?? false }) {
        throw AdapterError.unsupported("\(a.path) has gated adaption prompts (\(q.shape[0]) adapter_query tokens, non-zero gates); llama.cpp cannot express them")
    }
    let slots: [(LinearSlot, String, WritableKeyPath<LayerAdapter, LinearExtras>)] = [
        (.wq, "attn_q", \.wq), (.wk, "attn_k", \.wk), (.wv, "attn_v", \.wv), (.wo, "attn_output", \.wo),
        (.w1, "ffn_gate", \.w1), (.w2, "ffn_down", \.w2), (.w3, "ffn_up", \.w3)]
    var byName: [String: (Int, LinearSlot, LinearExtras)] = [:]
    for (i, l) in a.layers.enumerated() {
        for (slot, name, kp) in slots { byName["blk.\(i).\(name).weight"] = (i, slot, l[keyPath: kp]) }
    }
    var report = ExportReport()
    var entries: [GGUFWriter.Entry] = []
    var extra: [GGUFWriter.Entry] = []
    func raw(_ t: Tensor) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: t.data, count: t.byteCount) }
    func f32Entry(_ name: String, _ values: [Float]) -> GGUFWriter.Entry {
        let t = Tensor(values, shape: [values.count])
        return GGUFWriter.Entry(name: name, dtype: .f32, shape: [values.count], bytes: raw(t), owner: t.storage)
    }
    for info in file.tensorInfos {
        let t = try file.tensor(info.name)
        var entry = GGUFWriter.Entry(name: info.name, dtype: t.dtype, shape: t.shape, bytes: raw(t), owner: t.storage)
        if let (layer, slot, e) = byName[info.name] {
            let N = t.shape[0]
            if file.contains("blk.\(layer).\(slots.first { $0.0 == slot }!.1).bias") {
                throw AdapterError.unsupported("\(basePath) already has a bias for \(info.name); folding another into it is not supported")
            }
            if e.scaleOnInput, e.scale != nil {
                throw AdapterError.unsupported("\(a.path): input-side scales (the 65B chat format) scale weight columns, which block-quantized rows cannot hold exactly")
            }
            let scales = e.scale.map { Array(UnsafeBufferPointer(start: $0.floats, count: N)) }
            if let la = e.loraA, let lb = e.loraB {
                let merged = try mergeLoRA(t, scale: e.scale, loraA: la, loraB: lb)
                entry = GGUFWriter.Entry(name: info.name, dtype: merged.dtype, shape: merged.shape, bytes: raw(merged), owner: merged.storage)
                report.loraMerged += 1
            } else if let scales, scales.contains(where: { $0 != 1 }) {
                let (scaled, rounded) = try scaleRows(t, by: scales)
                entry = GGUFWriter.Entry(name: info.name, dtype: t.dtype, shape: t.shape, bytes: raw(scaled), owner: scaled.storage)
                report.scaledMatrices += 1
                if rounded { report.roundedMatrices += 1 }
            }
            // b' = s ⊙ b (the scale multiplies the bias too).
            var bias = e.bias.map { Array(UnsafeBufferPointer(start: $0.floats, count: N)) }
            if let scales, bias != nil { for i in 0..<N { bias![i] *= scales[i] } }
            if let bias, bias.contains(where: { $0 != 0 }) || e.scale != nil {
                extra.append(f32Entry(info.name.replacingOccurrences(of: ".weight", with: ".bias"), bias))
                report.biases += 1
            }
        } else if info.name.hasSuffix("attn_norm.weight") || info.name.hasSuffix("ffn_norm.weight") || info.name == "output_norm.weight" {
            let parts = info.name.split(separator: ".")
            let norm: Tensor?
            if info.name == "output_norm.weight" { norm = a.norm }
            else if let i = Int(parts[1]) { norm = info.name.hasSuffix("attn_norm.weight") ? a.layers[i].attentionNorm : a.layers[i].ffnNorm }
            else { norm = nil }
            if let norm {
                entry = f32Entry(info.name, Array(UnsafeBufferPointer(start: norm.floats, count: norm.count)))
                report.norms += 1
            }
        }
        entries.append(entry)
    }
    try GGUFWriter.write(to: out, metadataFrom: file, tensors: entries + extra)
    return report
}

/// Rows of `t` [N, K] multiplied by `s` [N] in `t`'s dtype. f32 multiplies values; f16/bf16 re-round them;
/// block types scale each block's f16 scale (and min) fields, since a row is a run of whole blocks. Returns the
/// new tensor and whether the result is rounded rather than exact.
func scaleRows(_ t: Tensor, by s: [Float]) throws -> (Tensor, Bool) {
    let N = t.shape[0], K = t.shape[1]
    let out = Tensor(uninitialized: t.shape, dtype: t.dtype)
    out.mutableData.copyMemory(from: t.data, byteCount: t.byteCount)
    let rowBytes = t.dtype.byteCount(elements: K)
    let base = out.mutableData.assumingMemoryBound(to: UInt8.self)
    func scaleHalf(_ p: UnsafeMutablePointer<UInt8>, _ f: Float) {
        let h = UInt16(p[0]) | UInt16(p[1]) << 8
        let v = ggmlFloatToHalf(ggmlHalfToFloat(h) * f)
        p[0] = UInt8(v & 0xFF); p[1] = UInt8(v >> 8)
    }
    switch t.dtype {
    case .f32:
        let p = out.floats
        for r in 0..<N { for k in 0..<K { p[r * K + k] *= s[r] } }
        return (out, false)
    case .f16, .bf16:
        var row = [Float](repeating: 0, count: K)
        for r in 0..<N {
            let src = base + r * rowBytes
            try row.withUnsafeMutableBufferPointer { b in
                convertToFloat(dtype: t.dtype, src: src, dst: b.baseAddress!, count: K)
                for k in 0..<K { b[k] *= s[r] }
                try quantize(dtype: t.dtype, src: b.baseAddress!, dst: src, count: K)
            }
        }
        return (out, true)
    default:
        let bb = t.dtype.blockBytes, blocks = K / t.dtype.blockSize
        // Byte offsets of the f16 fields that multiply a block's values.
        let fields: [Int]
        switch t.dtype {
        case .q8_0, .q4_0: fields = [0]
        case .q4_1, .q4_K, .q5_K: fields = [0, 2]
        case .q6_K: fields = [208]
        default: throw AdapterError.unsupported("cannot scale rows of \(t.dtype.rawValue)")
        }
        for r in 0..<N {
            for b in 0..<blocks {
                let p = base + r * rowBytes + b * bb
                for f in fields { scaleHalf(p + f, s[r]) }
            }
        }
        return (out, true)
    }
}

/// diag(s)·W + B·A for a frozen W [N, K] of any dtype, LoRA A [r, K] and B [N, r]; f16 result (f32 for an f32 W).
func mergeLoRA(_ w: Tensor, scale: Tensor?, loraA: Tensor, loraB: Tensor) throws -> Tensor {
    let N = w.shape[0], K = w.shape[1], r = loraA.shape[0]
    let f = Tensor(zeros: [N, K])
    convertToFloat(dtype: w.dtype, src: w.data, dst: f.floats, count: N * K)
    if let scale { for n in 0..<N { for k in 0..<K { f.floats[n * K + k] *= scale.floats[n] } } }
    BLAS.gemmAB(m: N, n: K, k: r, a: loraB.floats, lda: r, b: loraA.floats, ldb: K, c: f.floats, ldc: K, beta: 1)
    if w.dtype == .f32 { return f }
    let out = Tensor(uninitialized: [N, K], dtype: .f16)
    try quantize(dtype: .f16, src: f.floats, dst: out.mutableData, count: N * K)
    return out
}
