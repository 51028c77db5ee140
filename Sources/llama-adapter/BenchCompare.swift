import Foundation
import LlamaAdapter

/// `bench --compare-llamacpp PATH`: llama.cpp's `llama-bench` on the same file with the same threads, its runs
/// alternated with ours so that a drift of the shared machine touches both alike.
struct LlamaCppComparison: Encodable {
    /// The `llama-bench` binary that ran.
    var binary: String
    /// llama.cpp's own build commit and number, as llama-bench reports them.
    var build_commit: String?
    var build_number: Int?
    /// Rounds alternated (ours, then llama.cpp's, each round).
    var rounds: Int
    /// One entry per measurement: prefill of N tokens ("pp512") and decode ("tg64").
    var tests: [Test]

    /// One measurement in both programs.
    struct Test: Encodable {
        var test: String
        var ours_tokens_per_s: [Double]
        var llamacpp_tokens_per_s: [Double]
        var ours_median: Double
        var llamacpp_median: Double
        /// ours_median / llamacpp_median.
        var ratio: Double
        /// Median of the rounds' own ratios (each round runs both programs back to back, so this pairing cancels
        /// the machine's drift between rounds, e.g. its memory bandwidth switching between ~36 and ~60 GB/s).
        var ratio_median: Double
        /// Smallest and largest ratio of one round's two runs.
        var ratio_min: Double
        var ratio_max: Double
    }
}

/// Finds `llama-bench` from a build folder, its `bin` folder or the binary itself.
func locateLlamaBench(_ path: String) throws -> String {
    let fm = FileManager.default
    let candidates = [path, path + "/llama-bench", path + "/bin/llama-bench", path + "/build/bin/llama-bench"]
    for c in candidates {
        var dir: ObjCBool = false
        if fm.fileExists(atPath: c, isDirectory: &dir), !dir.boolValue, fm.isExecutableFile(atPath: c) { return c }
    }
    throw AdapterError.invalidArgument("--compare-llamacpp: no executable llama-bench at \(path) (nor in its bin/ or build/bin/)")
}

/// One llama-bench run (`-r 1`, its JSON output): tokens/s per test name ("pp64", "tg32"), and its build.
func runLlamaBench(binary: String, model: String, threads: Int, prompts: [Int], decode: Int) throws
    -> (rates: [String: Double], commit: String?, number: Int?) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = ["-m", model, "-t", String(threads), "-p", prompts.map(String.init).joined(separator: ","),
                   "-n", String(decode), "-r", "1", "-o", "json"]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw AdapterError.invalidArgument("--compare-llamacpp: llama-bench exited with status \(p.terminationStatus) on \(model)")
    }
    guard let rows = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]], !rows.isEmpty else {
        throw AdapterError.invalidArgument("--compare-llamacpp: llama-bench printed no JSON results (is it llama.cpp's llama-bench?)")
    }
    var rates: [String: Double] = [:]
    var commit: String?, number: Int?
    for row in rows {
        let np = (row["n_prompt"] as? NSNumber)?.intValue ?? 0, ng = (row["n_gen"] as? NSNumber)?.intValue ?? 0
        guard let ts = (row["avg_ts"] as? NSNumber)?.doubleValue else { continue }
        rates[ng > 0 ? "tg\(ng)" : "pp\(np)"] = ts
        commit = row["build_commit"] as? String
        number = (row["build_number"] as? NSNumber)?.intValue
    }
    return (rates, commit, number)
}

/// Median of a non-empty list.
func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Builds the comparison from each round's figures (same test names in both).
func makeComparison(binary: String, commit: String?, number: Int?, ours: [[String: Double]], theirs: [[String: Double]],
                    order: [String]) -> LlamaCppComparison {
    var tests: [LlamaCppComparison.Test] = []
    for name in order {
        let a = ours.compactMap { $0[name] }, b = theirs.compactMap { $0[name] }
        guard !a.isEmpty, a.count == b.count else { continue }
        let ratios = zip(a, b).map { $0 / $1 }
        tests.append(.init(test: name, ours_tokens_per_s: a, llamacpp_tokens_per_s: b, ours_median: median(a), llamacpp_median: median(b),
                           ratio: median(a) / median(b), ratio_median: median(ratios), ratio_min: ratios.min()!, ratio_max: ratios.max()!))
    }
    return LlamaCppComparison(binary: binary, build_commit: commit, build_number: number, rounds: ours.count, tests: tests)
}
