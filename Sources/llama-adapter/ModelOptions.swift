import ArgumentParser
import Foundation
import AdapterCore
import AdapterModel
import AdapterTokenizers
import AdapterGeneration

/// Options shared by every command that loads a model.
struct ModelOptions: ParsableArguments {
    @Option(help: "Official LLaMA folder (params.json + consolidated.*.pth).")
    var model: String

    @Option(help: "tokenizer.model (default: next to the weights or in their parent folder).")
    var tokenizer: String?

    @Option(name: .customLong("max-seq-len"), help: "Context length (KV cache size).")
    var maxSeqLen: Int = 2048

    /// Loads the model and its tokenizer, checking that they agree.
    func load() throws -> (LoadedModel, any Tokenizer) {
        guard maxSeqLen > 0 else { throw AdapterError.invalidArgument("--max-seq-len must be positive") }
        let loaded = try ModelLoader.load(path: model, maxSeqLen: maxSeqLen)
        guard let tokPath = tokenizer ?? loaded.tokenizerPath else {
            throw AdapterError.invalidArgument("no tokenizer found next to \(model); pass --tokenizer PATH")
        }
        let tok = try loadTokenizer(tokPath)
        if tok.vocabSize > loaded.model.config.vocabSize {
            throw AdapterError.shape("tokenizer \(tokPath) has \(tok.vocabSize) pieces but the model's vocabulary has \(loaded.model.config.vocabSize)")
        }
        return (loaded, tok)
    }
}

/// Opens a tokenizer file (SentencePiece `tokenizer.model`).
func loadTokenizer(_ path: String) throws -> any Tokenizer {
    guard FileManager.default.fileExists(atPath: path) else { throw AdapterError.io("tokenizer file \(path) does not exist") }
    return try SentencePieceTokenizer(path: path)
}

/// Prompt options shared by `generate` and `score`.
struct PromptOptions: ParsableArguments {
    @Option(help: "The prompt (with --template alpaca: the instruction).")
    var prompt: String

    @Option(help: "Prompt template: raw or alpaca (default: raw for a base model).")
    var template: String?

    @Option(help: "Input field of the Alpaca template (an empty string still selects the with-input template).")
    var input: String?

    /// The prompt text after applying the template.
    func formatted() throws -> String {
        let name = template ?? "raw"
        guard let t = PromptTemplate(rawValue: name) else {
            throw AdapterError.invalidArgument("unknown template '\(name)' (expected raw or alpaca)")
        }
        switch t {
        case .raw:
            if input != nil { throw AdapterError.invalidArgument("--input needs --template alpaca") }
            return prompt
        case .alpaca: return PromptTemplate.alpaca(prompt, input: input)
        case .chat: throw AdapterError.unsupported("this model has no chat template; use --template raw or alpaca")
        }
    }
}
