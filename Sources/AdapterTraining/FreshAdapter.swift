// New adapters on any base (paper sections 3.1–3.3): Eq. 1 bias and scale, LoRA, adaption prompts with
// zero-initialised gates, the visual branch. Everything that changes the model's output starts at its
// neutral value (gates 0, biases 0, scales 1, LoRA up-projections 0), so step 0 computes the base model.
import Foundation
import AdapterCore
import AdapterFormats
import AdapterModel

/// What a fresh adapter contains (the `finetune` flags `--bias`, `--lora-rank`, `--query-layer/--query-len`, `--visual`).
public struct AdapterSpec: Sendable, Equatable {
    /// Eq. 1 on every linear map: biases on wq, wo, w1, w2, w3 (wk and wv never carry one in LLaMA-Adapter V2)
    /// and scales on all seven.
    public var bias = false
    /// LoRA rank on all seven maps (with `new_gate`), nil for none.
    public var loraRank: Int?
    /// Adaption prompts: the last `queryLayer` layers get `queryLen` learned tokens each (0: none).
    public var queryLayer = 0
    /// Prompt length (also the number of visual query tokens).
    public var queryLen = 10
    /// The visual branch (clip_proj → visual_query + visual_blocks → visual_proj), official shapes.
    public var visual = false
    /// Visual branch width, depth, heads, MLP ratio (official defaults).
    public var vEmbedDim = 768, vDepth = 8, vNumHeads = 16
    /// Visual block MLP width over its model width.
    public var vMlpRatio = 4.0

    /// No parts.
    public init() {}

    /// Whether the spec adds anything.
    public var isEmpty: Bool { !bias && loraRank == nil && queryLayer == 0 && !visual }
}

extension ParameterStore {
    /// A fresh adapter for `model` (its base, f32 trained norms copied from it). `clipDim` is the CLIP output
    /// width the visual branch projects from (needed with `spec.visual`). Random parts follow PyTorch's default
    /// initialisers (Linear: U(±1/√fan_in); Embedding: N(0, 1); LayerNorm: 1, 0) from `seed`.
    public static func fresh(_ spec: AdapterSpec, model: LlamaModel, clipDim: Int?, seed: UInt64) throws -> ParameterStore {
        let c = model.config
        guard !spec.isEmpty else {
            throw AdapterError.invalidArgument("no adapter given: pass --adapter FILE, or --bias, --lora-rank R, --query-layer L or --visual for a new one")
        }
        guard spec.queryLayer >= 0, spec.queryLayer <= c.nLayers else {
            throw AdapterError.invalidArgument("--query-layer \(spec.queryLayer) must be between 1 and the model's \(c.nLayers) layers")
        }
        guard spec.queryLen >= 1, spec.queryLen <= 4096 else { throw AdapterError.invalidArgument("--query-len must be between 1 and 4096") }
        if let r = spec.loraRank, r < 1 || r > c.dim { throw AdapterError.invalidArgument("--lora-rank must be between 1 and \(c.dim)") }
        var rng = TrainingRNG(seed: seed ^ 0x5EED_ADA9_7E55_0001)
        var params: [Parameter] = []
        func add(_ name: String, _ shape: [Int], _ values: [Float]) { params.append(Parameter(name: name, shape: shape, values: values)) }
        func constant(_ name: String, _ shape: [Int], _ v: Float) { add(name, shape, [Float](repeating: v, count: shape.reduce(1, *))) }
        func uniform(_ name: String, _ shape: [Int], fanIn: Int) {
            let b = 1 / Double(fanIn).squareRoot()
            add(name, shape, (0..<shape.reduce(1, *)).map { _ in Float(rng.uniform(-b, b)) })
        }
        func normal(_ name: String, _ shape: [Int]) { add(name, shape, (0..<shape.reduce(1, *)).map { _ in Float(rng.normal()) }) }
        func linear(_ prefix: String, out: Int, inp: Int) {
            uniform(prefix + ".weight", [out, inp], fanIn: inp)
            uniform(prefix + ".bias", [out], fanIn: inp)
        }
        func layerNorm(_ prefix: String, _ n: Int) { constant(prefix + ".weight", [n], 1); constant(prefix + ".bias", [n], 0) }

        let vd = spec.vEmbedDim
        if spec.visual {
            guard vd > 0, spec.vDepth >= 0, spec.vNumHeads > 0, vd % spec.vNumHeads == 0, spec.vMlpRatio > 0 else {
                throw AdapterError.invalidArgument("visual branch: v_embed_dim \(vd) must be a positive multiple of v_num_heads \(spec.vNumHeads)")
            }
            let hidden = Int(Double(vd) * spec.vMlpRatio)
            for i in 0..<spec.vDepth {
                let p = "visual_blocks.\(i)."
                layerNorm(p + "norm1", vd)
                linear(p + "attn.qkv", out: 3 * vd, inp: vd)
                linear(p + "attn.proj", out: vd, inp: vd)
                layerNorm(p + "norm2", vd)
                linear(p + "mlp.fc1", out: hidden, inp: vd)
                linear(p + "mlp.fc2", out: vd, inp: hidden)
            }
        }
        let prompts = spec.queryLayer > 0 || spec.visual
        let projections: [(String, Int, Int)] = [
            ("attention.wq", c.dim, c.dim), ("attention.wk", c.kvDim, c.dim), ("attention.wv", c.kvDim, c.dim),
            ("attention.wo", c.dim, c.dim), ("feed_forward.w1", c.hiddenDim, c.dim),
            ("feed_forward.w2", c.dim, c.hiddenDim), ("feed_forward.w3", c.hiddenDim, c.dim)]
        for i in 0..<c.nLayers {
            let p = "llama.layers.\(i)."
            let base = model.weights.layers[i]
            if prompts { constant(p + "attention.gate", [1, c.nHeads, 1, 1], 0) }
            if spec.bias {
                for b in ["attention.wq", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"] {
                    constant(p + b + ".bias", [projections.first { $0.0 == b }!.1], 0)
                }
                for (n, out, _) in projections { constant(p + n + ".scale", [out], 1) }
            }
            add(p + "attention_norm.weight", [c.dim], base.attentionNorm.toFloatArray())
            add(p + "ffn_norm.weight", [c.dim], base.ffnNorm.toFloatArray())
            if let r = spec.loraRank {
                for (n, out, inp) in projections {
                    let module = String(n.split(separator: ".")[0]), short = String(n.split(separator: ".")[1])
                    uniform(p + module + ".lora_\(short)_l1.weight", [r, inp], fanIn: inp)
                    constant(p + module + ".lora_\(short)_l2.weight", [out, r], 0)
                }
                if prompts { constant(p + "attention.new_gate", [1, 1, 1, 1], 1) }
            }
        }
        if spec.visual {
            guard let clipDim, clipDim > 0 else { throw AdapterError.invalidArgument("--visual needs --clip (the visual branch projects CLIP features)") }
            layerNorm("clip_proj_norm", vd)
            layerNorm("visual_proj_norm", c.dim)
            linear("visual_proj", out: c.dim, inp: vd)
            linear("clip_proj", out: vd, inp: clipDim)
        }
        add("llama.norm.weight", [c.dim], model.weights.norm.toFloatArray())
        if spec.visual { normal("visual_query.weight", [spec.queryLen, vd]) }
        if spec.queryLayer > 0 { normal("adapter_query.weight", [spec.queryLayer * spec.queryLen, c.dim]) }

        var config: [(String, PickleWriteValue)] = [("w_bias", .bool(spec.bias)), ("w_lora", .bool(spec.loraRank != nil)),
                                                     ("lora_rank", .int(spec.loraRank ?? 16))]
        if prompts { config += [("query_len", .int(spec.queryLen)), ("query_layer", .int(spec.queryLayer))] }
        if spec.visual {
            config += [("v_embed_dim", .int(vd)), ("v_depth", .int(spec.vDepth)), ("v_num_heads", .int(spec.vNumHeads)),
                       ("v_mlp_ratio", .double(spec.vMlpRatio))]
        }
        return try ParameterStore(parameters: params, config: config, origin: "new adapter")
    }
}
