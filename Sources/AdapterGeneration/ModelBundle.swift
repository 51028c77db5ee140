import Foundation
import AdapterCore
import AdapterFormats
import AdapterModel
import AdapterTokenizers

/// A model with everything needed to talk to it: its tokenizer, BOS rule, stop tokens and chat template,
/// each taken from the model's own files (GGUF metadata, tokenizer.json/tokenizer_config.json, or the
/// official layout's tokenizer.model).
public struct ModelBundle {
    /// The loaded model.
    public let loaded: LoadedModel
    /// The tokenizer.
    public let tokenizer: any Tokenizer
    /// Whether prompts start with BOS (LLaMA: yes; SmolLM2: `tokenizer.ggml.add_bos_token` = false).
    public let addBOS: Bool
    /// Ids that end generation (EOS plus end-of-turn tokens such as `<|im_end|>`).
    public let stopIds: Set<Int>
    /// The model's Jinja chat template, if it ships one.
    public let chatTemplate: String?
    /// BOS and EOS texts, for templates that print them.
    public let bosToken: String
    /// See `bosToken`.
    public let eosToken: String

    /// The model itself.
    public var model: LlamaModel { loaded.model }

    /// Opens `modelPath` and its tokenizer (`tokenizerPath` overrides the one found with the model).
    public static func load(modelPath: String, tokenizerPath: String? = nil, maxSeqLen: Int = 2048, quantize: DType? = nil) throws -> ModelBundle {
        let loaded = try ModelLoader.load(path: modelPath, maxSeqLen: maxSeqLen, quantize: quantize)
        var tokenizer: any Tokenizer
        var addBOS = true
        var template: String?
        if let tokenizerPath {
            tokenizer = try openTokenizer(path: tokenizerPath)
            if let bpe = tokenizer as? ByteLevelBPETokenizer { addBOS = bpe.addBosToken }
        } else if let gguf = loaded.source as? GGUFFile {
            do { (tokenizer, addBOS) = try ggufTokenizer(gguf) } catch let e as TokenizerError {
                throw AdapterError.format("\(gguf.path): \(e.description)")
            }
            template = gguf.string("tokenizer.chat_template")
        } else if let path = loaded.tokenizerPath {
            tokenizer = try openTokenizer(path: path)
            if let bpe = tokenizer as? ByteLevelBPETokenizer { addBOS = bpe.addBosToken }
            template = hfChatTemplate(folder: (path as NSString).deletingLastPathComponent)
        } else {
            throw AdapterError.invalidArgument("no tokenizer found next to \(modelPath); pass --tokenizer PATH")
        }
        if tokenizer.vocabSize > loaded.model.config.vocabSize {
            throw AdapterError.shape("the tokenizer has \(tokenizer.vocabSize) entries but the model's vocabulary has \(loaded.model.config.vocabSize)")
        }
        var stops = Set<Int>()
        if let eos = tokenizer.eosId { stops.insert(eos) }
        if let bpe = tokenizer as? ByteLevelBPETokenizer { stops.formUnion(bpe.endOfGenerationIds) }
        let bos = tokenizer.bosId.flatMap { tokenizer.piece($0) } ?? ""
        let eos = tokenizer.eosId.flatMap { tokenizer.piece($0) } ?? ""
        return ModelBundle(loaded: loaded, tokenizer: tokenizer, addBOS: addBOS, stopIds: stops, chatTemplate: template,
                           bosToken: bos, eosToken: eos)
    }

    /// Opens a tokenizer file: SentencePiece `tokenizer.model` or Hugging Face `tokenizer.json`.
    public static func openTokenizer(path: String) throws -> any Tokenizer {
        guard FileManager.default.fileExists(atPath: path) else { throw AdapterError.io("tokenizer file \(path) does not exist") }
        if path.hasSuffix(".json") { return try ByteLevelBPETokenizer(tokenizerJSON: path) }
        return try SentencePieceTokenizer(path: path)
    }

    /// The tokenizer described by GGUF metadata (`tokenizer.ggml.*`).
    static func ggufTokenizer(_ g: GGUFFile) throws -> (any Tokenizer, Bool) {
        let kind = g.string("tokenizer.ggml.model") ?? "?"
        if kind == "llama" {
            // SentencePiece vocabulary (LLaMA-1/2 and their fine-tunes).
            guard let tokens = g.stringArray("tokenizer.ggml.tokens") else {
                throw AdapterError.format("\(g.path): GGUF lacks tokenizer.ggml.tokens")
            }
            let tok = try SentencePieceTokenizer(
                tokens: tokens, scores: g.floatArray("tokenizer.ggml.scores"), types: g.intArray("tokenizer.ggml.token_type"),
                unkId: g.int("tokenizer.ggml.unknown_token_id"), bosId: g.int("tokenizer.ggml.bos_token_id"),
                eosId: g.int("tokenizer.ggml.eos_token_id"), addDummyPrefix: g.bool("tokenizer.ggml.add_space_prefix") ?? true)
            return (tok, g.bool("tokenizer.ggml.add_bos_token") ?? true)
        }
        guard kind == "gpt2" else {
            throw AdapterError.unsupported("\(g.path): GGUF tokenizer '\(kind)' is not supported (llama SentencePiece and gpt2 BPE are); pass --tokenizer PATH")
        }
        guard let tokens = g.stringArray("tokenizer.ggml.tokens"), let merges = g.stringArray("tokenizer.ggml.merges") else {
            throw AdapterError.format("\(g.path): GGUF lacks tokenizer.ggml.tokens or tokenizer.ggml.merges")
        }
        let addBOS = g.bool("tokenizer.ggml.add_bos_token") ?? false
        let tok = try ByteLevelBPETokenizer(
            tokens: tokens, merges: merges, tokenTypes: g.intArray("tokenizer.ggml.token_type"),
            bosId: g.int("tokenizer.ggml.bos_token_id"), eosId: g.int("tokenizer.ggml.eos_token_id"),
            unkId: g.int("tokenizer.ggml.unknown_token_id"), preTokenizer: g.string("tokenizer.ggml.pre") ?? "default",
            addBosToken: addBOS)
        return (tok, tok.addBosToken)
    }

    /// `chat_template` from a Hugging Face `tokenizer_config.json`, if present.
    static func hfChatTemplate(folder: String) -> String? {
        guard let data = FileManager.default.contents(atPath: folder + "/tokenizer_config.json"),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return obj["chat_template"] as? String
    }

    /// Prompt ids for already-formatted text, with BOS when the model wants it.
    public func encodePrompt(_ text: String) -> [Int] {
        tokenizer.encode(text, addBos: addBOS, addEos: false)
    }
}
