import LlamaAdapter
import Foundation
import XCTest

/// Fixtures come from tools/reference/make_gguf_fixtures.py (gguf-py 0.19: its writer, quantizers and
/// dequantizers are the reference).
final class GGUFTests: XCTestCase {
    static let fixtures = Fixtures.root.appendingPathComponent("gguf")

    static func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name).path }

    static let tinyPath = fixture("tiny.gguf.bin")

    struct ExpectedTensor: Decodable {
        let name: String
        let type: String
        let ggml_type: UInt32
        let shape: [Int]
        let values: [Double]
        let source: [Double]?
    }

    struct QuantizeCase: Decodable {
        let type: String
        let input: [Double]
        let bytes_hex: String
    }

    struct Expected: Decodable {
        let tensors: [ExpectedTensor]
        let tokens: [String]
        let align64: [String: [Double]]
        let quantize_cases: [QuantizeCase]
    }

    static let expected: Expected = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("expected.json"))
        return try! JSONDecoder().decode(Expected.self, from: data)
    }()


    /// Values of `t` through this file's reference dequantizer (not the SIMD kernels).
    func referenceValues(_ t: Tensor) -> [Float] {
        var out = [Float](repeating: .nan, count: t.count)
        out.withUnsafeMutableBufferPointer { dst in
            if t.dtype.isQuantized {
                dequantize(dtype: t.dtype, src: t.data, dst: dst.baseAddress!, count: t.count)
            } else {
                convertToFloat(dtype: t.dtype, src: t.data, dst: dst.baseAddress!, count: t.count)
            }
        }
        return out
    }

    func bytes(_ t: Tensor) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
    }

    static func hexBytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = hex.utf8.makeIterator()
        while let a = it.next(), let b = it.next() {
            out.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16)!)
        }
        return out
    }

    // MARK: - Tensors

    func testEveryTypeDequantizesLikeGGUFPy() throws {
        let g = try GGUFFile(path: Self.tinyPath)
        XCTAssertEqual(g.version, 3)
        XCTAssertEqual(g.alignment, 32)
        XCTAssertEqual(g.dataOffset % 32, 0)
        XCTAssertEqual(g.tensorNames, Self.expected.tensors.map(\.name).sorted())
        XCTAssertEqual(g.tensorInfos.map(\.name), Self.expected.tensors.map(\.name), "file order is kept")
        for e in Self.expected.tensors {
            let info = try XCTUnwrap(g.info(e.name), e.name)
            XCTAssertEqual(info.dtype.rawValue, e.type, e.name)
            XCTAssertEqual(info.shape, e.shape, e.name)
            let record = try XCTUnwrap(g.tensorInfo(e.name))
            XCTAssertEqual(record.ggmlType, e.ggml_type, e.name)
            XCTAssertEqual(record.dims, e.shape.reversed(), "ggml order is the PyTorch shape reversed")
            let t = try g.tensor(e.name)
            XCTAssertEqual(t.shape, e.shape, e.name)
            XCTAssertEqual(t.dtype.rawValue, e.type, e.name)
            // The reference dequantizers match gguf-py bit for bit.
            let got = referenceValues(t)
            let want = e.values.map { Float($0) }
            XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "\(e.name): not bit-identical to gguf-py")
            // Whatever kernel `toFloatArray` dispatches to agrees within 1e-6 relative.
            for (a, b) in zip(t.toFloatArray(), want) {
                XCTAssertLessThanOrEqual(abs(a - b), 1e-6 * max(1, abs(b)), e.name)
            }
        }
    }

    func testTensorsAreViewsOfTheMap() throws {
        let g = try GGUFFile(path: Self.tinyPath)
        let size = try FileManager.default.attributesOfItem(atPath: Self.tinyPath)[.size] as! Int
        let a = try g.tensor("q4_K.matrix"), b = try g.tensor("f32.vector")
        XCTAssertTrue(a.storage === b.storage, "one borrowed storage for the whole map")
        XCTAssertEqual(a.storage.byteCount, size)
        let record = try XCTUnwrap(g.tensorInfo("q4_K.matrix"))
        XCTAssertEqual(a.byteOffset, g.dataOffset + record.offset)
        XCTAssertEqual(record.byteCount, 2 * 144 * 2)
        XCTAssertEqual((Int(bitPattern: a.data) - Int(bitPattern: a.storage.base)) % 32, 0)
    }

    func testAlignment64AndUnsupportedTypes() throws {
        let path = Self.fixture("align64.gguf.bin")
        let g = try GGUFFile(path: path)
        XCTAssertEqual(g.alignment, 64)
        XCTAssertEqual(g.dataOffset % 64, 0)
        XCTAssertEqual(g.tensorNames, ["first", "i32.unsupported", "last", "q5_0.unsupported"])
        XCTAssertEqual(g.tensorInfos.map(\.offset), [0, 64, 128, 192])
        XCTAssertEqual(try g.tensor("first").toFloatArray(), Self.expected.align64["first"]!.map { Float($0) })
        XCTAssertEqual(try g.tensor("last").toFloatArray(), Self.expected.align64["last"]!.map { Float($0) })
        // Listed, with their ggml names, but not loadable.
        XCTAssertNil(g.info("q5_0.unsupported"))
        XCTAssertFalse(g.contains("q5_0.unsupported"))
        let q5 = try XCTUnwrap(g.tensorInfo("q5_0.unsupported"))
        XCTAssertEqual(q5.typeName, "Q5_0")
        XCTAssertNil(q5.dtype)
        XCTAssertEqual(q5.byteCount, 22)
        XCTAssertEqual(g.tensorInfo("i32.unsupported")?.shape, [2, 3])
        assertThrows(try g.tensor("q5_0.unsupported"), contains: [path, "q5_0.unsupported", "Q5_0", "not supported"])
        assertThrows(try g.tensor("i32.unsupported"), contains: [path, "I32"])
        assertThrows(try g.tensor("missing"), contains: [path, "missing"])
    }

    // MARK: - Metadata

    func testMetadataOfEveryValueType() throws {
        let g = try GGUFFile(path: Self.tinyPath)
        let m = g.metadata
        XCTAssertEqual(m["test.u8"], .int(200))
        XCTAssertEqual(m["test.i8"], .int(-100))
        XCTAssertEqual(m["test.u16"], .int(60000))
        XCTAssertEqual(m["test.i16"], .int(-30000))
        XCTAssertEqual(m["test.u32"], .int(4_000_000_000))
        XCTAssertEqual(m["test.i32"], .int(-2_000_000_000))
        XCTAssertEqual(m["test.f32"], .double(Double(Float(0.1))), "f32 values are exact doubles of the f32")
        XCTAssertEqual(m["test.bool"], .bool(true))
        XCTAssertEqual(m["test.string"], .string("héllo ✓ wörld"))
        XCTAssertEqual(m["test.empty_string"], .string(""))
        XCTAssertEqual(m["test.u64"], .int(1 << 40 + 3))
        XCTAssertEqual(m["test.i64"], .int(-(1 << 40) - 7))
        XCTAssertEqual(m["test.f64"], .double(3.141592653589793))
        XCTAssertEqual(m["test.arr_u8"], .array([.int(1), .int(2), .int(255)]))
        XCTAssertEqual(m["test.arr_i8"], .array([.int(-1), .int(2), .int(-128)]))
        XCTAssertEqual(m["test.arr_u16"], .array([.int(0), .int(65535)]))
        XCTAssertEqual(m["test.arr_i16"], .array([.int(-32768), .int(32767)]))
        XCTAssertEqual(m["test.arr_u32"], .array([.int(7), .int(4_294_967_295)]))
        XCTAssertEqual(m["test.arr_i32"], .array([.int(1), .int(-2), .int(3)]))
        XCTAssertEqual(m["test.arr_u64"], .array([.int(1 << 50), .int(0)]))
        XCTAssertEqual(m["test.arr_i64"], .array([.int(-(1 << 50)), .int(5)]))
        XCTAssertEqual(m["test.arr_f32"], .array([.double(0.5), .double(-1.25), .double(Double(Float(0.1)))]))
        XCTAssertEqual(m["test.arr_f64"], .array([.double(0.1), .double(-2.5)]))
        XCTAssertEqual(m["test.arr_bool"], .array([.bool(true), .bool(false), .bool(true)]))
        XCTAssertEqual(m["test.arr_str"], .array([.string("a"), .string(""), .string("ç✓")]))
        XCTAssertEqual(m["test.arr_nested"], .array([.array([.int(1), .int(2)]), .array([.int(3)])]))
        XCTAssertEqual(m["test.arr_nested_str"], .array([.array([.string("x"), .string("y")]), .array([.string("z")])]))

        XCTAssertEqual(g.valueType("test.i16"), .int16)
        XCTAssertEqual(g.valueType("test.arr_nested"), .array)
        XCTAssertEqual(g.value("test.u8"), .int(200))
        XCTAssertEqual(g.metadataKeys.first, "general.architecture")
        XCTAssertEqual(g.metadataKeys.count, m.count)

        // Typed accessors read the stored arrays directly.
        XCTAssertEqual(g.stringArray("test.arr_str"), ["a", "", "ç✓"])
        XCTAssertEqual(g.intArray("test.arr_u32"), [7, 4_294_967_295])
        XCTAssertEqual(g.floatArray("test.arr_f32"), [0.5, -1.25, 0.1])
        XCTAssertEqual(g.floatArray("test.arr_f64"), [0.1, -2.5])
        XCTAssertEqual(g.boolArray("test.arr_bool"), [true, false, true])
        XCTAssertNil(g.stringArray("test.arr_i32"))
        XCTAssertNil(g.intArray("missing"))
        XCTAssertEqual(g.string("test.string"), "héllo ✓ wörld")
        XCTAssertEqual(g.int("test.u16"), 60000)
        XCTAssertEqual(g.double("test.f64"), 3.141592653589793)
        XCTAssertEqual(g.double("test.i8"), -100)
        XCTAssertEqual(g.bool("test.bool"), true)
        XCTAssertNil(g.int("test.string"))

        // Tokenizer arrays.
        XCTAssertEqual(g.stringArray("tokenizer.ggml.tokens"), Self.expected.tokens)
        XCTAssertEqual(g.intArray("tokenizer.ggml.token_type"), [Int](repeating: 1, count: 300))
        XCTAssertEqual(g.stringArray("tokenizer.ggml.merges"), ["a b", "Ġ t", "th e"])
        XCTAssertEqual(g.bool("tokenizer.ggml.add_bos_token"), false)
    }

    func testArchitectureHelpers() throws {
        let g = try GGUFFile(path: Self.tinyPath)
        XCTAssertEqual(g.architecture, "llama")
        XCTAssertEqual(g.string("general.name"), "tiny fixture")
        XCTAssertEqual(g.blockCount, 2)
        XCTAssertEqual(g.contextLength, 128)
        XCTAssertEqual(g.embeddingLength, 64)
        XCTAssertEqual(g.feedForwardLength, 256)
        XCTAssertEqual(g.headCount, 4)
        XCTAssertEqual(g.headCountKV, 2)
        XCTAssertEqual(g.ropeDimensionCount, 16)
        XCTAssertEqual(g.ropeFreqBase, 10000)
        XCTAssertEqual(g.rmsNormEpsilon, Double(Float(1e-5)))
        XCTAssertEqual(g.vocabSize, 300)
        XCTAssertEqual(g.architectureInt("block_count"), 2)
    }

    // MARK: - Quantizers

    func testQuantizersMatchGGUFPyBytes() throws {
        let g = try GGUFFile(path: Self.tinyPath)
        var checked = 0
        for e in Self.expected.tensors {
            guard let source = e.source else { continue }
            let t = try g.tensor(e.name)
            let input = source.map { Float($0) }
            var out = [UInt8](repeating: 0xAA, count: t.byteCount)
            try input.withUnsafeBufferPointer { src in
                try out.withUnsafeMutableBytes { dst in
                    try quantize(dtype: t.dtype, src: src.baseAddress!, dst: dst.baseAddress!, count: input.count)
                }
            }
            XCTAssertEqual(out, bytes(t), "\(e.name): quantize() differs from gguf.quants.quantize")
            checked += 1
        }
        XCTAssertEqual(checked, 3)
        for c in Self.expected.quantize_cases {
            let dtype = try XCTUnwrap(DType(rawValue: c.type))
            let input = c.input.map { Float($0) }
            let want = Self.hexBytes(c.bytes_hex)
            var out = [UInt8](repeating: 0xAA, count: dtype.byteCount(elements: input.count))
            try input.withUnsafeBufferPointer { src in
                try out.withUnsafeMutableBytes { dst in
                    try quantize(dtype: dtype, src: src.baseAddress!, dst: dst.baseAddress!, count: input.count)
                }
            }
            XCTAssertEqual(out.count, want.count)
            for block in 0..<(out.count / dtype.blockBytes) {
                let range = (block * dtype.blockBytes)..<((block + 1) * dtype.blockBytes)
                XCTAssertEqual(Array(out[range]), Array(want[range]), "\(c.type) edge case block \(block)")
            }
        }
    }

    func testQuantizeRoundTripErrorIsBounded() throws {
        var rng = SplitMix64(seed: 7)
        let n = 32 * 64
        let x = (0..<n).map { _ in Float(rng.nextDouble() * 4 - 2) }
        for dtype in [DType.q8_0, .q4_0, .q4_1] {
            var q = [UInt8](repeating: 0, count: dtype.byteCount(elements: n))
            var y = [Float](repeating: 0, count: n)
            try x.withUnsafeBufferPointer { src in
                try q.withUnsafeMutableBytes { try quantize(dtype: dtype, src: src.baseAddress!, dst: $0.baseAddress!, count: n) }
            }
            q.withUnsafeBytes { dequantize(dtype: dtype, src: $0.baseAddress!, dst: &y, count: n) }
            // Within one quantization step of the block's range (levels: 255 for q8_0, 15 for 4-bit).
            for b in 0..<(n / 32) {
                let block = x[(b * 32)..<(b * 32 + 32)]
                let range = block.map(abs).max()! * 2
                let step = range / (dtype == .q8_0 ? 254 : 15)
                for j in (b * 32)..<(b * 32 + 32) {
                    XCTAssertLessThanOrEqual(abs(y[j] - x[j]), step, "\(dtype) element \(j)")
                }
            }
        }
        XCTAssertThrowsError(try x.withUnsafeBufferPointer { src in
            var out = [UInt8](repeating: 0, count: 1024)
            try out.withUnsafeMutableBytes { try quantize(dtype: .q4_K, src: src.baseAddress!, dst: $0.baseAddress!, count: 256) }
        })
        XCTAssertThrowsError(try x.withUnsafeBufferPointer { src in
            var out = [UInt8](repeating: 0, count: 1024)
            try out.withUnsafeMutableBytes { try quantize(dtype: .q8_0, src: src.baseAddress!, dst: $0.baseAddress!, count: 33) }
        })
    }

    func testHalfConversionRoundsToNearestEven() {
        XCTAssertEqual(ggmlFloatToHalf(1), 0x3C00)
        XCTAssertEqual(ggmlFloatToHalf(-2), 0xC000)
        XCTAssertEqual(ggmlFloatToHalf(65504), 0x7BFF)
        XCTAssertEqual(ggmlFloatToHalf(65519), 0x7BFF)
        XCTAssertEqual(ggmlFloatToHalf(65520), 0x7C00, "ties at the top round up to infinity")
        XCTAssertEqual(ggmlFloatToHalf(-1e9), 0xFC00)
        XCTAssertEqual(ggmlFloatToHalf(0x1p-24), 0x0001)
        XCTAssertEqual(ggmlFloatToHalf(0x1p-25), 0x0000, "a tie below the smallest subnormal rounds to even (zero)")
        XCTAssertEqual(ggmlFloatToHalf(0x1.8p-24), 0x0002, "1.5 ulp ties to even (2)")
        XCTAssertEqual(ggmlFloatToHalf(1 + 0x1p-11), 0x3C00, "tie to even")
        XCTAssertEqual(ggmlFloatToHalf(1 + 0x1.8p-10), 0x3C02, "tie to even")
        XCTAssertEqual(ggmlFloatToHalf(.nan) & 0x7E00, 0x7E00)
        XCTAssertEqual(ggmlFloatToHalf(-0.0), 0x8000)
        // Every half converts to f32 and back unchanged.
        for bits in 0...UInt16.max {
            let f = ggmlHalfToFloat(bits)
            if f.isNaN { continue }
            XCTAssertEqual(ggmlFloatToHalf(f), bits)
        }
        // Agrees with the SIMD converter on random values of every magnitude.
        var rng = SplitMix64(seed: 3)
        var xs = (0..<4096).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }.filter { !$0.isNaN }
        var simd = [UInt16](repeating: 0, count: xs.count)
        convertToHalf(src: &xs, dst: &simd, count: xs.count)
        XCTAssertEqual(xs.map(ggmlFloatToHalf), simd)
    }

    // MARK: - Bad files

    func writeTemporary(_ bytes: [UInt8], name: String = "file.gguf") throws -> String {
        let url = try makeTemporaryDirectory().appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url.path
    }

    func header(version: UInt32, tensors: UInt64 = 0, kvs: UInt64 = 0) -> [UInt8] {
        var b = Array("GGUF".utf8)
        withUnsafeBytes(of: version.littleEndian) { b += $0 }
        withUnsafeBytes(of: tensors.littleEndian) { b += $0 }
        withUnsafeBytes(of: kvs.littleEndian) { b += $0 }
        return b
    }

    func testVersionsAndBadHeaders() throws {
        let v1 = try writeTemporary(header(version: 1))
        assertThrows(try GGUFFile(path: v1), contains: [v1, "version 1"])
        let v9 = try writeTemporary(header(version: 9))
        assertThrows(try GGUFFile(path: v9), contains: [v9, "version 9"])
        let big = try writeTemporary(header(version: UInt32(3).byteSwapped))
        assertThrows(try GGUFFile(path: big), contains: [big, "big-endian"])
        let magic = try writeTemporary(Array("GGML".utf8) + [3, 0, 0, 0])
        assertThrows(try GGUFFile(path: magic), contains: [magic, "not a GGUF file"])
        let huge = try writeTemporary(header(version: 3, tensors: 1 << 60, kvs: 0))
        assertThrows(try GGUFFile(path: huge), contains: [huge, "tensor count"])
        let hugeKV = try writeTemporary(header(version: 3, tensors: 0, kvs: UInt64.max))
        assertThrows(try GGUFFile(path: hugeKV), contains: [hugeKV, "metadata count"])
        // An empty v2 file (no tensors, no metadata) is valid.
        let empty = try GGUFFile(path: try writeTemporary(header(version: 2)))
        XCTAssertEqual(empty.version, 2)
        XCTAssertEqual(empty.tensorNames, [])
        XCTAssertEqual(empty.metadata, [:])
        XCTAssertNil(empty.architecture)

        // One key of a given type and payload.
        func kv(_ key: String, type: UInt32, _ payload: [UInt8]) -> [UInt8] {
            var b: [UInt8] = []
            withUnsafeBytes(of: UInt64(key.utf8.count).littleEndian) { b += $0 }
            b += Array(key.utf8)
            withUnsafeBytes(of: type.littleEndian) { b += $0 }
            return b + payload
        }
        let badType = try writeTemporary(header(version: 3, kvs: 1) + kv("k", type: 13, [0]))
        assertThrows(try GGUFFile(path: badType), contains: [badType, "unknown value type 13"])
        let dup = try writeTemporary(header(version: 3, kvs: 2) + kv("k", type: 0, [1]) + kv("k", type: 0, [2]))
        assertThrows(try GGUFFile(path: dup), contains: [dup, "duplicate metadata key 'k'"])
        var align: [UInt8] = []
        withUnsafeBytes(of: UInt32(48).littleEndian) { align += $0 }
        let badAlign = try writeTemporary(header(version: 3, kvs: 1) + kv("general.alignment", type: 4, align))
        assertThrows(try GGUFFile(path: badAlign), contains: [badAlign, "general.alignment"])
        // An array claiming 2^40 strings in a tiny file fails before allocating anything.
        var arr: [UInt8] = []
        withUnsafeBytes(of: UInt32(8).littleEndian) { arr += $0 }
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { arr += $0 }
        let bigArray = try writeTemporary(header(version: 3, kvs: 1) + kv("a", type: 9, arr))
        assertThrows(try GGUFFile(path: bigArray), contains: [bigArray, "'a'"])
        // Arrays nested 10000 deep are refused, not recursed into.
        var deep: [UInt8] = []
        for _ in 0..<10000 {
            withUnsafeBytes(of: UInt32(9).littleEndian) { deep += $0 }
            withUnsafeBytes(of: UInt64(1).littleEndian) { deep += $0 }
        }
        let deepFile = try writeTemporary(header(version: 3, kvs: 1) + kv("d", type: 9, deep))
        assertThrows(try GGUFFile(path: deepFile), contains: [deepFile, "deep"])
    }

    func testEveryTruncationThrows() throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.tinyPath)))
        let g = try GGUFFile(path: Self.tinyPath)
        // The last tensor's end: beyond it there is only alignment padding.
        let end = g.dataOffset + g.tensorInfos.map { $0.offset + $0.byteCount! }.max()!
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("truncated.gguf").path
        var lengths = Array(0..<min(400, end))
        lengths += stride(from: 400, to: end, by: 97)
        lengths += [g.dataOffset - 1, g.dataOffset, end - 1]
        for n in lengths {
            try Data(original[0..<n]).write(to: URL(fileURLWithPath: path))
            assertThrows(try GGUFFile(path: path), contains: [path])
        }
        try Data(original[0..<end]).write(to: URL(fileURLWithPath: path))
        XCTAssertNoThrow(try GGUFFile(path: path), "trailing padding is optional")
    }

    /// 300 random mutations of the fixture: each must open or throw an AdapterError, never trap; whatever
    /// opens must also survive loading and dequantizing every tensor.
    func testFuzzedFilesNeverTrap() throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.tinyPath)))
        let g = try GGUFFile(path: Self.tinyPath)
        let headerEnd = g.dataOffset
        let dir = try makeTemporaryDirectory()
        let path = dir.appendingPathComponent("fuzz.gguf").path
        var rng = SplitMix64(seed: 0x6767_7566)
        var opened = 0
        for round in 0..<300 {
            var bytes = original
            let mutations = 1 + Int(rng.next() % 4)
            for _ in 0..<mutations {
                let at = Int(rng.next() % UInt64(headerEnd))
                switch rng.next() % 5 {
                case 0: bytes[at] ^= UInt8(1 << (rng.next() % 8))
                case 1: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                case 2:  // a random 64-bit field: lengths, counts, dims and offsets live in these
                    for k in 0..<8 where at + k < bytes.count { bytes[at + k] = UInt8(truncatingIfNeeded: rng.next()) }
                case 3:  // all ones: the largest length/count
                    for k in 0..<8 where at + k < bytes.count { bytes[at + k] = 0xFF }
                default: bytes.removeSubrange(at..<min(bytes.count, at + 1 + Int(rng.next() % 64)))
                }
            }
            if rng.next() % 8 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count)))) }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let f = try GGUFFile(path: path)
                opened += 1
                _ = f.metadata
                _ = f.stringArray("tokenizer.ggml.tokens")
                _ = (f.blockCount, f.vocabSize, f.ropeFreqBase, f.architecture)
                for name in f.tensorNames {
                    guard let t = try? f.tensor(name) else { continue }
                    var out = [Float](repeating: 0, count: t.count)
                    out.withUnsafeMutableBufferPointer { dst in
                        if t.dtype.isQuantized {
                            dequantize(dtype: t.dtype, src: t.data, dst: dst.baseAddress!, count: t.count)
                        } else {
                            convertToFloat(dtype: t.dtype, src: t.data, dst: dst.baseAddress!, count: t.count)
                        }
                    }
                }
            } catch let error as AdapterError {
                XCTAssertTrue(error.description.contains(path), "round \(round): error lacks the path: \(error)")
            }
        }
        XCTAssertGreaterThan(opened, 0, "some mutations (of token strings, say) leave a valid file")
        XCTAssertLessThan(opened, 300)
    }

    // MARK: - The real model

    func testSmolLM2File() throws {
        let g = try GGUFFile(path: try Fixtures.smolLM2())
        let tokens = try XCTUnwrap(g.stringArray("tokenizer.ggml.tokens"))
        let merges = try XCTUnwrap(g.stringArray("tokenizer.ggml.merges"))
        XCTAssertEqual(g.tensorNames.count, 272)
        XCTAssertEqual(g.architecture, "llama")
        XCTAssertEqual(g.blockCount, 30)
        XCTAssertEqual(g.int("llama.block_count"), 30)
        XCTAssertEqual(g.embeddingLength, 576)
        XCTAssertEqual(g.headCount, 9)
        XCTAssertEqual(g.headCountKV, 3)
        XCTAssertEqual(g.ropeFreqBase, 100000)
        XCTAssertEqual(tokens.count, 49152)
        XCTAssertEqual(merges.count, 48900)
        XCTAssertEqual(g.intArray("tokenizer.ggml.token_type")?.count, 49152)
        XCTAssertEqual(g.bool("tokenizer.ggml.add_bos_token"), false)
        XCTAssertEqual(g.int("tokenizer.ggml.eos_token_id"), 2)
        XCTAssertTrue(g.string("tokenizer.chat_template")?.contains("<|im_start|>") ?? false)
        XCTAssertEqual(tokens[1], "<|im_start|>")
        let embedding = try XCTUnwrap(g.info("token_embd.weight"))
        XCTAssertEqual(embedding.dtype, .q8_0)
        XCTAssertEqual(embedding.shape, [49152, 576])
        XCTAssertEqual(g.info("blk.0.ffn_down.weight")?.dtype, .q4_1)
        XCTAssertEqual(g.info("blk.0.ffn_down.weight")?.shape, [576, 1536])
        XCTAssertEqual(g.info("output_norm.weight"), TensorInfo(dtype: .f32, shape: [576]))
        // Every tensor loads and one row of each dequantizes to finite values.
        for name in g.tensorNames {
            let t = try g.tensor(name)
            let row = t.shape.count > 1 ? t.slice(0) : t
            XCTAssertTrue(referenceValues(row).allSatisfy(\.isFinite), name)
        }
    }
}

/// A tiny seedable generator (SplitMix64) so fuzz runs are reproducible.
fileprivate struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1p-53 }
}
