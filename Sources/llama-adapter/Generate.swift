import ArgumentParser
import Foundation
import LlamaAdapter

/// `llama-adapter generate`: one prompt in, generated text out (streamed, or one JSON object).
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text from a prompt.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var adapterOptions: AdapterOptions
    @OptionGroup var promptOptions: PromptOptions

    @OptionGroup var sampling: SamplingOptions

    @Option(name: .customLong("max-new-tokens"), help: "Maximum number of tokens to generate.")
    var maxNewTokens: Int = 256

    @Flag(help: "Print one JSON object {text, tokens, ...} instead of streaming text.")
    var json = false

    struct Output: Encodable {
        var text: String
        var tokens: [Int]
        var prompt_tokens: Int
        var expert_context: String?
        var stop_reason: StopReason
        var prefill_tokens_per_s: Double
        var decode_tokens_per_s: Double
    }

    func validate() throws {
        guard maxNewTokens >= 0 else { throw AdapterError.invalidArgument("--max-new-tokens must be non-negative") }
    }

    func run() throws {
        let container = try loadContainer(modelOptions, adapterOptions)
        let context = try adapterOptions.expertText(container)
        let prompt = container.tokenizer.encodePrompt(try promptOptions.formatted(container, context: context, layout: adapterOptions.contextLayout))
        let params = try sampling.parameters(container)
        // The sequence needs at most prompt + new tokens positions (the official total_len), so the cache is no larger.
        let positions = prompt.count.addingReportingOverflow(maxNewTokens)
        let session = try openSession(container, modelOptions, adapterOptions,
                                      capacity: positions.overflow ? nil : max(1, positions.partialValue))
        let result = try session.generate(prompt: prompt, maxNewTokens: maxNewTokens, sampling: params,
                                          onToken: json ? nil : { _, piece in writeOut(piece); return true })
        if json {
            try printJSON(Output(
                text: result.text, tokens: result.tokens, prompt_tokens: result.promptTokenCount, expert_context: context,
                stop_reason: result.stopReason,
                prefill_tokens_per_s: Double(result.promptTokenCount) / max(result.prefillSeconds, 1e-9),
                decode_tokens_per_s: Double(max(result.tokens.count - 1, 0)) / max(result.decodeSeconds, 1e-9)))
        } else {
            writeOut("\n")
        }
    }
}

/// `llama-adapter score`: log-probability of a continuation after a prompt.
struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Score a continuation: sum of its token log-probabilities.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var adapterOptions: AdapterOptions
    @OptionGroup var promptOptions: PromptOptions

    @Option(help: "The text whose tokens are scored after the prompt.")
    var continuation: String

    @Flag(help: "Print JSON (the default output is JSON too; the flag is accepted for symmetry).")
    var json = false

    func run() throws {
        let container = try loadContainer(modelOptions, adapterOptions)
        let session = try openSession(container, modelOptions, adapterOptions, capacity: 1)
        let context = try adapterOptions.expertText(container)
        try printJSON(try session.score(prompt: try promptOptions.formatted(container, context: context, layout: adapterOptions.contextLayout), continuation: continuation))
    }
}
