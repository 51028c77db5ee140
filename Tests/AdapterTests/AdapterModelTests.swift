import LlamaAdapter
import Foundation
import XCTest

/// The multimodal LLaMA-Adapter V2 against tools/reference/make_tiny_adapter.py (official semantics):
/// tiny OpenAI CLIP in three formats, BIAS and LORA-BIAS adapters, image and text-only cases.
final class AdapterModelTests: XCTestCase {
    static let dir = "tiny_adapter/"
    static let golden: [String: Any] = {
        let data = try! Data(contentsOf: Fixtures.root.appendingPathComponent("tiny_adapter/golden.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    static func floats(_ v: Any?) -> [Float] {
        if let a = v as? [Any] { return a.flatMap { floats($0) } }
        if let d = v as? Double { return [Float(d)] }
        if let n = v as? NSNumber { return [n.floatValue] }
        return []
    }


    static func image() throws -> Tensor {
        let npy = try NPY.read(path: Fixtures.path(dir + "image_bgr.npy"))
        return Tensor(try npy.floats(), shape: Array(npy.shape.suffix(3)))
    }

    func testPreprocessingReproducesTheOfficialTransform() throws {
        let ours = try preprocessImage(path: Fixtures.path(Self.dir + "image.png"), channels: .bgr)
        let ref = try Self.image()
        let a = ours.toFloatArray(), b = ref.toFloatArray()
        let mae = zip(a, b).reduce(Float(0)) { $0 + abs($1.0 - $1.1) } / Float(a.count)
        XCTAssertLessThan(mae, 0.005)
    }

    func testCLIPTokensMatchInAllThreeWeightFormats() throws {
        let expected = Self.floats((Self.golden["clip"] as! [String: Any])["tokens"])
        for file in ["clip_tiny.pth", "clip_tiny.pt", "clip_hf"] {
            let clip = try CLIPVisionWeights.load(path: Fixtures.path(Self.dir + file))
            XCTAssertEqual(clip.imageSize, 224, file)
            let tokens = try clipEncodeImage(clip, image: Self.image())
            assertClose(tokens.toFloatArray(), expected, 1e-4, "CLIP tokens from \(file)")
        }
    }

    func loadModel(_ kind: String) throws -> (LlamaModel, [String: Any], SentencePieceTokenizer) {
        let info = (Self.golden["adapters"] as! [String: Any])[kind] as! [String: Any]
        let loaded = try ModelLoader.load(path: Fixtures.path("tiny_llama/model"), maxSeqLen: 512)
        let adapter = try AdapterWeights.load(path: Fixtures.path(Self.dir + (info["file"] as! String)), model: loaded.model.config)
        return (try loaded.model.with(adapter: adapter), info, try SentencePieceTokenizer(path: Fixtures.path("tiny_llama/tokenizer.model")))
    }

    func visualQuery(_ model: LlamaModel, zero: Bool) throws -> Tensor {
        let clip = try CLIPVisionWeights.load(path: Fixtures.path(Self.dir + "clip_tiny.pth"))
        let image = zero ? Tensor(zeros: [3, 224, 224]) : try Self.image()
        return try model.visualQuery(clipFeatures: clipEncodeImage(clip, image: image))
    }

    func checkAdapter(_ kind: String) throws {
        let (model, info, tokenizer) = try loadModel(kind)
        assertClose(try visualQuery(model, zero: false).toFloatArray(), Self.floats(info["visual_query"]), 1e-4, "\(kind) visual query")
        assertClose(try visualQuery(model, zero: true).toFloatArray(), Self.floats(info["visual_query_zero_image"]), 1e-4,
                    "\(kind) zero-image visual query")
        for case let c as [String: Any] in info["cases"] as! [Any] {
            let name = "\(kind)/\(c["name"]!)"
            let tokens = c["tokens"] as! [Int]
            XCTAssertEqual(tokenizer.encode(c["prompt"] as! String, addBos: true, addEos: false), tokens, name)
            let vq = try visualQuery(model, zero: (c["name"] as! String) != "image")
            let prompts = try model.makePrompts(visualQuery: vq)
            // Prefill: stored rows, and argmax at every position.
            let cache = DecoderState(model: model)
            cache.prompts = prompts
            let all = try model.forwardArray(tokens: tokens, state: cache, allLogits: true)
            let V = model.config.vocabSize
            let positions = c["prefill_positions"] as! [Int]
            let rows = (c["prefill_logits"] as! [Any]).map { Self.floats($0) }
            for (p, row) in zip(positions, rows) { assertClose(Array(all[p * V..<(p + 1) * V]), row, 1e-4, "\(name) prefill row \(p)") }
            let argmax = (0..<tokens.count).map { Sampler.argmax(Array(all[$0 * V..<($0 + 1) * V])) }
            XCTAssertEqual(argmax, c["prefill_argmax"] as! [Int], name)
            // Incremental decoding with the KV cache.
            let steps = (c["step_logits"] as! [Any]).map { Self.floats($0) }
            for (k, token) in (c["step_input_tokens"] as! [Int]).enumerated() {
                assertClose(try model.forwardArray(tokens: [token], state: cache), steps[k], 1e-4, "\(name) decode step \(k)")
            }
            // Greedy generation.
            let session = try ModelContainer(model: model, tokenizer: tokenizer).makeSession(image: ImageContext(visualQuery: vq))
            let greedy = c["greedy_tokens"] as! [Int]
            let result = try session.generate(prompt: tokens, maxNewTokens: greedy.count, sampling: .greedy)
            XCTAssertEqual(result.tokens, Array(greedy.prefix { $0 != 2 }), name)
            XCTAssertEqual(result.text, c["greedy_text"] as! String, name)
            // Score.
            if let score = c["score"] as? [String: Any] {
                let (logprob, count) = try session.score(tokens: score["tokens"] as! [Int], from: score["scored_from"] as! Int).pair
                XCTAssertEqual(count, score["count"] as! Int, name)
                XCTAssertEqual(logprob, score["logprob"] as! Double, accuracy: 2e-3, name)
            }
        }
    }

    func testBiasAdapterMatchesReference() throws { try checkAdapter("bias") }
    func testLoraBiasAdapterMatchesReference() throws { try checkAdapter("lora") }

    func testAdapterForAnotherWidthIsRefusedWithReadableError() throws {
        let loaded = try ModelLoader.load(path: Fixtures.path("tiny_llama/model"), maxSeqLen: 64)
        var c = loaded.model.config
        c.dim = 128
        XCTAssertThrowsError(try AdapterWeights.load(path: Fixtures.path(Self.dir + "adapter_bias.pth"), model: c)) { e in
            XCTAssertTrue("\(e)".contains("128"), "\(e)")
        }
    }

    func testCLIGenerateWithAdapterAndImageGivesReferenceTokens() throws {
        let info = (Self.golden["adapters"] as! [String: Any])["bias"] as! [String: Any]
        let c = (info["cases"] as! [[String: Any]]).first { ($0["name"] as! String) == "image" }!
        let greedy = c["greedy_tokens"] as! [Int]
        let r = try CLIRunner.run(["generate", "--model", Fixtures.path("tiny_llama/model"), "--adapter", Fixtures.path(Self.dir + "adapter_bias.pth"),
                                   "--clip", Fixtures.path(Self.dir + "clip_tiny.pt"), "--image", Fixtures.path(Self.dir + "image.png"),
                                   "--prompt", "Describe this image.", "--temperature", "0", "--max-new-tokens", "\(greedy.count)", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["tokens"] as? [Int], Array(greedy.prefix { $0 != 2 }))
    }
}

/// Adapters attach to any base of matching width: the same tiny weights in Hugging Face layout give the
/// official layout's adapter logits.
final class AdapterOnAnyBaseTests: XCTestCase {
    func testBiasAdapterOnHuggingFaceBaseMatchesMetaBase() throws {
        var logits: [[Float]] = []
        for base in ["tiny_llama/model", "tiny_llama/hf"] {
            let loaded = try ModelLoader.load(path: Fixtures.path(base), maxSeqLen: 128)
            let model = try loaded.model.with(adapter: AdapterWeights.load(path: Fixtures.path("tiny_adapter/adapter_bias.pth"), model: loaded.model.config))
            let cache = DecoderState(model: model)
            cache.prompts = try model.makePrompts(visualQuery: nil)
            logits.append(try model.forwardArray(tokens: Fixtures.tinyLlama.cases[2].tokens, state: cache, allLogits: true))
        }
        XCTAssertEqual(logits[0], logits[1])
    }
}

/// `chat` with an adapter and an image: the image is encoded once and every turn answers with it.
final class AdapterChatTests: XCTestCase {
    func testChatWithImageAnswersLikeGenerateOnTheFirstTurn() throws {
        let common = ["--model", Fixtures.path("tiny_llama/model"), "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
                      "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth"), "--image", Fixtures.path("tiny_adapter/image.png"),
                      "--temperature", "0", "--max-new-tokens", "6"]
        let g = try CLIRunner.run(["generate"] + common + ["--prompt", "Describe this image.", "--json"])
        XCTAssertEqual(g.status, 0, g.stderr)
        let text = try XCTUnwrap((JSONSerialization.jsonObject(with: Data(g.stdout.utf8)) as? [String: Any])?["text"] as? String)
        let c = try CLIRunner.run(["chat"] + common, stdin: "Describe this image.\nAnd again?\n/exit\n")
        XCTAssertEqual(c.status, 0, c.stderr)
        XCTAssertTrue(c.stdout.hasPrefix(text), "chat: \(c.stdout.debugDescription) generate: \(text.debugDescription)")
    }
}
