import ArgumentParser
import Foundation
import AdapterCore

/// `llama-adapter tokenize`: token ids of a text, without BOS/EOS.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text (no BOS/EOS).")

    @Option(help: "tokenizer.model file.")
    var tokenizer: String

    @Option(help: "Text to tokenize.")
    var text: String

    @Flag(help: "Print {\"tokens\": [...]}.")
    var json = false

    struct Output: Encodable { var tokens: [Int] }

    func run() throws {
        let tok = try loadTokenizer(tokenizer)
        let ids = tok.encode(text)
        if json {
            try printJSON(Output(tokens: ids))
        } else {
            for id in ids { print("\(id)\t\(tok.piece(id) ?? "")") }
        }
    }
}
