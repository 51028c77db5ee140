import LlamaAdapter
import XCTest

/// TorchScript archives read as state dicts (the OpenAI CLIP `.pt` path).
final class TorchScriptTests: XCTestCase {
    func testModuleTreeFlattensToStateDictNames() throws {
        struct E: Decodable { struct T: Decodable { let name: String; let shape: [Int]; let values: [Double] }; struct F: Decodable { let tensors: [T] }; let torchscript: F }
        let expected = try JSONDecoder().decode(E.self, from: Data(contentsOf: Fixtures.root.appendingPathComponent("formats/expected.json")))
        let archive = try TorchScriptArchive.open(path: Fixtures.path("formats/torchscript.pt"))
        for t in expected.torchscript.tensors {
            let name = t.name.hasPrefix("module.") ? String(t.name.dropFirst(7)) : t.name
            let tensor = try archive.tensor(archive.tensorNames.contains(name) ? name : t.name)
            XCTAssertEqual(tensor.shape, t.shape, t.name)
            XCTAssertEqual(tensor.toFloatArray().map(Double.init), t.values.map { Double(Float($0)) }, t.name)
        }
    }

    func testPlainCheckpointIsNotATorchScriptArchive() {
        XCTAssertThrowsError(try TorchScriptArchive.open(path: Fixtures.path("formats/mixed.pth")))
    }
}
