import Foundation

/// Paths of committed golden fixtures (Tests/Fixtures), made by the scripts in tools/reference.
enum Fixtures {
    /// Tests/Fixtures.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

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
