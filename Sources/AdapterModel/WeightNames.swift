/// Maps official LLaMA weight names (`layers.3.attention.wq.weight`) to the names other formats use.
/// The model binds official names only; each format's loader supplies one of these mappings.
public enum WeightNames {
    /// One naming scheme: whole-model names, and per-layer names under a layer prefix.
    struct Scheme {
        let fixed: [String: String]
        let layerPrefix: String
        let perLayer: [String: String]
    }

    static let ggufScheme = Scheme(
        fixed: ["tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight", "output.weight": "output.weight"],
        layerPrefix: "blk.",
        perLayer: [
            "attention_norm.weight": "attn_norm.weight", "ffn_norm.weight": "ffn_norm.weight",
            "attention.wq.weight": "attn_q.weight", "attention.wk.weight": "attn_k.weight",
            "attention.wv.weight": "attn_v.weight", "attention.wo.weight": "attn_output.weight",
            "feed_forward.w1.weight": "ffn_gate.weight", "feed_forward.w2.weight": "ffn_down.weight",
            "feed_forward.w3.weight": "ffn_up.weight",
            // Optional biases llama.cpp's LLaMA loader accepts (what `export` writes for a bias adapter).
            "attention.wq.bias": "attn_q.bias", "attention.wk.bias": "attn_k.bias", "attention.wv.bias": "attn_v.bias",
            "attention.wo.bias": "attn_output.bias", "feed_forward.w1.bias": "ffn_gate.bias",
            "feed_forward.w2.bias": "ffn_down.bias", "feed_forward.w3.bias": "ffn_up.bias",
        ])

    static let huggingFaceScheme = Scheme(
        fixed: ["tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"],
        layerPrefix: "model.layers.",
        perLayer: [
            "attention_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
            "attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
            "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
            "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w2.weight": "mlp.down_proj.weight",
            "feed_forward.w3.weight": "mlp.up_proj.weight",
        ])

    /// llama.cpp GGUF names (`blk.3.attn_q.weight`).
    public static func gguf(_ official: String) -> String { map(official, ggufScheme) }

    /// Hugging Face transformers names (`model.layers.3.self_attn.q_proj.weight`).
    public static func huggingFace(_ official: String) -> String { map(official, huggingFaceScheme) }

    private static func map(_ official: String, _ scheme: Scheme) -> String {
        if let f = scheme.fixed[official] { return f }
        guard official.hasPrefix("layers.") else { return official }
        let rest = official.dropFirst("layers.".count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]),
              let part = scheme.perLayer[String(rest[rest.index(after: dot)...])] else { return official }
        return "\(scheme.layerPrefix)\(layer).\(part)"
    }
}
