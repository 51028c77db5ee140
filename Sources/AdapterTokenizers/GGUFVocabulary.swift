// Tokenizers described by GGUF metadata (`tokenizer.ggml.*`): `llama` (SentencePiece arrays, LLaMA-1/2
// and their fine-tunes) and `gpt2` (byte-level BPE, SmolLM2, Qwen2, LLaMA-3). The GGUF reader lives in
// the formats layer; this layer only needs its typed key lookups.

/// Typed lookups of GGUF metadata keys (implemented by the GGUF reader).
public protocol GGUFMetadata {
    /// The file, for messages.
    var path: String { get }
    /// A string value.
    func string(_ key: String) -> String?
    /// An integer value of any width.
    func int(_ key: String) -> Int?
    /// A boolean value.
    func bool(_ key: String) -> Bool?
    /// An array of strings.
    func stringArray(_ key: String) -> [String]?
    /// An array of floats.
    func floatArray(_ key: String) -> [Float]?
    /// An array of integers.
    func intArray(_ key: String) -> [Int]?
}

/// Builds the tokenizer a GGUF file describes, with its BOS rule (`tokenizer.ggml.add_bos_token`;
/// default true for `llama`, false for `gpt2`, as llama.cpp).
public func makeTokenizer(gguf g: GGUFMetadata) throws -> any Tokenizer {
    let kind = g.string("tokenizer.ggml.model") ?? "?"
    func checkedId(_ key: String, count: Int) throws -> Int? {
        guard let id = g.int(key) else { return nil }
        guard id >= 0 && id < count else {
            throw TokenizerError("\(key) \(id) is outside the vocabulary of \(count) tokens")
        }
        return id
    }
    guard let tokens = g.stringArray("tokenizer.ggml.tokens") else { throw TokenizerError("GGUF lacks tokenizer.ggml.tokens") }
    let bos = try checkedId("tokenizer.ggml.bos_token_id", count: tokens.count)
    let eos = try checkedId("tokenizer.ggml.eos_token_id", count: tokens.count)
    let unk = try checkedId("tokenizer.ggml.unknown_token_id", count: tokens.count)
    switch kind {
    case "llama":
        return try SentencePieceTokenizer(
            tokens: tokens, scores: g.floatArray("tokenizer.ggml.scores"), types: g.intArray("tokenizer.ggml.token_type"),
            unkId: unk, bosId: bos, eosId: eos, addDummyPrefix: g.bool("tokenizer.ggml.add_space_prefix") ?? true,
            addsBOS: g.bool("tokenizer.ggml.add_bos_token") ?? true)
    case "gpt2":
        guard let merges = g.stringArray("tokenizer.ggml.merges") else { throw TokenizerError("GGUF lacks tokenizer.ggml.merges") }
        return try ByteLevelBPETokenizer(
            tokens: tokens, merges: merges, tokenTypes: g.intArray("tokenizer.ggml.token_type"),
            bosId: bos, eosId: eos, unkId: unk, preTokenizer: g.string("tokenizer.ggml.pre") ?? "default",
            addBosToken: g.bool("tokenizer.ggml.add_bos_token") ?? false)
    default:
        throw TokenizerError("GGUF tokenizer '\(kind)' is not supported (llama SentencePiece and gpt2 BPE are); pass --tokenizer PATH")
    }
}
