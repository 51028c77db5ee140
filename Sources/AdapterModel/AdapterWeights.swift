// LLaMA-Adapter V2 (Gao et al. 2023) parts, named as in the official release
// (llama_adapter_v2_multimodal7b/llama/llama_adapter.py and llama.py):
// adaption prompts (`adapter_query`) with zero-initialised per-head gates, bias/scale/norm tuning,
// optional LoRA with `new_gate`, and the visual branch (clip_proj → visual_query + visual_blocks → visual_proj).
import Foundation
import AdapterCore
import AdapterFormats
import AdapterVision

/// Where visual and adaption prompts enter the language model (a per-session choice: the same weights
/// serve both).
public enum Fusion: Sendable, Equatable {
    /// The official release: the visual query is added to the adaption prompt of each of the last
    /// `queryLayer` layers (what the released checkpoints were trained with).
    case release
    /// The paper's early fusion: visual prompts (gated) only in the first `layers` layers, adaption prompts
    /// only in the last `queryLayer` layers, disjoint.
    case early(layers: Int)
}

/// Architecture of an adapter; defaults are the official 7B release's.
public struct AdapterConfig: Equatable, Sendable {
    public var vEmbedDim = 768
    public var vDepth = 8
    public var vNumHeads = 16
    public var vMlpRatio: Double = 4
    public var queryLen = 10
    public var queryLayer = 31
    public var wBias = false
    public var wLora = false
    public var loraRank = 16
    /// Early fusion the adapter was trained with (`early_layers` in its config: joint training writes it), so
    /// sessions put the visual prompt where training did; nil: the release fusion.
    public var earlyLayers: Int?

    /// Official defaults.
    public init() {}
}

/// Extra parameters around one frozen linear map: y = s ⊙ (W x + b) + B(A x) (paper Eq. 1 plus LoRA), or with
/// `scaleOnInput` the 65B chat release's y = W (x ⊙ s) + b.
public struct LinearExtras: @unchecked Sendable {
    /// Bias [out], f32.
    public var bias: Tensor?
    /// Scale [out] (or [in] when `scaleOnInput`), f32.
    public var scale: Tensor?
    /// True for the 65B chat release's input-side scale.
    public var scaleOnInput = false
    /// LoRA down-projection `l1` [rank, in] and up-projection `l2` [out, rank], f32.
    public var loraA: Tensor?
    public var loraB: Tensor?

    /// No extras.
    public init() {}

    /// True when nothing modifies the frozen map.
    public var isEmpty: Bool { bias == nil && scale == nil && loraA == nil }
}

/// Adapter parameters of one transformer block.
public struct LayerAdapter: @unchecked Sendable {
    public var wq = LinearExtras(), wk = LinearExtras(), wv = LinearExtras(), wo = LinearExtras()
    public var w1 = LinearExtras(), w2 = LinearExtras(), w3 = LinearExtras()
    /// `attention.gate` per head (shape (1, heads, 1, 1) in the checkpoint), f32.
    public var gate: Tensor?
    /// `attention.new_gate` (LoRA-BIAS checkpoints), multiplies the adapter scores.
    public var newGate: Float?
    /// Trained norms replacing the base model's.
    public var attentionNorm: Tensor?
    public var ffnNorm: Tensor?

    public init() {}
}

/// The visual branch: CLIP features → projected visual query tokens [queryLen, dim].
public struct VisualBranch: @unchecked Sendable {
    public var clipProjWeight: Tensor, clipProjBias: Tensor
    public var clipProjNormWeight: Tensor, clipProjNormBias: Tensor
    /// `visual_query.weight` [queryLen, vEmbedDim].
    public var visualQuery: Tensor
    /// `visual_blocks.N` (timm Blocks, exact GELU).
    public var blocks: [EncoderBlockWeights]
    public var visualProjWeight: Tensor, visualProjBias: Tensor
    public var visualProjNormWeight: Tensor, visualProjNormBias: Tensor
}

/// A loaded adapter checkpoint, immutable once read.
public final class AdapterWeights: Sendable {
    /// Architecture.
    public let config: AdapterConfig
    /// Per-layer parts, one entry per model layer.
    public let layers: [LayerAdapter]
    /// `adapter_query.weight` [queryLayer * queryLen, dim], f32.
    public let adapterQuery: Tensor?
    /// Visual branch, when the checkpoint has one.
    public let visual: VisualBranch?
    /// Trained final norm.
    public let norm: Tensor?
    /// Path it came from.
    public let path: String
    /// Number of adapter parameters.
    public let parameterCount: Int
    /// What kind of checkpoint this is ("BIAS", "LORA-BIAS", "CAPTION", ...), guessed from its keys.
    public let kind: String

    /// Wraps adapter parameters.
    public init(config: AdapterConfig, layers: [LayerAdapter], adapterQuery: Tensor?, visual: VisualBranch?, norm: Tensor?,
                path: String, kind: String, parameterCount: Int) {
        self.config = config
        self.layers = layers
        self.adapterQuery = adapterQuery
        self.visual = visual
        self.norm = norm
        self.path = path
        self.kind = kind
        self.parameterCount = parameterCount
    }

    /// Reads an official adapter checkpoint `{'model': {...}, 'config': {...}}` for a base model of `model`'s shape.
    /// Architecture keys come from `config` when present, else the official defaults, and are checked against
    /// the tensor shapes.
    public static func load(path: String, model c: LlamaConfig) throws -> AdapterWeights {
        switch try FileFormat.detect(path: path) {
        case .pytorch: return try bind(TorchCheckpoint(path: path), path: path, model: c)
        case .safetensors: return try bind(SafetensorsFile(path: path), path: path, model: c)
        default: throw AdapterError.format("\(path) is not an adapter checkpoint (.pth written by torch.save, or .safetensors)")
        }
    }

    /// Binds adapter tensors by their official names from any tensor source (a checkpoint, or a trainer's
    /// parameters: f32 tensors are taken as views, so the adapter sees the source's memory). `path` names the
    /// source in errors. Same rules as `load`.
    public static func bind(_ ckpt: TensorSource, path: String, model c: LlamaConfig) throws -> AdapterWeights {
        guard summarize(ckpt) != nil || ckpt.tensorNames.contains(where: { $0.hasSuffix("_bias") || $0.hasSuffix(".bias") || $0.contains("lora_") }) else {
            throw AdapterError.format("\(path) is not a LLaMA-Adapter checkpoint (no adapter_query, gate, bias or LoRA tensors)")
        }
        var cfg = ckpt.metadata["config"]
        // safetensors metadata holds strings: the config is saved there as JSON.
        if let text = cfg?.stringValue { cfg = try parseConfigJSON(text, path: path) }
        var ac = AdapterConfig()
        func int(_ k: String) -> Int? { cfg?[k]?.intValue }
        ac.wBias = cfg?["w_bias"]?.boolValue ?? false
        ac.wLora = cfg?["w_lora"]?.boolValue ?? false
        ac.loraRank = int("lora_rank") ?? 16
        ac.vEmbedDim = int("v_embed_dim") ?? ac.vEmbedDim
        ac.vDepth = int("v_depth") ?? ac.vDepth
        ac.vNumHeads = int("v_num_heads") ?? ac.vNumHeads
        ac.vMlpRatio = cfg?["v_mlp_ratio"]?.doubleValue ?? ac.vMlpRatio
        // The 65B chat release calls them adapter_len / adapter_layer.
        ac.queryLen = int("query_len") ?? int("adapter_len") ?? ac.queryLen
        ac.queryLayer = int("query_layer") ?? int("adapter_layer") ?? ac.queryLayer
        ac.earlyLayers = int("early_layers")
        if let k = ac.earlyLayers, k < 1 || k > c.nLayers {
            throw AdapterError.format("\(path): early_layers \(k) is outside the model's \(c.nLayers) layers")
        }
        guard ac.queryLen >= 1, ac.queryLen <= 1 << 16, ac.queryLayer >= 0, ac.loraRank >= 1, ac.vEmbedDim >= 1, ac.vNumHeads >= 1,
              ac.vDepth >= 0, ac.vMlpRatio.isFinite, ac.vMlpRatio > 0 else {
            throw AdapterError.format("\(path): implausible adapter config (query_len \(ac.queryLen), query_layer \(ac.queryLayer), lora_rank \(ac.loraRank), v_embed_dim \(ac.vEmbedDim), v_num_heads \(ac.vNumHeads))")
        }
        let explicitLength = int("query_len") != nil || int("adapter_len") != nil
        let explicitLayers = int("query_layer") != nil || int("adapter_layer") != nil
        // Names: released files use `llama.layers...`; accept bare `layers...` too.
        func name(_ n: String) -> String? {
            if ckpt.contains(n) { return n }
            if n.hasPrefix("llama."), ckpt.contains(String(n.dropFirst(6))) { return String(n.dropFirst(6)) }
            return nil
        }
        var used = Set<String>()
        func opt(_ n: String, _ shape: [Int]? = nil, flatten: Bool = false) throws -> Tensor? {
            guard let key = name(n) else { return nil }
            used.insert(key)
            var t = try ckpt.tensor(key).toF32()
            if flatten { t = try t.reshaped([t.count]) }
            if let shape, t.shape != shape {
                throw AdapterError.shape("\(path): '\(key)' has shape \(t.shape) but a model of dim \(c.dim) expects \(shape)")
            }
            return t
        }
        func need(_ n: String, _ shape: [Int]? = nil) throws -> Tensor {
            guard let t = try opt(n, shape) else { throw AdapterError.format("\(path): missing '\(n)'") }
            return t
        }
        if let aq = try opt("adapter_query.weight") {
            guard aq.shape.count == 2, aq.shape[1] == c.dim else {
                throw AdapterError.shape("\(path): adapter expects dim \(aq.shape.last ?? 0) but the model has \(c.dim)")
            }
            if !explicitLayers, let vq = try opt("visual_query.weight"), !explicitLength { ac.queryLen = vq.shape[0] }
            if !explicitLayers, aq.shape[0] % ac.queryLen != 0 {
                throw AdapterError.shape("\(path): adapter_query has \(aq.shape[0]) rows, not a multiple of query_len \(ac.queryLen)")
            }
            if !explicitLayers { ac.queryLayer = aq.shape[0] / ac.queryLen }
            guard ac.queryLayer <= c.nLayers else {
                throw AdapterError.shape("\(path): query_layer \(ac.queryLayer) exceeds the model's \(c.nLayers) layers")
            }
            guard aq.shape[0] == ac.queryLen * ac.queryLayer else {
                throw AdapterError.shape("\(path): adapter_query has \(aq.shape[0]) rows but query_len \(ac.queryLen) × query_layer \(ac.queryLayer) = \(ac.queryLen * ac.queryLayer)")
            }
        }
        var layers = [LayerAdapter](repeating: LayerAdapter(), count: c.nLayers)
        for i in 0..<c.nLayers {
            let p = "llama.layers.\(i)."
            var l = LayerAdapter()
            l.wq.bias = try opt(p + "attention.wq.bias", [c.dim])
            l.wo.bias = try opt(p + "attention.wo.bias", [c.dim])
            l.w1.bias = try opt(p + "feed_forward.w1.bias", [c.hiddenDim])
            l.w2.bias = try opt(p + "feed_forward.w2.bias", [c.dim])
            l.w3.bias = try opt(p + "feed_forward.w3.bias", [c.hiddenDim])
            if try opt(p + "attention.wk.bias") != nil || (try opt(p + "attention.wv.bias")) != nil {
                throw AdapterError.format("\(path): wk/wv biases are not part of LLaMA-Adapter V2")
            }
            l.attentionNorm = try opt(p + "attention_norm.weight", [c.dim])
            l.ffnNorm = try opt(p + "ffn_norm.weight", [c.dim])
            l.gate = try opt(p + "attention.gate", [c.nHeads], flatten: true)
            if let g = try opt(p + "attention.new_gate", flatten: true) {
                guard g.count == 1 else { throw AdapterError.shape("\(path): \(p)attention.new_gate has \(g.count) values, expected 1") }
                l.newGate = g.floats[0]
            }
            // Paper Eq. 1 scales (`*.scale`, output side) and the 65B chat release's (`wq_scale`, input side).
            let projections: [(WritableKeyPath<LayerAdapter, LinearExtras>, String, String, Int, Int)] = [
                (\.wq, "attention.wq", "attention", c.dim, c.dim), (\.wk, "attention.wk", "attention", c.kvDim, c.dim),
                (\.wv, "attention.wv", "attention", c.kvDim, c.dim), (\.wo, "attention.wo", "attention", c.dim, c.dim),
                (\.w1, "feed_forward.w1", "feed_forward", c.hiddenDim, c.dim), (\.w2, "feed_forward.w2", "feed_forward", c.dim, c.hiddenDim),
                (\.w3, "feed_forward.w3", "feed_forward", c.hiddenDim, c.dim),
            ]
            for (kp, full, module, out, inp) in projections {
                let short = String(full.split(separator: ".").last!)
                if let s = try opt(p + full + ".scale", [out]) { l[keyPath: kp].scale = s }
                if let s = try opt(p + module + "." + short + "_scale", flatten: true) {
                    guard s.count == inp else { throw AdapterError.shape("\(path): \(p)\(module).\(short)_scale has \(s.count) values, expected \(inp)") }
                    l[keyPath: kp].scale = s
                    l[keyPath: kp].scaleOnInput = true
                }
                if l[keyPath: kp].bias == nil, let b = try opt(p + module + "." + short + "_bias", [out]) { l[keyPath: kp].bias = b }
                if let a = try opt(p + module + ".lora_\(short)_l1.weight"), let b = try opt(p + module + ".lora_\(short)_l2.weight") {
                    guard a.shape.count == 2, b.shape.count == 2, a.shape[1] == inp, b.shape[0] == out, a.shape[0] == b.shape[1] else {
                        throw AdapterError.shape("\(path): LoRA \(p)\(short) has shapes \(a.shape), \(b.shape) for a [\(out), \(inp)] map")
                    }
                    l[keyPath: kp].loraA = a
                    l[keyPath: kp].loraB = b
                    ac.loraRank = a.shape[0]
                }
            }
            layers[i] = l
        }
        var visual: VisualBranch?
        if let vq = try opt("visual_query.weight") {
            guard vq.shape.count == 2, vq.shape == [ac.queryLen, vq.shape[1]], vq.shape[1] > 0 else {
                throw AdapterError.shape("\(path): visual_query has shape \(vq.shape), expected [\(ac.queryLen), v_embed_dim]")
            }
            if cfg?["v_embed_dim"] == nil { ac.vEmbedDim = vq.shape[1] }
            let v = ac.vEmbedDim
            var blocks: [EncoderBlockWeights] = []
            var i = 0
            while name("visual_blocks.\(i).norm1.weight") != nil {
                let p = "visual_blocks.\(i)."
                let b = EncoderBlockWeights(
                    ln1Weight: try need(p + "norm1.weight", [v]), ln1Bias: try need(p + "norm1.bias", [v]),
                    qkvWeight: try need(p + "attn.qkv.weight", [3 * v, v]), qkvBias: try need(p + "attn.qkv.bias", [3 * v]),
                    projWeight: try need(p + "attn.proj.weight", [v, v]), projBias: try need(p + "attn.proj.bias", [v]),
                    ln2Weight: try need(p + "norm2.weight", [v]), ln2Bias: try need(p + "norm2.bias", [v]),
                    fc1Weight: try need(p + "mlp.fc1.weight"), fc1Bias: try need(p + "mlp.fc1.bias"),
                    fc2Weight: try need(p + "mlp.fc2.weight"), fc2Bias: try need(p + "mlp.fc2.bias", [v]),
                    heads: ac.vNumHeads, activation: .gelu)
                try b.validate("\(path): visual_blocks.\(i)")
                blocks.append(b)
                i += 1
            }
            if cfg?["v_depth"] != nil, blocks.count != ac.vDepth {
                throw AdapterError.shape("\(path): config says v_depth \(ac.vDepth) but the checkpoint has \(blocks.count) visual blocks")
            }
            ac.vDepth = blocks.count
            let clipW = try need("clip_proj.weight")
            guard clipW.shape.count == 2, clipW.shape[0] == v, clipW.shape[1] > 0 else {
                throw AdapterError.shape("\(path): clip_proj.weight has shape \(clipW.shape), expected [\(v), clip_dim]")
            }
            visual = VisualBranch(
                clipProjWeight: clipW, clipProjBias: try need("clip_proj.bias", [v]),
                clipProjNormWeight: try need("clip_proj_norm.weight", [v]), clipProjNormBias: try need("clip_proj_norm.bias", [v]),
                visualQuery: vq, blocks: blocks,
                visualProjWeight: try need("visual_proj.weight", [c.dim, v]), visualProjBias: try need("visual_proj.bias", [c.dim]),
                visualProjNormWeight: try need("visual_proj_norm.weight", [c.dim]), visualProjNormBias: try need("visual_proj_norm.bias", [c.dim]))
        }
        let hasLora = layers.contains { $0.wq.loraA != nil || $0.w1.loraA != nil }
        let hasBias = layers.contains { $0.wq.bias != nil || $0.w1.bias != nil }
        let kind = hasLora ? "LORA-BIAS" : (hasBias ? "BIAS" : (visual != nil ? "CAPTION/PRETRAIN" : "ADAPTER"))
        let a = AdapterWeights(config: ac, layers: layers, adapterQuery: try opt("adapter_query.weight"), visual: visual,
                               norm: try opt("llama.norm.weight", [c.dim]), path: path, kind: kind,
                               parameterCount: [Int].totalElements(ckpt.tensorNames.compactMap { ckpt.info($0)?.shape }))
        // Strict binding: a tensor nothing read would silently change nothing, which is never what its author meant.
        let unused = ckpt.tensorNames.filter { !used.contains($0) }.sorted()
        if !unused.isEmpty {
            throw AdapterError.format("\(path): \(unused.count) tensor(s) this program does not use, e.g. '\(unused[0])' (unsupported adapter part?)")
        }
        return a
    }
}

extension AdapterWeights {
    /// A summary of an adapter checkpoint from its key names and shapes alone (no base model needed):
    /// kind, key set, parameter count and architecture, for `inspect`. Nil when `source` is not an adapter.
    public static func summarize(_ source: TensorSource) -> [String: MetadataValue]? {
        let names = source.tensorNames
        guard names.contains(where: { $0.hasSuffix("adapter_query.weight") || $0.hasSuffix("attention.gate") }) else { return nil }
        func shape(_ n: String) -> [Int]? { source.info(n)?.shape }
        var out: [String: MetadataValue] = [:]
        let hasLora = names.contains { $0.contains(".lora_") }
        let hasBias = names.contains { $0.hasSuffix("wq.bias") || $0.hasSuffix("w1.bias") }
        let hasVisual = names.contains("visual_query.weight")
        out["kind"] = .string(hasLora ? "LORA-BIAS" : hasBias ? "BIAS" : hasVisual ? "CAPTION/PRETRAIN" : "ADAPTER")
        out["key_set"] = .string(hasLora ? "LORA" : "BIAS")
        out["parameter_count"] = .int([Int].totalElements(names.compactMap { shape($0) }))
        let layers = Set(names.compactMap { n -> Int? in
            guard let r = n.range(of: "layers.") else { return nil }
            return Int(n[r.upperBound...].prefix { $0.isNumber })
        })
        out["layers"] = .int((layers.max() ?? -1) + 1)
        if let vq = shape("visual_query.weight"), vq.count == 2 {
            out["query_len"] = .int(vq[0])
            out["v_embed_dim"] = .int(vq[1])
            if let aq = shape("adapter_query.weight"), aq.count == 2, vq[0] > 0 {
                out["query_layer"] = .int(aq[0] / vq[0])
                out["dim"] = .int(aq[1])
            }
        }
        out["v_depth"] = .int(Set(names.compactMap { n -> Int? in
            guard n.hasPrefix("visual_blocks.") else { return nil }
            return Int(n.dropFirst("visual_blocks.".count).prefix { $0.isNumber })
        }).count)
        if let l1 = names.first(where: { $0.hasSuffix("lora_wq_l1.weight") }), let s = shape(l1) { out["lora_rank"] = .int(s[0]) }
        return out
    }
}

/// A flat JSON object of booleans, numbers and strings as metadata (an adapter config saved in safetensors).
func parseConfigJSON(_ text: String, path: String) throws -> MetadataValue {
    struct Scalar: Decodable {
        let value: MetadataValue?
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) { value = .bool(b) }
            else if let i = try? c.decode(Int.self) { value = .int(i) }
            else if let d = try? c.decode(Double.self) { value = .double(d) }
            else if let s = try? c.decode(String.self) { value = .string(s) }
            else { value = nil }
        }
    }
    guard let obj = try? JSONDecoder().decode([String: Scalar].self, from: Data(text.utf8)) else {
        throw AdapterError.format("\(path): the 'config' metadata is not a flat JSON object")
    }
    return .dict(obj.compactMapValues(\.value))
}
