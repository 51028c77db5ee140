// A session: one conversation's or one request's state on a shared `ModelContainer` (KV cache, scratch,
// the image's adaption prompts, modes), and the decoding loop over it: prefill, sample, stream, stop.
import Foundation
import Synchronization
import AdapterCore
import AdapterModel
import AdapterTokenizers

/// Why generation stopped.
public enum StopReason: String, Sendable, Codable {
    /// The model produced a stop id (EOS or an end-of-turn token).
    case eos
    /// `maxNewTokens` were generated.
    case length
    /// The context filled up before `maxNewTokens`.
    case context
    /// The caller cancelled (a callback returned false, or the stream's consumer went away).
    case cancelled
}

/// What a generation produced.
public struct GenerationResult: Sendable {
    /// The tokenizer's decode of `tokens`.
    public var text: String
    /// Generated ids, stop id excluded.
    public var tokens: [Int]
    /// Number of prompt tokens (BOS included).
    public var promptTokenCount: Int
    /// Why generation stopped.
    public var stopReason: StopReason
    /// Seconds spent on the prompt (prefill of the tokens the cache did not hold yet).
    public var prefillSeconds: Double
    /// Seconds spent generating after the prompt.
    public var decodeSeconds: Double
}

/// One step of a streamed generation.
public enum GenerationEvent: Sendable {
    /// A generated token and the text that became final with it (often "", e.g. half a UTF-8 character);
    /// the texts add up to the result's text. A last event with a nil id flushes text held back at the end.
    case token(id: Int?, text: String)
    /// Generation ended.
    case finished(GenerationResult)
}

/// Log-probability of a continuation.
public struct ScoreResult: Sendable, Codable, Equatable {
    /// Sum of the continuation tokens' log-probabilities (natural log).
    public var logprob: Double
    /// Number of scored tokens (EOS included).
    public var tokens: Int
}

/// Errors of the generation loop a caller may want to handle.
public enum GenerationError: Error, CustomStringConvertible, Sendable {
    /// The prompt does not fit the session's context.
    case contextFull(tokens: Int, capacity: Int)
    /// The prompt has no tokens.
    case emptyPrompt

    /// One line for the user.
    public var description: String {
        switch self {
        case .contextFull(let n, let c): return "the prompt has \(n) tokens but the context holds \(c)"
        case .emptyPrompt: return "the prompt is empty"
        }
    }
}

/// One sequence on a shared model. Calls on one session are serialised (a lock); open one session per
/// concurrent request. The session keeps what its cache holds, so a follow-up prompt that extends the
/// previous sequence (a chat turn) only prefills the new tokens.
public final class Session: @unchecked Sendable {
    // @unchecked: every mutable property is touched only while `lock` is held.

    /// The model this session runs on.
    public let container: ModelContainer
    /// Warnings found while opening the session (e.g. early fusion into untrained gates).
    public let warnings: [String]
    private let state: DecoderState
    private var cached: [Int] = []
    private let lock = NSLock()

    init(container: ModelContainer, state: DecoderState, warnings: [String]) {
        self.container = container
        self.state = state
        self.warnings = warnings
    }

    /// Positions the session can hold.
    public var capacity: Int { state.capacity }

    /// Token ids the session's cache holds, in order.
    public var cachedTokens: [Int] { lock.withLock { cached } }

    /// Forgets the cached sequence (keeps the image's prompts and the modes).
    public func reset() {
        lock.withLock {
            state.reset()
            cached = []
        }
    }

    /// Generates up to `maxNewTokens` after `prompt` (the whole sequence the model should see; a cached
    /// prefix of it is reused), stopping at the tokenizer's stop ids. `onToken` receives each token with the
    /// text that became final (through `StreamingDecoder`, so multi-byte characters split across tokens come
    /// out whole); returning false cancels. Follows the official `generate` length rule: total positions are
    /// min(context, prompt + maxNewTokens), so a long prompt gets context − prompt new tokens.
    public func generate(prompt: [Int], maxNewTokens: Int, sampling: SamplingParameters? = nil,
                         onToken: ((Int?, String) -> Bool)? = nil) throws -> GenerationResult {
        try lock.withLock { try generateLocked(prompt: prompt, maxNewTokens: maxNewTokens, sampling: sampling, onToken: onToken) }
    }

    /// Formats `prompt` with the container's template rules and generates (see `generate(prompt:)`).
    public func generate(text prompt: String, template: PromptTemplate? = nil, maxNewTokens: Int = 256,
                         sampling: SamplingParameters? = nil, onToken: ((Int?, String) -> Bool)? = nil) throws -> GenerationResult {
        let ids = container.tokenizer.encodePrompt(try container.formatPrompt(prompt, template: template))
        return try generate(prompt: ids, maxNewTokens: maxNewTokens, sampling: sampling, onToken: onToken)
    }

    /// The same generation as an `AsyncSequence`: it runs on its own thread (decoding is long, blocking
    /// work that does not belong on the cooperative pool), at most `GenerationStream.lookahead` tokens ahead
    /// of the consumer, and stops there when the consuming task is cancelled or stops iterating.
    public func stream(prompt: [Int], maxNewTokens: Int, sampling: SamplingParameters? = nil) -> GenerationStream {
        let credits = DispatchSemaphore(value: GenerationStream.lookahead)
        let events = AsyncThrowingStream<GenerationEvent, Error> { continuation in
            let cancelled = Atomic<Bool>(false)
            continuation.onTermination = { _ in
                cancelled.store(true, ordering: .sequentiallyConsistent)
                credits.signal()  // a producer waiting for the consumer wakes, sees the flag and stops
            }
            let thread = Thread { [self] in
                do {
                    let result = try self.generate(prompt: prompt, maxNewTokens: maxNewTokens, sampling: sampling) { id, text in
                        continuation.yield(.token(id: id, text: text))
                        // Without this bound a fast model would run to maxNewTokens before a slow consumer
                        // had the chance to stop it.
                        credits.wait()
                        if cancelled.load(ordering: .sequentiallyConsistent) { credits.signal(); return false }
                        return true
                    }
                    continuation.yield(.finished(result))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.stackSize = 1 << 22
            thread.start()
        }
        return GenerationStream(events: events, credits: credits)
    }

    private func generateLocked(prompt: [Int], maxNewTokens: Int, sampling: SamplingParameters?,
                                onToken: ((Int?, String) -> Bool)?) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw GenerationError.emptyPrompt }
        guard maxNewTokens >= 0 else { throw AdapterError.invalidArgument("--max-new-tokens must be non-negative") }
        let model = container.model
        let tokenizer = container.tokenizer
        let used = prompt.count
        guard used < state.capacity || (maxNewTokens == 0 && used <= state.capacity) else {
            throw GenerationError.contextFull(tokens: used, capacity: state.capacity)
        }
        // Reuse the cached prefix; at least one token is fed, so there are logits to sample from.
        var common = 0
        while common < min(cached.count, prompt.count) && cached[common] == prompt[common] { common += 1 }
        common = min(common, prompt.count - 1)
        state.truncate(to: common)
        cached.removeLast(cached.count - common)
        let limit = min(maxNewTokens, min(model.contextLength, state.capacity + 1) - used)
        var sampler = Sampler(sampling ?? container.defaultSampling)
        for t in prompt { sampler.accept(t) }
        let stops = tokenizer.stopIds
        let t0 = DispatchTime.now().uptimeNanoseconds
        var logits = try model.forward(tokens: Array(prompt[common...]), state: state)
        cached = prompt
        let t1 = DispatchTime.now().uptimeNanoseconds
        var generated: [Int] = []
        var stream = StreamingDecoder(tokenizer: tokenizer)
        var stopReason: StopReason = limit < maxNewTokens ? .context : .length
        while generated.count < limit {
            let next = sampler.sample(logits)
            if stops.contains(next) { stopReason = .eos; break }
            generated.append(next)
            sampler.accept(next)
            if let onToken, !onToken(next, stream.add(next)) { stopReason = .cancelled; break }
            if generated.count == limit { break }
            logits = try model.forward(tokens: [next], state: state)
            cached.append(next)
        }
        let t2 = DispatchTime.now().uptimeNanoseconds
        if let onToken, stopReason != .cancelled {
            let rest = stream.finish()
            if !rest.isEmpty { _ = onToken(nil, rest) }
        }
        return GenerationResult(text: tokenizer.decode(generated), tokens: generated, promptTokenCount: prompt.count,
                                stopReason: stopReason, prefillSeconds: Double(t1 - t0) / 1e9, decodeSeconds: Double(t2 - t1) / 1e9)
    }

    /// The `score` contract: tokens = encode(prompt + continuation) with BOS (when the model uses one) and
    /// EOS; positions from len(encode(prompt, BOS)) on are scored. `prompt` is already formatted. Runs on a
    /// fresh sequence with this session's image and modes (the session's cache is untouched).
    public func score(prompt: String, continuation: String) throws -> ScoreResult {
        let tok = container.tokenizer
        let all = tok.encode(prompt + continuation, addBos: tok.addsBOS, addEos: true)
        let start = tok.encodePrompt(prompt).count
        return try score(tokens: all, from: start)
    }

    /// Sum of log-probabilities of `tokens[from...]`, each given everything before it.
    public func score(tokens: [Int], from: Int) throws -> ScoreResult {
        let model = container.model
        guard from >= 1, from < tokens.count else {
            throw AdapterError.invalidArgument("nothing to score: the continuation adds no tokens")
        }
        guard tokens.count <= model.contextLength else {
            throw AdapterError.invalidArgument("prompt and continuation have \(tokens.count) tokens but the context holds \(model.contextLength)")
        }
        let (prompts, options) = lock.withLock { (state.prompts, state.options) }
        let scratch = DecoderState(model: model, capacity: tokens.count, prompts: prompts, options: options)
        // The logits are a view of the state's buffer: the state must outlive the loop that reads them.
        return try withExtendedLifetime(scratch) {
            let logits = try model.forward(tokens: tokens, state: scratch, allLogits: true)
            let V = model.config.vocabSize
            var total = 0.0
            for pos in from..<tokens.count {
                let row = UnsafeBufferPointer(rebasing: logits[(pos - 1) * V ..< pos * V])
                var m = -Float.infinity
                for v in row where v > m { m = v }
                var sum = 0.0
                for v in row { sum += exp(Double(v) - Double(m)) }
                total += Double(row[tokens[pos]]) - (Double(m) + log(sum))
            }
            return ScoreResult(logprob: total, tokens: tokens.count - from)
        }
    }
}

/// A session's generation events, produced on their own thread a bounded number of tokens ahead of the
/// consumer (each event taken lets the producer decode one more).
public struct GenerationStream: AsyncSequence, Sendable {
    public typealias Element = GenerationEvent
    /// Tokens the producer may decode ahead of the consumer.
    public static let lookahead = 2
    let events: AsyncThrowingStream<GenerationEvent, Error>
    let credits: DispatchSemaphore

    /// Iterates the events; each `next()` gives the producer one more token of credit.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var inner: AsyncThrowingStream<GenerationEvent, Error>.AsyncIterator
        let credits: DispatchSemaphore
        /// The next event, nil after `.finished`.
        public mutating func next() async throws -> GenerationEvent? {
            let event = try await inner.next()
            if case .token = event { credits.signal() }
            return event
        }
    }

    /// Starts iterating.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inner: events.makeAsyncIterator(), credits: credits) }
}
