import ArgumentParser
import Foundation
import AdapterCore
import AdapterGeneration
import AdapterTokenizers

/// `llama-adapter chat`: a multi-turn terminal conversation with streaming output. The KV cache is kept
/// between turns: each turn re-renders the conversation and feeds only the tokens the cache has not seen.
struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk to a model in the terminal (/reset clears the conversation, /exit or Ctrl-D quits).")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var adapterOptions: AdapterOptions

    @Option(help: "Prompt template: chat (default when the model has one), alpaca or raw.")
    var template: String?

    @Option(help: "System message (chat template; with alpaca it replaces the header).")
    var system: String?

    @OptionGroup var sampling: SamplingOptions

    @Option(name: .customLong("max-new-tokens"), help: "Maximum tokens per answer.")
    var maxNewTokens: Int = 512

    func run() throws {
        let bundle = try modelOptions.load(withAdapter: adapterOptions.adapter != nil)
        // The image is encoded once; its adapter prompts serve every turn.
        let prompts = try adapterOptions.prepare(bundle)
        let chosen: PromptTemplate
        if let template {
            guard let t = PromptTemplate(rawValue: template) else { throw AdapterError.invalidArgument("unknown template '\(template)'") }
            chosen = t
        } else {
            chosen = (bundle.chatTemplate != nil && bundle.model.adapter == nil) ? .chat : .alpaca
        }
        if chosen == .chat && bundle.chatTemplate == nil {
            throw AdapterError.unsupported("this model has no chat template; use --template alpaca or raw")
        }
        let generator = TextGenerator(model: bundle.model, tokenizer: bundle.tokenizer)
        let cache = bundle.model.makeCache()
        cache.prompts = prompts
        var cached: [Int] = []
        var messages: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        var turn: UInt64 = 0
        let interactive = isatty(STDIN_FILENO) != 0
        while true {
            if interactive { writeOut("> ") }
            guard let line = readLine(strippingNewline: true) else { break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            if input == "/exit" || input == "/quit" { break }
            if input == "/reset" {
                messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
                cache.reset()
                cached = []
                writeOut("(conversation cleared)\n")
                continue
            }
            messages.append(ChatMessage(role: "user", content: input))
            let text: String
            switch chosen {
            case .chat: text = try renderChat(bundle, messages: messages, addGenerationPrompt: true)
            case .alpaca: text = try renderChat(bundle, messages: messages, addGenerationPrompt: true, source: ChatTemplate.alpaca)
            case .raw: text = rawTranscript(messages)
            }
            let ids = bundle.encodePrompt(text)
            if !(ids.count > cached.count && Array(ids.prefix(cached.count)) == cached) {
                cache.reset()
                cached = []
            }
            if ids.count >= cache.capacity {
                writeOut("(the conversation no longer fits the context of \(cache.capacity) tokens; use /reset)\n")
                messages.removeLast()
                continue
            }
            let parameters = sampling.parameters(turn: turn)
            turn += 1
            let result = try generator.generate(prompt: Array(ids[cached.count...]), maxNewTokens: maxNewTokens,
                                                sampling: parameters, stopIds: bundle.stopIds, cache: cache,
                                                onText: { writeOut($0) })
            writeOut("\n")
            cached = ids + result.tokens
            messages.append(ChatMessage(role: "assistant", content: result.text))
        }
    }

    /// The conversation as plain lines, for `--template raw`.
    func rawTranscript(_ messages: [ChatMessage]) -> String {
        messages.map { $0.role == "assistant" ? $0.content + "\n\n" : $0.content + "\n" }.joined()
    }
}
