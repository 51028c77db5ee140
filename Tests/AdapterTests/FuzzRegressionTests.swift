import AdapterFuzz
import Foundation
import XCTest

/// Replays the fuzzing seeds and every input fuzzing ever crashed on (Tests/Fixtures/fuzz/TARGET/, committed
/// as found by scripts/fuzz.sh) through the same harnesses, in a child process so that a regression shows as
/// a failed test with the input's name rather than a crashed test run.
final class FuzzRegressionTests: XCTestCase {
    static let replayer: URL? = CLIRunner.binary.map { $0.deletingLastPathComponent().appendingPathComponent("llama-adapter-fuzz") }

    func files(_ folder: String) -> [String] {
        let root = Fixtures.root.appendingPathComponent(folder)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root.path) else { return [] }
        return names.sorted().map { root.appendingPathComponent($0).path }.filter {
            var d: ObjCBool = false
            return FileManager.default.fileExists(atPath: $0, isDirectory: &d) && !d.boolValue
        }
    }

    func testCrashInputsAndSeedsRunCleanlyThroughEveryHarness() throws {
        let bin = try XCTUnwrap(Self.replayer.flatMap { FileManager.default.isExecutableFile(atPath: $0.path) ? $0 : nil }, "llama-adapter-fuzz not built")
        var total = 0
        for target in FuzzTarget.allCases {
            let inputs = files("fuzz/\(target.rawValue)") + files("fuzz-seeds/\(target.rawValue)") + (target == .pth ? files("hostile/pth") : [])
            guard !inputs.isEmpty else { continue }
            total += inputs.count
            let p = Process()
            p.executableURL = bin
            p.arguments = [target.rawValue] + inputs
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            let o = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            let done = o.split(separator: "\n").count
            XCTAssertEqual(p.terminationStatus, 0, "\(target.rawValue): crashed on \(done < inputs.count ? inputs[done] : "?"): \(e.prefix(400))")
            XCTAssertEqual(done, inputs.count, target.rawValue)
        }
        XCTAssertGreaterThan(total, 100)
    }
}
