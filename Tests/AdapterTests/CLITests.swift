import Foundation
import XCTest

/// The command-line contract (DESIGN.md section 3): JSON shapes, and one `error:` line with exit 1 on bad input.
final class CLITests: XCTestCase {
    func run(_ args: [String], stdin: String? = nil) throws -> CLIRunner.Run {
        try CLIRunner.run(args, stdin: stdin)
    }

    func assertOneLineError(_ r: CLIRunner.Run, mentioning needle: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 1, "exit status", file: file, line: line)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        XCTAssertEqual(lines.count, 1, "stderr: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.hasPrefix("error: "), r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(needle), "expected '\(needle)' in: \(r.stderr)", file: file, line: line)
    }

    /// LLAMA_ADAPTER_SIMD caps the kernels' path (bench reports it), never raises it, and rejects what is not a
    /// level of this architecture with one error line.
    func testSIMDCapIsReportedByBenchAndUnknownLevelsAreRefused() throws {
        func simd(_ level: String?) throws -> String? {
            let r = try CLIRunner.run(["bench", "--prompt-tokens", "4", "--decode-tokens", "2", "--rounds", "1"],
                                      environment: level.map { ["LLAMA_ADAPTER_SIMD": $0] } ?? [:])
            XCTAssertEqual(r.status, 0, r.stderr)
            let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            return obj?["simd"] as? String
        }
        XCTAssertEqual(try simd("generic"), "generic")
        #if arch(x86_64)
        let order = ["generic", "avx2", "avx512", "vnni"]
        let native = try XCTUnwrap(try simd(nil))
        let top = try XCTUnwrap(order.firstIndex(of: native), native)
        for (i, level) in order.enumerated() {
            XCTAssertEqual(try simd(level), order[min(i, top)], "cap \(level) on a \(native) CPU")
        }
        assertOneLineError(try CLIRunner.run(["bench"], environment: ["LLAMA_ADAPTER_SIMD": "neon"]), mentioning: "LLAMA_ADAPTER_SIMD=neon")
        #endif
        assertOneLineError(try CLIRunner.run(["bench"], environment: ["LLAMA_ADAPTER_SIMD": "sse9"]), mentioning: "LLAMA_ADAPTER_SIMD=sse9")
    }

    func testGenerateJSONGivesReferenceGreedyTokens() throws {
        let c = Fixtures.tinyLlama.cases[1]
        let r = try run(["generate", "--model", Fixtures.path("tiny_llama/model"), "--prompt", c.prompt,
                         "--temperature", "0", "--max-new-tokens", "\(c.greedy_tokens.count)", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["tokens"] as? [Int], c.greedy_tokens)
        XCTAssertEqual(obj["text"] as? String, c.greedy_text)
    }

    func testAlpacaTemplateMatchesOfficialFormatPrompt() throws {
        let c = Fixtures.tinyLlama.cases[2]
        let r = try run(["generate", "--model", Fixtures.path("tiny_llama/model"), "--prompt", "Tell me about alpacas.",
                         "--template", "alpaca", "--temperature", "0", "--max-new-tokens", "\(c.greedy_tokens.count)", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["prompt_tokens"] as? Int, c.tokens.count)
        XCTAssertEqual(obj["tokens"] as? [Int], c.greedy_tokens)
    }

    func testTokenizeJSON() throws {
        let c = Fixtures.tinyLlama.cases[0]
        let r = try run(["tokenize", "--tokenizer", Fixtures.path("tiny_llama/tokenizer.model"), "--text", c.prompt, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ids = c.tokens.dropFirst().map(String.init).joined(separator: ",")
        XCTAssertEqual(r.stdout, "{\"tokens\":[" + ids + "]}\n")
    }

    func testScoreIsSumOfReferenceLogProbabilities() throws {
        // The official code's log-probability of the continuation (tools/reference/make_tiny_adapter.py),
        // BIAS adapter, text-only sample (blank image), prompt already in the Alpaca format.
        let golden = (AdapterModelTests.golden["adapters"] as! [String: Any])["bias"] as! [String: Any]
        let c = (golden["cases"] as! [[String: Any]]).first { ($0["name"] as! String) == "text_only" }!
        let score = c["score"] as! [String: Any]
        let r = try run(["score", "--model", Fixtures.path("tiny_llama/model"), "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
                         "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth"), "--template", "raw",
                         "--prompt", c["prompt"] as! String, "--continuation", score["continuation"] as! String, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["tokens"] as? Int, score["count"] as? Int)
        XCTAssertEqual(try XCTUnwrap(obj["logprob"] as? Double), score["logprob"] as! Double, accuracy: 2e-3)
    }

    func testVisualAdapterWithoutClipIsRefused() throws {
        let r = try run(["generate", "--model", Fixtures.path("tiny_llama/model"), "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
                         "--prompt", "Hi", "--max-new-tokens", "2"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.hasPrefix("error: ") && r.stderr.contains("--clip"), r.stderr)
    }

    func testInspectListsOfficialTensorNames() throws {
        let r = try run(["inspect", Fixtures.path("tiny_llama/model"), "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let names = (obj["tensors"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
        XCTAssertTrue(names.contains("layers.1.feed_forward.w2.weight"))
        XCTAssertTrue(names.contains("rope.freqs"))
    }

    func testMissingModelIsOneErrorLine() throws {
        assertOneLineError(try run(["generate", "--model", "/nonexistent/model", "--prompt", "x"]), mentioning: "does not exist")
    }

    func testTruncatedCheckpointIsOneErrorLine() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = Fixtures.path("tiny_llama/model")
        try FileManager.default.copyItem(atPath: src + "/params.json", toPath: dir.appendingPathComponent("params.json").path)
        let data = try Data(contentsOf: URL(fileURLWithPath: src + "/consolidated.00.pth"))
        try data.prefix(data.count / 2).write(to: dir.appendingPathComponent("consolidated.00.pth"))
        let r = try run(["generate", "--model", dir.path, "--tokenizer", Fixtures.path("tiny_llama/tokenizer.model"), "--prompt", "x"])
        assertOneLineError(r, mentioning: "consolidated.00.pth")
    }

    func testForbiddenGlobalIsOneErrorLine() throws {
        assertOneLineError(try run(["inspect", Fixtures.path("formats/forbidden_global.pth")]), mentioning: "forbidden global")
    }

    func testShapeMismatchWithParamsIsOneErrorLine() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = Fixtures.path("tiny_llama/model")
        try FileManager.default.copyItem(atPath: src + "/consolidated.00.pth", toPath: dir.appendingPathComponent("consolidated.00.pth").path)
        try #"{"dim": 64, "multiple_of": 256, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-06, "vocab_size": -1}"#
            .write(to: dir.appendingPathComponent("params.json"), atomically: true, encoding: .utf8)
        let r = try run(["generate", "--model", dir.path, "--tokenizer", Fixtures.path("tiny_llama/tokenizer.model"), "--prompt", "x"])
        assertOneLineError(r, mentioning: "feed-forward width")
    }

    func testBaseCheckpointPassedAsAdapterIsOneErrorLine() throws {
        let r = try run(["generate", "--model", Fixtures.path("tiny_llama/model"), "--prompt", "x",
                         "--adapter", Fixtures.path("tiny_llama/model/consolidated.00.pth")])
        assertOneLineError(r, mentioning: "not a LLaMA-Adapter checkpoint")
    }

    func testImageWithoutClipIsOneErrorLine() throws {
        let r = try run(["generate", "--model", Fixtures.path("tiny_llama/model"), "--prompt", "x",
                         "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"), "--image", Fixtures.path("tiny_adapter/image.png")])
        assertOneLineError(r, mentioning: "--clip")
    }

    func testUnreadableImageIsOneErrorLine() throws {
        let r = try run(["preprocess", "--image", Fixtures.path("tiny_llama/model/params.json"), "--out", "/tmp/never.npy"])
        assertOneLineError(r, mentioning: "not a JPEG or PNG")
    }

    func testUnknownFlagIsOneErrorLine() throws {
        let r = try run(["generate", "--model", Fixtures.path("tiny_llama/model"), "--prompt", "x", "--bogus"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.hasPrefix("error: "), r.stderr)
    }

    func testBenchPrintsJSON() throws {
        let r = try run(["bench", "--preset", "tiny", "--decode-tokens", "4", "--prompt-tokens", "8"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertGreaterThan(obj["decode_tokens_per_s"] as? Double ?? 0, 0)
        XCTAssertGreaterThan(obj["read_bandwidth_gb_s"] as? Double ?? 0, 0)
    }

    /// With several rounds, the read test runs after each round's decode (Linux) and each round's decode is set
    /// against its own test: one entry per round, and each fraction is that round's decode over its own bound.
    func testBenchMeasuresTheBoundOncePerRound() throws {
        let r = try run(["bench", "--preset", "tiny", "--decode-tokens", "4", "--prompt-tokens", "8", "--rounds", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let bw = try XCTUnwrap(obj["read_bandwidth_gb_s_runs"] as? [Double])
        let fr = try XCTUnwrap(obj["decode_fraction_of_bound_runs"] as? [Double])
        let dec = try XCTUnwrap(obj["decode_tokens_per_s_runs"] as? [Double])
        let bytes = try XCTUnwrap((obj["weight_bytes"] as? NSNumber)?.doubleValue)
        #if os(Linux)
        XCTAssertEqual(bw.count, 3)
        #endif
        XCTAssertEqual(fr.count, bw.count == 3 ? 3 : 1)
        if bw.count == 3 {
            for i in 0..<3 { XCTAssertEqual(fr[i], dec[i] / (bw[i] * 1e9 / bytes), accuracy: 1e-9 * fr[i]) }
        }
        XCTAssertEqual(obj["decode_fraction_of_bound"] as? Double ?? -1, fr.sorted()[fr.count / 2], accuracy: 1e-12)
    }

    /// `--repeats` on a prefill/decode run is refused in one line that names `--rounds` (it used to be ignored, so
    /// one cold round was reported where several were asked for).
    func testBenchRepeatsOnPrefillAndDecodeIsOneErrorLineNamingRounds() throws {
        let r = try run(["bench", "--preset", "tiny", "--repeats", "3"])
        XCTAssertEqual(r.status, 1, r.stdout)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("--rounds"), r.stderr)
    }
}

/// `bench --compare-llamacpp`: the rounds alternate with llama-bench, whose JSON output (the format of llama.cpp's
/// llama-bench `-o json`, here from a stand-in script that records its arguments) is read per test name, and
/// ratios are taken of the medians and per round.
final class BenchCompareTests: XCTestCase {
    func testCompareRunsLlamaBenchEachRoundWithOurShapesAndReportsRatios() throws {
        let dir = try makeTemporaryDirectory()
        let model = dir.appendingPathComponent("tiny.gguf").path
        try FileManager.default.copyItem(atPath: Fixtures.path("tiny_llama/tiny_llama.f16.gguf.bin"), toPath: model)
        let log = dir.appendingPathComponent("calls.txt").path
        let fake = dir.appendingPathComponent("llama-bench").path
        // Prefill 100 tok/s and decode 50 tok/s, whatever it is asked; one line of arguments per call.
        let script = """
        #!/bin/sh
        echo "$@" >> \(log)
        cat <<'JSON'
        [
          {"build_commit": "abc1234", "build_number": 4748, "n_prompt": 8, "n_gen": 0, "avg_ts": 100.0, "samples_ts": [100.0]},
          {"build_commit": "abc1234", "build_number": 4748, "n_prompt": 0, "n_gen": 4, "avg_ts": 50.0, "samples_ts": [50.0]}
        ]
        JSON
        """
        try script.write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        let r = try CLIRunner.run(["bench", "--model", model, "--prompt-tokens", "8", "--decode-tokens", "4", "--threads", "1",
                                   "--rounds", "3", "--compare-llamacpp", dir.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let calls = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(calls.count, 3, "one llama-bench run per round")
        XCTAssertEqual(String(calls[0]), "-m \(model) -t 1 -p 8 -n 4 -r 1 -o json")
        let cmp = try XCTUnwrap(obj["llamacpp"] as? [String: Any])
        XCTAssertEqual(cmp["build_commit"] as? String, "abc1234")
        XCTAssertEqual(cmp["rounds"] as? Int, 3)
        let tests = try XCTUnwrap(cmp["tests"] as? [[String: Any]])
        XCTAssertEqual(tests.map { $0["test"] as? String }, ["pp8", "tg4"])
        let prefill = try XCTUnwrap(obj["prefill"] as? [[String: Any]])
        let ours = try XCTUnwrap(tests[0]["ours_tokens_per_s"] as? [Double])
        XCTAssertEqual(ours.count, 3)
        XCTAssertEqual(tests[0]["llamacpp_tokens_per_s"] as? [Double], [100, 100, 100])
        let median = ours.sorted()[1]
        XCTAssertEqual(try XCTUnwrap(prefill[0]["tokens_per_s"] as? Double), median, accuracy: 1e-9 * median)
        XCTAssertEqual(try XCTUnwrap(tests[0]["ratio"] as? Double), median / 100, accuracy: 1e-9 * median)
        // The rounds' own ratios: here llama-bench's figure is the same each round, so their median is median / 100.
        XCTAssertEqual(try XCTUnwrap(tests[0]["ratio_median"] as? Double), median / 100, accuracy: 1e-9 * median)
        XCTAssertEqual(try XCTUnwrap(tests[1]["ratio"] as? Double), try XCTUnwrap(obj["decode_tokens_per_s"] as? Double) / 50, accuracy: 1e-6)
    }

    func testCompareWithoutLlamaBenchOrWithoutGGUFIsOneErrorLine() throws {
        let dir = try makeTemporaryDirectory()
        for args in [["--model", Fixtures.path("tiny_llama/tiny_llama.f16.gguf.bin"), "--compare-llamacpp", dir.path],
                     ["--preset", "tiny", "--compare-llamacpp", dir.path]] {
            let r = try CLIRunner.run(["bench"] + args)
            XCTAssertEqual(r.status, 1, r.stdout)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertTrue(r.stderr.hasPrefix("error: --compare-llamacpp"), r.stderr)
        }
    }
}
