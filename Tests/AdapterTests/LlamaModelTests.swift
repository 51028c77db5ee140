import LlamaAdapter
import Foundation
import XCTest

/// The LLaMA forward pass against tools/reference/make_tiny_llama.py (official semantics, f32 from f16 weights).
final class LlamaModelTests: XCTestCase {
    static let modelDir = Fixtures.path("tiny_llama/model")


    func testPrefillLogitsMatchReferenceAtEveryPosition() throws {
        let loaded = try ModelLoader.load(path: Self.modelDir, maxSeqLen: 512)
        for c in Fixtures.tinyLlama.cases {
            let cache = DecoderState(model: loaded.model)
            let logits = try loaded.model.forwardArray(tokens: c.tokens, state: cache, allLogits: true)
            assertClose(logits, c.prefill_logits.flatMap { $0 }, 1e-4, "prefill logits of \(c.name)")
        }
    }

    func testIncrementalDecodingWithKVCacheMatchesReference() throws {
        let loaded = try ModelLoader.load(path: Self.modelDir, maxSeqLen: 512)
        for c in Fixtures.tinyLlama.cases {
            let cache = DecoderState(model: loaded.model)
            _ = try loaded.model.forwardArray(tokens: c.tokens, state: cache)
            for (k, token) in c.step_input_tokens.enumerated() {
                let logits = try loaded.model.forwardArray(tokens: [token], state: cache)
                assertClose(logits, c.step_logits[k], 1e-4, "decode step \(k) of \(c.name)")
            }
        }
    }

    func testCompatOfficialReproducesTheSkippedSoftmaxOnOneTokenSteps() throws {
        let loaded = try ModelLoader.load(path: Self.modelDir, maxSeqLen: 512)
        for c in Fixtures.tinyLlama.cases {
            let cache = DecoderState(model: loaded.model, options: DecoderOptions(compat: .official))
            _ = try loaded.model.forwardArray(tokens: c.tokens, state: cache)
            for (k, token) in c.step_input_tokens.enumerated() {
                let logits = try loaded.model.forwardArray(tokens: [token], state: cache)
                assertClose(logits, c.step_logits_compat_official[k], 1e-4, "compat decode step \(k) of \(c.name)")
            }
        }
    }

    func testGreedyGenerationReproducesReferenceTokensAndText() throws {
        let loaded = try ModelLoader.load(path: Self.modelDir, maxSeqLen: 512)
        let tokenizer = try SentencePieceTokenizer(path: XCTUnwrap(loaded.tokenizerPath))
        let container = ModelContainer(model: loaded.model, tokenizer: tokenizer)
        for c in Fixtures.tinyLlama.cases {
            XCTAssertEqual(tokenizer.encode(c.prompt, addBos: true, addEos: false), c.tokens, c.name)
            var streamed = ""
            let result = try container.makeSession().generate(prompt: c.tokens, maxNewTokens: c.greedy_tokens.count,
                                                               sampling: .greedy, onToken: { streamed += $1; return true })
            XCTAssertEqual(result.tokens, c.greedy_tokens, c.name)
            XCTAssertEqual(result.text, c.greedy_text, c.name)
            XCTAssertEqual(streamed, c.greedy_text, "streamed text of \(c.name)")
        }
    }

    func testTwoShardCheckpointGivesSameLogitsAsSingleFile() throws {
        let single = try ModelLoader.load(path: Self.modelDir, maxSeqLen: 64)
        let sharded = try ModelLoader.load(path: Fixtures.path("tiny_llama/model_2shards"), maxSeqLen: 64)
        let tokens = Fixtures.tinyLlama.cases[0].tokens
        let a = try single.model.forwardArray(tokens: tokens, state: DecoderState(model: single.model), allLogits: true)
        let b = try sharded.model.forwardArray(tokens: tokens, state: DecoderState(model: sharded.model), allLogits: true)
        XCTAssertEqual(a, b)
    }

    func testChunkedPrefillEqualsOneShotPrefill() throws {
        let loaded = try ModelLoader.load(path: Self.modelDir, maxSeqLen: 128)
        let tokens = Fixtures.tinyLlama.cases[2].tokens
        let whole = try loaded.model.forwardArray(tokens: tokens, state: DecoderState(model: loaded.model))
        let cache = DecoderState(model: loaded.model)
        _ = try loaded.model.forwardArray(tokens: Array(tokens[..<40]), state: cache)
        let chunked = try loaded.model.forwardArray(tokens: Array(tokens[40...]), state: cache)
        assertClose(chunked, whole, 1e-4, "chunked prefill")
    }

    func testParamsThatDisagreeWithWeightsAreRefused() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(atPath: Self.modelDir + "/consolidated.00.pth",
                                         toPath: dir.appendingPathComponent("consolidated.00.pth").path)
        let bad = #"{"dim": 128, "multiple_of": 32, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-06, "vocab_size": -1}"#
        try bad.write(to: dir.appendingPathComponent("params.json"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ModelLoader.load(path: dir.path)) { error in
            XCTAssertTrue("\(error)".contains("dim 128"), "\(error)")
        }
        let badLayers = #"{"dim": 64, "multiple_of": 32, "n_heads": 4, "n_layers": 3, "norm_eps": 1e-06, "vocab_size": -1}"#
        try badLayers.write(to: dir.appendingPathComponent("params.json"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ModelLoader.load(path: dir.path)) { error in
            XCTAssertTrue("\(error)".contains("layers.2"), "\(error)")
        }
    }

    func testFolderWithoutWeightsIsRefused() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(atPath: Self.modelDir + "/params.json", toPath: dir.appendingPathComponent("params.json").path)
        XCTAssertThrowsError(try ModelLoader.load(path: dir.path))
    }

    func testContextBoundsNewTokensAsTheOfficialTotalLength() throws {
        // Official generate: total_len = min(max_seq_len, prompt + max_gen_len) positions.
        let c = Fixtures.tinyLlama.cases[0]
        let loaded = try ModelLoader.load(path: Self.modelDir, maxSeqLen: c.tokens.count + 5)
        let tokenizer = try SentencePieceTokenizer(path: XCTUnwrap(loaded.tokenizerPath))
        let result = try ModelContainer(model: loaded.model, tokenizer: tokenizer).makeSession()
            .generate(prompt: c.tokens, maxNewTokens: 12, sampling: .greedy)
        XCTAssertEqual(result.tokens, Array(c.greedy_tokens.prefix(5)))
        XCTAssertEqual(result.stopReason, .context)
    }

    func testPromptLongerThanContextIsAnError() throws {
        let loaded = try ModelLoader.load(path: Self.modelDir, maxSeqLen: 8)
        let tokenizer = try SentencePieceTokenizer(path: XCTUnwrap(loaded.tokenizerPath))
        let session = try ModelContainer(model: loaded.model, tokenizer: tokenizer).makeSession()
        XCTAssertThrowsError(try session.generate(prompt: Fixtures.tinyLlama.cases[2].tokens, maxNewTokens: 4, sampling: .greedy))
    }
}

/// The same tiny model in Hugging Face layout (rotate-half wq/wk) must give the Meta layout's logits.
final class HuggingFaceLayoutTests: XCTestCase {
    func testHuggingFaceFolderGivesSameLogitsAsMetaFolder() throws {
        let meta = try ModelLoader.load(path: Fixtures.path("tiny_llama/model"), maxSeqLen: 64)
        let hf = try ModelLoader.load(path: Fixtures.path("tiny_llama/hf"), maxSeqLen: 64)
        XCTAssertEqual(hf.format, "huggingface")
        let tokens = Fixtures.tinyLlama.cases[1].tokens
        let a = try meta.model.forwardArray(tokens: tokens, state: DecoderState(model: meta.model), allLogits: true)
        let b = try hf.model.forwardArray(tokens: tokens, state: DecoderState(model: hf.model), allLogits: true)
        XCTAssertEqual(a, b)
    }
}

/// The tiny model as a llama.cpp GGUF with a SentencePiece vocabulary (tools/reference/make_tiny_gguf.py).
final class GGUFLlamaTests: XCTestCase {
    static let path = Fixtures.path("tiny_llama/tiny_llama.f16.gguf.bin")

    func testGGUFGivesTheOfficialFolderLogits() throws {
        let meta = try ModelLoader.load(path: Fixtures.path("tiny_llama/model"), maxSeqLen: 128)
        let gguf = try ModelLoader.load(path: Self.path, maxSeqLen: 128)
        XCTAssertEqual(gguf.format, "gguf")
        XCTAssertFalse(gguf.model.config.tiedEmbeddings)
        let tokens = Fixtures.tinyLlama.cases[2].tokens
        let a = try meta.model.forwardArray(tokens: tokens, state: DecoderState(model: meta.model), allLogits: true)
        let b = try gguf.model.forwardArray(tokens: tokens, state: DecoderState(model: gguf.model), allLogits: true)
        XCTAssertEqual(a, b)
    }

    func testSentencePieceVocabularyFromGGUFEncodesLikeTokenizerModel() throws {
        let bundle = try ModelContainer.load(ModelConfiguration(model: Self.path, maxSeqLen: 128))
        XCTAssertTrue(bundle.tokenizer.addsBOS)
        let reference = try SentencePieceTokenizer(path: Fixtures.path("tiny_llama/tokenizer.model"))
        for text in ["Hello world", "  two  spaces\tand a tab\n", "Café 🦙 数字 12345", "</s> is plain text", ""] {
            XCTAssertEqual(bundle.tokenizer.encode(text), reference.encode(text), text)
        }
        for c in Fixtures.tinyLlama.cases {
            XCTAssertEqual(bundle.tokenizer.encodePrompt(c.prompt), c.tokens, c.name)
            XCTAssertEqual(bundle.tokenizer.decode(c.greedy_tokens), c.greedy_text, c.name)
        }
        XCTAssertEqual(bundle.tokenizer.bosId, 1)
        XCTAssertEqual(bundle.tokenizer.eosId, 2)
    }
}

/// Configuration keys that change the arithmetic, and tensors nothing reads, are refused instead of computed wrong.
final class StrictLoadingTests: XCTestCase {
    /// A copy of the tiny Hugging Face folder with `edit` applied to its config.json.
    func hfFolder(_ edit: (inout [String: Any]) -> Void) throws -> URL {
        let dir = try Fixtures.temporaryDirectory()
        let src = URL(fileURLWithPath: Fixtures.path("tiny_llama/hf"))
        for name in try FileManager.default.contentsOfDirectory(atPath: src.path) {
            try FileManager.default.copyItem(at: src.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        let cfgURL = dir.appendingPathComponent("config.json")
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: cfgURL)) as! [String: Any]
        edit(&cfg)
        try JSONSerialization.data(withJSONObject: cfg).write(to: cfgURL)
        return dir
    }

    func testUnimplementedConfigurationKeysAreNamedInTheError() throws {
        let cases: [(String, Any)] = [("rope_scaling", ["rope_type": "linear", "factor": 2.0]), ("attention_bias", true),
                                      ("mlp_bias", true), ("partial_rotary_factor", 0.5), ("hidden_act", "gelu")]
        for (key, value) in cases {
            let dir = try hfFolder { $0[key] = value }
            defer { try? FileManager.default.removeItem(at: dir) }
            XCTAssertThrowsError(try ModelLoader.load(path: dir.path, maxSeqLen: 64), key) { error in
                XCTAssertTrue("\(error)".contains("'\(key)'"), "\(key): \(error)")
            }
        }
        // The values that mean plain LLaMA are accepted.
        let plain = try hfFolder { $0["rope_scaling"] = NSNull(); $0["attention_bias"] = false; $0["hidden_act"] = "silu" }
        defer { try? FileManager.default.removeItem(at: plain) }
        XCTAssertNoThrow(try ModelLoader.load(path: plain.path, maxSeqLen: 64))
    }

    func testAnAdapterTensorNothingUsesIsAnError() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = try TorchCheckpoint(path: Fixtures.path("tiny_adapter/adapter_bias.pth"))
        var tensors: [(String, Tensor)] = try src.tensorNames.map { ($0, try src.tensor($0)) }
        tensors.append(("llama.layers.0.attention.mystery.weight", Tensor(zeros: [4])))
        let path = dir.appendingPathComponent("extra.pth").path
        try TorchCheckpointWriter.write([("model", .dict(tensors.map { ($0.0, .tensor($0.1)) }))], to: path)
        let config = try ModelLoader.load(path: Fixtures.path("tiny_llama/model"), maxSeqLen: 64).model.config
        XCTAssertThrowsError(try AdapterWeights.load(path: path, model: config)) { error in
            XCTAssertTrue("\(error)".contains("mystery"), "\(error)")
        }
    }
}
