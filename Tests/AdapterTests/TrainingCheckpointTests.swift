import LlamaAdapter
import Foundation
import XCTest

/// What `finetune` writes: the official adapter format (key list, dtypes and the loss PyTorch computes with it,
/// from tools/reference/check_trained_adapter.py), safetensors, the `--log-json` contract, and training state
/// that resumes bit for bit, also after `kill -9`.
final class TrainingCheckpointTests: XCTestCase {
    static let check: [String: Any] = {
        let data = try! Data(contentsOf: Fixtures.root.appendingPathComponent("training/trained_check.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    /// The arguments check_trained_adapter.py's result was made with.
    static let referenceRun = ["finetune", "--model", Fixtures.path("tiny_llama/model"), "--tokenizer", Fixtures.path("tiny_llama/tokenizer.model"),
                               "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth"), "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
                               "--phase", "finetune", "--data", Fixtures.path("training/data.json"), "--batch-size", "2", "--steps", "3",
                               "--lr", "1e-3", "--min-lr", "1e-3", "--max-words", "160", "--no-shuffle", "--no-augment", "--compat", "official"]

    func testOutputHasTheOfficialKeysDtypesAndTheLossPyTorchComputesWithIt() throws {
        let dir = try makeTemporaryDirectory()
        let out = dir.appendingPathComponent("trained.pth").path
        let r = try CLIRunner.run(Self.referenceRun + ["--out", out, "--log-json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // --log-json: one object per optimizer step with the contract's keys; losses as the reference's.
        let lines = r.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(lines.map { $0["step"] as! Int }, [0, 1, 2])
        for l in lines { for key in ["loss", "grad_norm", "lr"] { XCTAssertNotNil(l[key] as? Double, key) } }
        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.root.appendingPathComponent("training/golden.json"))) as! [String: Any]
        let ref = ((golden["phases"] as! [String: Any])["finetune"] as! [String: Any])["steps"] as! [[String: Double]]
        XCTAssertEqual(lines[0]["loss"] as! Double, ref[0]["loss"]!, accuracy: 1e-4 * ref[0]["loss"]!)
        XCTAssertEqual(lines[0]["grad_norm"] as! Double, ref[0]["grad_norm"]!, accuracy: 1e-4 * ref[0]["grad_norm"]!)

        let ckpt = try TorchCheckpoint(path: out)
        XCTAssertEqual(ckpt.keyPath, ["model"])
        let root = ckpt.root.dictEntries!.map(\.key.keyString)
        XCTAssertEqual(root, ["model", "config"])
        let keys = ckpt.root["model"]!.dictEntries!.map(\.key.keyString)
        XCTAssertEqual(keys, Self.check["keys"] as! [String], "key list and order of extract_adapter_from_checkpoint.py")
        let dtypes = Self.check["dtypes"] as! [String: String]
        for k in keys { XCTAssertEqual(ckpt.info(k)?.dtype == .f32 ? "float32" : "other", dtypes[k] == "float32" ? "float32" : "other", k) }
        XCTAssertEqual(ckpt.metadata["config"]?["w_bias"]?.boolValue, true)

        // The loss of the written adapter, computed here, equals the one PyTorch computed from the same file.
        let container = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"), tokenizer: Fixtures.path("tiny_llama/tokenizer.model")))
        var o = TrainingOptions()
        o.maxWords = 160; o.shuffle = false; o.augment = false; o.compat = .official; o.batchSize = 2
        let t = try Trainer(base: container.model, store: try ParameterStore.load(path: out), tokenizer: container.tokenizer,
                            clip: CLIPVisionEncoder(weights: try CLIPVisionWeights.load(path: Fixtures.path("tiny_adapter/clip_tiny.pth"))),
                            data: try TrainingDataset.load(path: Fixtures.path("training/data.json")), captionData: nil, options: o)
        let loss = try t.evaluate(batch: [0, 1], gradients: false)
        let expected = Self.check["batch0_loss_after"] as! Double
        XCTAssertEqual(loss, expected, accuracy: 1e-4 * expected)
    }

    func testSafetensorsOutputLoadsAsTheSameAdapter() throws {
        let dir = try makeTemporaryDirectory()
        let pth = dir.appendingPathComponent("a.pth").path, st = dir.appendingPathComponent("a.safetensors").path
        XCTAssertEqual(try CLIRunner.run(Self.referenceRun + ["--out", pth]).status, 0)
        let r = try CLIRunner.run(Self.referenceRun + ["--out", st, "--format", "safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let c = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"), tokenizer: Fixtures.path("tiny_llama/tokenizer.model")))
        let a = try c.model.with(adapter: AdapterWeights.load(path: pth, model: c.model.config))
        let b = try c.model.with(adapter: AdapterWeights.load(path: st, model: c.model.config))
        XCTAssertEqual(a.adapter?.config, b.adapter?.config)
        let tokens = [1, 20, 30, 40]
        let pa = try a.makePrompts(visualQuery: Tensor(zeros: [3, 64])), pb = try b.makePrompts(visualQuery: Tensor(zeros: [3, 64]))
        XCTAssertEqual(try a.forwardArray(tokens: tokens, state: DecoderState(model: a, prompts: pa), allLogits: true),
                       try b.forwardArray(tokens: tokens, state: DecoderState(model: b, prompts: pb), allLogits: true))
    }

    /// Arguments of a run that shuffles and augments, so resuming must restore data order and RNG too.
    func resumeRun(_ dir: URL) -> [String] {
        ["finetune", "--model", Fixtures.path("tiny_llama/model"), "--tokenizer", Fixtures.path("tiny_llama/tokenizer.model"),
         "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth"), "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
         "--phase", "pretrain", "--data", Fixtures.path("training/data.json"), "--batch-size", "2", "--steps", "7",
         "--lr", "1e-3", "--warmup-steps", "2", "--max-words", "160", "--seed", "5", "--log-json"]
    }

    static func withoutTimes(_ s: String) -> [String] {
        s.split(separator: "\n").map { String($0.replacingOccurrences(of: #", "seconds": [^}]*"#, with: "", options: .regularExpression)) }
    }

    func testResumedRunEqualsAnUninterruptedOne() throws {
        let dir = try makeTemporaryDirectory()
        for d in ["full", "part"] { try FileManager.default.createDirectory(at: dir.appendingPathComponent(d), withIntermediateDirectories: true) }
        let full = try CLIRunner.run(resumeRun(dir) + ["--out", dir.appendingPathComponent("full/out.pth").path])
        XCTAssertEqual(full.status, 0, full.stderr)
        let state = dir.appendingPathComponent("state.pth").path
        let out = dir.appendingPathComponent("part/out.pth").path
        // Three sittings: steps 0-2, 3-4, 5-6; --steps still counts from the start of training.
        let a = try CLIRunner.run(resumeRun(dir) + ["--out", out, "--state", state, "--stop-after", "3"])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "--out is written when training ends, not when a sitting stops")
        let b = try CLIRunner.run(resumeRun(dir) + ["--out", out, "--resume", state, "--stop-after", "2"])
        XCTAssertEqual(b.status, 0, b.stderr)
        let c = try CLIRunner.run(resumeRun(dir) + ["--out", out, "--resume", state])
        XCTAssertEqual(c.status, 0, c.stderr)
        XCTAssertEqual(Self.withoutTimes(a.stdout) + Self.withoutTimes(b.stdout) + Self.withoutTimes(c.stdout), Self.withoutTimes(full.stdout))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), try Data(contentsOf: dir.appendingPathComponent("full/out.pth")))
        // Other settings than the state's are refused, in one line.
        let wrong = try CLIRunner.run(resumeRun(dir).map { $0 == "5" ? "6" : $0 } + ["--out", out, "--resume", state])
        XCTAssertEqual(wrong.status, 1)
        XCTAssertTrue(wrong.stderr.hasPrefix("error: ") && wrong.stderr.contains("other settings"), wrong.stderr)
    }

    func testKillNineAtAnyMomentThenResumeEqualsAnUninterruptedRun() throws {
        let dir = try makeTemporaryDirectory()
        for d in ["full", "part"] { try FileManager.default.createDirectory(at: dir.appendingPathComponent(d), withIntermediateDirectories: true) }
        let full = try CLIRunner.run(resumeRun(dir) + ["--out", dir.appendingPathComponent("full/out.pth").path])
        XCTAssertEqual(full.status, 0, full.stderr)
        let expected = Self.withoutTimes(full.stdout)
        let bin = try XCTUnwrap(CLIRunner.binary)
        // Kill at several moments (including while a state file is being written), resume each time.
        for delay in [0.15, 0.3, 0.45] {
            let state = dir.appendingPathComponent("state-\(delay).pth").path
            let out = dir.appendingPathComponent("part/out.pth").path
            let p = Process()
            p.executableURL = bin
            p.arguments = resumeRun(dir) + ["--out", out, "--state", state, "--save-every", "1"]
            let pipe = Pipe()
            p.standardOutput = pipe
            p.standardError = FileHandle.nullDevice
            try p.run()
            Thread.sleep(forTimeInterval: delay)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let before = Self.withoutTimes(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
            var args = resumeRun(dir) + ["--out", out, "--state", state]
            if FileManager.default.fileExists(atPath: state) { args += ["--resume", state] }
            let rest = try CLIRunner.run(args)
            XCTAssertEqual(rest.status, 0, rest.stderr)
            let after = Self.withoutTimes(rest.stdout)
            // Steps logged before the kill may be repeated after it (a step done but not yet saved); the union
            // in step order is the uninterrupted log.
            let resumedFrom = after.first.flatMap { l in expected.firstIndex(of: l) } ?? expected.count
            XCTAssertEqual(Array(before.prefix(resumedFrom)) + after, expected, "killed after \(delay)s")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), try Data(contentsOf: dir.appendingPathComponent("full/out.pth")))
        }
    }
}
