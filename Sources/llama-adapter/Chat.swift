import ArgumentParser
import Foundation
import LlamaAdapter

/// `llama-adapter chat`: a multi-turn terminal conversation with streaming output. The session's cache is
/// kept between turns: each turn re-renders the conversation and feeds only the tokens the cache has not seen.
struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk to a model in the terminal (/reset clears the conversation, /exit or Ctrl-D quits).")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var adapterOptions: AdapterOptions

    @Option(help: "Prompt template (default: chat when the model has one and no adapter is given, else alpaca).")
    var template: PromptTemplate?

    @Option(help: "System message (chat template; with alpaca it replaces the header).")
    var system: String?

    @OptionGroup var sampling: SamplingOptions

    @Option(name: .customLong("max-new-tokens"), help: "Maximum tokens per answer.")
    var maxNewTokens: Int = 512

    func validate() throws {
        guard maxNewTokens >= 0 else { throw AdapterError.invalidArgument("--max-new-tokens must be non-negative") }
    }

    func run() throws {
        let container = try loadContainer(modelOptions, adapterOptions)
        // The image is encoded once; its adapter prompts serve every turn.
        let chat = try ChatSession(session: try openSession(container, modelOptions, adapterOptions), template: template, system: system)
        // Expert text about the image (OCR, caption) opens the conversation's first user message.
        let context = try adapterOptions.expertText(container)
        var pendingContext = context
        var turn: UInt64 = 0
        let interactive = isatty(STDIN_FILENO) != 0
        while true {
            if interactive { writeOut("> ") }
            guard let line = readLine(strippingNewline: true) else { break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            if input == "/exit" || input == "/quit" { break }
            if input == "/reset" {
                chat.reset()
                pendingContext = context
                writeOut("(conversation cleared)\n")
                continue
            }
            do {
                // The experts' text opens the first message, laid out as --context-layout says (input: before).
                let message = pendingContext.map {
                    promptWithContext(input, context: $0, template: .chat, input: nil, layout: adapterOptions.contextLayout).prompt
                } ?? input
                pendingContext = nil
                _ = try chat.respond(to: message, maxNewTokens: maxNewTokens, sampling: try sampling.parameters(container, turn: turn),
                                     onText: { writeOut($0); return true })
                writeOut("\n")
                turn += 1
            } catch GenerationError.contextFull(_, let capacity) {
                writeOut("(the conversation no longer fits the context of \(capacity) tokens; use /reset)\n")
            }
        }
    }
}
