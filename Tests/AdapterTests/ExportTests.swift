import LlamaAdapter
import Foundation
import XCTest

/// `export`: a bias/scale/norm adapter folded into a GGUF. Our forward of the merged file (which loads its
/// bias tensors as llama.cpp's LLaMA loader does) equals our forward of base + adapter.
final class ExportTests: XCTestCase {
    static let base = Fixtures.path("tiny_llama/tiny_llama.f16.gguf.bin")

    /// A trained-looking bias adapter: non-trivial biases, scales and norms.
    func writeAdapter(to path: String, model: LlamaModel, lora: Bool = false, prompts: Bool = false) throws {
        var spec = AdapterSpec()
        spec.bias = true
        if lora { spec.loraRank = 2 }
        if prompts { spec.queryLayer = 1; spec.queryLen = 2 }
        let store = try ParameterStore.fresh(spec, model: model, clipDim: nil, seed: 2)
        var rng = TrainingRNG(seed: 9)
        for p in store.parameters {
            for i in 0..<p.count {
                if p.name.hasSuffix(".bias") { p.values[i] = Float(0.2 * rng.normal()) }
                if p.name.hasSuffix(".scale") || p.name.hasSuffix("norm.weight") { p.values[i] *= Float(1 + 0.2 * rng.normal()) }
                if p.name.hasSuffix(".gate") || p.name.hasSuffix("_l2.weight") { p.values[i] = Float(0.3 * rng.normal()) }
            }
        }
        try store.write(to: path, format: .pytorch)
    }

    func testMergedGGUFComputesWhatBasePlusAdapterComputes() throws {
        let dir = try makeTemporaryDirectory()
        let base = try ModelLoader.load(path: Self.base).model
        let adapterPath = dir.appendingPathComponent("a.pth").path, out = dir.appendingPathComponent("merged.gguf").path
        try writeAdapter(to: adapterPath, model: base)
        let r = try CLIRunner.run(["export", "--model", Self.base, "--adapter", adapterPath, "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let merged = try GGUFFile(path: out)
        for n in ["blk.0.attn_q.bias", "blk.1.attn_output.bias", "blk.0.ffn_gate.bias", "blk.1.ffn_down.bias", "blk.0.ffn_up.bias"] {
            XCTAssertEqual(merged.info(n)?.dtype, .f32, n)
        }
        XCTAssertNil(merged.info("blk.0.attn_k.bias"), "wk carries a scale but no bias: no bias tensor")
        XCTAssertEqual(merged.metadataKeys, try GGUFFile(path: Self.base).metadataKeys, "metadata copied unchanged")
        let adapted = try base.with(adapter: AdapterWeights.load(path: adapterPath, model: base.config))
        let mergedModel = try ModelLoader.load(path: out).model
        let tokens = [1, 37, 150, 9, 260, 71, 33]
        let a = try adapted.forwardArray(tokens: tokens, state: DecoderState(model: adapted), allLogits: true)
        let b = try mergedModel.forwardArray(tokens: tokens, state: DecoderState(model: mergedModel), allLogits: true)
        // f16 weights: the scaled rows are re-rounded to f16 (relative 2^-11 per weight).
        let scale = a.map(abs).max()!
        assertClose(a, b, 5e-3 * scale, "merged vs base + adapter")
    }

    func testLoRAIsMergedIntoTheWeights() throws {
        let dir = try makeTemporaryDirectory()
        let base = try ModelLoader.load(path: Self.base).model
        let adapterPath = dir.appendingPathComponent("l.pth").path, out = dir.appendingPathComponent("merged.gguf").path
        try writeAdapter(to: adapterPath, model: base, lora: true)
        let r = try CLIRunner.run(["export", "--model", Self.base, "--adapter", adapterPath, "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("14 LoRA merged"), r.stderr)
        let adapted = try base.with(adapter: AdapterWeights.load(path: adapterPath, model: base.config))
        let merged = try ModelLoader.load(path: out).model
        let tokens = [1, 37, 150, 9, 260]
        let a = try adapted.forwardArray(tokens: tokens, state: DecoderState(model: adapted), allLogits: true)
        let b = try merged.forwardArray(tokens: tokens, state: DecoderState(model: merged), allLogits: true)
        assertClose(a, b, 5e-3 * a.map(abs).max()!, "LoRA merged vs base + adapter")
    }

    func testWhatLlamaCppCannotExpressIsRefused() throws {
        let dir = try makeTemporaryDirectory()
        let base = try ModelLoader.load(path: Self.base).model
        for (lora, prompts, needle) in [(false, true, "adaption prompts")] {
            let path = dir.appendingPathComponent("x.pth").path
            try writeAdapter(to: path, model: base, lora: lora, prompts: prompts)
            let r = try CLIRunner.run(["export", "--model", Self.base, "--adapter", path, "--out", dir.appendingPathComponent("m.gguf").path])
            XCTAssertEqual(r.status, 1)
            XCTAssertTrue(r.stderr.hasPrefix("error: ") && r.stderr.contains(needle), r.stderr)
        }
        let r = try CLIRunner.run(["export", "--model", Fixtures.path("tiny_llama/model"), "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
                                   "--out", dir.appendingPathComponent("m.gguf").path])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains(".gguf base"), r.stderr)
    }
}
