import LlamaAdapter
import Foundation
import XCTest

/// Fixtures come from tools/reference/make_format_fixtures.py (torch 1.13).
final class TorchCheckpointTests: XCTestCase {
    static let fixtures = Fixtures.root.appendingPathComponent("formats")

    static func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name).path }

    struct ExpectedTensor: Decodable {
        let name: String
        let dtype: String
        let shape: [Int]
        let values: [Double]
    }

    struct ExpectedFile: Decodable {
        let tensors: [ExpectedTensor]
    }

    struct Expected: Decodable {
        let mixed: ExpectedFile
        let module_state: ExpectedFile
        let shards: ExpectedFile
        let torchscript: ExpectedFile
    }

    static let expected: Expected = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("expected.json"))
        return try! JSONDecoder().decode(Expected.self, from: data)
    }()

    func assertMatches(_ source: TensorSource, _ expected: [ExpectedTensor], file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(source.tensorNames, expected.map(\.name), file: file, line: line)
        for e in expected {
            let info = try XCTUnwrap(source.info(e.name), e.name, file: file, line: line)
            XCTAssertEqual(info.dtype.rawValue, e.dtype, e.name, file: file, line: line)
            XCTAssertEqual(info.shape, e.shape, e.name, file: file, line: line)
            let t = try source.tensor(e.name)
            XCTAssertEqual(t.shape, e.shape, e.name, file: file, line: line)
            XCTAssertEqual(t.dtype.rawValue, e.dtype, e.name, file: file, line: line)
            XCTAssertEqual(t.toFloatArray(), e.values.map { Float($0) }, e.name, file: file, line: line)
        }
    }

    // MARK: - Good files

    func testMixedCheckpointMatchesTorch() throws {
        let path = Self.fixture("mixed.pth")
        let ckpt = try TorchCheckpoint(path: path, keyPath: ["model"])
        try assertMatches(ckpt, Self.expected.mixed.tensors)

        // Views share the storage of the mapped entry: no copy for contiguous tensors.
        let a = try ckpt.tensor("shared_a"), b = try ckpt.tensor("shared_b")
        XCTAssertTrue(a.storage === b.storage)
        XCTAssertEqual(a.byteOffset, 8)
        XCTAssertEqual(b.byteOffset, 20)
        XCTAssertEqual(Int(bitPattern: a.storage.base) % 64, 0, "torch aligns entries to 64 bytes")
        // A transpose and a strided view are materialised as contiguous copies.
        XCTAssertEqual(ckpt.torchTensor("transposed")?.isContiguous, false)
        XCTAssertFalse(try ckpt.tensor("transposed").storage === ckpt.tensor("shared_a").storage)
        XCTAssertEqual(try ckpt.tensor("scalar").shape, [])
        XCTAssertEqual(ckpt.torchTensor("param")?.requiresGrad, true)

        let m = ckpt.metadata
        XCTAssertEqual(m["ids"], .array([.array([.int(0), .int(1), .int(2)]), .array([.int(3), .int(4), .int(5)])]))
        XCTAssertEqual(m["f64"], .array([.double(1.5), .double(-2.25)]))
        XCTAssertEqual(m["flag"], .array([.bool(true), .bool(false), .bool(true)]))
        let config = try XCTUnwrap(m["config"])
        XCTAssertEqual(config["w_bias"], .bool(true))
        XCTAssertEqual(config["w_lora"], .bool(false))
        XCTAssertEqual(config["lora_rank"]?.intValue, 16)
        XCTAssertEqual(config["eps"], .double(1e-6))
        XCTAssertEqual(config["name"], .string("tiny"))
        XCTAssertEqual(config["layers"], .array([.int(1), .int(2), .int(3)]))
        XCTAssertEqual(config["nothing"], MetadataValue.none)
        XCTAssertEqual(config["big"], .int(1 << 40))
        XCTAssertNil(m["shared_a"], "float tensors are not metadata")

        assertThrows(try ckpt.tensor("ids"), contains: [path, "'ids'", "int64"])
        assertThrows(try ckpt.tensor("nope"), contains: [path, "'nope'"])
        assertThrows(try TorchCheckpoint(path: path, keyPath: ["weights"]), contains: [path, "'weights'", "model"])
        assertThrows(try TorchCheckpoint(path: path, keyPath: ["config", "w_bias"]), contains: ["not a dict"])
    }

    func testRootAndDefaultKeyPath() throws {
        let root = try TorchCheckpoint.load(path: Self.fixture("mixed.pth"))
        XCTAssertEqual(TorchCheckpoint.defaultKeyPath(for: root), ["model"])
        XCTAssertEqual(root["config"]?["lora_rank"]?.intValue, 16)
        let top = try TorchCheckpoint(root: root, keyPath: [], path: "mixed.pth")
        XCTAssertEqual(top.tensorNames, [])
        XCTAssertNotNil(top.metadata["model"])
        let state = try TorchCheckpoint.load(path: Self.fixture("module_state.pth"))
        XCTAssertEqual(TorchCheckpoint.defaultKeyPath(for: state), [])
        // Without a key path the weights are found in either layout.
        XCTAssertEqual(try TorchCheckpoint(path: Self.fixture("mixed.pth")).keyPath, ["model"])
        XCTAssertEqual(try TorchCheckpoint(path: Self.fixture("module_state.pth")).tensorNames.count, 4)
        XCTAssertEqual(try TorchCheckpoint(path: Self.fixture("mixed.pth"), keyPath: []).tensorNames, [])
    }

    func testModuleStateDict() throws {
        // An nn.Module.state_dict(): an OrderedDict whose `_metadata` attribute arrives through BUILD.
        let ckpt = try TorchCheckpoint(path: Self.fixture("module_state.pth"))
        try assertMatches(ckpt, Self.expected.module_state.tensors)
        XCTAssertTrue(ckpt.metadata.isEmpty)
    }

    func testZip64ArchiveMatches() throws {
        let ckpt = try TorchCheckpoint(path: Self.fixture("zip64.pth"), keyPath: ["model"])
        try assertMatches(ckpt, Self.expected.mixed.tensors)
        XCTAssertEqual(ckpt.metadata["config"]?["lora_rank"]?.intValue, 16)
    }

    /// A real >4 GB torch.save file is too big for the repository; point ADAPTER_BIG_PTH at one made by
    /// `torch.save({'big': f16 zeros(2_200_000_000) ending [1.5, -2, 3.25], 'small': arange(5.)}, path)`.
    func testLargeZip64CheckpointFromEnvironment() throws {
        guard let path = ProcessInfo.processInfo.environment["ADAPTER_BIG_PTH"] else {
            throw XCTSkip("set ADAPTER_BIG_PTH to run")
        }
        let ckpt = try TorchCheckpoint(path: path)
        XCTAssertEqual(ckpt.info("big")?.shape, [2_200_000_000])
        let big = try ckpt.tensor("big")
        var tail = [Float](repeating: 0, count: 3)
        convertToFloat(dtype: .f16, src: big.data + (big.count - 3) * 2, dst: &tail, count: 3)
        XCTAssertEqual(tail, [1.5, -2, 3.25])
        XCTAssertEqual(try ckpt.tensor("small").toFloatArray(), [0, 1, 2, 3, 4])
    }

    func testZipLayoutFacts() throws {
        let zip = try ZipArchive(path: Self.fixture("mixed.pth"))
        XCTAssertEqual(zip.entries.first?.name, "mixed/data.pkl")
        XCTAssertNil(zip.entry(named: "mixed/byteorder"), "torch 1.13 writes no byteorder entry")
        for e in zip.entries {
            XCTAssertEqual(e.method, 0)
            XCTAssertEqual(try zip.dataOffset(of: e) % 64, 0, e.name)
        }
        XCTAssertEqual(String(decoding: try zip.data(of: XCTUnwrap(zip.entry(named: "mixed/version"))), as: UTF8.self), "3\n")
    }

    func testTorchScriptObjectMode() throws {
        let path = Self.fixture("torchscript.pt")
        assertThrows(try TorchCheckpoint.load(path: path), contains: [path, "TorchScript"])

        // The plain checkpoint rules refuse `__torch__` classes by name.
        let zip = try ZipArchive(path: path)
        let pkl = try zip.data(of: XCTUnwrap(zip.entry(named: "torchscript/data.pkl")))
        let strict = Unpickler(source: path) { _ in .none }
        assertThrows(try strict.load(pkl), contains: ["forbidden global '__torch__.Tiny'"])

        let root = try TorchCheckpoint.load(path: path, options: .torchScript)
        guard case .object(let module) = root else { return XCTFail("expected an object, got \(root.kindName)") }
        XCTAssertEqual(module.className, "__torch__.Tiny")
        let state = try XCTUnwrap(module.state)
        guard case .object(let proj)? = state["proj"] else { return XCTFail("proj is not an object") }
        XCTAssertEqual(proj.className, "__torch__.torch.nn.modules.linear.Linear")
        var found: [String: TorchTensor] = [:]
        found["scale"] = state["scale"]?.tensorValue
        found["proj.weight"] = proj.state?["weight"]?.tensorValue
        found["proj.bias"] = proj.state?["bias"]?.tensorValue
        for e in Self.expected.torchscript.tensors {
            let t = try XCTUnwrap(found[e.name], e.name).materialize(name: e.name)
            XCTAssertEqual(t.shape, e.shape)
            XCTAssertEqual(t.toFloatArray(), e.values.map { Float($0) }, e.name)
        }
    }

    // MARK: - Bad files

    func testForbiddenGlobalIsRefused() {
        let path = Self.fixture("forbidden_global.pth")
        assertThrows(try TorchCheckpoint(path: path), contains: [path, "forbidden global 'os.system'"])
    }

    func testTruncatedFileIsRefused() {
        let path = Self.fixture("truncated.pth")
        assertThrows(try TorchCheckpoint(path: path), contains: [path, "truncated"])
    }

    func testLegacyFormatIsRefused() {
        let path = Self.fixture("legacy.pth")
        assertThrows(try TorchCheckpoint(path: path), contains: [path, "legacy", "0x1950a86a20f9469cfc6c"])
    }

    func testCompressedEntryIsRefused() {
        let path = Self.fixture("compressed.zip")
        assertThrows(try TorchCheckpoint(path: path), contains: [path, "compressed", "data.pkl"])
    }

    func testBigEndianIsRefused() {
        let path = Self.fixture("big_endian.pth")
        assertThrows(try TorchCheckpoint(path: path), contains: [path, "big-endian"])
    }

    func testMissingFileIsRefused() {
        assertThrows(try TorchCheckpoint(path: "/nonexistent/x.pth"), contains: ["/nonexistent/x.pth"])
    }

    // MARK: - Pickle machine

    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    func testPickleProtocols0And4() throws {
        // pickle.dumps({'a': [1, -2, 3.5, True, None, 'x\\y\nz é', (1, 2)], 'b': {1: 'one'}, 'c': 12345678901}, protocol=0 / 4)
        let p0 = "286470300a56610a70310a286c70320a49310a61492d320a6146332e350a614930310a614e6156785c7530303563795c75303030617a20e90a70330a612849310a49320a7470340a617356620a70350a286470360a49310a566f6e650a70370a737356630a70380a4c31323334353637383930314c0a732e"
        let p4 = "8004954a000000000000007d94288c0161945d94284b014afeffffff47400c000000000000884e8c08785c790a7a20c3a9944b014b028694658c0162947d944b018c036f6e6594738c0163948a05351cdcdf02752e"
        for hex in [p0, p4] {
            let v = try Unpickler(source: "test").load(Self.bytes(hex))
            let a = try XCTUnwrap(v["a"]?.elements)
            XCTAssertEqual(a.count, 7)
            XCTAssertEqual(a[0].intValue, 1)
            XCTAssertEqual(a[1].intValue, -2)
            guard case .float(3.5) = a[2], case .bool(true) = a[3], case .none = a[4] else { return XCTFail("scalars") }
            XCTAssertEqual(a[5].stringValue, "x\\y\nz é")
            guard case .tuple(let t) = a[6] else { return XCTFail("tuple") }
            XCTAssertEqual(t.compactMap(\.intValue), [1, 2])
            XCTAssertEqual(v["b"]?.dictEntries?.first?.key.intValue, 1)
            XCTAssertEqual(v["b"]?.dictEntries?.first?.value.stringValue, "one")
            XCTAssertEqual(v["c"]?.intValue, 12_345_678_901)
        }
    }

    func testPickleSetsBigIntsBytesAndOrderedDict() throws {
        // {'s': {1, 2}, 'f': frozenset([3]), 'big': 2**70, 'neg': -2**63, 'negsmall': -300, 'by': b'yz',
        //  'od': OrderedDict([('k', 1.25)])} at protocol 2 (sets via __builtin__, bytes via _codecs.encode)
        // and protocol 5 (EMPTY_SET/ADDITEMS, FROZENSET, STACK_GLOBAL, MEMOIZE, FRAME).
        let p2 = "80027d7100285801000000737101635f5f6275696c74696e5f5f0a7365740a71025d7103284b014b02658571045271055801000000667106635f5f6275696c74696e5f5f0a66726f7a656e7365740a71075d71084b036185710952710a5803000000626967710b8a0900000000000000004058030000006e6567710c8a08000000000000008058080000006e6567736d616c6c710d4ad4feffff58020000006279710e635f636f646563730a656e636f64650a710f5802000000797a711058060000006c6174696e31711186711252711358020000006f64711463636f6c6c656374696f6e730a4f726465726564446963740a71152952711658010000006b7117473ff400000000000073752e"
        let p5 = "80059589000000000000007d94288c0173948f94284b014b02908c016694284b0391948c03626967948a090000000000000000408c036e6567948a0800000000000000808c086e6567736d616c6c944ad4feffff8c026279944302797a948c026f64948c0b636f6c6c656374696f6e73948c0b4f726465726564446963749493942952948c016b94473ff400000000000073752e"
        for hex in [p2, p5] {
            let v = try Unpickler(source: "test").load(Self.bytes(hex))
            guard case .set(let s)? = v["s"], case .set(let f)? = v["f"] else { return XCTFail("sets") }
            XCTAssertEqual(s.compactMap(\.intValue), [1, 2])
            XCTAssertEqual(f.compactMap(\.intValue), [3])
            guard case .bigInt(let big)? = v["big"] else { return XCTFail("bigInt") }
            XCTAssertEqual(big, [0, 0, 0, 0, 0, 0, 0, 0, 0x40])
            XCTAssertEqual(v["neg"]?.intValue, Int.min)
            XCTAssertEqual(v["negsmall"]?.intValue, -300)
            guard case .bytes(let by)? = v["by"] else { return XCTFail("bytes") }
            XCTAssertEqual(by, Array("yz".utf8))
            guard case .float(1.25)? = v["od"]?["k"] else { return XCTFail("OrderedDict") }
        }
    }

    func testPickleRefusesAndSurvivesHostileInput() {
        let u = Unpickler(source: "evil.pkl")
        // STACK_GLOBAL builtins.eval; GLOBAL with a protocol-0 module path.
        assertThrows(try u.load([0x80, 0x04, 0x8C, 0x08] + Array("builtins".utf8) + [0x8C, 0x04] + Array("eval".utf8) + [0x93, 0x2E]),
                     contains: ["evil.pkl", "forbidden global 'builtins.eval'"])
        assertThrows(try u.load(Array("ctorch.storage\n_load_from_bytes\n.".utf8)), contains: ["forbidden global 'torch.storage._load_from_bytes'"])
        assertThrows(try u.load(Array("cargparse\nNamespace\n.".utf8)), contains: ["forbidden global 'argparse.Namespace'"])
        // Opt-in generic classes build inert objects: Namespace(**{'lr': 1}) via NEWOBJ + BUILD.
        let lenient = Unpickler(source: "ns", options: PickleOptions(genericClasses: ["argparse.Namespace"]))
        let ns = try? lenient.load([0x80, 0x02] + Array("cargparse\nNamespace\n".utf8) + [0x29, 0x81, 0x7D, 0x8C, 0x02] + Array("lr".utf8) + [0x4B, 0x01, 0x73, 0x62, 0x2E])
        guard case .object(let o)? = ns else { return XCTFail("Namespace object") }
        XCTAssertEqual(o.className, "argparse.Namespace")
        XCTAssertEqual(o.state?["lr"]?.intValue, 1)
        // A list appended to itself: a cycle.
        assertThrows(try u.load([0x80, 0x02, 0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x2E]), contains: ["cycle"])
        // 100 000 nested lists: refused by depth, without exhausting the stack on decode or release.
        let deep = [0x80, 0x02] + [UInt8](repeating: 0x5D, count: 100_000) + [UInt8](repeating: 0x61, count: 99_999) + [0x2E]
        assertThrows(try u.load(deep), contains: ["nested deeper"])
        // Tuples of tuples doubling 80 times: 2^80 values if expanded.
        var dag: [UInt8] = [0x80, 0x02, 0x29]
        for _ in 0..<80 { dag += [0x32, 0x86] }
        dag.append(0x2E)
        assertThrows(try u.load(dag), contains: ["expands"])
        // Truncations and unknown opcodes.
        assertThrows(try u.load([0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x61]), contains: ["truncated"])
        assertThrows(try u.load([0x80, 0x02, 0x7D]), contains: ["truncated"])
        assertThrows(try u.load([0x80, 0x02, 0x01]), contains: ["opcode 0x1"])
        assertThrows(try u.load([0x80, 0x06, 0x4E, 0x2E]), contains: ["protocol 6"])
        assertThrows(try u.load([0x80, 0x02, 0x2E]), contains: ["underflow"])
        assertThrows(try u.load([0x80, 0x02, 0x68, 0x05, 0x2E]), contains: ["memo"])
        // Persistent ids without a resolver.
        assertThrows(try u.load([0x80, 0x02, 0x4E, 0x51, 0x2E]), contains: ["persistent"])
        // Dict key replacement keeps the first position, as Python does.
        let d = try? u.load([0x80, 0x02, 0x7D, 0x28, 0x4B, 0x01, 0x4B, 0x0A, 0x4B, 0x02, 0x4B, 0x14, 0x4B, 0x01, 0x4B, 0x1E, 0x75, 0x2E])
        XCTAssertEqual(d?.dictEntries?.map { $0.key.intValue ?? -1 }, [1, 2])
        XCTAssertEqual(d?.dictEntries?.map { $0.value.intValue ?? -1 }, [30, 20])
    }

    // MARK: - Fuzzing

    /// SplitMix64: deterministic, so a failing iteration can be replayed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Reads everything a loader would: all tensors materialised, all metadata converted.
    func exercise(_ path: String) throws {
        let root = try TorchCheckpoint.load(path: path)
        let ckpt = try TorchCheckpoint(root: root, keyPath: TorchCheckpoint.defaultKeyPath(for: root), path: path)
        for name in ckpt.tensorNames { _ = try ckpt.tensor(name).toFloatArray() }
        _ = ckpt.metadata
    }

    func testFuzzedCheckpointsNeverCrash() throws {
        var rng = SplitMix(state: ProcessInfo.processInfo.environment["FUZZ_SEED"].flatMap { UInt64($0) } ?? 0x5EED)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fmt-fuzz-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let originals = try ["mixed.pth", "zip64.pth"].map { try [UInt8](Data(contentsOf: Self.fixtures.appendingPathComponent($0))) }
        var failures = 0, successes = 0
        // FUZZ_ITERATIONS runs a longer campaign locally; the default keeps the suite fast.
        let iterations = ProcessInfo.processInfo.environment["FUZZ_ITERATIONS"].flatMap { Int($0) } ?? 300
        for i in 0..<iterations {
            var bytes = originals[i % 2]
            if Int.random(in: 0..<4, using: &rng) == 0 {
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &rng))
            } else {
                for _ in 0..<Int.random(in: 1...8, using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let path = dir.appendingPathComponent("fuzz\(i).pth").path
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                try exercise(path)
                successes += 1
            } catch let e as AdapterError {
                failures += 1
                if ProcessInfo.processInfo.environment["FUZZ_VERBOSE"] != nil { print(e.description) }
            }
        }
        print("fuzzed checkpoints: \(failures) refused, \(successes) loaded")
        XCTAssertEqual(failures + successes, iterations)
        XCTAssertGreaterThan(failures, 50)
    }

    func testFuzzedPicklesNeverCrash() throws {
        // Mutate data.pkl itself (a torch.save one, and a TorchScript one in object mode), with a resolver
        // that hands out zeroed storages of the announced size.
        let zip = try ZipArchive(path: Self.fixture("mixed.pth"))
        let script = try ZipArchive(path: Self.fixture("torchscript.pt"))
        let originals = [
            (Array(try zip.data(of: XCTUnwrap(zip.entry(named: "mixed/data.pkl")))), PickleOptions.checkpoint),
            (Array(try script.data(of: XCTUnwrap(script.entry(named: "torchscript/data.pkl")))), PickleOptions.torchScript),
        ]
        var rng = SplitMix(state: ProcessInfo.processInfo.environment["FUZZ_SEED"].flatMap { UInt64($0) } ?? 42)
        var failures = 0
        let iterations = 10 * (ProcessInfo.processInfo.environment["FUZZ_ITERATIONS"].flatMap { Int($0) } ?? 200)
        for i in 0..<iterations {
            var (bytes, options) = originals[i % 2]
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if Int.random(in: 0..<8, using: &rng) == 0 { bytes.removeLast(Int.random(in: 1...bytes.count, using: &rng)) }
            let u = Unpickler(source: "fuzz", options: options) { pid in
                guard case .tuple(let t) = pid, t.count == 5, case .global(_, let cls) = t[1],
                      let type = TorchScalarType(storageClass: cls), let n = t[4].intValue, n >= 0, n < 1 << 20 else {
                    throw AdapterError.format("bad pid")
                }
                let s = Storage(zeroedBytes: n * type.elementSize)
                return .storage(try TorchStorage(key: t[2].keyString, scalarType: type, location: "cpu", count: n, bytes: s, source: "fuzz"))
            }
            do {
                let v = try u.load(bytes)
                _ = v.metadataValue()
                if let model = v["model"]?.dictEntries {
                    for e in model { if let t = e.value.tensorValue, t.scalarType.dtype != nil { _ = try t.materialize(name: "x").toFloatArray() } }
                }
            } catch is AdapterError {
                failures += 1
            }
        }
        print("fuzzed pickles: \(failures) of \(iterations) refused")
        XCTAssertGreaterThan(failures, iterations / 20)
    }

    // MARK: - Meta shards

    func testMetaShardsMerge() throws {
        let dir = Self.fixtures.appendingPathComponent("shards")
        let p0 = dir.appendingPathComponent("consolidated.00.pth").path
        let p1 = dir.appendingPathComponent("consolidated.01.pth").path
        let merged = try MetaShards(paths: [p1, p0])
        XCTAssertEqual(merged.paths, [p0, p1])
        try assertMatches(merged, Self.expected.shards.tensors)
        XCTAssertEqual(try MetaShards(directory: dir.path).info("tok_embeddings.weight")?.shape, [10, 8])

        // One shard: tensors pass through as views of the map.
        let single = try MetaShards(paths: [p0])
        let wq = try single.tensor("layers.0.attention.wq.weight")
        XCTAssertEqual(wq.shape, [4, 8])
        XCTAssertEqual(Int(bitPattern: wq.data) % 64, 0)

        XCTAssertEqual(MetaShards.split(for: "layers.3.attention.wk.weight"), .dim0)
        XCTAssertEqual(MetaShards.split(for: "output.weight"), .dim0)
        XCTAssertEqual(MetaShards.split(for: "layers.3.feed_forward.w2.weight"), .dim1)
        XCTAssertEqual(MetaShards.split(for: "tok_embeddings.weight"), .dim1)
        XCTAssertEqual(MetaShards.split(for: "layers.3.ffn_norm.weight"), .replicated)
        XCTAssertEqual(MetaShards.split(for: "rope.freqs"), .replicated)
        XCTAssertEqual(MetaShards.shardIndex(of: "/a/consolidated.12.pth"), 12)
        XCTAssertNil(MetaShards.shardIndex(of: "/a/consolidated.x.pth"))
        XCTAssertEqual(try MetaShards.sortedByShardIndex(["consolidated.10.pth", "consolidated.02.pth", "consolidated.00.pth",
                                                          "consolidated.01.pth"] + (3...9).map { "consolidated.0\($0).pth" }).first,
                       "consolidated.00.pth")
        assertThrows(try MetaShards.sortedByShardIndex(["consolidated.00.pth", "consolidated.02.pth"]), contains: ["consolidated.02.pth", "missing"])
        assertThrows(try MetaShards(paths: [p0, Self.fixture("mixed.pth")]), contains: ["mixed.pth", "consolidated"])
    }
}
