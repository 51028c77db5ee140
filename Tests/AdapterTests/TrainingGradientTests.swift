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
        let clip = try CLIPVisionWeights.load(path: Fixtures.path("tiny_adapter/clip_tiny.pth"))
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
    func checkGradients(_ trainer: Trainer, batch: [Int], group: TrainingGroup = .caption, h: Float = 1e-2,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let loss = try trainer.evaluate(batch: batch, group: group, gradients: true)
        XCTAssertGreaterThan(loss, 0.1, "no labelled tokens?", file: file, line: line)
        let trained = trainer.store.parameters.filter { $0.group == group.rawValue && $0.touched }
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
}
