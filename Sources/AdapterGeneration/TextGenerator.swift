import Foundation
import AdapterCore
import AdapterModel
import AdapterTokenizers

/// What a generation produced.
public struct GenerationResult: Sendable {
    /// The tokenizer's decode of `tokens`.
    public var text: String
    /// Generated ids, EOS excluded.
    public var tokens: [Int]
    /// Number of prompt tokens (BOS included).
    public var promptTokenCount: Int
    /// Why generation stopped: "eos" or "length".
    public var stopReason: String
    /// Seconds spent on the prompt (prefill).
    public var prefillSeconds: Double
    /// Seconds spent generating after the prompt.
    public var decodeSeconds: Double
}

/// Runs the decoding loop: prefill the prompt, then sample one token at a time with the KV cache.
public final class TextGenerator {
    /// The model.
    public let model: LlamaModel
    /// The tokenizer matching the model.
    public let tokenizer: any Tokenizer

    /// Pairs a model with its tokenizer.
    public init(model: LlamaModel, tokenizer: any Tokenizer) {
        self.model = model
        self.tokenizer = tokenizer
    }

    /// Generates up to `maxNewTokens` after `prompt`, stopping at EOS. `onText` receives text as it
    /// becomes final (through `StreamingDecoder`, so spaces and multi-byte characters split across
    /// tokens come out right, and the chunks add up to the final text).
    public func generate(prompt: [Int], maxNewTokens: Int, sampling: SamplingParameters, stopIds: Set<Int>? = nil,
                         cache: KVCache? = nil, prompts: AdapterPrompts? = nil,
                         onText: ((String) -> Void)? = nil) throws -> GenerationResult {
        let stops = stopIds ?? Set([tokenizer.eosId].compactMap { $0 })
        guard !prompt.isEmpty else { throw AdapterError.invalidArgument("the prompt is empty") }
        let capacity = min(model.config.maxSeqLen, model.rope.maxPos)
        let cache = cache ?? model.makeCache(capacity: min(capacity, prompt.count + maxNewTokens))
        if let prompts { cache.prompts = prompts }
        let used = cache.length + prompt.count
        guard used < cache.capacity || (maxNewTokens == 0 && used <= cache.capacity) else {
            throw AdapterError.invalidArgument("the prompt has \(used) tokens but the context holds \(cache.capacity)")
        }
        // As the official generate: total_len = min(max_seq_len, prompt + max_gen_len) positions, so a long
        // prompt gets max_seq_len - prompt new tokens (the last one never needs a cache slot).
        let limit = min(maxNewTokens, min(capacity, cache.capacity + 1) - used)
        var sampler = Sampler(sampling)
        let t0 = DispatchTime.now().uptimeNanoseconds
        var logits = try model.forwardLogits(tokens: prompt, cache: cache)
        let t1 = DispatchTime.now().uptimeNanoseconds
        var generated: [Int] = []
        var stream = StreamingDecoder(tokenizer: tokenizer)
        var stopReason = limit < maxNewTokens ? "context" : "length"
        while generated.count < limit {
            let next = sampler.sample(logits)
            if stops.contains(next) { stopReason = "eos"; break }
            generated.append(next)
            if let onText {
                let piece = stream.add(next)
                if !piece.isEmpty { onText(piece) }
            }
            if generated.count == limit { break }
            logits = try model.forwardLogits(tokens: [next], cache: cache)
        }
        let t2 = DispatchTime.now().uptimeNanoseconds
        let text = tokenizer.decode(generated)
        if let onText {
            let rest = stream.finish()
            if !rest.isEmpty { onText(rest) }
        }
        return GenerationResult(text: text, tokens: generated, promptTokenCount: prompt.count, stopReason: stopReason,
                                prefillSeconds: Double(t1 - t0) / 1e9, decodeSeconds: Double(t2 - t1) / 1e9)
    }

    /// Sum of log-probabilities of `continuation` tokens given everything before them, and their count.
    /// `tokens` is the whole sequence; positions `from..<tokens.count` are scored.
    public func score(tokens: [Int], from: Int, prompts: AdapterPrompts? = nil) throws -> (logprob: Double, count: Int) {
        guard from >= 1, from <= tokens.count else {
            throw AdapterError.invalidArgument("nothing to score: the continuation adds no tokens")
        }
        let cache = model.makeCache(capacity: tokens.count)
        cache.prompts = prompts
        let logits = try model.forward(tokens: tokens, cache: cache, allLogits: true)
        let V = model.config.vocabSize
        var total = 0.0
        for pos in from..<tokens.count {
            let row = logits[(pos - 1) * V ..< pos * V]
            let m = Double(row.max()!)
            let lse = m + log(row.reduce(0.0) { $0 + exp(Double($1) - m) })
            total += Double(row[row.startIndex + tokens[pos]]) - lse
        }
        return (total, tokens.count - from)
    }
}
