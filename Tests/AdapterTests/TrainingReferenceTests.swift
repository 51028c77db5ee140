import LlamaAdapter
import Foundation
import XCTest

/// The trainer against tools/reference/make_training_reference.py: the official training step (PyTorch,
/// float32) on the tiny model for both official phases, batch 2, no shuffle, no augmentation,
/// `--compat official`, AdamW at a constant 1e-3.
final class TrainingReferenceTests: XCTestCase {
    static let golden: [String: Any] = {
        let data = try! Data(contentsOf: Fixtures.root.appendingPathComponent("training/golden.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    func trainer(phase: String, adapter: String? = nil) throws -> Trainer {
        let ref = (Self.golden["phases"] as! [String: Any])[phase] as! [String: Any]
        let container = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"),
                                                                   tokenizer: Fixtures.path("tiny_llama/tokenizer.model")))
        var o = TrainingOptions()
        o.phase = TrainingPhase(rawValue: phase)!
        o.batchSize = Self.golden["batch_size"] as! Int
        o.maxWords = Self.golden["max_words"] as! Int
        o.lr = Self.golden["lr"] as! Double
        o.minLR = o.lr
        o.steps = 3
        o.shuffle = false
        o.augment = false
        o.compat = .official
        return try Trainer(base: container.model, store: try ParameterStore.load(path: Fixtures.path(adapter ?? ref["adapter"] as! String)),
                           tokenizer: container.tokenizer, clip: CLIPVisionEncoder(weights: try CLIPVisionWeights.load(path: Fixtures.path("tiny_adapter/clip_tiny.pth"))),
                           data: try TrainingDataset.load(path: Fixtures.path("training/data.json")), captionData: nil, options: o)
    }

    func check(phase: String, adapter: String? = nil) throws {
        let ref = (Self.golden["phases"] as! [String: Any])[phase] as! [String: Any]
        let t = try trainer(phase: phase, adapter: adapter)
        XCTAssertEqual(Set(t.store.parameters.filter { $0.group != nil }.map(\.name)), Set(ref["trainable"] as! [String]), "trainable set")
        let steps = ref["steps"] as! [[String: Double]]
        for (k, expected) in steps.enumerated() {
            let r = try t.trainStep()
            if k == 0 {
                // Which tensors got a gradient, and how large, before the first update.
                XCTAssertEqual(Set(t.store.parameters.filter { $0.group != nil && !$0.touched }.map(\.name)), Set(ref["no_grad"] as! [String]))
                let norms = ref["grad_norms_step0"] as! [String: Double]
                for (name, n) in norms {
                    let p = t.store[name]!
                    let ours = (0..<p.count).reduce(0.0) { $0 + Double(p.grad![$1]) * Double(p.grad![$1]) }.squareRoot()
                    XCTAssertEqual(ours, n, accuracy: 1e-4 * max(n, 1e-3), "grad norm of \(name)")
                }
                XCTAssertEqual(r.loss, expected["loss"]!, accuracy: 1e-4 * expected["loss"]!, "\(phase) step 0 loss")
                XCTAssertEqual(r.gradNorm, expected["grad_norm"]!, accuracy: 1e-4 * expected["grad_norm"]!, "\(phase) step 0 grad norm")
            } else {
                XCTAssertEqual(r.loss, expected["loss"]!, accuracy: 1e-3 * expected["loss"]!, "\(phase) step \(k) loss")
                XCTAssertEqual(r.gradNorm, expected["grad_norm"]!, accuracy: 1e-3 * expected["grad_norm"]!, "\(phase) step \(k) grad norm")
            }
        }
    }

    func testFinetunePhaseMatchesTheOfficialTrainingStep() throws { try check(phase: "finetune") }
    func testPretrainPhaseMatchesTheOfficialTrainingStep() throws { try check(phase: "pretrain") }

    /// The official pretrain model has no biases (`w_bias = phase == "finetune"`), so starting it from a BIAS
    /// checkpoint ignores the checkpoint's bias keys: with --compat official, adapter_bias.pth gives exactly the
    /// golden run of adapter_pretrain.pth (the same file without its biases), and the biases are not written back.
    func testOfficialPretrainFromABiasAdapterIgnoresItsBiases() throws {
        try check(phase: "pretrain", adapter: "tiny_adapter/adapter_bias.pth")
        let t = try trainer(phase: "pretrain", adapter: "tiny_adapter/adapter_bias.pth")
        XCTAssertFalse(t.store.parameters.contains { $0.name.hasPrefix("llama.") && $0.name.hasSuffix(".bias") })
        guard case .bool(false)? = t.store.config.first(where: { $0.0 == "w_bias" })?.1 else { return XCTFail("w_bias is not false") }
    }
}
