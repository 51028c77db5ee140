import Foundation
import AdapterCore
import AdapterFormats

/// A model opened from disk, with what was learned about its files.
public struct LoadedModel {
    /// The ready model.
    public let model: LlamaModel
    /// Where its weights came from (kept alive: tensors are views into its memory maps).
    public let source: TensorSource
    /// A tokenizer file found next to the weights, if any.
    public let tokenizerPath: String?
    /// Short name of the format ("meta").
    public let format: String
}

/// Which Q4_0/Q4_1/Q8_0 matrices are repacked at load into the panels of the integer GEMM (AVX-512 VNNI CPUs;
/// elsewhere nothing is repacked). Panels make decoding at f32 precision run on integer products (activations
/// split into three 8-bit levels, see `ActivationPrecision.f32`) and serve `--int8-activations`.
public enum PanelPacking: Sendable {
    /// None: the file layout and f32 FMAs (`--no-repack`, training).
    case none
    /// The matrices mapped from the model file (the default): their pages are given back once repacked.
    case mapped
    /// Also matrices re-encoded on the heap by `--quantize`, which are then held twice (`--int8-activations`).
    case all
}

/// Opens models in the formats we support and binds them to official weight names.
public enum ModelLoader {
    /// Opens a model folder or file. `maxSeqLen` bounds the context (and the KV cache). `quantize` re-encodes the
    /// large matrices; `panels` says which Q4_0/Q4_1/Q8_0 ones are repacked for the integer GEMM.
    public static func load(path: String, maxSeqLen: Int = 2048, quantize: DType? = nil, panels: PanelPacking = .none) throws -> LoadedModel {
        let loaded = try loadAsStored(path: path, maxSeqLen: maxSeqLen)
        guard quantize != nil || panels != .none else { return loaded }
        var weights = loaded.model.weights
        if let quantize { weights = try weights.quantized(to: quantize) }
        if panels != .none { weights = weights.packedForInt8(mappedOnly: panels == .mapped) }
        let model = try LlamaModel(config: loaded.model.config, weights: weights)
        return LoadedModel(model: model, source: loaded.source, tokenizerPath: loaded.tokenizerPath, format: loaded.format)
    }

    /// Opens a model keeping its stored dtypes.
    static func loadAsStored(path: String, maxSeqLen: Int) throws -> LoadedModel {
        switch try FileFormat.detect(path: path) {
        case .metaFolder: return try loadMeta(directory: path, maxSeqLen: maxSeqLen)
        case .huggingFaceFolder: return try loadHuggingFace(directory: path, maxSeqLen: maxSeqLen)
        case .gguf: return try loadGGUF(path: path, maxSeqLen: maxSeqLen)
        default:
            throw AdapterError.unsupported("\(path): unsupported model file (expected an official LLaMA folder, a Hugging Face folder or a .gguf file)")
        }
    }

    /// The keys of a Hugging Face LLaMA-family `config.json` that the model needs.
    struct HFConfig: Decodable {
        var model_type: String?
        var hidden_size: Int
        var num_hidden_layers: Int
        var num_attention_heads: Int
        var num_key_value_heads: Int?
        var intermediate_size: Int
        var rms_norm_eps: Double?
        var rope_theta: Double?
        var vocab_size: Int?
        var tie_word_embeddings: Bool?
        var max_position_embeddings: Int?
        var head_dim: Int?
        // Keys that change the forward pass; refused unless they say "the plain LLaMA math".
        var rope_scaling: RopeScaling?
        var attention_bias: Bool?
        var mlp_bias: Bool?
        var partial_rotary_factor: Double?
        var hidden_act: String?
        var sliding_window: Int?
        var use_sliding_window: Bool?
    }

    /// `rope_scaling` of a config.json: any value but null changes RoPE.
    struct RopeScaling: Decodable {
        var type: String?
        var rope_type: String?
    }

    /// Throws when a configuration key changes the math in a way this implementation does not compute.
    static func refuse(_ key: String, _ value: String, in path: String) throws -> Never {
        throw AdapterError.unsupported("\(path): '\(key)' = \(value) changes the model's arithmetic and is not implemented; refusing to compute a different model")
    }

    /// After binding: a tensor in the file that nothing used is an error (the model would silently differ
    /// from what its author meant). `allowed` lists names known to carry nothing the forward needs.
    static func checkAllUsed(_ source: TensorSource, used: Set<String>, allowed: Set<String>, path: String) throws {
        let unused = source.tensorNames.filter { !used.contains($0) && !allowed.contains($0) }.sorted()
        guard unused.isEmpty else {
            throw AdapterError.unsupported("\(path): \(unused.count) tensor(s) this LLaMA implementation does not use, e.g. '\(unused[0])' (a different architecture?)")
        }
    }

    /// Hugging Face folder: `config.json` + `model.safetensors` (or a sharded index). wq/wk are stored
    /// permuted for rotate-half RoPE and are put back into Meta's adjacent-pair layout at load (a copy of
    /// those two matrices per layer; everything else stays memory-mapped).
    public static func loadHuggingFace(directory: String, maxSeqLen: Int = 2048) throws -> LoadedModel {
        let cfgPath = directory + "/config.json"
        guard let data = FileManager.default.contents(atPath: cfgPath) else { throw AdapterError.io("cannot read \(cfgPath)") }
        let hf: HFConfig
        do { hf = try JSONDecoder().decode(HFConfig.self, from: data) } catch {
            throw AdapterError.format("\(cfgPath) is not a LLaMA-style config.json: \(error)")
        }
        if let t = hf.model_type, !["llama", "mistral"].contains(t) {
            throw AdapterError.unsupported("\(cfgPath): model_type '\(t)' is not supported (llama-family only)")
        }
        if let hd = hf.head_dim, hd.multipliedReportingOverflow(by: hf.num_attention_heads) != (hf.hidden_size, false) {
            throw AdapterError.unsupported("\(cfgPath): head_dim \(hd) × heads != hidden_size is not supported")
        }
        if let r = hf.rope_scaling { try refuse("rope_scaling", r.rope_type ?? r.type ?? "{...}", in: cfgPath) }
        if hf.attention_bias == true { try refuse("attention_bias", "true", in: cfgPath) }
        if hf.mlp_bias == true { try refuse("mlp_bias", "true", in: cfgPath) }
        if let f = hf.partial_rotary_factor, f != 1 { try refuse("partial_rotary_factor", "\(f)", in: cfgPath) }
        if let a = hf.hidden_act, a != "silu" { try refuse("hidden_act", "\"\(a)\"", in: cfgPath) }
        if hf.use_sliding_window == true, let w = hf.sliding_window { try refuse("sliding_window", "\(w)", in: cfgPath) }
        let source = try SafetensorsFolder(path: directory)
        try requireSupported(source, "model.embed_tokens.weight")
        guard let emb = source.info("model.embed_tokens.weight"), emb.shape.count == 2 else {
            throw AdapterError.format("\(directory): no model.embed_tokens.weight")
        }
        if let v = hf.vocab_size, v != emb.shape[0] {
            throw AdapterError.shape("\(cfgPath): vocab_size \(v) but model.embed_tokens.weight has \(emb.shape[0]) rows")
        }
        let contextLength = hf.max_position_embeddings ?? maxSeqLen
        guard contextLength > 0 else { throw AdapterError.format("\(cfgPath): max_position_embeddings \(contextLength) is not positive") }
        let config = LlamaConfig(
            dim: hf.hidden_size, nLayers: hf.num_hidden_layers, nHeads: hf.num_attention_heads,
            nKVHeads: hf.num_key_value_heads, vocabSize: emb.shape[0], hiddenDim: hf.intermediate_size,
            normEps: Float(hf.rms_norm_eps ?? 1e-6), ropeTheta: Float(hf.rope_theta ?? 10000),
            maxSeqLen: min(maxSeqLen, contextLength),
            tiedEmbeddings: (hf.tie_word_embeddings ?? false) || !source.contains("lm_head.weight"))
        try config.validate()
        var used = Set<String>()
        let weights = try LlamaWeights.bind(config: config, source: directory) { name in
            let n = WeightNames.huggingFace(name)
            guard hasEntry(source, n) else { return nil }
            used.insert(n)
            let t = try source.tensor(n)
            if name.hasSuffix("attention.wq.weight") { return try metaLayoutFromRotateHalf(t, heads: config.nHeads) }
            if name.hasSuffix("attention.wk.weight") { return try metaLayoutFromRotateHalf(t, heads: config.nKVHeads) }
            return t
        }
        // With tied embeddings transformers ignores a stored lm_head; rotary_emb.inv_freq is a cached table.
        var allowed = Set(source.tensorNames.filter { $0.hasSuffix("rotary_emb.inv_freq") })
        if config.tiedEmbeddings { allowed.insert("lm_head.weight") }
        try checkAllUsed(source, used: used, allowed: allowed, path: directory)
        let model = try LlamaModel(config: config, weights: weights)
        let tok = directory + "/tokenizer.json"
        return LoadedModel(model: model, source: source, tokenizerPath: FileManager.default.fileExists(atPath: tok) ? tok : nil,
                           format: "huggingface")
    }

    /// llama.cpp GGUF (architecture `llama`): configuration from `llama.*` keys, tensors renamed to official
    /// names. GGUF stores wq/wk in Meta's rotary layout already (the converter undoes the HF permutation).
    public static func loadGGUF(path: String, maxSeqLen: Int = 2048) throws -> LoadedModel {
        let file = try GGUFFile(path: path)
        // Typed accessors: building `metadata` would wrap the whole vocabulary (49152 strings for SmolLM2).
        let arch = file.string("general.architecture") ?? "?"
        guard arch == "llama" else {
            throw AdapterError.unsupported("\(path): GGUF architecture '\(arch)' is not supported (only llama)")
        }
        func int(_ key: String) throws -> Int {
            guard let v = file.int("llama." + key) else { throw AdapterError.format("\(path): GGUF metadata lacks llama.\(key)") }
            return v
        }
        try requireSupported(file, "token_embd.weight")
        guard let emb = file.info("token_embd.weight"), emb.shape.count == 2 else {
            throw AdapterError.format("\(path): no token_embd.weight")
        }
        let contextLength = file.int("llama.context_length") ?? maxSeqLen
        guard contextLength > 0 else { throw AdapterError.format("\(path): llama.context_length \(contextLength) is not positive") }
        var config = LlamaConfig(
            dim: try int("embedding_length"), nLayers: try int("block_count"), nHeads: try int("attention.head_count"),
            nKVHeads: file.int("llama.attention.head_count_kv"), vocabSize: emb.shape[0],
            hiddenDim: try int("feed_forward_length"),
            normEps: Float(file.double("llama.attention.layer_norm_rms_epsilon") ?? 1e-5),
            ropeTheta: Float(file.double("llama.rope.freq_base") ?? 10000),
            maxSeqLen: min(maxSeqLen, contextLength), tiedEmbeddings: !file.contains("output.weight"))
        try config.validate()
        config.maxSeqLen = min(maxSeqLen, contextLength)
        if let t = file.string("llama.rope.scaling.type"), t != "none" { try refuse("llama.rope.scaling.type", "\"\(t)\"", in: path) }
        if let f = file.double("llama.rope.scaling.factor"), f != 1, f != 0 { try refuse("llama.rope.scaling.factor", "\(f)", in: path) }
        if let d = file.int("llama.rope.dimension_count"), d != config.headDim { try refuse("llama.rope.dimension_count", "\(d) (head dim \(config.headDim))", in: path) }
        if let w = file.int("llama.attention.sliding_window"), w > 0 { try refuse("llama.attention.sliding_window", "\(w)", in: path) }
        var used = Set<String>()
        let weights = try LlamaWeights.bind(config: config, source: path) { name in
            let n = WeightNames.gguf(name)
            guard hasEntry(file, n) else { return nil }
            used.insert(n)
            return try file.tensor(n)
        }
        // rope_freqs.weight carries LLaMA-3.1-style frequency factors: not computed here, so it is not allowed.
        try checkAllUsed(file, used: used, allowed: [], path: path)
        let model = try LlamaModel(config: config, weights: weights)
        return LoadedModel(model: model, source: file, tokenizerPath: nil, format: "gguf")
    }

    /// Official Meta layout: `params.json`, `consolidated.NN.pth`, tokenizer in the folder or its parent.
    public static func loadMeta(directory: String, maxSeqLen: Int = 2048) throws -> LoadedModel {
        let params = try MetaParams.load(path: directory + "/params.json")
        if params.use_scaled_rope == true { try refuse("use_scaled_rope", "true", in: directory + "/params.json") }
        // Refuse a folder without weights instead of running uninitialised (the official demo's silent failure).
        let source = try MetaShards(directory: directory)
        guard let emb = source.info("tok_embeddings.weight"), emb.shape.count == 2 else {
            throw AdapterError.format("\(directory): no tok_embeddings.weight in the checkpoint")
        }
        if emb.shape[1] != params.dim {
            throw AdapterError.shape("\(directory): params.json says dim \(params.dim) but tok_embeddings.weight has width \(emb.shape[1])")
        }
        if let v = params.vocab_size, v > 0, v != emb.shape[0] {
            throw AdapterError.shape("\(directory): params.json says vocab_size \(v) but tok_embeddings.weight has \(emb.shape[0]) rows")
        }
        var config = LlamaConfig(
            dim: params.dim, nLayers: params.n_layers, nHeads: params.n_heads, nKVHeads: params.n_kv_heads,
            vocabSize: emb.shape[0], multipleOf: params.multiple_of ?? 256, ffnDimMultiplier: params.ffn_dim_multiplier,
            normEps: Float(params.norm_eps ?? 1e-5), ropeTheta: Float(params.rope_theta ?? 10000), maxSeqLen: maxSeqLen,
            tiedEmbeddings: !source.contains("output.weight"))
        try config.validate()
        if let w1 = source.info("layers.0.feed_forward.w1.weight"), w1.shape.count == 2, w1.shape[0] != config.hiddenDim {
            throw AdapterError.shape("\(directory): params.json implies feed-forward width \(config.hiddenDim) but layers.0.feed_forward.w1.weight has \(w1.shape[0]) rows")
        }
        if source.contains("layers.\(config.nLayers).attention.wq.weight") {
            throw AdapterError.shape("\(directory): params.json says n_layers \(config.nLayers) but the checkpoint has more layers")
        }
        config.maxSeqLen = maxSeqLen
        var used = Set<String>()
        let weights = try LlamaWeights.bind(config: config, source: directory) { name in
            guard source.contains(name) else { return nil }
            used.insert(name)
            return try source.tensor(name)
        }
        // LLaMA-1 files carry `rope.freqs`, the table the forward recomputes.
        try checkAllUsed(source, used: used, allowed: ["rope.freqs"], path: directory)
        let model = try LlamaModel(config: config, weights: weights)
        let candidates = [directory + "/tokenizer.model", (directory as NSString).deletingLastPathComponent + "/tokenizer.model"]
        let tok = candidates.first { FileManager.default.fileExists(atPath: $0) }
        return LoadedModel(model: model, source: source, tokenizerPath: tok, format: "meta")
    }
}

/// Whether `source` stores a tensor called `name`, also one of a type this program cannot load (so the
/// caller asks for it and reports the type, instead of calling it missing).
func hasEntry(_ source: TensorSource, _ name: String) -> Bool {
    if let g = source as? GGUFFile { return g.tensorInfo(name) != nil }
    if let f = source as? SafetensorsFile { return f.entry(name) != nil }
    if let f = source as? SafetensorsFolder { return f.shard(of: name)?.entry(name) != nil }
    return source.contains(name)
}

/// Throws the format's own "unsupported type" error when `name` exists in a type that cannot be loaded.
func requireSupported(_ source: TensorSource, _ name: String) throws {
    if hasEntry(source, name), source.info(name) == nil { _ = try source.tensor(name) }
}
