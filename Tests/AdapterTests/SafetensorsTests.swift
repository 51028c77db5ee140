import LlamaAdapter
import Foundation
import XCTest

/// Fixtures come from tools/reference/make_gguf_fixtures.py (written by hand with struct + json).
final class SafetensorsTests: XCTestCase {
    static let fixtures = Fixtures.root.appendingPathComponent("safetensors")

    static func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name).path }

    struct ExpectedTensor: Decodable {
        let name: String
        let type: String
        let shape: [Int]
        let values: [Double]
    }

    struct Unsupported: Decodable {
        let name: String
        let dtype: String
        let shape: [Int]
    }

    struct Single: Decodable {
        let metadata: [String: String]
        let tensors: [ExpectedTensor]
        let unsupported: [Unsupported]
    }

    struct Sharded: Decodable {
        let tensors: [ExpectedTensor]
        let total_size: Int
    }

    struct Expected: Decodable {
        let single: Single
        let sharded: Sharded
    }

    static let expected: Expected = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("expected.json"))
        return try! JSONDecoder().decode(Expected.self, from: data)
    }()


    func assertMatches(_ source: TensorSource, _ expected: [ExpectedTensor], file: StaticString = #filePath, line: UInt = #line) throws {
        for e in expected {
            let info = try XCTUnwrap(source.info(e.name), e.name, file: file, line: line)
            XCTAssertEqual(info.dtype.rawValue, e.type, e.name, file: file, line: line)
            XCTAssertEqual(info.shape, e.shape, e.name, file: file, line: line)
            let t = try source.tensor(e.name)
            XCTAssertEqual(t.shape, e.shape, e.name, file: file, line: line)
            XCTAssertEqual(t.toFloatArray(), e.values.map { Float($0) }, e.name, file: file, line: line)
        }
    }

    /// A safetensors file from a header text and a data buffer.
    func makeFile(header: String, data: [UInt8] = [], in dir: URL, name: String = "t.safetensors") throws -> String {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes += $0 }
        bytes += Array(header.utf8) + data
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url.path
    }

    // MARK: - Good files

    func testSingleFile() throws {
        let path = Self.fixture("single.safetensors")
        let f = try SafetensorsFile(path: path)
        let e = Self.expected.single
        XCTAssertEqual(f.tensorNames, (e.tensors.map(\.name) + e.unsupported.map(\.name)).sorted())
        try assertMatches(f, e.tensors)
        XCTAssertEqual(f.metadata, e.metadata.mapValues { .string($0) })
        XCTAssertEqual(try f.tensor("scalar").shape, [])
        XCTAssertEqual(try f.tensor("empty").count, 0)
        // Zero-copy: one borrowed storage spanning the file, tensors at their offsets.
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        let a = try f.tensor("model.a"), b = try f.tensor("model.b")
        XCTAssertTrue(a.storage === b.storage)
        XCTAssertEqual(a.storage.byteCount, size)
        XCTAssertEqual(a.byteOffset, f.dataOffset)
        XCTAssertEqual(f.dataOffset % 8, 0, "the fixture pads its header to 8 bytes")
        // Other dtypes are listed but not loadable.
        for u in e.unsupported {
            XCTAssertNil(f.info(u.name))
            let entry = try XCTUnwrap(f.entry(u.name))
            XCTAssertEqual(entry.dtypeName, u.dtype)
            XCTAssertEqual(entry.shape, u.shape)
            XCTAssertNil(entry.dtype)
            assertThrows(try f.tensor(u.name), contains: [path, u.name, u.dtype, "not supported"])
        }
        assertThrows(try f.tensor("nope"), contains: [path, "nope"])
    }

    func testShardedFolder() throws {
        let path = Self.fixture("sharded")
        let folder = try SafetensorsFolder(path: path)
        XCTAssertEqual(folder.shards.count, 2)
        XCTAssertEqual(folder.tensorNames, Self.expected.sharded.tensors.map(\.name).sorted())
        try assertMatches(folder, Self.expected.sharded.tensors)
        XCTAssertEqual(folder.metadata["total_size"], .int(Self.expected.sharded.total_size))
        XCTAssertEqual(folder.metadata["format"], .string("pt"))
        XCTAssertTrue(folder.shard(of: "lm_head.weight")?.path.hasSuffix("model-00002-of-00002.safetensors") ?? false)
        // Opening the index file directly is the same.
        let viaIndex = try SafetensorsFolder(path: path + "/model.safetensors.index.json")
        XCTAssertEqual(viaIndex.tensorNames, folder.tensorNames)
        assertThrows(try folder.tensor("missing"), contains: [path, "missing"])
    }

    func testSingleFileFolderAndLooseFiles() throws {
        let dir = try makeTemporaryDirectory()
        let single = Self.fixture("single.safetensors")
        try FileManager.default.copyItem(atPath: single, toPath: dir.appendingPathComponent("model.safetensors").path)
        let folder = try SafetensorsFolder(path: dir.path)
        XCTAssertEqual(folder.shards.count, 1)
        try assertMatches(folder, Self.expected.single.tensors)
        XCTAssertEqual(folder.metadata["note"], .string("fixture ✓"))
        let file = try SafetensorsFolder(path: single)
        XCTAssertEqual(file.tensorNames, folder.tensorNames)

        // Without model.safetensors or an index, loose files are merged; a name in two files is an error.
        let loose = try makeTemporaryDirectory()
        for shard in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
            try FileManager.default.copyItem(atPath: Self.fixture("sharded/\(shard)"), toPath: loose.appendingPathComponent(shard).path)
        }
        try assertMatches(try SafetensorsFolder(path: loose.path), Self.expected.sharded.tensors)
        try FileManager.default.copyItem(atPath: Self.fixture("sharded/model-00002-of-00002.safetensors"),
                                         toPath: loose.appendingPathComponent("copy.safetensors").path)
        assertThrows(try SafetensorsFolder(path: loose.path), contains: ["lm_head.weight", "both"])

        let empty = try makeTemporaryDirectory()
        assertThrows(try SafetensorsFolder(path: empty.path), contains: [empty.path, "model.safetensors"])
        assertThrows(try SafetensorsFolder(path: empty.path + "/nothing"), contains: ["nothing"])
    }

    func testBadIndexes() throws {
        let dir = try makeTemporaryDirectory()
        let shard = "model-00001-of-00002.safetensors"
        try FileManager.default.copyItem(atPath: Self.fixture("sharded/\(shard)"), toPath: dir.appendingPathComponent(shard).path)
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        func write(_ text: String) throws { try Data(text.utf8).write(to: index) }

        try write(#"{"weight_map": {"layers.0.weight": "model-00002-of-00002.safetensors"}}"#)
        assertThrows(try SafetensorsFolder(path: dir.path), contains: ["model-00002-of-00002.safetensors", "missing"])
        try write(#"{"weight_map": {"lm_head.weight": "\#(shard)"}}"#)
        assertThrows(try SafetensorsFolder(path: dir.path), contains: ["lm_head.weight", "no such tensor"])
        try write(#"{"weight_map": {"layers.0.weight": "../\#(shard)"}}"#)
        assertThrows(try SafetensorsFolder(path: dir.path), contains: ["outside the folder"])
        try write(#"{"metadata": {}}"#)
        assertThrows(try SafetensorsFolder(path: dir.path), contains: ["weight_map"])
        try write(#"{"weight_map": {"a": "x", "a": "y"}}"#)
        assertThrows(try SafetensorsFolder(path: dir.path), contains: ["duplicate key"])
        try write(#"{"weight_map": "#)
        assertThrows(try SafetensorsFolder(path: dir.path), contains: [index.path, "corrupt JSON"])
        try write(#"{"weight_map": {"layers.0.weight": "\#(shard)"}, "metadata": {"total_size": 48}}"#)
        let ok = try SafetensorsFolder(path: dir.path)
        XCTAssertEqual(ok.tensorNames, ["layers.0.weight"])
        XCTAssertEqual(ok.metadata["total_size"], .int(48))
    }

    // MARK: - Bad files

    func testHeaderValidation() throws {
        let dir = try makeTemporaryDirectory()
        let eight = [UInt8](repeating: 0, count: 8)
        func check(_ header: String, _ data: [UInt8], _ needles: [String], line: UInt = #line) throws {
            let path = try makeFile(header: header, data: data, in: dir)
            assertThrows(try SafetensorsFile(path: path), contains: [path] + needles, line: line)
        }
        try check(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                  eight, ["overlap", "'a'", "'b'"])
        try check(#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, eight, ["truncated", "'a'"])
        try check(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, eight, ["'a'", "12 bytes"])
        try check(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, eight, ["begin after end"])
        try check(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#, eight, ["shape"])
        try check(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#, eight, ["data_offsets"])
        try check(#"{"a":{"shape":[2],"data_offsets":[0,8]}}"#, eight, ["dtype"])
        try check(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                  eight, ["duplicate key 'a'"])
        try check(#"{"__metadata__":{"x":1}}"#, [], ["__metadata__"])
        try check(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, eight, ["corrupt"])
        try check(#"[1]"#, [], ["does not start with '{'"])
        try check("{" + String(repeating: #""a":["#, count: 1) + String(repeating: "[", count: 100_000), [], ["nesting too deep"])
        // Header length larger than the file.
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { bytes += $0 }
        let long = dir.appendingPathComponent("long.safetensors")
        try Data(bytes + Array("{}".utf8)).write(to: long)
        assertThrows(try SafetensorsFile(path: long.path), contains: [long.path, "header length"])
        // Valid corner cases: empty header, 0-d and empty tensors, F8 and other dtypes, padding with spaces.
        let fine = try makeFile(header: #"{"s":{"dtype":"F16","shape":[],"data_offsets":[0,2]},"e":{"dtype":"BF16","shape":[0],"data_offsets":[2,2]},"f8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[2,4]},"u":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}    "#,
                                data: [0x00, 0x3C, 1, 2, 3, 4, 5, 6], in: dir)
        let f = try SafetensorsFile(path: fine)
        XCTAssertEqual(try f.tensor("s").toFloatArray(), [1])
        XCTAssertEqual(try f.tensor("e").count, 0)
        XCTAssertEqual(f.entry("f8")?.dtypeName, "F8_E4M3")
        XCTAssertEqual(f.metadata, [:])
        let unicode = try makeFile(header: #"{"w\u00e9\ud83d\ude00\n":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#,
                                   data: [0, 0, 0x80, 0x3F], in: dir)
        XCTAssertEqual(try SafetensorsFile(path: unicode).tensor("wé😀\n").toFloatArray(), [1])
        XCTAssertEqual(try SafetensorsFile(path: makeFile(header: "{}", in: dir)).tensorNames, [])
    }

    func testEveryTruncationThrows() throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.fixture("single.safetensors"))))
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("cut.safetensors").path
        for n in 0..<original.count {
            try Data(original[0..<n]).write(to: URL(fileURLWithPath: path))
            assertThrows(try SafetensorsFile(path: path), contains: [path])
        }
    }

    /// 300 random mutations: each opens or throws an AdapterError naming the file, never traps.
    func testFuzzedFilesNeverTrap() throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.fixture("single.safetensors"))))
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("fuzz.safetensors").path
        var rng = FuzzRNG(state: 0x5AFE)
        var opened = 0
        for _ in 0..<300 {
            var bytes = original
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let at = Int(rng.next() % UInt64(bytes.count))
                switch rng.next() % 4 {
                case 0: bytes[at] ^= UInt8(1 << (rng.next() % 8))
                case 1: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                case 2: bytes[at] = Array("{}[],:\"0123456789-eE. ".utf8)[Int(rng.next() % 22)]
                default: bytes.removeSubrange(at..<min(bytes.count, at + 1 + Int(rng.next() % 16)))
                }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let f = try SafetensorsFile(path: path)
                opened += 1
                for name in f.tensorNames {
                    if let t = try? f.tensor(name) { _ = t.toFloatArray() }
                }
            } catch let error as AdapterError {
                XCTAssertTrue(error.description.contains(path), "error lacks the path: \(error)")
            }
        }
        XCTAssertLessThan(opened, 300)
    }
}

/// SplitMix64, so fuzz inputs are the same on every run.
fileprivate struct FuzzRNG {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
