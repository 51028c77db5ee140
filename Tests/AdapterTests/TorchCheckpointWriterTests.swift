import LlamaAdapter
@testable import AdapterFormats
import Foundation
import XCTest

/// The writer is checked against the colleague's reader (`TorchCheckpoint`, `ZipArchive`); the same files were
/// loaded with torch 1.13 via tools/reference/check_written_checkpoint.py (see testExportForTorchCheck).
final class TorchCheckpointWriterTests: XCTestCase {

    // MARK: - Fixtures

    static func f16Tensor(_ values: [Float], shape: [Int]) -> Tensor {
        let t = Tensor(uninitialized: shape, dtype: .f16)
        let p = t.mutableData.assumingMemoryBound(to: Float16.self)
        for (i, v) in values.enumerated() { p[i] = Float16(v) }
        return t
    }

    static func bf16Tensor(_ values: [Float], shape: [Int]) -> Tensor {
        let t = Tensor(uninitialized: shape, dtype: .bf16)
        let p = t.mutableData.assumingMemoryBound(to: UInt16.self)
        // Values used here are exact in bf16, so truncating the f32 bits is exact too.
        for (i, v) in values.enumerated() { p[i] = UInt16(v.bitPattern >> 16) }
        return t
    }

    /// Model keys deliberately unsorted, so order preservation is observable.
    static func sampleModel() -> [(String, PickleWriteValue)] {
        [
            ("layers.1.attention.gate", .tensor(Tensor([0.5, -1.25, 3, 4, 5, 6], shape: [2, 3]))),
            ("adapter_query.weight", .tensor(f16Tensor([1, 2.5, -0.125, 65504], shape: [4]))),
            ("layers.0.lora_a", .tensor(bf16Tensor([1, -2, 0.5, 1024], shape: [2, 2]))),
            ("scalar", .tensor(Tensor([7], shape: []))),
            ("four_d", .tensor(Tensor((0..<24).map(Float.init), shape: [2, 1, 3, 4]))),
        ]
    }

    static func sampleConfig() -> [(String, PickleWriteValue)] {
        [
            ("w_bias", .bool(true)),
            ("w_lora", .bool(false)),
            ("lora_rank", .int(8)),
            ("max_seq_len", .int(512)),
            ("big", .int(1 << 40)),
            ("neg", .int(-3)),
            ("neg_big", .int(-(1 << 40))),
            ("min", .int(Int.min)),
            ("mid", .int(70_000)),
            ("norm_eps", .double(1e-5)),
            ("name", .string("llama-adapter ✓")),
            ("nothing", .none),
            ("sizes", .list([.int(1), .int(2), .int(300)])),
            ("nested", .dict([("a", .int(1)), ("b", .list([.string("x"), .double(-0.5)]))])),
            ("empty_list", .list([])),
            ("empty_dict", .dict([])),
        ]
    }

    static func sampleRoot() -> [(String, PickleWriteValue)] {
        [("model", .dict(sampleModel())), ("config", .dict(sampleConfig()))]
    }

    static let expectedConfig: MetadataValue = .dict([
        "w_bias": .bool(true), "w_lora": .bool(false), "lora_rank": .int(8), "max_seq_len": .int(512),
        "big": .int(1 << 40), "neg": .int(-3), "neg_big": .int(-(1 << 40)), "min": .int(Int.min), "mid": .int(70_000),
        "norm_eps": .double(1e-5), "name": .string("llama-adapter ✓"), "nothing": .none,
        "sizes": .array([.int(1), .int(2), .int(300)]),
        "nested": .dict(["a": .int(1), "b": .array([.string("x"), .double(-0.5)])]),
        "empty_list": .array([]), "empty_dict": .dict([:]),
    ])

    func assertRoundTrip(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let ckpt = try TorchCheckpoint(path: path)
        XCTAssertEqual(ckpt.keyPath, ["model"], file: file, line: line)
        let model = Self.sampleModel()
        XCTAssertEqual(ckpt.tensorNames, model.map(\.0).sorted(), file: file, line: line)
        for (name, value) in model {
            guard case .tensor(let want) = value else { continue }
            let got = try ckpt.tensor(name)
            XCTAssertEqual(got.dtype, want.dtype, name, file: file, line: line)
            XCTAssertEqual(got.shape, want.shape, name, file: file, line: line)
            XCTAssertEqual(got.toFloatArray(), want.toFloatArray(), name, file: file, line: line)
            XCTAssertEqual(ckpt.torchTensor(name)?.isContiguous, true, name, file: file, line: line)
            XCTAssertEqual(ckpt.torchTensor(name)?.requiresGrad, false, name, file: file, line: line)
        }
        XCTAssertEqual(ckpt.metadata["config"], Self.expectedConfig, file: file, line: line)
        // Order: the reader's root keeps pickle order for the top level, the model and the config.
        XCTAssertEqual(ckpt.root.dictEntries?.map(\.key.keyString), ["model", "config"], file: file, line: line)
        XCTAssertEqual(ckpt.root["model"]?.dictEntries?.map(\.key.keyString), model.map(\.0), file: file, line: line)
        XCTAssertEqual(ckpt.root["config"]?.dictEntries?.map(\.key.keyString), Self.sampleConfig().map(\.0), file: file, line: line)
    }

    func directoryListing(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    }

    // MARK: - CRC-32

    func testCRC32KnownValues() {
        XCTAssertEqual(TorchCheckpointWriter.crc32(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(TorchCheckpointWriter.crc32([]), 0)
        XCTAssertEqual(TorchCheckpointWriter.crc32(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x414F_A339)
        XCTAssertEqual(TorchCheckpointWriter.crc32(Array("3\n".utf8)), 0x5567_9ED1, "torch's own 'version' entry CRC")
    }

    func testCRC32SlicingMatchesBytewiseAtEveryAlignment() {
        func reference(_ bytes: ArraySlice<UInt8>) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for b in bytes {
                c ^= UInt32(b)
                for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
            }
            return ~c
        }
        var rng = SeededGenerator(seed: 3)
        let data = (0..<1000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for start in 0..<9 {
            for end in [start, start + 1, start + 7, start + 8, start + 9, start + 63, 1000] {
                let slice = data[start..<end]
                let fast = slice.withUnsafeBytes { TorchCheckpointWriter.crc32($0) }
                XCTAssertEqual(fast, reference(slice), "\(start)..<\(end)")
            }
        }
        // Continuing a CRC over two halves equals the CRC of the whole.
        let whole = TorchCheckpointWriter.crc32(data)
        let first = data[0..<333].withUnsafeBytes { TorchCheckpointWriter.crc32($0) }
        let both = data[333...].withUnsafeBytes { TorchCheckpointWriter.crc32($0, continuing: first) }
        XCTAssertEqual(both, whole)
    }

    // MARK: - Round trip

    func testRoundTripThroughReader() throws {
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("adapter.pth").path
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: path)
        try assertRoundTrip(path)
        XCTAssertEqual(try directoryListing(dir), ["adapter.pth"], "no temporary file left behind")
    }

    func testArchiveLayoutAlignmentAndCRCs() throws {
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("7B.adapter.pth").path
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: path)
        let archive = try ZipArchive(path: path)
        // torch names the folder after the stem without the last extension; storages in first-use order.
        XCTAssertEqual(archive.entries.map(\.name),
                       ["7B.adapter/data.pkl"] + (0..<5).map { "7B.adapter/data/\($0)" } + ["7B.adapter/version"])
        for entry in archive.entries {
            XCTAssertEqual(entry.method, 0, entry.name)
            let offset = try archive.dataOffset(of: entry)
            XCTAssertEqual(offset % 64, 0, "\(entry.name) data starts at \(offset)")
            let data = try archive.data(of: entry)
            // Local header CRC (byte 14) and the central directory agree with the data.
            let localCRC = archive.file.bytes.loadUnaligned(fromByteOffset: entry.localHeaderOffset + 14, as: UInt32.self)
            XCTAssertEqual(UInt32(littleEndian: localCRC), TorchCheckpointWriter.crc32(data), entry.name)
        }
        let version = try archive.data(of: XCTUnwrap(archive.entry(named: "7B.adapter/version")))
        XCTAssertEqual(Array(version), Array("3\n".utf8))
        XCTAssertEqual(try archive.data(of: XCTUnwrap(archive.entry(named: "7B.adapter/data/0"))).count, 24)
        XCTAssertEqual(try archive.data(of: XCTUnwrap(archive.entry(named: "7B.adapter/data/1"))).count, 8)

        // The pickle starts like torch.save's: PROTO 2, EMPTY_DICT, MARK.
        let pkl = try archive.data(of: XCTUnwrap(archive.entry(named: "7B.adapter/data.pkl")))
        XCTAssertEqual(Array(pkl.prefix(4)), [0x80, 0x02, 0x7D, 0x28])
        XCTAssertEqual(pkl.last, 0x2E)

        // Deterministic output: the same value gives the same bytes.
        let again = dir.appendingPathComponent("again/7B.adapter.pth")
        try FileManager.default.createDirectory(at: again.deletingLastPathComponent(), withIntermediateDirectories: true)
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: again.path)
        XCTAssertEqual(try Data(contentsOf: again), try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    func testForcedZip64RoundTrips() throws {
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("adapter64.pth").path
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: path, options: .init(forceZip64: true))
        try assertRoundTrip(path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let archive = try ZipArchive(path: path)
        for entry in archive.entries {
            XCTAssertEqual(try archive.dataOffset(of: entry) % 64, 0, entry.name)
        }
        // The classic end record is fully saturated, so the reader must have used the ZIP64 record and locator.
        let eocd = bytes.count - 22
        XCTAssertEqual(Array(bytes[eocd..<(eocd + 4)]), [0x50, 0x4B, 0x05, 0x06])
        XCTAssertEqual(Array(bytes[(eocd + 8)..<(eocd + 20)]), [UInt8](repeating: 0xFF, count: 12))
        XCTAssertEqual(Array(bytes[(eocd - 20)..<(eocd - 16)]), [0x50, 0x4B, 0x06, 0x07])
        XCTAssertEqual(Array(bytes[(eocd - 76)..<(eocd - 72)]), [0x50, 0x4B, 0x06, 0x06])
        // Same content as the plain variant.
        let plain = dir.appendingPathComponent("plain/adapter64.pth")
        try FileManager.default.createDirectory(at: plain.deletingLastPathComponent(), withIntermediateDirectories: true)
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: plain.path)
        let plainArchive = try ZipArchive(path: plain.path)
        for (a, b) in zip(archive.entries, plainArchive.entries) {
            XCTAssertEqual(a.name, b.name)
            XCTAssertEqual(Array(try archive.data(of: a)), Array(try plainArchive.data(of: b)), a.name)
        }
    }

    func testSharedViewsShareOneStorageAndEmptyTensorsWork() throws {
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("tied.pth").path
        let w = Tensor([1, 2, 3, 4], shape: [2, 2])
        let empty = Tensor(zeros: [0, 3], dtype: .f32)
        try TorchCheckpointWriter.write([("tok.weight", .tensor(w)), ("out.weight", .tensor(w)),
                                         ("row", .tensor(w.slice(1))), ("empty", .tensor(empty))], to: path)
        let archive = try ZipArchive(path: path)
        XCTAssertEqual(archive.entries.map(\.name), ["tied/data.pkl", "tied/data/0", "tied/data/1", "tied/data/2", "tied/version"])
        let ckpt = try TorchCheckpoint(path: path)
        XCTAssertTrue(try ckpt.tensor("tok.weight").storage === ckpt.tensor("out.weight").storage)
        XCTAssertEqual(try ckpt.tensor("row").toFloatArray(), [3, 4])
        XCTAssertEqual(try ckpt.tensor("empty").shape, [0, 3])
        XCTAssertEqual(ckpt.torchTensor("empty")?.strides, [3, 1])
    }

    // MARK: - Refusals and atomicity

    func testQuantizedTensorIsRefusedAndExistingFileIsUntouched() throws {
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("adapter.pth").path
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))

        let q = Tensor(zeros: [2, 32], dtype: .q4_0)
        let bad: [(String, PickleWriteValue)] = [
            ("model", .dict([("good", .tensor(Tensor([1, 2], shape: [2]))), ("layers.3.wq", .tensor(q))])),
            ("config", .dict(Self.sampleConfig())),
        ]
        assertThrows(try TorchCheckpointWriter.write(bad, to: path), contains: ["model.layers.3.wq", "q4_0", "PyTorch"])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        XCTAssertEqual(try directoryListing(dir), ["adapter.pth"])
    }

    func testFailureInTheMiddleOfWritingLeavesExistingFileUntouched() throws {
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("adapter.pth").path
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        // Fails after data.pkl and four storages reached the temporary file.
        for suffix in ["/data/4", "/version"] {
            let other: [(String, PickleWriteValue)] = [("model", .dict([("w", .tensor(Tensor([9, 9, 9], shape: [3])))] + Self.sampleModel()))]
            assertThrows(try TorchCheckpointWriter.write(other, to: path, options: .init(failBeforeEntry: suffix)),
                         contains: ["adapter.pth", "injected failure"])
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before, suffix)
            XCTAssertEqual(try directoryListing(dir), ["adapter.pth"], suffix)
        }
        // And a fresh target that fails is not created at all.
        let fresh = dir.appendingPathComponent("fresh.pth").path
        assertThrows(try TorchCheckpointWriter.write(Self.sampleRoot(), to: fresh, options: .init(failBeforeEntry: "/version")),
                     contains: ["injected failure"])
        XCTAssertEqual(try directoryListing(dir), ["adapter.pth"])
    }

    func testReplacingKeepsPermissionsAndOverwrites() throws {
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("adapter.pth").path
        try TorchCheckpointWriter.write([("model", .dict([("a", .tensor(Tensor([1], shape: [1])))]))], to: path)
        XCTAssertEqual(chmod(path, 0o600), 0)
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: path)
        try assertRoundTrip(path)
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        XCTAssertEqual((attrs[.posixPermissions] as? NSNumber)?.intValue, 0o600)
    }

    func testBadTargetsAndDuplicateKeysGiveOneLineErrors() throws {
        let dir = try makeTemporaryDirectory()
        assertThrows(try TorchCheckpointWriter.write(Self.sampleRoot(), to: dir.appendingPathComponent("missing/x.pth").path),
                     contains: ["missing", "temporary file"])
        assertThrows(try TorchCheckpointWriter.write(Self.sampleRoot(), to: dir.path), contains: ["is a directory"])
        let dup: [(String, PickleWriteValue)] = [("config", .dict([("lora_rank", .int(8)), ("lora_rank", .int(16))]))]
        assertThrows(try TorchCheckpointWriter.write(dup, to: dir.appendingPathComponent("d.pth").path),
                     contains: ["duplicate key", "config.lora_rank"])
        XCTAssertEqual(try directoryListing(dir), [])
    }

    // MARK: - Files for the torch.load check

    /// Writes `adapter.pth`, `adapter_zip64.pth` and `expected.json` into $TORCH_WRITER_CHECK_DIR for
    /// tools/reference/check_written_checkpoint.py; skipped otherwise so CI does not need Python.
    func testExportForTorchCheck() throws {
        guard let out = ProcessInfo.processInfo.environment["TORCH_WRITER_CHECK_DIR"] else {
            throw XCTSkip("set TORCH_WRITER_CHECK_DIR to export files for check_written_checkpoint.py")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: out + "/adapter.pth")
        try TorchCheckpointWriter.write(Self.sampleRoot(), to: out + "/adapter_zip64.pth", options: .init(forceZip64: true))
        // torch 1.13's weights_only unpickler lacks BINFLOAT, so this variant has no floats in its config.
        let intConfig = Self.sampleConfig().filter { if case .double = $0.1 { return false }; return $0.0 != "nested" }
        try TorchCheckpointWriter.write([("model", .dict(Self.sampleModel())), ("config", .dict(intConfig))],
                                        to: out + "/adapter_no_floats.pth")

        func json(_ v: PickleWriteValue) -> Any {
            switch v {
            case .none: return NSNull()
            case .bool(let b): return b
            case .int(let i): return i
            case .double(let d): return d
            case .string(let s): return s
            case .list(let a): return a.map(json)
            case .dict(let e): return ["__ordered__": e.map { [$0.0, json($0.1)] }]
            case .tensor(let t): return ["dtype": t.dtype.rawValue, "shape": t.shape, "values": t.toFloatArray().map(Double.init)]
            }
        }
        let expected: [String: Any] = [
            "model": Self.sampleModel().map { [$0.0, json($0.1)] },
            "config": json(.dict(Self.sampleConfig())),
            "top_keys": ["model", "config"],
        ]
        let data = try JSONSerialization.data(withJSONObject: expected, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: out + "/expected.json"))
    }
}
