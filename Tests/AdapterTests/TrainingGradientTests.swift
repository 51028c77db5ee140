import LlamaAdapter
import Foundation
import XCTest

/// Whole-model gradients (language stack, adapter parts, visual branch, loss) against central finite
/// differences of the same model's loss, for each phase, on the tiny official-format model and on a GQA
/// base with tied embeddings and a fresh adapter.
final class TrainingGradientTests: XCTestCase {
    static let tokenizerPath = Fixtures.path("tiny_llama/tokenizer.model")

    /// Two instruction records (one with an empty input) and one image conversation.
    func writeData(in dir: URL) throws -> String {
        let image = Fixtures.path("tiny_adapter/image.png")
        let records: [[String: Any]] = [
            ["instruction": "Name a colour.", "input": "", "output": "Red is a colour."],
            ["image": image, "conversations": [["from": "human", "value": "What is in the picture?"],
                                               ["from": "gpt", "value": "A red square and a blue circle."]]],
            ["instruction": "Say hello.", "output": "Hello world."],
        ]
        let path = dir.appendingPathComponent("data.json").path
        try JSONSerialization.data(withJSONObject: records).write(to: URL(fileURLWithPath: path))
        return path
    }

    func tinyTrainer(phase: TrainingPhase, dataPath: String) throws -> Trainer {
        let container = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"), tokenizer: Self.tokenizerPath))
        let store = try ParameterStore.load(path: Fixtures.path("tiny_adapter/adapter_bias.pth"))
        let clip = CLIPVisionEncoder(weights: try CLIPVisionWeights.load(path: Fixtures.path("tiny_adapter/clip_tiny.pth")))
        var o = TrainingOptions()
        o.phase = phase
        o.batchSize = 3
        o.maxWords = 256
        o.shuffle = false
        o.augment = false
        return try Trainer(base: container.model, store: store, tokenizer: container.tokenizer, clip: clip,
                           data: try TrainingDataset.load(path: dataPath), captionData: nil, options: o)
    }

    /// Compares analytic gradients with (L(p + h) − L(p − h)) / 2h for a few elements of every trained tensor:
    /// the largest-gradient element and two fixed others.
    func checkGradients(_ trainer: Trainer, batch: [Int], group: TrainingGroup = .caption, h: Float = 1e-2, only: Set<String>? = nil,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let loss = try trainer.evaluate(batch: batch, group: group, gradients: true)
        XCTAssertGreaterThan(loss, 0.1, "no labelled tokens?", file: file, line: line)
        let trained = trainer.store.parameters.filter { $0.group == group.rawValue && $0.touched && (only?.contains($0.name) ?? true) }
        XCTAssertFalse(trained.isEmpty, "nothing trained", file: file, line: line)
        var analytic: [(Parameter, Int, Float)] = []
        for p in trained {
            var best = 0
            for i in 0..<p.count where abs(p.grad![i]) > abs(p.grad![best]) { best = i }
            for i in Set([best, p.count / 3, p.count - 1]) { analytic.append((p, i, p.grad![i])) }
        }
        var checked = 0, nonzero = 0
        for (p, i, g) in analytic {
            let old = p.values[i]
            p.values[i] = old + h
            let up = try trainer.evaluate(batch: batch, group: group, gradients: false)
            p.values[i] = old - h
            let down = try trainer.evaluate(batch: batch, group: group, gradients: false)
            p.values[i] = old
            let fd = Float((up - down) / Double(2 * h))
            XCTAssertEqual(g, fd, accuracy: 3e-3 + 3e-2 * abs(fd), "\(p.name)[\(i)]", file: file, line: line)
            checked += 1
            if abs(g) > 1e-4 { nonzero += 1 }
        }
        XCTAssertGreaterThan(nonzero, checked / 3, "too few non-zero gradients to mean anything", file: file, line: line)
    }

    func testFinetunePhaseGradientsMatchFiniteDifferences() throws {
        let dir = try makeTemporaryDirectory()
        let trainer = try tinyTrainer(phase: .finetune, dataPath: try writeData(in: dir))
        let names = Set(trainer.store.parameters.filter { $0.group != nil }.map(\.name))
        XCTAssertTrue(names.contains("llama.layers.1.attention.wq.bias"))
        XCTAssertTrue(names.contains("llama.norm.weight"))
        XCTAssertFalse(names.contains("llama.layers.1.attention.gate"))
        XCTAssertFalse(names.contains("clip_proj_norm.weight"), "finetune trains llama.* only")
        try checkGradients(trainer, batch: [0, 1, 2])
    }

    func testPretrainPhaseGradientsMatchFiniteDifferences() throws {
        let dir = try makeTemporaryDirectory()
        let trainer = try tinyTrainer(phase: .pretrain, dataPath: try writeData(in: dir))
        try checkGradients(trainer, batch: [0, 1, 2])
        _ = try trainer.evaluate(batch: [0, 1, 2], gradients: true)
        // Layer 0 gets no adaption prompt (query_layer 1 of 2 layers): its gate receives no gradient at all.
        XCTAssertEqual(trainer.store["llama.layers.0.attention.gate"]?.touched, false)
        XCTAssertEqual(trainer.store["llama.layers.1.attention.gate"]?.touched, true)
    }

    /// A random base in `dtype`: GQA (4 query heads over 2 kv heads), tied embeddings, 3 layers.
    static func gqaBase(dtype: DType) throws -> LlamaModel {
        let c = LlamaConfig(dim: 32, nLayers: 3, nHeads: 4, nKVHeads: 2, vocabSize: 400, hiddenDim: 64, maxSeqLen: 512, tiedEmbeddings: true)
        var rng = TrainingRNG(seed: 7)
        func make(_ shape: [Int], _ std: Double) throws -> Tensor {
            let n = shape.reduce(1, *)
            let values = (0..<n).map { _ in Float(rng.normal() * std) }
            let t = Tensor(uninitialized: shape, dtype: dtype)
            try values.withUnsafeBufferPointer { try quantize(dtype: dtype, src: $0.baseAddress!, dst: t.mutableData, count: n) }
            return t
        }
        func norm() -> Tensor { Tensor((0..<c.dim).map { _ in Float(1 + 0.2 * rng.normal()) }, shape: [c.dim]) }
        let layers = try (0..<c.nLayers).map { _ in
            LlamaLayerWeights(attentionNorm: norm(), wq: try make([c.dim, c.dim], 0.4), wk: try make([c.kvDim, c.dim], 0.4),
                              wv: try make([c.kvDim, c.dim], 0.3), wo: try make([c.dim, c.dim], 0.3), ffnNorm: norm(),
                              w1: try make([c.hiddenDim, c.dim], 0.3), w2: try make([c.dim, c.hiddenDim], 0.2),
                              w3: try make([c.hiddenDim, c.dim], 0.3))
        }
        let emb = try make([c.vocabSize, c.dim], 0.5)
        return try LlamaModel(config: c, weights: LlamaWeights(tokEmbeddings: emb, layers: layers, norm: norm(), output: emb))
    }

    /// Moves a fresh adapter off its neutral start (gates, LoRA up-projections, scales) so every part has a
    /// gradient worth checking.
    static func perturb(_ store: ParameterStore) {
        var rng = TrainingRNG(seed: 11)
        for p in store.parameters {
            if p.name.hasSuffix(".gate") || p.name.hasSuffix("_l2.weight") || p.name.hasSuffix(".bias") {
                for i in 0..<p.count { p.values[i] = Float(0.3 * rng.normal()) }
            } else if p.name.hasSuffix(".scale") || p.name.hasSuffix("new_gate") {
                for i in 0..<p.count { p.values[i] = Float(1 + 0.2 * rng.normal()) }
            }
        }
    }

    func gqaTrainer(phase: TrainingPhase, dtype: DType, dataPath: String) throws -> Trainer {
        let base = try Self.gqaBase(dtype: dtype)
        var spec = AdapterSpec()
        spec.bias = true
        spec.loraRank = 2
        spec.queryLayer = 2
        spec.queryLen = 3
        let store = try ParameterStore.fresh(spec, model: base, clipDim: nil, seed: 3)
        Self.perturb(store)
        let tokenizer = try SentencePieceTokenizer(path: Self.tokenizerPath)
        var o = TrainingOptions()
        o.phase = phase
        o.batchSize = 2
        o.maxWords = 256
        o.shuffle = false
        return try Trainer(base: base, store: store, tokenizer: tokenizer, clip: nil, data: try TrainingDataset.load(path: dataPath),
                           captionData: nil, options: o)
    }

    func writeTextData(in dir: URL) throws -> String {
        let records: [[String: Any]] = [
            ["instruction": "Name a colour.", "input": "", "output": "Red is a colour."],
            ["instruction": "Say hello.", "output": "Hello world."],
        ]
        let path = dir.appendingPathComponent("text.json").path
        try JSONSerialization.data(withJSONObject: records).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testFreshAdapterOnQuantizedGQABaseWithTiedEmbeddings() throws {
        let dir = try makeTemporaryDirectory()
        let data = try writeTextData(in: dir)
        for phase in [TrainingPhase.finetune, .pretrain] {
            let trainer = try gqaTrainer(phase: phase, dtype: .q8_0, dataPath: data)
            let trained = Set(trainer.store.parameters.filter { $0.group != nil }.map(\.name))
            if phase == .finetune {
                for n in ["llama.layers.0.attention.wk.scale", "llama.layers.2.feed_forward.lora_w2_l1.weight",
                          "llama.layers.1.attention.wq.bias", "llama.layers.0.ffn_norm.weight"] {
                    XCTAssertTrue(trained.contains(n), n)
                }
            } else {
                XCTAssertEqual(trained, Set(["adapter_query.weight", "llama.layers.0.attention.gate", "llama.layers.1.attention.gate",
                                             "llama.layers.2.attention.gate", "llama.layers.0.attention.new_gate",
                                             "llama.layers.1.attention.new_gate", "llama.layers.2.attention.new_gate"]))
            }
            try checkGradients(trainer, batch: [0, 1])
        }
    }

    func testFreshAdapterStartsAtTheBaseModel() throws {
        // Zero gates, zero biases, unit scales, zero LoRA up-projections: the first forward is the base model's.
        let base = try Self.gqaBase(dtype: .f32)
        var spec = AdapterSpec()
        spec.bias = true
        spec.loraRank = 4
        spec.queryLayer = 2
        spec.queryLen = 5
        let store = try ParameterStore.fresh(spec, model: base, clipDim: nil, seed: 1)
        let model = try base.with(adapter: store.adapterWeights(model: base.config))
        let tokens = [1, 50, 60, 70, 80]
        let a = try base.forwardArray(tokens: tokens, state: DecoderState(model: base), allLogits: true)
        let b = try model.forwardArray(tokens: tokens, state: DecoderState(model: model, prompts: try model.makePrompts(visualQuery: nil)),
                                       allLogits: true)
        XCTAssertEqual(a, b)
    }

    func testJointGroupsAreDisjointAndTheirGradientsMatch() throws {
        let dir = try makeTemporaryDirectory()
        let data = try writeData(in: dir)
        let tsv = dir.appendingPathComponent("captions.tsv").path
        try "url\tcaption\n\(Fixtures.path("tiny_adapter/image.png"))\tA red square.\n\(Fixtures.path("tiny_adapter/image.png"))\tShapes on grey.\n"
            .write(toFile: tsv, atomically: true, encoding: .utf8)
        let container = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"), tokenizer: Self.tokenizerPath))
        let store = try ParameterStore.load(path: Fixtures.path("tiny_adapter/adapter_bias.pth"))
        let clip = CLIPVisionEncoder(weights: try CLIPVisionWeights.load(path: Fixtures.path("tiny_adapter/clip_tiny.pth")))
        var o = TrainingOptions()
        o.phase = .joint
        o.batchSize = 2
        o.maxWords = 256
        o.shuffle = false
        o.augment = false
        let trainer = try Trainer(base: container.model, store: store, tokenizer: container.tokenizer, clip: clip,
                                  data: try TrainingDataset.load(path: data), captionData: try TrainingDataset.load(path: tsv), options: o)
        let caption = Set(store.members(of: 0).map(\.name)), instruction = Set(store.members(of: 1).map(\.name))
        XCTAssertTrue(caption.isDisjoint(with: instruction))
        // 2 layers, adaption prompt in the last one: early fusion into layer 0.
        XCTAssertTrue(caption.contains("llama.layers.0.attention.gate"))
        XCTAssertTrue(caption.contains("visual_blocks.1.mlp.fc2.weight"))
        XCTAssertTrue(instruction.contains("llama.layers.1.attention.gate"))
        XCTAssertTrue(instruction.contains("adapter_query.weight"))
        XCTAssertTrue(instruction.contains("llama.layers.0.feed_forward.w2.bias"))
        try checkGradients(trainer, batch: [0, 1], group: .caption)
        try checkGradients(trainer, batch: [0, 1], group: .instruction)
        // A caption batch leaves every instruction parameter without a gradient, and the reverse.
        _ = try trainer.evaluate(batch: [0, 1], group: .caption, gradients: true)
        XCTAssertFalse(store.parameters.contains { $0.touched && $0.group != 0 })
        _ = try trainer.evaluate(batch: [0, 1], group: .instruction, gradients: true)
        XCTAssertFalse(store.parameters.contains { $0.touched && $0.group != 1 })
    }

    func testInputSideScalesOfThe65BFormatGetTheirGradients() throws {
        // The 65B chat release's y = W (x ⊙ s) + b: `wq_scale` [in], `w2_scale` [hidden], biases `_bias`.
        let dir = try makeTemporaryDirectory()
        let base = try Self.gqaBase(dtype: .f16)
        let c = base.config
        var rng = TrainingRNG(seed: 5)
        func values(_ n: Int, around m: Double, _ sd: Double) -> [Float] { (0..<n).map { _ in Float(m + sd * rng.normal()) } }
        var params: [Parameter] = []
        for i in 0..<c.nLayers {
            let p = "llama.layers.\(i)."
            params.append(Parameter(name: p + "attention.wq_scale", shape: [c.dim], values: values(c.dim, around: 1, 0.2)))
            params.append(Parameter(name: p + "attention.wq_bias", shape: [c.dim], values: values(c.dim, around: 0, 0.2)))
            params.append(Parameter(name: p + "feed_forward.w2_scale", shape: [c.hiddenDim], values: values(c.hiddenDim, around: 1, 0.2)))
            params.append(Parameter(name: p + "attention_norm.weight", shape: [c.dim], values: base.weights.layers[i].attentionNorm.toFloatArray()))
        }
        let store = try ParameterStore(parameters: params, config: [("w_bias", .bool(true))], origin: "65B-style test adapter")
        let adapter = try store.adapterWeights(model: c)
        XCTAssertTrue(adapter.layers[0].wq.scaleOnInput)
        var o = TrainingOptions()
        o.batchSize = 2
        o.maxWords = 256
        o.shuffle = false
        let trainer = try Trainer(base: base, store: store, tokenizer: try SentencePieceTokenizer(path: Self.tokenizerPath), clip: nil,
                                  data: try TrainingDataset.load(path: try writeTextData(in: dir)), captionData: nil, options: o)
        XCTAssertEqual(store.trainableCount, params.reduce(0) { $0 + $1.count })
        try checkGradients(trainer, batch: [0, 1], h: 2e-3)
    }

    func testGradientsFlowThroughTheRealQuantizedSmolLM2() throws {
        // SmolLM2-135M-Instruct, frozen Q4_1 weights, GQA 9/3 heads, tied embeddings, byte-level BPE, no BOS.
        let dir = try makeTemporaryDirectory()
        let container = try ModelContainer.load(ModelConfiguration(model: try Fixtures.smolLM2(), maxSeqLen: 256))
        var spec = AdapterSpec()
        spec.bias = true
        let store = try ParameterStore.fresh(spec, model: container.model, clipDim: nil, seed: 4)
        Self.perturb(store)
        var o = TrainingOptions()
        o.batchSize = 2
        o.maxWords = 64
        o.shuffle = false
        let trainer = try Trainer(base: container.model, store: store, tokenizer: container.tokenizer, clip: nil,
                                  data: try TrainingDataset.load(path: try writeTextData(in: dir)), captionData: nil, options: o)
        // Three tensors (a debug-build forward of SmolLM2 takes seconds): the deepest, a middle one, the last.
        try checkGradients(trainer, batch: [0, 1], h: 1e-2, only: ["llama.layers.0.attention.wk.scale",
                                                                   "llama.layers.14.feed_forward.w2.scale", "llama.norm.weight"])
    }
}
