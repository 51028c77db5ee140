// DINOv2 (Oquab et al. 2023) and SigLIP (Zhai et al. 2023) vision towers as transformers' `Dinov2Model` and
// `SiglipVisionModel` compute `last_hidden_state`: patch embedding (a strided conv with bias), DINOv2's class
// token, position embeddings (DINOv2's resized bicubically to the input's patch grid), pre-norm blocks
// (DINOv2 with LayerScale and exact GELU, SigLIP with tanh GELU), then a final LayerNorm on every token.
import Foundation
import AdapterCore
import AdapterFormats

/// A DINOv2 or SigLIP tower bound from a Hugging Face folder, with the folder's image transform.
public struct ViTEncoder: VisionEncoder, @unchecked Sendable {
    public let family: VisionFamily
    public var preprocessor: ImagePreprocessor
    public let patchSize: Int
    /// Patch embedding as a linear map [width, 3·p·p] (the conv kernel flattened c, ky, kx) and its bias.
    public let patchEmbedding: Tensor, patchBias: Tensor
    /// DINOv2's class token [width]; nil for SigLIP.
    public let classToken: Tensor?
    /// Stored position embeddings [(1 +) gridH·gridW, width], the class position first when there is a class token.
    public let positions: Tensor
    /// The patch grid `positions` was trained for (rows, columns).
    public let storedGrid: (rows: Int, cols: Int)
    /// Encoder blocks.
    public let blocks: [EncoderBlockWeights]
    /// Final LayerNorm (DINOv2 `layernorm`, SigLIP `post_layernorm`) and its epsilon.
    public let finalNormWeight: Tensor, finalNormBias: Tensor, finalEps: Float

    /// Width of the tower, which is also the feature width.
    public var outputDim: Int { patchEmbedding.shape[0] }

    /// Binds a transformers `Dinov2Model` state dict (`embeddings.*`, `encoder.layer.N.*`, `layernorm.*`).
    static func dinov2(_ s: TensorSource, config c: VisionConfig, preprocessor: ImagePreprocessor, source: String) throws -> ViTEncoder {
        let get = getter(s, source: source, what: "DINOv2")
        if c.useSwiGLU == true { throw AdapterError.unsupported("\(source): DINOv2 with use_swiglu_ffn (the giant model) is not supported") }
        if let a = c.hiddenAct, a != "gelu" { throw AdapterError.unsupported("\(source): DINOv2 hidden_act '\(a)' is not supported (gelu)") }
        guard let heads = c.heads else { throw AdapterError.format("\(source): config.json has no num_attention_heads") }
        let eps = Float(c.eps ?? 1e-6)
        let (patch, patchW, width) = try bindPatchEmbedding(get("embeddings.patch_embeddings.projection.weight"), source: source)
        let pos = try get("embeddings.position_embeddings").toF32()
        let grid = try squareGrid(rows: pos.count / max(width, 1) - 1, source: source, name: "embeddings.position_embeddings")
        guard pos.count == (grid * grid + 1) * width else {
            throw AdapterError.shape("\(source): embeddings.position_embeddings has shape \(pos.shape), expected [1, grid²+1, \(width)]")
        }
        var blocks: [EncoderBlockWeights] = []
        while s.contains("encoder.layer.\(blocks.count).norm1.weight") {
            let p = "encoder.layer.\(blocks.count)."
            let a = p + "attention.attention."
            let qkvW = try concatRows([get(a + "query.weight"), get(a + "key.weight"), get(a + "value.weight")])
            let qkvB = c.qkvBias == false ? nil : try concatRows([get(a + "query.bias"), get(a + "key.bias"), get(a + "value.bias")])
            var b = EncoderBlockWeights(
                ln1Weight: try get(p + "norm1.weight").toF32(), ln1Bias: try get(p + "norm1.bias").toF32(), qkvWeight: qkvW, qkvBias: qkvB,
                projWeight: try get(p + "attention.output.dense.weight"), projBias: try get(p + "attention.output.dense.bias").toF32(),
                ln2Weight: try get(p + "norm2.weight").toF32(), ln2Bias: try get(p + "norm2.bias").toF32(),
                fc1Weight: try get(p + "mlp.fc1.weight"), fc1Bias: try get(p + "mlp.fc1.bias").toF32(),
                fc2Weight: try get(p + "mlp.fc2.weight"), fc2Bias: try get(p + "mlp.fc2.bias").toF32(),
                heads: heads, activation: .gelu, eps: eps)
            b.layerScale1 = try get(p + "layer_scale1.lambda1").toF32()
            b.layerScale2 = try get(p + "layer_scale2.lambda1").toF32()
            try b.validate("\(source): DINOv2 layer \(blocks.count)")
            blocks.append(b)
        }
        try checkLayers(blocks, config: c, width: width, source: source)
        let e = ViTEncoder(family: .dinov2, preprocessor: preprocessor, patchSize: patch, patchEmbedding: patchW,
                           patchBias: try get("embeddings.patch_embeddings.projection.bias").toF32(),
                           classToken: try get("embeddings.cls_token").toF32(), positions: try pos.reshaped([grid * grid + 1, width]),
                           storedGrid: (grid, grid), blocks: blocks, finalNormWeight: try get("layernorm.weight").toF32(),
                           finalNormBias: try get("layernorm.bias").toF32(), finalEps: eps)
        try e.validate(source)
        try checkUnused(s, used: ["embeddings.", "encoder.layer.", "layernorm."], allowed: ["embeddings.mask_token"], source: source)
        return e
    }

    /// Binds a transformers `SiglipVisionModel` / `SiglipModel` state dict (`vision_model.*`; the text tower and the
    /// attention-pooling head are not part of `last_hidden_state` and are left alone).
    static func siglip(_ s: TensorSource, config c: VisionConfig, preprocessor: ImagePreprocessor, source: String) throws -> ViTEncoder {
        let get = getter(s, source: source, what: "SigLIP")
        guard let heads = c.heads else { throw AdapterError.format("\(source): config.json has no num_attention_heads") }
        let act: MLPActivation
        switch c.hiddenAct ?? "gelu_pytorch_tanh" {
        case "gelu_pytorch_tanh", "gelu_new", "gelu_fast": act = .geluTanh
        case "gelu": act = .gelu
        case let a: throw AdapterError.unsupported("\(source): SigLIP hidden_act '\(a)' is not supported")
        }
        let eps = Float(c.eps ?? 1e-6)
        let m = "vision_model."
        let (patch, patchW, width) = try bindPatchEmbedding(get(m + "embeddings.patch_embedding.weight"), source: source)
        let pos = try get(m + "embeddings.position_embedding.weight").toF32()
        let grid = try squareGrid(rows: pos.count / max(width, 1), source: source, name: "position_embedding")
        guard pos.shape == [grid * grid, width] else {
            throw AdapterError.shape("\(source): position_embedding has shape \(pos.shape), expected [grid², \(width)]")
        }
        var blocks: [EncoderBlockWeights] = []
        while s.contains(m + "encoder.layers.\(blocks.count).layer_norm1.weight") {
            let p = m + "encoder.layers.\(blocks.count)."
            let a = p + "self_attn."
            let b = EncoderBlockWeights(
                ln1Weight: try get(p + "layer_norm1.weight").toF32(), ln1Bias: try get(p + "layer_norm1.bias").toF32(),
                qkvWeight: try concatRows([get(a + "q_proj.weight"), get(a + "k_proj.weight"), get(a + "v_proj.weight")]),
                qkvBias: try concatRows([get(a + "q_proj.bias"), get(a + "k_proj.bias"), get(a + "v_proj.bias")]),
                projWeight: try get(a + "out_proj.weight"), projBias: try get(a + "out_proj.bias").toF32(),
                ln2Weight: try get(p + "layer_norm2.weight").toF32(), ln2Bias: try get(p + "layer_norm2.bias").toF32(),
                fc1Weight: try get(p + "mlp.fc1.weight"), fc1Bias: try get(p + "mlp.fc1.bias").toF32(),
                fc2Weight: try get(p + "mlp.fc2.weight"), fc2Bias: try get(p + "mlp.fc2.bias").toF32(),
                heads: heads, activation: act, eps: eps)
            try b.validate("\(source): SigLIP layer \(blocks.count)")
            blocks.append(b)
        }
        try checkLayers(blocks, config: c, width: width, source: source)
        let e = ViTEncoder(family: .siglip, preprocessor: preprocessor, patchSize: patch, patchEmbedding: patchW,
                           patchBias: try get(m + "embeddings.patch_embedding.bias").toF32(), classToken: nil, positions: pos,
                           storedGrid: (grid, grid), blocks: blocks, finalNormWeight: try get(m + "post_layernorm.weight").toF32(),
                           finalNormBias: try get(m + "post_layernorm.bias").toF32(), finalEps: eps)
        try e.validate(source)
        try checkUnused(s, used: [m + "embeddings.", m + "encoder.layers.", m + "post_layernorm."],
                        allowed: [m + "head.", "text_model.", "logit_scale", "logit_bias", m + "embeddings.position_ids"], source: source)
        return e
    }

    /// Checks the parts against each other and the transform (so a bad file fails at load, not mid-request).
    func validate(_ source: String) throws {
        let w = outputDim
        guard patchBias.count == w, finalNormWeight.count == w, finalNormBias.count == w, classToken.map({ $0.count == w }) ?? true else {
            throw AdapterError.shape("\(source): embedding or final norm widths disagree with the patch embedding's \(w)")
        }
        for (i, b) in blocks.enumerated() where b.dim != w {
            throw AdapterError.shape("\(source): layer \(i) has width \(b.dim), the embeddings \(w)")
        }
        if let (h, wd) = preprocessor.fixedOutputSize {
            guard h % patchSize == 0 || family == .dinov2, wd % patchSize == 0 || family == .dinov2, h >= patchSize, wd >= patchSize else {
                throw AdapterError.shape("\(source): the image transform gives \(wd)x\(h) pixels, not a whole number of \(patchSize)-pixel patches")
            }
            if family == .siglip, (h / patchSize, wd / patchSize) != storedGrid {
                // transformers' SiglipVisionModel adds the stored table as is unless asked to interpolate.
                throw AdapterError.shape("\(source): the image transform gives \(wd)x\(h) pixels, but SigLIP's positions are for \(storedGrid.cols * patchSize)x\(storedGrid.rows * patchSize)")
            }
        }
    }

    public func encode(_ pixels: Tensor, pool: ThreadPool) throws -> Tensor {
        guard pixels.shape.count == 3, pixels.shape[0] == 3 else {
            throw AdapterError.shape("image tensor has shape \(pixels.shape), expected [3, height, width]")
        }
        let H = pixels.shape[1], W = pixels.shape[2], p = patchSize, width = outputDim
        // Conv2d with stride p drops the pixels past the last whole patch, as DINOv2's does.
        let gh = H / p, gw = W / p
        guard gh > 0, gw > 0 else { throw AdapterError.shape("image of \(W)x\(H) pixels is smaller than one \(p)-pixel patch") }
        if family == .siglip, (gh, gw) != storedGrid {
            throw AdapterError.shape("SigLIP expects \(storedGrid.cols * p)x\(storedGrid.rows * p) pixels, got \(W)x\(H)")
        }
        let nPatch = gh * gw, extra = classToken == nil ? 0 : 1, T = nPatch + extra
        let x = Tensor(zeros: [T, width])
        let xp = x.floats
        let f32 = pixels.toF32()
        let patches = withExtendedLifetime(f32) { patchRows(f32.floats, height: H, width: W, patch: p) }
        defer { patches.deallocate() }
        linearForward(out: xp + extra * width, inp: patches, weight: patchEmbedding, bias: patchBias.floats, T: nPatch, pool: pool)
        if let cls = classToken { xp.update(from: cls.floats, count: width) }
        let table = try visionPositionTable(table: positions, storedGrid: storedGrid, hasClass: extra == 1, toGrid: (gh, gw))
        addInPlace(xp, table.floats, T * width)
        for b in blocks { encoderBlockForward(xp, T: T, block: b, pool: pool) }
        layerNormForward(out: xp, inp: xp, weight: finalNormWeight.floats, bias: finalNormBias.floats, T: T, C: width, eps: finalEps)
        return x
    }
}

/// The position embeddings a tower adds for a `toGrid` patch grid: the stored `[(1 +) rows·cols, C]` table as is
/// when the grids agree, else its grid part resized as PyTorch's bicubic `interpolate` does (the class row kept),
/// which is what transformers' DINOv2 `interpolate_pos_encoding` computes.
public func visionPositionTable(table: Tensor, storedGrid: (rows: Int, cols: Int), hasClass: Bool,
                                toGrid: (rows: Int, cols: Int)) throws -> Tensor {
    let extra = hasClass ? 1 : 0
    guard table.shape.count == 2, table.shape[0] == storedGrid.rows * storedGrid.cols + extra, toGrid.rows > 0, toGrid.cols > 0 else {
        throw AdapterError.shape("position table of shape \(table.shape) is not a \(storedGrid.rows)x\(storedGrid.cols) grid")
    }
    if toGrid == storedGrid { return table.toF32() }
    let C = table.shape[1]
    let src = table.toF32()
    let out = Tensor(zeros: [toGrid.rows * toGrid.cols + extra, C])
    withExtendedLifetime(src) {
        out.floats.update(from: src.floats, count: extra * C)
        let resized = bicubicResizeGrid(src.floats + extra * C, rows: storedGrid.rows, cols: storedGrid.cols, channels: C,
                                        toRows: toGrid.rows, toCols: toGrid.cols)
        (out.floats + extra * C).update(from: resized, count: toGrid.rows * toGrid.cols * C)
        resized.deallocate()
    }
    return out
}

/// `[3, H, W]` image -> one row per patch (row-major over the `H/p` x `W/p` grid) of `3·p·p` pixels in the conv
/// kernel's (c, ky, kx) order, so the patch embedding is one matrix product. The caller deallocates.
func patchRows(_ img: UnsafePointer<Float>, height H: Int, width W: Int, patch p: Int) -> UnsafeMutablePointer<Float> {
    let gh = H / p, gw = W / p, K = 3 * p * p
    let patches = UnsafeMutablePointer<Float>.allocate(capacity: max(gh * gw * K, 1))
    for gy in 0..<gh { for gx in 0..<gw {
        let row = patches + (gy * gw + gx) * K
        var k = 0
        for c in 0..<3 { for ky in 0..<p { for kx in 0..<p {
            row[k] = img[c * H * W + (gy * p + ky) * W + gx * p + kx]
            k += 1
        } } }
    } }
    return patches
}

/// PyTorch's `interpolate(mode="bicubic", align_corners=False)` without antialias, `size=(toRows, toCols)`, on a
/// grid stored row-major with `channels` values per cell: source coordinate `(dst + 0.5)·in/out − 0.5`, Keys
/// cubic with A = −0.75, the four taps clamped to the edge. transformers resizes DINOv2's position table this
/// way when the patch grid differs from the stored one. Returns `[toRows·toCols, channels]`; the caller deallocates.
func bicubicResizeGrid(_ src: UnsafePointer<Float>, rows: Int, cols: Int, channels C: Int, toRows: Int, toCols: Int) -> UnsafeMutablePointer<Float> {
    func taps(_ inSize: Int, _ outSize: Int) -> [(index: [Int], weight: [Float])] {
        let scale = Float(inSize) / Float(outSize)
        let A: Float = -0.75
        func near(_ x: Float) -> Float { ((A + 2) * x - (A + 3)) * x * x + 1 }
        func far(_ x: Float) -> Float { ((A * x - 5 * A) * x + 8 * A) * x - 4 * A }
        return (0..<outSize).map { o in
            let real = scale * (Float(o) + 0.5) - 0.5
            let i0 = Int(real.rounded(.down))
            let t = real - Float(i0)
            let w: [Float] = [far(t + 1), near(t), near(1 - t), far(2 - t)]
            return ((0..<4).map { min(max(i0 - 1 + $0, 0), inSize - 1) }, w)
        }
    }
    let ty = taps(rows, toRows), tx = taps(cols, toCols)
    let out = UnsafeMutablePointer<Float>.allocate(capacity: max(toRows * toCols * C, 1))
    out.initialize(repeating: 0, count: toRows * toCols * C)
    var rowTmp = [Float](repeating: 0, count: C)
    for oy in 0..<toRows { for ox in 0..<toCols {
        let dst = out + (oy * toCols + ox) * C
        for j in 0..<4 {
            // Inner interpolation along the columns, then weighted along the rows, as ATen nests them.
            for c in 0..<C { rowTmp[c] = 0 }
            let r = ty[oy].index[j]
            for i in 0..<4 {
                let cell = src + (r * cols + tx[ox].index[i]) * C, w = tx[ox].weight[i]
                for c in 0..<C { rowTmp[c] += cell[c] * w }
            }
            let wy = ty[oy].weight[j]
            for c in 0..<C { dst[c] += rowTmp[c] * wy }
        }
    } }
    return out
}

// MARK: - Binding helpers

private func getter(_ s: TensorSource, source: String, what: String) -> (String) throws -> Tensor {
    { name in
        guard s.contains(name) else { throw AdapterError.format("\(source): missing \(what) tensor '\(name)'") }
        return try s.tensor(name)
    }
}

/// A conv patch embedding [width, 3, p, p] as (p, [width, 3·p·p], width).
private func bindPatchEmbedding(_ conv: Tensor, source: String) throws -> (Int, Tensor, Int) {
    guard conv.shape.count == 4, conv.shape[0] > 0, conv.shape[1] == 3, conv.shape[2] > 0, conv.shape[2] == conv.shape[3], conv.shape[2] <= 64 else {
        throw AdapterError.shape("\(source): patch embedding has shape \(conv.shape), expected [width, 3, p, p]")
    }
    return (conv.shape[2], try conv.reshaped([conv.shape[0], 3 * conv.shape[2] * conv.shape[2]]), conv.shape[0])
}

private func squareGrid(rows: Int, source: String, name: String) throws -> Int {
    let g = Int(Double(max(rows, 0)).squareRoot().rounded())
    guard g > 0, g * g == rows else { throw AdapterError.shape("\(source): \(name) has \(rows) grid positions, not a square number") }
    return g
}

private func checkLayers(_ blocks: [EncoderBlockWeights], config c: VisionConfig, width: Int, source: String) throws {
    guard !blocks.isEmpty else { throw AdapterError.format("\(source): no encoder layers") }
    if let n = c.layers, n != blocks.count { throw AdapterError.shape("\(source): config.json says \(n) layers, the weights have \(blocks.count)") }
    if let h = c.hiddenSize, h != width { throw AdapterError.shape("\(source): config.json says hidden_size \(h), the weights have \(width)") }
    if let n = c.numChannels, n != 3 { throw AdapterError.unsupported("\(source): num_channels \(n) is not supported (3)") }
}

/// A tensor under the model's prefixes that no part bound is an error (a newer layout would otherwise be
/// ignored silently); `allowed` prefixes are known and unused.
private func checkUnused(_ s: TensorSource, used: [String], allowed: [String], source: String) throws {
    for name in s.tensorNames where !allowed.contains(where: { name.hasPrefix($0) }) {
        guard used.contains(where: { name.hasPrefix($0) }) else {
            throw AdapterError.unsupported("\(source): tensor '\(name)' is not used by this encoder")
        }
    }
}
