import ArgumentParser
import Foundation
import LlamaAdapter

/// `llama-adapter tokenize`: token ids of a text, without BOS/EOS.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text (no BOS/EOS).")

    @Option(help: "tokenizer.model, tokenizer.json or a .gguf model (its embedded vocabulary).")
    var tokenizer: String

    @Option(help: "Text to tokenize.")
    var text: String

    @Flag(help: "Print {\"tokens\": [...]}.")
    var json = false

    struct Output: Encodable { var tokens: [Int] }

    func run() throws {
        let tok = try openTokenizerOrModel(tokenizer)
        let ids = tok.encode(text)
        if json {
            try printJSON(Output(tokens: ids))
        } else {
            for id in ids { print("\(id)\t\(tok.piece(id) ?? "")") }
        }
    }
}

/// A tokenizer from a tokenizer file, or from a GGUF model's embedded vocabulary.
func openTokenizerOrModel(_ path: String) throws -> any Tokenizer {
    try ModelContainer.openTokenizer(path: path)
}
