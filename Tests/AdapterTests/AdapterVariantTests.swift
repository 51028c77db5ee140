import LlamaAdapter
import Foundation
import XCTest

/// Adapter variants beyond the multimodal release format, against tools/reference/make_adapter_variants.py
/// (Tests/Fixtures/adapter_variants): the 65B chat release format (input-side scales, wk/wv biases, prompt
/// through the extras), the paper's Eq. 1 output-side scales with the BIAS key set (text only), and the
/// paper's early fusion (tiny_adapter BIAS adapter, visual query alone in layer 0).
final class AdapterVariantTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    static func path(_ relative: String) -> String { fixtures.appendingPathComponent(relative).path }

    static let golden: [String: Any] = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("adapter_variants/golden.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    static func variant(_ name: String) -> [String: Any] {
        (golden["variants"] as! [String: Any])[name] as! [String: Any]
    }

    static func floats(_ v: Any?) -> [Float] {
        if let a = v as? [Any] { return a.flatMap { floats($0) } }
        if let n = v as? NSNumber { return [n.floatValue] }
        return []
    }


    func tokenizer() throws -> SentencePieceTokenizer {
        try SentencePieceTokenizer(path: Self.path("tiny_llama/tokenizer.model"))
    }

    /// Loads the tiny base model with the variant's adapter attached (early fusion applied when asked) and
    /// returns the model with its adapter prompts.
    func prepare(_ name: String) throws -> (LlamaModel, AdapterPrompts?) {
        let v = Self.variant(name)
        let loaded = try ModelLoader.load(path: Self.path("tiny_llama/model"), maxSeqLen: 512)
        let adapter = try AdapterWeights.load(path: Self.path(v["adapter"] as! String), model: loaded.model.config)
        let fusion: Fusion = (v["fusion"] as! String) == "early" ? .early(layers: v["early_layers"] as! Int) : .release
        let model = try loaded.model.with(adapter: adapter)
        var visualQuery: Tensor?
        if let clipPath = v["clip"] as? String, let imagePath = v["image"] as? String {
            let clip = try CLIPVisionWeights.load(path: Self.path(clipPath))
            let npy = try NPY.read(path: Self.path(imagePath))
            let image = Tensor(try npy.floats(), shape: Array(npy.shape.suffix(3)))
            let vq = try model.visualQuery(clipFeatures: clipEncodeImage(clip, image: image))
            assertClose(vq.toFloatArray(), Self.floats(v["visual_query"]), 1e-4, "\(name) visual query")
            visualQuery = vq
        }
        return (model, try model.makePrompts(visualQuery: visualQuery, fusion: fusion))
    }

    func check(_ name: String) throws {
        let v = Self.variant(name)
        let (model, prompts) = try prepare(name)
        let tok = try tokenizer()
        let tokens = v["tokens"] as! [Int]
        XCTAssertEqual(tok.encode(v["prompt"] as! String, addBos: true, addEos: false), tokens, name)
        // Which layers get a prompt, and how long.
        let layers = v["prompt_layers"] as! [Any]
        XCTAssertEqual(prompts?.layers.count, layers.count, name)
        for (l, info) in layers.enumerated() {
            if let info = info as? [String: Any] {
                XCTAssertEqual(prompts?.layers[l]?.length, info["length"] as? Int, "\(name) layer \(l) prompt")
            } else {
                XCTAssertNil(prompts?.layers[l] ?? nil, "\(name) layer \(l) should have no prompt")
            }
        }
        // Prefill: every position.
        let cache = DecoderState(model: model)
        cache.prompts = prompts
        let all = try model.forwardArray(tokens: tokens, state: cache, allLogits: true)
        let V = model.config.vocabSize
        let rows = (v["prefill_logits"] as! [Any]).map { Self.floats($0) }
        XCTAssertEqual(rows.count, tokens.count, name)
        var worst: Float = 0
        for (p, row) in rows.enumerated() {
            for (x, y) in zip(all[p * V..<(p + 1) * V], row) { worst = max(worst, abs(x - y)) }
        }
        XCTAssertLessThanOrEqual(worst, 1e-4, "\(name) prefill logits: max abs difference \(worst)")
        let argmax = (0..<tokens.count).map { Sampler.argmax(Array(all[$0 * V..<($0 + 1) * V])) }
        XCTAssertEqual(argmax, v["prefill_argmax"] as! [Int], name)
        // Incremental decoding with the KV cache.
        let steps = (v["step_logits"] as! [Any]).map { Self.floats($0) }
        XCTAssertEqual(steps.count, 3, name)
        for (k, token) in (v["step_input_tokens"] as! [Int]).enumerated() {
            assertClose(try model.forwardArray(tokens: [token], state: cache), steps[k], 1e-4, "\(name) decode step \(k)")
        }
        // Greedy generation.
        let greedy = v["greedy_tokens"] as! [Int]
        let result = try ModelContainer(model: model, tokenizer: tok).makeSession(prompts: prompts)
            .generate(prompt: tokens, maxNewTokens: greedy.count, sampling: .greedy)
        XCTAssertEqual(result.tokens, Array(greedy.prefix { $0 != 2 }), name)
        XCTAssertEqual(result.text, v["greedy_text"] as! String, name)
    }

    // MARK: - Loader

    func testChat65BCheckpointIsReadAsInputSideScales() throws {
        let v = Self.variant("chat65b")
        let loaded = try ModelLoader.load(path: Self.path("tiny_llama/model"), maxSeqLen: 64)
        let a = try AdapterWeights.load(path: Self.path(v["adapter"] as! String), model: loaded.model.config)
        XCTAssertEqual(a.config.queryLen, 3)
        XCTAssertEqual(a.config.queryLayer, 1)
        XCTAssertNil(a.visual)
        XCTAssertNil(a.norm, "the 65B code trains no final norm (`_norm.` rule)")
        XCTAssertNil(a.layers[0].gate, "the 65B code deletes gates outside the adapter layers")
        XCTAssertNotNil(a.layers[1].gate)
        for l in a.layers {
            for e in [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3] {
                XCTAssertNotNil(e.bias)
                XCTAssertNotNil(e.scale)
                XCTAssertTrue(e.scaleOnInput)
            }
            XCTAssertEqual(l.w2.scale?.shape, [loaded.model.config.hiddenDim])
            XCTAssertEqual(l.w1.scale?.shape, [loaded.model.config.dim])
            XCTAssertNotNil(l.attentionNorm)
            XCTAssertNotNil(l.ffnNorm)
        }
    }

    func testEq1CheckpointIsReadAsOutputSideScales() throws {
        let v = Self.variant("eq1_scale")
        let loaded = try ModelLoader.load(path: Self.path("tiny_llama/model"), maxSeqLen: 64)
        let a = try AdapterWeights.load(path: Self.path(v["adapter"] as! String), model: loaded.model.config)
        XCTAssertEqual(a.config.queryLen, 3)
        XCTAssertEqual(a.config.queryLayer, 1)
        XCTAssertNil(a.visual)
        XCTAssertNotNil(a.norm)
        for l in a.layers {
            for e in [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3] {
                XCTAssertNotNil(e.scale)
                XCTAssertFalse(e.scaleOnInput)
            }
            XCTAssertEqual(l.w1.scale?.shape, [loaded.model.config.hiddenDim])
            XCTAssertEqual(l.w2.scale?.shape, [loaded.model.config.dim])
            XCTAssertNil(l.wk.bias)
            XCTAssertNil(l.wv.bias)
            XCTAssertNotNil(l.wq.bias)
            XCTAssertNotNil(l.gate)
        }
    }

    // MARK: - Golden outputs

    func testChat65BFormatMatchesReference() throws { try check("chat65b") }
    func testEq1OutputScalesMatchReference() throws { try check("eq1_scale") }
    func testEarlyFusionMatchesReference() throws { try check("early_fusion") }

    func testEarlyFusionOverlappingTheAdapterLayersIsRefused() throws {
        let loaded = try ModelLoader.load(path: Self.path("tiny_llama/model"), maxSeqLen: 64)
        let adapter = try AdapterWeights.load(path: Self.path("tiny_adapter/adapter_bias.pth"), model: loaded.model.config)
        let model = try loaded.model.with(adapter: adapter)
        // A 2-layer model whose last layer carries adapter_query.
        XCTAssertThrowsError(try model.makePrompts(visualQuery: nil, fusion: .early(layers: 2)))
    }

    // MARK: - CLI

    func runCLI(_ name: String, extra: [String]) throws {
        let v = Self.variant(name)
        let greedy = v["greedy_tokens"] as! [Int]
        let r = try CLIRunner.run(["generate", "--model", Self.path("tiny_llama/model"), "--adapter", Self.path(v["adapter"] as! String),
                                   "--prompt", v["instruction"] as! String, "--temperature", "0",
                                   "--max-new-tokens", "\(greedy.count)", "--json"] + extra)
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(obj["tokens"] as? [Int], Array(greedy.prefix { $0 != 2 }), name)
    }

    func testCLIGenerateWithEarlyFusionGivesReferenceTokens() throws {
        // The CLI preprocesses image.png itself; the reference checked that the greedy tokens survive input noise
        // well above the preprocessing's error.
        let v = Self.variant("early_fusion")
        try runCLI("early_fusion", extra: ["--clip", Self.path(v["clip"] as! String), "--image", Self.path(v["image_png"] as! String),
                                           "--fusion", "early", "--early-layers", "1"])
    }

    func testCLIGenerateWithChat65BAdapterGivesReferenceTokens() throws {
        try runCLI("chat65b", extra: [])
    }

    func testCLIGenerateWithEq1AdapterGivesReferenceTokens() throws {
        try runCLI("eq1_scale", extra: [])
    }
}
