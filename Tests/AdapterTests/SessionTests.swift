import LlamaAdapter
import Foundation
import XCTest

/// Many sessions on one immutable model: interleaved and concurrent sequences give the official code's
/// tokens (the golden greedy outputs of tools/reference), streaming and chat sit on the same loop.
final class SessionTests: XCTestCase {
    static let modelDir = Fixtures.path("tiny_llama/model")

    func container() throws -> ModelContainer {
        try ModelContainer.load(ModelConfiguration(model: Self.modelDir, maxSeqLen: 512))
    }

    /// The golden greedy tokens up to (not including) EOS.
    func expected(_ c: Fixtures.TinyLlamaGolden.Case) -> [Int] { Array(c.greedy_tokens.prefix { $0 != 2 }) }

    func testTwoSequencesInterleavingDecodeStepsGiveTheTokensOfEachRunAlone() throws {
        let model = try container().model
        let cases = Array(Fixtures.tinyLlama.cases.prefix(2))
        let states = cases.map { _ in DecoderState(model: model) }
        var logits = try zip(cases, states).map { c, s in try model.forwardArray(tokens: c.tokens, state: s) }
        var generated: [[Int]] = cases.map { _ in [] }
        let steps = cases.map { expected($0).count }.max()!
        for _ in 0..<steps {
            for i in cases.indices where generated[i].count < expected(cases[i]).count {
                let next = Sampler.argmax(logits[i])
                generated[i].append(next)
                logits[i] = try model.forwardArray(tokens: [next], state: states[i])
            }
        }
        for (i, c) in cases.enumerated() { XCTAssertEqual(generated[i], expected(c), c.name) }
    }

    func testSessionsOnTwoThreadsAtOnceGiveTheReferenceTokens() throws {
        let container = try container()
        let cases = Array(Fixtures.tinyLlama.cases.prefix(3))
        let results = try runConcurrently(cases.map { c in
            let session = try container.makeSession()
            return { try session.generate(prompt: c.tokens, maxNewTokens: c.greedy_tokens.count, sampling: .greedy).tokens }
        })
        for (r, c) in zip(results, cases) { XCTAssertEqual(r, expected(c), c.name) }
    }

    func testAdapterSessionsWithDifferentImagesRunConcurrentlyOnOneModel() throws {
        // One BIAS adapter model; one session sees the image, the other the blank image (official text-only path).
        let container = try ModelContainer.load(ModelConfiguration(
            model: Self.modelDir, adapter: Fixtures.path("tiny_adapter/adapter_bias.pth"),
            clip: Fixtures.path("tiny_adapter/clip_tiny.pth"), maxSeqLen: 512))
        let golden = (AdapterModelTests.golden["adapters"] as! [String: Any])["bias"] as! [String: Any]
        let cases = golden["cases"] as! [[String: Any]]
        let image = try container.encodeImage(pixels: AdapterModelTests.image())
        let work = try cases.map { c -> () throws -> [Int] in
            let session = try container.makeSession(image: (c["name"] as! String) == "image" ? image : nil)
            let tokens = c["tokens"] as! [Int], n = (c["greedy_tokens"] as! [Int]).count
            return { try session.generate(prompt: tokens, maxNewTokens: n, sampling: .greedy).tokens }
        }
        let results = try runConcurrently(work)
        for (r, c) in zip(results, cases) {
            XCTAssertEqual(r, Array((c["greedy_tokens"] as! [Int]).prefix { $0 != 2 }), c["name"] as! String)
        }
    }

    func testSessionsShareTheModelWeightsInsteadOfCopyingThem() throws {
        let container = try ModelContainer.load(ModelConfiguration(model: try Fixtures.smolLM2(), maxSeqLen: 512))
        let a = try container.makeSession(capacity: 64), b = try container.makeSession(capacity: 64)
        XCTAssertTrue(a.container.model === b.container.model)
        let prompt = container.tokenizer.encodePrompt(try container.formatPrompt("Hi"))
        let first = try a.generate(prompt: prompt, maxNewTokens: 8, sampling: .greedy)
        XCTAssertEqual(try b.generate(prompt: prompt, maxNewTokens: 8, sampling: .greedy).tokens, first.tokens)
        // A session owns its KV cache and scratch only: for 64 positions that is far below SmolLM2's weights.
        let weights = container.model.weights.bytesPerToken
        let state = DecoderState(model: container.model, capacity: 64)
        _ = try container.model.forward(tokens: prompt, state: state)
        XCTAssertLessThan(state.byteCount, weights / 4, "state \(state.byteCount) B vs weights \(weights) B")
    }

    func testStreamYieldsTheReferenceTextAndStopsWhenTheConsumerDoes() async throws {
        let container = try container()
        let c = Fixtures.tinyLlama.cases[0]
        var text = ""
        var finished: GenerationResult?
        for try await event in try container.makeSession().stream(prompt: c.tokens, maxNewTokens: c.greedy_tokens.count, sampling: .greedy) {
            switch event {
            case .token(_, let piece): text += piece
            case .finished(let r): finished = r
            }
        }
        XCTAssertEqual(text, c.greedy_text)
        XCTAssertEqual(finished?.tokens, expected(c))

        // Leaving the loop cancels the generation at its next token.
        let session = try container.makeSession()
        var seen = 0
        for try await event in session.stream(prompt: c.tokens, maxNewTokens: 200, sampling: .official) {
            if case .token = event { seen += 1 }
            if seen == 2 { break }
        }
        let cached = session.cachedTokens.count   // waits for the generation thread to let go of the session
        XCTAssertLessThan(cached, c.tokens.count + 10, "generation went on after the consumer stopped")
    }

    func testChatSecondTurnMatchesAFreshSessionOnTheWholeConversation() throws {
        let container = try container()
        let chat = try ChatSession(session: try container.makeSession(), template: .alpaca)
        _ = try chat.respond(to: "Tell me about alpacas.", maxNewTokens: 8, sampling: .greedy)
        let second = try chat.respond(to: "And llamas?", maxNewTokens: 8, sampling: .greedy)
        // The same conversation rendered and generated from scratch.
        let messages = Array(chat.messages.dropLast())
        let text = try container.renderChat(messages, addGenerationPrompt: true, template: ChatTemplate(source: ChatTemplate.alpaca))
        let fresh = try container.makeSession().generate(prompt: container.tokenizer.encodePrompt(text), maxNewTokens: 8, sampling: .greedy)
        XCTAssertEqual(second.tokens, fresh.tokens)
        XCTAssertEqual(chat.messages.count, 4)
    }

    func testRecordingForwardComputesExactlyWhatInferenceComputes() throws {
        let loaded = try ModelLoader.load(path: Self.modelDir, maxSeqLen: 512)
        let model = try loaded.model.with(adapter: AdapterWeights.load(path: Fixtures.path("tiny_adapter/adapter_lora.pth"),
                                                                         model: loaded.model.config))
        let prompts = try model.makePrompts(visualQuery: nil)
        let tokens = Fixtures.tinyLlama.cases[1].tokens
        let plain = try model.forwardArray(tokens: tokens, state: DecoderState(model: model, prompts: prompts), allLogits: true)
        let record = ForwardRecord(model: model, T: tokens.count, prompts: prompts)
        let recorded = try model.forwardArray(tokens: tokens, state: DecoderState(model: model, prompts: prompts), allLogits: true,
                                              record: record)
        XCTAssertEqual(recorded, plain)
        // Each saved probability row is a distribution over the visible (causal) keys only.
        let c = model.config, T = tokens.count
        for l in [0, c.nLayers - 1] {
            let p = record.layers[l].probs
            for h in 0..<c.nHeads {
                for t in 0..<T {
                    let row = p + (h * T + t) * T
                    let visible = (0...t).reduce(Float(0)) { $0 + row[$1] }
                    XCTAssertEqual(visible, 1, accuracy: 1e-5)
                    for j in (t + 1)..<T { XCTAssertEqual(row[j], 0) }
                }
            }
        }
        // The residual stream chains: block l's input plus its two updates is block l+1's input.
        XCTAssertEqual(Array(UnsafeBufferPointer(start: record.layers[0].inp, count: c.dim)),
                       Array(model.weights.tokEmbeddings.toFloatArray().prefix(c.dim * (tokens[0] + 1)).suffix(c.dim)))
    }

    /// Runs each closure on its own thread, all at once, and returns their results in order.
    func runConcurrently(_ work: [() throws -> [Int]]) throws -> [[Int]] {
        let box = ResultBox(count: work.count)
        let group = DispatchGroup()
        for (i, w) in work.enumerated() {
            group.enter()
            let job = UncheckedSendable(w)
            let t = Thread {
                let r = Result { try job.value() }
                box.lock.withLock { box.results[i] = r }
                group.leave()
            }
            t.start()
        }
        group.wait()
        return try box.results.map { try $0!.get() }
    }
}

/// Results written by test threads.
final class ResultBox: @unchecked Sendable {
    var results: [Result<[Int], Error>?]
    let lock = NSLock()
    init(count: Int) { results = Array(repeating: nil, count: count) }
}

/// Carries a non-Sendable value to another thread in a test.
struct UncheckedSendable<V>: @unchecked Sendable {
    let value: V
    init(_ value: V) { self.value = value }
}

/// The batched forward against one forward per sequence.
final class BatchedForwardTests: XCTestCase {
    func testABatchComputesWhatEachSequenceComputesAlone() throws {
        let c = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"), tokenizer: Fixtures.path("tiny_llama/tokenizer.model"),
                                                           adapter: Fixtures.path("tiny_adapter/adapter_bias.pth"),
                                                           clip: Fixtures.path("tiny_adapter/clip_tiny.pth")))
        let m = c.model
        let img = try c.encodeImage(path: Fixtures.path("tiny_adapter/image.png"))
        let blank = try c.encodeBlankImage()
        func state(_ image: ImageContext) throws -> DecoderState {
            DecoderState(model: m, capacity: 64, prompts: try m.makePrompts(visualQuery: image.visualQuery))
        }
        let seqs: [[Int]] = [[1, 20, 30, 40, 50], [1, 7], [1, 99, 98, 97, 96, 95, 94, 93, 92, 91, 90, 89, 88, 87, 86, 85, 84, 83]]
        let images = [img, blank, img]
        // Alone, and with a cached prefix for the second round.
        var alone: [[Float]] = []
        for (s, im) in zip(seqs, images) {
            let st = try state(im)
            alone.append(try m.forwardArray(tokens: s, state: st, allLogits: true))
            alone.append(try m.forwardArray(tokens: [5], state: st))
        }
        let states = try images.map { try state($0) }
        let first = try m.forward(batch: zip(seqs, states).map { ForwardEntry(tokens: $0.0, state: $0.1, logitsFrom: 0) }).map { Array($0) }
        let second = try m.forward(batch: states.map { ForwardEntry(tokens: [5], state: $0) }).map { Array($0) }
        for i in 0..<3 {
            assertClose(first[i], alone[2 * i], 1e-4, "prefill of sequence \(i)")
            assertClose(second[i], alone[2 * i + 1], 1e-4, "decode step of sequence \(i)")
        }
        assertThrows(try m.forward(batch: [ForwardEntry(tokens: [1], state: states[0]), ForwardEntry(tokens: [2], state: states[0])]),
                     contains: ["twice"])
    }
}
