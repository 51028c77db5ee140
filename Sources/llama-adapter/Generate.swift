import ArgumentParser
import Foundation
import AdapterCore
import AdapterGeneration

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
        var stop_reason: String
        var prefill_tokens_per_s: Double
        var decode_tokens_per_s: Double
    }

    func validate() throws {
        guard maxNewTokens >= 0 else { throw AdapterError.invalidArgument("--max-new-tokens must be non-negative") }
    }

    func run() throws {
        let bundle = try modelOptions.load(withAdapter: adapterOptions.adapter != nil)
        let prompts = try adapterOptions.prepare(bundle)
        let text = try promptOptions.formatted(bundle)
        let generator = TextGenerator(model: bundle.model, tokenizer: bundle.tokenizer)
        let prompt = bundle.encodePrompt(text)
        let result = try generator.generate(prompt: prompt, maxNewTokens: maxNewTokens, sampling: sampling.parameters(),
                                            stopIds: bundle.stopIds, prompts: prompts, onText: json ? nil : { writeOut($0) })
        if json {
            try printJSON(Output(
                text: result.text, tokens: result.tokens, prompt_tokens: result.promptTokenCount,
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

    struct Output: Encodable {
        var logprob: Double
        var tokens: Int
    }

    func run() throws {
        let bundle = try modelOptions.load(withAdapter: adapterOptions.adapter != nil)
        let prompts = try adapterOptions.prepare(bundle)
        let text = try promptOptions.formatted(bundle)
        let generator = TextGenerator(model: bundle.model, tokenizer: bundle.tokenizer)
        // The contract: encode(prompt + continuation, BOS, EOS), scored from len(encode(prompt, BOS)) on.
        let all = bundle.tokenizer.encode(text + continuation, addBos: bundle.addBOS, addEos: true)
        let start = bundle.encodePrompt(text).count
        guard all.count <= bundle.model.config.maxSeqLen else {
            throw AdapterError.invalidArgument("prompt and continuation have \(all.count) tokens but the context holds \(bundle.model.config.maxSeqLen)")
        }
        let (logprob, count) = try generator.score(tokens: all, from: start, prompts: prompts)
        try printJSON(Output(logprob: logprob, tokens: count))
    }
}
