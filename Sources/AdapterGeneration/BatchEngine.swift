// Continuous batching: many requests decode together on one shared model. Each step runs one forward over
// the weights for every active sequence (multi-vector mat-vecs, see `matvecBatchLimit`); requests join and
// leave between steps; a joining prompt is prefilled in chunks so running decodes do not stall for long.
import Foundation
import Synchronization
import AdapterCore
import AdapterModel
import AdapterTokenizers

/// One generation request for a `BatchEngine`.
public struct BatchRequest: Sendable {
    /// The whole token sequence the model sees first (BOS included when the model uses one).
    public var prompt: [Int]
    /// Most tokens to generate (also bounded by the context, as `Session.generate`).
    public var maxNewTokens: Int
    /// Sampling settings (seeded: the same request gives the same tokens, batched or alone).
    public var sampling: SamplingParameters
    /// The image's adaption prompts (nil: none; a visual adapter's text-only path passes the blank image's).
    public var prompts: AdapterPrompts?
    /// Strings that end generation when they appear in the output (they are not returned).
    public var stop: [String]
    /// nil: no log-probabilities; n ≥ 0: each token's log-probability and the n most likely alternatives.
    public var logprobs: Int?

    /// A request.
    public init(prompt: [Int], maxNewTokens: Int, sampling: SamplingParameters, prompts: AdapterPrompts? = nil,
                stop: [String] = [], logprobs: Int? = nil) {
        self.prompt = prompt
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.prompts = prompts
        self.stop = stop
        self.logprobs = logprobs
    }
}

/// A generated token as a batch stream reports it.
public struct BatchToken: Sendable {
    /// The token id (nil for the last event that flushes held-back text).
    public var id: Int?
    /// Text that became final with this token (possibly "", e.g. half a UTF-8 character or a possible stop string).
    public var text: String
    /// The token's raw bytes as the tokenizer spells it (for OpenAI's `bytes` field); empty for the flush event.
    public var bytes: [UInt8]
    /// Natural-log probability of the token under the model (before temperature and truncation), when requested.
    public var logprob: Double?
    /// The most likely tokens at this position with their log-probabilities, when requested.
    public var top: [(id: Int, logprob: Double)]
}

/// Why a batched generation ended.
public enum BatchFinish: String, Sendable {
    /// A stop id (EOS, end of turn) or a stop string.
    case stop
    /// `maxNewTokens`, or the context, was reached.
    case length
    /// The caller cancelled.
    case cancelled
}

/// What a finished batched generation reports.
public struct BatchSummary: Sendable {
    /// Why it ended.
    public var finish: BatchFinish
    /// The generated text (stop string excluded).
    public var text: String
    /// Generated ids (stop id excluded).
    public var tokens: [Int]
    /// Prompt tokens.
    public var promptTokens: Int
    /// Seconds from submission until the request entered the batch.
    public var queueSeconds: Double
    /// Seconds from entering the batch until the first token.
    public var prefillSeconds: Double
    /// Seconds from the first token to the end.
    public var decodeSeconds: Double
}

/// An event of a batched generation.
public enum BatchEvent: Sendable {
    /// A token (see `BatchToken`).
    case token(BatchToken)
    /// The end.
    case finished(BatchSummary)
}

/// Errors of `BatchEngine.submit`.
public enum BatchError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The waiting queue is full.
    case queueFull(limit: Int)
    /// The engine is shutting down.
    case shuttingDown

    /// One line for the client.
    public var description: String {
        switch self {
        case .queueFull(let n): return "the server is busy: \(n) requests are already waiting; retry later"
        case .shuttingDown: return "the server is shutting down"
        }
    }
}

/// A submitted request: its event stream and a way to cancel it.
public final class BatchHandle: Sendable {
    /// Tokens as they are generated, then `.finished`; ends early with an error if the request fails.
    public let events: AsyncThrowingStream<BatchEvent, Error>
    let job: BatchJob

    init(events: AsyncThrowingStream<BatchEvent, Error>, job: BatchJob) {
        self.events = events
        self.job = job
    }

    /// Stops the generation at the next step (its sequence leaves the batch and its memory is freed).
    public func cancel() { job.cancelled.store(true, ordering: .relaxed) }
}

/// A request inside the engine.
final class BatchJob: @unchecked Sendable {
    // @unchecked: after submission only the engine thread touches the mutable fields; `cancelled` is atomic.
    let request: BatchRequest
    let continuation: AsyncThrowingStream<BatchEvent, Error>.Continuation
    let cancelled = Atomic<Bool>(false)
    let submitted = DispatchTime.now().uptimeNanoseconds
    var admitted: UInt64 = 0
    var firstToken: UInt64 = 0
    var state: DecoderState?
    var done = false
    var fed = 0
    var limit = 0
    var pending: Int?
    var generated: [Int] = []
    var sampler: Sampler
    var decoder: StreamingDecoder
    var stops: StopMatcher
    var text = ""

    init(request: BatchRequest, tokenizer: any Tokenizer, continuation: AsyncThrowingStream<BatchEvent, Error>.Continuation) {
        self.request = request
        self.continuation = continuation
        sampler = Sampler(request.sampling)
        for t in request.prompt { sampler.accept(t) }
        decoder = StreamingDecoder(tokenizer: tokenizer)
        stops = StopMatcher(request.stop)
    }
}

/// Holds back text that may be the beginning of a stop string, and finds stop strings across token boundaries.
public struct StopMatcher: Sendable {
    /// The stop strings (empty ones are ignored).
    public let stops: [String]
    private var held = ""

    /// A matcher for `stops`.
    public init(_ stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Adds `piece`; returns the text now safe to emit and whether a stop string was reached (the text before
    /// it is returned, the stop string and anything after it are dropped).
    public mutating func add(_ piece: String) -> (text: String, stopped: Bool) {
        guard !stops.isEmpty else { return (piece, false) }
        held += piece
        var cut: String.Index?
        for s in stops {
            if let r = held.range(of: s), cut.map({ r.lowerBound < $0 }) ?? true { cut = r.lowerBound }
        }
        if let cut {
            let out = String(held[..<cut])
            held = ""
            return (out, true)
        }
        // Keep the longest suffix that is a prefix of some stop string.
        var keep = 0
        for s in stops {
            var n = min(s.count, held.count)
            while n > 0 {
                if s.hasPrefix(held.suffix(n)) { break }
                n -= 1
            }
            keep = max(keep, n)
        }
        let split = held.index(held.endIndex, offsetBy: -keep)
        let out = String(held[..<split])
        held = String(held[split...])
        return (out, false)
    }

    /// Text still held at the end (no stop string followed).
    public mutating func finish() -> String {
        defer { held = "" }
        return held
    }
}

/// Runs many generation requests on one model with continuous batching, on a thread of its own.
public final class BatchEngine: @unchecked Sendable {
    // @unchecked: `waiting`, `active` and `stopping` are guarded by `condition`; the rest is immutable.

    /// The model.
    public let container: ModelContainer
    /// Sequences that decode together at most.
    public let parallel: Int
    /// Requests that may wait for a free slot before `submit` refuses more.
    public let queueLimit: Int
    /// Prompt tokens prefilled per step while other sequences decode (a lone prompt is prefilled whole).
    public let prefillChunk: Int
    /// Modes of every sequence (compatibility, activation precision).
    public let options: DecoderOptions
    private let condition = NSCondition()
    private var waiting: [BatchJob] = []
    private var active: [BatchJob] = []
    private var stopping = false
    private var thread: Thread?
    private let workspace: DecoderState
    /// The tokenizer's stop ids, read once rather than per sampled token.
    private let stopIds: Set<Int>
    /// Finished sequences kept for their keys and values (engine thread only): a new prompt that starts with
    /// one of them (the same system prompt, the previous turns of a chat) prefills only what is new.
    private var retained: [(tokens: [Int], prompts: AdapterPrompts?, state: DecoderState)] = []
    /// Bytes of KV cache `retained` may keep.
    public let retainedByteLimit: Int
    /// Prompt tokens whose keys and values came from a retained sequence instead of a prefill (statistics).
    public private(set) var reusedPromptTokens = 0

    /// An engine over `container`. `parallel` sequences decode together; `queueLimit` more may wait.
    /// `retainedBytes` bounds the KV memory kept from finished requests for prefix reuse (0 disables it).
    public init(container: ModelContainer, parallel: Int = 4, queueLimit: Int = 64, prefillChunk: Int = 512,
                options: DecoderOptions = DecoderOptions(), retainedBytes: Int = 512 << 20) throws {
        guard parallel >= 1, parallel <= 256 else { throw AdapterError.invalidArgument("--parallel must be between 1 and 256") }
        guard queueLimit >= 0, queueLimit <= 1 << 20 else { throw AdapterError.invalidArgument("the queue limit must be between 0 and 1048576") }
        guard prefillChunk >= 1 else { throw AdapterError.invalidArgument("the prefill chunk must be positive") }
        self.container = container
        self.parallel = parallel
        self.queueLimit = queueLimit
        self.prefillChunk = prefillChunk
        self.options = options
        retainedByteLimit = max(0, retainedBytes)
        stopIds = container.tokenizer.stopIds
        workspace = DecoderState(model: container.model, capacity: 1, options: options)
        let t = Thread { [unowned self] in self.loop() }
        t.stackSize = 1 << 22
        t.name = "batch-engine"
        thread = t
        t.start()
    }

    /// Requests decoding now and requests waiting.
    public var load: (active: Int, waiting: Int) { condition.withLock { (active.count, waiting.count) } }

    /// Queues a request. Throws `BatchError.queueFull` when `queueLimit` requests already wait, and
    /// `GenerationError` for a prompt that is empty or does not fit the context.
    public func submit(_ request: BatchRequest) throws -> BatchHandle {
        guard !request.prompt.isEmpty else { throw GenerationError.emptyPrompt }
        guard request.maxNewTokens >= 0 else { throw AdapterError.invalidArgument("max_tokens must be non-negative") }
        let context = container.model.contextLength
        guard request.prompt.count < context || (request.maxNewTokens == 0 && request.prompt.count <= context) else {
            throw GenerationError.contextFull(tokens: request.prompt.count, capacity: context)
        }
        let V = container.model.config.vocabSize
        guard request.prompt.allSatisfy({ $0 >= 0 && $0 < V }) else {
            throw AdapterError.invalidArgument("a prompt token id is outside the vocabulary of \(V)")
        }
        var continuation: AsyncThrowingStream<BatchEvent, Error>.Continuation!
        let stream = AsyncThrowingStream<BatchEvent, Error>(bufferingPolicy: .unbounded) { continuation = $0 }
        let job = BatchJob(request: request, tokenizer: container.tokenizer, continuation: continuation)
        // A consumer that goes away (client disconnected, task cancelled) cancels the generation.
        continuation.onTermination = { [weak job] _ in job?.cancelled.store(true, ordering: .relaxed) }
        try condition.withLock {
            if stopping { throw BatchError.shuttingDown }
            if active.count >= parallel && waiting.count >= queueLimit { throw BatchError.queueFull(limit: queueLimit) }
            waiting.append(job)
            condition.signal()
        }
        return BatchHandle(events: stream, job: job)
    }

    /// Stops the engine: running and waiting requests end as cancelled.
    public func shutdown() {
        condition.withLock {
            stopping = true
            condition.signal()
        }
    }

    deinit { shutdown() }

    private func loop() {
        while true {
            condition.lock()
            while !stopping && active.isEmpty && waiting.isEmpty { condition.wait() }
            if stopping {
                let all = active + waiting
                active = []; waiting = []
                condition.unlock()
                for j in all where !j.done { finish(j, .cancelled) }
                return
            }
            while active.count < parallel, !waiting.isEmpty { active.append(waiting.removeFirst()) }
            let jobs = active
            condition.unlock()
            step(jobs)
            condition.withLock { active.removeAll { $0.done } }
        }
    }

    /// One scheduling step: admit, prefill at most one prompt chunk, one batched decode of everyone else.
    private func step(_ jobs: [BatchJob]) {
        let model = container.model
        for j in jobs where j.admitted == 0 {
            j.admitted = DispatchTime.now().uptimeNanoseconds
            let need = j.request.prompt.count.addingReportingOverflow(j.request.maxNewTokens)
            let capacity = need.overflow ? model.contextLength : min(model.contextLength, max(1, need.partialValue))
            j.state = DecoderState(model: model, capacity: capacity, prompts: j.request.prompts, options: options)
            reusePrefix(j)
            j.limit = min(j.request.maxNewTokens, min(model.contextLength, capacity + 1) - j.request.prompt.count)
            if j.limit <= 0 { finish(j, .length) }
        }
        for j in jobs where !j.done && j.cancelled.load(ordering: .relaxed) { finish(j, .cancelled) }
        let live = jobs.filter { !$0.done }
        let decoding = live.filter { $0.pending != nil }
        let groups = stride(from: 0, to: decoding.count, by: matvecBatchLimit).map {
            Array(decoding[$0 ..< min(decoding.count, $0 + matvecBatchLimit)])
        }
        // Prompts to prefill this step: the first waiting one (a chunk of it while others decode), plus whole
        // prompts of the next ones while the step's prompt tokens stay within `prefillChunk` (one pass over the
        // weights for all of them, as when several requests arrive together).
        var prefills: [(job: BatchJob, chunk: [Int])] = []
        var budget = prefillChunk
        for p in live where p.pending == nil {
            let remaining = p.request.prompt.count - p.fed
            if prefills.isEmpty {
                let n = decoding.isEmpty ? remaining : min(remaining, prefillChunk)
                prefills.append((p, Array(p.request.prompt[p.fed ..< p.fed + n])))
                budget -= n
            } else if remaining <= budget {
                prefills.append((p, Array(p.request.prompt[p.fed...])))
                budget -= remaining
            }
        }
        let prefill = prefills.count == 1 ? prefills[0] : nil
        // A short chunk (a prompt whose prefix was reused, a short question) rides along with the first decode
        // group: one pass over the weights serves both, and with at most `matvecBatchLimit` rows every row still
        // takes the mat-vec path it takes alone.
        let merged = prefill.map { pf in groups.first.map { $0.count + pf.chunk.count <= matvecBatchLimit } ?? false } ?? false
        if !prefills.isEmpty, !merged {
            do {
                let logits = try model.forward(batch: prefills.map { ForwardEntry(tokens: $0.chunk, state: $0.job.state!) }, workspace: workspace)
                for (pf, l) in zip(prefills, logits) { prefilled(pf.job, count: pf.chunk.count, logits: l) }
            } catch {
                // A prefill that fails ends the requests it was for only.
                for pf in prefills { fail(pf.job, error) }
            }
        }
        for (g, group) in groups.enumerated() {
            var entries = group.map { ForwardEntry(tokens: [$0.pending!], state: $0.state!) }
            let ride = merged && g == 0 ? prefill : nil
            if let ride { entries.append(ForwardEntry(tokens: ride.chunk, state: ride.job.state!)) }
            do {
                let logits = try model.forward(batch: entries, workspace: workspace)
                for (j, l) in zip(group, logits) {
                    j.generated.append(j.pending!)
                    j.pending = nil
                    emit(j, logits: l)
                }
                if let ride { prefilled(ride.job, count: ride.chunk.count, logits: logits[group.count]) }
            } catch {
                for j in group { fail(j, error) }
                if let ride { fail(ride.job, error) }
            }
        }
    }

    /// Accounts for `count` prompt tokens fed; after the last one, samples the first token.
    private func prefilled(_ p: BatchJob, count: Int, logits: UnsafeBufferPointer<Float>) {
        p.fed += count
        if p.fed == p.request.prompt.count {
            p.firstToken = DispatchTime.now().uptimeNanoseconds
            emit(p, logits: logits)
        }
    }

    /// Samples the job's next token from `logits` and streams it, or finishes the job.
    private func emit(_ j: BatchJob, logits: UnsafeBufferPointer<Float>) {
        if j.generated.count >= j.limit { return finish(j, .length) }
        let next = j.sampler.sample(logits)
        if stopIds.contains(next) { return finish(j, .stop) }
        var token = BatchToken(id: next, text: "", bytes: [], logprob: nil, top: [])
        if let k = j.request.logprobs {
            (token.logprob, token.top) = logProbabilities(logits, chosen: next, top: k)
            token.bytes = Array(container.tokenizer.decode([next]).utf8)
        }
        j.sampler.accept(next)
        let (text, stopped) = j.stops.add(j.decoder.add(next))
        token.text = text
        j.text += text
        if stopped {
            j.generated.append(next)
            j.continuation.yield(.token(token))
            return finish(j, .stop, flush: false)
        }
        j.continuation.yield(.token(token))
        j.pending = next
        if j.generated.count + 1 >= j.limit {
            j.generated.append(next)
            j.pending = nil
            finish(j, .length)
        }
    }

    private func finish(_ j: BatchJob, _ reason: BatchFinish, flush: Bool = true) {
        guard !j.done else { return }
        if flush && reason != .cancelled {
            let rest = j.decoder.finish()
            var (text, _) = j.stops.add(rest)
            text += j.stops.finish()
            if !text.isEmpty {
                j.text += text
                j.continuation.yield(.token(BatchToken(id: nil, text: text, bytes: [], logprob: nil, top: [])))
            }
        }
        let now = DispatchTime.now().uptimeNanoseconds
        let admitted = j.admitted == 0 ? now : j.admitted
        let first = j.firstToken == 0 ? now : j.firstToken
        j.continuation.yield(.finished(BatchSummary(
            finish: reason, text: j.text, tokens: j.generated, promptTokens: j.request.prompt.count,
            queueSeconds: Double(admitted - j.submitted) / 1e9, prefillSeconds: Double(first - admitted) / 1e9,
            decodeSeconds: Double(now - first) / 1e9)))
        j.continuation.finish()
        retain(j)
        j.state = nil
        j.done = true
    }

    /// Keeps a finished sequence's cache for prefix reuse, evicting the oldest beyond the byte limit.
    private func retain(_ j: BatchJob) {
        guard let s = j.state, s.length > 0, retainedByteLimit > 0 else { return }
        let tokens = Array((j.request.prompt + j.generated).prefix(s.length))
        retained.append((tokens, j.request.prompts, s))
        var bytes = retained.reduce(0) { $0 + $1.state.byteCount }
        while bytes > retainedByteLimit, !retained.isEmpty {
            bytes -= retained.removeFirst().state.byteCount
        }
    }

    /// Starts the job from the retained sequence sharing its longest prompt prefix (same image prompts), if any.
    /// At least the last prompt token is always fed, so there are logits to sample from.
    private func reusePrefix(_ j: BatchJob) {
        guard let s = j.state else { return }
        let prompt = j.request.prompt
        var best = -1, bestLength = 0
        for (i, r) in retained.enumerated() where r.prompts === j.request.prompts {
            var n = 0
            let m = min(r.tokens.count, prompt.count - 1)
            while n < m && r.tokens[n] == prompt[n] { n += 1 }
            if n > bestLength { best = i; bestLength = n }
        }
        guard best >= 0 else { return }
        let source = retained[best].state
        if source.capacity >= s.capacity {
            // Take the whole state over: no copy at all.
            retained.remove(at: best)
            source.truncate(to: bestLength)
            j.state = source
        } else {
            s.copyPrefix(of: source, positions: bestLength)
        }
        j.fed = bestLength
        reusedPromptTokens += bestLength
    }

    private func fail(_ j: BatchJob, _ error: Error) {
        guard !j.done else { return }
        j.continuation.finish(throwing: error)
        j.state = nil
        j.done = true
    }
}

/// Log-softmax of the raw logits at `chosen`, and the `top` most likely ids with theirs.
public func logProbabilities(_ logits: UnsafeBufferPointer<Float>, chosen: Int, top: Int) -> (Double, [(id: Int, logprob: Double)]) {
    var m = -Float.infinity
    for v in logits where v > m { m = v }
    var sum = 0.0
    for v in logits { sum += exp(Double(v - m)) }
    let lse = Double(m) + log(sum)
    var best: [(id: Int, logprob: Double)] = []
    if top > 0 {
        var heap: [(Int, Float)] = []
        for (i, v) in logits.enumerated() {
            if heap.count < top { heap.append((i, v)); heap.sort { $0.1 > $1.1 } }
            else if v > heap[heap.count - 1].1 { heap[heap.count - 1] = (i, v); heap.sort { $0.1 > $1.1 } }
        }
        best = heap.map { ($0.0, Double($0.1) - lse) }
    }
    return (Double(logits[chosen]) - lse, best)
}
