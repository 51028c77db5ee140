import LlamaAdapter
import Foundation
import XCTest

/// Tensors whose shapes disagree with the rest of the file are refused with one readable error, never read
/// past their end (issue 10's corrupted-fixture cases for CLIP and adapters).
final class HostileShapeTests: XCTestCase {
    /// The tiny OpenAI CLIP state dict as a mutable source, with `replace` applied.
    func clip(replacing name: String, shape: [Int]) throws -> ParameterStore {
        let ckpt = try TorchCheckpoint(path: Fixtures.path("tiny_adapter/clip_tiny.pth"))
        let params = try ckpt.tensorNames.map { n -> Parameter in
            if n == name { return Parameter(name: n, shape: shape, values: [Float](repeating: 0.5, count: shape.reduce(1, *))) }
            let t = try ckpt.tensor(n)
            return Parameter(name: n, shape: t.shape, values: t.toFloatArray())
        }
        return try ParameterStore(parameters: params, config: [], origin: "clip")
    }

    func testCLIPTensorsOfTheWrongShapeAreRefused() throws {
        let good = try CLIPVisionWeights.openAI(try clip(replacing: "none", shape: []), source: "clip")
        XCTAssertEqual(good.width, 64)
        let cases: [(String, [Int], String)] = [
            ("visual.class_embedding", [1], "class_embedding"), ("visual.class_embedding", [4096], "class_embedding"),
            ("visual.ln_pre.weight", [1], "ln_pre.weight"), ("visual.positional_embedding", [0, 64], "positional_embedding"),
            ("visual.positional_embedding", [50, 0], "positional_embedding"),
            ("visual.transformer.resblocks.0.mlp.c_fc.weight", [256, 63], "fc1 weight"),
            ("visual.proj", [64, 0], "proj"),
        ]
        for (name, shape, needle) in cases {
            let src = try clip(replacing: name, shape: shape)
            assertThrows(try CLIPVisionWeights.openAI(src, source: "clip"), contains: [needle])
        }
    }

    func testAdapterTensorsOfTheWrongShapeAreRefused() throws {
        let c = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"), tokenizer: Fixtures.path("tiny_llama/tokenizer.model")))
        let base = try ParameterStore.load(path: Fixtures.path("tiny_adapter/adapter_bias.pth"))
        func variant(_ name: String, _ shape: [Int]) throws -> ParameterStore {
            let params = base.parameters.map { p -> Parameter in
                p.name == name ? Parameter(name: name, shape: shape, values: [Float](repeating: 0.1, count: shape.reduce(1, *)))
                               : Parameter(name: p.name, shape: p.shape, values: Array(UnsafeBufferPointer(start: p.values, count: p.count)))
            }
            return try ParameterStore(parameters: params, config: base.config, origin: "adapter")
        }
        for (name, shape, needle) in [("clip_proj.weight", [33, 48], "clip_proj.weight"), ("visual_query.weight", [0, 32], "visual_query"),
                                      ("visual_blocks.0.mlp.fc1.weight", [128, 31], "fc1"), ("llama.layers.1.attention.gate", [1, 3, 1, 1], "gate")] {
            assertThrows(try variant(name, shape).adapterWeights(model: c.model.config), contains: [needle])
        }
        // A clip_proj for another CLIP width loads, but is refused when an image meets it.
        let wide = try variant("clip_proj.weight", [32, 99]).adapterWeights(model: c.model.config)
        let model = try c.model.with(adapter: wide)
        let clip = try CLIPVisionWeights.load(path: Fixtures.path("tiny_adapter/clip_tiny.pth"))
        let feats = try clipEncodeImage(clip, image: Tensor(zeros: [3, 224, 224]))
        assertThrows(try model.visualQuery(clipFeatures: feats), contains: ["clip_proj expects width 99"])
    }

    func testExtremeAspectImagesAndSpecialFilesAreRefusedInOneLine() throws {
        // A few hundred bytes of PNG whose resize-before-crop would need ~10 GB.
        let r = try CLIRunner.run(["preprocess", "--image", Fixtures.path("images/strip_1x65000.png"), "--out", "/tmp/never-written.npy"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.hasPrefix("error: ") && r.stderr.contains("aspect ratio"), r.stderr)
        // --out onto a device node is refused instead of renamed over it.
        let dev = try CLIRunner.run(["preprocess", "--image", Fixtures.path("tiny_adapter/image.png"), "--out", "/dev/null"])
        XCTAssertEqual(dev.status, 1)
        XCTAssertTrue(dev.stderr.contains("not a regular file"), dev.stderr)
        // A path with a newline still gives exactly one error line.
        let nl = try CLIRunner.run(["generate", "--model", "/tmp/no\nsuch", "--prompt", "x"])
        XCTAssertEqual(nl.status, 1)
        XCTAssertEqual(nl.stderr.split(separator: "\n").count, 1, nl.stderr)
    }

    /// A copy of a fixture folder with one JSON file's keys overridden.
    func folder(_ fixture: String, json file: String, set values: [String: Any]) throws -> String {
        let dir = try makeTemporaryDirectory().appendingPathComponent("m")
        try FileManager.default.copyItem(at: Fixtures.root.appendingPathComponent(fixture), to: dir)
        let path = dir.appendingPathComponent(file)
        var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: path)) as! [String: Any]
        for (k, v) in values { obj[k] = v }
        try JSONSerialization.data(withJSONObject: obj).write(to: path)
        return dir.path
    }

    func testImplausibleConfigurationValuesAreRefusedNotTrapped() throws {
        for values: [String: Any] in [["multiple_of": 0], ["ffn_dim_multiplier": 1e300], ["n_heads": 0], ["norm_eps": -1]] {
            let dir = try folder("tiny_llama/model", json: "params.json", set: values)
            assertThrows(try ModelLoader.load(path: dir), contains: [])
        }
        for values: [String: Any] in [["max_position_embeddings": -5], ["head_dim": 1 << 62], ["num_hidden_layers": 1 << 40]] {
            let dir = try folder("tiny_llama/hf", json: "config.json", set: values)
            assertThrows(try ModelLoader.load(path: dir), contains: [])
        }
    }
}
