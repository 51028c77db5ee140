// The CLIP ViT visual tower (Radford et al. 2021) as LLaMA-Adapter V2 uses it: `clip_encode_image` in the
// official llama_adapter.py keeps ALL tokens (class + patches) through ln_post and proj, where stock CLIP
// keeps only the class token.
import Foundation
import AdapterCore
import AdapterFormats

/// Weights of a CLIP visual tower, bound from OpenAI names (`visual.conv1.weight`, ...) or Hugging Face
/// `CLIPVisionModelWithProjection` names.
public struct CLIPVisionWeights: @unchecked Sendable {
    /// Patch embedding as a linear map [width, 3*patch*patch] (conv1 without bias, flattened c, ky, kx).
    public var patchEmbedding: Tensor
    /// Class token [width], f32.
    public var classEmbedding: Tensor
    /// Position embeddings [tokens, width], f32.
    public var positionalEmbedding: Tensor
    /// ln_pre weight/bias.
    public var lnPreWeight: Tensor, lnPreBias: Tensor
    /// Residual attention blocks.
    public var blocks: [EncoderBlockWeights]
    /// ln_post weight/bias.
    public var lnPostWeight: Tensor, lnPostBias: Tensor
    /// Output projection as a linear weight [outDim, width] (OpenAI stores `proj` as [width, outDim]).
    public var projection: Tensor?
    /// Patch size in pixels.
    public var patchSize: Int
    /// Input resolution in pixels.
    public var imageSize: Int

    /// Width of the tower.
    public var width: Int { classEmbedding.count }
    /// Width of the output features (after the projection).
    public var outputDim: Int { projection?.shape[0] ?? width }
    /// Tokens produced per image (patches + class token).
    public var tokenCount: Int { positionalEmbedding.shape[0] }

    /// Binds OpenAI CLIP names (`visual.*`); `prefix` is usually "visual.".
    public static func openAI(_ s: TensorSource, prefix: String = "visual.", source: String) throws -> CLIPVisionWeights {
        func get(_ n: String) throws -> Tensor {
            guard s.contains(prefix + n) else { throw AdapterError.format("\(source): missing CLIP tensor '\(prefix + n)'") }
            return try s.tensor(prefix + n)
        }
        let conv = try get("conv1.weight")
        guard conv.shape.count == 4, conv.shape[0] > 0, conv.shape[1] == 3, conv.shape[2] > 0, conv.shape[2] == conv.shape[3] else {
            throw AdapterError.shape("\(source): \(prefix)conv1.weight has shape \(conv.shape), expected [width, 3, p, p]")
        }
        let width = conv.shape[0], patch = conv.shape[2]
        let pos = try get("positional_embedding").toF32()
        guard pos.shape.count == 2, pos.shape[0] >= 2, pos.shape[0] <= 1 << 20 else {
            throw AdapterError.shape("\(source): positional_embedding has shape \(pos.shape), which is not (grid²+1, width)")
        }
        let grid = Int(Double(pos.shape[0] - 1).squareRoot().rounded())
        guard pos.shape.count == 2, grid * grid + 1 == pos.shape[0], pos.shape[1] == width else {
            throw AdapterError.shape("\(source): positional_embedding has shape \(pos.shape), which is not (grid²+1, \(width))")
        }
        var blocks: [EncoderBlockWeights] = []
        var i = 0
        while s.contains(prefix + "transformer.resblocks.\(i).ln_1.weight") {
            let p = "transformer.resblocks.\(i)."
            // OpenAI records no head count: the model builder uses width / 64.
            let b = EncoderBlockWeights(
                ln1Weight: try get(p + "ln_1.weight").toF32(), ln1Bias: try get(p + "ln_1.bias").toF32(),
                qkvWeight: try get(p + "attn.in_proj_weight"), qkvBias: try get(p + "attn.in_proj_bias").toF32(),
                projWeight: try get(p + "attn.out_proj.weight"), projBias: try get(p + "attn.out_proj.bias").toF32(),
                ln2Weight: try get(p + "ln_2.weight").toF32(), ln2Bias: try get(p + "ln_2.bias").toF32(),
                fc1Weight: try get(p + "mlp.c_fc.weight"), fc1Bias: try get(p + "mlp.c_fc.bias").toF32(),
                fc2Weight: try get(p + "mlp.c_proj.weight"), fc2Bias: try get(p + "mlp.c_proj.bias").toF32(),
                heads: max(1, width / 64), activation: .quickGelu)
            try b.validate("\(source): CLIP block \(i)")
            blocks.append(b)
            i += 1
        }
        guard !blocks.isEmpty else { throw AdapterError.format("\(source): no CLIP transformer blocks under \(prefix)transformer.resblocks") }
        var projection: Tensor?
        if s.contains(prefix + "proj") {
            let p = try get("proj").toF32()
            guard p.shape.count == 2, p.shape[0] == width else { throw AdapterError.shape("\(source): \(prefix)proj has shape \(p.shape)") }
            projection = transposed(p)
        }
        return try CLIPVisionWeights(
            patchEmbedding: try conv.reshaped([width, 3 * patch * patch]), classEmbedding: try get("class_embedding").toF32(),
            positionalEmbedding: pos, lnPreWeight: try get("ln_pre.weight").toF32(), lnPreBias: try get("ln_pre.bias").toF32(),
            blocks: blocks, lnPostWeight: try get("ln_post.weight").toF32(), lnPostBias: try get("ln_post.bias").toF32(),
            projection: projection, patchSize: patch, imageSize: grid * patch).validated(source)
    }

    /// Binds Hugging Face `CLIPVisionModelWithProjection` names (`vision_model.*`, `visual_projection.weight`);
    /// separate q/k/v projections are packed into one [3*width, width] matrix as OpenAI's in_proj.
    public static func huggingFace(_ s: TensorSource, heads: Int?, eps: Float = 1e-5, activation: MLPActivation = .quickGelu,
                                   source: String) throws -> CLIPVisionWeights {
        func get(_ n: String) throws -> Tensor {
            guard s.contains(n) else { throw AdapterError.format("\(source): missing CLIP tensor '\(n)'") }
            return try s.tensor(n)
        }
        let conv = try get("vision_model.embeddings.patch_embedding.weight")
        guard conv.shape.count == 4, conv.shape[0] > 0, conv.shape[1] == 3, conv.shape[2] > 0, conv.shape[2] == conv.shape[3] else {
            throw AdapterError.shape("\(source): patch_embedding has shape \(conv.shape), expected [width, 3, p, p]")
        }
        let width = conv.shape[0], patch = conv.shape[2]
        let pos = try get("vision_model.embeddings.position_embedding.weight").toF32()
        guard pos.shape.count == 2, pos.shape[0] >= 2, pos.shape[0] <= 1 << 20, pos.shape[1] == width,
              grid(pos.shape[0]) * grid(pos.shape[0]) + 1 == pos.shape[0] else {
            throw AdapterError.shape("\(source): position_embedding has shape \(pos.shape), which is not (grid²+1, \(width))")
        }
        let grid = Int(Double(pos.shape[0] - 1).squareRoot().rounded())
        var blocks: [EncoderBlockWeights] = []
        var i = 0
        while s.contains("vision_model.encoder.layers.\(i).layer_norm1.weight") {
            let p = "vision_model.encoder.layers.\(i)."
            let qkvW = try concatRows([get(p + "self_attn.q_proj.weight"), get(p + "self_attn.k_proj.weight"), get(p + "self_attn.v_proj.weight")])
            let qkvB = try concatRows([get(p + "self_attn.q_proj.bias"), get(p + "self_attn.k_proj.bias"), get(p + "self_attn.v_proj.bias")])
            let b = EncoderBlockWeights(
                ln1Weight: try get(p + "layer_norm1.weight").toF32(), ln1Bias: try get(p + "layer_norm1.bias").toF32(),
                qkvWeight: qkvW, qkvBias: qkvB,
                projWeight: try get(p + "self_attn.out_proj.weight"), projBias: try get(p + "self_attn.out_proj.bias").toF32(),
                ln2Weight: try get(p + "layer_norm2.weight").toF32(), ln2Bias: try get(p + "layer_norm2.bias").toF32(),
                fc1Weight: try get(p + "mlp.fc1.weight"), fc1Bias: try get(p + "mlp.fc1.bias").toF32(),
                fc2Weight: try get(p + "mlp.fc2.weight"), fc2Bias: try get(p + "mlp.fc2.bias").toF32(),
                heads: heads ?? max(1, width / 64), activation: activation, eps: eps)
            try b.validate("\(source): CLIP layer \(i)")
            blocks.append(b)
            i += 1
        }
        guard !blocks.isEmpty else { throw AdapterError.format("\(source): no vision_model.encoder.layers") }
        return try CLIPVisionWeights(
            patchEmbedding: try conv.reshaped([width, 3 * patch * patch]),
            classEmbedding: try get("vision_model.embeddings.class_embedding").toF32(), positionalEmbedding: pos,
            lnPreWeight: try get("vision_model.pre_layrnorm.weight").toF32(), lnPreBias: try get("vision_model.pre_layrnorm.bias").toF32(),
            blocks: blocks, lnPostWeight: try get("vision_model.post_layernorm.weight").toF32(),
            lnPostBias: try get("vision_model.post_layernorm.bias").toF32(),
            projection: s.contains("visual_projection.weight") ? try get("visual_projection.weight") : nil,
            patchSize: patch, imageSize: grid * patch).validated(source)
    }

    /// Checks every tensor's shape against the width (a file whose shapes disagree would otherwise read past
    /// a tensor's end); returns self.
    func validated(_ source: String) throws -> CLIPVisionWeights {
        let w = width
        func check(_ t: Tensor, _ shape: [Int], _ name: String) throws {
            guard t.shape == shape || (t.count == shape.reduce(1, *) && shape.count == 1) else {
                throw AdapterError.shape("\(source): CLIP \(name) has shape \(t.shape), expected \(shape)")
            }
        }
        try check(classEmbedding, [patchEmbedding.shape[0]], "class_embedding")
        try check(positionalEmbedding, [tokenCount, w], "positional_embedding")
        for (t, n) in [(lnPreWeight, "ln_pre.weight"), (lnPreBias, "ln_pre.bias"), (lnPostWeight, "ln_post.weight"), (lnPostBias, "ln_post.bias")] {
            try check(t, [w], n)
        }
        for (i, b) in blocks.enumerated() where b.dim != w {
            throw AdapterError.shape("\(source): CLIP block \(i) has width \(b.dim), the embeddings \(w)")
        }
        if let p = projection, p.shape.count != 2 || p.shape[1] != w || p.shape[0] < 1 {
            throw AdapterError.shape("\(source): CLIP projection has shape \(p.shape), expected [out, \(w)]")
        }
        guard imageSize > 0, imageSize <= 8192 else { throw AdapterError.shape("\(source): CLIP image size \(imageSize) is not plausible") }
        return self
    }

    /// Opens CLIP weights from a file or folder: OpenAI `.pt` (TorchScript), a `.pth`/`.pt` state dict with
    /// `visual.*` names, or a Hugging Face folder / safetensors file with `vision_model.*` names.
    public static func load(path: String) throws -> CLIPVisionWeights {
        guard FileManager.default.fileExists(atPath: path) else { throw AdapterError.io("CLIP weights \(path) do not exist") }
        let format = try FileFormat.detect(path: path)
        if format == .huggingFaceFolder || format == .safetensors {
            let isDir = ObjCBool(format == .huggingFaceFolder)
            let folder = try SafetensorsFolder(path: path)
            var heads: Int?
            var eps: Float = 1e-5
            var act = MLPActivation.quickGelu
            let cfg = (isDir.boolValue ? path : (path as NSString).deletingLastPathComponent) + "/config.json"
            if let data = FileManager.default.contents(atPath: cfg) {
                // A CLIPModel config nests the tower's keys under vision_config; a CLIPVisionModel's are top-level.
                struct Vision: Decodable { var num_attention_heads: Int?; var layer_norm_eps: Double?; var hidden_act: String? }
                struct Config: Decodable { var vision_config: Vision? }
                let decoder = JSONDecoder()
                let v: Vision?
                do { v = try decoder.decode(Config.self, from: data).vision_config ?? decoder.decode(Vision.self, from: data) } catch {
                    throw AdapterError.format("\(cfg) is not a valid CLIP config.json: \(error.localizedDescription)")
                }
                heads = v?.num_attention_heads
                if let e = v?.layer_norm_eps { eps = Float(e) }
                if v?.hidden_act == "gelu" { act = .gelu }
            }
            return try huggingFace(folder, heads: heads, eps: eps, activation: act, source: path)
        }
        let (source, _) = try FileFormat.openTensors(path: path)
        return try openAI(source, source: path)
    }
}

/// [rows, cols] -> [cols, rows] copy of an f32 matrix.
func transposed(_ t: Tensor) -> Tensor {
    let r = t.shape[0], c = t.shape[1]
    let out = Tensor(zeros: [c, r])
    let src = t.floats, dst = out.floats
    for i in 0..<r { for j in 0..<c { dst[j * r + i] = src[i * c + j] } }
    return out
}

/// Stacks tensors of equal trailing shape along dim 0 (f32 result).
func concatRows(_ parts: [Tensor]) throws -> Tensor {
    let tail = Array(parts[0].shape.dropFirst())
    guard parts.allSatisfy({ Array($0.shape.dropFirst()) == tail }) else { throw AdapterError.shape("cannot stack shapes \(parts.map(\.shape))") }
    let rows = parts.reduce(0) { $0 + $1.shape[0] }
    let out = Tensor(zeros: [rows] + tail)
    var offset = 0
    for p in parts {
        convertToFloat(dtype: p.dtype, src: p.data, dst: out.floats + offset, count: p.count)
        offset += p.count
    }
    return out
}

/// Runs the visual tower the way `clip_encode_image` does: patches, class token, positions, ln_pre,
/// blocks, ln_post on every token, then the projection. `image` is [3, S, S] f32 (normalised).
/// Returns [tokens, outputDim].
public func clipEncodeImage(_ w: CLIPVisionWeights, image: Tensor, pool: ThreadPool = .shared) throws -> Tensor {
    let S = w.imageSize, p = w.patchSize, g = S / p, width = w.width
    guard image.shape == [3, S, S] else {
        throw AdapterError.shape("image tensor has shape \(image.shape) but this CLIP expects [3, \(S), \(S)]")
    }
    let img = image.toF32().floats
    let nPatch = g * g, T = nPatch + 1
    let patches = patchRows(img, height: S, width: S, patch: p)
    defer { patches.deallocate() }
    let x = Tensor(zeros: [T, width])
    let xp = x.floats
    xp.update(from: w.classEmbedding.floats, count: width)
    linearForward(out: xp + width, inp: patches, weight: w.patchEmbedding, T: nPatch, pool: pool)
    addInPlace(xp, w.positionalEmbedding.floats, T * width)
    layerNormForward(out: xp, inp: xp, weight: w.lnPreWeight.floats, bias: w.lnPreBias.floats, T: T, C: width, eps: 1e-5)
    for b in w.blocks { encoderBlockForward(xp, T: T, block: b, pool: pool) }
    layerNormForward(out: xp, inp: xp, weight: w.lnPostWeight.floats, bias: w.lnPostBias.floats, T: T, C: width, eps: 1e-5)
    guard let proj = w.projection else { return x }
    let out = Tensor(zeros: [T, proj.shape[0]])
    linearForward(out: out.floats, inp: xp, weight: proj, T: T, pool: pool)
    return out
}

extension CLIPVisionWeights {
    /// Made-up weights of a CLIP ViT shape (default ViT-L/14 at 224 px, f16 matrices as OpenAI ships them),
    /// for the image-encode benchmark.
    public static func synthetic(width: Int = 1024, layers: Int = 24, patch: Int = 14, imageSize: Int = 224,
                                 outputDim: Int = 768, dtype: DType = .f16) -> CLIPVisionWeights {
        let g = imageSize / patch
        func norm() -> Tensor { SyntheticTensors.constant(width, 1) }
        func bias(_ n: Int) -> Tensor { SyntheticTensors.constant(n, 0.01) }
        let blocks = (0..<layers).map { _ in
            EncoderBlockWeights(ln1Weight: norm(), ln1Bias: bias(width), qkvWeight: SyntheticTensors.make([3 * width, width], dtype),
                                qkvBias: bias(3 * width), projWeight: SyntheticTensors.make([width, width], dtype), projBias: bias(width),
                                ln2Weight: norm(), ln2Bias: bias(width), fc1Weight: SyntheticTensors.make([4 * width, width], dtype),
                                fc1Bias: bias(4 * width), fc2Weight: SyntheticTensors.make([width, 4 * width], dtype), fc2Bias: bias(width),
                                heads: max(1, width / 64), activation: .quickGelu)
        }
        return CLIPVisionWeights(patchEmbedding: SyntheticTensors.make([width, 3 * patch * patch], dtype),
                                 classEmbedding: SyntheticTensors.make([width], .f32),
                                 positionalEmbedding: SyntheticTensors.make([g * g + 1, width], .f32),
                                 lnPreWeight: norm(), lnPreBias: bias(width), blocks: blocks, lnPostWeight: norm(), lnPostBias: bias(width),
                                 projection: SyntheticTensors.make([outputDim, width], .f32), patchSize: patch, imageSize: imageSize)
    }
}

/// The patch grid of a positional table with `rows` rows (grid² + 1).
private func grid(_ rows: Int) -> Int { Int(Double(max(rows - 1, 0)).squareRoot().rounded()) }
